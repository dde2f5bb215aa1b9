"""Fixtures for the services' tests: the servers of :mod:`testing`, wired to Django."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.conf import settings
from django.db import connection

from testing import BroadcasterProcess, PostgresServer, RedisServer


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    server = PostgresServer()
    server.start()
    yield server
    server.remove()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer()
    server.start()
    # Point django-redis at it before anything uses the cache.
    settings.CACHES["default"]["LOCATION"] = server.url
    yield server
    server.stop()


@pytest.fixture(scope="session")
def django_db_modify_db_settings(postgres_server: PostgresServer) -> None:
    """pytest-django's hook to change the database settings before creating the test DB."""
    settings.DATABASES["default"].update(
        HOST="127.0.0.1", PORT=str(postgres_server.port), USER="postgres", PASSWORD=""
    )


@pytest.fixture(autouse=True)
def _servers(redis_server: RedisServer) -> None:
    """Every test runs with Redis up and pointed at."""


@pytest.fixture
def start_broadcaster(
    django_db_setup: None,
    postgres_server: PostgresServer,
    redis_server: RedisServer,
    request: pytest.FixtureRequest,
) -> Iterator[Callable[..., BroadcasterProcess]]:
    """Start broadcasters on the test database; ``start_broadcaster(VAR=value)``."""
    started: list[BroadcasterProcess] = []

    def start(**env: str) -> BroadcasterProcess:
        broadcaster = BroadcasterProcess(
            {
                "DJANGO_SETTINGS_MODULE": "web.settings.test",
                "DATABASE_URL": postgres_server.url(connection.settings_dict["NAME"]),
                "REDIS_URL": redis_server.url,
                "BROADCASTER_AUTH_TIMEOUT": "1",
                "BROADCASTER_DRAIN_SECONDS": "0.5",
                "BROADCASTER_REDIS_CHECK_INTERVAL": "0.5",
                **env,
            }
        )
        started.append(broadcaster)
        broadcaster.wait_ready()
        return broadcaster

    yield start
    failed = getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed
    for broadcaster in started:
        broadcaster.kill()
        if failed:
            print(f"--- broadcaster log (port {broadcaster.port}) ---\n{broadcaster.output()}")


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Any:
    # Lets fixtures see whether the test failed, to print logs only then.
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report
