"""Who is connected, what each may see as access changes, and every write to them."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable, Collection, Iterable

from django.db import DatabaseError
from websockets.frames import CloseCode
from websockets.protocol import State

from live_notifications.shared.eventlog import Position
from live_notifications.shared.events import REVOKED, Audience

from . import frames
from .auth import Access, Identity, UserKey
from .background import Background
from .connection import Closed, Connection
from .history import Entry, History
from .log import EventLogReader
from .metrics import Metrics
from .registry import Registry
from .resume import position

logger = logging.getLogger(__name__)

#: Bytes of consecutive events written together as one run: a client may be
#: sent a run (or one larger event) past ``slow_client_buffer`` before it is
#: found slow and cut.
RUN_BYTES = 64 * 1024


@dataclasses.dataclass(slots=True)
class Client:
    """A connection, whose it is, what it may see, how it speaks."""

    identity: Identity
    #: Whether it opened with the JSON form, and so gets positions.
    resuming: bool


class Fanout:
    """Sends each event to the registered connections allowed to see it.

    Writes of live events are synchronous (:func:`.frames.write`) and don't
    wait for slow clients; a client that falls ``slow_client_buffer`` bytes
    behind is disconnected instead. Access changes in the log are applied to
    the connections of the users concerned before any later event. Only the
    event loop uses it.

    With a ``write_interval`` (seconds), events read less than that after
    the last write wait until it has passed, and go with those read
    meanwhile: under load, fewer writes, each event at most that much later.
    Waiting events are written first by whatever comes after them for the registered
    connections: an access change (and the closes it makes), a position
    (and so a drain's 1001), a registration. A connection closing
    meanwhile gets none of them: it is leaving.
    """

    def __init__(
        self,
        *,
        log: EventLogReader,
        metrics: Metrics,
        slow_client_buffer: int,
        access_of: Callable[[Collection[UserKey]], dict[UserKey, Access]],
        write_interval: float = 0.0,
        on_access_change: Callable[[Collection[UserKey]], None] = lambda users: None,
    ) -> None:
        self.log = log
        self.metrics = metrics
        self.slow_client_buffer = slow_client_buffer
        self.access_of = access_of
        self.write_interval = write_interval
        #: Told of every access change when it is read, before any later entry.
        self.on_access_change = on_access_change
        #: Connections that receive live events: what each may see.
        self.registry: Registry[Connection] = Registry()
        #: Every connection followed, registered or catching up, and by user.
        self.clients: dict[Connection, Client] = {}
        #: (Lists: a user has a connection or a few; an empty set is 216 bytes.)
        self.by_user: dict[UserKey, list[Connection]] = {}
        self._background = Background()
        #: Events read and not written yet, as ``(audience, frame)``, and
        #: their places' times in the log (milliseconds).
        self._run: list[tuple[Audience, bytes]] = []
        self._run_times: list[int] = []
        self._run_size = 0
        self._flush_timer: asyncio.TimerHandle | None = None
        #: When events were last written (the event loop's clock).
        self._last_write = float("-inf")

    def __len__(self) -> int:
        return len(self.registry)

    async def follow(
        self, connection: Connection, identity: Identity, at: Position, *, resuming: bool
    ) -> bool:
        """Send ``connection`` what came after ``at`` that it may see, then register it.

        Access changes met on the way are applied: a revoked user is closed,
        one whose permissions changed is recomputed before the next event.
        Returns whether it is registered. The last check that nothing is left
        to send and the registration happen with no ``await`` between them,
        so no event falls into the gap, and none is sent twice (events
        waiting for the ``write_interval`` are written to the others first).
        """
        if connection.state is not State.OPEN:  # closed meanwhile: connection_closed forgot it
            return False
        client = self._track(connection, identity, resuming)
        while True:
            history = self.log.history
            assert history is not None
            if not history.honours(at):  # overtaken while sending, or a new history
                self._close(connection, CloseCode.TRY_AGAIN_LATER, "history moved, resume again")
                return False
            missed = list(history.after(at))
            if not missed:
                break
            for entry in missed:
                at = entry.position
                if connection not in self.clients:  # revoked meanwhile
                    return False
                change = entry.access
                if change is not None and client.identity.user_id in change.users:
                    if not await self._apply(connection, client, change.access):
                        return False
                elif entry.audience is not None and client.identity.access.receives(
                    client.identity.user_id, entry.audience
                ):
                    await connection.send(entry.message)
                    self.metrics.events_replayed += 1
        if connection not in self.clients or connection.state is not State.OPEN:
            return False
        self._register(connection, client)
        return True

    def register_now(
        self,
        connection: Connection,
        identity: Identity,
        at: Position,
        *,
        resuming: bool,
        first: bytes | None = None,
    ) -> bool:
        """:meth:`follow` with nothing to send: register now, if nothing came after ``at``.

        ``first``, a message (the welcome), is sent before. Returns whether
        it is registered; if not, nothing was done (call :meth:`follow`).
        Most connections come here: no event since their token was read.
        """
        history = self.log.history
        assert history is not None
        if connection.state is not State.OPEN or history.head != at:
            return False
        if first is not None:
            connection.transport.write(frames.text_frame(first))  # a fresh buffer: no wait
        self._register(connection, self._track(connection, identity, resuming))
        return True

    def _track(self, connection: Connection, identity: Identity, resuming: bool) -> Client:
        """Know ``connection`` as ``identity``'s, not registered yet (or no longer)."""
        client = Client(identity, resuming)
        self.clients[connection] = client
        mine = self.by_user.setdefault(identity.user_id, [])
        if connection not in mine:  # followed again after a recomputation
            mine.append(connection)
        return client

    def _register(self, connection: Connection, client: Client) -> None:
        """Send ``connection`` live events from now on."""
        self.flush()  # what waits to be written, it caught up through: for the others
        self.registry.add(connection, client.identity.user_id, client.identity.access)

    def forget(self, connection: Connection) -> None:
        """Send nothing more to ``connection``."""
        self.registry.remove(connection)
        client = self.clients.pop(connection, None)
        if client is not None:
            users = self.by_user[client.identity.user_id]
            users.remove(connection)
            if not users:
                del self.by_user[client.identity.user_id]

    def on_entries(self, entries: list[Entry]) -> None:
        """Send new events to every connection allowed to see them.

        The log's bytes are forwarded unchanged, framed once for all
        recipients. Consecutive events are written as a run: each connection
        gets what it may see of them in one write. A run ends at an access
        change, which applies between the events before and after it, after
        ``RUN_BYTES``, and with these entries, or once ``write_interval``
        has passed since the last write.
        """
        for entry in entries:
            if entry.access is not None:
                self.on_access_change(entry.access.users)
                self.flush()
                self._on_access(entry)
            elif entry.audience is not None:
                frame = frames.text_frame(entry.message)
                self._run.append((entry.audience, frame))
                self._run_times.append(entry.position.ms)
                self._run_size += len(frame)
                if self._run_size >= RUN_BYTES:
                    self.flush()
        if not self._run or self._flush_timer is not None:
            return
        loop = asyncio.get_running_loop()
        wait = self._last_write + self.write_interval - loop.time()
        if wait <= 0:
            self.flush()
        else:
            self._flush_timer = loop.call_later(wait, self.flush)

    @property
    def waiting(self) -> int:
        """Events read and not written yet."""
        return len(self._run)

    def flush(self) -> None:
        """Write the events read and not written yet, now."""
        if self._flush_timer is not None:
            self._flush_timer.cancel()
            self._flush_timer = None
        if not self._run:
            return
        run, self._run, self._run_size = self._run, [], 0
        times, self._run_times = self._run_times, []
        self._last_write = asyncio.get_running_loop().time()
        self._send_run(run)
        # Written to every recipient now: how long after the relay placed them.
        written = time.time()
        for ms in times:
            self.metrics.event_delays.observe(written - ms / 1000)

    def _send_run(self, run: list[tuple[Audience, bytes]]) -> None:
        """Write a run of ``(audience, frame)`` to whoever receives any of them."""
        audiences = [audience for audience, _ in run]
        if all(audience == audiences[0] for audience in audiences):
            # Who receives one receives all: the same bytes for all.
            data = b"".join(frame for _, frame in run)
            self._write(self.registry.recipients(audiences[0]), data, len(run))
            return
        # What is due to a connection depends on its access, and on the
        # events addressed to its user: the frames are joined once for each
        # set of events due.
        for indexes, connections in self.registry.due(audiences).items():
            data = b"".join(run[i][1] for i in indexes)
            for some in connections:
                self._write(some, data, len(indexes))

    def _write(self, connections: Iterable[Connection], data: bytes, messages: int) -> None:
        written, slow = frames.write(connections, data, limit=self.slow_client_buffer)
        self.metrics.messages_sent += written * messages
        self.metrics.writes += written
        self._cut(slow)

    def _on_access(self, entry: Entry) -> None:
        """Apply an access change to the connections of its users, now."""
        assert entry.access is not None
        concerned = [c for user in entry.access.users for c in self.by_user.get(user, ())]
        # Those still catching up meet this entry on their way (it is in the
        # history already): after the events before it, which they may see.
        registered = [c for c in concerned if c in self.registry]
        if entry.access.access == REVOKED:
            for connection in registered:
                self._revoke(connection)
            return
        # Registered ones stop receiving until recomputed, then catch up from here.
        for connection in registered:
            self.registry.remove(connection)
        if registered:
            self._background.spawn(self._recompute(registered, entry.position))

    async def _recompute(self, connections: list[Connection], at: Position) -> None:
        """Recompute what these connections may see, all in one batch, and resume them."""
        users = {self.clients[c].identity.user_id for c in connections if c in self.clients}
        try:
            access = await self._access(users)
        except DatabaseError:
            for connection in connections:
                self._close(connection, CloseCode.TRY_AGAIN_LATER, "database unavailable")
            return
        for connection in connections:
            client = self.clients.get(connection)
            if client is None:
                continue
            if client.identity.user_id not in access:
                self._revoke(connection)
                continue
            identity = dataclasses.replace(client.identity, access=access[client.identity.user_id])
            self._background.spawn(
                self._follow_again(connection, identity, at, resuming=client.resuming)
            )

    async def _follow_again(
        self, connection: Connection, identity: Identity, at: Position, *, resuming: bool
    ) -> None:
        with contextlib.suppress(Closed):
            await self.follow(connection, identity, at, resuming=resuming)

    async def _apply(self, connection: Connection, client: Client, access: str) -> bool:
        """Apply an access change met while catching up; whether the client stays."""
        user = client.identity.user_id
        if access != REVOKED:
            try:
                recomputed = await self._access({user})
            except DatabaseError:
                self._close(connection, CloseCode.TRY_AGAIN_LATER, "database unavailable")
                return False
        if access == REVOKED or user not in recomputed:
            self.metrics.access_revoked += 1
            self._close(connection, CloseCode.POLICY_VIOLATION, "access revoked")
            return False
        client.identity = dataclasses.replace(client.identity, access=recomputed[user])
        return True

    async def _access(self, users: Collection[UserKey]) -> dict[UserKey, Access]:
        self.metrics.access_recomputes += 1
        self.metrics.access_users_recomputed += len(users)
        return await asyncio.to_thread(self.access_of, users)

    def _revoke(self, connection: Connection) -> None:
        self.metrics.access_revoked += 1
        self._close(connection, CloseCode.POLICY_VIOLATION, "access revoked")

    def _close(self, connection: Connection, code: CloseCode, reason: str) -> None:
        self.forget(connection)
        connection.close(code, reason)

    def tell_position(self, history: History, connections: Iterable[Connection]) -> None:
        """Send the log's position to those of ``connections`` that resume."""
        self.flush()  # the events before it first
        resuming = [c for c in connections if c in self.registry and self.clients[c].resuming]
        frame = frames.text_frame(position(history.head_id).encode())
        written, slow = frames.write(resuming, frame, limit=self.slow_client_buffer)
        self.metrics.positions_sent += written
        self._cut(slow)

    async def send_positions(self, log: EventLogReader, seconds: float) -> None:
        """Every ``seconds``, tell resuming clients the log's position, if it moved."""
        told = None
        while True:
            await asyncio.sleep(seconds)
            history = log.history
            if history is not None and history.head_id != told:
                told = history.head_id
                self.tell_position(history, list(self.registry))

    def _cut(self, slow: list[Connection]) -> None:
        """Disconnect clients that don't keep up.

        Writes have no backpressure: without this, a client that stopped
        reading would buffer every event in this process's memory. A client
        cut here is forgotten at once, so that it gets no later event (nor a
        position past one it missed).
        """
        for connection in slow:
            self.cut(connection)

    def cut(self, connection: Connection) -> None:
        """Disconnect a client whose unsent data passed ``slow_client_buffer``."""
        self.metrics.slow_clients_dropped += 1
        logger.warning("event=slow_client remote=%s", connection.address)
        self._close(connection, CloseCode.POLICY_VIOLATION, "too slow")
