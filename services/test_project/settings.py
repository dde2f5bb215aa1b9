"""The test settings, with a custom user model (``accounts.Person``)."""

from __future__ import annotations

from web.settings.test import *  # noqa: F403
from web.settings.test import INSTALLED_APPS

INSTALLED_APPS = [*INSTALLED_APPS, "test_project.accounts"]
AUTH_USER_MODEL = "accounts.Person"
