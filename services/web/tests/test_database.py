"""DATABASE_URL: parsing, libpq's options from the query, and TLS to a real server."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.db import OperationalError
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.utils import ConnectionHandler
from pytest_django import DjangoDbBlocker

from live_notifications.shared.environment import ConfigurationError
from tests.servers import CertificateAuthority, PostgresServer
from web.settings.database import ALLOWED, database_from_url


def test_database_url() -> None:
    assert database_from_url("postgres://app:s%40cret@db:5433/notifications") == {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": "notifications",
        "USER": "app",
        "PASSWORD": "s@cret",
        "HOST": "db",
        "PORT": "5433",
        "CONN_MAX_AGE": 60,
        "CONN_HEALTH_CHECKS": True,
        "OPTIONS": {},
    }


def test_query_string_goes_to_libpq() -> None:
    url = (
        "postgresql://app@db/notifications?sslmode=verify-full&sslrootcert=%2Fetc%2Fca%20dir%2Fca.crt"
        "&connect_timeout=5&keepalives=1&keepalives_idle=30&keepalives_interval=10"
        "&keepalives_count=3&tcp_user_timeout=30000&application_name=web&channel_binding=require"
        "&target_session_attrs=read-write&sslnegotiation=direct&sslcert=/c.crt&sslkey=/c.key"
        "&sslcrl=/crl.pem"
    )
    assert database_from_url(url)["OPTIONS"] == {
        "sslmode": "verify-full",
        "sslrootcert": "/etc/ca dir/ca.crt",
        "connect_timeout": 5,
        "keepalives": 1,
        "keepalives_idle": 30,
        "keepalives_interval": 10,
        "keepalives_count": 3,
        "tcp_user_timeout": 30000,
        "application_name": "web",
        "channel_binding": "require",
        "target_session_attrs": "read-write",
        "sslnegotiation": "direct",
        "sslcert": "/c.crt",
        "sslkey": "/c.key",
        "sslcrl": "/crl.pem",
    }


@pytest.mark.parametrize(
    ("url", "error"),
    [
        ("mysql://db/app", "must start with postgres://"),
        ("postgres://db", "must name a database"),
        ("postgres://db:port/app", "invalid port"),
        ("postgres://db/app?sslmode=verify", "sslmode must be one of allow, disable, prefer, "),
        ("postgres://db/app?sslmode=", "sslmode must be one of"),
        ("postgres://db/app?connect_timeout=-1", "connect_timeout must be an integer >= 0"),
        ("postgres://db/app?connect_timeout=5s", "connect_timeout must be an integer >= 0"),
        ("postgres://db/app?keepalives_idle=", "keepalives_idle must be an integer >= 0"),
        ("postgres://db/app?keepalives_count=%C2%B3", "keepalives_count must be an integer"),
        ("postgres://db/app?channel_binding=yes", "channel_binding must be one of"),
        ("postgres://db/app?sslrootcert=", "'sslrootcert' has no value"),
        ("postgres://db/app?sslmode=require&sslmode=disable", "'sslmode' is given twice"),
    ],
)
def test_bad_database_url(url: str, error: str) -> None:
    with pytest.raises(ConfigurationError, match=error):
        database_from_url(url)


def test_unknown_option_names_it_and_the_allowed_ones() -> None:
    with pytest.raises(ConfigurationError) as caught:
        database_from_url("postgres://db/app?sslmode=require&ssl_mode=require")
    message = str(caught.value)
    assert "unknown option 'ssl_mode'" in message
    assert all(key in message for key in ALLOWED)
    # Not an option libpq has that the allowlist leaves out on purpose.
    with pytest.raises(ConfigurationError, match="unknown option 'options'"):
        database_from_url("postgres://db/app?options=-c%20search_path%3Dother")


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> CertificateAuthority:
    return CertificateAuthority(tmp_path_factory.mktemp("postgres-ca"))


@pytest.fixture(scope="module")
def tls_postgres(ca: CertificateAuthority) -> Iterator[PostgresServer]:
    """A PostgreSQL server with TLS on, its certificate signed by ``ca``."""
    server = PostgresServer()
    for issued in ca.issue("postgres"):
        # The server refuses a key that others can read; it runs as ``postgres`` under root.
        path = Path(shutil.copy(issued, server.directory))
        path.chmod(0o600)
        if server.user:
            shutil.chown(path, server.user)
    with (server.data / "postgresql.conf").open("a") as conf:
        conf.write(
            f"ssl = on\nssl_cert_file = '{server.directory / 'postgres.crt'}'\n"
            f"ssl_key_file = '{server.directory / 'postgres.key'}'\n"
        )
    server.start()
    yield server
    server.remove()


def connect(url: str) -> BaseDatabaseWrapper:
    """A Django connection configured by ``url``, as settings would make it."""
    return ConnectionHandler({"default": database_from_url(url)})["default"]


def uses_tls(url: str) -> bool:
    database = connect(url)
    try:
        with database.cursor() as cursor:
            cursor.execute("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            (ssl,) = cursor.fetchone()
            return bool(ssl)
    finally:
        database.close()


def test_verify_full_with_the_servers_ca(
    tls_postgres: PostgresServer, ca: CertificateAuthority, django_db_blocker: DjangoDbBlocker
) -> None:
    url = tls_postgres.url("postgres") + f"?sslmode=verify-full&sslrootcert={ca.certificate}"
    with django_db_blocker.unblock():
        assert uses_tls(url)
        # The query reaches libpq: the same server, asked not to use TLS.
        assert not uses_tls(tls_postgres.url("postgres") + "?sslmode=disable")


def test_verify_full_refuses_another_ca(
    tls_postgres: PostgresServer, tmp_path: Path, django_db_blocker: DjangoDbBlocker
) -> None:
    other = CertificateAuthority(tmp_path, "other")
    url = tls_postgres.url("postgres") + f"?sslmode=verify-full&sslrootcert={other.certificate}"
    with django_db_blocker.unblock(), pytest.raises(OperationalError, match="certificate verify"):
        uses_tls(url)
