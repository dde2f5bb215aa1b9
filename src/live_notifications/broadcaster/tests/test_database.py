"""A database that refuses the user tables: the broadcaster won't start, or, if the
refusal comes later, takes itself out of rotation and says why.

The broadcaster's database role may lack a privilege, or the project's
tables may not be there: every client would be closed with 1013 while
``/readyz`` said 200. Here a role loses the privilege to read the user
table, before a real broadcaster starts and while it runs.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from django.db import connection

from tests.servers import BroadcasterProcess, PostgresServer, ServiceProcess, http_get, wait_until

pytestmark = pytest.mark.django_db(transaction=True)

ROLE = "broadcaster_restricted"


@pytest.fixture
def restricted_role() -> Iterator[str]:
    """A role that may read every table; :func:`revoke` takes the user table away."""
    with connection.cursor() as cursor:
        cursor.execute(f"CREATE ROLE {ROLE} LOGIN")
        cursor.execute(f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {ROLE}")
    try:
        yield ROLE
    finally:
        with connection.cursor() as cursor:
            cursor.execute(f"DROP OWNED BY {ROLE}")
            cursor.execute(f"DROP ROLE {ROLE}")


def revoke(role: str) -> None:
    with connection.cursor() as cursor:
        cursor.execute(f"REVOKE SELECT ON auth_user FROM {role}")  # noqa: S608 - ours


def readyz(broadcaster: BroadcasterProcess) -> tuple[int, str] | None:
    try:
        status, text, _ = http_get(f"{broadcaster.http}/readyz")
    except OSError:
        return None  # not listening yet
    return status, text


def test_a_broadcaster_refuses_to_start_on_a_database_that_refuses_the_user_table(
    service_env: dict[str, str], postgres_server: PostgresServer, restricted_role: str
) -> None:
    revoke(restricted_role)
    database = connection.settings_dict["NAME"]
    url = postgres_server.url(database).replace("postgres@", f"{restricted_role}@")
    broadcaster = BroadcasterProcess({**service_env, "DATABASE_URL": url})
    try:
        assert broadcaster.process.wait(timeout=60) == 1
        output = broadcaster.output()
    finally:
        broadcaster.remove()
    assert "broadcaster: configuration error:" in output
    assert (
        "(live_notifications.E008) The database user 'broadcaster_restricted' can't read the"
        " user tables: permission denied for table auth_user"
    ) in output


def test_a_database_that_refuses_the_user_table_is_reported(
    service_env: dict[str, str],
    postgres_server: PostgresServer,
    started: list[ServiceProcess],
    restricted_role: str,
    relay: ServiceProcess,
) -> None:
    database = connection.settings_dict["NAME"]
    url = postgres_server.url(database).replace("postgres@", f"{restricted_role}@")
    broadcaster = BroadcasterProcess(
        {**service_env, "DATABASE_URL": url, "BROADCASTER_DATABASE_CHECK_INTERVAL": "0.2"}
    )
    started.append(broadcaster)
    broadcaster.wait_ready()
    revoke(restricted_role)
    wait_until(lambda: readyz(broadcaster) == (503, "database unusable\n"), "503 unusable")
    assert broadcaster.metrics()["broadcaster_ready"] == 0
    output = broadcaster.output()
    assert "event=database_unusable error='permission denied for table auth_user'" in output
    assert output.count("event=database_unusable") == 1  # once per change, not per check

    with connection.cursor() as cursor:
        cursor.execute(f"GRANT SELECT ON auth_user TO {restricted_role}")
    wait_until(lambda: readyz(broadcaster) == (200, "ready\n"), "ready again")
    assert "event=database_usable" in broadcaster.output()
