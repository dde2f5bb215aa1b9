"""The broadcaster's protocol layer against websockets' own server, byte for byte.

The broadcaster reads requests and frames with code of its own
(:mod:`broadcaster.connection`, :mod:`broadcaster.handshake`). Each case
here writes the same raw bytes, as a hostile or careless client would, to a
real broadcaster and to websockets' server configured alike
(:mod:`.reference`), and compares what each sent back: the HTTP status and
the headers that matter, whether a body came, every frame, and how the TCP
connection ended. Where the two differ on purpose, :data:`DIFFERENCES` says
what the broadcaster does instead and why; that answer is asserted too.

The map is the Autobahn suite's: framing (reserved bits, opcodes), pings and
pongs, fragmentation, UTF-8, limits, the close handshake (codes, reasons, in
every order), plus the opening handshake (RFC 6455 4.2, RFC 9112) and the
moments a timer fires while a frame is half received.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterator

import pytest
from websockets.typing import Origin

from live_notifications.broadcaster.connection import MAX_CONTROL_FRAMES
from live_notifications.broadcaster.server import MAX_MESSAGE_SIZE
from live_notifications.conf import settings as live_settings
from live_notifications.tokens import token_for
from tests.servers import BroadcasterProcess, wait_until

from .helpers import user
from .reference import reference_server
from .wire import (
    BINARY,
    CLOSE,
    CONT,
    PING,
    PONG,
    TEXT,
    Transcript,
    Wire,
    close_frame,
    frame,
    request,
)

pytestmark = pytest.mark.django_db(transaction=True)

#: Both servers' timers, short so that the cases that wait for them are quick.
AUTH_TIMEOUT = 1.0
CLOSE_TIMEOUT = 2.0


# The steps of a case, after the opening handshake.


@dataclasses.dataclass(frozen=True)
class Write:
    data: bytes


@dataclasses.dataclass(frozen=True)
class Token:
    """The token, as one text frame, or in ``parts`` fragments."""

    parts: int = 1


@dataclasses.dataclass(frozen=True)
class Authenticated:
    """Wait until the server has read the token and registered the client."""


@dataclasses.dataclass(frozen=True)
class WaitFor:
    """Read until a frame starting with ``prefix`` arrived: ``"CLOSE"``."""

    prefix: str

    def arrived(self, transcript: Transcript) -> bool:
        return any(received.startswith(self.prefix) for received in transcript.frames)


@dataclasses.dataclass(frozen=True)
class Shutdown:
    """The client's FIN."""


Step = Write | Token | Authenticated | WaitFor | Shutdown


@dataclasses.dataclass(frozen=True)
class Case:
    name: str
    steps: tuple[Step, ...] = ()
    #: The opening handshake, as bytes; the usual one by default.
    handshake: bytes | None = None
    #: Whether the client ends with a close frame of its own (1000).
    final_close: bool = True
    #: Written in pieces of this many bytes, each on its own (the handshake and steps).
    pieces: int | None = None


def w(*frames: bytes) -> Write:
    return Write(b"".join(frames))


UPGRADE = [
    ("Upgrade", "websocket"),
    ("Connection", "Upgrade"),
    ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ("Sec-WebSocket-Version", "13"),
]


def upgrade(*extra: tuple[str, str], drop: str = "", **replace: str) -> list[tuple[str, str]]:
    """The usual headers, ``drop`` left out, others replaced by keyword (``_`` for ``-``)."""
    headers = []
    for name, value in UPGRADE:
        key = name.replace("-", "_")
        if name == drop:
            continue
        headers.append((name, replace.get(key, value)))
    return headers + list(extra)


def raw(head: str) -> bytes:
    """A request written as text, lines joined by CRLF, ending with the blank line."""
    return head.replace("\n", "\r\n").encode("latin-1") + b"\r\n\r\n"


PAD = [(f"X-Pad-{i}", "a" * 800) for i in range(25)]  # 20 KiB of headers

