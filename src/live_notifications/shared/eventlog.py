"""The event log as Redis holds it: what the relay writes and broadcasters read.

PostgreSQL is the log's source of truth (the outbox, written in the same
transaction as each change); Redis holds a copy of its recent part, the
stream :data:`STREAM`, which the relay fills and refills with the positions
PostgreSQL assigned. So an event keeps its id whatever happens to Redis.

An event's id is ``"<epoch>:<ms>-<seq>"``: the epoch names one history (a new
database starts a new one), ``<ms>-<seq>`` is the entry's id in the stream.
Clients treat ids as opaque strings; only this module takes them apart.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping

from live_notifications.shared import environment

#: The Redis stream holding the recent events, oldest first.
STREAM = "events:log"
#: Set by the relay once the stream holds everything PostgreSQL has: until
#: then (a Redis that lost its data) readers must not trust the stream.
EPOCH_KEY = "events:epoch"
#: The stream entry's field holding the message exactly as clients receive it.
MESSAGE_FIELD = "message"
#: The field holding an app event's audience (JSON), which clients never see.
AUDIENCE_FIELD = "audience"


@dataclasses.dataclass(frozen=True, kw_only=True)
class Retention:
    """How much of the log is kept, in PostgreSQL, Redis and each broadcaster.

    At least ``seconds`` of events, unless there are more than ``max_events``
    of them: the count bounds memory, and wins.
    """

    seconds: float = 300.0
    max_events: int = 10_000

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Retention:
        """Read ``EVENT_HISTORY_SECONDS`` and ``EVENT_HISTORY_MAX_EVENTS``."""
        return cls(
            seconds=environment.number("EVENT_HISTORY_SECONDS", cls.seconds, minimum=1, env=env),
            max_events=environment.integer(
                "EVENT_HISTORY_MAX_EVENTS", cls.max_events, minimum=1, env=env
            ),
        )

    def cutoff(self, now_ms: int) -> Position:
        """The oldest position that must be kept at ``now_ms``."""
        return Position(max(0, now_ms - int(self.seconds * 1000)), 0)


_EVENT_ID = re.compile(r"([0-9a-z]{1,32}):([0-9]{1,20})-([0-9]{1,20})")


@dataclasses.dataclass(frozen=True, order=True, slots=True)
class Position:
    """A place in the log: a Redis stream entry id, ``<ms>-<seq>``."""

    ms: int
    seq: int

    @classmethod
    def parse(cls, stream_id: str | bytes) -> Position:
        """Parse a stream entry id such as ``"1764621234567-0"``."""
        text = stream_id.decode() if isinstance(stream_id, bytes) else stream_id
        ms, _, seq = text.partition("-")
        return cls(int(ms), int(seq or 0))

    def __str__(self) -> str:
        return f"{self.ms}-{self.seq}"

    def following(self, now_ms: int) -> Position:
        """The position after this one, at ``now_ms`` if the clock allows."""
        if now_ms > self.ms:
            return Position(now_ms, 0)
        return Position(self.ms, self.seq + 1)

    def preceding(self) -> Position:
        """The greatest position before this one (``0-0`` has none)."""
        if self.seq:
            return Position(self.ms, self.seq - 1)
        return Position(self.ms - 1, 2**64 - 1) if self.ms else ORIGIN


#: Before the first event of a history.
ORIGIN = Position(0, 0)


def event_id(epoch: str, position: Position) -> str:
    """The id clients see for the event at ``position`` of history ``epoch``."""
    return f"{epoch}:{position}"


def parse_event_id(text: object) -> tuple[str, Position] | None:
    """Split an event id into epoch and position; ``None`` if it isn't one."""
    if not isinstance(text, str):
        return None
    match = _EVENT_ID.fullmatch(text)
    if match is None:
        return None
    epoch, ms, seq = match.groups()
    position = Position(int(ms), int(seq))
    if position.ms >= 2**64 or position.seq >= 2**64:
        return None
    return epoch, position
