"""``python -m broadcaster``: start a broadcaster with the Django project's settings."""

from __future__ import annotations

import asyncio
import logging
import os
import sys

import django

from shared.environment import ConfigurationError


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "web.settings.production")
    try:
        django.setup()  # also configures logging from the settings
        from .config import Config

        config = Config.from_env()
    except ConfigurationError as exc:
        sys.exit(f"broadcaster: configuration error: {exc}")
    # websockets logs each failed handshake (port scans, probes without
    # Upgrade) at INFO; our own lines say what matters.
    logging.getLogger("websockets").setLevel(logging.WARNING)

    from .server import run

    asyncio.run(run(config))


if __name__ == "__main__":
    main()