HANDSHAKES = [
    Case("the usual upgrade"),
    Case("version 8", handshake=request(headers=upgrade(Sec_WebSocket_Version="8"))),
    Case("no version", handshake=request(headers=upgrade(drop="Sec-WebSocket-Version"))),
    Case("no Host", handshake=request(host=None)),
    Case("two Hosts", handshake=request(headers=upgrade(("Host", "example.com")))),
    Case("a Host that isn't one", handshake=request(host="exa mple.com/x")),
    Case("a Host with a port", handshake=request(host="example.com:8000")),
    Case("an IPv6 Host", handshake=request(host="[::1]:8888")),
    Case("an empty Host", handshake=request(host="")),
    Case("HTTP/1.0 health check without Host", handshake=raw("GET /healthz HTTP/1.0")),
    Case("health check", handshake=request(path="/healthz", headers=[])),
    Case("HEAD health check", handshake=request(method="HEAD", path="/healthz", headers=[])),
    Case("no Upgrade", handshake=request(headers=upgrade(drop="Upgrade"))),
    Case("Upgrade: h2c", handshake=request(headers=upgrade(Upgrade="h2c"))),
    Case("Connection: keep-alive", handshake=request(headers=upgrade(Connection="keep-alive"))),
    Case(
        "Connection: keep-alive, Upgrade",
        handshake=request(headers=upgrade(Connection="keep-alive, Upgrade")),
    ),
    Case("a key that isn't base64", handshake=request(headers=upgrade(Sec_WebSocket_Key="!!"))),
    Case(
        "a key of 15 bytes",
        handshake=request(headers=upgrade(Sec_WebSocket_Key="AAAAAAAAAAAAAAAAAAAA")),
    ),
    Case(
        "two keys",
        handshake=request(headers=upgrade(("Sec-WebSocket-Key", "AAAAAAAAAAAAAAAAAAAAAA=="))),
    ),
    Case(
        "an Origin of another site",
        handshake=request(headers=upgrade(("Origin", "http://evil.example"))),
    ),
    Case(
        "the site's Origin", handshake=request(headers=upgrade(("Origin", "http://localhost:8000")))
    ),
    Case(
        "two Origins",
        handshake=request(
            headers=upgrade(
                ("Origin", "http://localhost:8000"), ("Origin", "http://localhost:8000")
            )
        ),
    ),
    Case(
        "a subprotocol offered",
        handshake=request(headers=upgrade(("Sec-WebSocket-Protocol", "chat"))),
    ),
    Case(
        "compression offered",
        handshake=request(
            headers=upgrade(
                ("Sec-WebSocket-Extensions", "permessage-deflate; client_max_window_bits")
            )
        ),
    ),
    Case("POST", handshake=request(method="POST")),
    Case("HTTP/1.0 upgrade", handshake=request(version="HTTP/1.0")),
    Case("bare LF", handshake=request(eol=b"\n")),
    Case("a bare CR in a value", handshake=request(headers=upgrade(("X-A", "a\rb")))),
    Case("NUL in a value", handshake=request(headers=upgrade(("X-A", "a\x00b")))),
    Case("a folded header (obs-fold)", handshake=raw("GET / HTTP/1.1\nHost: x\nX-A: a\n b")),
    Case("whitespace before a colon", handshake=raw("GET / HTTP/1.1\nHost : x")),
    Case("a path that isn't ASCII", handshake=request(path="/é")),
    Case("a body", handshake=request(headers=upgrade(("Content-Length", "5")))),
    Case("Transfer-Encoding", handshake=request(headers=upgrade(("Transfer-Encoding", "chunked")))),
    Case("20 KiB of headers in one write", handshake=request(headers=upgrade(*PAD))),
    Case(
        "20 KiB of headers in 1 KiB pieces", handshake=request(headers=upgrade(*PAD)), pieces=1024
    ),
    Case("a request line of 9 KiB", handshake=request(path="/" + "a" * 9216)),
    Case("a header line of 9 KiB", handshake=request(headers=upgrade(("X-A", "a" * 9216)))),
    Case("129 headers", handshake=request(headers=upgrade(*[(f"X-{i}", "a") for i in range(125)]))),
    Case(
        "the request cut short, then FIN",
        handshake=b"GET / HTTP/1.1\r\nHost: x\r\n",
        steps=(Shutdown(),),
        final_close=False,
    ),
    Case("the request in pieces of 7 bytes", pieces=7, steps=(Token(),)),
]

