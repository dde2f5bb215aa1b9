from __future__ import annotations

from django.apps import AppConfig


class NotificationsConfig(AppConfig):
    name = "web.notifications"
    label = "notifications"
    verbose_name = "Real-time notifications"

    def ready(self) -> None:
        from . import access, publishing

        publishing.connect()
        access.connect()
