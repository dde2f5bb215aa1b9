"""The test settings, with a custom user model (``accounts.Person``) and the app relabelled."""

from __future__ import annotations

from web.settings.test import *  # noqa: F403
from web.settings.test import INSTALLED_APPS

INSTALLED_APPS = [
    *(app for app in INSTALLED_APPS if app != "live_notifications"),
    # Another app of the project may be labelled notifications already.
    "live_notifications.tests.project.relabelled.RelabelledConfig",
    "live_notifications.tests.project.accounts",
]
AUTH_USER_MODEL = "accounts.Person"
