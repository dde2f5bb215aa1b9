"""Whether the database can answer what authentication asks: the user model's tables.

A broadcaster whose database user can't read the user table, or whose
project's tables aren't there (migrations not run, another user model),
refuses every client with 1013 "database unavailable" though nothing is
down. :class:`DatabaseCheck` reads those tables as a token check would, at
start and then every ``interval`` seconds, so that the replica says so: in
its log, once per change, and in ``/readyz`` (503 "database unusable"),
which takes it out of the edge's rotation until it can authenticate again.

Only a refusal by the database (an error in the query: a missing table, a
missing privilege) counts; a database that doesn't answer is an outage,
which the clients' retries and the users kept in memory ride out.
"""

from __future__ import annotations

import asyncio
import logging

from django.contrib.auth import get_user_model
from django.db import DatabaseError, ProgrammingError, close_old_connections, connection

from .auth import access_queries

logger = logging.getLogger(__name__)


def read_user_tables() -> None:
    """Read the tables a token check reads, no rows. Blocking: run in a thread.

    Raises :exc:`django.db.ProgrammingError` if the database refuses.
    """
    close_old_connections()
    try:
        list(get_user_model()._default_manager.values_list("pk")[:1])
        queries = access_queries()
        if queries is not None:
            grants, memberships = queries
            with connection.cursor() as cursor:
                cursor.execute(grants, [[], []])
                cursor.execute(memberships, [[]])
    finally:
        close_old_connections()


class DatabaseCheck:
    """Whether this process may authenticate anyone: see the module's docstring."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        #: Why the database can't be used, if it can't; ``None`` while it can.
        self.unusable: str | None = None

    @property
    def usable(self) -> bool:
        return self.unusable is None

    async def run(self) -> None:
        """Check now, then every ``interval`` seconds, forever."""
        while True:
            await self.check()
            await asyncio.sleep(self.interval)

    async def check(self) -> None:
        try:
            await asyncio.to_thread(read_user_tables)
        except ProgrammingError as error:
            reason = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
            if self.unusable != reason:
                logger.error("event=database_unusable error=%r", reason)
            self.unusable = reason
        except DatabaseError:
            return  # not answering: an outage, not a refusal
        else:
            if self.unusable is not None:
                logger.info("event=database_usable")
            self.unusable = None
