"""Raw bytes on a socket: what a hostile client writes, and a transcript of what comes back.

:class:`.bare.BareClient` speaks the protocol through websockets' client;
the cases of the differential suite need to write what no client library
would (unmasked frames, reserved bits, bare LF, a ping cut in two), so
frames and requests are built by hand here, and the server's answer is read
as bytes and decoded as plainly as a protocol analyser would.
"""

from __future__ import annotations

import contextlib
import dataclasses
import select
import socket
import struct
import time
from collections.abc import Callable

#: The mask of every frame written here: fixed, so that transcripts repeat.
MASK = b"\x37\xfa\x21\x3d"
#: A valid key, and the answer RFC 6455's own example gives it.
KEY = "dGhlIHNhbXBsZSBub25jZQ=="

TEXT, BINARY, CONT, CLOSE, PING, PONG = 0x1, 0x2, 0x0, 0x8, 0x9, 0xA
_NAMES = {0x0: "CONT", 0x1: "TEXT", 0x2: "BINARY", 0x8: "CLOSE", 0x9: "PING", 0xA: "PONG"}


def request(
    *,
    path: str = "/",
    method: str = "GET",
    version: str = "HTTP/1.1",
    host: str | None = "127.0.0.1",
    headers: list[tuple[str, str]] | None = None,
    eol: bytes = b"\r\n",
) -> bytes:
    """An opening handshake; ``headers`` replace the defaults (upgrade, key, version 13)."""
    lines = [f"{method} {path} {version}".encode()]
    if host is not None:
        lines.append(b"Host: " + host.encode())
    if headers is None:
        headers = [
            ("Upgrade", "websocket"),
            ("Connection", "Upgrade"),
            ("Sec-WebSocket-Key", KEY),
            ("Sec-WebSocket-Version", "13"),
        ]
    lines += [f"{name}: {value}".encode("latin-1") for name, value in headers]
    return eol.join(lines) + eol + eol


def frame(
    opcode: int,
    payload: bytes = b"",
    *,
    fin: bool = True,
    rsv: int = 0,
    masked: bool = True,
) -> bytes:
    """A client frame, masked unless told otherwise; ``rsv`` sets bits 0x70."""
    first = (0x80 if fin else 0) | rsv | opcode
    length = len(payload)
    mask_bit = 0x80 if masked else 0
    if length < 126:
        header = bytes([first, mask_bit | length])
    elif length < 65536:
        header = bytes([first, mask_bit | 126]) + struct.pack("!H", length)
    else:
        header = bytes([first, mask_bit | 127]) + struct.pack("!Q", length)
    if not masked:
        return header + payload
    body = bytes(byte ^ MASK[i % 4] for i, byte in enumerate(payload))
    return header + MASK + body


def close_frame(code: int | None = 1000, reason: bytes = b"") -> bytes:
    """A client's close frame; ``None``: one with no payload."""
    return frame(CLOSE, b"" if code is None else struct.pack("!H", code) + reason)


@dataclasses.dataclass
class Transcript:
    """What a server sent on one connection: HTTP answer, frames, and how it ended."""

    #: The status line, or ``None`` if the server said nothing before closing.
    status: str | None = None
    #: Headers of the answer that the cases compare (lower-cased names).
    headers: dict[str, str] = dataclasses.field(default_factory=dict)
    #: The body of a non-101 answer.
    body: bytes = b""
    #: Frames after a 101: ``"PONG b'ab'"``, ``"CLOSE 1008 'reason'"``.
    frames: list[str] = dataclasses.field(default_factory=list)
    #: ``"eof"``, ``"reset"``, or ``"open"`` if neither came in time.
    end: str = "open"

    def summary(self) -> str:
        parts = [self.status or "(no answer)"]
        parts += [f"{name}: {value}" for name, value in sorted(self.headers.items())]
        if self.body:
            parts.append("body")  # its text differs from server to server
        parts += [
            f"{frame} (x{count})" if count > 1 else frame for frame, count in _runs(self.frames)
        ]
        parts.append(self.end)
        return " | ".join(parts)


def _runs(frames: list[str]) -> list[tuple[str, int]]:
    """Repeated frames as one entry with their count: ``[("PONG b'p'", 1000)]``."""
    runs: list[tuple[str, int]] = []
    for frame in frames:
        if runs and runs[-1][0] == frame:
            runs[-1] = (frame, runs[-1][1] + 1)
        else:
            runs.append((frame, 1))
    return runs


#: Response headers whose value a transcript keeps; others vary by server (Date, Server).
KEPT_HEADERS = ("sec-websocket-version", "sec-websocket-protocol", "sec-websocket-extensions")


class Wire:
    """A TCP connection to ``port``: writes bytes as told, reads into a :class:`Transcript`."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.transcript = Transcript()
        self._data = b""
        self._handshaken = False

    def close(self) -> None:
        self.sock.close()

    def write(self, data: bytes) -> None:
        with contextlib.suppress(OSError):  # the server may have gone: its answer is read
            self.sock.sendall(data)

    def shutdown(self) -> None:
        """Half-close: the client sends its FIN."""
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_WR)

    def read(self, until: Callable[[Transcript], bool] | None = None, *, timeout: float) -> bool:
        """Read until ``until(transcript)`` holds, else until the connection ends.

        Returns whether it ended so (or holds) within ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        while self.transcript.end == "open":
            if until is not None and until(self.transcript):
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            readable, _, _ = select.select([self.sock], [], [], remaining)
            if not readable:
                continue
            try:
                data = self.sock.recv(65536)
            except ConnectionResetError:
                self.transcript.end = "reset"
                break
            if not data:
                self.transcript.end = "eof"
                break
            self._data += data
            self._decode()
        self._decode()
        return until is None or until(self.transcript)

    def _decode(self) -> None:
        if not self._handshaken:
            end = self._data.find(b"\r\n\r\n")
            if end < 0:
                return
            head, self._data = self._data[:end], self._data[end + 4 :]
            status, *lines = head.decode("latin-1").split("\r\n")
            self.transcript.status = status.split(" ", 2)[1] if " " in status else status
            headers = {}
            for line in lines:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            self.transcript.headers = {k: v for k, v in headers.items() if k in KEPT_HEADERS}
            self._handshaken = True
            if self.transcript.status != "101":
                self.transcript.body = self._data
                self._data = b""
                return
        if self.transcript.status != "101":
            self.transcript.body += self._data
            self._data = b""
            return
        while len(self._data) >= 2:
            first, second = self._data[0], self._data[1]
            length, header = second & 0x7F, 2
            if length == 126:
                if len(self._data) < 4:
                    return
                length, header = struct.unpack("!H", self._data[2:4])[0], 4
            elif length == 127:
                if len(self._data) < 10:
                    return
                length, header = struct.unpack("!Q", self._data[2:10])[0], 10
            if len(self._data) < header + length:
                return
            payload = self._data[header : header + length]
            self._data = self._data[header + length :]
            name = _NAMES.get(first & 0x0F, f"OPCODE{first & 0x0F}")
            if name == "CLOSE" and len(payload) >= 2:
                code = struct.unpack("!H", payload[:2])[0]
                text = f"CLOSE {code} {payload[2:].decode(errors='replace')!r}"
            elif name == "CLOSE":
                text = "CLOSE (empty)"
            else:
                text = f"{name} {payload[:40]!r}" + (
                    "" if len(payload) <= 40 else f"+{len(payload)}"
                )
            if not first & 0x80:
                text += " (fin=0)"
            self.transcript.frames.append(text)
