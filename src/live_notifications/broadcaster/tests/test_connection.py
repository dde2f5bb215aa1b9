"""Connections that keep no parser while idle still read what clients send as websockets would.

:class:`broadcaster.connection.Connection` hands websockets' sans-I/O
protocol whole frames only, and drops the protocol between two. Here the
bytes a client sends reach it cut at every place a network could cut them,
and the frames that need the protocol (pings, closes, errors) arrive on
idle connections. The clients are bare sockets (:class:`.bare.BareClient`),
which write frames exactly as given; some tests serve them with a real
broadcaster, the others with a :class:`Connection` in this process.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Callable

import pytest
from websockets.frames import Close, Frame, Opcode
from websockets.http11 import Request, Response
from websockets.protocol import State

from live_notifications.broadcaster.connection import (
    MAX_CONTROL_FRAMES,
    MAX_FRAGMENTS,
    MAX_READ_AFTER_CLOSE,
    Connection,
    Settings,
)
from live_notifications.tokens import token_for
from tests.servers import BroadcasterProcess, wait_until

from .bare import BareClient, serve_until
from .helpers import RECEIVE_TIMEOUT, user

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_token_sent_in_fragments_authenticates(broadcaster: BroadcasterProcess) -> None:
    root = user("root", is_superuser=True)
    with BareClient(broadcaster.port) as client:
        # In one write: the frames are queued together, and read in order.
        client.write(client.fragments(token_for(root), parts=3))
        wait_until(lambda: broadcaster.metrics()["broadcaster_connections"] == 1, "registered")


def test_a_token_left_unfinished_times_out(broadcaster: BroadcasterProcess) -> None:
    root = user("root", is_superuser=True)
    with BareClient(broadcaster.port) as client:
        client.write(client.fragments(token_for(root), final=False))
        serve_until([client], lambda: client.close is not None, "the close")
        assert client.close == (1008, "authentication timed out")
    assert broadcaster.metrics()['broadcaster_auth_failures_total{reason="timeout"}'] == 1


def test_the_address_behind_a_trusted_proxy_is_the_one_it_appended(
    start_broadcaster: Callable[..., BroadcasterProcess],
) -> None:
    """What a client writes in X-Forwarded-For is never logged: the entry the
    proxy appended is, and it outlives the handshake (the disconnect's line)."""
    broadcaster = start_broadcaster(BROADCASTER_TRUSTED_PROXIES="127.0.0.0/8")
    root = user("root", is_superuser=True)
    forged = ("X-Forwarded-For", "203.0.113.72 user=admin event=connect, 192.0.2.1")
    appended = ("X-Forwarded-For", "198.51.100.9")  # HAProxy adds a header of its own
    with BareClient(broadcaster.port, headers=[forged, appended]) as client:
        client.send_text(token_for(root))
        wait_until(lambda: broadcaster.metrics()["broadcaster_connections"] == 1, "registered")
        client.send_text("hello?")
        serve_until([client], lambda: client.close is not None, "the close")
        assert client.close == (1008, "clients send nothing")
    wait_until(lambda: "event=disconnect" in broadcaster.output(), "the disconnection")
    output = broadcaster.output()
    assert "event=client_sent remote=198.51.100.9\n" in output
    assert "event=disconnect user=root remote=198.51.100.9 " in output
    assert "203.0.113.72" not in output and "192.0.2.1" not in output


def test_x_forwarded_for_from_an_untrusted_peer_is_ignored(
    broadcaster: BroadcasterProcess,
) -> None:
    forged = ("X-Forwarded-For", "203.0.113.72 user=admin event=connect")
    with BareClient(broadcaster.port, headers=[forged]) as client:
        client.send_text("not a token")
        serve_until([client], lambda: client.close is not None, "the close")
        assert client.close == (1011, "authentication failed")
    wait_until(lambda: "event=auth_failure" in broadcaster.output(), "the failure's log")
    output = broadcaster.output()
    assert "event=auth_failure reason=invalid remote=127.0.0.1\n" in output
    assert "203.0.113.72" not in output


# In this process: a Connection whose server side the test sees.


class Recording:
    """A server that accepts every handshake and records what its connections say."""

    def __init__(self) -> None:
        self.opened: asyncio.Queue[Connection] = asyncio.Queue()
        self.messages: list[str | bytes] = []
        self.arrived: asyncio.Queue[str | bytes] = asyncio.Queue()
        self.closed: list[Connection] = []
        #: Messages whose first frame arrived.
        self.begun = 0
        self.slow: list[Connection] = []

    def process_request(self, connection: Connection, request: Request) -> Response | None:
        return None

    def connection_open(self, connection: Connection) -> None:
        self.opened.put_nowait(connection)

    def message_begun(self, connection: Connection) -> None:
        self.begun += 1

    def message_received(self, connection: Connection, message: str | bytes) -> None:
        self.messages.append(message)
        self.arrived.put_nowait(message)

    def too_slow(self, connection: Connection) -> None:
        self.slow.append(connection)

    def connection_closed(self, connection: Connection) -> None:
        self.closed.append(connection)


@contextlib.asynccontextmanager
async def serving(
    max_size: int = 1024,
    open_timeout: float = RECEIVE_TIMEOUT,
    max_buffer: int = 1 << 20,
    close_timeout: float = 5,
    max_control_frames: int = MAX_CONTROL_FRAMES,
) -> AsyncIterator[tuple[Recording, int]]:
    recording = Recording()
    settings = Settings(
        recording,
        origins=None,
        max_size=max_size,
        max_buffer=max_buffer,
        close_timeout=close_timeout,
        open_timeout=open_timeout,
        max_control_frames=max_control_frames,
    )
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Connection(settings), "127.0.0.1", 0)
    async with server:
        yield recording, server.sockets[0].getsockname()[1]


