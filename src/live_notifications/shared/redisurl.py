"""Check ``REDIS_URL`` at start-up, where redis-py would only fail at the first command.

The form is ``redis://[:PASSWORD@]HOST[:PORT][/DB]``, or ``rediss://`` for TLS,
with TLS options in the query::

    rediss://:s3cret@redis:6379/0?ssl_ca_certs=/etc/redis-ca/ca.crt

redis-py reads the URL leniently: it ignores keys it doesn't know, a path
that isn't a number, and empty values, and it takes the first of repeated
keys. Each of those is a typo that would silently connect somewhere else or
without TLS verification; :func:`validate` refuses them.
"""

from __future__ import annotations

from urllib.parse import parse_qsl, urlsplit

from live_notifications.shared.environment import ConfigurationError

SCHEMES = ("redis", "rediss")
#: Query keys with a fixed set of values.
CHOICES: dict[str, tuple[str, ...]] = {
    "ssl_cert_reqs": ("none", "optional", "required"),
    "ssl_check_hostname": ("true", "false"),
}
#: Query keys whose value is a file path.
PATHS = ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile")
#: Every query key accepted; all of them configure TLS, so they need rediss://.
ALLOWED = (*PATHS, *CHOICES)


def validate(url: str, *, name: str = "REDIS_URL") -> str:
    """Return ``url`` unchanged if redis-py will read it as written.

    Raises :exc:`~shared.environment.ConfigurationError`, naming the variable
    ``name``, for a scheme other than redis:// or rediss://, a missing host, a
    bad port, a path that isn't ``/N``, an unknown, repeated or empty query
    key, a value outside its choices, or TLS options on a redis:// URL.
    """
    parts = urlsplit(url)
    if parts.scheme not in SCHEMES:
        raise ConfigurationError(
            f"{name} must start with redis:// or rediss:// (TLS),"
            f" got {parts.scheme or 'nothing'}://"
        )
    if not parts.hostname:
        raise ConfigurationError(f"{name} must name a host: redis://HOST:PORT/DB")
    try:
        port = parts.port
    except ValueError:  # not a number, or beyond 65535
        port = 0
    if port == 0:  # redis-py would quietly use 6379 instead
        raise ConfigurationError(f"{name} has an invalid port")
    database = parts.path.removeprefix("/")
    if database and not (database.isascii() and database.isdigit()):
        raise ConfigurationError(
            f"{name}: the path must be a database number (/0), got {parts.path!r}"
        )
    _check_query(name, parts.scheme, parts.query)
    return url


def _check_query(name: str, scheme: str, query: str) -> None:
    seen: set[str] = set()
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key not in ALLOWED:
            hint = " (the database is the path: /N)" if key == "db" else ""
            raise ConfigurationError(
                f"{name}: unknown option {key!r}{hint}; allowed: {', '.join(ALLOWED)}"
            )
        if key in seen:
            raise ConfigurationError(f"{name}: option {key!r} is given twice")
        seen.add(key)
        if not value:
            raise ConfigurationError(f"{name}: option {key!r} has no value")
        if key in CHOICES and value not in CHOICES[key]:
            raise ConfigurationError(
                f"{name}: {key} must be one of {', '.join(CHOICES[key])}, got {value!r}"
            )
    if seen and scheme != "rediss":
        raise ConfigurationError(
            f"{name}: TLS options ({', '.join(sorted(seen))}) need rediss://, not redis://"
        )