BEFORE_THE_TOKEN = [
    Case("a good token", steps=(Token(),)),
    Case("a bad token", steps=(w(frame(TEXT, b"not a token")),)),
    Case("a binary first message", steps=(w(frame(BINARY, b"\x00\x01")),)),
    Case("an unmasked frame", steps=(w(frame(TEXT, b"x", masked=False)),)),
    Case("RSV1", steps=(w(frame(TEXT, b"x", rsv=0x40)),)),
    Case("RSV2", steps=(w(frame(TEXT, b"x", rsv=0x20)),)),
    Case("RSV3 on a ping", steps=(w(frame(PING, b"x", rsv=0x10)),)),
    Case("reserved data opcode 3", steps=(w(frame(0x3, b"x")),)),
    Case("reserved control opcode 0xB", steps=(w(frame(0xB, b"x")),)),
    Case("a continuation first", steps=(w(frame(CONT, b"x")),)),
    Case("a fragmented ping", steps=(w(frame(PING, b"x", fin=False)),)),
    Case("a ping of 126 bytes", steps=(w(frame(PING, b"x" * 126)),)),
    Case("a ping", steps=(w(frame(PING, b"hello")),)),
    Case("an empty ping", steps=(w(frame(PING)),)),
    Case("an unsolicited pong", steps=(w(frame(PONG, b"x")),)),
    Case("a message of 1 KiB + 1", steps=(w(frame(TEXT, b"x" * (MAX_MESSAGE_SIZE + 1))),)),
    Case("a message of 1 KiB", steps=(w(frame(TEXT, b"x" * MAX_MESSAGE_SIZE)),)),
    Case(
        "two fragments of 600 bytes",
        steps=(w(frame(TEXT, b"x" * 600, fin=False), frame(CONT, b"x" * 600)),),
    ),
    Case("invalid UTF-8", steps=(w(frame(TEXT, b"\xff\xfe")),)),
    Case(
        "invalid UTF-8 in fragments", steps=(w(frame(TEXT, b"a", fin=False), frame(CONT, b"\xff")),)
    ),
    Case(
        "UTF-8 split between fragments",
        steps=(w(frame(TEXT, "é".encode()[:1], fin=False), frame(CONT, "é".encode()[1:])),),
    ),
    Case("the token in 3 fragments", steps=(Token(parts=3),)),
    Case("the token in 16 fragments", steps=(Token(parts=16),)),
    Case("the token in 17 fragments", steps=(Token(parts=17),)),
    Case(
        "1,000 empty fragments, then the end",
        steps=(w(frame(TEXT, b"", fin=False), frame(CONT, b"", fin=False) * 999, frame(CONT)),),
    ),
    Case(
        "a ping between fragments",
        steps=(w(frame(TEXT, b"a", fin=False), frame(PING, b"p"), frame(CONT, b"b")),),
    ),
    Case(
        "a message left unfinished, then a close",
        steps=(w(frame(TEXT, b"a", fin=False)),),
    ),
    Case(
        "a length of 2^63 - 1", steps=(Write(bytes([0x81, 0xFF]) + (2**63 - 1).to_bytes(8, "big")),)
    ),
    Case(
        "a length with its top bit set",
        steps=(Write(bytes([0x81, 0xFF]) + (2**63).to_bytes(8, "big")),),
    ),
    Case(
        "a 16-bit length for 3 bytes",
        steps=(Write(bytes([0x81, 0xFE, 0, 3]) + frame(TEXT, b"abc")[2:]),),
    ),
    Case("frames in pieces of 1 byte", steps=(Token(), w(frame(PING, b"ab"))), pieces=1),
]

