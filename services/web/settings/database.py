"""``DATABASE_URL`` -> Django's ``DATABASES`` entry, with libpq's options from the query.

``postgres://user:password@host:port/name?sslmode=verify-full&sslrootcert=/ca.crt``:
the query's keys go to libpq as they are (``OPTIONS``), so that TLS, timeouts
and keepalives are set where the address is. Only the keys in :data:`ALLOWED`
are accepted, each at most once, and values libpq would only reject at the
first connection are checked at start-up instead.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from live_notifications.shared.environment import ConfigurationError

#: Options with a fixed set of values (libpq's documentation lists them).
CHOICES: dict[str, frozenset[str]] = {
    "sslmode": frozenset({"disable", "allow", "prefer", "require", "verify-ca", "verify-full"}),
    "sslnegotiation": frozenset({"postgres", "direct"}),
    "channel_binding": frozenset({"disable", "prefer", "require"}),
    "target_session_attrs": frozenset(
        {"any", "read-write", "read-only", "primary", "standby", "prefer-standby"}
    ),
}
#: Options that are counts of seconds (``tcp_user_timeout``: milliseconds), or 0/1.
INTEGERS = frozenset(
    {
        "connect_timeout",
        "keepalives",
        "keepalives_idle",
        "keepalives_interval",
        "keepalives_count",
        "tcp_user_timeout",
    }
)
#: Options passed on as written: file paths and a name.
STRINGS = frozenset({"sslrootcert", "sslcert", "sslkey", "sslcrl", "application_name"})
#: Every query key DATABASE_URL accepts.
ALLOWED = frozenset(CHOICES) | INTEGERS | STRINGS


def database_from_url(url: str) -> dict[str, Any]:
    """Translate ``postgres://user:password@host:port/name?key=value`` into Django's form.

    Raises :exc:`~shared.environment.ConfigurationError` naming what is wrong:
    the scheme, a missing database name, an unknown or repeated query key, or
    a value libpq would refuse.
    """
    parts = urlsplit(url)
    if parts.scheme not in {"postgres", "postgresql"}:
        raise ConfigurationError(
            f"DATABASE_URL must start with postgres://, got {parts.scheme or 'nothing'}://"
        )
    name = unquote(parts.path.lstrip("/"))
    if not name:
        raise ConfigurationError("DATABASE_URL must name a database")
    try:
        port = parts.port
    except ValueError:
        raise ConfigurationError("DATABASE_URL has an invalid port") from None
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": name,
        "USER": unquote(parts.username or ""),
        "PASSWORD": unquote(parts.password or ""),
        "HOST": parts.hostname or "",
        "PORT": str(port or ""),
        # Long-running processes (the broadcaster, gunicorn workers) keep their
        # connection and check it before use, so that a restarted PostgreSQL
        # costs one reconnection instead of an error.
        "CONN_MAX_AGE": 60,
        "CONN_HEALTH_CHECKS": True,
        "OPTIONS": libpq_options(parts.query),
    }


def libpq_options(query: str) -> dict[str, str | int]:
    """Check DATABASE_URL's query string; return its options for libpq."""
    options: dict[str, str | int] = {}
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key not in ALLOWED:
            raise ConfigurationError(
                f"DATABASE_URL: unknown option {key!r}; allowed: {', '.join(sorted(ALLOWED))}"
            )
        if key in options:
            raise ConfigurationError(f"DATABASE_URL: option {key!r} is given twice")
        options[key] = _checked(key, value)
    return options


def _checked(key: str, value: str) -> str | int:
    if key in CHOICES:
        if value not in CHOICES[key]:
            raise ConfigurationError(
                f"DATABASE_URL: {key} must be one of {', '.join(sorted(CHOICES[key]))},"
                f" got {value!r}"
            )
        return value
    if key in INTEGERS:
        # isdigit() rather than int(): no sign, no spaces, no underscores.
        if not (value.isascii() and value.isdigit()):
            raise ConfigurationError(f"DATABASE_URL: {key} must be an integer >= 0, got {value!r}")
        return int(value)
    if not value:
        raise ConfigurationError(f"DATABASE_URL: option {key!r} has no value")
    return value