async def opened(port: int, recording: Recording) -> tuple[BareClient, Connection]:
    client = await asyncio.to_thread(BareClient, port, answers=False)
    async with asyncio.timeout(RECEIVE_TIMEOUT):
        return client, await recording.opened.get()


def frame(opcode: Opcode, data: bytes, *, fin: bool = True, mask: bool = True) -> bytes:
    return bytes(Frame(opcode, data, fin=fin).serialize(mask=mask, extensions=[]))


async def received(client: BareClient, count: int) -> list[Frame]:
    """The first ``count`` frames the server sent ``client``."""

    def read() -> list[Frame]:
        while len(client.received) < count:
            client.read()
        return client.received[:count]

    return await asyncio.to_thread(read)


def test_frames_cut_at_every_byte_are_read_whole() -> None:
    asyncio.run(frames_cut_at_every_byte())


async def frames_cut_at_every_byte() -> None:
    async with serving() as (recording, port):
        client, connection = await opened(port, recording)
        with client:
            data = (
                BareClient.fragments("the token", parts=3)
                + frame(Opcode.PING, b"are you there?")
                + frame(Opcode.PONG, b"")
                + frame(Opcode.TEXT, b"x" * 300)  # a 16-bit length
            )
            connection.pong_waiting = True
            # As if each byte came in a read of its own.
            for i in range(len(data)):
                connection.data_received(data[i : i + 1])
            assert recording.messages == ["the token", "x" * 300]
            assert not connection.pong_waiting
            [pong] = await received(client, 1)
            assert (pong.opcode, pong.data) == (Opcode.PONG, b"are you there?")
            assert connection._protocol is None and connection._buffer == b""


def test_an_idle_connection_keeps_no_parser_between_frames() -> None:
    """What makes an idle connection small: the parser is made for a frame, then dropped."""
    asyncio.run(no_parser_between_frames())


