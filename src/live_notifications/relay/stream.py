"""The event log in Redis, as the relay writes it (see :mod:`shared.eventlog`)."""

from __future__ import annotations

import json

import redis
from redis.exceptions import ResponseError

from live_notifications.shared.eventlog import (
    EPOCH_KEY,
    MESSAGE_FIELD,
    STREAM,
    Position,
    Retention,
    event_id,
)
from live_notifications.shared.events import CHANNEL

from .outbox import Row


def head(client: redis.Redis) -> Position | None:
    """The last position Redis's stream was given; ``None`` if it has no stream."""
    try:
        info = client.xinfo_stream(STREAM)
    except ResponseError as exc:
        if "no such key" in str(exc).lower():
            return None
        raise
    return Position.parse(info["last-generated-id"])


def message(epoch: str, row: Row) -> tuple[str, bool]:
    """The entry as the log holds it: the outbox's JSON, with its ``id``; and
    whether it is an event (what clients receive), not an access change.

    Fields the relay doesn't know are kept: a newer web may add some.
    """
    data = json.loads(row.payload)
    text = json.dumps({**data, "id": event_id(epoch, row.position)}, ensure_ascii=False)
    return text, not (isinstance(data, dict) and "access" in data)


def append(
    client: redis.Redis, epoch: str, rows: list[Row], *, retention: Retention, now_ms: int
) -> None:
    """Add ``rows``, whose positions follow the stream's head, and publish them.

    Each event is also published on the how-to's Pub/Sub channel (access
    changes are for the broadcasters only). The stream is
    trimmed to the retention window as it grows (approximately: Redis trims
    whole blocks, so a little more is kept, never less).
    """
    pipeline = client.pipeline(transaction=False)
    minid = str(retention.cutoff(now_ms))
    for row in rows:
        text, is_event = message(epoch, row)
        pipeline.xadd(STREAM, {MESSAGE_FIELD: text}, id=str(row.position), minid=minid)
        if is_event:
            pipeline.publish(CHANNEL, text)
    pipeline.xtrim(STREAM, maxlen=retention.max_events, approximate=True)
    pipeline.execute()


def refill(
    client: redis.Redis, epoch: str, rows: list[Row], *, retention: Retention, now_ms: int
) -> None:
    """Rebuild a stream that Redis lost from PostgreSQL's ``rows``, same ids.

    Nothing is published: these events went out before. The stream counts
    one more entry than it holds, as if one had been trimmed: readers then
    know that its history doesn't start at the origin (PostgreSQL may have
    trimmed what came before ``rows``).
    """
    pipeline = client.pipeline(transaction=True)
    for row in rows:
        pipeline.xadd(STREAM, {MESSAGE_FIELD: message(epoch, row)[0]}, id=str(row.position))
    pipeline.execute_command(  # type: ignore[no-untyped-call]
        "XSETID", STREAM, str(rows[-1].position), "ENTRIESADDED", len(rows) + 1
    )
    pipeline.xtrim(STREAM, minid=str(retention.cutoff(now_ms)), approximate=True)
    pipeline.xtrim(STREAM, maxlen=retention.max_events, approximate=True)
    pipeline.execute()


def declare(client: redis.Redis, epoch: str) -> None:
    """Tell readers that the stream is complete and which history it holds."""
    client.set(EPOCH_KEY, epoch)


def declared(client: redis.Redis) -> bool:
    return bool(client.exists(EPOCH_KEY))
