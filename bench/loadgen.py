"""The load generator: thousands of :class:`~.wsclient.Client` in one process.

Each generator is a process of its own, pinned to the CPUs the server
doesn't use, running one asyncio loop (uvloop when installed and wanted).
The driver talks to it over a pipe, one request and one answer at a time
(:class:`Generators`): open connections, count a window of events, report.
Clock readings are :func:`time.monotonic`, which is system-wide on Linux:
the driver compares them with its own commit times.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import importlib
import importlib.util
import multiprocessing
import os
import time
from array import array
from collections.abc import Sequence
from multiprocessing.connection import Connection
from typing import Any

from . import audiences
from .wsclient import ACCEPTED, FAILED, REFUSED, Client

#: Connections opened from one loopback source address: well under the
#: ephemeral port range (28,232 ports by default), so 50,000 clients can
#: connect to one server port.
CLIENTS_PER_SOURCE = 20_000


def source_address(index: int) -> str | None:
    """The source address of client ``index``: ``None`` (the kernel picks 127.0.0.1)
    for the first :data:`CLIENTS_PER_SOURCE`, then 127.0.0.2, 127.0.0.3…"""
    block = index // CLIENTS_PER_SOURCE
    return None if block == 0 else f"127.0.0.{1 + block}"


@dataclasses.dataclass(frozen=True, kw_only=True)
class ConnectOrder:
    """Open one connection per token, at most ``concurrency`` at a time in flight."""

    host: str
    port: int
    #: The first message of each client, and whether it may see the events.
    hellos: list[str]
    allowed: list[bool]
    #: Global index of each client: chooses its source address.
    indices: list[int]
    #: For the mixed-audience run (:mod:`.audiences`): each client's rank
    #: among the allowed users, and their number (0: not that run).
    ranks: list[int] = dataclasses.field(default_factory=list)
    mixed: int = 0
    concurrency: int
    #: Seconds for the whole phase: those still in flight then have failed.
    timeout: float


@dataclasses.dataclass(frozen=True, kw_only=True)
class ConnectReport:
    accepted: int
    refused: int
    failures: dict[str, int]
    #: Monotonic times: the first attempt, the last authentication.
    started: float
    last_authenticated: float
    #: Accepted connections on which the server agreed to permessage-deflate.
    compressed: int
    #: Accepted connections allowed to see the events: each should get every one.
    recipients: int


@dataclasses.dataclass(frozen=True, kw_only=True)
class Progress:
    received: int
    dropped: int
    #: Monotonic time of the last delivery counted (0 if none).
    last_receipt: float


@dataclasses.dataclass(frozen=True, kw_only=True)
class WindowReport:
    """What a window's clients received, by this generator."""

    expected: int
    received: int
    #: Events that allowed clients expected and didn't get.
    missing: int
    duplicates: int
    #: Events received by clients not allowed to see them: a leak.
    unexpected: int
    late: int
    other: int
    dropped: dict[int, int]
    #: Seconds from commit to receipt, one per delivery, sorted (array('d') bytes).
    latencies: bytes
    first_receipt: float
    last_receipt: float
    #: Median latency of the deliveries of the first and of the last tenth of
    #: the events: the second much larger means a growing backlog.
    first_tenth_p50: float | None
    last_tenth_p50: float | None


