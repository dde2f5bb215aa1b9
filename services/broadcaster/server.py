"""The WebSocket server's wiring: authenticate, resume or register, drain on SIGTERM.

The public port serves WebSocket clients, /healthz and /readyz; /metrics is
on the metrics port only. The concerns live beside it: :mod:`.auth` (what a
user may see), :mod:`.identities` (who a token is: in batches, users kept),
:mod:`.log` (reading the event log), :mod:`.history` (its window in memory),
:mod:`.resume` (the resuming conversation), :mod:`.fanout` (writing to
clients), :mod:`.frames` (encoded once), :mod:`.registry` (who may see
what), :mod:`.connection` (what an idle connection keeps), :mod:`.keepalive`
(pings), :mod:`.metrics_port` (the metrics listener).
"""

from __future__ import annotations

import asyncio
import logging
import math
import signal
from concurrent.futures import ThreadPoolExecutor

from django.conf import settings
from django.db import DatabaseError
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.frames import CloseCode
from websockets.http11 import Request, Response
from websockets.protocol import State
from websockets.typing import Origin

from .auth import Identity, access_of
from .config import Config
from .connection import Connection
from .fanout import Fanout, client_address
from .identities import Identities
from .keepalive import Keepalive
from .log import EventLogReader
from .metrics import Metrics
from .metrics_port import serve_metrics
from .resume import Hello, parse_hello, resume

logger = logging.getLogger(__name__)

