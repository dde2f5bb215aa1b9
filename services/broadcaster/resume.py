"""The resuming conversation: the first message, the welcome, positions.

A client opens either with the bare token (the how-to's protocol: events
only) or with ``{"token": …, "last_id": …}``; only the latter receive the
control messages built here, which are the ones with a ``type`` field.
"""

from __future__ import annotations

import dataclasses
import json


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