class Generator:
    """The clients of one process and their counters (see :class:`~.wsclient.Counters`)."""

    def __init__(self) -> None:
        self.clients: list[Client] = []
        self.first = 0
        self.end = 0
        self.seqs: array[int] = array("q")
        self.times: array[float] = array("d")
        self.late = 0
        self.other = 0
        self.unexpected = 0
        self.mixed = 0
        self.drops: collections.Counter[int] = collections.Counter()
        self._failures: collections.Counter[str] = collections.Counter()
        self._accepted = 0
        self._refused = 0
        self._unresolved = 0
        self._slots: asyncio.Semaphore | None = None
        self._all_resolved: asyncio.Event | None = None

    # Counters, called by the clients.

    def outcome(self, client: Client, kind: str, reason: str) -> None:
        if kind == ACCEPTED:
            self._accepted += 1
        elif kind == REFUSED:
            self._refused += 1
        else:
            self._failures[reason] += 1
        self._unresolved -= 1
        if self._slots is not None:
            self._slots.release()
        if self._unresolved == 0 and self._all_resolved is not None:
            self._all_resolved.set()

    def dropped(self, client: Client, code: int) -> None:
        self.drops[code] += 1

    # Requests from the driver.

    async def connect(self, order: ConnectOrder) -> ConnectReport:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + order.timeout
        self._accepted = self._refused = 0  # this order's, not the ones before
        self._failures.clear()
        self._slots = asyncio.Semaphore(order.concurrency)
        self._all_resolved = asyncio.Event()
        self._unresolved = len(order.hellos)
        started = time.monotonic()
        batch: list[Client] = []
        opening: set[asyncio.Task[None]] = set()
        self.mixed = order.mixed
        ranks = order.ranks or [-1] * len(order.hellos)
        for hello, allowed, index, rank in zip(
            order.hellos, order.allowed, order.indices, ranks, strict=True
        ):
            try:
                async with asyncio.timeout_at(deadline):
                    await self._slots.acquire()
            except TimeoutError:
                break
            client = Client(
                self, host=f"{order.host}:{order.port}", hello=hello, allowed=allowed, rank=rank
            )
            batch.append(client)
            task = loop.create_task(self._open(client, order, source_address(index)))
            opening.add(task)
            task.add_done_callback(opening.discard)
        remaining = deadline - loop.time()
        if self._unresolved and remaining > 0:
            try:
                async with asyncio.timeout(remaining):
                    await self._all_resolved.wait()
            except TimeoutError:
                pass
        for client in batch:
            if not client.resolved:
                client.resolved = True
                self._failures["timeout"] += 1
                client.abort()
        self._failures["not attempted"] += len(order.hellos) - len(batch)
        self._slots = self._all_resolved = None
        accepted = [client for client in batch if client.authenticated_at]
        self.clients.extend(accepted)
        return ConnectReport(
            accepted=self._accepted,
            refused=self._refused,
            failures={reason: n for reason, n in self._failures.items() if n},
            started=started,
            last_authenticated=max((c.authenticated_at for c in accepted), default=started),
            compressed=sum(1 for client in accepted if client.inflater is not None),
            recipients=sum(1 for client in accepted if client.allowed),
        )

    async def _open(self, client: Client, order: ConnectOrder, source: str | None) -> None:
        loop = asyncio.get_running_loop()
        try:
            await loop.create_connection(
                lambda: client,
                order.host,
                order.port,
                local_addr=None if source is None else (source, 0),
            )
        except OSError as exc:
            client.resolve(FAILED, type(exc).__name__)

    def window(self, first: int, end: int) -> None:
        """Count, from now on, the events numbered ``first`` to ``end - 1``."""
        self.first, self.end = first, end
        self.seqs, self.times = array("q"), array("d")
        self.late = self.other = self.unexpected = 0
        self.drops.clear()
        for client in self.clients:
            client.start_window(first)

    def progress(self) -> Progress:
        return Progress(
            received=len(self.seqs),
            dropped=sum(self.drops.values()),
            last_receipt=self.times[-1] if self.times else 0.0,
        )

    def report(self, commit_times: Sequence[float]) -> WindowReport:
        """The window's counts, for the events published (committed at ``commit_times``,
        numbered from ``first``); latencies from ``commit_times[seq - first]``."""
        events = len(commit_times)
        allowed = [client for client in self.clients if client.allowed]
        first = self.first
        if self.mixed:
            common, personal = audiences.due(first, first + events, self.mixed)
            due = [common + personal[client.rank] for client in allowed]
        else:
            due = [events] * len(allowed)
        deliveries = list(zip(self.seqs, self.times, strict=True))
        latencies = array("d", sorted(t - commit_times[s - first] for s, t in deliveries))
        tenth = max(1, events // 10)
        early = sorted(t - commit_times[s - first] for s, t in deliveries if s - first < tenth)
        late = sorted(
            t - commit_times[s - first] for s, t in deliveries if s - first >= events - tenth
        )
        return WindowReport(
            expected=sum(due),
            received=len(self.seqs),
            missing=sum(
                max(0, owed - client.received) for owed, client in zip(due, allowed, strict=True)
            ),
            duplicates=sum(client.duplicates for client in self.clients),
            unexpected=self.unexpected,
            late=self.late,
            other=self.other,
            dropped=dict(self.drops),
            latencies=latencies.tobytes(),
            first_receipt=min(self.times, default=0.0),
            last_receipt=max(self.times, default=0.0),
            first_tenth_p50=early[len(early) // 2] if early else None,
            last_tenth_p50=late[len(late) // 2] if late else None,
        )

    def close(self) -> int:
        """Drop every connection, without a closing handshake; return how many."""
        for client in self.clients:
            client.abort()
        dropped = len(self.clients)
        self.clients.clear()
        return dropped

    async def serve(self, pipe: Connection) -> None:
        """Answer the driver's requests until it says ``close`` or goes away."""
        loop = asyncio.get_running_loop()
        requests: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()

        def readable() -> None:
            try:
                requests.put_nowait(pipe.recv())
            except (EOFError, OSError):
                loop.remove_reader(pipe.fileno())
                requests.put_nowait(("close", None))

        loop.add_reader(pipe.fileno(), readable)
        while True:
            command, argument = await requests.get()
            answer: object = None
            if command == "connect":
                answer = await self.connect(argument)
            elif command == "window":
                self.window(*argument)
            elif command == "progress":
                answer = self.progress()
            elif command == "report":
                answer = self.report(argument)
            elif command in ("drop", "close"):
                answer = self.close()
                await asyncio.sleep(0.1)  # let the transports go
            try:
                pipe.send(answer)
            except (BrokenPipeError, OSError):
                return
            if command == "close":
                return


def uvloop_available() -> bool:
    return importlib.util.find_spec("uvloop") is not None


def _main(pipe: Connection, cpus: frozenset[int] | None, use_uvloop: bool) -> None:
    """The generator process."""
    if cpus:
        os.sched_setaffinity(0, cpus)
    # uvloop is optional: imported by name, only when installed and wanted.
    runner = importlib.import_module("uvloop").run if use_uvloop else asyncio.run
    runner(Generator().serve(pipe))


class Generators:
    """The driver's side: ``count`` generator processes sharing the clients round-robin."""

    def __init__(self, count: int, *, cpus: frozenset[int] | None, use_uvloop: bool) -> None:
        context = multiprocessing.get_context("spawn")  # no Django, no database connection
        self.pipes: list[Connection] = []
        self.processes: list[multiprocessing.process.BaseProcess] = []
        for _ in range(count):
            parent, child = context.Pipe()
            process = context.Process(
                target=_main, args=(child, cpus, use_uvloop), name="bench-loadgen", daemon=True
            )
            process.start()
            child.close()
            self.pipes.append(parent)
            self.processes.append(process)

    @property
    def pids(self) -> list[int]:
        return [process.pid for process in self.processes if process.pid is not None]

    def ask(
        self, command: str, arguments: Sequence[Any] | None = None, timeout: float = 60
    ) -> list[Any]:
        """Send ``command`` to each generator (with its own argument), return the answers."""
        for index, pipe in enumerate(self.pipes):
            pipe.send((command, None if arguments is None else arguments[index]))
        answers = []
        deadline = time.monotonic() + timeout
        for pipe, process in zip(self.pipes, self.processes, strict=True):
            if not pipe.poll(max(0.0, deadline - time.monotonic())):
                raise TimeoutError(f"load generator {process.pid} didn't answer {command!r}")
            answers.append(pipe.recv())
        return answers

    def split(self, items: Sequence[Any]) -> list[list[Any]]:
        """``items`` dealt round-robin, one list per generator."""
        count = len(self.pipes)
        return [list(items[index::count]) for index in range(count)]

    def close(self) -> None:
        with contextlib.suppress(TimeoutError, OSError, EOFError):
            self.ask("close", timeout=30)
        for process in self.processes:
            process.join(timeout=10)
            if process.is_alive():
                process.kill()
                process.join()
