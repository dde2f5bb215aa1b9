"""Publish a project's own events, to the audience it chooses.

:func:`publish` writes the event to the outbox in the caller's transaction,
as admin changes are: announced exactly when the transaction commits (never
if it rolls back), given its place in the one ordered log, replayed to
clients that resume, delivered once Redis is back if it is down. The
broadcasters send it to the connected users in its audience as they stand
at that place in the log: group memberships and permissions changed before
it apply, later ones don't.

Everything is checked here, at the call: a bad event raises, and nothing
reaches the outbox that the relay or a broadcaster would refuse.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group, Permission
from django.contrib.contenttypes.models import ContentType
from django.core.exceptions import ValidationError
from django.core.serializers.json import DjangoJSONEncoder
from django.db.models import Model, Q
from django.utils import timezone

from live_notifications.shared.events import MAX_AUDIENCE, MAX_EVENT_BYTES, AppEvent, Audience

from . import publishing

#: What an event's name may be: a letter or digit, then up to 99 of these.
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,99}")


class EventError(ValueError):
    """An event that can't be published: its name, data or audience is wrong."""


def publish(
    name: str,
    data: Any = None,
    *,
    users: Iterable[Any] = (),
    groups: Iterable[Group | int] = (),
    permissions: Iterable[str] = (),
    models: Iterable[type[Model] | Model] = (),
    everyone: bool = False,
) -> None:
    """Send event ``name`` with ``data`` to the union of the audiences given.

    Args:
        name: e.g. ``"ticket.assigned"``; letters, digits and ``_.:-``, at
            most 100 characters.
        data: anything :class:`~django.core.serializers.json.DjangoJSONEncoder`
            serializes (dates, decimals and UUIDs as text).
        users: user objects or primary keys.
        groups: ``Group`` objects or primary keys: their members.
        permissions: ``"app_label.codename"``: whoever holds one, directly,
            through a group, or as a superuser.
        models: model classes or objects: whoever may view or change that
            model (the how-to's rule for admin changes).
        everyone: every authenticated user.

    Raises:
        EventError: for a bad name, data that isn't JSON or makes the event
            larger than ``MAX_EVENT_BYTES`` (64 KiB), an empty audience or one
            of more than ``MAX_AUDIENCE`` (10,000) users, groups, permissions
            and models, an unsaved object, a key or a permission that doesn't
            exist.
    """
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise EventError(f"an event's name is letters, digits and _.:- (at most 100): {name!r}")
    try:
        data = DjangoJSONEncoder(ensure_ascii=False, allow_nan=False).encode(data)
    except (TypeError, ValueError) as error:
        raise EventError(f"the data of {name!r} isn't JSON: {error}") from None
    audience = Audience(
        users=frozenset(_user_keys(users)),
        groups=frozenset(_group_keys(groups)),
        permissions=frozenset(_permissions(permissions)),
        content_types=frozenset(_content_types(models)),
        everyone=bool(everyone),
    )
    if not audience:
        raise EventError(
            f"{name!r} has no audience: give users, groups, permissions, models or everyone"
        )
    if audience.size > MAX_AUDIENCE:
        raise EventError(
            f"{name!r} names {audience.size} users, groups, permissions and models, more than"
            f" {MAX_AUDIENCE}: publish to a group or a permission instead"
        )
    event = AppEvent(
        event=name,
        data=json.loads(data),  # plain JSON values, as clients will read them
        timestamp=timezone.now().isoformat(),
        audience=audience,
    )
    size = len(event.message())
    if size > MAX_EVENT_BYTES:
        raise EventError(f"{name!r} takes {size} bytes, more than {MAX_EVENT_BYTES}")
    publishing.publish(event)


def _user_keys(users: Iterable[Any]) -> Iterable[Any]:
    model = get_user_model()
    for user in _many(users, "users"):
        if isinstance(user, Model):
            if not isinstance(user, model):
                raise EventError(f"not a {model._meta.label}: {user!r}")
            user = user.pk
        if user is None:
            raise EventError("a user without a primary key (not saved yet)")
        try:
            key = model._meta.pk.to_python(user)
        except ValidationError:
            key = None
        # int() takes a UUID, a float or a bool: not an integer key.
        if (
            key is None
            or isinstance(user, bool)
            or (isinstance(key, int) and not isinstance(user, int | str))
        ):
            raise EventError(f"not a primary key of {model._meta.label}: {user!r}")
        yield key


def _group_keys(groups: Iterable[Group | int]) -> Iterable[int]:
    for group in _many(groups, "groups"):
        key = group.pk if isinstance(group, Group) else group
        if not isinstance(key, int) or isinstance(key, bool):
            raise EventError(f"not a group or a group's primary key: {group!r}")
        yield key


def _permissions(permissions: Iterable[str]) -> list[str]:
    names = list(_many(permissions, "permissions"))
    wanted = Q()
    for name in names:
        app_label, _, codename = name.partition(".") if isinstance(name, str) else ("", "", "")
        if not app_label or not codename:
            raise EventError(f'a permission is "app_label.codename": {name!r}')
        wanted |= Q(content_type__app_label=app_label, codename=codename)
    if names:
        found = {
            f"{app_label}.{codename}"
            for app_label, codename in Permission.objects.filter(wanted).values_list(
                "content_type__app_label", "codename"
            )
        }
        if missing := sorted(set(names) - found):
            raise EventError(f"no such permission: {', '.join(missing)}")
    return names


def _content_types(models: Iterable[type[Model] | Model]) -> Iterable[int]:
    for model in _many(models, "models"):
        if not (isinstance(model, Model) or (isinstance(model, type) and issubclass(model, Model))):
            raise EventError(f"not a model or an object of one: {model!r}")
        yield ContentType.objects.get_for_model(model).pk


def _many(values: Iterable[Any], what: str) -> list[Any]:
    if isinstance(values, str | bytes | Model) or not isinstance(values, Iterable):
        raise EventError(f"{what} is a list: {values!r}")
    return list(values)
