"""What one write to a client costs on this machine: the floor under the fan-out's figures.

A broadcaster's CPU per delivery is mostly the kernel's work for each
``send()`` (the profiles say so), and what that costs depends on the
machine far more than on the server: a loopback write on a virtual machine
can cost several times what it does on bare metal. So each run measures it
bare: a process on the server's CPU writes ``WRITE_BYTES`` to each of N
loopback TCP connections per round, a round every ``INTERVAL`` seconds as
the broadcaster's default write interval spaces them, and a reader process
on the other CPUs drains them with ``epoll`` as the load generator does.
No framing, no Python beyond the loop: what a server writing with one system
call per client can't go below. ``python -m bench.floor N`` prints it as JSON.
"""

from __future__ import annotations

import json
import os
import select
import socket
import subprocess
import sys
import time
import traceback
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .stack import Cpus

#: About two of the bench's events framed: a paced write carries 2 to 3.
WRITE_BYTES = 512
#: The broadcaster's default ``BROADCASTER_WRITE_INTERVAL``.
INTERVAL = 0.05
ROUNDS = 40
#: Seconds the whole measurement may last, whatever the machine does.
DEADLINE = 60.0


def measure(connections: int, cpus: Cpus) -> dict[str, Any]:
    """Run the measurement in a fresh process (so that nothing else's CPU is in it),
    the writer on the server's CPU and its reader on the others."""
    from .stack import cpu_list

    reader = cpu_list(cpus.others) if cpus.others else "-"
    command = [sys.executable, "-m", "bench.floor", str(connections), str(ROUNDS), reader]
    with cpus.pinned(cpus.server):  # as the servers are started
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=DEADLINE + 30, check=False
        )
    if done.returncode != 0:
        raise RuntimeError(f"bench.floor: {done.stderr.strip()[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def _pairs(count: int) -> tuple[list[socket.socket], list[socket.socket]]:
    """``count`` loopback TCP connections: (the writer's ends, the reader's ends)."""
    with socket.create_server(("127.0.0.1", 0), backlog=1024) as server:
        writers: list[socket.socket] = []
        readers: list[socket.socket] = []
        while len(writers) < count:
            batch = [
                socket.create_connection(server.getsockname())
                for _ in range(min(512, count - len(writers)))
            ]
            readers.extend(batch)
            writers.extend(server.accept()[0] for _ in batch)
    for end in writers:
        end.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # as asyncio sets it
        end.setblocking(False)
    return writers, readers


def _read(ends: list[socket.socket], expected: int, deadline: float) -> None:
    """Drain ``ends`` until ``expected`` bytes came (or the deadline); report CPU on stdout."""
    poller = select.epoll()
    by_fd = {}
    for end in ends:
        end.setblocking(False)
        poller.register(end.fileno(), select.EPOLLIN)
        by_fd[end.fileno()] = end
    received, started = 0, time.process_time()
    while received < expected and by_fd and time.monotonic() < deadline:
        for fd, _ in poller.poll(1.0):
            try:
                data = by_fd[fd].recv(65536)
            except BlockingIOError:
                continue
            if not data:  # the writer is gone: nothing more will come
                poller.unregister(fd)
                del by_fd[fd]
            received += len(data)
    print(json.dumps({"received": received, "cpu": time.process_time() - started}), flush=True)


def run(connections: int, rounds: int, reader_cpus: set[int] | None) -> dict[str, Any]:
    """Write from this process's CPUs, read from ``reader_cpus`` (``None``: the same)."""
    writers, readers = _pairs(connections)
    expected = connections * rounds * WRITE_BYTES
    deadline = time.monotonic() + DEADLINE
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:  # the reader
        try:
            os.close(read_end)
            for end in writers:
                end.close()
            if reader_cpus:
                os.sched_setaffinity(0, reader_cpus)
            sys.stdout = os.fdopen(write_end, "w")
            _read(readers, expected, deadline)
        except BaseException:
            traceback.print_exc()  # the parent then reports nothing received
        finally:
            os._exit(0)
    os.close(write_end)
    for end in readers:
        end.close()
    data = b"x" * WRITE_BYTES
    writes = short = 0
    started = time.process_time()
    begun = time.monotonic()
    for index in range(rounds):
        # A round every INTERVAL at most, as the broadcaster spaces its writes.
        wait = begun + index * INTERVAL - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        for end in writers:
            try:
                sent = end.send(data)
            except BlockingIOError:
                sent = 0
            writes += 1
            short += sent < len(data)
        if time.monotonic() > deadline:
            break
    cpu = time.process_time() - started
    with os.fdopen(read_end) as pipe:
        reader = json.loads(pipe.read() or '{"received": 0, "cpu": 0}')
    os.waitpid(child, 0)
    return {
        "connections": connections,
        "write_bytes": WRITE_BYTES,
        "interval": INTERVAL,
        "writes": writes,
        # Writes the kernel didn't take whole: the reader fell behind (then
        # what a write costs is not what was measured).
        "short_writes": short,
        "cpu_us_per_write": cpu * 1e6 / writes if writes else None,
        "reader_cpu_us_per_write": reader["cpu"] * 1e6 / writes if writes else None,
        "received_bytes": reader["received"],
    }


def _cpus(text: str) -> set[int] | None:
    return None if text == "-" else {int(cpu) for cpu in text.split(",")}


def main(argv: list[str]) -> None:
    """``N [ROUNDS [READER_CPUS]]``: N connections, ROUNDS rounds, the reader on
    READER_CPUS (``0,2``; ``-`` or none: this process's)."""
    connections = int(argv[0])
    rounds = int(argv[1]) if len(argv) > 1 else ROUNDS
    reader = _cpus(argv[2]) if len(argv) > 2 else None
    print(json.dumps(run(connections, rounds, reader)))


if __name__ == "__main__":
    main(sys.argv[1:])
