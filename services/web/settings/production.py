"""Settings for the containers: a real secret key is required."""

from __future__ import annotations

from live_notifications.shared import environment

from .base import *  # noqa: F403

SECRET_KEY = environment.string("DJANGO_SECRET_KEY")

# Behind the edge proxy, which sets X-Forwarded-Proto.
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SESSION_COOKIE_SECURE = environment.boolean("DJANGO_SECURE_COOKIES", False)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
SECURE_CONTENT_TYPE_NOSNIFF = True
