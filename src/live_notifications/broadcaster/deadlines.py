"""Timeouts of one length for many connections, kept by one timer.

A timer per connection (``loop.call_later``) is a handle and a heap entry
made and cancelled for each of them, twice in a handshake (the opening, then
the token): in a reconnect storm, a few per cent of the server's CPU. All
the deadlines of one kind are the same delay from when they are set, so the
order they are set in is the order they fall due: an insertion-ordered dict
holds them, and one timer, set for the oldest, expires what is due.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)


class Deadlines(Generic[K]):
    """Call ``expired(key)`` ``delay`` seconds after :meth:`add`, unless discarded first.

    Adding and discarding cost a dict operation; the one timer fires about
    once per ``delay`` while keys come and go, and once more when some fall due.
    A key is removed before ``expired`` is called with it. Only the event
    loop uses it.
    """

    def __init__(self, delay: float, expired: Callable[[K], None]) -> None:
        self.delay = delay
        self.expired = expired
        #: Each key's deadline on the loop's clock, the earliest first.
        self._due: dict[K, float] = {}
        self._timer: asyncio.TimerHandle | None = None

    def __len__(self) -> int:
        return len(self._due)

    def __contains__(self, key: object) -> bool:
        return key in self._due

    def add(self, key: K) -> None:
        loop = asyncio.get_running_loop()
        self._due.pop(key, None)  # set again: it goes last, with the latest deadline
        self._due[key] = due = loop.time() + self.delay
        if self._timer is None:
            self._timer = loop.call_at(due, self._expire)

    def discard(self, key: K) -> None:
        self._due.pop(key, None)

    def _expire(self) -> None:
        self._timer = None
        loop = asyncio.get_running_loop()
        now = loop.time()
        try:
            while self._due:
                key, due = next(iter(self._due.items()))
                if due > now:
                    break
                del self._due[key]
                self.expired(key)
        finally:  # even if a callback raised: the others still expire
            if self._due and self._timer is None:
                self._timer = loop.call_at(next(iter(self._due.values())), self._expire)
