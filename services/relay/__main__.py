"""``python -m relay``: relay the outbox to Redis with the Django project's settings."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading

import django

from shared.environment import ConfigurationError

logger = logging.getLogger("relay")


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "web.settings.production")
    try:
        django.setup()  # also configures logging from the settings
        from .config import Config

        config = Config.from_env()
    except ConfigurationError as exc:
        sys.exit(f"relay: configuration error: {exc}")

    from . import health
    from .relay import Relay

    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    relay = Relay(config)
    server = health.serve(relay, config.host, config.port)
    logger.info("event=listening host=%s port=%d", config.host, config.port)
    try:
        relay.run(stop)
    finally:
        server.shutdown()
    logger.info("event=stopped")


if __name__ == "__main__":
    main()
