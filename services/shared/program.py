"""Start-up shared by the programs that run the Django project (broadcaster, relay)."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import TypeVar

import django

from shared.environment import ConfigurationError

T = TypeVar("T")


def start(program: str, read_config: Callable[[], T]) -> T:
    """Set Django up with the project's settings, then read ``program``'s configuration.

    A missing or bad variable, in either, ends the process with a message
    naming it, before anything connects anywhere.
    """
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "web.settings.production")
    try:
        django.setup()  # also configures logging from the settings
        return read_config()
    except ConfigurationError as exc:
        sys.exit(f"{program}: configuration error: {exc}")