CLOSING = [
    Case("a close with a reason", steps=(w(close_frame(1000, b"bye")),), final_close=False),
    Case("an empty close", steps=(w(close_frame(None)),), final_close=False),
    Case("a close of 1 byte", steps=(w(frame(CLOSE, b"\x03")),), final_close=False),
    Case("close code 999", steps=(w(close_frame(999)),), final_close=False),
    Case("close code 1004", steps=(w(close_frame(1004)),), final_close=False),
    Case("close code 1005", steps=(w(close_frame(1005)),), final_close=False),
    Case("close code 1015", steps=(w(close_frame(1015)),), final_close=False),
    Case("close code 3000", steps=(w(close_frame(3000)),), final_close=False),
    Case("close code 4999", steps=(w(close_frame(4999)),), final_close=False),
    Case("close code 5000", steps=(w(close_frame(5000)),), final_close=False),
    Case("a close reason not UTF-8", steps=(w(close_frame(1000, b"\xff")),), final_close=False),
    Case(
        "a close of 126 bytes",
        steps=(w(frame(CLOSE, b"\x03\xe8" + b"x" * 124)),),
        final_close=False,
    ),
    Case(
        "data after the close", steps=(w(close_frame(1000), frame(TEXT, b"x")),), final_close=False
    ),
    Case(
        "a ping after the close",
        steps=(w(close_frame(1000), frame(PING, b"x")),),
        final_close=False,
    ),
    Case("FIN without a close", steps=(Shutdown(),), final_close=False),
    Case("the close after a token", steps=(Token(), w(close_frame(1001))), final_close=False),
    Case("no token: the server closes", steps=(WaitFor("CLOSE"),)),
    Case("the server's close unanswered", steps=(WaitFor("CLOSE"),), final_close=False),
    Case(
        "the server's close answered by FIN",
        steps=(WaitFor("CLOSE"), Shutdown()),
        final_close=False,
    ),
    # A frame half received when a timer closes: the rest must be read as its rest.
    Case(
        "a ping cut in two by the server's close",
        steps=(w(frame(PING, b"abc")[:3]), WaitFor("CLOSE"), w(frame(PING, b"abc")[3:])),
    ),
    Case(
        "a ping's header cut by the server's close",
        steps=(w(frame(PING, b"abc")[:1]), WaitFor("CLOSE"), w(frame(PING, b"abc")[1:])),
    ),
    Case(
        "a close cut in two by the server's close",
        steps=(w(close_frame(1000)[:4]), WaitFor("CLOSE"), w(close_frame(1000)[4:])),
        final_close=False,
    ),
    Case(
        "a text cut in two by the server's close",
        steps=(w(frame(TEXT, b"abcdef")[:5]), WaitFor("CLOSE"), w(frame(TEXT, b"abcdef")[5:])),
    ),
]

