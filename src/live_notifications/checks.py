"""What ``manage.py check`` says of the settings the app reads.

The relay and the broadcaster run the same checks when they start, the
database's included, and refuse to start on an error
(:mod:`live_notifications.shared.program`), with the same message.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

from django.apps import AppConfig
from django.conf import settings as django_settings
from django.contrib.auth import get_user_model
from django.core.checks import CheckMessage, Error, Tags, register
from django.core.checks import Warning as CheckWarning
from django.db import DEFAULT_DB_ALIAS, DatabaseError, ProgrammingError, connections

from .conf import PREFIX
from .conf import settings as live_settings

#: PostgreSQL's SQLSTATE for "permission denied".
INSUFFICIENT_PRIVILEGE = "42501"

#: Token lifetimes accepted, in seconds: long enough to load a page and
#: connect, short enough that a token seen by someone else is soon worthless.
MAX_AGE = (5, 3600)


@register()
def check_settings(app_configs: Sequence[AppConfig] | None, **kwargs: Any) -> list[CheckMessage]:
    messages: list[CheckMessage] = []
    scope = live_settings.TOKEN_SCOPE
    if not isinstance(scope, str) or not scope:
        messages.append(
            Error(
                f"{PREFIX}TOKEN_SCOPE is {scope!r}: it must name the scope of WebSocket tokens.",
                hint=f'Remove {PREFIX}TOKEN_SCOPE (default "websocket"): tokens of that scope'
                " open WebSockets and are not login links.",
                id="live_notifications.E001",
            )
        )
    max_age = live_settings.TOKEN_MAX_AGE
    if not isinstance(max_age, int | float) or not MAX_AGE[0] <= max_age <= MAX_AGE[1]:
        messages.append(
            Error(
                f"{PREFIX}TOKEN_MAX_AGE is {max_age!r}: WebSocket tokens must expire, within"
                f" {MAX_AGE[0]} to {MAX_AGE[1]} seconds.",
                hint=f"Remove {PREFIX}TOKEN_MAX_AGE (default 30 seconds): long enough to load"
                " a page and connect.",
                id="live_notifications.E002",
            )
        )
    origins = live_settings.allowed_origins
    if not origins:
        messages.append(
            CheckWarning(
                f"No browser may open a WebSocket: {PREFIX}ALLOWED_ORIGINS is unset and"
                " CSRF_TRUSTED_ORIGINS, which stands for it, is empty.",
                hint=f'Set {PREFIX}ALLOWED_ORIGINS = ["https://www.example.com"], the'
                " origins of the site's pages. Clients that send no Origin (scripts) are"
                " accepted.",
                id="live_notifications.W003",
            )
        )
    field = getattr(django_settings, "SESAME_PRIMARY_KEY_FIELD", "pk")
    if field not in ("pk", get_user_model()._meta.pk.name):
        messages.append(
            Error(
                f"SESAME_PRIMARY_KEY_FIELD is {field!r}: the broadcasters know users by"
                " their primary key.",
                hint="Remove SESAME_PRIMARY_KEY_FIELD, or set it to 'pk'.",
                id="live_notifications.E004",
            )
        )
    if getattr(django_settings, "SESAME_MAX_AGE", None) is None:
        messages.append(
            Error(
                "SESAME_MAX_AGE is unset: django-sesame's tokens then carry no date,"
                " and WebSocket tokens would never expire.",
                hint="Set SESAME_MAX_AGE, to the lifetime of the site's own login links if"
                f" it has some (WebSocket tokens live {PREFIX}TOKEN_MAX_AGE seconds"
                " whatever it says), else to 300.",
                id="live_notifications.E005",
            )
        )
    wildcards = [origin for origin in origins if isinstance(origin, str) and "*" in origin]
    if wildcards:
        messages.append(
            CheckWarning(
                f"Browsers from {', '.join(map(repr, wildcards))} can't open a WebSocket:"
                " the broadcasters compare origins exactly, and Django's wildcards"
                " (allowed in CSRF_TRUSTED_ORIGINS) match nothing there.",
                hint=f"Set {PREFIX}ALLOWED_ORIGINS to the list of the site's origins.",
                id="live_notifications.W009",
            )
        )
    bad = [origin for origin in origins if not _is_origin(origin) and origin not in wildcards]
    if bad:
        messages.append(
            Error(
                f"Not origins: {', '.join(map(repr, bad))}. An origin is a scheme, a host"
                " and maybe a port, as browsers send it.",
                hint='Write them as "https://www.example.com" or "http://localhost:8000",'
                " without a path or a trailing slash.",
                id="live_notifications.E006",
            )
        )
    engine = connections["default"].vendor
    if engine != "postgresql":
        messages.append(
            Error(
                f"The default database is {engine}: the outbox needs PostgreSQL (the relay"
                " listens for its notifications, with psycopg 3).",
                hint="Use django.db.backends.postgresql with psycopg 3.2 or later.",
                id="live_notifications.E007",
            )
        )
    return messages


@register(Tags.database)
def check_tables(
    app_configs: Sequence[AppConfig] | None,
    databases: Sequence[str] | None = None,
    **kwargs: Any,
) -> list[CheckMessage]:
    """Can the database user read what the broadcasters and the relay read?

    Run by ``manage.py check --database default`` and by the programs at start.
    A missing privilege is an error. A missing table means migrations to
    run, and a database that doesn't answer an outage: neither is a setting,
    and the broadcasters' readiness reports both.
    """
    if not databases or DEFAULT_DB_ALIAS not in databases:
        return []
    from .broadcaster.database import read_user_tables
    from .models import OutboxEvent

    def read_outbox() -> None:
        list(OutboxEvent.objects.values_list("pk")[:1])

    messages: list[CheckMessage] = []
    user = connections[DEFAULT_DB_ALIAS].settings_dict.get("USER")
    for what, read in (("the user tables", read_user_tables), ("the outbox", read_outbox)):
        try:
            read()
        except ProgrammingError as exc:
            if getattr(exc.__cause__, "sqlstate", None) != INSUFFICIENT_PRIVILEGE:
                # A missing table: migrations to run, which this check must
                # not stand in the way of (migrate runs database checks).
                continue
            messages.append(
                Error(
                    f"The database user {user!r} can't read {what}:"
                    f" {str(exc).strip().splitlines()[0]}",
                    hint="Grant that user SELECT on the user model's table, its groups'"
                    " and permissions' tables, and the outbox's.",
                    id="live_notifications.E008",
                )
            )
        except DatabaseError:
            return []
    return messages


def _is_origin(value: object) -> bool:
    if not isinstance(value, str):
        return False
    parts = urlsplit(value)
    return (
        parts.scheme in ("http", "https")
        and bool(parts.netloc)
        and not parts.path
        and not parts.query
        and not parts.fragment
        and value == f"{parts.scheme}://{parts.netloc}"
    )
