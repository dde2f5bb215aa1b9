from __future__ import annotations

from django.apps import AppConfig


class AccountsConfig(AppConfig):
    name = "live_notifications.tests.project.accounts"
    label = "accounts"
    default_auto_field = "django.db.models.BigAutoField"
