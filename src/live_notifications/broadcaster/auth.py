"""What users may see (and who they are: :class:`Identity`). Blocking: run in a thread."""

from __future__ import annotations

import collections
import dataclasses
import functools
import sys
from collections.abc import Collection, Hashable
from typing import Any, cast

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.contrib.contenttypes.models import ContentType
from django.core.exceptions import ValidationError
from django.db import close_old_connections, connection

from live_notifications import usermodel
from live_notifications.shared.events import Audience

#: A user's primary key, as the user model's field reads it: an int, a UUID...
UserKey = Hashable


@dataclasses.dataclass(frozen=True, slots=True)
class Access:
    """What a user may see: what the audiences of events are matched against.

    Made by :func:`access`, which gives users with the same access the same
    object: most users share one, and the broadcaster indexes its
    connections by it.
    """

    #: A superuser receives every admin change and every event for a
    #: permission or a model, not those for other users or groups.
    superuser: bool
    #: Content types the user may view or change (the how-to's rule).
    content_types: frozenset[int]
    #: Every permission the user holds, directly or through a group, as
    #: ``"app_label.codename"``; a superuser's are not listed.
    permissions: frozenset[str]
    #: Primary keys of the user's groups.
    groups: frozenset[int]

    def receives(self, user_id: UserKey, audience: Audience) -> bool:
        """Whether user ``user_id``, with this access, is in ``audience``."""
        return (
            audience.everyone
            or user_id in audience.users
            or not self.groups.isdisjoint(audience.groups)
            or (self.superuser and bool(audience.permissions or audience.content_types))
            or not self.content_types.isdisjoint(audience.content_types)
            or not self.permissions.isdisjoint(audience.permissions)
        )


#: Accesses and their sets, each kept once. Cleared when this many are
#: kept: sharing is only a saving, and access changes keep making new ones.
SHARED_MAX = 10_000
_shared: dict[Any, Any] = {}


def access(
    *,
    superuser: bool = False,
    content_types: Collection[int] = (),
    permissions: Collection[str] = (),
    groups: Collection[int] = (),
) -> Access:
    """The :class:`Access` of these, the same object for the same access.

    Their sets too are shared: a small frozenset is 216 bytes.
    """
    made = Access(
        superuser,
        _share(frozenset(content_types)),
        _share(frozenset(permissions)),
        _share(frozenset(groups)),
    )
    shared: Access = _share(made)
    return shared


def _share(value: Any) -> Any:
    if len(_shared) >= SHARED_MAX:
        _shared.clear()
    return _shared.setdefault(value, value)


@dataclasses.dataclass(frozen=True, slots=True)
class Identity:
    user_id: UserKey
    #: What the log says of the user: ``get_username()``.
    username: str
    #: What the user receives.
    access: Access


def user_key(value: Any) -> UserKey:
    """A primary key from the event log (an int, or a UUID's text) as the user model reads it.

    Raises :exc:`ValueError` for a value that can't be one.
    """
    try:
        key: UserKey = get_user_model()._meta.pk.to_python(value)
    except ValidationError as error:
        raise ValueError(f"not a user's primary key: {value!r}") from error
    return key


def access_of(user_ids: Collection[UserKey]) -> dict[UserKey, Access]:
    """What each of these users may see now.

    Content types as in the how-to: a user who may view or change a model,
    directly or through a group (Django's ``ModelBackend``), sees its admin
    changes; superusers see all. Permissions and groups, for the audiences
    of app events. Users missing from the result are inactive or gone.
    Three queries, however many users: recomputing a group of thousands is
    as cheap as one user.
    """
    close_old_connections()  # as Django does around a request: a stale one reconnects
    try:
        model = get_user_model()
        users = model._default_manager.filter(pk__in=cast(Any, user_ids))
        if usermodel.fields(model, ["is_active"]):
            users = users.filter(is_active=True)
        if usermodel.fields(model, ["is_superuser"]):
            return access_of_users(dict(users.values_list("pk", "is_superuser")))
        return access_of_users(dict.fromkeys(users.values_list("pk", flat=True), False))
    finally:
        close_old_connections()


