"""A WebSocket client on a bare socket, that answers the server only when told to.

websockets' clients answer pings by themselves; this one parses what the
server sends with websockets' sans-I/O protocol, and sends what that
protocol would answer (pongs, the closing handshake) at once if it
:attr:`answers`, else when the test calls :meth:`answer`. It also writes
frames exactly as given: fragments in one write, or a message left
unfinished.
"""

from __future__ import annotations

import contextlib
import select
import socket
import time
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Self

from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.http11 import Response
from websockets.protocol import State
from websockets.uri import parse_uri

from .helpers import RECEIVE_TIMEOUT


class BareClient:
    """Connects to ``port`` and completes the opening handshake, with extra ``headers``."""

    def __init__(
        self, port: int, *, answers: bool = True, headers: Iterable[tuple[str, str]] = ()
    ) -> None:
        self.answers = answers
        #: Every frame received, in order.
        self.received: list[Frame] = []
        self.response: Response | None = None
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=RECEIVE_TIMEOUT)
        self.protocol = ClientProtocol(parse_uri(f"ws://127.0.0.1:{port}/"))
        request = self.protocol.connect()
        for name, value in headers:
            request.headers[name] = value
        self.protocol.send_request(request)
        self.answer()
        while self.protocol.state is State.CONNECTING:
            self.read()
        assert self.protocol.state is State.OPEN, self.protocol.handshake_exc

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.sock.close()

    def send_text(self, text: str) -> None:
        self.write(bytes(Frame(Opcode.TEXT, text.encode()).serialize(mask=True, extensions=[])))

    @staticmethod
    def fragments(text: str, *, parts: int = 2, final: bool = True) -> bytes:
        """``text`` as a fragmented text message; unfinished unless ``final``."""
        data = text.encode()
        size = -(-len(data) // parts)
        chunks = [data[i : i + size] for i in range(0, len(data), size)]
        frames = [
            Frame(Opcode.TEXT if i == 0 else Opcode.CONT, chunk, fin=final and i == len(chunks) - 1)
            for i, chunk in enumerate(chunks)
        ]
        return b"".join(frame.serialize(mask=True, extensions=[]) for frame in frames)

    def write(self, data: bytes) -> None:
        """Write ``data`` to the socket in one call."""
        self.sock.sendall(data)

    def read(self) -> None:
        """Read what the server sent (blocking), record its frames, answer if :attr:`answers`."""
        try:
            data = self.sock.recv(65536)
        except ConnectionResetError:
            data = b""
        if data:
            self.protocol.receive_data(data)
        else:
            self.protocol.receive_eof()
        for event in self.protocol.events_received():
            if isinstance(event, Frame):
                self.received.append(event)
            else:
                self.response = event  # the handshake's
        if self.answers:
            self.answer()

    def answer(self) -> None:
        """Send what the protocol has to say: pongs to the pings read, the closing handshake."""
        for data in self.protocol.data_to_send():
            if data:
                with contextlib.suppress(OSError):  # the server may have gone
                    self.sock.sendall(data)

    @property
    def pings(self) -> int:
        return sum(frame.opcode is Opcode.PING for frame in self.received)

    @property
    def close(self) -> tuple[int, str] | None:
        """The close frame's code and reason, once received."""
        frame = self.protocol.close_rcvd
        return None if frame is None else (frame.code, frame.reason)

    @property
    def opcodes(self) -> list[str]:
        """The kinds of frames received, in order: ``["PING", "CLOSE"]``."""
        return [frame.opcode.name for frame in self.received]


def serve_until(clients: list[BareClient], done: Callable[[], bool], what: str) -> None:
    """Read what the server sends to ``clients`` until ``done()``; fail after a while."""
    deadline = time.monotonic() + RECEIVE_TIMEOUT
    while not done():
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"timed out waiting for {what}"
        open_ = [client for client in clients if client.protocol.state is not State.CLOSED]
        assert open_, f"every connection closed before {what}"
        readable, _, _ = select.select([c.sock for c in open_], [], [], min(remaining, 0.5))
        for client in open_:
            if client.sock in readable:
                client.read()
