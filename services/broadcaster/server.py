"""The WebSocket server: authenticate, resume, register, fan out, drain on SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import signal
from collections.abc import Coroutine, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from django.conf import settings
from django.db import DatabaseError
from websockets.asyncio.server import Server, ServerConnection, broadcast, serve
from websockets.exceptions import ConnectionClosed
from websockets.frames import CloseCode
from websockets.http11 import Request, Response
from websockets.protocol import State
from websockets.typing import Origin

from shared import prometheus
from shared.eventlog import Position, event_id

from .auth import Identity, identify
from .config import Config
from .history import Entry
from .log import EventLogReader
from .metrics import Metrics
from .registry import Registry
from .resume import Hello, parse_hello, position, welcome

logger = logging.getLogger(__name__)

#: Largest first message read: a django-sesame token is well under 200 bytes.
#: Clients send nothing else, so this is the limit for the whole connection.
MAX_MESSAGE_SIZE = 1024
#: Incoming messages buffered before reading pauses; clients shouldn't send any.
MAX_QUEUE = 4
#: Seconds a resuming client whose last id is ahead of this replica (it came
#: from a replica that read the log a moment sooner) waits for it to catch up.
AHEAD_WAIT = 5.0


class Broadcaster:
    """Pushes each event on the bus to the connected users allowed to see it."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.metrics = Metrics()
        self.registry: Registry[ServerConnection] = Registry()
        #: Connections that opened with the JSON form: they get control messages.
        self.resuming: set[ServerConnection] = set()
        self.log = EventLogReader(
            config.redis_url,
            self.on_entries,
            metrics=self.metrics,
            retention=config.retention,
            check_interval=config.redis_check_interval,
        )
        self.pending = 0
        self.draining = False
        self._background: set[asyncio.Task[None]] = set()

    @property
    def ready(self) -> bool:
        """Whether to take new clients: reading the event log and not draining."""
        return self.log.reading and not self.draining

    # HTTP, before the WebSocket handshake.

    def process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        """Answer the health checks and metrics; refuse upgrades when saturated."""
        path = request.path.partition("?")[0]
        if path == "/healthz":
            return connection.respond(200, "ok\n")
        if path == "/readyz":
            if self.ready:
                return connection.respond(200, "ready\n")
            return connection.respond(503, "draining\n" if self.draining else "log unavailable\n")
        if path == "/metrics":
            response = connection.respond(
                200,
                self.metrics.render(
                    connections=len(self.registry), pending=self.pending, ready=self.ready
                ),
            )
            response.headers["Content-Type"] = prometheus.CONTENT_TYPE
            return response
        if self.draining:
            self.metrics.connections_refused += 1
            return connection.respond(503, "shutting down\n")
        if self.log.history is None:
            self.metrics.connections_refused += 1
            return connection.respond(503, "event log not loaded yet\n")
        if self.pending >= self.config.max_pending:
            self.metrics.connections_refused += 1
            logger.warning("event=refused reason=too_many_pending pending=%d", self.pending)
            return connection.respond(503, "too many unauthenticated connections\n")
        return None

    # WebSocket connections.

    async def handler(self, websocket: ServerConnection) -> None:
        """Authenticate the client, resume it if asked, keep it registered until it leaves."""
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
                if not await self.resume(websocket, identity, hello.last_id):
                    return
            else:
                self.registry.add(websocket, identity.content_types)
            self.metrics.connections_opened += 1
            logger.info(
                "event=connect user=%s remote=%s content_types=%s resuming=%s",
                identity.username,
                client_address(websocket),
                "all" if identity.content_types is None else len(identity.content_types),
                hello.resuming,
            )
            # Clients have nothing to say; reading keeps the connection
            # responsive to pings and notices when it closes.
            async for _ in websocket:
                pass
        except ConnectionClosed:
            pass
        finally:
            self.forget(websocket)
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
            identity = await asyncio.to_thread(identify, hello.token)
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

    async def resume(
        self, websocket: ServerConnection, identity: Identity, last_id: object
    ) -> bool:
        """Welcome a resuming client, send what it missed, then register it.

        Returns whether it is registered. Replays come from the history in
        memory. The last check that the client has caught up and its
        registration happen with no ``await`` between them, so no event can
        fall into the gap, and none is sent twice.
        """
        history = self.log.history
        assert history is not None  # process_request refuses connections before
        asked = None if last_id is None else history.position_of(last_id)
        if asked is not None and asked > history.head:
            # It came from a replica that read the log a moment sooner.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(AHEAD_WAIT):
                    await self.log.wait_for(asked)
            history = self.log.history
            assert history is not None
        recovered = asked is not None and history.honours(asked)
        if last_id is not None:
            self.metrics.resumes["recovered" if recovered else "not_recovered"] += 1
        at = asked if recovered and asked is not None else history.head
        await websocket.send(welcome(event_id(history.epoch, at), recovered=recovered))

        visible = identity.content_types
        while True:
            history = self.log.history
            assert history is not None
            if not history.honours(at):  # overtaken while sending, or a new history
                await websocket.close(CloseCode.TRY_AGAIN_LATER, "history moved, resume again")
                return False
            missed = [entry for entry in history.after(at)]
            if not missed:
                break
            for entry in missed:
                at = entry.position
                if _may_see(visible, entry):
                    await websocket.send(entry.message, text=True)
                    self.metrics.events_replayed += 1
        self.registry.add(websocket, visible)
        self.resuming.add(websocket)
        return True

    def forget(self, websocket: ServerConnection) -> None:
        """Stop sending anything to ``websocket``."""
        self.registry.remove(websocket)
        self.resuming.discard(websocket)

    def _auth_failed(self, reason: str, remote: str) -> None:
        self.metrics.auth_failures[reason] += 1
        logger.info("event=auth_failure reason=%s remote=%s", reason, remote)

    # Events.

    def on_entries(self, entries: list[Entry]) -> None:
        """Send new events to every connection allowed to see them.

        The log's bytes are forwarded unchanged: one encoding for all
        recipients. Writing is synchronous and doesn't wait for slow clients.
        """
        for entry in entries:
            assert entry.content_type_id is not None  # the log hands on events only
            recipients = self._keeping_up(self.registry.recipients(entry.content_type_id))
            self.metrics.messages_sent += len(recipients)
            broadcast(recipients, entry.message, text=True)

    def _keeping_up(self, connections: Iterable[ServerConnection]) -> list[ServerConnection]:
        """The open connections that keep up; those that don't are disconnected.

        broadcast() has no backpressure: without this, a client that stopped
        reading would buffer every event in this process's memory. A client
        cut here is forgotten at once, so that it gets no later event (nor a
        position past one it missed).
        """
        limit = self.config.slow_client_buffer
        keeping_up, slow = [], []
        for connection in connections:
            if connection.state is not State.OPEN:
                continue
            if connection.transport.get_write_buffer_size() > limit:
                slow.append(connection)
            else:
                keeping_up.append(connection)
        for connection in slow:
            self.forget(connection)
            self.metrics.slow_clients_dropped += 1
            logger.warning("event=slow_client remote=%s", client_address(connection))
            self._spawn(connection.close(CloseCode.POLICY_VIOLATION, "too slow"))
        return keeping_up

    async def send_positions(self) -> None:
        """Tell resuming clients where the log is, every ``position_seconds`` it moved."""
        sent: Position | None = None
        while True:
            await asyncio.sleep(self.config.position_seconds)
            history = self.log.history
            if history is None or history.head == sent:
                continue
            sent = history.head
            recipients = self._keeping_up(self.resuming)
            self.metrics.positions_sent += len(recipients)
            broadcast(recipients, position(history.head_id))

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # Lifecycle.

    async def serve(self, stop: asyncio.Future[None]) -> None:
        """Serve until ``stop`` is done, then drain and return."""
        # Browsers send Origin: only the site's own are accepted. Other clients
        # (python -m websockets) send none, and have no cookies to abuse.
        origins = [*(Origin(origin) for origin in settings.CSRF_TRUSTED_ORIGINS), None]
        async with serve(
            self.handler,
            self.config.host,
            self.config.port,
            process_request=self.process_request,
            origins=origins,
            # Messages are small JSON documents: per-connection compression
            # contexts would cost far more memory than they save bandwidth.
            compression=None,
            # write_limit is left alone: only send() waits on it, and events go
            # out through broadcast(), which doesn't; _keeping_up() bounds that.
            max_size=MAX_MESSAGE_SIZE,
            max_queue=MAX_QUEUE,
            ping_interval=self.config.ping_interval,
            ping_timeout=self.config.ping_interval,
            close_timeout=self.config.close_timeout,
        ) as server:
            log = asyncio.create_task(self.log.run())
            positions = asyncio.create_task(self.send_positions())
            logger.info("event=listening host=%s port=%d", self.config.host, self.config.port)
            await asyncio.wait([stop, log, positions], return_when=asyncio.FIRST_COMPLETED)
            await self.drain(server)
            for task in (log, positions):
                if task.done():
                    # Both loop forever: ending is a bug. Exit so that the
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
            history = self.log.history
            if history is not None:
                resuming = self._keeping_up(c for c in batch if c in self.resuming)
                self.metrics.positions_sent += len(resuming)
                broadcast(resuming, position(history.head_id))
            for connection in batch:
                self._spawn(connection.close(CloseCode.GOING_AWAY, "server shutting down"))
        try:
            async with asyncio.timeout(self.config.close_timeout + 1):
                await server.wait_closed()
        except TimeoutError:
            logger.warning("event=drain_incomplete connections=%d", len(server.connections))
        logger.info("event=drained")


def _may_see(content_types: frozenset[int] | None, entry: Entry) -> bool:
    if entry.content_type_id is None:
        return False
    return content_types is None or entry.content_type_id in content_types


def client_address(websocket: ServerConnection) -> str:
    """The client's address: X-Forwarded-For behind the proxy, else the peer's."""
    forwarded = websocket.request.headers.get("X-Forwarded-For") if websocket.request else None
    if forwarded:
        return forwarded.split(",")[0].strip()
    try:
        return str(websocket.remote_address[0])
    except (TypeError, IndexError):
        return "-"


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
