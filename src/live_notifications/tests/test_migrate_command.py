"""``manage.py migrate_when_ready``: waits for PostgreSQL, never overlaps, then is a no-op."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from django.core.management import CommandError, call_command

from live_notifications.management.commands.migrate_when_ready import MIGRATION_LOCK
from tests.servers import SERVICES, PostgresServer, free_port, wait_until


class Run:
    """``manage.py migrate_when_ready`` in a subprocess, its output in a file."""

    def __init__(self, database_url: str, log: Path, *, wait: int = 60) -> None:
        self.log = log
        self.process = subprocess.Popen(
            [sys.executable, str(SERVICES / "web" / "manage.py"), "migrate_when_ready"],
            env={
                **os.environ,
                "DJANGO_SETTINGS_MODULE": "web.settings.test",
                "DATABASE_URL": database_url,
                "MIGRATE_WAIT_SECONDS": str(wait),
            },
            stdout=log.open("w"),
            stderr=subprocess.STDOUT,
        )

    def output(self) -> str:
        return self.log.read_text()

    def finish(self) -> int:
        return self.process.wait(timeout=120)


def applied(url: str) -> list[tuple[str, str]]:
    with psycopg.connect(url) as db:
        return db.execute("SELECT app, name FROM django_migrations ORDER BY id").fetchall()


@pytest.fixture
def fresh_database(postgres_server: PostgresServer) -> Iterator[str]:
    """The URL of a new, empty database."""
    name = f"fresh_{free_port()}"
    with psycopg.connect(postgres_server.url("postgres"), autocommit=True) as db:
        db.execute(f"CREATE DATABASE {name}")
    yield postgres_server.url(name)
    with psycopg.connect(postgres_server.url("postgres"), autocommit=True) as db:
        db.execute(f"DROP DATABASE {name} WITH (FORCE)")


def test_gives_up_on_an_unreachable_database(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    run = Run(f"postgres://postgres@127.0.0.1:{port}/app", tmp_path / "log", wait=2)
    assert run.finish() == 1
    output = run.output()
    assert f"waiting for the database at 127.0.0.1:{port} (attempt 1)" in output
    assert (
        f"the database at 127.0.0.1:{port} (DATABASE_URL) did not accept connections"
        " within 2 s (MIGRATE_WAIT_SECONDS)"
    ) in output
    assert "Connection refused" in output


def test_waits_for_the_database_to_start(tmp_path: Path) -> None:
    server = PostgresServer()  # created, not started
    try:
        run = Run(server.url("postgres"), tmp_path / "log")

        def waiting() -> bool:
            if run.process.poll() is not None:
                pytest.fail(f"exited with {run.process.returncode}:\n{run.output()}")
            return "waiting for the database" in run.output()

        wait_until(waiting, "the command to wait")
        server.start()
        assert run.finish() == 0, run.output()
        assert "the database at 127.0.0.1" in run.output()
        assert ("live_notifications", "0001_initial") in applied(server.url("postgres"))
    finally:
        server.remove()


def test_concurrent_runs_take_turns_then_nothing_is_left(
    fresh_database: str, tmp_path: Path
) -> None:
    with psycopg.connect(fresh_database, autocommit=True) as holder:
        # The test holds the lock: both runs must queue behind it, migrating nothing.
        holder.execute("SELECT pg_advisory_lock(%s)", [MIGRATION_LOCK])
        runs = [Run(fresh_database, tmp_path / f"run-{n}") for n in (1, 2)]

        def waiting() -> int:
            for run in runs:
                if run.process.poll() is not None:
                    pytest.fail(f"exited with {run.process.returncode}:\n{run.output()}")
            row = holder.execute(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
                " AND ((classid::bigint << 32) | objid::bigint) = %s",
                [MIGRATION_LOCK],
            ).fetchone()
            assert row is not None
            return int(row[0])

        wait_until(lambda: waiting() == 2, "both runs to wait for the lock", timeout=30)
        assert holder.execute("SELECT to_regclass('django_migrations')").fetchone() == (None,)
        holder.execute("SELECT pg_advisory_unlock(%s)", [MIGRATION_LOCK])

    assert [run.finish() for run in runs] == [0, 0], [run.output() for run in runs]
    outputs = sorted((run.output() for run in runs), key=lambda output: "Applying" in output)
    # One applied everything; the other, which waited for it, found nothing to do.
    assert "No migrations to apply." in outputs[0]
    assert "Applying" not in outputs[0]
    assert "Applying live_notifications.0001_initial... OK" in outputs[1]
    assert all("another run is migrating; waiting for it to finish" in o for o in outputs)
    rows = applied(fresh_database)
    assert len(rows) == len(set(rows))
    assert ("live_notifications", "0001_initial") in rows

    again = Run(fresh_database, tmp_path / "again")
    assert again.finish() == 0, again.output()
    assert "No migrations to apply." in again.output()
    assert applied(fresh_database) == rows


def test_a_bad_wait_is_a_configuration_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MIGRATE_WAIT_SECONDS", "5m")
    with pytest.raises(CommandError, match="MIGRATE_WAIT_SECONDS must be an integer, got '5m'"):
        call_command("migrate_when_ready")
