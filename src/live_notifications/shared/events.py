"""The event that Django publishes and the broadcasters deliver.

This module is the single definition of the event's shape. Django builds
events with :meth:`Event.encode` into the outbox; the relay adds each one's
``id`` (its place in the log, :mod:`shared.eventlog`); broadcasters check the
result with :func:`Event.decode` and forward those bytes unchanged, so a
client receives exactly what the log holds.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Hashable
from typing import Any

#: Redis Pub/Sub channel where the relay also publishes every event, so that
#: the how-to's ``redis-cli SUBSCRIBE events`` still shows them.
CHANNEL = "events"


class InvalidEvent(ValueError):
    """A message on the bus that is not an event."""


@dataclasses.dataclass(frozen=True, kw_only=True, slots=True)
class Event:
    """One change made in the Django admin.

    The fields are the how-to's, plus ``action`` so that a client can tell an
    addition from a deletion without parsing ``message``.
    """

    #: Verbose name of the model, e.g. ``"group"``.
    model: str
    #: ``str()`` of the object when it was logged.
    object: str
    #: Readable change message, e.g. ``"Changed name."``.
    message: str
    #: When the change was made, ISO 8601 with time zone.
    timestamp: str
    #: Who made the change.
    user: str
    #: Primary key of the model's ``ContentType``: what permissions filter on.
    content_type_id: int
    #: Primary key of the object, as a string; ``None`` when unknown.
    object_id: str | None
    #: ``"added"``, ``"changed"`` or ``"deleted"``.
    action: str
    #: Place in the event log (:func:`shared.eventlog.event_id`), given by the
    #: relay; ``None`` before that, and then left out of the JSON.
    id: str | None = None

    def encode(self) -> bytes:
        """Serialize to JSON text."""
        fields = dataclasses.asdict(self)
        if self.id is None:
            del fields["id"]
        return json.dumps(fields, ensure_ascii=False).encode()

    @classmethod
    def decode(cls, payload: bytes | str) -> Event:
        """Parse an event's JSON text.

        ``id`` may be missing (``None``); every other field is required.
        Unknown fields are ignored, so that a newer publisher may add fields
        before every broadcaster is upgraded.

        Raises:
            InvalidEvent: if ``payload`` isn't a JSON object with every field
                of the expected type.
        """
        return cls.from_json(_parse(payload))

    @classmethod
    def from_json(cls, data: Any) -> Event:
        """Build an event from parsed JSON; raises :exc:`InvalidEvent` as :meth:`decode`."""
        if not isinstance(data, dict):
            raise InvalidEvent("not a JSON object")
        values = {}
        for field in dataclasses.fields(cls):
            if field.name not in data:
                if field.default is None:
                    continue
                raise InvalidEvent(f"missing field: {field.name}")
            value = data[field.name]
            if not _has_type(value, field.type):
                raise InvalidEvent(f"wrong type for field: {field.name}")
            values[field.name] = value
        return cls(**values)


#: :attr:`AccessChange.access`: close those users' connections.
REVOKED = "revoked"
#: :attr:`AccessChange.access`: recompute what those users may see.
CHANGED = "changed"


@dataclasses.dataclass(frozen=True, kw_only=True, slots=True)
class AccessChange:
    """Some users' access changed. In the log with the events; never sent to clients.

    Broadcasters close the connections of users whose access is
    :data:`REVOKED` (deactivated, deleted, password changed) and recompute
    what the others may see (:data:`CHANGED`), before any later event.
    """

    access: str
    #: Primary keys of the users concerned: in the log, integers, or text (a
    #: UUID's) for the keys JSON has no type for; a broadcaster reads them as
    #: its user model's keys.
    users: tuple[Hashable, ...]
    #: Place in the event log, as for :class:`Event`.
    id: str | None = None

    def encode(self) -> bytes:
        """Serialize to JSON text (an object with an ``access`` field)."""
        users = [user if isinstance(user, int) else str(user) for user in self.users]
        return json.dumps({"access": self.access, "users": users}).encode()

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> AccessChange:
        """Build an access change from parsed JSON; raises :exc:`InvalidEvent`."""
        users = data.get("users")
        if data.get("access") not in (REVOKED, CHANGED):
            raise InvalidEvent("unknown access change")
        if not isinstance(users, list) or not all(_has_type(u, "int | str") for u in users):
            raise InvalidEvent("users must be a list of integers or strings")
        id_ = data.get("id")
        if not _has_type(id_, "str | None"):
            raise InvalidEvent("wrong type for field: id")
        return cls(access=data["access"], users=tuple(users), id=id_)


def decode_entry(payload: bytes | str) -> Event | AccessChange:
    """Parse an entry of the log: an event, or an access change.

    Raises:
        InvalidEvent: if it is neither.
    """
    data = _parse(payload)
    if isinstance(data, dict) and "access" in data:
        return AccessChange.from_json(data)
    return Event.from_json(data)


def _parse(payload: bytes | str) -> Any:
    try:
        return json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidEvent(f"not JSON: {exc}") from None


def _has_type(value: object, annotation: object) -> bool:
    # Annotations are strings because of ``from __future__ import annotations``.
    if annotation == "int":
        # bool is a subclass of int, but true is not a content type.
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation == "str | None":
        return value is None or isinstance(value, str)
    if annotation == "int | str":
        return _has_type(value, "int") or isinstance(value, str)
    return isinstance(value, str)
