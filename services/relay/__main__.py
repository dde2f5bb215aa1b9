"""``python -m relay``: relay the outbox to Redis with the Django project's settings."""

from __future__ import annotations

import logging
import signal
import threading

from shared.program import start

from .config import Config

logger = logging.getLogger("relay")


def main() -> None:
    config = start("relay", Config.from_env)

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
