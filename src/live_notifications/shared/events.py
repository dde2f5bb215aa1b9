"""The entries of the log: what Django publishes and the broadcasters deliver.

This module is the single definition of their shapes: admin changes
(:class:`Event`, the how-to's), a project's own events (:class:`AppEvent`,
with the :class:`Audience` they are for) and access changes. Django encodes
them into the outbox; the relay adds each one's ``id`` (its place in the
log, :mod:`shared.eventlog`) and sets an app event's audience apart
(:func:`split_audience`); broadcasters check the result with
:func:`decode_entry` and forward the message's bytes unchanged, so a client
receives exactly what the log holds.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Hashable
from typing import Any

#: The most bytes an app event's message may take (its JSON as clients
#: receive it, without its ``id``): a client's whole buffer is a few of them.
MAX_EVENT_BYTES = 64 * 1024
#: The most users, groups, permissions and content types an audience names,
#: together: each broadcaster keeps every audience of its history in memory.
#: More users than this are a group's or a permission's.
MAX_AUDIENCE = 10_000

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
        users = [user_key_json(user) for user in self.users]
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


@dataclasses.dataclass(frozen=True, kw_only=True, slots=True)
class Audience:
    """Who an app event is for: the union of these.

    In the log, a JSON object with the non-empty ones of these keys. The
    users' keys are integers, or text (a UUID's) for the keys JSON has no
    type for; a broadcaster reads them as its user model's keys.
    """

    #: Primary keys of users.
    users: frozenset[Hashable] = frozenset()
    #: Primary keys of groups: their members when the event is read.
    groups: frozenset[int] = frozenset()
    #: ``"app_label.codename"``: whoever holds one, superusers included.
    permissions: frozenset[str] = frozenset()
    #: Content types: whoever may view or change that model (the how-to's
    #: rule, which admin changes follow), superusers included.
    content_types: frozenset[int] = frozenset()
    #: Every authenticated user.
    everyone: bool = False

    def __bool__(self) -> bool:
        return bool(
            self.everyone or self.users or self.groups or self.permissions or self.content_types
        )

    @property
    def size(self) -> int:
        """How many users, groups, permissions and content types it names."""
        return len(self.users) + len(self.groups) + len(self.permissions) + len(self.content_types)

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {}
        if self.users:
            users = (user_key_json(user) for user in self.users)
            data["users"] = sorted(users, key=lambda user: (isinstance(user, str), user))
        for name in ("groups", "permissions", "content_types"):
            if values := getattr(self, name):
                data[name] = sorted(values)
        if self.everyone:
            data["everyone"] = True
        return data

    @classmethod
    def from_json(cls, data: Any) -> Audience:
        """Read an audience's JSON; raises :exc:`InvalidEvent`."""
        if not isinstance(data, dict) or set(data) - _AUDIENCE_KEYS:
            raise InvalidEvent("an audience is an object of users, groups, permissions…")
        users, groups = data.get("users", []), data.get("groups", [])
        permissions, content_types = data.get("permissions", []), data.get("content_types", [])
        everyone = data.get("everyone", False)
        if not (
            _list_of(users, "int | str")
            and _list_of(groups, "int")
            and _list_of(permissions, "str")
            and _list_of(content_types, "int")
            and isinstance(everyone, bool)
        ):
            raise InvalidEvent("wrong type in audience")
        audience = cls(
            users=frozenset(users),
            groups=frozenset(groups),
            permissions=frozenset(permissions),
            content_types=frozenset(content_types),
            everyone=everyone,
        )
        if not audience:
            raise InvalidEvent("empty audience")
        if audience.size > MAX_AUDIENCE:
            raise InvalidEvent(f"an audience of more than {MAX_AUDIENCE}")
        return audience


_AUDIENCE_KEYS = {field.name for field in dataclasses.fields(Audience)}


@dataclasses.dataclass(frozen=True, kw_only=True, slots=True)
class AppEvent:
    """An event of the project's own, for an :class:`Audience`.

    Clients receive ``{"event", "data", "timestamp", "id"}``: the ``event``
    field tells it from an admin change (``model``…) and from a control
    message (``type``). The audience is for the broadcasters only.
    """

    #: The event's name, e.g. ``"ticket.assigned"``.
    event: str
    #: Any JSON value.
    data: Any
    #: When it was published, ISO 8601 with time zone.
    timestamp: str
    audience: Audience
    #: Place in the event log, as for :class:`Event`.
    id: str | None = None

    def message(self) -> bytes:
        """The JSON text clients receive: everything but the audience."""
        return _json(self._fields())

    def encode(self) -> bytes:
        """The outbox's JSON text: the message's fields and the audience."""
        return _json({**self._fields(), "audience": self.audience.to_json()})

    def _fields(self) -> dict[str, Any]:
        fields: dict[str, Any] = {"event": self.event, "data": self.data}
        fields["timestamp"] = self.timestamp
        if self.id is not None:
            fields["id"] = self.id
        return fields


def _json(fields: dict[str, Any]) -> bytes:
    return json.dumps(fields, ensure_ascii=False, allow_nan=False).encode()


def split_audience(data: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
    """An entry's fields without its audience, and the audience as JSON text.

    The relay keeps them apart in the log, so that broadcasters forward the
    message's bytes as they are, and no client ever sees an audience.
    """
    if "audience" not in data:
        return data, None
    data = dict(data)
    audience = data.pop("audience")
    return data, json.dumps(audience, ensure_ascii=False)


def decode_entry(
    payload: bytes | str, audience: bytes | str | None = None
) -> Event | AppEvent | AccessChange:
    """Parse an entry of the log: an event, an app event, or an access change.

    ``audience`` is an app event's, kept apart from its message (:func:`split_audience`).

    Raises:
        InvalidEvent: if it is none of them.
    """
    data = _parse(payload)
    if isinstance(data, dict) and "access" in data:
        return AccessChange.from_json(data)
    if isinstance(data, dict) and "event" in data:
        if audience is None:
            raise InvalidEvent("app event without an audience")
        return _app_event(data, Audience.from_json(_parse(audience)))
    return Event.from_json(data)


def _app_event(data: dict[str, Any], audience: Audience) -> AppEvent:
    if not isinstance(data["event"], str) or "data" not in data:
        raise InvalidEvent("an app event has a name and data")
    for name in ("timestamp", "id"):
        if not _has_type(data.get(name), "str | None"):
            raise InvalidEvent(f"wrong type for field: {name}")
    if not isinstance(data.get("timestamp"), str):
        raise InvalidEvent("missing field: timestamp")
    return AppEvent(
        event=data["event"],
        data=data["data"],
        timestamp=data["timestamp"],
        audience=audience,
        id=data.get("id"),
    )


def _parse(payload: bytes | str) -> Any:
    try:
        return json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidEvent(f"not JSON: {exc}") from None


def user_key_json(user: Hashable) -> int | str:
    """A user's primary key as the log holds it: an integer, or text (a UUID's)."""
    return user if isinstance(user, int) else str(user)


def _list_of(values: object, annotation: str) -> bool:
    return isinstance(values, list) and all(_has_type(value, annotation) for value in values)


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
