"""The history in memory: which positions it can honour, and what follows them."""

from __future__ import annotations

from live_notifications.broadcaster.history import Entry, History
from live_notifications.shared.eventlog import ORIGIN, Position, Retention, event_id
from live_notifications.shared.events import Audience

NOW = 1_800_000_000_000  # ms


def entry(ms: int, seq: int = 0, content_type: int | None = 3) -> Entry:
    audience = None if content_type is None else Audience(content_types=frozenset({content_type}))
    return Entry(Position(ms, seq), audience, f"{ms}-{seq}".encode())


def history(*entries: Entry) -> History:
    made = History("e1", ORIGIN, from_origin=True)
    for each in entries:
        made.append(each)
    return made


def test_positions_in_the_history_are_honoured_with_what_follows() -> None:
    log = history(entry(NOW), entry(NOW, 1), entry(NOW + 5))
    assert log.honours(Position(NOW, 1))
    assert [e.position for e in log.after(Position(NOW, 1))] == [Position(NOW + 5, 0)]
    assert log.honours(ORIGIN)  # nothing trimmed yet: everything is here
    assert len(list(log.after(ORIGIN))) == 3
    assert list(log.after(log.head)) == []


def test_unknown_positions_are_not_honoured() -> None:
    log = history(entry(NOW), entry(NOW + 5))
    assert not log.honours(Position(NOW + 1, 0))  # never an event


def test_trimming_forgets_the_old_but_never_the_head() -> None:
    log = history(entry(NOW), entry(NOW + 1), entry(NOW + 2))
    log.trim(Retention(seconds=1, max_events=10), now_ms=NOW + 1_001)
    assert not log.honours(Position(NOW, 0))
    assert not log.honours(ORIGIN)  # the start is gone
    assert log.honours(Position(NOW + 1, 0))
    log.trim(Retention(seconds=1, max_events=10), now_ms=NOW + 60_000)
    assert len(log) == 0
    assert log.honours(log.head)  # a client that saw the last event missed nothing
    assert list(log.after(log.head)) == []


def test_trimming_by_count() -> None:
    log = history(*(entry(NOW + i) for i in range(10)))
    log.trim(Retention(seconds=300, max_events=3), now_ms=NOW + 10)
    assert len(log) == 3
    assert [e.position.ms for e in log.after(Position(NOW + 7, 0))] == [NOW + 8, NOW + 9]
    assert not log.honours(Position(NOW + 6, 0))


def test_compaction_keeps_positions_right() -> None:
    log = history(*(entry(NOW + i) for i in range(100)))
    for i in range(100, 300):
        log.append(entry(NOW + i))
        log.trim(Retention(seconds=300, max_events=50), now_ms=NOW + i)
    assert len(log) == 50
    assert [e.position.ms for e in log.after(Position(NOW + 297, 0))] == [NOW + 298, NOW + 299]


def test_ids_of_other_histories_or_malformed_name_no_position() -> None:
    log = history(entry(NOW))
    assert log.position_of(event_id("e1", Position(NOW, 0))) == Position(NOW, 0)
    for bad in [
        event_id("e2", Position(NOW, 0)),
        "e1:x-1",
        "e1",
        "",
        None,
        42,
        ["e1:1-0"],
        "e1:1-0-0",
    ]:
        assert log.position_of(bad) is None, bad
