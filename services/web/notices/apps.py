from __future__ import annotations

from django.apps import AppConfig


class NoticesConfig(AppConfig):
    name = "web.notices"
    label = "notices"
    verbose_name = "notices"

    def ready(self) -> None:
        from . import receivers

        receivers.connect()