async def no_parser_between_frames() -> None:
    async with serving() as (recording, port):
        client, connection = await opened(port, recording)
        with client:
            assert connection._protocol is None  # the handshake's, dropped
            assert client.response is not None and "Date" not in client.response.headers  # ours
            client.write(frame(Opcode.TEXT, b"the token") + frame(Opcode.PING, b"1"))
            [pong] = await received(client, 1)
            assert (pong.opcode, pong.data) == (Opcode.PONG, b"1")
            assert recording.messages == ["the token"]
            assert connection._protocol is None
            # A pong needs no parser at all.
            connection.ping()
            [_, ping] = await received(client, 2)
            assert ping.opcode is Opcode.PING and connection.pong_waiting
            # Read in order: once the ping after it is answered, the pong was read.
            client.write(frame(Opcode.PONG, b"") + frame(Opcode.PING, b"2"))
            [_, _, pong] = await received(client, 3)
            assert (pong.opcode, pong.data) == (Opcode.PONG, b"2")
            assert not connection.pong_waiting
            assert connection._protocol is None


def test_a_request_and_its_first_message_in_one_write() -> None:
    asyncio.run(request_and_message_together())


async def request_and_message_together() -> None:
    async with serving() as (recording, port):
        sock = socket.create_connection(("127.0.0.1", port))
        with sock:
            request = (
                "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n"
            )
            sock.sendall(request.encode() + frame(Opcode.TEXT, b"the token"))
            async with asyncio.timeout(RECEIVE_TIMEOUT):
                await recording.opened.get()
                assert await recording.arrived.get() == "the token"


@pytest.mark.parametrize(
    ("data", "close"),
    [
        pytest.param(
            frame(Opcode.TEXT, b"x", mask=False), (1002, "incorrect masking"), id="unmasked"
        ),
        pytest.param(
            frame(Opcode.BINARY, b"x" * 2000),
            (1009, "frame with 2000 bytes exceeds limit of 1024 bytes"),
            id="too-big",
        ),
        pytest.param(
            frame(Opcode.TEXT, b"x" * 600, fin=False) + frame(Opcode.CONT, b"x" * 600),
            (1009, "frame with 600 bytes after reading 600 bytes exceeds limit of 1024 bytes"),
            id="fragments-too-big",
        ),
        pytest.param(frame(Opcode.TEXT, b"\xff\xfe"), (1007, "invalid start byte"), id="not-utf8"),
        pytest.param(frame(Opcode.CONT, b"x"), (1002, "unexpected continuation frame"), id="stray"),
        pytest.param(
            frame(Opcode.CLOSE, Close(1000, "bye").serialize()), (1000, "bye"), id="close"
        ),
    ],
)
def test_what_an_idle_connection_may_not_be_sent_closes_it(
    data: bytes, close: tuple[int, str]
) -> None:
    asyncio.run(idle_connection_closed(data, close))


async def idle_connection_closed(data: bytes, close: tuple[int, str]) -> None:
    async with serving() as (recording, port):
        client, connection = await opened(port, recording)
        with client:
            client.write(frame(Opcode.TEXT, b"the token"))
            client.write(data)
            await asyncio.to_thread(
                serve_until, [client], lambda: client.close is not None, "close"
            )
            code, reason = client.close or (0, "")
            assert (code, reason.split(" at position")[0]) == close  # websockets' reasons
            assert connection.state is not State.OPEN
            client.answer()  # the closing handshake
        async with asyncio.timeout(RECEIVE_TIMEOUT):
            await connection.wait_closed()
        assert recording.messages == ["the token"]
        assert recording.closed == [connection]


def test_a_handshake_out_of_the_common_case_is_accepted_by_websockets() -> None:
    """A subprotocol offered: :mod:`.handshake` leaves it, websockets' ``accept()`` takes it."""
    asyncio.run(handshake_left_to_websockets())


