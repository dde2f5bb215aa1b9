"""Floods on one connection are cut early, cost bounded memory, and don't keep others out.

Each flood is what issue 21 found unbounded: empty continuation frames
(6 bytes each, never reaching the size limit), before and after the token;
pings from a client that never reads their pongs. The broadcaster is a real
process; its memory is read from /proc, before and after.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from websockets.sync.client import connect

from live_notifications.tokens import token_for
from tests.servers import BroadcasterProcess, wait_until

from .helpers import RECEIVE_TIMEOUT, user
from .wire import CONT, PING, PONG, TEXT, Wire, frame, request

pytestmark = pytest.mark.django_db(transaction=True)

#: What one connection's flood may grow the process by, at most. Before the
#: limits, a million empty fragments grew it by 73 MiB and pings unread by
#: 555 MiB in 25 s; with them, by 1-4 MiB.
MEMORY_BOUND_MIB = 32


def rss_mib(broadcaster: BroadcasterProcess) -> float:
    for line in Path(f"/proc/{broadcaster.process.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def opened(broadcaster: BroadcasterProcess) -> Wire:
    wire = Wire(broadcaster.port)
    wire.write(request())
    assert wire.read(lambda t: t.status is not None, timeout=RECEIVE_TIMEOUT)
    assert wire.transcript.status == "101", wire.transcript.summary()
    return wire


def flood(wire: Wire, data: bytes, times: int) -> threading.Thread:
    """Write ``data`` ``times`` times in a thread, until done or the server is gone."""

    def write() -> None:
        for _ in range(times):
            try:
                wire.sock.sendall(data)
            except OSError:
                return

    thread = threading.Thread(target=write, daemon=True)
    thread.start()
    return thread


def first_answer_to_flood(
    wire: Wire, data: bytes, times: int, meanwhile: Callable[[], None] = lambda: None
) -> str:
    """Flood ``wire`` with ``data``, ``times`` writes; the first frame the server sent back.

    ``meanwhile`` runs while the flood goes on.
    """
    writer = flood(wire, data, times)
    meanwhile()
    assert wire.read(lambda t: bool(t.frames), timeout=RECEIVE_TIMEOUT)
    writer.join(RECEIVE_TIMEOUT)
    return wire.transcript.frames[0]


def welcome(broadcaster: BroadcasterProcess, token: str) -> dict[str, object]:
    with connect(broadcaster.url, open_timeout=RECEIVE_TIMEOUT) as client:
        client.send(json.dumps({"token": token, "last_id": None}))
        message: dict[str, object] = json.loads(client.recv(timeout=RECEIVE_TIMEOUT))
        return message


def test_empty_fragments_after_the_token_are_cut_at_the_first(
    broadcaster: BroadcasterProcess,
) -> None:
    root = user("root", is_superuser=True)
    other = user("other", is_superuser=True)
    welcome(broadcaster, token_for(other))  # the process's first query made
    before = rss_mib(broadcaster)
    welcomed: list[dict[str, object]] = []
    wire = opened(broadcaster)
    try:
        wire.write(frame(TEXT, token_for(root).encode()))
        wait_until(lambda: broadcaster.metrics()["broadcaster_connections"] == 1, "registered")
        # A million empty continuations, 5.7 MiB, behind the first fragment;
        # another client is let in meanwhile.
        wire.write(frame(TEXT, b"", fin=False))
        answer = first_answer_to_flood(
            wire,
            frame(CONT, b"", fin=False) * 10_000,
            100,
            meanwhile=lambda: welcomed.append(welcome(broadcaster, token_for(other))),
        )
        assert answer == "CLOSE 1008 'clients send nothing'"
        assert [message["type"] for message in welcomed] == ["welcome"]
        assert rss_mib(broadcaster) - before < MEMORY_BOUND_MIB
    finally:
        wire.close()
    assert broadcaster.metrics()["broadcaster_clients_sending_total"] == 1


def test_empty_fragments_before_the_token_are_cut_at_the_limit(
    broadcaster: BroadcasterProcess,
) -> None:
    before = rss_mib(broadcaster)
    wire = opened(broadcaster)
    try:
        wire.write(frame(TEXT, b"", fin=False))
        answer = first_answer_to_flood(wire, frame(CONT, b"", fin=False) * 10_000, 10)
        assert answer == "CLOSE 1009 'too many fragments'"
        assert rss_mib(broadcaster) - before < MEMORY_BOUND_MIB
    finally:
        wire.close()
    wait_until(
        lambda: (
            broadcaster.metrics().get('broadcaster_auth_failures_total{reason="too_large"}') == 1
        ),
        "the failure counted",
    )


def test_pings_from_a_client_that_never_reads_are_cut(
    broadcaster: BroadcasterProcess,
) -> None:
    """Any pong, unsolicited or not, keeps a client alive (RFC 6455 5.5.3 makes
    them heartbeats); what bounds a client flooding pings is their number per
    keepalive interval, and the pongs it doesn't read count in its backlog."""
    root = user("root", is_superuser=True)
    before = rss_mib(broadcaster)
    wire = opened(broadcaster)
    try:
        wire.write(frame(TEXT, token_for(root).encode()))
        wait_until(lambda: broadcaster.metrics()["broadcaster_connections"] == 1, "registered")
        # 125-byte pings, each answered by a pong the client never reads, and
        # a pong of its own now and then: up to 130 MB of pongs asked for.
        pings = frame(PING, b"x" * 125) * 1000 + frame(PONG)
        writer = flood(wire, pings, 1000)
        writer.join(RECEIVE_TIMEOUT)
        assert not writer.is_alive(), "the server still reads the flood"
        wait_until(lambda: "event=disconnect" in broadcaster.output(), "the disconnection")
        assert "event=disconnect user=root remote=127.0.0.1 code=1008\n" in broadcaster.output()
        assert rss_mib(broadcaster) - before < MEMORY_BOUND_MIB
    finally:
        wire.close()
    wait_until(lambda: broadcaster.metrics()["broadcaster_connections"] == 0, "forgotten")
