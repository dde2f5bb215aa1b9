"""The event log in Redis, as the relay writes it (see :mod:`shared.eventlog`)."""

from __future__ import annotations

import json

import redis
from redis.exceptions import ResponseError

from live_notifications.shared.eventlog import (
    AUDIENCE_FIELD,
    EPOCH_KEY,
    MESSAGE_FIELD,
    STREAM,
    Position,
    Retention,
    event_id,
)
from live_notifications.shared.events import CHANNEL, split_audience

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


def fields(epoch: str, row: Row) -> tuple[dict[str, str], bool]:
    """The entry as the log's stream holds it: the outbox's JSON with its
    ``id``, and an app event's audience apart (clients never see it); and
    whether it is an admin change, the how-to's kind of event.

    Fields the relay doesn't know are kept: a newer web may add some.
    """
    data, audience = split_audience(json.loads(row.payload))
    text = json.dumps({**data, "id": event_id(epoch, row.position)}, ensure_ascii=False)
    if audience is not None:
        return {MESSAGE_FIELD: text, AUDIENCE_FIELD: audience}, False
    return {MESSAGE_FIELD: text}, not (isinstance(data, dict) and "access" in data)


def append(
    client: redis.Redis, epoch: str, rows: list[Row], *, retention: Retention, now_ms: int
) -> None:
    """Add ``rows``, whose positions follow the stream's head, and publish them.

    Each admin change is also published on the how-to's Pub/Sub channel
    (access changes are for the broadcasters only, app events for their
    audience only). The stream is
    trimmed to the retention window as it grows (approximately: Redis trims
    whole blocks, so a little more is kept, never less).
    """
    pipeline = client.pipeline(transaction=False)
    minid = str(retention.cutoff(now_ms))
    for row in rows:
        entry, admin_change = fields(epoch, row)
        pipeline.xadd(STREAM, entry, id=str(row.position), minid=minid)  # type: ignore[arg-type]
        if admin_change:
            pipeline.publish(CHANNEL, entry[MESSAGE_FIELD])
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
        pipeline.xadd(STREAM, fields(epoch, row)[0], id=str(row.position))  # type: ignore[arg-type]
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
