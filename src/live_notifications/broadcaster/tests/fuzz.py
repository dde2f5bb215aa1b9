"""Coverage-guided fuzzing of what the broadcaster reads from clients (atheris).

Two targets, each a :class:`.Connection` fed bytes in pieces whose sizes
the fuzzer chooses too, through a transport that records what is written:

- ``request``: an opening handshake. :func:`.handshake.parse` must read any
  request it accepts exactly as websockets' parser does.
- ``frames``: frames after a good handshake, with a handler that takes the
  first message as the token.

For both, no exception may escape; the bytes fed in pieces must give the
same writes, messages and end as fed whole; what the connection holds stays
within its bounds (a request's bytes, a frame's, the fragments of a
message); and written to a client that never reads, it writes at most the
write bound plus what one read can ask for (pongs to its pings) before it
cuts the client.

``python -m live_notifications.broadcaster.tests.fuzz TARGET [libFuzzer flags]`` from
``services/`` (``make fuzz`` runs both for ``FUZZ_SECONDS`` each); the
unit tests run each for a bounded number of inputs (:mod:`.test_fuzz`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
import sys
import tempfile
from pathlib import Path
from typing import Any

import atheris

with atheris.instrument_imports(include=["live_notifications.broadcaster", "websockets"]):
    from websockets.http11 import Request, Response
    from websockets.protocol import State
    from websockets.streams import StreamReader

    from live_notifications.broadcaster import handshake
    from live_notifications.broadcaster.connection import MAX_REQUEST, Connection, Settings

#: The write bound of the connections fuzzed: small, so that floods reach it.
MAX_BUFFER = 4096
#: A request the frames target opens with.
UPGRADE = (
    b"GET / HTTP/1.1\r\nHost: example\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)
MASK = b"\x01\x02\x03\x04"
DATE = re.compile(rb"\r\nDate: [^\r]*")


def _masked(first: int, payload: bytes) -> bytes:
    body = bytes(byte ^ MASK[i % 4] for i, byte in enumerate(payload))
    return bytes([first, 0x80 | len(payload)]) + MASK + body


#: Where the fuzzer starts: inputs that reach the interesting paths.
SEEDS = {
    "request": [UPGRADE, UPGRADE.replace(b"\r\n", b"\n"), b"GET /healthz HTTP/1.0\r\n\r\n"],
    "frames": [
        _masked(0x81, b"token") + _masked(0x89, b"ping") + _masked(0x8A, b""),
        _masked(0x01, b"to") + _masked(0x89, b"") + _masked(0x80, b"ken"),
        _masked(0x01, b"") + _masked(0x00, b"") * 20,
        _masked(0x88, b"\x03\xe8bye"),
        _masked(0x89, b"x" * 125) * 40,
    ],
}


class Transport:
    """What a connection writes, kept; ``drains``: whether the kernel takes it all at once."""

    def __init__(self, *, drains: bool) -> None:
        self.drains = drains
        self.written = bytearray()
        self.ended: list[str] = []

    def write(self, data: bytes) -> None:
        self.written += data

    def get_write_buffer_size(self) -> int:
        return 0 if self.drains else len(self.written)

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self.ended.append("eof")

    def close(self) -> None:
        self.ended.append("close")

    def abort(self) -> None:
        self.ended.append("abort")

    def is_closing(self) -> bool:
        return bool(self.ended)

    def pause_reading(self) -> None:
        pass

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 50000) if name == "peername" else default


class Handler:
    """Accepts every handshake; records what the connection tells it."""

    def __init__(self) -> None:
        self.events: list[object] = []

    def process_request(self, connection: Connection, request: Request) -> Response | None:
        return None

    def connection_open(self, connection: Connection) -> None:
        self.events.append("open")

    def message_begun(self, connection: Connection) -> None:
        self.events.append("begun")

    def message_received(self, connection: Connection, message: str | bytes) -> None:
        self.events.append(message)

    def too_slow(self, connection: Connection) -> None:
        self.events.append("too slow")

    def connection_closed(self, connection: Connection) -> None:
        self.events.append("closed")


@dataclasses.dataclass
class Outcome:
    written: bytes
    events: list[object]
    ended: list[str]
    close_code: int | None


HANDLER = Handler()
SETTINGS = Settings(
    HANDLER, origins=None, max_size=1024, max_buffer=MAX_BUFFER, close_timeout=5, open_timeout=10
)
LOOP = asyncio.new_event_loop()


def feed(pieces: list[bytes], *, opening: bytes = b"", drains: bool = True) -> Outcome:
    """Feed a new connection ``opening`` whole, then ``pieces`` one read each."""
    return LOOP.run_until_complete(_feed(pieces, opening, drains))


async def _feed(pieces: list[bytes], opening: bytes, drains: bool) -> Outcome:
    HANDLER.events = []
    transport = Transport(drains=drains)
    connection = Connection(SETTINGS)
    connection.connection_made(transport)  # type: ignore[arg-type]
    try:
        if opening:
            connection.data_received(opening)
        for piece in pieces:
            if transport.ended and transport.ended[-1] != "eof":
                break  # closed or aborted: the loop would read no more
            connection.data_received(piece)
            _check_bounds(connection, piece, transport)
        # Date changes by the second: what differs there isn't the split's doing.
        written = DATE.sub(b"", bytes(transport.written))
        return Outcome(written, HANDLER.events, transport.ended, connection.close_code)
    finally:
        connection.connection_lost(None)


def _check_bounds(connection: Connection, piece: bytes, transport: Transport) -> None:
    held = len(connection._buffer)
    if connection.state is State.CONNECTING:
        assert held <= MAX_REQUEST, f"holds {held} bytes of request"
    else:
        assert held <= SETTINGS.max_frame, f"holds {held} bytes of frame"
    fragments = connection._fragments
    assert fragments is None or len(fragments) <= SETTINGS.max_fragments
    if not transport.drains:
        # Over the bound, a read is answered at most once more (pongs are no
        # larger than the pings they answer), then a close frame.
        bound = MAX_BUFFER + len(piece) + 256
        assert len(transport.written) <= bound, f"{len(transport.written)} bytes written"


def _cut(data: bytes, sizes: list[int]) -> list[bytes]:
    """``data`` in pieces of these sizes, taken in turn; whole if there are none."""
    if not sizes:
        return [data]
    pieces, start = [], 0
    while start < len(data):
        for size in sizes:
            pieces.append(data[start : start + size])
            start += size
    return [piece for piece in pieces if piece]


def _split(data: bytes) -> tuple[bytes, list[int]]:
    """An input's payload, and the sizes of the pieces to feed it in.

    The first byte says how many sizes follow (0 to 12: 0 feeds it whole),
    each a byte (a piece of 1 to 256 bytes); the rest is the payload.
    """
    if not data:
        return b"", []
    count = data[0] % 13
    sizes = [size + 1 for size in data[1 : 1 + count]]
    return data[1 + count :], sizes


def request_target(data: bytes) -> None:
    payload, sizes = _split(data)
    end = payload.find(b"\r\n\r\n")
    if end >= 0:
        head = payload[: end + 4]
        ours = handshake.parse(head)
        if ours is not None:
            theirs = _websockets_parse(head)
            assert theirs is not None, f"websockets refuses what parse() read: {head!r}"
            assert (ours.path, ours.method, ours.protocol) == (
                theirs.path,
                theirs.method,
                theirs.protocol,
            )
            assert list(ours.headers.raw_items()) == list(theirs.headers.raw_items())
    whole = feed([payload])
    assert feed(_cut(payload, sizes)) == whole, "a request in pieces read otherwise"


def frames_target(data: bytes) -> None:
    payload, sizes = _split(data)
    whole = feed([payload], opening=UPGRADE)
    assert feed(_cut(payload, sizes), opening=UPGRADE) == whole, "frames in pieces read otherwise"
    feed(_cut(payload, sizes), opening=UPGRADE, drains=False)  # bounds checked within


def _websockets_parse(head: bytes) -> Request | None:
    reader = StreamReader()
    reader.feed_data(head)
    reader.feed_eof()
    parser = Request.parse(reader.read_line)
    try:
        next(parser)
    except StopIteration as done:
        request: Request = done.value
        return request
    except Exception:  # any refusal
        return None
    return None


TARGETS = {"request": request_target, "frames": frames_target}


def main(argv: list[str]) -> None:
    if len(argv) < 2 or argv[1] not in TARGETS:
        sys.exit(f"usage: python -m {__spec__.name} {{{','.join(TARGETS)}}} [libFuzzer flags]")
    name, flags = argv[1], argv[2:]
    corpus = tempfile.mkdtemp(prefix=f"fuzz-{name}-")
    for i, seed in enumerate(SEEDS[name]):
        # Fed whole (no sizes), and in pieces of 1, 2 and 3 bytes.
        Path(corpus, f"seed-{i}").write_bytes(b"\x00" + seed)
        Path(corpus, f"seed-{i}-cut").write_bytes(b"\x03\x00\x01\x02" + seed)
    atheris.Setup([argv[0], *flags, corpus], TARGETS[name])
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
