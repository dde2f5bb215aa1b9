"""Fixtures for the services' tests: the servers of :mod:`tests.servers`, wired to Django."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from django.conf import settings
from django.db import connection

from tests.servers import (
    BroadcasterProcess,
    PostgresServer,
    RedisServer,
    RelayProcess,
    ServiceProcess,
)


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
    """Every test runs with Redis up, pointed at, and empty."""
    with redis.Redis.from_url(redis_server.url) as client:
        client.flushall()


@pytest.fixture
def service_env(
    django_db_setup: None, postgres_server: PostgresServer, redis_server: RedisServer
) -> dict[str, str]:
    """The environment the services' processes run with, on the test servers."""
    return {
        # The run's own: web.settings.test, or live_notifications.tests.project.settings
        # (pytest-django sets it; settings.SETTINGS_MODULE is None while overridden).
        "DJANGO_SETTINGS_MODULE": os.environ["DJANGO_SETTINGS_MODULE"],
        "DATABASE_URL": postgres_server.url(connection.settings_dict["NAME"]),
        "REDIS_URL": redis_server.url,
    }


@pytest.fixture
def started(request: pytest.FixtureRequest) -> Iterator[list[ServiceProcess]]:
    """Processes started by a test: removed after it, their logs shown if it failed."""
    processes: list[ServiceProcess] = []
    yield processes
    failed = getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed
    for process in processes:
        process.kill()
        if failed:
            print(f"--- {process.module} log (port {process.port}) ---\n{process.output()}")
        process.remove()


@pytest.fixture
def start_relay(
    service_env: dict[str, str], started: list[ServiceProcess]
) -> Callable[..., RelayProcess]:
    """Start a relay on the test database; ``start_relay(VAR=value)``."""

    def start(**env: str) -> RelayProcess:
        relay = RelayProcess({**service_env, **env})
        started.append(relay)
        relay.wait_ready()
        return relay

    return start


@pytest.fixture
def relay(start_relay: Callable[..., RelayProcess]) -> RelayProcess:
    """A running relay: events published in the test reach Redis's event log."""
    return start_relay()


@pytest.fixture
def start_broadcaster(
    service_env: dict[str, str], relay: RelayProcess, started: list[ServiceProcess]
) -> Callable[..., BroadcasterProcess]:
    """Start broadcasters (a relay runs too); ``start_broadcaster(VAR=value)``, on
    ``port=`` if given (where a stopped one was: its clients come back)."""

    def start(port: int | None = None, **env: str) -> BroadcasterProcess:
        broadcaster = BroadcasterProcess(
            {
                **service_env,
                "BROADCASTER_AUTH_TIMEOUT": "1",
                "BROADCASTER_DRAIN_SECONDS": "0.5",
                "BROADCASTER_REDIS_CHECK_INTERVAL": "0.5",
                **env,
            },
            port=port,
        )
        started.append(broadcaster)
        broadcaster.wait_ready()
        return broadcaster

    return start


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Any:
    # Lets fixtures see whether the test failed, to print logs only then.
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report
