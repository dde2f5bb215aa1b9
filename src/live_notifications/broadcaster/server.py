"""The WebSocket server's wiring: authenticate, resume or register, drain on SIGTERM.

The public port serves WebSocket clients, /healthz and /readyz; /metrics is
on the metrics port only. The concerns live beside it: :mod:`.auth` (what a
user may see), :mod:`.identities` (who a token is: in batches, users kept),
:mod:`.log` (reading the event log), :mod:`.history` (its window in memory),
:mod:`.resume` (the resuming conversation), :mod:`.fanout` (writing to
clients), :mod:`.frames` (encoded once), :mod:`.registry` (who may see
what), :mod:`.connection` (the WebSocket protocol, keeping almost nothing
while idle), :mod:`.handshake` (its common case), :mod:`.keepalive` (pings),
:mod:`.deadlines` (the timeouts of the handshake and the token, one timer
each), :mod:`.addresses` (who a client is), :mod:`.database` (whether the
user tables can be read), :mod:`.metrics_port` (the metrics listener). A connection has a task
only while it catches up on what came after its token was read
(:meth:`Broadcaster.catch_up`); most are registered with none.
"""

from __future__ import annotations

import asyncio
import logging
import math
import signal
from concurrent.futures import ThreadPoolExecutor

from django.db import DatabaseError
from websockets.frames import CloseCode
from websockets.http11 import Request, Response
from websockets.protocol import State
from websockets.typing import Origin

from live_notifications.conf import settings as live_settings
from live_notifications.shared.eventlog import Position, event_id

from .auth import Identity, access_of
from .background import Background
from .config import Config
from .connection import Closed, Connection, Settings
from .database import DatabaseCheck
from .deadlines import Deadlines
from .fanout import Fanout
from .identities import Identities
from .keepalive import Keepalive
from .log import EventLogReader
from .metrics import Metrics
from .metrics_port import serve_metrics
from .resume import Hello, parse_hello, resume, welcome

logger = logging.getLogger(__name__)

#: Connections the kernel queues before they are accepted (it caps this at
#: net.core.somaxconn, 4096 on current kernels). asyncio's default, 100, drops
#: the SYNs of a reconnect storm beyond it: those clients wait a second for
#: TCP to retry, then three.
LISTEN_BACKLOG = 4096

#: Largest first message read: a django-sesame token is well under 200 bytes.
#: Clients send nothing else, so this is the limit for the whole connection.
MAX_MESSAGE_SIZE = 1024


