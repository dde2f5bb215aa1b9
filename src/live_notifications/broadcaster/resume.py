"""The resuming conversation: the first message, the welcome, the replay, positions.

A client opens either with the bare token (the how-to's protocol: events
only) or with ``{"token": …, "last_id": …}``; only the latter receive the
control messages built here, which are the ones with a ``type`` field.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
from typing import TYPE_CHECKING

from live_notifications.shared.eventlog import Position, event_id

from .auth import Identity
from .connection import Connection
from .metrics import Metrics

if TYPE_CHECKING:  # they send control messages built here
    from .fanout import Fanout
    from .log import EventLogReader

#: Seconds a resuming client whose last id is ahead of this replica (it came
#: from a replica that read the log a moment sooner) waits for it to catch up.
AHEAD_WAIT = 5.0


@dataclasses.dataclass(frozen=True, slots=True)
class Hello:
    """What a client's first message says."""

    token: str
    #: Whether the client opened with the JSON form, and so resumes.
    resuming: bool = False
    #: The ``last_id`` it sent, as sent: not necessarily a valid id.
    last_id: object = None


def parse_hello(message: str) -> Hello | None:
    """Read a first message; ``None`` if it is JSON of the wrong shape.

    Tokens never start with ``{``, so a message that does is the JSON form.
    """
    if not message.startswith("{"):
        return Hello(message)
    try:
        data = json.loads(message)
    except ValueError:
        return None
    if not isinstance(data, dict) or not isinstance(data.get("token"), str):
        return None
    return Hello(data["token"], resuming=True, last_id=data.get("last_id"))


def welcome(position_id: str, *, recovered: bool) -> str:
    """The first message to a resuming client: where its stream starts."""
    return json.dumps({"type": "welcome", "id": position_id, "recovered": recovered})


def position(position_id: str) -> str:
    """Moves a client's position past events it may not see."""
    return json.dumps({"type": "position", "id": position_id})


async def resume(
    connection: Connection,
    identity: Identity,
    last_id: object,
    *,
    seen: Position,
    log: EventLogReader,
    fanout: Fanout,
    metrics: Metrics,
) -> bool:
    """Welcome a resuming client, send what it missed, then register it.

    ``seen`` is the log's head when the client's permissions were read:
    without a last id it can honour, the client's stream starts there.
    Returns whether it is registered.
    """
    history = log.history
    assert history is not None  # connections are refused before it's loaded
    asked = None if last_id is None else history.position_of(last_id)
    if asked is not None and asked > history.head:
        # It came from a replica that read the log a moment sooner.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(AHEAD_WAIT):
                await log.wait_for(asked)
        history = log.history
        assert history is not None
    recovered = asked is not None and history.honours(asked)
    if last_id is not None:
        metrics.resumes["recovered" if recovered else "not_recovered"] += 1
    at = asked if recovered and asked is not None else seen
    await connection.send(welcome(event_id(history.epoch, at), recovered=recovered).encode())
    return await fanout.follow(connection, identity, at, resuming=True)
