"""One connection of the load generator: a WebSocket client that only counts.

A raw :class:`asyncio.Protocol`, not a websockets client: thousands of them
share a process that must keep up with a server writing hundreds of thousands
of frames a second. It does the opening handshake itself (offering
permessage-deflate, as browsers do), sends the first message, answers pings
and close frames, and reads server frames minimally: unmasked, FIN set in
the common case, the event's sequence number found with :meth:`bytes.find`
rather than by parsing JSON. Just enough of RFC 6455 and 7692 for the two
servers the bench measures; not a general client.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import time
import zlib
from array import array
from typing import Protocol, cast

from . import audiences

#: Where the bench's events carry their sequence number: ``object_id``, as the
#: relay serializes it (``json.dumps`` separators); the app events of the
#: mixed run carry it in their data, under the same name.
SEQUENCE_MARK = b'"object_id": "'
_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
#: RFC 7692: the end of a compressed message, which senders strip.
_DEFLATE_TAIL = b"\x00\x00\xff\xff"
#: Largest HTTP response accepted before the upgrade: anything bigger is wrong.
_MAX_RESPONSE = 16 * 1024

# States, as small integers: compared on every frame.
HANDSHAKE, AUTHENTICATING, OPEN, CLOSED = range(4)

# Outcomes of a connection attempt.
ACCEPTED, REFUSED, FAILED = "accepted", "refused", "failed"

OP_CONTINUATION, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0, 1, 2, 8, 9, 10
#: Close code when the server sent a close frame without one, or none at all.
NO_STATUS, ABNORMAL = 1005, 1006


class Counters(Protocol):
    """What clients report to: the generator process (:mod:`.loadgen`)."""

    #: Sequence numbers of the events counted now are in ``[first, end)``.
    first: int
    end: int
    #: One entry per counted delivery: its sequence number and receipt time.
    seqs: array[int]
    times: array[float]
    #: Events outside the window, other messages, events to clients not allowed them.
    late: int
    other: int
    unexpected: int
    #: In the mixed-audience run (:mod:`.audiences`), the number of allowed
    #: users; 0 when every allowed client is due every event.
    mixed: int

    def outcome(self, client: Client, kind: str, reason: str) -> None:
        """A connection attempt ended: accepted, refused (HTTP 503) or failed."""

    def dropped(self, client: Client, code: int) -> None:
        """An accepted connection was closed."""


def client_frame(opcode: int, payload: bytes) -> bytes:
    """A masked, unfragmented frame, as clients must send them."""
    length = len(payload)
    if length < 126:
        header = bytes((0x80 | opcode, 0x80 | length))
    elif length < 1 << 16:
        header = bytes((0x80 | opcode, 0x80 | 126)) + length.to_bytes(2, "big")
    else:
        header = bytes((0x80 | opcode, 0x80 | 127)) + length.to_bytes(8, "big")
    mask = os.urandom(4)
    repeated = (mask * (length // 4 + 1))[:length]
    masked = (int.from_bytes(payload, "big") ^ int.from_bytes(repeated, "big")).to_bytes(
        length, "big"
    )
    return header + mask + masked


def handshake_request(host: str, key: bytes) -> bytes:
    """The opening handshake, with the permessage-deflate offer that browsers make."""
    return (
        b"GET / HTTP/1.1\r\n"
        b"Host: " + host.encode() + b"\r\n"
        b"Upgrade: websocket\r\n"
        b"Connection: Upgrade\r\n"
        b"Sec-WebSocket-Key: " + key + b"\r\n"
        b"Sec-WebSocket-Version: 13\r\n"
        b"Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"
        b"User-Agent: bench\r\n"
        b"\r\n"
    )


def accept_value(key: bytes) -> str:
    """The ``Sec-WebSocket-Accept`` that the server must answer ``key`` with."""
    return base64.b64encode(hashlib.sha1(key + _GUID).digest()).decode()  # noqa: S324 - RFC 6455


def deflate_parameters(header: str | None) -> tuple[int, bool] | None:
    """Parse an accepted permessage-deflate: ``(server window bits, no context takeover)``.

    ``None`` if the server didn't accept compression.
    """
    if not header:
        return None
    name, *parameters = (part.strip() for part in header.split(",")[0].split(";"))
    if name != "permessage-deflate":
        return None
    bits, no_takeover = 15, False
    for parameter in parameters:
        key, _, value = parameter.partition("=")
        if key == "server_max_window_bits":
            bits = int(value.strip('"'))
        elif key == "server_no_context_takeover":
            no_takeover = True
    # zlib's raw inflate wants 9 to 15: a larger window reads a smaller one's output.
    return max(bits, 9), no_takeover


class Client(asyncio.Protocol):
    """A client that authenticates with ``hello`` and counts the events it receives.

    Authenticated means: the server sent its first message (the
    broadcaster's welcome, the baseline's greeting, or an event). Counts are
    per client (:attr:`received`, :attr:`duplicates`) and per generator
    (:class:`Counters`).
    """

    __slots__ = (
        "allowed",
        "authenticated_at",
        "buffer",
        "close_code",
        "counters",
        "duplicates",
        "fragments",
        "fragments_compressed",
        "hello",
        "inflater",
        "key",
        "last",
        "no_takeover",
        "rank",
        "received",
        "request",
        "resolved",
        "state",
        "transport",
        "window_bits",
    )

    def __init__(
        self, counters: Counters, *, host: str, hello: str, allowed: bool, rank: int = -1
    ) -> None:
        self.counters = counters
        self.allowed = allowed
        #: Its rank among the allowed users, for the mixed-audience run.
        self.rank = rank
        self.key = base64.b64encode(os.urandom(16))
        self.request = handshake_request(host, self.key)
        self.hello = client_frame(OP_TEXT, hello.encode())
        self.state = HANDSHAKE
        self.transport: asyncio.Transport | None = None
        self.buffer = b""
        self.fragments: list[bytes] | None = None
        self.fragments_compressed = False
        self.inflater: zlib._Decompress | None = None
        self.window_bits = 0
        self.no_takeover = False
        self.received = 0
        self.duplicates = 0
        self.last = -1
        self.close_code = 0
        self.authenticated_at = 0.0
        #: Whether :meth:`Counters.outcome` was called: once per client.
        self.resolved = False

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A TCP transport; uvloop's doesn't subclass asyncio.Transport.
        self.transport = cast("asyncio.Transport", transport)
        self.transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        if self.state == HANDSHAKE:
            self._handshake(data)
        elif self.state != CLOSED:
            self._frames(self.buffer + data if self.buffer else data, time.monotonic())

    def eof_received(self) -> bool | None:
        return None  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        state, self.state = self.state, CLOSED
        code = self.close_code or ABNORMAL
        if state == OPEN:
            self.counters.dropped(self, code)
        elif not self.resolved:
            reason = "reset" if state == HANDSHAKE else f"closed {code}"
            self.resolve(FAILED, reason)

    # What the generator calls.

    def abort(self) -> None:
        """Drop the connection now, without a closing handshake."""
        if self.transport is not None:
            self.transport.abort()

    def start_window(self, first: int) -> None:
        """Count events from ``first`` on, from zero."""
        self.received = 0
        self.duplicates = 0
        self.last = first - 1

    # The opening handshake.

    def _handshake(self, data: bytes) -> None:
        self.buffer += data
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(self.buffer) > _MAX_RESPONSE:
                self._fail("response too large")
            return
        head, rest = self.buffer[:end].decode("latin-1"), self.buffer[end + 4 :]
        self.buffer = b""
        status_line, *lines = head.split("\r\n")
        parts = status_line.split(" ", 2)
        status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
        if status == 503:
            self.resolve(REFUSED, "503")
            self._close_transport()
            return
        if status != 101:
            self._fail(f"HTTP {status}")
            return
        headers = {}
        for line in lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if headers.get("sec-websocket-accept") != accept_value(self.key):
            self._fail("bad Sec-WebSocket-Accept")
            return
        deflate = deflate_parameters(headers.get("sec-websocket-extensions"))
        if deflate is not None:
            self.window_bits, self.no_takeover = deflate
            self.inflater = zlib.decompressobj(-self.window_bits)
        self.state = AUTHENTICATING
        assert self.transport is not None
        self.transport.write(self.hello)
        if rest:
            self._frames(rest, time.monotonic())

    # Frames: the hot path.

    def _frames(self, buffer: bytes, now: float) -> None:
        position, size = 0, len(buffer)
        while size - position >= 2:
            first, length = buffer[position], buffer[position + 1]
            start = position + 2
            if length >= 126:
                if length == 126:
                    start += 2
                elif length == 127:
                    start += 8
                else:  # the mask bit: servers must not mask
                    self._fail("masked server frame")
                    return
                if start > size:
                    break
                length = int.from_bytes(buffer[position + 2 : start], "big")
            end = start + length
            if end > size:
                break
            payload = buffer[start:end]
            position = end
            if first == 0x81:  # FIN, text: the common case
                self._message(payload, now)
            elif first == 0xC1:  # FIN, RSV1 (compressed), text
                self._message(self._inflate(payload), now)
            else:
                self._other_frame(first, payload, now)
            if self.state == CLOSED:
                return
        self.buffer = buffer[position:] if position < size else b""

    def _message(self, payload: bytes, now: float) -> None:
        index = payload.find(SEQUENCE_MARK)
        counters = self.counters
        if self.state == AUTHENTICATING:
            self._authenticated(now)
        elif index < 0:
            counters.other += 1
        if index < 0:
            return
        start = index + len(SEQUENCE_MARK)
        sequence = int(payload[start : payload.find(b'"', start)])
        if not self.allowed or (
            counters.mixed and not audiences.receives(sequence, self.rank, counters.mixed)
        ):
            counters.unexpected += 1
        elif not counters.first <= sequence < counters.end:
            counters.late += 1
        elif sequence > self.last:
            self.last = sequence
            self.received += 1
            counters.seqs.append(sequence)
            counters.times.append(now)
        else:
            self.duplicates += 1

    def _inflate(self, payload: bytes) -> bytes:
        if self.inflater is None:
            self._fail("compressed frame without permessage-deflate")
            return b""
        if self.no_takeover:
            self.inflater = zlib.decompressobj(-self.window_bits)
        return self.inflater.decompress(payload + _DEFLATE_TAIL)

    def _other_frame(self, first: int, payload: bytes, now: float) -> None:
        """Everything but a whole text message: control frames, fragments."""
        opcode, fin, compressed = first & 0x0F, first & 0x80, first & 0x40
        assert self.transport is not None
        if opcode == OP_PING:
            self.transport.write(client_frame(OP_PONG, payload))
        elif opcode == OP_PONG:
            pass
        elif opcode == OP_CLOSE:
            self.close_code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else NO_STATUS
            self.transport.write(client_frame(OP_CLOSE, payload[:2]))
            self._close_transport()
        elif opcode in (OP_TEXT, OP_BINARY) and fin:  # binary, or compressed binary
            self._message(self._inflate(payload) if compressed else payload, now)
        elif opcode in (OP_TEXT, OP_BINARY):  # the first of several frames
            self.fragments, self.fragments_compressed = [payload], bool(compressed)
        elif opcode == OP_CONTINUATION and self.fragments is not None:
            self.fragments.append(payload)
            if fin:
                message, self.fragments = b"".join(self.fragments), None
                self._message(self._inflate(message) if self.fragments_compressed else message, now)
        else:
            self._fail(f"unexpected frame {first:#x}")

    # Endings.

    def _authenticated(self, now: float) -> None:
        self.state = OPEN
        self.authenticated_at = now
        self.resolve(ACCEPTED, "")

    def resolve(self, kind: str, reason: str) -> None:
        """Report how the connection attempt ended, once."""
        if not self.resolved:
            self.resolved = True
            self.counters.outcome(self, kind, reason)

    def _fail(self, reason: str) -> None:
        self.resolve(FAILED, reason)
        if self.transport is not None:
            self.transport.abort()
        self.state = CLOSED

    def _close_transport(self) -> None:
        if self.transport is not None:
            self.transport.close()