def access_of_users(superuser: dict[UserKey, bool]) -> dict[UserKey, Access]:
    """What these users, active and read already, may see: ``superuser`` maps their pk.

    Two queries, the caller's connection, whatever the number of users.
    """
    pks = list(superuser)
    content_types: dict[UserKey, set[int]] = collections.defaultdict(set)
    permissions: dict[UserKey, set[str]] = collections.defaultdict(set)
    groups: dict[UserKey, set[int]] = collections.defaultdict(set)
    queries = access_queries()
    if pks and queries is not None:
        grants, memberships = queries
        with connection.cursor() as cursor:
            cursor.execute(grants, [pks, pks])
            for user_id, content_type, permission, sees in cursor.fetchall():
                permissions[user_id].add(sys.intern(permission))
                if sees:
                    content_types[user_id].add(content_type)
            cursor.execute(memberships, [pks])
            for user_id, group in cursor.fetchall():
                groups[user_id].add(group)
    return {
        pk: access(
            superuser=is_superuser,
            content_types=() if is_superuser else content_types[pk],
            permissions=() if is_superuser else permissions[pk],
            groups=groups[pk],
        )
        for pk, is_superuser in superuser.items()
    }


@functools.cache
def access_queries() -> tuple[str, str] | None:
    """Every permission each user holds, directly or through a group, with
    its content type and whether it shows that model (view or change); and
    each user's groups.

    As Django's ``ModelBackend`` reads permissions, from the user model's own
    relations (``PermissionsMixin``'s ``user_permissions`` and ``groups``):
    their tables and columns come from the model's metadata, whatever the
    project named them. ``None`` for a user model without permissions.
    Written by hand because the ORM compiled two queries for every batch and
    bound each user's pk as a parameter of its own (hundreds of them, a sixth
    of the CPU of a reconnect storm); these texts are the same for every
    batch, with one array parameter (``= ANY``) each time.
    """
    model = get_user_model()
    if usermodel.fields(model, ("user_permissions", "groups")) != ("user_permissions", "groups"):
        return None
    own = usermodel.many_to_many(model, "user_permissions")
    groups = usermodel.many_to_many(model, "groups")
    granted = usermodel.many_to_many(groups.related_model, "permissions")
    q = connection.ops.quote_name
    # Names from the models' metadata, quoted: nothing of a client's.
    grants = f"""
SELECT DISTINCT grants.user_id, permission.content_type_id,
    content_type.app_label || '.' || permission.codename,
    permission.codename IN ('view_' || content_type.model, 'change_' || content_type.model)
FROM (
    SELECT {q(own.m2m_column_name())} AS user_id, {q(own.m2m_reverse_name())} AS permission_id
    FROM {q(own.m2m_db_table())}
    WHERE {q(own.m2m_column_name())} = ANY(%s)
  UNION ALL
    SELECT member.{q(groups.m2m_column_name())}, granted.{q(granted.m2m_reverse_name())}
    FROM {q(groups.m2m_db_table())} member
    JOIN {q(granted.m2m_db_table())} granted
      ON granted.{q(granted.m2m_column_name())} = member.{q(groups.m2m_reverse_name())}
    WHERE member.{q(groups.m2m_column_name())} = ANY(%s)
) grants
JOIN {q(Permission._meta.db_table)} permission ON permission.id = grants.permission_id
JOIN {q(ContentType._meta.db_table)} content_type
  ON content_type.id = permission.content_type_id
"""  # noqa: S608
    memberships = f"""
SELECT {q(groups.m2m_column_name())}, {q(groups.m2m_reverse_name())}
FROM {q(groups.m2m_db_table())}
WHERE {q(groups.m2m_column_name())} = ANY(%s)
"""  # noqa: S608
    return grants, memberships