async def handshake_left_to_websockets() -> None:
    async with serving() as (recording, port):
        offering = [("Sec-WebSocket-Protocol", "chat")]
        client = await asyncio.to_thread(BareClient, port, answers=False, headers=offering)
        with client:
            async with asyncio.timeout(RECEIVE_TIMEOUT):
                connection = await recording.opened.get()
            assert client.protocol.subprotocol is None  # none chosen: the server has none
            assert client.response is not None and "Date" in client.response.headers  # websockets'
            assert connection._protocol is None
            client.write(frame(Opcode.TEXT, b"the token"))
            async with asyncio.timeout(RECEIVE_TIMEOUT):
                assert await recording.arrived.get() == "the token"


async def answer_to(
    data: bytes, *, then_eof: bool = False, open_timeout: float = RECEIVE_TIMEOUT
) -> bytes:
    """All a server of :class:`Connection` sends to a socket that writes ``data``, until it closes.

    No connection may open: these requests are answered, or closed, at the handshake.
    """
    async with serving(open_timeout=open_timeout) as (recording, port):
        sock = socket.create_connection(("127.0.0.1", port), timeout=RECEIVE_TIMEOUT)
        with sock:
            sock.sendall(data)
            if then_eof:
                sock.shutdown(socket.SHUT_WR)
            received = b""
            while chunk := await asyncio.to_thread(sock.recv, 65536):  # times out unless closed
                received += chunk
        assert recording.opened.empty() and recording.closed == []
    return received


def test_a_request_too_large_is_refused_with_431() -> None:
    data = b"GET / HTTP/1.1\r\nCookie: " + b"x" * 20_000
    assert asyncio.run(answer_to(data)).startswith(b"HTTP/1.1 431 ")


@pytest.mark.parametrize(
    ("request_bytes", "answer"),
    [
        pytest.param(
            b"GET / HTTP/1.1\r\nHost: example\r\nUpgrade websocket\r\n\r\n",
            b"HTTP/1.1 400 ",
            id="no-colon",
        ),
        pytest.param(
            b"GET / HTTP/1.1\r\n" + b"X-Many: 1\r\n" * 129 + b"\r\n",
            b"HTTP/1.1 431 ",
            id="129-headers",
        ),
    ],
)
def test_a_request_it_does_not_read_is_left_to_websockets(
    request_bytes: bytes, answer: bytes
) -> None:
    """:func:`.handshake.parse` leaves these to websockets, which answers, or fails to
    parse them: then the connection answers 400, where websockets would close."""
    received = asyncio.run(answer_to(request_bytes))
    assert received.startswith(answer), received


def test_a_request_cut_short_by_the_client_gets_no_answer() -> None:
    assert asyncio.run(answer_to(b"GET / HTTP/1.1\r\nHost: exa", then_eof=True)) == b""


def test_a_handshake_never_finished_is_aborted_at_the_open_timeout() -> None:
    # Well within the socket's own timeout (RECEIVE_TIMEOUT), which would fail the test.
    assert asyncio.run(answer_to(b"GET / HTTP/1.1\r\nHost: exa", open_timeout=0.5)) == b""


# What a client sends is bounded: fragments, and what it makes the server write.


def test_a_close_begun_while_a_frame_is_half_received_reads_the_rest_of_it() -> None:
    """A timer's close (auth timeout, keepalive, drain, revocation) may come at
    any byte of a client's frame: the protocol made for the close is handed
    what was held back, so the frame's rest isn't read as a new frame."""
    asyncio.run(close_at_every_byte())


async def close_at_every_byte() -> None:
    ping = frame(Opcode.PING, b"abc")
    close = frame(Opcode.CLOSE, Close(1000, "").serialize())
    expected = Frame(Opcode.CLOSE, Close(1008, "authentication timed out").serialize()).serialize(
        mask=False
    ) + Frame(Opcode.PONG, b"abc").serialize(mask=False)
    # Longer than the client's socket waits: a server that lingers fails the test.
    async with serving(close_timeout=2 * RECEIVE_TIMEOUT) as (recording, port):
        for cut in range(1, len(ping)):
            client, connection = await opened(port, recording)
            with client:
                connection.data_received(ping[:cut])
                connection.close(1008, "authentication timed out")
                connection.data_received(ping[cut:] + close)
                # The ping is answered after the close, and the client's close
                # is read: the server ends the connection now, not at the close
                # timeout (the socket's reads would time out first).
                assert await asyncio.to_thread(read_to_the_end, client.sock) == expected, cut


