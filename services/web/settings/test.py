"""Settings for the test suite. The tests point DATABASES and CACHES at the
PostgreSQL and Redis servers they start themselves."""

from __future__ import annotations

import os

# Placeholders; the test fixtures replace host and port with their own servers.
os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/notifications")

from .base import *  # noqa: F403

# Not a secret: a fixed key for tests only.
SECRET_KEY = "test-only-insecure-key-not-for-production"  # noqa: S105

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
# Static files come from the apps' folders; nothing is collected in tests.
STATIC_ROOT = None  # type: ignore[assignment]
WHITENOISE_USE_FINDERS = True
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}

# The demo's own events would reach the package's tests' clients, which count
# what they receive: services/web/tests/test_notices.py connects them itself.
INSTALLED_APPS = [app for app in INSTALLED_APPS if app != "web.notices"]  # noqa: F405
