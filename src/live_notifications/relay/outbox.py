"""The outbox in PostgreSQL, as the relay uses it. Blocking: the relay's thread.

Only the leader (:func:`try_lead`) assigns positions, so the order it gives
is the one order of the log. Positions only grow, in PostgreSQL and Redis.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterable

from django.db import connection
from django.db.models import Q, QuerySet

from live_notifications.models import EventLog, OutboxEvent
from live_notifications.publishing import OUTBOX_CHANNEL
from live_notifications.shared.eventlog import ORIGIN, Position, Retention

#: Key of the PostgreSQL advisory lock held by the relay that leads.
LEADER_LOCK = 7_215_883_920_017


@dataclasses.dataclass(frozen=True, slots=True)
class Row:
    """An event with its place in the log, as PostgreSQL keeps it."""

    position: Position
    payload: str
    #: When its transaction wrote it, as a Unix time in seconds.
    created: float


def try_lead() -> bool:
    """Take the leader's lock if it's free; held until the connection closes.

    The session asks PostgreSQL to probe its connection: should the leader's
    machine vanish without closing it, the server notices within about 30 s
    and frees the lock for a standby, instead of after hours of TCP silence.
    """
    with connection.cursor() as cursor:
        cursor.execute(
            "SET tcp_keepalives_idle = 10; SET tcp_keepalives_interval = 5;"
            " SET tcp_keepalives_count = 3; SET tcp_user_timeout = 30000"
        )
        cursor.execute("SELECT pg_try_advisory_lock(%s)", [LEADER_LOCK])
        return bool(cursor.fetchone()[0])


def check() -> None:
    """Raise if PostgreSQL doesn't answer."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")


def listen() -> None:
    """Be woken by :func:`wait` when a transaction that wrote events commits."""
    with connection.cursor() as cursor:
        cursor.execute(f"LISTEN {OUTBOX_CHANNEL}")


def wait(timeout: float) -> None:
    """Return at the next notification, or after ``timeout`` seconds."""
    connection.ensure_connection()
    with connection.wrap_database_errors:  # psycopg's errors as Django's
        for _ in connection.connection.notifies(timeout=timeout, stop_after=1):
            pass


def epoch() -> str:
    """This database's history name (created with the first leader)."""
    log, _ = EventLog.objects.get_or_create(pk=1)
    return log.epoch


# The relay's queries on each pass, written by hand: the ORM compiled them
# anew on every pass (bulk_update's CASE WHEN above all), three quarters of
# the relay's CPU, 7-9 ms an event. Only the leader runs them. The table is
# OutboxEvent's, whatever the app's label (:func:`queries`).


@dataclasses.dataclass(frozen=True)
class Queries:
    #: Give the oldest rows without a position the positions following the
    #: greater of the log's head in Redis (``after_ms``, ``after_seq``) and
    #: the last position given, at ``now_ms`` if the clock is past it (as
    #: :meth:`Position.following`), in id order. One statement: one snapshot.
    assign: str
    #: Every row with a position, oldest first.
    all: str
    #: The rows past a position, oldest first (a row comparison: the position's index).
    after: str


