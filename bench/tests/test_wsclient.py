"""The load generator's client against websockets' own server protocol, in memory.

websockets' sans-I/O :class:`~websockets.server.ServerProtocol` is the
server both measured programs run on: what it writes, the client must read.
"""

from __future__ import annotations

import asyncio
import json

import pytest
from websockets.extensions.permessage_deflate import ServerPerMessageDeflateFactory
from websockets.frames import CloseCode, Frame, Opcode
from websockets.http11 import Request
from websockets.server import ServerProtocol

from bench import audiences
from bench.loadgen import Generator
from bench.wsclient import ABNORMAL, OPEN, Client

#: websockets' default permessage-deflate, as serve() enables it.
DEFAULT_DEFLATE = ServerPerMessageDeflateFactory(
    server_max_window_bits=12, client_max_window_bits=12, compress_settings={"memLevel": 5}
)


class Transport(asyncio.Transport):
    """Collects what the client writes."""

    def __init__(self) -> None:
        super().__init__()
        self.written = bytearray()
        self.closed = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += data

    def take(self) -> bytes:
        data, self.written = bytes(self.written), bytearray()
        return data

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True


def event(seq: int) -> bytes:
    """An event as the relay serializes it, numbered ``seq`` in ``object_id``."""
    return json.dumps(
        {
            "model": "group",
            "object": f"bench {seq}",
            "message": "Changed name.",
            "timestamp": "2026-12-01T00:00:00+00:00",
            "user": "bench",
            "content_type_id": 3,
            "object_id": str(seq),
            "action": "changed",
            "id": f"0a1b2c3d:1764547200000-{seq}",
        },
        ensure_ascii=False,
    ).encode()


class Pair:
    """A client and a server protocol, wired by hand."""

    def __init__(
        self, *, compression: bool = True, allowed: bool = True, chunk: int = 0, rank: int = -1
    ) -> None:
        self.generator = Generator()
        self.generator.window(0, 100)
        self.client = Client(
            self.generator, host="127.0.0.1:1", hello="TOKEN", allowed=allowed, rank=rank
        )
        self.transport = Transport()
        self.client.connection_made(self.transport)
        self.server = ServerProtocol(extensions=[DEFAULT_DEFLATE] if compression else None)
        self.chunk = chunk
        self.server.receive_data(self.transport.take())
        (request,) = self.server.events_received()
        assert isinstance(request, Request)
        self.request = request

    def accept(self) -> None:
        self.server.send_response(self.server.accept(self.request))
        self.deliver()
        self.generator.clients.append(self.client)

    def deliver(self) -> None:
        """Feed the client what the server wrote, in chunks of ``chunk`` bytes if set."""
        data = b"".join(self.server.data_to_send())
        step = self.chunk or len(data) or 1
        for start in range(0, len(data), step):
            self.client.data_received(data[start : start + step])

    def from_client(self) -> list[Frame]:
        self.server.receive_data(self.transport.take())
        return [e for e in self.server.events_received() if isinstance(e, Frame)]


@pytest.mark.parametrize("compression", [True, False], ids=["deflate", "plain"])
@pytest.mark.parametrize("chunk", [0, 1, 7], ids=["whole", "bytewise", "chunks"])
def test_counts_events_with_their_sequence(compression: bool, chunk: int) -> None:
    pair = Pair(compression=compression, chunk=chunk)
    pair.accept()
    # The server received the first message, as a text frame.
    (hello,) = pair.from_client()
    assert (hello.opcode, hello.data) == (Opcode.TEXT, b"TOKEN")
    assert (pair.client.inflater is not None) is compression

    pair.server.send_text(b'{"type": "welcome", "id": "x", "recovered": false}')
    for seq in (0, 1, 2, 2, 5):
        pair.server.send_text(event(seq))
    pair.deliver()

    assert pair.client.state == OPEN
    assert pair.client.received == 4
    assert pair.client.duplicates == 1
    assert list(pair.generator.seqs) == [0, 1, 2, 5]
    report = pair.generator.report([10.0] * 100)
    assert report.missing == 96
    assert report.duplicates == 1


def test_an_event_may_authenticate_and_count() -> None:
    pair = Pair()
    pair.accept()
    pair.server.send_text(event(3))
    pair.deliver()
    assert pair.client.state == OPEN
    assert list(pair.generator.seqs) == [3]


