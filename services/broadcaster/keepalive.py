"""One keepalive task for every connection: pings, and closes the peers that don't answer.

websockets' own keepalive (``ping_interval`` in ``serve()``) runs a task per
connection, which costs its coroutine, a sleep and a timer on every idle
connection: about 1.5 KiB of RSS. :class:`Keepalive` gives the same service
with one task and a few bytes per connection.
"""

from __future__ import annotations

import asyncio
import logging
import math

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed
from websockets.frames import CloseCode
from websockets.protocol import State

from .background import Background
from .fanout import client_address

logger = logging.getLogger(__name__)

#: Slots visited per second: pings go out in small batches, not one burst.
SLOTS_PER_SECOND = 20


class Keepalive:
    """Pings each connection every ``interval`` seconds; closes those that don't answer.

    A connection whose previous ping has no pong when the next one is due
    is closed with 1011 "keepalive ping timeout", as websockets' keepalive
    would with ``ping_timeout`` equal to ``ping_interval``. Pings are spread
    over the interval: connections are dealt into slots by their hash (no
    index to keep), and the slots are visited in turn, one every ``interval / slots`` seconds. As
    with websockets, the first ping comes no sooner than ``interval`` after
    :meth:`add`: between one and two intervals.

    A ping still waiting to be written at the next visit (the client stopped
    reading) counts as unanswered. Only the event loop uses it; :meth:`run`
    must be running.
    """

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._slots: list[set[ServerConnection]] = [
            set() for _ in range(max(1, math.ceil(interval * SLOTS_PER_SECOND)))
        ]
        #: Connections pinged whose pong hasn't come yet.
        self._unanswered: set[ServerConnection] = set()
        #: Connections whose slot hasn't been visited since they were added:
        #: the first visit may come at once, and only the second pings.
        self._new: set[ServerConnection] = set()
        self._background = Background()

    def add(self, connection: ServerConnection) -> None:
        """Keep ``connection`` alive from now on."""
        self._slot(connection).add(connection)
        self._new.add(connection)

    def remove(self, connection: ServerConnection) -> None:
        """Stop pinging ``connection``; nothing happens if it isn't kept alive."""
        self._slot(connection).discard(connection)
        self._unanswered.discard(connection)
        self._new.discard(connection)

    def _slot(self, connection: ServerConnection) -> set[ServerConnection]:
        return self._slots[hash(connection) % len(self._slots)]

    async def run(self) -> None:
        """Visit the slots forever, one every ``interval / slots`` seconds."""
        loop = asyncio.get_running_loop()
        tick = self.interval / len(self._slots)
        due = loop.time()
        while True:
            for slot in self._slots:
                due += tick
                # On time, or late when the loop was busy; never early, so
                # that a pong has a whole interval to come.
                await asyncio.sleep(max(0.0, due - loop.time()))
                for connection in list(slot):
                    self._visit(connection)

    def _visit(self, connection: ServerConnection) -> None:
        if connection in self._new:
            self._new.discard(connection)
            return
        if connection.state is not State.OPEN:
            return  # closing: websockets finishes it
        if connection in self._unanswered:
            logger.info("event=ping_timeout remote=%s", client_address(connection))
            self.remove(connection)
            self._background.spawn(
                connection.close(CloseCode.INTERNAL_ERROR, "keepalive ping timeout")
            )
            return
        self._unanswered.add(connection)
        # A task, short-lived: ping() waits for the write buffer to drain,
        # which a client that stopped reading would make last forever.
        self._background.spawn(self._ping(connection))

    async def _ping(self, connection: ServerConnection) -> None:
        try:
            pong = await connection.ping()
        except ConnectionClosed:
            return
        # ensure_future: ping() returns a future, typed as an awaitable.
        asyncio.ensure_future(pong).add_done_callback(
            lambda _: self._unanswered.discard(connection)
        )
