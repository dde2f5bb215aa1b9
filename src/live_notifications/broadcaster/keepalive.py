"""One keepalive task for every connection: pings, and closes the peers that don't answer.

websockets' own keepalive runs a task per connection, which costs its
coroutine, a sleep and a timer on every idle connection: about 1.5 KiB of
RSS. :class:`Keepalive` gives the same service with one task, and a flag on
each connection (:attr:`.Connection.pong_waiting`).
"""

from __future__ import annotations

import asyncio
import logging
import math

from websockets.frames import CloseCode
from websockets.protocol import State

from .connection import Connection

logger = logging.getLogger(__name__)

#: Slots visited per second: pings go out in small batches, not one burst.
SLOTS_PER_SECOND = 20


class Keepalive:
    """Pings each connection every ``interval`` seconds; closes those that don't answer.

    A connection whose previous ping has no pong when the next one is due
    is closed with 1011 "keepalive ping timeout", as websockets' keepalive
    would with ``ping_timeout`` equal to ``ping_interval``. Pings are spread
    over the interval: connections are dealt into slots by their hash (no
    index to keep), and the slots are visited in turn, one every
    ``interval / slots`` seconds. As with websockets, the first ping comes no
    sooner than ``interval`` after :meth:`add`: between one and two intervals.

    A client whose backlog passed the connection's bound gets no ping: it is
    cut as too slow instead (:meth:`.Connection.ping`). Only the
    event loop uses it; :meth:`run` must be running.
    """

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._slots: list[set[Connection]] = [
            set() for _ in range(max(1, math.ceil(interval * SLOTS_PER_SECOND)))
        ]
        #: Connections whose slot hasn't been visited since they were added:
        #: the first visit may come at once, and only the second pings.
        self._new: set[Connection] = set()

    def add(self, connection: Connection) -> None:
        """Keep ``connection`` alive from now on."""
        self._slot(connection).add(connection)
        self._new.add(connection)

    def remove(self, connection: Connection) -> None:
        """Stop pinging ``connection``; nothing happens if it isn't kept alive."""
        self._slot(connection).discard(connection)
        self._new.discard(connection)

    def _slot(self, connection: Connection) -> set[Connection]:
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

    def _visit(self, connection: Connection) -> None:
        connection.control_frames = 0  # a new interval's share (.connection)
        if connection in self._new:
            self._new.discard(connection)
            return
        if connection.state is not State.OPEN:
            return  # closing: its close_timeout finishes it
        if connection.pong_waiting:
            logger.info("event=ping_timeout remote=%s", connection.address)
            self.remove(connection)
            # As websockets does: a peer that doesn't answer is gone, so its
            # connection is dropped without waiting for a closing handshake.
            connection.fail(CloseCode.INTERNAL_ERROR, "keepalive ping timeout")
            return
        connection.ping()
