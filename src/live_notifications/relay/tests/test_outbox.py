"""The outbox's queries on a real PostgreSQL: the order positions are given in,
and what the relay reads back. The log's order rests on these."""

from __future__ import annotations

import pytest

from live_notifications.models import OutboxEvent
from live_notifications.relay import outbox
from live_notifications.shared.eventlog import Position

pytestmark = pytest.mark.django_db


def rows(*payloads: str) -> list[int]:
    """Committed rows without a position, as the web writes them; their ids."""
    return [OutboxEvent.objects.create(payload=p).pk for p in payloads]


def position(row: OutboxEvent) -> Position | None:
    return None if row.position_ms is None else Position(row.position_ms, row.position_seq)


def positions() -> dict[str, Position | None]:
    return {row.payload: position(row) for row in OutboxEvent.objects.all()}


def test_rows_are_given_the_next_positions_in_id_order_at_the_clock() -> None:
    rows("a", "b", "c")
    assert outbox.assign(after=None, now_ms=1_000, limit=10) == 3
    given = positions()
    assert given == {"a": Position(1_000, 0), "b": Position(1_000, 1), "c": Position(1_000, 2)}
    rows("d")
    assert outbox.assign(after=Position(1_000, 2), now_ms=2_000, limit=10) == 1
    assert positions()["d"] == Position(2_000, 0)


def test_a_clock_behind_the_log_continues_its_millisecond() -> None:
    """Positions only grow: a clock that went back (or a head from another
    machine's clock) gives the next sequence numbers of the last position."""
    rows("a")
    outbox.assign(after=Position(5_000, 7), now_ms=4_000, limit=10)
    assert positions()["a"] == Position(5_000, 8)
    rows("b")
    outbox.assign(after=Position(5_000, 8), now_ms=5_000, limit=10)
    assert positions()["b"] == Position(5_000, 9)


def test_positions_follow_the_greater_of_the_head_and_the_last_given() -> None:
    rows("a", "b")
    outbox.assign(after=None, now_ms=3_000, limit=10)
    # A Redis that lost its data has no head: PostgreSQL's last position counts.
    rows("c")
    outbox.assign(after=None, now_ms=3_000, limit=10)
    assert positions()["c"] == Position(3_000, 2)
    # A head past anything PostgreSQL gave (a log kept while the outbox was
    # trimmed): positions follow it.
    rows("d")
    outbox.assign(after=Position(9_000, 4), now_ms=3_000, limit=10)
    assert positions()["d"] == Position(9_000, 5)


def test_at_most_limit_rows_are_given_positions_the_oldest_first() -> None:
    rows(*"abcde")
    assert outbox.assign(after=None, now_ms=1_000, limit=2) == 2
    assert [p for p, at in sorted(positions().items()) if at is not None] == ["a", "b"]
    assert outbox.assign(after=None, now_ms=1_000, limit=2) == 2
    assert outbox.assign(after=None, now_ms=1_001, limit=2) == 1
    assert positions()["e"] == Position(1_001, 0)
    assert outbox.assign(after=None, now_ms=1_002, limit=2) == 0


def test_rows_after_a_position_come_oldest_first_and_only_those_with_one() -> None:
    rows("a", "b", "c")
    outbox.assign(after=None, now_ms=1_000, limit=10)
    rows("d")
    outbox.assign(after=None, now_ms=2_000, limit=10)
    rows("not yet")
    every = outbox.after(None, limit=10)
    assert [r.payload for r in every] == ["a", "b", "c", "d"]
    assert [r.position for r in every][1:3] == [Position(1_000, 1), Position(1_000, 2)]
    assert every[0].created == OutboxEvent.objects.get(payload="a").created.timestamp()
    assert [r.payload for r in outbox.after(Position(1_000, 1), limit=10)] == ["c", "d"]
    assert [r.payload for r in outbox.after(Position(1_000, 2), limit=10)] == ["d"]
    assert [r.payload for r in outbox.after(Position(999, 5), limit=2)] == ["a", "b"]
    assert outbox.after(Position(2_000, 0), limit=10) == []


def test_the_queries_name_the_outbox_table() -> None:
    table = f'"{OutboxEvent._meta.db_table}"'
    queries = outbox.queries()
    assert f"FROM {table} " in queries.assign
    assert f"UPDATE {table} " in queries.assign
    assert f"FROM {table} " in queries.all
    assert f"FROM {table} " in queries.after
