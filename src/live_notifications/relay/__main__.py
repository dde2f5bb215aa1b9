"""Relay the outbox to Redis with the Django project's settings.

``live-notifications-relay``, or ``python -m live_notifications.relay``.
"""

from __future__ import annotations

import logging
import signal
import threading

from live_notifications.shared import metricsserver
from live_notifications.shared.program import start

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
    servers = [
        health.serve(relay, config.host, config.port),
        metricsserver.serve(
            lambda: relay.metrics.render(ready=relay.ready, leader=relay.leader),
            host=config.host,
            port=config.metrics_port,
        ),
    ]
    logger.info(
        "event=listening host=%s port=%d metrics_port=%d",
        config.host,
        config.port,
        config.metrics_port,
    )
    try:
        relay.run(stop)
    finally:
        for server in servers:
            server.shutdown()
    logger.info("event=stopped")


if __name__ == "__main__":
    main()
