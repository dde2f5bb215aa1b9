from __future__ import annotations

from django.apps import AppConfig


class LiveNotificationsConfig(AppConfig):
    name = "live_notifications"
    label = "live_notifications"
    verbose_name = "Real-time notifications"

    def ready(self) -> None:
        from . import access, checks, publishing  # noqa: F401 - checks registers itself

        publishing.connect()
        access.connect()
