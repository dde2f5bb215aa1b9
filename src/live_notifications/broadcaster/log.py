"""The event log in Redis, read into a :class:`~.history.History`, kept alive across outages."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import random
import time
from collections.abc import Callable
from typing import Any

import redis.asyncio
from redis.exceptions import RedisError, ResponseError

from live_notifications.shared.eventlog import (
    AUDIENCE_FIELD,
    EPOCH_KEY,
    MESSAGE_FIELD,
    ORIGIN,
    STREAM,
    Position,
    Retention,
    parse_event_id,
)
from live_notifications.shared.events import (
    AccessChange,
    AppEvent,
    Audience,
    InvalidEvent,
    decode_entry,
)

from .auth import user_key
from .history import Entry, History
from .metrics import Metrics

logger = logging.getLogger(__name__)

#: Entries read per XREAD.
BATCH = 1000
#: Bytes of entries handed on between two yields to the event loop. The
#: fan-out writes each client at most once per chunk (a run, .fanout): to
#: 50,000 clients, about 0.1 s, during which nothing else is served.
CHUNK_BYTES = 64 * 1024


class EventLogReader:
    """Follows the log's stream and hands new entries on to ``on_entries``, in order.

    A large batch is handed on in chunks of about ``CHUNK_BYTES``, with the
    event loop free between them. :attr:`history` never gets ahead of what
    was handed on: at every ``await``, whoever catches up from it and then
    takes live events misses none and gets none twice.

    On start it loads what the stream holds into :attr:`history`, then reads
    from its head. When Redis goes away it retries with jittered exponential
    backoff, forever, and carries on from the last entry read, so nothing
    between is missed: the stream keeps it (and the relay refills a Redis
    that lost its data, with the same ids). :attr:`reading` is false
    meanwhile.
    """

    def __init__(
        self,
        url: str,
        on_entries: Callable[[list[Entry]], None],
        *,
        metrics: Metrics,
        retention: Retention,
        check_interval: float = 5.0,
        first_retry: float = 0.5,
        last_retry: float = 30.0,
    ) -> None:
        self.url = url
        self.on_entries = on_entries
        self.metrics = metrics
        self.retention = retention
        self.check_interval = check_interval
        self.first_retry = first_retry
        self.last_retry = last_retry
        #: The log as known here; ``None`` until first loaded.
        self.history: History | None = None
        #: True while reading the stream.
        self.reading = False
        self._advanced = asyncio.Event()

    async def run(self) -> None:
        """Read the log until cancelled."""
        retry = self.first_retry
        try:
            while True:
                try:
                    await self._connect_and_read()
                except (RedisError, OSError, TimeoutError) as exc:
                    if self.reading:  # it worked until now: start the backoff over
                        logger.warning("event=log_lost error=%r", str(exc))
                        retry = self.first_retry
                    self.reading = False
                    self.metrics.redis_reconnects += 1
                    delay = retry * random.uniform(0.5, 1.0)  # noqa: S311 - jitter, not crypto
                    logger.warning("event=log_retry in=%.1fs error=%r", delay, str(exc))
                    await asyncio.sleep(delay)
                    retry = min(retry * 2, self.last_retry)
        finally:
            self.reading = False

    async def wait_for(self, position: Position) -> None:
        """Return once the head reaches ``position`` (bound it with a timeout)."""
        while self.history is None or self.history.head < position:
            await self._advanced.wait()

    async def _connect_and_read(self) -> None:
        client = redis.asyncio.Redis.from_url(
            self.url,
            socket_connect_timeout=5,
            # Longer than XREAD's block: redis-py would otherwise read with the
            # connect timeout, and a quiet log would look like a lost Redis.
            socket_timeout=self.check_interval * 2 + 1,
            socket_keepalive=True,
        )
        try:
            if self.history is None:
                await self._load(client)
            assert self.history is not None
            self.reading = True
            logger.info("event=log_reading head=%s", self.history.head_id)
            block_ms = int(self.check_interval * 1000)
            while True:
                assert self.history is not None
                # XREAD returns after block_ms with nothing: a Redis that stops
                # answering without closing the socket is noticed by the timeout.
                async with asyncio.timeout(self.check_interval * 2 + 1):
                    reply = await client.xread(
                        {STREAM: str(self.history.head)}, count=BATCH, block=block_ms
                    )
                await self._accept(_entries(reply))
                self.history.trim(self.retention, now_ms=time.time_ns() // 1_000_000)
        finally:
            await client.aclose()

    async def _load(self, client: redis.asyncio.Redis) -> None:
        """Load the stream, once the relay has declared it complete."""
        while not await client.exists(EPOCH_KEY):
            logger.info("event=log_waiting reason=relay_has_not_declared_the_log")
            await asyncio.sleep(self.check_interval)
        async with client.pipeline(transaction=True) as pipeline:
            pipeline.get(EPOCH_KEY)
            pipeline.xinfo_stream(STREAM)
            pipeline.xrange(STREAM)
            epoch, info, entries = await pipeline.execute(raise_on_error=False)
        if isinstance(info, ResponseError):  # no stream: no event yet
            head, from_origin, entries = ORIGIN, True, []
        elif isinstance(info, Exception):
            raise info
        else:
            head = Position.parse(info["last-generated-id"])
            from_origin = info["entries-added"] == info["length"]
        if isinstance(entries, Exception):
            raise entries
        # Entries of an older history (a database created anew) may remain
        # before the declared one's: they are no one's position any more.
        declared = epoch.decode()
        loaded = _entries([[STREAM, entries]])
        current = [entry for entry in loaded if entry.epoch in (declared, None)]
        self.history = History(declared, ORIGIN, from_origin=from_origin and current == loaded)
        for entry in current:  # not handed on: they aren't new
            self._add(entry)
        self._signal()
        self.history.head = max(self.history.head, head)
        logger.info("event=log_loaded events=%d head=%s", len(self.history), self.history.head_id)

    async def _accept(self, entries: list[Entry]) -> None:
        """Add new entries to the history and hand them on, a chunk at a time."""
        chunk: list[Entry] = []
        size = 0
        for entry in entries:
            self._add(entry)
            chunk.append(entry)
            size += len(entry.message)
            if size >= CHUNK_BYTES:
                self._hand_on(chunk)
                chunk, size = [], 0
                await asyncio.sleep(0)
        self._hand_on(chunk)

    def _add(self, entry: Entry) -> None:
        assert self.history is not None
        if entry.epoch is not None and entry.epoch != self.history.epoch:
            logger.warning("event=new_history epoch=%s was=%s", entry.epoch, self.history.epoch)
            self.history = History(entry.epoch, entry.position.preceding(), from_origin=False)
        self.history.append(entry)
        if entry.audience is not None:
            self.metrics.events_received += 1
        elif entry.access is None:
            self.metrics.events_invalid += 1

    def _hand_on(self, entries: list[Entry]) -> None:
        if not entries:
            return
        self._signal()
        try:
            self.on_entries(entries)
        except Exception:  # a bug must not stop the next events
            logger.exception("event=handler_error")

    def _signal(self) -> None:
        """Wake :meth:`wait_for`: the head moved."""
        self._advanced.set()
        self._advanced = asyncio.Event()


def _entries(reply: Any) -> list[Entry]:
    """Decode XREAD's or XRANGE's reply; entries that aren't events are kept as such.

    Even an invalid entry moves the head, so that it is read only once.
    """
    return [
        _decode(Position.parse(stream_id), fields)
        for _stream, entries in reply or ()
        for stream_id, fields in entries
    ]


def _decode(position: Position, fields: dict[bytes, bytes]) -> Entry:
    message = fields.get(MESSAGE_FIELD.encode(), b"")
    try:
        decoded = decode_entry(message, fields.get(AUDIENCE_FIELD.encode()))
        parsed = parse_event_id(decoded.id)
        if parsed is None or parsed[1] != position:
            raise InvalidEvent(f"id {decoded.id!r} is not its place in the log")
        if isinstance(decoded, AccessChange):
            # The keys as the user model reads them, to match its connections'.
            keys = tuple(user_key(user) for user in decoded.users)
            access = dataclasses.replace(decoded, users=keys)
            return Entry(position, None, b"", access=access, epoch=parsed[0])
        if isinstance(decoded, AppEvent):
            users = frozenset(user_key(user) for user in decoded.audience.users)
            audience = dataclasses.replace(decoded.audience, users=users)
            return Entry(position, audience, message, epoch=parsed[0])
    except ValueError as exc:  # InvalidEvent, or a key the user model can't read
        logger.warning(
            "event=bad_entry id=%s error=%r message=%r", position, str(exc), message[:200]
        )
        return Entry(position, None, message)
    return Entry(position, _admin_change(decoded.content_type_id), message, epoch=parsed[0])


@functools.lru_cache(maxsize=1024)
def _admin_change(content_type_id: int) -> Audience:
    """The audience of an admin change: who may view or change its model.

    One object per content type: consecutive changes of one model are seen
    to share their audience at a glance (:mod:`.fanout`).
    """
    return Audience(content_types=frozenset([content_type_id]))