@functools.cache
def queries() -> Queries:
    """The queries, on the outbox's table as the project names it (its app's label)."""
    table = connection.ops.quote_name(OutboxEvent._meta.db_table)
    # A quoted table name from the model's metadata: nothing of a client's.
    assign = f"""
WITH last AS (
    SELECT position_ms AS ms, position_seq AS seq FROM {table}
    WHERE position_ms IS NOT NULL
    ORDER BY position_ms DESC, position_seq DESC LIMIT 1
), base AS (
    SELECT ms, seq FROM (
        SELECT ms, seq FROM last UNION ALL SELECT %(after_ms)s, %(after_seq)s
    ) candidates
    ORDER BY ms DESC, seq DESC LIMIT 1
), first AS (
    SELECT CASE WHEN %(now_ms)s > ms THEN %(now_ms)s ELSE ms END AS ms,
           CASE WHEN %(now_ms)s > ms THEN 0 ELSE seq + 1 END AS seq
    FROM base
), pending AS (
    SELECT id, row_number() OVER (ORDER BY id) - 1 AS n
    FROM (
        SELECT id FROM {table} WHERE position_ms IS NULL
        ORDER BY id LIMIT %(limit)s
    ) oldest
)
UPDATE {table} SET position_ms = first.ms, position_seq = first.seq + pending.n
FROM pending, first WHERE {table}.id = pending.id
"""  # noqa: S608
    rows = f"SELECT position_ms, position_seq, payload, created FROM {table}"  # noqa: S608
    return Queries(
        assign=assign,
        all=rows + " WHERE position_ms IS NOT NULL ORDER BY position_ms, position_seq LIMIT %s",
        after=rows
        + " WHERE (position_ms, position_seq) > (%s, %s) ORDER BY position_ms, position_seq"
        + " LIMIT %s",
    )


def assign(*, after: Position | None, now_ms: int, limit: int) -> int:
    """Give committed rows without a position the next positions, in id order.

    Positions follow ``after`` (the log's head in Redis) and every position
    already given. Returns how many rows were assigned.
    """
    head = after or ORIGIN
    with connection.cursor() as cursor:
        cursor.execute(
            queries().assign,
            {"after_ms": head.ms, "after_seq": head.seq, "now_ms": now_ms, "limit": limit},
        )
        return int(cursor.rowcount)


def after(position: Position | None, *, limit: int) -> list[Row]:
    """Rows past ``position`` (every row if ``None``), oldest first."""
    with connection.cursor() as cursor:
        if position is None:
            cursor.execute(queries().all, [limit])
        else:
            cursor.execute(queries().after, [position.ms, position.seq, limit])
        return [
            Row(Position(ms, seq), payload, created.timestamp())
            for ms, seq, payload, created in cursor
        ]


def newest(count: int) -> list[Row]:
    """The ``count`` newest rows, oldest first."""
    return _rows(reversed(_assigned().order_by("-position_ms", "-position_seq")[:count]))


def trim(retention: Retention, *, now_ms: int) -> int:
    """Delete what the history no longer needs; return how many rows went.

    Kept: the rows of the retention window, and the newest row before it,
    so that a refilled Redis starts where the window does.
    """
    keep_from = _newest_before(retention.cutoff(now_ms))
    by_count = (
        _assigned()
        .order_by("-position_ms", "-position_seq")
        .values_list("position_ms", "position_seq")[retention.max_events : retention.max_events + 1]
    )
    oldest_counted = _position(by_count[0]) if by_count else None
    if oldest_counted is not None:
        keep_from = max(keep_from or oldest_counted, oldest_counted)
    if keep_from is None:
        return 0
    deleted, _ = (
        _assigned()
        .filter(
            Q(position_ms__lt=keep_from.ms)
            | Q(position_ms=keep_from.ms, position_seq__lt=keep_from.seq)
        )
        .delete()
    )
    return deleted


def _newest_before(position: Position) -> Position | None:
    found = (
        _assigned()
        .filter(
            Q(position_ms__lt=position.ms)
            | Q(position_ms=position.ms, position_seq__lt=position.seq)
        )
        .order_by("-position_ms", "-position_seq")
        .values_list("position_ms", "position_seq")
        .first()
    )
    return _position(found)


def _position(values: tuple[int | None, int | None] | None) -> Position | None:
    if values is None or values[0] is None or values[1] is None:
        return None
    return Position(values[0], values[1])


def _assigned() -> QuerySet[OutboxEvent]:
    return OutboxEvent.objects.filter(position_ms__isnull=False)


def _rows(events: Iterable[OutboxEvent]) -> list[Row]:
    rows = []
    for event in events:
        assert event.position_ms is not None and event.position_seq is not None
        position = Position(event.position_ms, event.position_seq)
        rows.append(Row(position, event.payload, event.created.timestamp()))
    return rows
