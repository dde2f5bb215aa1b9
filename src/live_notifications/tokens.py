"""WebSocket tokens: django-sesame tokens scoped to the WebSocket purpose."""

from __future__ import annotations

from django.contrib.auth.base_user import AbstractBaseUser
from sesame.utils import get_token, get_user

from .conf import settings


def token_for(user: AbstractBaseUser) -> str:
    """Return a token that authenticates ``user`` to the broadcasters.

    It expires after ``LIVE_NOTIFICATIONS_TOKEN_MAX_AGE`` seconds and isn't valid
    as a login link.
    """
    return str(get_token(user, scope=settings.TOKEN_SCOPE))


def user_for(token: str) -> AbstractBaseUser | None:
    """Return the active user ``token`` was issued for, or ``None``.

    Makes database queries: call it in a thread from async code. It doesn't
    update the last login date (one connection is not a login).
    """
    user: AbstractBaseUser | None = get_user(
        token,
        scope=settings.TOKEN_SCOPE,
        max_age=settings.TOKEN_MAX_AGE,
        update_last_login=False,
    )
    return user
