"""The Redis subscription against a real Redis server."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import AsyncIterator, Callable

import redis.asyncio

from broadcaster.bus import EventBus
from broadcaster.metrics import Metrics
from shared.events import CHANNEL
from testing import RedisServer

#: Bound on each wait, so that a broken bus fails the test instead of hanging it.
TIMEOUT = 30


async def until(predicate: Callable[[], bool]) -> None:
    async with asyncio.timeout(TIMEOUT):
        while not predicate():  # noqa: ASYNC110 - polls state owned by the code under test
            await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def subscribed(bus: EventBus, url: str) -> AsyncIterator[redis.asyncio.Redis]:
    """Run ``bus`` until it's subscribed; yield a publisher to the same Redis."""
    task = asyncio.create_task(bus.run())
    publisher = redis.asyncio.Redis.from_url(url)
    try:
        await until(lambda: bus.subscribed)
        yield publisher
    finally:
        task.cancel()
        await publisher.aclose()


def test_a_failing_handler_does_not_stop_delivery(redis_server: RedisServer) -> None:
    received: list[bytes] = []

    def on_message(data: bytes) -> None:
        if data == b"boom":
            raise ValueError("a bug in the handler")
        received.append(data)

    async def main() -> None:
        bus = EventBus(redis_server.url, on_message, metrics=Metrics(), check_interval=0.2)
        async with subscribed(bus, redis_server.url) as publisher:
            await publisher.publish(CHANNEL, b"boom")
            await publisher.publish(CHANNEL, b"next")
            await until(lambda: bool(received))

    asyncio.run(main())
    assert received == [b"next"]


def test_a_silent_redis_is_noticed_and_the_subscription_comes_back(
    redis_server: RedisServer,
) -> None:
    # SIGSTOP freezes Redis without closing its sockets, as a network
    # partition would: only the PING watchdog can notice.
    assert redis_server.process is not None
    pid = redis_server.process.pid
    metrics = Metrics()
    received: list[bytes] = []

    async def main() -> None:
        bus = EventBus(
            redis_server.url,
            received.append,
            metrics=metrics,
            check_interval=0.2,
            first_retry=0.1,
            last_retry=0.5,
        )
        async with subscribed(bus, redis_server.url) as publisher:
            os.kill(pid, signal.SIGSTOP)
            try:
                await until(lambda: not bus.subscribed)
            finally:
                os.kill(pid, signal.SIGCONT)
            await until(lambda: bus.subscribed)
            await publisher.publish(CHANNEL, b"after the freeze")
            await until(lambda: bool(received))

    asyncio.run(main())
    assert received == [b"after the freeze"]
    assert metrics.redis_reconnects >= 1