def read_to_the_end(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def test_a_message_in_too_many_fragments_is_refused_with_1009() -> None:
    asyncio.run(too_many_fragments())


async def too_many_fragments() -> None:
    async with serving() as (recording, port):
        client, _ = await opened(port, recording)
        with client:
            empty = frame(Opcode.CONT, b"", fin=False)
            client.write(frame(Opcode.TEXT, b"", fin=False) + empty * MAX_FRAGMENTS)
            await asyncio.to_thread(
                serve_until, [client], lambda: client.close is not None, "the close"
            )
            assert client.close == (1009, "too many fragments")
            assert recording.begun == 1 and recording.messages == []
        # The most a message may take is read whole.
        client, _ = await opened(port, recording)
        with client:
            client.write(BareClient.fragments("x" * MAX_FRAGMENTS, parts=MAX_FRAGMENTS))
            async with asyncio.timeout(RECEIVE_TIMEOUT):
                assert await recording.arrived.get() == "x" * MAX_FRAGMENTS


def test_a_client_that_floods_pings_without_reading_is_cut_as_too_slow() -> None:
    """Pongs go through the same bound as events: the client's unsent data."""
    asyncio.run(ping_flood())


async def ping_flood() -> None:
    # As many pings as it likes: the bound on pings is another test's.
    async with serving(max_buffer=64 * 1024, max_control_frames=1 << 30) as (recording, port):
        client, connection = await opened(port, recording)
        with client:
            connection.transport.get_extra_info("socket").setsockopt(
                socket.SOL_SOCKET, socket.SO_SNDBUF, 4096
            )
            client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            pings = frame(Opcode.PING, b"x" * 125) * 1000  # 131 KB in, 127 KB of pongs out
            sent = 0
            # The client reads nothing while it writes; this loop reads for the server.
            while connection.state is State.OPEN and sent < 100:
                await asyncio.to_thread(client.sock.sendall, pings)
                sent += 1
                await asyncio.sleep(0)
            assert connection.state is not State.OPEN, "never cut"
            assert recording.slow == [connection]
            assert connection.close_sent_code == 1008
            assert connection.transport.get_write_buffer_size() < 64 * 1024 + len(pings)


def test_a_peer_that_fails_is_dropped_without_a_closing_handshake() -> None:
    """The keepalive's way: a peer that doesn't answer pings won't answer a close."""
    asyncio.run(failed_peer())


async def failed_peer() -> None:
    async with serving(close_timeout=RECEIVE_TIMEOUT) as (recording, port):
        client, connection = await opened(port, recording)
        with client:
            connection.fail(1011, "keepalive ping timeout")
            # Closed now, though the client never answered the close frame.
            await asyncio.wait_for(connection.wait_closed(), RECEIVE_TIMEOUT / 10)
            assert recording.closed == [connection]
            assert connection.close_sent_code == 1011


def test_a_client_that_floods_after_the_close_is_dropped() -> None:
    """After its close frame the server reads on, for the client's close, but
    not forever: a client still sending past a bound isn't closing."""
    asyncio.run(flood_after_the_close())


async def flood_after_the_close() -> None:
    async with serving(close_timeout=RECEIVE_TIMEOUT) as (recording, port):
        client, connection = await opened(port, recording)
        with client:
            connection.close(1008, "authentication timed out")
            text = frame(Opcode.TEXT, b"x" * 1000)
            for _ in range(MAX_READ_AFTER_CLOSE // len(text)):
                connection.data_received(text)
            assert connection.state is State.CLOSING  # still waiting for its close
            connection.data_received(text)
            await asyncio.wait_for(connection.wait_closed(), RECEIVE_TIMEOUT / 10)
            assert recording.closed == [connection]
