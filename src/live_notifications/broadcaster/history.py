"""The recent part of the event log, in memory: what resuming clients missed.

Replays are served from here, not from Redis: a reconnect storm of
thousands of clients costs each one a slice of a list, and Redis nothing.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

from live_notifications.shared.eventlog import ORIGIN, Position, Retention, event_id, parse_event_id
from live_notifications.shared.events import AccessChange, Audience


@dataclasses.dataclass(frozen=True, slots=True)
class Entry:
    """One entry of the log: an event ready to send, or an access change."""

    position: Position
    #: Who receives it (an admin change's: its content type); ``None`` for
    #: an entry that isn't an event (an access change, or invalid), which
    #: nobody receives but still takes its place.
    audience: Audience | None
    #: The message as clients receive it (JSON text, with its ``id``).
    message: bytes
    #: The access change this entry announces, if it is one.
    access: AccessChange | None = None
    #: The history it belongs to; ``None`` if not known (an invalid entry).
    epoch: str | None = None


class History:
    """The events of one history (epoch) from some point up to the head.

    Trimmed to the retention window, except that the newest event always
    stays known: a client that saw it has missed nothing, however long ago.
    """

    def __init__(self, epoch: str, head: Position, *, from_origin: bool) -> None:
        self.epoch = epoch
        #: Position of the last event of the log.
        self.head = head
        self._entries: list[Entry] = []
        self._start = 0  # entries before this index are trimmed
        self._index: dict[Position, int] = {}
        #: Whether nothing was ever trimmed: then every event since the
        #: origin is here, and a client at the origin can be replayed all.
        self._from_origin = from_origin

    @property
    def head_id(self) -> str:
        return event_id(self.epoch, self.head)

    def __len__(self) -> int:
        return len(self._entries) - self._start

    def append(self, entry: Entry) -> None:
        """Add the next event; its position must follow the head."""
        if entry.position <= self.head:
            raise ValueError(f"{entry.position} does not follow {self.head}")
        self._index[entry.position] = len(self._entries)
        self._entries.append(entry)
        self.head = entry.position

    def trim(self, retention: Retention, *, now_ms: int) -> None:
        """Forget events older than the window or beyond its count."""
        cutoff = retention.cutoff(now_ms)
        start = max(self._start, len(self._entries) - retention.max_events)
        while start < len(self._entries) and self._entries[start].position < cutoff:
            start += 1
        if start == self._start:
            return
        self._from_origin = False
        for entry in self._entries[self._start : start]:
            del self._index[entry.position]
        self._start = start
        if self._start > len(self._entries) // 2:  # compact now and then, not every time
            self._entries = self._entries[self._start :]
            self._index = {entry.position: i for i, entry in enumerate(self._entries)}
            self._start = 0

    def position_of(self, last_id: object) -> Position | None:
        """The position a client's ``last_id`` names in this history, or ``None``."""
        parsed = parse_event_id(last_id)
        if parsed is None or parsed[0] != self.epoch:
            return None
        return parsed[1]

    def honours(self, position: Position) -> bool:
        """Whether every event after ``position`` is known here."""
        if position == self.head or position in self._index:
            return True
        return position == ORIGIN and self._from_origin

    def after(self, position: Position) -> Iterator[Entry]:
        """The events after ``position``, which :meth:`honours` must accept.

        A list slice: appending while iterating is safe, and not seen.
        """
        if position == self.head:
            return iter(())
        start = self._start if position == ORIGIN else self._index[position] + 1
        return iter(self._entries[start:])
