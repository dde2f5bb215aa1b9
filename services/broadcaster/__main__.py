"""``python -m broadcaster``: start a broadcaster with the Django project's settings."""

from __future__ import annotations

import asyncio
import logging

from shared.program import start

from .config import Config


def main() -> None:
    config = start("broadcaster", Config.from_env)
    # websockets logs each failed handshake (port scans, probes without
    # Upgrade) at INFO; our own lines say what matters.
    logging.getLogger("websockets").setLevel(logging.WARNING)

    from .server import run

    asyncio.run(run(config))


if __name__ == "__main__":
    main()
