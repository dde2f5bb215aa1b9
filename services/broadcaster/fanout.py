"""Who is connected, what each may see as access changes, and every write to them."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Callable, Collection, Coroutine, Iterable
from typing import Any

from django.db import DatabaseError
from websockets.asyncio.server import ServerConnection, broadcast
from websockets.exceptions import ConnectionClosed
from websockets.frames import CloseCode
from websockets.protocol import State

from shared.eventlog import Position
from shared.events import REVOKED

from .auth import ContentTypes, Identity
from .history import Entry, History
from .log import EventLogReader
from .metrics import Metrics
from .registry import Registry
from .resume import position

logger = logging.getLogger(__name__)


@dataclasses.dataclass(slots=True)
class Client:
    """A connection, whose it is, what it may see, how it speaks."""

    identity: Identity
    #: Whether it opened with the JSON form, and so gets positions.
    resuming: bool


class Fanout:
    """Sends each event to the registered connections allowed to see it.

    Writes of live events are synchronous (``broadcast()``) and don't wait
    for slow clients; a client that falls ``slow_client_buffer`` bytes behind
    is disconnected instead. Access changes in the log are applied to the
    connections of the users concerned before any later event. Only the
    event loop uses it.
    """

    def __init__(
        self,
        *,
        log: EventLogReader,
        metrics: Metrics,
        slow_client_buffer: int,
        access_of: Callable[[Collection[int]], dict[int, ContentTypes]],
    ) -> None:
        self.log = log
        self.metrics = metrics
        self.slow_client_buffer = slow_client_buffer
        self.access_of = access_of
        #: Connections that receive live events: what each may see.
        self.registry: Registry[ServerConnection] = Registry()
        #: Every connection followed, registered or catching up, and by user.
        self.clients: dict[ServerConnection, Client] = {}
        self.by_user: dict[int, set[ServerConnection]] = {}
        self._background: set[asyncio.Task[None]] = set()

    def __len__(self) -> int:
        return len(self.registry)

    async def follow(
        self, websocket: ServerConnection, identity: Identity, at: Position, *, resuming: bool
    ) -> bool:
        """Send ``websocket`` what came after ``at`` that it may see, then register it.

        Access changes met on the way are applied: a revoked user is closed,
        one whose permissions changed is recomputed before the next event.
        Returns whether it is registered. The last check that nothing is left
        to send and the registration happen with no ``await`` between them,
        so no event falls into the gap, and none is sent twice.
        """
        client = Client(identity, resuming)
        self.clients[websocket] = client
        self.by_user.setdefault(identity.user_id, set()).add(websocket)
        while True:
            history = self.log.history
            assert history is not None
            if not history.honours(at):  # overtaken while sending, or a new history
                await self._end(websocket, CloseCode.TRY_AGAIN_LATER, "history moved, resume again")
                return False
            missed = list(history.after(at))
            if not missed:
                break
            for entry in missed:
                at = entry.position
                if websocket not in self.clients:  # revoked meanwhile
                    return False
                change = entry.access
                if change is not None and client.identity.user_id in change.users:
                    if not await self._apply(websocket, client, change.access):
                        return False
                elif _may_see(client.identity.content_types, entry):
                    await websocket.send(entry.message, text=True)
                    self.metrics.events_replayed += 1
        if websocket not in self.clients or websocket.state is not State.OPEN:
            return False
        self.registry.add(websocket, client.identity.content_types)
        return True

    def forget(self, websocket: ServerConnection) -> None:
        """Send nothing more to ``websocket``."""
        self.registry.remove(websocket)
        client = self.clients.pop(websocket, None)
        if client is not None:
            users = self.by_user[client.identity.user_id]
            users.discard(websocket)
            if not users:
                del self.by_user[client.identity.user_id]

    def on_entries(self, entries: list[Entry]) -> None:
        """Send new events to every connection allowed to see them.

        The log's bytes are forwarded unchanged: one encoding for all recipients.
        """
        for entry in entries:
            if entry.access is not None:
                self._on_access(entry)
            elif entry.content_type_id is not None:
                recipients = self._keeping_up(self.registry.recipients(entry.content_type_id))
                self.metrics.messages_sent += len(recipients)
                broadcast(recipients, entry.message, text=True)

    def _on_access(self, entry: Entry) -> None:
        """Apply an access change to the connections of its users, now."""
        assert entry.access is not None
        concerned = [c for user in entry.access.users for c in self.by_user.get(user, ())]
        if entry.access.access == REVOKED:
            for websocket in concerned:
                self._revoke(websocket)
            return
        # Registered ones stop receiving until recomputed, then catch up from
        # here. Those still catching up meet this entry on their way.
        registered = [c for c in concerned if c in self.registry]
        for websocket in registered:
            self.registry.remove(websocket)
        if registered:
            self._spawn(self._recompute(registered, entry.position))

    async def _recompute(self, connections: list[ServerConnection], at: Position) -> None:
        """Recompute what these connections may see, all in one batch, and resume them."""
        users = {self.clients[c].identity.user_id for c in connections if c in self.clients}
        try:
            access = await self._access(users)
        except DatabaseError:
            for websocket in connections:
                self._close(websocket, CloseCode.TRY_AGAIN_LATER, "database unavailable")
            return
        for websocket in connections:
            client = self.clients.get(websocket)
            if client is None:
                continue
            if client.identity.user_id not in access:
                self._revoke(websocket)
                continue
            identity = dataclasses.replace(
                client.identity, content_types=access[client.identity.user_id]
            )
            self._spawn(self._follow_again(websocket, identity, at, resuming=client.resuming))

    async def _follow_again(
        self, websocket: ServerConnection, identity: Identity, at: Position, *, resuming: bool
    ) -> None:
        with contextlib.suppress(ConnectionClosed):
            await self.follow(websocket, identity, at, resuming=resuming)

    async def _apply(self, websocket: ServerConnection, client: Client, access: str) -> bool:
        """Apply an access change met while catching up; whether the client stays.

        Closes are awaited here, not left to a task: the caller may be the
        connection's handler, whose return would close with 1000 first.
        """
        user = client.identity.user_id
        if access != REVOKED:
            try:
                recomputed = await self._access({user})
            except DatabaseError:
                await self._end(websocket, CloseCode.TRY_AGAIN_LATER, "database unavailable")
                return False
        if access == REVOKED or user not in recomputed:
            self.metrics.access_revoked += 1
            await self._end(websocket, CloseCode.POLICY_VIOLATION, "access revoked")
            return False
        client.identity = dataclasses.replace(client.identity, content_types=recomputed[user])
        return True

    async def _access(self, users: Collection[int]) -> dict[int, ContentTypes]:
        self.metrics.access_recomputes += 1
        self.metrics.access_users_recomputed += len(users)
        return await asyncio.to_thread(self.access_of, users)

    def _revoke(self, websocket: ServerConnection) -> None:
        self.metrics.access_revoked += 1
        self._close(websocket, CloseCode.POLICY_VIOLATION, "access revoked")

    def _close(self, websocket: ServerConnection, code: CloseCode, reason: str) -> None:
        self.forget(websocket)
        self.close(websocket, code, reason)

    async def _end(self, websocket: ServerConnection, code: CloseCode, reason: str) -> None:
        self.forget(websocket)
        await websocket.close(code, reason)

    def tell_position(self, history: History, connections: Iterable[ServerConnection]) -> None:
        """Send the log's position to those of ``connections`` that resume."""
        recipients = self._keeping_up(
            c for c in connections if c in self.registry and self.clients[c].resuming
        )
        self.metrics.positions_sent += len(recipients)
        broadcast(recipients, position(history.head_id))

    async def send_positions(self, log: EventLogReader, seconds: float) -> None:
        """Every ``seconds``, tell resuming clients the log's position, if it moved."""
        told = None
        while True:
            await asyncio.sleep(seconds)
            history = log.history
            if history is not None and history.head_id != told:
                told = history.head_id
                self.tell_position(history, list(self.registry))

    def close(self, websocket: ServerConnection, code: CloseCode, reason: str) -> None:
        """Start closing ``websocket`` in the background."""
        self._spawn(websocket.close(code, reason))

    def _keeping_up(self, connections: Iterable[ServerConnection]) -> list[ServerConnection]:
        """The open connections that keep up; those that don't are disconnected.

        broadcast() has no backpressure: without this, a client that stopped
        reading would buffer every event in this process's memory. A client
        cut here is forgotten at once, so that it gets no later event (nor a
        position past one it missed).
        """
        keeping_up, slow = [], []
        for connection in connections:
            if connection.state is not State.OPEN:
                continue
            if connection.transport.get_write_buffer_size() > self.slow_client_buffer:
                slow.append(connection)
            else:
                keeping_up.append(connection)
        for connection in slow:
            self.metrics.slow_clients_dropped += 1
            logger.warning("event=slow_client remote=%s", client_address(connection))
            self._close(connection, CloseCode.POLICY_VIOLATION, "too slow")
        return keeping_up

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)


def client_address(websocket: ServerConnection) -> str:
    """The client's address: X-Forwarded-For behind the proxy, else the peer's."""
    forwarded = websocket.request.headers.get("X-Forwarded-For") if websocket.request else None
    if forwarded:
        return forwarded.split(",")[0].strip()
    try:
        return str(websocket.remote_address[0])
    except (TypeError, IndexError):
        return "-"


def _may_see(content_types: ContentTypes, entry: Entry) -> bool:
    if entry.content_type_id is None:
        return False
    return content_types is None or entry.content_type_id in content_types
