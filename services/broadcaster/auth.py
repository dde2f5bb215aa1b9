"""Who a token belongs to and what they may see. Blocking: run in a thread."""

from __future__ import annotations

import dataclasses

from django.contrib.auth.base_user import AbstractBaseUser
from django.contrib.contenttypes.models import ContentType
from django.db import close_old_connections

from web.notifications.tokens import user_for


@dataclasses.dataclass(frozen=True, slots=True)
class Identity:
    username: str
    #: IDs of the content types whose events the user may receive; ``None``
    #: for a superuser, who receives every event.
    content_types: frozenset[int] | None


def visible_content_types(user: AbstractBaseUser) -> frozenset[int] | None:
    """The content types ``user`` may view or change, as in the how-to.

    Three queries: content types, then user and group permissions, which
    Django caches on the user at the first ``has_perm()``.
    """
    if getattr(user, "is_superuser", False):
        return None
    return frozenset(
        content_type.id
        for content_type in ContentType.objects.all()
        if user.has_perm(f"{content_type.app_label}.view_{content_type.model}")  # type: ignore[attr-defined]
        or user.has_perm(f"{content_type.app_label}.change_{content_type.model}")  # type: ignore[attr-defined]
    )


def identify(token: str) -> Identity | None:
    """Return who ``token`` authenticates, or ``None`` if it's not valid.

    Invalid means malformed, expired, issued for another purpose than the
    WebSocket, or for a user who doesn't exist or is inactive.

    Raises:
        django.db.DatabaseError: the database can't be reached.
    """
    # As Django does around each request: drop connections that went stale
    # (PostgreSQL restarted, CONN_MAX_AGE passed) so the next query reconnects.
    close_old_connections()
    try:
        user = user_for(token)
        if user is None:
            return None
        return Identity(user.get_username(), visible_content_types(user))
    finally:
        close_old_connections()
