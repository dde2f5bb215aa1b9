"""Who is connected, what each may see, and every write to them but replays."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine, Iterable
from typing import Any

from websockets.asyncio.server import ServerConnection, broadcast
from websockets.frames import CloseCode
from websockets.protocol import State

from .history import Entry, History
from .log import EventLogReader
from .metrics import Metrics
from .registry import Registry
from .resume import position

logger = logging.getLogger(__name__)


class Fanout:
    """Sends each event to the registered connections allowed to see it.

    Writes are synchronous (``broadcast()``) and don't wait for slow
    clients; a client that falls ``slow_client_buffer`` bytes behind is
    disconnected instead. Only the event loop uses it.
    """

    def __init__(self, *, metrics: Metrics, slow_client_buffer: int) -> None:
        self.metrics = metrics
        self.slow_client_buffer = slow_client_buffer
        self.registry: Registry[ServerConnection] = Registry()
        #: Connections that opened with the JSON form: they get positions.
        self.resuming: set[ServerConnection] = set()
        self._background: set[asyncio.Task[None]] = set()

    def __len__(self) -> int:
        return len(self.registry)

    def add(
        self, websocket: ServerConnection, content_types: frozenset[int] | None, *, resuming: bool
    ) -> None:
        """Send ``websocket`` the events of ``content_types`` (``None``: all) from now on."""
        self.registry.add(websocket, content_types)
        if resuming:
            self.resuming.add(websocket)

    def forget(self, websocket: ServerConnection) -> None:
        """Send nothing more to ``websocket``."""
        self.registry.remove(websocket)
        self.resuming.discard(websocket)

    def on_entries(self, entries: list[Entry]) -> None:
        """Send new events to every connection allowed to see them.

        The log's bytes are forwarded unchanged: one encoding for all recipients.
        """
        for entry in entries:
            assert entry.content_type_id is not None  # the log hands on events only
            recipients = self._keeping_up(self.registry.recipients(entry.content_type_id))
            self.metrics.messages_sent += len(recipients)
            broadcast(recipients, entry.message, text=True)

    def tell_position(self, history: History, connections: Iterable[ServerConnection]) -> None:
        """Send the log's position to those of ``connections`` that resume."""
        recipients = self._keeping_up(c for c in connections if c in self.resuming)
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
                self.tell_position(history, list(self.resuming))

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
            self.forget(connection)
            self.metrics.slow_clients_dropped += 1
            logger.warning("event=slow_client remote=%s", client_address(connection))
            self.close(connection, CloseCode.POLICY_VIOLATION, "too slow")
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
