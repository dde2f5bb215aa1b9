"""What ``manage.py check`` says of the settings the app reads.

The relay and the broadcaster run the same checks when they start, and
refuse to start on an error (:mod:`shared.program`), with the same message.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from typing import Any

from django.apps import AppConfig
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.checks import CheckMessage, Error, register
from django.core.checks import Warning as CheckWarning

#: Token lifetimes accepted, in seconds: long enough to load a page and
#: connect, short enough that a token seen by someone else is soon worthless.
MAX_AGE = (5, 3600)


@register()
def check_settings(app_configs: Sequence[AppConfig] | None, **kwargs: Any) -> list[CheckMessage]:
    messages: list[CheckMessage] = []
    scope = getattr(settings, "WEBSOCKET_TOKEN_SCOPE", None)
    if not isinstance(scope, str) or not scope:
        messages.append(
            Error(
                "WEBSOCKET_TOKEN_SCOPE must name the scope of WebSocket tokens.",
                hint='Set WEBSOCKET_TOKEN_SCOPE = "websocket": tokens of that scope open'
                " WebSockets and are not login links.",
                id="notifications.E001",
            )
        )
    max_age = getattr(settings, "SESAME_MAX_AGE", None)
    if isinstance(max_age, datetime.timedelta):
        max_age = max_age.total_seconds()
    if not isinstance(max_age, int | float) or not MAX_AGE[0] <= max_age <= MAX_AGE[1]:
        messages.append(
            Error(
                f"SESAME_MAX_AGE is {max_age!r}: WebSocket tokens must expire, within"
                f" {MAX_AGE[0]} to {MAX_AGE[1]} seconds.",
                hint="Set SESAME_MAX_AGE = 30 (seconds): long enough to load a page and"
                " connect. Without it, tokens never expire.",
                id="notifications.E002",
            )
        )
    if not getattr(settings, "CSRF_TRUSTED_ORIGINS", None):
        messages.append(
            CheckWarning(
                "No browser may open a WebSocket: the broadcasters accept the origins in"
                " CSRF_TRUSTED_ORIGINS, and it is empty.",
                hint='Set CSRF_TRUSTED_ORIGINS = ["https://www.example.com"], the site\'s'
                " origins. Clients that send no Origin (scripts) are accepted.",
                id="notifications.W003",
            )
        )
    field = getattr(settings, "SESAME_PRIMARY_KEY_FIELD", "pk")
    if field not in ("pk", get_user_model()._meta.pk.name):
        messages.append(
            Error(
                f"SESAME_PRIMARY_KEY_FIELD is {field!r}: the broadcasters know users by"
                " their primary key.",
                hint="Remove SESAME_PRIMARY_KEY_FIELD, or set it to 'pk'.",
                id="notifications.E004",
            )
        )
    return messages