AFTER_THE_TOKEN = [
    Case("a second message", steps=(Token(), Authenticated(), w(frame(TEXT, b"hello")))),
    Case("a binary message", steps=(Token(), Authenticated(), w(frame(BINARY, b"hello")))),
    Case("a ping once registered", steps=(Token(), Authenticated(), w(frame(PING, b"hello")))),
    Case("a pong once registered", steps=(Token(), Authenticated(), w(frame(PONG, b"hello")))),
    Case("1,000 pings", steps=(Token(), Authenticated(), w(frame(PING, b"p") * 1000))),
    Case("1,000 pongs", steps=(Token(), Authenticated(), w(frame(PONG, b"p") * 1000))),
    Case(
        "as many pings as allowed (the last is the suite's own)",
        steps=(Token(), Authenticated(), w(frame(PING) * (MAX_CONTROL_FRAMES - 1))),
    ),
    Case("an unmasked ping", steps=(Token(), Authenticated(), w(frame(PING, b"x", masked=False)))),
    Case("a reserved opcode", steps=(Token(), Authenticated(), w(frame(0x5, b"x")))),
    Case(
        "a message begun, never ended",
        steps=(Token(), Authenticated(), w(frame(TEXT, b"a", fin=False))),
    ),
    Case(
        "100 empty fragments",
        steps=(
            Token(),
            Authenticated(),
            w(frame(TEXT, b"", fin=False), frame(CONT, b"", fin=False) * 99),
        ),
    ),
    Case(
        "a message too big, in fragments",
        steps=(
            Token(),
            Authenticated(),
            w(frame(TEXT, b"x" * 600, fin=False), frame(CONT, b"x" * 600)),
        ),
    ),
]


@dataclasses.dataclass(frozen=True)
class Difference:
    """What the broadcaster answers where websockets answers otherwise, and why it's right."""

    broadcaster: str
    why: str


#: Every case where the two servers differ: the broadcaster's transcript, asserted.
DIFFERENCES: dict[str, Difference] = {
    "version 8": Difference(
        "426 | sec-websocket-version: 13 | body | eof",
        "RFC 6455 4.4: a server MUST answer a version it doesn't speak with the versions it"
        " does, in Sec-WebSocket-Version; websockets answers 400 without the header",
    ),
    "no Host": Difference(
        "400 | body | eof", "RFC 9112 3.2: an HTTP/1.1 request without Host MUST get 400"
    ),
    "two Hosts": Difference(
        "400 | body | eof", "RFC 9112 3.2: more than one Host field line MUST get 400"
    ),
    "a Host that isn't one": Difference(
        "400 | body | eof", "RFC 9112 3.2: a Host with an invalid value MUST get 400"
    ),
    "HEAD health check": Difference(
        "200 | eof", "RFC 9110 9.3.2: a response to HEAD has the headers of a GET and no body"
    ),
    "bare LF": Difference(
        "400 | body | eof",
        "RFC 6455 4.2.1: a request that isn't a valid handshake gets an HTTP error (websockets"
        " closes without one); answered at once rather than left to the open timeout",
    ),
    "a bare CR in a value": Difference("400 | body | eof", "as for a bare LF: RFC 6455 4.2.1"),
    "NUL in a value": Difference("400 | body | eof", "as for a bare LF: RFC 6455 4.2.1"),
    "a folded header (obs-fold)": Difference(
        "400 | body | eof", "RFC 9112 5.2 allows 400 for obs-fold; RFC 6455 4.2.1 asks an answer"
    ),
    "whitespace before a colon": Difference(
        "400 | body | eof", "RFC 9112 5.1: a server MUST reject it with 400"
    ),
    "a path that isn't ASCII": Difference("400 | body | eof", "as for a bare LF: RFC 6455 4.2.1"),
    "a body": Difference(
        "400 | body | eof", "a handshake has no body; RFC 6455 4.2.1 asks an answer"
    ),
    "Transfer-Encoding": Difference(
        "400 | body | eof", "a handshake has no body; RFC 6455 4.2.1 asks an answer"
    ),
    "20 KiB of headers in one write": Difference(
        "431 | body | eof",
        "the broadcaster reads at most 16 KiB of request, however TCP cuts it: an anonymous"
        " client holds no more (websockets bounds only lines and their count: up to 1 MiB)",
    ),
    "20 KiB of headers in 1 KiB pieces": Difference(
        "431 | body | eof", "as in one write: the limit doesn't depend on how TCP cut the request"
    ),
    "1,000 pings": Difference(
        f"101 | PONG b'p' (x{MAX_CONTROL_FRAMES + 1}) | CLOSE 1008 'too many control frames'"
        f" | PONG b'p' (x{1000 - MAX_CONTROL_FRAMES - 1}) | eof",
        f"at most {MAX_CONTROL_FRAMES} pings and pongs per keepalive interval: each costs a"
        " parse and a pong, and a client flooding them held the event loop from other"
        " clients (a new client's welcome took 300 ms instead of 1.5); the pings read"
        " with them are still answered, as websockets answers pings after its close",
    ),
    "1,000 pongs": Difference(
        "101 | CLOSE 1008 'too many control frames' | eof", "as for 1,000 pings"
    ),
    "the token in 17 fragments": Difference(
        "101 | CLOSE 1009 'too many fragments' | eof",
        "at most 16 frames a message: each costs a Frame object while the message lasts,"
        " so a message in empty fragments would grow without bound (websockets' asyncio"
        " server stops only at its queue's limit)",
    ),
    "1,000 empty fragments, then the end": Difference(
        "101 | CLOSE 1009 'too many fragments' | eof", "as for 17 fragments"
    ),
    "a message begun, never ended": Difference(
        "101 | CLOSE 1008 'clients send nothing' | eof",
        "after the token a client may send no message: the broadcaster closes at its first"
        " frame, where websockets waits for the end, which may never come",
    ),
    "100 empty fragments": Difference(
        "101 | CLOSE 1008 'clients send nothing' | eof", "as for a message never ended"
    ),
    "a message too big, in fragments": Difference(
        "101 | CLOSE 1008 'clients send nothing' | eof", "as for a message never ended"
    ),
}


