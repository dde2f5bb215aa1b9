"""The shared counter: forked processes add to one value, and a dead one can't block it."""

from __future__ import annotations

import fcntl
import multiprocessing
import os
import signal
import threading

from live_notifications.counters import LocalCounter, SharedCounter

fork = multiprocessing.get_context("fork")
PROCESSES, THREADS, ADDS = 4, 3, 2000


def add_many(counter: SharedCounter | LocalCounter) -> None:
    def run() -> None:
        for _ in range(ADDS):
            counter.add(1)

    threads = [threading.Thread(target=run) for _ in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def test_forked_processes_add_to_one_value() -> None:
    counter = SharedCounter()
    counter.add(5)  # before the fork: the children see it
    children = [fork.Process(target=add_many, args=(counter,)) for _ in range(PROCESSES)]
    for child in children:
        child.start()
    add_many(counter)  # the parent's threads at the same time
    for child in children:
        child.join(timeout=60)
        assert child.exitcode == 0
    assert counter.value() == 5 + (PROCESSES + 1) * THREADS * ADDS


def test_a_local_counter_is_not_shared() -> None:
    counter = LocalCounter()
    child = fork.Process(target=add_many, args=(counter,))
    child.start()
    child.join(timeout=60)
    assert child.exitcode == 0
    assert counter.value() == 0


def test_a_process_killed_while_holding_the_lock_does_not_block_the_others() -> None:
    counter = SharedCounter()
    locked = fork.Event()

    def hold_the_lock() -> None:
        # Where add() would be when gunicorn SIGKILLs a stuck worker.
        fcntl.lockf(counter._fd, fcntl.LOCK_EX)
        locked.set()
        threading.Event().wait()

    child = fork.Process(target=hold_the_lock)
    child.start()
    assert locked.wait(timeout=30)
    assert child.pid is not None
    os.kill(child.pid, signal.SIGKILL)
    child.join(timeout=30)

    added = threading.Thread(target=counter.add, args=(1,), daemon=True)
    added.start()
    added.join(timeout=10)
    assert not added.is_alive(), "add() is blocked by the dead process's lock"
    assert counter.value() == 1