class Broadcaster:
    """Pushes each event of the log to the connected users allowed to see it."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.metrics = Metrics()
        self.log = EventLogReader(
            config.redis_url,
            lambda entries: self.fanout.on_entries(entries),
            metrics=self.metrics,
            retention=config.retention,
            check_interval=config.redis_check_interval,
        )
        self.fanout = Fanout(
            log=self.log,
            metrics=self.metrics,
            slow_client_buffer=config.slow_client_buffer,
            access_of=access_of,
            write_interval=config.write_interval,
            # What the identities keep of these users is stale from here on.
            on_access_change=lambda users: self.identities.forget(users),
        )
        self.keepalive = Keepalive(config.ping_interval)
        self.identities = Identities(
            batch_size=config.auth_batch,
            cache_size=config.auth_cache_size,
            cache_seconds=config.auth_cache_seconds,
        )
        self.database = DatabaseCheck(config.database_check_interval)
        #: Connections past the handshake and not closed yet.
        self.open = 0
        #: Open connections that haven't sent their token yet, until they time out.
        self._unauthenticated: Deadlines[Connection] = Deadlines(
            config.auth_timeout, self._auth_timed_out
        )
        #: Tokens waiting for a batch of the database to answer them.
        self._authenticating = 0
        #: The tasks that catch clients up.
        self._sessions = Background()
        self.draining = False

    @property
    def full(self) -> bool:
        """Whether ``max_connections`` are open.

        Handshakes answered in the same moment may overshoot it by a few:
        they are counted once their handler starts.
        """
        return self.open >= self.config.max_connections

    @property
    def ready(self) -> bool:
        """Whether to take new clients: reading the event log, able to read the
        user tables, not draining, not full."""
        return self.log.reading and self.database.usable and not self.draining and not self.full

    def render_metrics(self) -> str:
        """The metrics port's text."""
        return self.metrics.render(
            connections=len(self.fanout),
            pending=self.pending,
            ready=self.ready,
            max_connections=self.config.max_connections,
            waiting=self.fanout.waiting,
        )

    # HTTP, before the WebSocket handshake.

    def process_request(self, connection: Connection, request: Request) -> Response | None:
        """Answer the health checks; refuse upgrades when draining, full or saturated.

        /metrics is on the metrics port: here it is 404, never an upgrade.
        """
        path = request.path.partition("?")[0]
        if path == "/healthz":
            return connection.respond(200, "ok\n")
        if path == "/readyz":
            if self.ready:
                return connection.respond(200, "ready\n")
            if self.draining:
                return connection.respond(503, "draining\n")
            if not self.log.reading:
                return connection.respond(503, "log unavailable\n")
            if not self.database.usable:  # why: in the log, not to the public
                return connection.respond(503, "database unusable\n")
            return connection.respond(503, "full\n")
        if path == "/metrics":
            return connection.respond(404, "not found\n")
        if self.draining:
            self.metrics.connections_refused += 1
            return connection.respond(503, "shutting down\n")
        if self.log.history is None:
            self.metrics.connections_refused += 1
            return connection.respond(503, "event log not loaded yet\n")
        if self.full:
            self.metrics.connections_refused += 1
            logger.warning("event=refused reason=full connections=%d", self.open)
            return connection.respond(503, "full\n")
        if self.pending >= self.config.max_pending:
            self.metrics.connections_refused += 1
            logger.warning("event=refused reason=too_many_pending pending=%d", self.pending)
            return connection.respond(503, "too many unauthenticated connections\n")
        return None

    # WebSocket connections: open, say hello, authenticated, closed.

    @property
    def pending(self) -> int:
        """Open connections not authenticated yet: waiting for the token, or checking it."""
        return len(self._unauthenticated) + self._authenticating

    def connection_open(self, connection: Connection) -> None:
        self.open += 1
        self.keepalive.add(connection)
        self._unauthenticated.add(connection)

    def _auth_timed_out(self, connection: Connection) -> None:
        self._auth_failed("timeout", connection)
        connection.close(CloseCode.POLICY_VIOLATION, "authentication timed out")

    def message_begun(self, connection: Connection) -> None:
        if connection not in self._unauthenticated:
            # Clients have nothing to say after the first message: one that
            # keeps sending would make this process read and drop it forever.
            # Closed at its first frame: a message that never ends, in empty
            # fragments, would otherwise hold the connection's parser.
            self.metrics.clients_sending += 1
            logger.warning("event=client_sent remote=%s", connection.address)
            connection.close(CloseCode.POLICY_VIOLATION, "clients send nothing")

    def too_slow(self, connection: Connection) -> None:
        self.fanout.cut(connection)

    def message_received(self, connection: Connection, message: str | bytes) -> None:
        self._unauthenticated.discard(connection)
        assert self.log.history is not None  # process_request refuses connections before
        # Events and access changes after this position are applied to the
        # client whatever its permissions read below saw.
        seen = self.log.history.head
        hello = parse_hello(message) if isinstance(message, str) else None
        if hello is None:
            self._auth_failed("binary" if isinstance(message, bytes) else "malformed", connection)
            connection.close(CloseCode.INTERNAL_ERROR, "authentication failed")
            return
        answer = self.identities.check(hello.token)
        if isinstance(answer, asyncio.Future):  # a batch will read the database
            self._authenticating += 1
            answer.add_done_callback(
                lambda checked: self._checked(connection, hello, seen, checked)
            )
        else:
            self._authenticated(connection, hello, seen, answer)

    def _checked(
        self,
        connection: Connection,
        hello: Hello,
        seen: Position,
        checked: asyncio.Future[Identity | None],
    ) -> None:
        self._authenticating -= 1
        if checked.cancelled():  # the event loop is closing
            return
        error = checked.exception()
        if error is None:
            self._authenticated(connection, hello, seen, checked.result())
            return
        if isinstance(error, DatabaseError):
            logger.error("event=auth_error remote=%s error=%r", connection.address, str(error))
            self._auth_failed("database", connection)
            connection.close(CloseCode.TRY_AGAIN_LATER, "database unavailable")
        else:
            logger.error("event=auth_error remote=%s", connection.address, exc_info=error)
            self._auth_failed("error", connection)
            connection.close(CloseCode.INTERNAL_ERROR, "authentication failed")

    def _authenticated(
        self, connection: Connection, hello: Hello, seen: Position, identity: Identity | None
    ) -> None:
        """Register the client now if nothing is to be sent first, else in a task."""
        if identity is None:
            self._auth_failed("invalid", connection)
            connection.close(CloseCode.INTERNAL_ERROR, "authentication failed")
            return
        connection.label = identity.username
        if not hello.resuming:
            registered = self.fanout.register_now(connection, identity, seen, resuming=False)
        elif hello.last_id is None:  # resumes from now: its welcome says where that is
            assert self.log.history is not None
            first = welcome(event_id(self.log.history.epoch, seen), recovered=False)
            registered = self.fanout.register_now(
                connection, identity, seen, resuming=True, first=first.encode()
            )
        else:
            registered = False
        if registered:
            self._connected(connection, identity, hello)
        elif connection.state is State.OPEN:
            self._sessions.spawn(self.catch_up(connection, identity, hello, seen))

    async def catch_up(
        self, connection: Connection, identity: Identity, hello: Hello, seen: Position
    ) -> None:
        """Resume the client if asked, send it what came after ``seen``, register it.

        The task ends there: an idle connection has none. What it receives is
        written to it by the fan-out, and what it sends is read by
        :class:`.Connection`.
        """
        try:
            if hello.resuming:
                followed = await resume(
                    connection,
                    identity,
                    hello.last_id,
                    seen=seen,
                    log=self.log,
                    fanout=self.fanout,
                    metrics=self.metrics,
                )
            else:
                followed = await self.fanout.follow(connection, identity, seen, resuming=False)
        except Closed:
            return
        if followed:
            self._connected(connection, identity, hello)

    def _connected(self, connection: Connection, identity: Identity, hello: Hello) -> None:
        self.metrics.connections_opened += 1
        logger.info(
            "event=connect user=%s remote=%s superuser=%s content_types=%d groups=%d resuming=%s",
            identity.username,
            connection.address,
            identity.access.superuser,
            len(identity.access.content_types),
            len(identity.access.groups),
            hello.resuming,
        )

    def connection_closed(self, connection: Connection) -> None:
        self.open -= 1
        self.keepalive.remove(connection)
        self.fanout.forget(connection)
        if connection in self._unauthenticated:
            self._unauthenticated.discard(connection)
            too_big = connection.close_sent_code == CloseCode.MESSAGE_TOO_BIG
            self._auth_failed("too_large" if too_big else "closed", connection)
        elif connection.label is not None:
            logger.info(
                "event=disconnect user=%s remote=%s code=%s",
                connection.label,
                connection.address,
                connection.close_code,
            )

    def _auth_failed(self, reason: str, connection: Connection) -> None:
        self.metrics.auth_failures[reason] += 1
        logger.info("event=auth_failure reason=%s remote=%s", reason, connection.address)

    # Lifecycle.

    async def serve(self, stop: asyncio.Future[None]) -> None:
        """Serve until ``stop`` is done, then drain and return."""
        # Browsers send Origin: only the site's own are accepted. Other clients
        # (python -m websockets) send none, and have no cookies to abuse.
        origins = [*(Origin(origin) for origin in live_settings.allowed_origins), None]
        # Messages come uncompressed (no extension is accepted): per-connection
        # compression contexts would cost far more memory than they save
        # bandwidth on small JSON documents.
        connections = Settings(
            self,
            origins=origins,
            max_size=MAX_MESSAGE_SIZE,
            max_buffer=self.config.slow_client_buffer,
            close_timeout=self.config.close_timeout,
            trusted_proxies=self.config.trusted_proxies,
        )
        loop = asyncio.get_running_loop()
        # Closes after the public port: scrapes go on while draining.
        async with serve_metrics(self.render_metrics, self.config.host, self.config.metrics_port):
            server = await loop.create_server(
                lambda: Connection(connections),
                self.config.host,
                self.config.port,
                backlog=LISTEN_BACKLOG,
            )
            log = asyncio.create_task(self.log.run())
            positions = asyncio.create_task(
                self.fanout.send_positions(self.log, self.config.position_seconds)
            )
            keepalive = asyncio.create_task(self.keepalive.run())
            database = asyncio.create_task(self.database.run())
            logger.info(
                "event=listening host=%s port=%d metrics_port=%d",
                self.config.host,
                self.config.port,
                self.config.metrics_port,
            )
            tasks = (log, positions, keepalive, database)
            try:
                await asyncio.wait([stop, *tasks], return_when=asyncio.FIRST_COMPLETED)
                await self.drain(server, connections)
            finally:
                server.close()
                for connection in list(connections.connections):
                    connection.transport.abort()
            for task in tasks:
                if task.done():
                    # They loop forever: ending is a bug. Exit so that the
                    # orchestrator restarts a clean process.
                    raise RuntimeError(f"{task.get_coro()} stopped") from task.exception()
                task.cancel()

    async def drain(self, server: asyncio.Server, connections: Settings) -> None:
        """Stop taking clients and close every connection with 1001.

        Closes are spread over ``drain_seconds`` so that clients, which come
        back through the proxy to the other replicas, arrive gradually. Each
        resuming client is told its position just before its close frame.
        """
        self.draining = True
        server.close()  # stop listening; handshakes already under way get 503
        open_ = [c for c in connections.connections if c.state is State.OPEN]
        logger.info(
            "event=draining connections=%d over=%.1fs", len(open_), self.config.drain_seconds
        )
        # Up to 20 batches a second; no pause after the last one.
        batches = max(1, min(len(open_), math.ceil(self.config.drain_seconds * 20)))
        size = max(1, math.ceil(len(open_) / batches))
        pause = self.config.drain_seconds / max(1, batches - 1)
        for start in range(0, len(open_), size):
            if start:
                await asyncio.sleep(pause)
            batch = open_[start : start + size]
            if self.log.history is not None:
                self.fanout.tell_position(self.log.history, batch)
            for connection in batch:
                connection.close(CloseCode.GOING_AWAY, "server shutting down")
        closing = [asyncio.ensure_future(c.wait_closed()) for c in connections.connections]
        if closing:
            _, left = await asyncio.wait(closing, timeout=self.config.close_timeout + 1)
            if left:
                logger.warning("event=drain_incomplete connections=%d", len(left))
                for waiter in left:
                    waiter.cancel()
        logger.info("event=drained")


async def run(config: Config) -> None:
    """Run a broadcaster until SIGTERM or SIGINT."""
    loop = asyncio.get_running_loop()
    # A bounded pool for the ORM: each thread holds one database connection.
    loop.set_default_executor(
        ThreadPoolExecutor(max_workers=config.orm_threads, thread_name_prefix="orm")
    )
    stop: asyncio.Future[None] = loop.create_future()

    def request_stop() -> None:
        if not stop.done():
            stop.set_result(None)

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, request_stop)
    await Broadcaster(config).serve(stop)