# Running the cases.

#: A ping's payload, and what the transcript says of its pong.
SYNC = b"sync"
SYNCED = "PONG b'sync'"


def run(case: Case, port: int, token: str, authenticated: Callable[[], None]) -> Transcript:
    """Write ``case`` to ``port``; return what came back."""
    wire = Wire(port)
    try:
        writes: list[bytes | Step] = [case.handshake or request()]
        for step in case.steps:
            if isinstance(step, Write):
                writes.append(step.data)
            elif isinstance(step, Token):
                writes.append(_token_frames(token, step.parts))
            else:
                writes.append(step)
        if not _wait_handshake(wire, writes.pop(0), case.pieces):
            return wire.transcript
        for item in writes:
            if isinstance(item, bytes):
                _write(wire, item, case.pieces)
            elif isinstance(item, Authenticated):
                authenticated()
            elif isinstance(item, WaitFor):
                wire.read(item.arrived, timeout=CLOSE_TIMEOUT + AUTH_TIMEOUT + 10)
            elif isinstance(item, Shutdown):
                wire.shutdown()
        if case.final_close:
            # websockets' handler reads a message in a task of its own, after
            # the protocol has read every frame that came with it: a close
            # written with the message would be read first. Wait for the
            # answer to a ping written after everything else.
            _write(wire, frame(PING, SYNC), None)
            wire.read(lambda t: SYNCED in t.frames, timeout=CLOSE_TIMEOUT + 10)
            _write(wire, close_frame(1000), None)
        wire.read(timeout=CLOSE_TIMEOUT + 10)
        wire.transcript.frames = [f for f in wire.transcript.frames if f != SYNCED]
        return wire.transcript
    finally:
        wire.close()