def app_event(seq: int) -> bytes:
    """An app event of the mixed run (bench.audiences), numbered ``seq``."""
    kind = audiences.KINDS[seq % 4]
    data = {"object_id": str(seq)}
    return json.dumps(
        {"event": f"bench.{kind}", "data": data, "timestamp": "t", "id": "x"}
    ).encode()


def test_mixed_audiences_count_a_user_event_only_for_its_user() -> None:
    pair = Pair(rank=3)
    pair.generator.mixed = 10  # ten allowed users: user events go to ranks 0, 1, 2…
    pair.accept()
    pair.server.send_text(b'{"type": "welcome", "id": "x", "recovered": false}')
    # 1, 2: group and permission; 3: rank 0's; 15: rank 3's (15 // 4 = 3); 16: admin.
    for message in (app_event(1), app_event(2), app_event(3), app_event(15), event(16)):
        pair.server.send_text(message)
    pair.deliver()
    assert list(pair.generator.seqs) == [1, 2, 15, 16]
    assert pair.generator.unexpected == 1  # rank 0's
    report = pair.generator.report([10.0] * 20)  # events 0-19: 15 for all, 5 for ranks 0-4
    assert report.expected == 15 + 1
    assert report.missing == 16 - 4


def test_events_outside_the_window_or_to_clients_not_allowed() -> None:
    pair = Pair(allowed=False)
    pair.accept()
    pair.server.send_text(b"Hello bench!")
    pair.server.send_text(event(1))
    pair.deliver()
    assert pair.generator.unexpected == 1
    assert pair.client.received == 0

    allowed = Pair()
    allowed.accept()
    allowed.generator.window(10, 20)
    allowed.server.send_text(b"Hello bench!")
    allowed.server.send_text(event(9))
    allowed.server.send_text(event(20))
    allowed.server.send_text(event(10))
    allowed.deliver()
    assert allowed.generator.late == 2
    assert list(allowed.generator.seqs) == [10]


def test_fragmented_and_large_messages() -> None:
    pair = Pair(compression=False)
    pair.accept()
    pair.server.send_text(b"Hello bench!")
    pair.server.send_text(event(1)[:20], fin=False)
    pair.server.send_continuation(event(1)[20:], fin=True)
    big = event(2)[:-1] + b', "padding": "' + b"x" * 70_000 + b'"}'
    pair.server.send_text(big)
    pair.deliver()
    assert list(pair.generator.seqs) == [1, 2]


def test_answers_pings() -> None:
    pair = Pair()
    pair.accept()
    pair.from_client()
    pair.server.send_ping(b"\x01\x02\x03\x04")
    pair.deliver()
    (pong,) = pair.from_client()
    assert (pong.opcode, pong.data) == (Opcode.PONG, b"\x01\x02\x03\x04")


def test_a_close_is_echoed_and_counted() -> None:
    pair = Pair()
    pair.accept()
    pair.from_client()
    pair.server.send_text(b"Hello bench!")
    pair.server.send_close(CloseCode.GOING_AWAY, "bye")
    pair.deliver()
    (close,) = pair.from_client()
    assert close.opcode == Opcode.CLOSE
    assert close.data[:2] == CloseCode.GOING_AWAY.to_bytes(2, "big")
    pair.client.connection_lost(None)
    assert pair.generator.drops == {CloseCode.GOING_AWAY: 1}


def test_503_at_the_handshake_is_a_refusal() -> None:
    pair = Pair()
    pair.server.send_response(pair.server.reject(503, "full\n"))
    pair.deliver()
    assert (pair.generator._refused, pair.generator._accepted) == (1, 0)
    assert pair.transport.closed


def test_authentication_refused_is_a_failure() -> None:
    pair = Pair()
    pair.accept()
    pair.server.send_close(CloseCode.INTERNAL_ERROR, "authentication failed")
    pair.deliver()
    pair.client.connection_lost(None)
    assert pair.generator._failures == {"closed 1011": 1}
    assert pair.generator.drops == {}


def test_a_connection_lost_while_open_is_a_drop() -> None:
    pair = Pair()
    pair.accept()
    pair.server.send_text(b"Hello bench!")
    pair.deliver()
    pair.client.connection_lost(ConnectionResetError())
    assert pair.generator.drops == {ABNORMAL: 1}
