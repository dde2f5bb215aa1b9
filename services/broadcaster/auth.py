"""What users may see (and who they are: :class:`Identity`). Blocking: run in a thread."""

from __future__ import annotations

import collections
import dataclasses
import itertools
from collections.abc import Collection

from django.contrib.auth.models import User
from django.db import close_old_connections

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
    Users missing from the result are inactive or gone. Three queries,
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

    Two queries, the caller's connection.
    """
    ordinary = [pk for pk, is_superuser in superuser.items() if not is_superuser]
    direct = User.user_permissions.through.objects.filter(user_id__in=ordinary).values_list(
        "user_id",
        "permission__content_type_id",
        "permission__content_type__model",
        "permission__codename",
    )
    through_groups = User.groups.through.objects.filter(
        user_id__in=ordinary, group__permissions__isnull=False
    ).values_list(
        "user_id",
        "group__permissions__content_type_id",
        "group__permissions__content_type__model",
        "group__permissions__codename",
    )
    visible: dict[int, set[int]] = collections.defaultdict(set)
    if ordinary:
        for user_id, content_type, model, codename in itertools.chain(direct, through_groups):
            if codename in (f"view_{model}", f"change_{model}"):
                visible[user_id].add(content_type)
    return {
        pk: None if is_superuser else frozenset(visible[pk])
        for pk, is_superuser in superuser.items()
    }