def _token_frames(token: str, parts: int) -> bytes:
    data = token.encode()
    size = -(-len(data) // parts)
    chunks = [data[i * size : (i + 1) * size] for i in range(parts)]
    return b"".join(
        frame(TEXT if i == 0 else CONT, chunk, fin=i == parts - 1) for i, chunk in enumerate(chunks)
    )


def _write(wire: Wire, data: bytes, pieces: int | None) -> None:
    if pieces is None:
        wire.write(data)
        return
    for start in range(0, len(data), pieces):
        wire.write(data[start : start + pieces])


def _wait_handshake(wire: Wire, data: bytes, pieces: int | None) -> bool:
    """Send the request, read the answer; whether the connection is open."""
    _write(wire, data, pieces)
    wire.read(lambda t: t.status is not None, timeout=CLOSE_TIMEOUT + 10)
    if wire.transcript.status != "101":
        wire.read(timeout=CLOSE_TIMEOUT + 10)
        return False
    return wire.transcript.end == "open"


# The servers.


@pytest.fixture
def servers(
    start_broadcaster: Callable[..., BroadcasterProcess],
) -> Iterator[tuple[BroadcasterProcess, int, set[str]]]:
    """A broadcaster and websockets' server alike; the tokens the latter accepts."""
    broadcaster = start_broadcaster(
        BROADCASTER_AUTH_TIMEOUT=str(AUTH_TIMEOUT), BROADCASTER_CLOSE_TIMEOUT=str(CLOSE_TIMEOUT)
    )
    tokens: set[str] = set()
    origins = [*(Origin(o) for o in live_settings.allowed_origins), None]
    with reference_server(
        tokens=tokens,
        origins=origins,
        auth_timeout=AUTH_TIMEOUT,
        close_timeout=CLOSE_TIMEOUT,
        ping_interval=20,
        max_size=MAX_MESSAGE_SIZE,
    ) as port:
        yield broadcaster, port, tokens


def compare(cases: list[Case], servers: tuple[BroadcasterProcess, int, set[str]]) -> None:
    """Run every case on both servers; fail with every unexplained difference at once."""
    broadcaster, reference_port, tokens = servers
    root = user("root", is_superuser=True)
    failures = []
    for case in cases:
        token = token_for(root)
        tokens.add(token)
        opened = broadcaster.metrics()["broadcaster_connections_opened_total"]

        def registered(before: float = opened) -> None:
            wait_until(
                lambda: broadcaster.metrics()["broadcaster_connections_opened_total"] > before,
                "the client to be registered",
            )

        def synchronised() -> None:
            pass  # websockets' handler reads the token as soon as it arrives

        ours = run(case, broadcaster.port, token, registered).summary()
        theirs = run(case, reference_port, token, synchronised).summary()
        difference = DIFFERENCES.get(case.name)
        if difference is None and ours != theirs:
            failures.append(f"{case.name}:\n  broadcaster: {ours}\n  websockets:  {theirs}")
        elif difference is not None and ours != difference.broadcaster:
            failures.append(
                f"{case.name} (a known difference):\n  broadcaster: {ours}\n"
                f"  expected:    {difference.broadcaster}\n  websockets:  {theirs}"
            )
        elif difference is not None and ours == theirs:
            failures.append(f"{case.name}: listed as a difference, but both say {ours}")
    assert not failures, "\n".join(failures)


def test_opening_handshakes(servers: tuple[BroadcasterProcess, int, set[str]]) -> None:
    compare(HANDSHAKES, servers)


def test_frames_before_the_token(servers: tuple[BroadcasterProcess, int, set[str]]) -> None:
    compare(BEFORE_THE_TOKEN, servers)


def test_closing_handshakes(servers: tuple[BroadcasterProcess, int, set[str]]) -> None:
    compare(CLOSING, servers)


def test_frames_after_the_token(servers: tuple[BroadcasterProcess, int, set[str]]) -> None:
    compare(AFTER_THE_TOKEN, servers)


def test_every_difference_names_a_case() -> None:
    names = [
        case.name
        for cases in (HANDSHAKES, BEFORE_THE_TOKEN, CLOSING, AFTER_THE_TOKEN)
        for case in cases
    ]
    assert len(names) == len(set(names)), "case names must be unique"
    assert set(DIFFERENCES) <= set(names)
    json.dumps({name: d.why for name, d in DIFFERENCES.items()})  # plain text, for the docs
