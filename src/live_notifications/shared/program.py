"""Start-up shared by the programs that run the Django project (broadcaster, relay)."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import TypeVar

import django
from django.core import checks

from live_notifications.shared.environment import ConfigurationError

T = TypeVar("T")


def start(program: str, read_config: Callable[[], T]) -> T:
    """Set Django up with the project's settings, then read ``program``'s configuration.

    The settings are the host project's, named by ``DJANGO_SETTINGS_MODULE``
    as for ``manage.py``: there is no default, since a guess would run the
    program against another project's database. A missing or bad variable
    ends the process with a message naming it, before anything connects.
    """
    if not os.environ.get("DJANGO_SETTINGS_MODULE"):
        sys.exit(
            f"{program}: configuration error: DJANGO_SETTINGS_MODULE must be set to the"
            " project's settings module, as for manage.py"
        )
    # The project is importable from where the program starts, as with
    # manage.py and gunicorn: a console script's own directory is the
    # virtualenv's bin/, not the project.
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        django.setup()  # also configures logging from the settings
        # What manage.py check reports, refused here the same way.
        # The database's too: a user that can't read the user tables would
        # refuse every client.
        messages = checks.run_checks(databases=["default"])
        errors = [message for message in messages if message.is_serious()]
        if errors:
            sys.exit(f"{program}: configuration error:\n" + "\n".join(map(str, errors)))
        return read_config()
    except ConfigurationError as exc:
        sys.exit(f"{program}: configuration error: {exc}")
