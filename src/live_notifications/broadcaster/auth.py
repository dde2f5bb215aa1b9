"""What users may see (and who they are: :class:`Identity`). Blocking: run in a thread."""

from __future__ import annotations

import collections
import dataclasses
import functools
from collections.abc import Collection, Hashable
from typing import Any, cast

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.contrib.contenttypes.models import ContentType
from django.core.exceptions import ValidationError
from django.db import close_old_connections, connection

from live_notifications import usermodel

#: What a user may see: IDs of content types, or ``None`` for everything.
ContentTypes = frozenset[int] | None


#: A user's primary key, as the user model's field reads it: an int, a UUID...
UserKey = Hashable


@dataclasses.dataclass(frozen=True, slots=True)
class Identity:
    user_id: UserKey
    #: What the log says of the user: ``get_username()``.
    username: str
    #: IDs of the content types whose events the user may receive; ``None``
    #: for a superuser, who receives every event.
    content_types: ContentTypes


def user_key(value: Any) -> UserKey:
    """A primary key from the event log (an int, or a UUID's text) as the user model reads it.

    Raises :exc:`ValueError` for a value that can't be one.
    """
    try:
        key: UserKey = get_user_model()._meta.pk.to_python(value)
    except ValidationError as error:
        raise ValueError(f"not a user's primary key: {value!r}") from error
    return key


def access_of(user_ids: Collection[UserKey]) -> dict[UserKey, ContentTypes]:
    """What each of these users may see now, as in the how-to.

    A content type is visible to a user who may view or change it, directly
    or through a group (Django's ``ModelBackend``); superusers see all.
    Users missing from the result are inactive or gone. Two queries,
    however many users: recomputing a group of thousands is as cheap as
    one user.
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


def access_of_users(superuser: dict[UserKey, bool]) -> dict[UserKey, ContentTypes]:
    """What these users, active and read already, may see: ``superuser`` maps their pk.

    One query, the caller's connection, whatever the number of users.
    """
    ordinary = [pk for pk, is_superuser in superuser.items() if not is_superuser]
    visible: dict[UserKey, set[int]] = collections.defaultdict(set)
    query = access_query()
    if ordinary and query is not None:
        with connection.cursor() as cursor:
            cursor.execute(query, [ordinary, ordinary])
            for user_id, content_type in cursor.fetchall():
                visible[user_id].add(content_type)
    return {
        pk: None if is_superuser else frozenset(visible[pk])
        for pk, is_superuser in superuser.items()
    }


@functools.cache
def access_query() -> str | None:
    """The content types each user may view or change, directly or through a group.

    As Django's ``ModelBackend`` reads permissions, from the user model's own
    relations (``PermissionsMixin``'s ``user_permissions`` and ``groups``):
    their tables and columns come from the model's metadata, whatever the
    project named them. ``None`` for a user model without permissions.
    Written by hand because the ORM compiled two queries for every batch and
    bound each user's pk as a parameter of its own (hundreds of them, a sixth
    of the CPU of a reconnect storm); this text is the same for every batch,
    with one array parameter (``= ANY``), twice.
    """
    model = get_user_model()
    if usermodel.fields(model, ("user_permissions", "groups")) != ("user_permissions", "groups"):
        return None
    own = usermodel.many_to_many(model, "user_permissions")
    groups = usermodel.many_to_many(model, "groups")
    granted = usermodel.many_to_many(groups.related_model, "permissions")
    q = connection.ops.quote_name
    # Names from the models' metadata, quoted: nothing of a client's.
    return f"""
SELECT DISTINCT grants.user_id, permission.content_type_id
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
WHERE permission.codename IN ('view_' || content_type.model, 'change_' || content_type.model)
"""  # noqa: S608
