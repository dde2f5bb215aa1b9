"""Start a broadcaster with the Django project's settings.

``live-notifications-broadcaster``, or ``python -m live_notifications.broadcaster``.
"""

from __future__ import annotations

import asyncio
import gc
import logging

from live_notifications.shared.program import start

from .config import Config


def main() -> None:
    config = start("broadcaster", Config.from_env)
    # websockets logs each failed handshake (port scans, probes without
    # Upgrade) at INFO; our own lines say what matters.
    logging.getLogger("websockets").setLevel(logging.WARNING)

    from .server import run

    # What is loaded by now (Django, the settings, the apps) is kept for the
    # process's life: frozen, the garbage collector's full passes skip it and
    # walk only what connections allocate. (A larger first generation was
    # tried too: faster in a reconnect storm, but memory grew with each one.)
    gc.collect()
    gc.freeze()
    asyncio.run(run(config))


if __name__ == "__main__":
    main()
