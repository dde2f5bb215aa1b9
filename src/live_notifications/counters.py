"""Counters for one process, or for a process and every process it forks afterwards."""

from __future__ import annotations

import fcntl
import mmap
import os
import struct
import threading
from typing import Protocol

# One unsigned 64-bit integer, in the machine's byte order.
_FORMAT = struct.Struct("=Q")


class Counter(Protocol):
    def add(self, count: int) -> None: ...

    def value(self) -> int: ...


class LocalCounter:
    """A count kept by this process alone; safe between its threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._value = 0

    def add(self, count: int) -> None:
        with self._lock:
            self._value += count

    def value(self) -> int:
        return self._value


class SharedCounter:
    """A count in shared memory: processes forked after its creation add to the one value.

    Linux only (``memfd_create``). The memory is anonymous, so no writable
    filesystem is needed. Between processes, updates hold a POSIX record
    lock on the memory's file, which the kernel releases when its holder
    dies: gunicorn SIGKILLs a stuck worker, and a semaphore taken at that
    moment would block every other worker for good. Record locks don't
    exclude the threads of one process, so a thread lock does that too.
    """

    def __init__(self, name: str = "counter") -> None:
        self._fd = os.memfd_create(name)  # close-on-exec; inherited by fork
        os.ftruncate(self._fd, _FORMAT.size)
        self._memory = mmap.mmap(self._fd, _FORMAT.size)  # MAP_SHARED: one copy for all
        self._lock = threading.Lock()
        # A fork while another thread holds the lock would leave the child's copy
        # taken forever (the master forks while its metrics thread reads).
        os.register_at_fork(after_in_child=self._new_thread_lock)

    def _new_thread_lock(self) -> None:
        self._lock = threading.Lock()

    def add(self, count: int) -> None:
        with self._lock:
            fcntl.lockf(self._fd, fcntl.LOCK_EX)
            try:
                (value,) = _FORMAT.unpack_from(self._memory)
                _FORMAT.pack_into(self._memory, 0, value + count)
            finally:
                fcntl.lockf(self._fd, fcntl.LOCK_UN)

    def value(self) -> int:
        with self._lock:
            fcntl.lockf(self._fd, fcntl.LOCK_SH)
            try:
                return int(_FORMAT.unpack_from(self._memory)[0])
            finally:
                fcntl.lockf(self._fd, fcntl.LOCK_UN)
