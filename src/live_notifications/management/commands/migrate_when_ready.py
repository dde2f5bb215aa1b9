"""``manage.py migrate_when_ready``: wait for PostgreSQL, then migrate, one run at a time.

What compose's ``migrate`` service and every app pod's ``migrate`` init
container run. Pods start together, and possibly before PostgreSQL: this
waits until the database accepts connections (``MIGRATE_WAIT_SECONDS``,
default 300), then runs ``migrate --noinput`` holding a PostgreSQL advisory
lock, so that concurrent runs apply migrations one after the other, never
interleaved; the runs after the first find nothing to apply.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import time
from collections.abc import Iterator
from typing import Any

from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError
from django.db import DatabaseError, OperationalError, connection

from live_notifications.shared import environment

logger = logging.getLogger(__name__)

#: Key of the session-level advisory lock held while migrating. Any fixed
#: 64-bit number works, as long as nothing else in the database uses it
#: (the relay's leader lock is ``relay.outbox.LEADER_LOCK``).
MIGRATION_LOCK = 4_106_921_577_305

#: Seconds between two connection attempts.
RETRY_SECONDS = 1.0
#: Attempts per "still waiting" line in the log.
LOG_EVERY = 5
#: Seconds one attempt may take when DATABASE_URL sets no connect_timeout:
#: a host that drops packets would otherwise hold it as long as TCP retries.
ATTEMPT_TIMEOUT = 5


class Command(BaseCommand):
    help = (
        "Wait for the database (MIGRATE_WAIT_SECONDS), then apply migrations "
        "under an advisory lock, so that concurrent runs don't overlap."
    )
    # The checks run with migrate's, once the database answers.
    requires_system_checks: list[str] = []

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            wait = environment.integer("MIGRATE_WAIT_SECONDS", 300)
        except environment.ConfigurationError as exc:
            raise CommandError(str(exc)) from None
        wait_for_database(wait)
        with advisory_lock(MIGRATION_LOCK):
            call_command(
                "migrate",
                interactive=False,
                skip_checks=False,
                verbosity=options["verbosity"],
                # The caller's streams, if any: self.stdout would wrap twice.
                stdout=options.get("stdout"),
                stderr=options.get("stderr"),
            )


def where() -> str:
    """DATABASE_URL's host and port, for messages."""
    settings = connection.settings_dict
    host = settings["HOST"] or "the local socket"
    return f"{host}:{settings['PORT']}" if settings["PORT"] else host


def connects() -> None:
    """Open and close a connection as Django would; raise OperationalError if refused."""
    params = connection.get_connection_params()
    params.setdefault("connect_timeout", ATTEMPT_TIMEOUT)
    with connection.wrap_database_errors:  # psycopg's errors as Django's
        connection.get_new_connection(params).close()


def wait_for_database(wait: float) -> None:
    """Try to connect every second until it works; raise CommandError after ``wait`` s."""
    deadline = time.monotonic() + wait
    for attempt in itertools.count(1):
        try:
            connects()
        except OperationalError as exc:
            error = " ".join(str(exc).split())  # libpq's messages span lines
        else:
            if attempt > 1:
                logger.info("the database at %s accepts connections", where())
            return
        if time.monotonic() + RETRY_SECONDS > deadline:
            raise CommandError(
                f"the database at {where()} (DATABASE_URL) did not accept connections"
                f" within {wait:g} s (MIGRATE_WAIT_SECONDS): {error}"
            )
        if attempt % LOG_EVERY == 1:
            logger.info("waiting for the database at %s (attempt %d): %s", where(), attempt, error)
        time.sleep(RETRY_SECONDS)


@contextlib.contextmanager
def advisory_lock(key: int) -> Iterator[None]:
    """Hold PostgreSQL's session-level advisory lock ``key`` on Django's connection."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(%s)", [key])
        if not cursor.fetchone()[0]:
            logger.info("another run is migrating; waiting for it to finish")
            cursor.execute("SELECT pg_advisory_lock(%s)", [key])
    try:
        yield
    finally:
        # Should the connection have broken, the lock went with its session.
        with contextlib.suppress(DatabaseError), connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_unlock(%s)", [key])