#: Largest first message read: a django-sesame token is well under 200 bytes.
#: Clients send nothing else, so this is the limit for the whole connection.
MAX_MESSAGE_SIZE = 1024
#: Incoming messages buffered before reading pauses; clients shouldn't send any.
MAX_QUEUE = 4


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
        #: Connections past the handshake whose handler still runs: pending
        #: (authenticating) and authenticated ones.
        self.open = 0
        self.pending = 0
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
        """Whether to take new clients: reading the event log, not draining, not full."""
        return self.log.reading and not self.draining and not self.full

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

    def process_request(self, connection: ServerConnection, request: Request) -> Response | None:
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

    # WebSocket connections.

    async def handler(self, websocket: ServerConnection) -> None:
        """Serve one client, counted in :attr:`open` and kept alive until it leaves."""
        self.open += 1
        self.keepalive.add(websocket)
        try:
            await self.serve_client(websocket)
        finally:
            self.keepalive.remove(websocket)
            self.open -= 1

    async def serve_client(self, websocket: ServerConnection) -> None:
        """Authenticate the client, resume it if asked, keep it registered until it leaves."""
        assert self.log.history is not None  # process_request refuses connections before
        # Events and access changes after this position are applied to the
        # client whatever its permissions read below saw.
        seen = self.log.history.head
        self.pending += 1
        try:
            authenticated = await self.authenticate(websocket)
        finally:
            self.pending -= 1
        if authenticated is None:
            return
        identity, hello = authenticated

        try:
            if hello.resuming:
                followed = await resume(
                    websocket,
                    identity,
                    hello.last_id,
                    seen=seen,
                    log=self.log,
                    fanout=self.fanout,
                    metrics=self.metrics,
                )
            else:
                followed = await self.fanout.follow(websocket, identity, seen, resuming=False)
            if not followed:
                return
            self.metrics.connections_opened += 1
            logger.info(
                "event=connect user=%s remote=%s content_types=%s resuming=%s",
                identity.username,
                client_address(websocket),
                "all" if identity.content_types is None else len(identity.content_types),
                hello.resuming,
            )
            # This frame lasts as long as the connection: not the token.
            del authenticated, hello
            # Clients have nothing to say after the first message: one that
            # keeps sending would make this process read and drop it forever.
            # (recv() rather than async for: one frame less to keep.)
            await websocket.recv()
            self.metrics.clients_sending += 1
            logger.warning("event=client_sent remote=%s", client_address(websocket))
            await websocket.close(CloseCode.POLICY_VIOLATION, "clients send nothing")
        except ConnectionClosed:
            pass
        finally:
            self.fanout.forget(websocket)
            logger.info(
                "event=disconnect user=%s remote=%s code=%s",
                identity.username,
                client_address(websocket),
                websocket.close_code,
            )

    async def authenticate(self, websocket: ServerConnection) -> tuple[Identity, Hello] | None:
        """Read the first message and check its token; close the connection if it's refused."""
        remote = client_address(websocket)
        try:
            async with asyncio.timeout(self.config.auth_timeout):
                message = await websocket.recv()
        except TimeoutError:
            self._auth_failed("timeout", remote)
            await websocket.close(CloseCode.POLICY_VIOLATION, "authentication timed out")
            return None
        except ConnectionClosed as exc:
            too_big = exc.sent is not None and exc.sent.code == CloseCode.MESSAGE_TOO_BIG
            self._auth_failed("too_large" if too_big else "closed", remote)
            return None

        hello = parse_hello(message) if isinstance(message, str) else None
        if hello is None:
            self._auth_failed("binary" if isinstance(message, bytes) else "malformed", remote)
            await websocket.close(CloseCode.INTERNAL_ERROR, "authentication failed")
            return None
        try:
            identity = await self.identities.identify(hello.token)
        except DatabaseError as exc:
            logger.error("event=auth_error remote=%s error=%r", remote, str(exc))
            self._auth_failed("database", remote)
            await websocket.close(CloseCode.TRY_AGAIN_LATER, "database unavailable")
            return None
        if identity is None:
            self._auth_failed("invalid", remote)
            await websocket.close(CloseCode.INTERNAL_ERROR, "authentication failed")
            return None
        return identity, hello

    def _auth_failed(self, reason: str, remote: str) -> None:
        self.metrics.auth_failures[reason] += 1
        logger.info("event=auth_failure reason=%s remote=%s", reason, remote)

    # Lifecycle.

    async def serve(self, stop: asyncio.Future[None]) -> None:
        """Serve until ``stop`` is done, then drain and return."""
        # Browsers send Origin: only the site's own are accepted. Other clients
        # (python -m websockets) send none, and have no cookies to abuse.
        origins = [*(Origin(origin) for origin in settings.CSRF_TRUSTED_ORIGINS), None]
        async with (
            # Closes after the public port: scrapes go on while draining.
            serve_metrics(self.render_metrics, self.config.host, self.config.metrics_port),
            serve(
                self.handler,
                self.config.host,
                self.config.port,
                process_request=self.process_request,
                origins=origins,
                # Messages are small JSON documents: per-connection compression
                # contexts would cost far more memory than they save bandwidth.
                compression=None,
                # write_limit is left alone: only send() waits on it, and events
                # are written straight to the transport (.frames), which doesn't;
                # slow_client_buffer bounds that.
                max_size=MAX_MESSAGE_SIZE,
                max_queue=MAX_QUEUE,
                # One task pings every connection (self.keepalive), rather
                # than one task per connection.
                ping_interval=None,
                close_timeout=self.config.close_timeout,
                create_connection=Connection,
            ) as server,
        ):
            log = asyncio.create_task(self.log.run())
            positions = asyncio.create_task(
                self.fanout.send_positions(self.log, self.config.position_seconds)
            )
            keepalive = asyncio.create_task(self.keepalive.run())
            logger.info(
                "event=listening host=%s port=%d metrics_port=%d",
                self.config.host,
                self.config.port,
                self.config.metrics_port,
            )
            tasks = (log, positions, keepalive)
            await asyncio.wait([stop, *tasks], return_when=asyncio.FIRST_COMPLETED)
            await self.drain(server)
            for task in tasks:
                if task.done():
                    # They loop forever: ending is a bug. Exit so that the
                    # orchestrator restarts a clean process.
                    raise RuntimeError(f"{task.get_coro()} stopped") from task.exception()
                task.cancel()

    async def drain(self, server: Server) -> None:
        """Stop taking clients and close every connection with 1001.

        Closes are spread over ``drain_seconds`` so that clients, which come
        back through the proxy to the other replicas, arrive gradually. Each
        resuming client is told its position just before its close frame.
        """
        self.draining = True
        server.close(close_connections=False)  # stop listening; handshakes get 503
        connections = [c for c in server.connections if c.state is State.OPEN]
        logger.info(
            "event=draining connections=%d over=%.1fs", len(connections), self.config.drain_seconds
        )
        # Up to 20 batches a second; no pause after the last one.
        batches = max(1, min(len(connections), math.ceil(self.config.drain_seconds * 20)))
        size = max(1, math.ceil(len(connections) / batches))
        pause = self.config.drain_seconds / max(1, batches - 1)
        for start in range(0, len(connections), size):
            if start:
                await asyncio.sleep(pause)
            batch = connections[start : start + size]
            if self.log.history is not None:
                self.fanout.tell_position(self.log.history, batch)
            for connection in batch:
                self.fanout.close(connection, CloseCode.GOING_AWAY, "server shutting down")
        try:
            async with asyncio.timeout(self.config.close_timeout + 1):
                await server.wait_closed()
        except TimeoutError:
            logger.warning("event=drain_incomplete connections=%d", len(server.connections))
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
