"""What users may see (and who they are: :class:`Identity`). Blocking: run in a thread."""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Collection

from django.contrib.auth.models import User
from django.db import close_old_connections, connection

#: What a user may see: IDs of content types, or ``None`` for everything.
ContentTypes = frozenset[int] | None


@dataclasses.dataclass(frozen=True, slots=True)
class Identity:
    user_id: int
    username: str
    #: IDs of the content types whose events the user may receive; ``None``
    #: for a superuser, who receives every event.
    content_types: ContentTypes


def access_of(user_ids: Collection[int]) -> dict[int, ContentTypes]:
    """What each of these users may see now, as in the how-to.

    A content type is visible to a user who may view or change it, directly
    or through a group (Django's ``ModelBackend``); superusers see all.
    Users missing from the result are inactive or gone. Two queries,
    however many users: recomputing a group of thousands is as cheap as
    one user.
    """
    close_old_connections()  # as Django does around a request: a stale one reconnects
    try:
        users = User.objects.filter(pk__in=user_ids, is_active=True)
        return access_of_users(dict(users.values_list("pk", "is_superuser")))
    finally:
        close_old_connections()


def access_of_users(superuser: dict[int, bool]) -> dict[int, ContentTypes]:
    """What these users, active and read already, may see: ``superuser`` maps their pk.

    One query, the caller's connection, whatever the number of users.
    """
    ordinary = [pk for pk, is_superuser in superuser.items() if not is_superuser]
    visible: dict[int, set[int]] = collections.defaultdict(set)
    if ordinary:
        with connection.cursor() as cursor:
            cursor.execute(ACCESS_QUERY, [ordinary, ordinary])
            for user_id, content_type in cursor.fetchall():
                visible[user_id].add(content_type)
    return {
        pk: None if is_superuser else frozenset(visible[pk])
        for pk, is_superuser in superuser.items()
    }


#: The content types each user may view or change, directly or through a
#: group, as Django's ``ModelBackend`` reads permissions: its own tables for
#: ``django.contrib.auth``. Written by hand because the ORM compiled two
#: queries for every batch and bound each user's pk as a parameter of its
#: own (hundreds of them, a sixth of the CPU of a reconnect storm); this text
#: is the same for every batch, with one array parameter (``= ANY``), twice.
ACCESS_QUERY = """
SELECT DISTINCT grants.user_id, permission.content_type_id
FROM (
    SELECT user_id, permission_id
    FROM auth_user_user_permissions
    WHERE user_id = ANY(%s)
  UNION ALL
    SELECT member.user_id, granted.permission_id
    FROM auth_user_groups member
    JOIN auth_group_permissions granted ON granted.group_id = member.group_id
    WHERE member.user_id = ANY(%s)
) grants
JOIN auth_permission permission ON permission.id = grants.permission_id
JOIN django_content_type content_type ON content_type.id = permission.content_type_id
WHERE permission.codename IN ('view_' || content_type.model, 'change_' || content_type.model)
"""
