"""Reading the event log from a real Redis server."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
from collections.abc import AsyncIterator, Callable

import pytest
import redis

from live_notifications.broadcaster.history import Entry
from live_notifications.broadcaster.log import CHUNK_BYTES, EventLogReader, _decode
from live_notifications.broadcaster.metrics import Metrics
from live_notifications.relay import stream
from live_notifications.relay.outbox import Row
from live_notifications.shared.eventlog import STREAM, Position, Retention
from live_notifications.shared.events import Event
from tests.servers import RedisServer

#: Bound on each wait, so that a broken reader fails the test instead of hanging it.
TIMEOUT = 30
EPOCH = "test"


def event(name: str) -> str:
    return (
        Event(
            model="group",
            object=name,
            message="Added.",
            timestamp="2026-11-21T14:00:00+00:00",
            user="admin",
            content_type_id=3,
            object_id="1",
            action="added",
        )
        .encode()
        .decode()
    )


class Writer:
    """Appends to the log as the relay does, with positions that follow."""

    def __init__(self, url: str) -> None:
        self.client = redis.Redis.from_url(url)
        self.position = Position(0, 0)
        stream.declare(self.client, EPOCH)

    def append(self, *names: str) -> None:
        rows = []
        for name in names:
            self.position = self.position.following(time.time_ns() // 10**6)
            rows.append(Row(self.position, event(name), time.time()))
        stream.append(self.client, EPOCH, rows, retention=Retention(), now_ms=self.position.ms)


async def until(predicate: Callable[[], bool]) -> None:
    async with asyncio.timeout(TIMEOUT):
        while not predicate():  # noqa: ASYNC110 - polls state owned by the code under test
            await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def reading(reader: EventLogReader) -> AsyncIterator[None]:
    task = asyncio.create_task(reader.run())
    try:
        await until(lambda: reader.reading)
        yield
    finally:
        task.cancel()


def names(entries: list[Entry]) -> list[str]:
    return [Event.decode(entry.message).object for entry in entries]


def test_loads_the_stream_then_follows_it(redis_server: RedisServer) -> None:
    writer = Writer(redis_server.url)
    writer.append("a", "b")
    received: list[Entry] = []

    async def main() -> None:
        reader = EventLogReader(
            redis_server.url, received.extend, metrics=Metrics(), retention=Retention()
        )
        async with reading(reader):
            assert reader.history is not None
            assert reader.history.head == writer.position
            assert len(reader.history) == 2  # loaded, not handed on: they aren't new
            writer.append("c")
            await until(lambda: bool(received))

    asyncio.run(main())
    assert names(received) == ["c"]


def test_waits_for_the_relay_to_declare_the_log(redis_server: RedisServer) -> None:
    # A Redis that lost its data: the stream may be refilled any moment.
    reader = EventLogReader(
        redis_server.url,
        lambda entries: None,
        metrics=Metrics(),
        retention=Retention(),
        check_interval=0.1,
    )

    async def main() -> None:
        task = asyncio.create_task(reader.run())
        try:
            await asyncio.sleep(0.5)
            assert not reader.reading
            Writer(redis_server.url)  # declares
            await until(lambda: reader.reading)
        finally:
            task.cancel()

    asyncio.run(main())


def test_a_failing_handler_does_not_stop_delivery(redis_server: RedisServer) -> None:
    writer = Writer(redis_server.url)
    received: list[str] = []

    def on_entries(entries: list[Entry]) -> None:
        if names(entries) == ["boom"]:
            raise ValueError("a bug in the handler")
        received.extend(names(entries))

    async def main() -> None:
        reader = EventLogReader(
            redis_server.url, on_entries, metrics=Metrics(), retention=Retention()
        )
        async with reading(reader):
            writer.append("boom")
            await until(
                lambda: reader.history is not None and reader.history.head == writer.position
            )
            writer.append("next")
            await until(lambda: bool(received))

    asyncio.run(main())
    assert received == ["next"]


def test_a_silent_redis_is_noticed_and_reading_resumes_where_it_was(
    redis_server: RedisServer,
) -> None:
    # SIGSTOP freezes Redis without closing its sockets, as a network
    # partition would: only the read's timeout can notice.
    assert redis_server.process is not None
    pid = redis_server.process.pid
    writer = Writer(redis_server.url)
    metrics = Metrics()
    received: list[Entry] = []

    async def main() -> None:
        reader = EventLogReader(
            redis_server.url,
            received.extend,
            metrics=metrics,
            retention=Retention(),
            check_interval=0.2,
            first_retry=0.1,
            last_retry=0.5,
        )
        async with reading(reader):
            os.kill(pid, signal.SIGSTOP)
            try:
                await until(lambda: not reader.reading)
            finally:
                os.kill(pid, signal.SIGCONT)
            writer.append("during", "after")  # both after the position it read up to
            await until(lambda: len(received) == 2)

    asyncio.run(main())
    assert names(received) == ["during", "after"]
    assert metrics.redis_reconnects >= 1


def test_a_quiet_log_is_not_a_lost_redis(redis_server: RedisServer) -> None:
    # XREAD blocks longer than the connect timeout (5 s): a read must not
    # time out while Redis simply has nothing to say.
    writer = Writer(redis_server.url)
    metrics = Metrics()
    received: list[Entry] = []
    interrupted: list[bool] = []

    async def main() -> None:
        reader = EventLogReader(
            redis_server.url,
            received.extend,
            metrics=metrics,
            retention=Retention(),
            check_interval=5.5,
            first_retry=0.1,
            last_retry=0.5,
        )

        async def watch() -> None:
            while True:
                if not reader.reading:
                    interrupted.append(True)
                await asyncio.sleep(0.05)

        async with reading(reader):
            watcher = asyncio.create_task(watch())
            await asyncio.sleep(6.5)  # quiet for longer than one XREAD's block
            writer.append("after the quiet")
            await until(lambda: len(received) == 1)
            watcher.cancel()

    asyncio.run(main())
    assert names(received) == ["after the quiet"]
    assert (metrics.redis_reconnects, interrupted) == (0, [])


def test_a_large_batch_is_handed_on_in_chunks_with_the_loop_free_between(
    redis_server: RedisServer,
) -> None:
    """A fan-out of one XREAD to many clients would stall the event loop:
    the batch goes out in chunks, other tasks run between them, and the
    history is never ahead of what was handed on (a client catching up
    from it at any of those moments misses nothing and gets nothing twice)."""
    writer = Writer(redis_server.url)
    big = "x" * 4000
    rows = []
    for i in range(100):  # 400 KB in one transaction: one XREAD, several chunks
        writer.position = writer.position.following(time.time_ns() // 10**6)
        rows.append(Row(writer.position, event(f"{i} {big}"), time.time()))
    chunks: list[list[Entry]] = []
    handed_on: list[Position] = []
    seen_between: list[tuple[int, Position]] = []

    def on_entries(entries: list[Entry]) -> None:
        chunks.append(entries)
        handed_on.append(entries[-1].position)

    async def main() -> None:
        reader = EventLogReader(
            redis_server.url, on_entries, metrics=Metrics(), retention=Retention()
        )

        async def watch() -> None:  # runs whenever the loop is free
            while True:
                await asyncio.sleep(0)
                if handed_on:
                    assert reader.history is not None
                    seen_between.append((len(chunks), reader.history.head))

        async with reading(reader):
            watcher = asyncio.create_task(watch())
            pipeline = writer.client.pipeline(transaction=True)
            for row in rows:
                pipeline.xadd(STREAM, stream.fields(EPOCH, row)[0], id=str(row.position))
            pipeline.execute()
            await until(lambda: sum(map(len, chunks)) == len(rows))
            watcher.cancel()

    asyncio.run(main())
    assert [name.split()[0] for chunk in chunks for name in names(chunk)] == [
        str(i) for i in range(100)
    ]
    assert len(chunks) >= 6  # 400 KB in chunks of 64 KiB
    for chunk in chunks[:-1]:
        assert sum(len(entry.message) for entry in chunk) < CHUNK_BYTES + 4200
    # Between every two chunks the loop served the watcher, and saw the
    # history's head exactly where the fan-out was.
    assert {count for count, _ in seen_between} >= set(range(1, len(chunks)))
    for count, head in seen_between:
        assert head == handed_on[count - 1]


@pytest.mark.django_db
def test_an_app_events_audience_is_read_as_the_user_models_keys() -> None:
    message = json.dumps({"event": "x", "data": None, "timestamp": "t", "id": f"{EPOCH}:5-0"})
    entry = _decode(
        Position(5, 0), {b"message": message.encode(), b"audience": b'{"users": ["7"]}'}
    )
    assert entry.audience is not None and entry.audience.users == {7}
    assert entry.message == message.encode()  # forwarded as it is
    bad = _decode(Position(5, 0), {b"message": message.encode(), b"audience": b'{"users": ["x"]}'})
    assert (bad.audience, bad.access) == (None, None)  # nobody receives it; it takes its place
