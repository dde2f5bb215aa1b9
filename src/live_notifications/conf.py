"""The settings the package reads: one prefix, one table of defaults.

Each is read from the host project's settings as ``LIVE_NOTIFICATIONS_<NAME>``
and falls back to :data:`DEFAULTS`. They are read at each use, so that
``override_settings`` works in tests; :mod:`.checks` says what is wrong with
them. Django's own settings the package follows (``LOGIN_URL``,
``CSRF_TRUSTED_ORIGINS``) and django-sesame's are read under their own names.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings as django_settings

PREFIX = "LIVE_NOTIFICATIONS_"

#: Name (without the prefix), default. docs/reference/settings.md lists them
#: with their meaning; a test keeps the two equal.
DEFAULTS: dict[str, Any] = {
    # The django-sesame scope of WebSocket tokens: they are not login links,
    # and login links don't open WebSockets.
    "TOKEN_SCOPE": "websocket",
    # Seconds a WebSocket token stays valid: long enough to load a page and
    # connect, short enough that a token seen by someone else is soon worthless.
    "TOKEN_MAX_AGE": 30,
    # Origins (scheme://host[:port]) whose pages may open a WebSocket. None:
    # the site's CSRF_TRUSTED_ORIGINS.
    "ALLOWED_ORIGINS": None,
    # Where pages connect; "": ws(s)://<the page's host>/ws/.
    "WEBSOCKET_URL": "",
}


class Settings:
    """``settings.TOKEN_MAX_AGE`` and so on: the host's value or the default."""

    def __getattr__(self, name: str) -> Any:
        if name not in DEFAULTS:
            raise AttributeError(f"no setting {PREFIX}{name}")
        return getattr(django_settings, PREFIX + name, DEFAULTS[name])

    @property
    def allowed_origins(self) -> list[str]:
        """``ALLOWED_ORIGINS``, or the site's ``CSRF_TRUSTED_ORIGINS`` when it is unset."""
        origins = self.ALLOWED_ORIGINS
        if origins is None:
            origins = getattr(django_settings, "CSRF_TRUSTED_ORIGINS", [])
        return list(origins)


settings = Settings()
