"""The broadcaster's connections: an asyncio protocol that keeps almost nothing while idle.

websockets' ``ServerConnection`` gives every connection what a busy one
needs: a handler task, queues, futures and a parser of its own, about 6 KiB
of Python objects. A client of this server sends its token and then nothing
but pongs, so :class:`Connection` keeps its transport and a few fields, and
websockets' sans-I/O :class:`~websockets.server.ServerProtocol` does the
parsing (a request out of the common case, pings, closes, fragments,
protocol errors) but exists only while there is something to parse. It is
made for a frame that arrives on an idle connection and dropped once the
connection is idle again. The frames clients do send, a pong and a short
text message (the token), are read without it, and the common handshake is
read and answered by :mod:`.handshake`: in a reconnect storm, most of the
CPU went there.

To hand the protocol whole frames only, and so drop it between two, the
connection finds where each frame ends (:func:`frame_length`) and keeps the
bytes of one cut short until the rest arrives; the request is handed over
alone, up to its blank line. A server writes its frames unmasked, the same
bytes for every client: events are written by :mod:`.frames`, straight to
the transport."""

from __future__ import annotations

import asyncio
import dataclasses
import http
import logging
from collections.abc import Callable, Sequence
from typing import Protocol, cast

from websockets.exceptions import InvalidMessage
from websockets.frames import CloseCode, Frame, Opcode
from websockets.http11 import Request, Response
from websockets.protocol import State
from websockets.server import ServerProtocol
from websockets.typing import Origin

try:
    from websockets.speedups import apply_mask
except ImportError:  # websockets built without its C extension
    from websockets.utils import apply_mask

from . import frames, handshake
from .addresses import Networks, client_address
from .deadlines import Deadlines

logger = logging.getLogger(__name__)
#: What the sans-I/O protocol logs (failed handshakes at INFO) goes where
#: websockets' servers log it.
protocol_logger = logging.getLogger("websockets.server")

#: Largest opening handshake read, however TCP cuts it: a browser's, cookies
#: included, is well under. Larger: HTTP 431.
MAX_REQUEST = 16 * 1024
#: Most frames one message may come in. A client's one message, its token,
#: fits in a frame; websockets lets empty continuations pile up until its
#: queue's limit, which costs a Frame object each. More: 1009.
MAX_FRAGMENTS = 16
#: Pings and pongs a client may send per keepalive interval (the keepalive
#: resets the count): a well-behaved one sends one or two, a latency probe a
#: ping a second. Each costs a parse and a pong, so a flood of them would
#: hold the event loop from other clients. More: 1008.
MAX_CONTROL_FRAMES = 64
#: Bytes read after this server's close frame, while waiting for the
#: client's: a client that keeps sending this much isn't closing. More: dropped.
MAX_READ_AFTER_CLOSE = 64 * 1024
#: Seconds from the TCP connection to the end of the WebSocket handshake
#: (websockets' ``open_timeout``).
OPEN_TIMEOUT = 10.0
#: The first byte of an unfragmented pong or text message.
_PONG = 0x80 | Opcode.PONG
_TEXT = 0x80 | Opcode.TEXT
#: The one request header read after the handshake.
FORWARDED_FOR = "X-Forwarded-For"


class Closed(Exception):
    """The connection is closing or closed: nothing more can be sent."""


class Handler(Protocol):
    """What a :class:`Connection` tells the server, and asks it."""

    def process_request(self, connection: Connection, request: Request) -> Response | None:
        """An HTTP response to send instead of accepting the handshake, or ``None``."""

    def connection_open(self, connection: Connection) -> None:
        """The handshake succeeded: the connection is OPEN."""

    def message_begun(self, connection: Connection) -> None:
        """The first frame of a message arrived (it may also be the last).

        A server that expects no more messages closes here, without waiting
        for the message's end.
        """

    def message_received(self, connection: Connection, message: str | bytes) -> None:
        """A whole message arrived: text as ``str``, binary as ``bytes``."""

    def too_slow(self, connection: Connection) -> None:
        """The client's unsent data passed ``max_buffer``: it is closing with 1008 "too slow"."""

    def connection_closed(self, connection: Connection) -> None:
        """A connection that was open is closed: called once, last."""


class Settings:
    """What every connection of a server shares: one object, not a field each."""

    def __init__(
        self,
        handler: Handler,
        *,
        origins: Sequence[Origin | None] | None,
        max_size: int,
        max_buffer: int,
        close_timeout: float,
        open_timeout: float = OPEN_TIMEOUT,
        max_fragments: int = MAX_FRAGMENTS,
        max_control_frames: int = MAX_CONTROL_FRAMES,
        trusted_proxies: Networks = (),
    ) -> None:
        self.handler = handler
        self.origins = origins
        self.max_size = max_size
        #: Unsent bytes beyond which a client is cut: what it doesn't read,
        #: events, pongs or anything else, is bounded by this (plus a read's
        #: worth of pongs, and the kernel's socket buffer).
        self.max_buffer = max_buffer
        self.max_fragments = max_fragments
        self.max_control_frames = max_control_frames
        self.close_timeout = close_timeout
        #: Peers whose X-Forwarded-For's last entry names the client.
        self.trusted_proxies = trusted_proxies
        #: The longest frame buffered whole: a header and ``max_size`` bytes.
        self.max_frame = 14 + max_size
        #: Every connection from ``connection_made`` to ``connection_lost``.
        self.connections: set[Connection] = set()
        #: Connections whose handshake hasn't ended: aborted at ``open_timeout``.
        self.opening: Deadlines[Connection] = Deadlines(open_timeout, _abort)


class Connection(asyncio.Protocol):
    """One client's WebSocket connection, as an asyncio protocol.

    ``state`` is websockets' :class:`~websockets.protocol.State`. Writes of
    whole frames go straight to ``transport`` (:func:`.frames.write`); only
    :meth:`send` waits for the buffer to drain. ``pong_waiting`` is set by
    whoever sends a ping (:meth:`ping`) and cleared by any pong.
    """

    __slots__ = (
        "_buffer",
        "_closed",
        "_drained",
        "_fragments",
        "_paused",
        "_protocol",
        "_read_after_close",
        "_timer",
        "address",
        "control_frames",
        "label",
        "pong_waiting",
        "settings",
        "state",
        "transport",
    )

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.transport: asyncio.Transport = cast(asyncio.Transport, None)
        self.state = State.CONNECTING
        #: The client's address (:func:`.addresses.client_address`).
        self.address = "-"
        #: Who the connection is, for the log (the server sets it).
        self.label: str | None = None
        self.pong_waiting = False
        #: Pings and pongs received since the keepalive last reset it.
        self.control_frames = 0
        #: websockets' sans-I/O protocol, while there is something to parse.
        self._protocol: ServerProtocol | None = None
        #: Bytes received and not handed over yet: part of a request or frame.
        self._buffer: bytes | bytearray = b""
        #: The frames of a fragmented message so far (at most ``max_fragments``).
        self._fragments: list[Frame] | None = None
        #: The closing handshake's timer. (The opening handshake's deadline is
        #: kept with the other connections': ``Settings.opening``.)
        self._timer: asyncio.TimerHandle | None = None
        self._paused = False
        self._drained: list[asyncio.Future[None]] | None = None
        self._closed: asyncio.Future[None] | None = None
        self._read_after_close = 0

    # What the server does with a connection.

    @property
    def close_code(self) -> int | None:
        """The close frame's code, received else sent; 1006 if closed without; ``None`` if open."""
        protocol = self._protocol
        close = None if protocol is None else protocol.close_rcvd or protocol.close_sent
        if close is not None:
            return close.code
        return CloseCode.ABNORMAL_CLOSURE if self.state is State.CLOSED else None

    @property
    def close_sent_code(self) -> int | None:
        """The code of the close frame this server sent, if any."""
        close = self._protocol.close_sent if self._protocol is not None else None
        return None if close is None else close.code

    def respond(self, status: int, text: str) -> Response:
        """An HTTP response, for :meth:`Handler.process_request` to return."""
        return self._parse().reject(status, text)

    def set_timer(self, delay: float, callback: Callable[[], None]) -> None:
        """Call ``callback`` in ``delay`` seconds unless cancelled, replacing any timer."""
        self.cancel_timer()
        self._timer = asyncio.get_running_loop().call_later(delay, callback)

    def cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    async def send(self, message: bytes) -> None:
        """Send a text message (``message`` is UTF-8), then wait until the transport takes more."""
        if self.state is not State.OPEN:
            raise Closed
        self.transport.write(frames.text_frame(message))
        while self._paused:
            if self._drained is None:
                self._drained = []
            waiter = asyncio.get_running_loop().create_future()
            self._drained.append(waiter)
            await waiter
        if self.state is not State.OPEN:
            raise Closed

    def ping(self) -> None:
        """Send an empty ping, and mark the connection as waiting for a pong."""
        if self.state is State.OPEN and not self._over_buffer():
            self.transport.write(frames.PING)
            self.pong_waiting = True

    def close(self, code: int, reason: str) -> None:
        """Start the closing handshake; the connection is closed within ``close_timeout``."""
        if self.state is State.CONNECTING:
            self.transport.abort()
        if self.state is not State.OPEN:
            return
        protocol = self._parse()
        protocol.send_close(code, reason)
        self._flush(protocol)

    def fail(self, code: int, reason: str) -> None:
        """Send a close frame and drop the connection at once, as for a peer that is gone.

        RFC 6455's "Fail the WebSocket Connection": no closing handshake is
        waited for. What the kernel holds unsent is still sent.
        """
        if self.state is State.CONNECTING:
            self.transport.abort()
        if self.state is not State.OPEN:
            return
        protocol = self._parse()
        protocol.fail(code, reason)
        self._flush(protocol)
        self.transport.abort()

    async def wait_closed(self) -> None:
        if self.state is State.CLOSED:
            return
        if self._closed is None:
            self._closed = asyncio.get_running_loop().create_future()
        await asyncio.shield(self._closed)

    # asyncio.Protocol.

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.settings.connections.add(self)
        self.settings.opening.add(self)

    def data_received(self, data: bytes) -> None:
        if self.state is State.OPEN:
            if not self._over_buffer():
                self._receive_frames(bytes(self._buffer) + data if self._buffer else data)
        elif self.state is State.CONNECTING:
            self._receive_request(data)
        elif self._protocol is not None and not self._over_buffer():
            self._receive_closing(self._protocol, data)

    def eof_received(self) -> None:
        protocol = self._parse()  # a request cut short: websockets closes, unanswered
        protocol.receive_eof()
        self._flush(protocol)
        # Returns None: the transport closes; a client that half-closed is gone.

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        self._wake()

    def _over_buffer(self) -> bool:
        """Cut the client if its unsent data passed ``max_buffer``; return whether it did.

        Checked before reading what a client sends, since what it sends may
        call for answers (pongs) that it doesn't read: a client that floods
        pings without reading is cut like one that doesn't read its events.
        An open connection closes with 1008 "too slow" (the handler is told);
        a closing one, whose close frame already waits unread, is dropped.
        """
        if self.transport.get_write_buffer_size() <= self.settings.max_buffer:
            return False
        if self.state is State.OPEN:
            self.settings.handler.too_slow(self)
            self.close(CloseCode.POLICY_VIOLATION, "too slow")
        else:
            self.transport.abort()
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        was_open = self.state is not State.CONNECTING
        self.state = State.CLOSED
        if self._protocol is not None:
            self._protocol.receive_eof()  # idempotent: the protocol's state is CLOSED
        self.cancel_timer()
        self._paused = False
        self._wake()
        self.settings.connections.discard(self)
        self.settings.opening.discard(self)
        if self._closed is not None and not self._closed.done():
            self._closed.set_result(None)
        if was_open:
            self.settings.handler.connection_closed(self)

    # Parsing.

    def _receive_request(self, data: bytes) -> None:
        """Read the request, up to its blank line, and answer it; keep what follows.

        The common request is read by :func:`.handshake.parse`, with no
        protocol; websockets' parser is handed any other, alone. A request
        that comes in pieces costs as much as one read whole: the pieces are
        added in place, and only what is new is searched.
        """
        searched = len(self._buffer)
        if searched:
            self._buffer += data  # a bytearray, from the second piece on
            buffer: bytes | bytearray = self._buffer
        else:
            buffer = data
        end = buffer.find(b"\r\n\r\n", max(0, searched - 3))
        if end < 0 or end + 4 > MAX_REQUEST:
            if len(buffer) > MAX_REQUEST:
                self._buffer = b""
                self._answer(self._parse().reject(431, "Request header fields too large.\n"))
            elif _bare_lf(buffer, searched):
                self._buffer = b""
                self._parse_slowly(bytes(buffer))  # a line ended by a bare LF: refused now
            elif not searched:
                self._buffer = bytearray(data)
            return
        self._buffer = b""
        end += 4
        head = bytes(buffer[:end])
        request = handshake.parse(head)
        if request is not None:
            self._handshake(request)
        else:
            self._parse_slowly(head)
        if self.state is State.OPEN and end < len(buffer):
            self._receive_frames(bytes(buffer[end:]))

    def _parse_slowly(self, data: bytes) -> None:
        """Hand websockets' parser a request :func:`.handshake.parse` didn't read.

        It reads it, or answers 414 or 431; a request it can't parse at all
        gets 400 here, where websockets closes with no answer: RFC 6455
        (4.2.1) asks for an HTTP error.
        """
        protocol = self._parse()
        protocol.receive_data(data)
        for event in protocol.events_received():
            if isinstance(event, Request):
                self._handshake(event)  # answered, whatever the answer
        if self.state is not State.CONNECTING:
            return
        if isinstance(protocol.handshake_exc, InvalidMessage):
            protocol.data_to_send()  # its end of stream: the answer goes first
            response = protocol.reject(
                400, "Failed to open a WebSocket connection: malformed request.\n"
            )
            protocol_logger.info("connection rejected (400 Bad Request): malformed request")
            self.transport.write(response.serialize())
            self.transport.close()
        else:
            self._flush(protocol)  # its answer, or a close

    def _handshake(self, request: Request) -> None:
        peer = self.transport.get_extra_info("peername")
        self.address = client_address(
            peer[0] if peer else None,
            request.headers.get_all(FORWARDED_FOR),  # get() raises, then catches
            self.settings.trusted_proxies,
        )
        response = self._refusal(request)
        if response is None:
            try:
                response = self.settings.handler.process_request(self, request)
            except Exception:
                logger.exception("event=process_request_failed")
                response = self.respond(http.HTTPStatus.INTERNAL_SERVER_ERROR, "server error\n")
        if response is None:
            accepted = handshake.accept(request, self.settings.origins)
            if accepted is not None:
                self.transport.write(accepted)
                self._opened()
                return
            response = self._parse().accept(request)  # or its error, if it's one
        if request.method == "HEAD":  # the headers of a GET, Content-Length included
            response = dataclasses.replace(response, body=b"")
        self._answer(response)

    def _refusal(self, request: Request) -> Response | None:
        """The refusal RFCs 9112 and 6455 require, where websockets accepts or answers otherwise."""
        refusal = handshake.refusal(request)
        if refusal is None:
            return None
        status, text, headers = refusal
        response = self.respond(status, text)
        for name, value in headers:
            response.headers[name] = value
        return response

    def _answer(self, response: Response) -> None:
        protocol = self._parse()
        protocol.send_response(response)
        self._flush(protocol)
        if protocol.state is State.OPEN:
            self._opened()

    def _opened(self) -> None:
        self.settings.opening.discard(self)
        self.state = State.OPEN
        self._protocol = None  # it was handed the request alone: no frame begun
        self.settings.handler.connection_open(self)

    def _receive_frames(self, data: bytes) -> None:
        """Hand the protocol whole frames; recognise pongs on an idle connection.

        ``data`` begins with the bytes held back, if any.
        """
        self._buffer = b""
        start = 0
        while start < len(data) and self.state is State.OPEN:
            length = frame_length(data, start)
            if length is None or start + length > len(data):
                if length is not None and length > self.settings.max_frame:
                    break  # too big to buffer: the protocol refuses it from its header
                self._buffer = data[start:]
                return
            end = start + length
            if self._protocol is not None or not self._read_simply(data, start, end):
                self._receive(self._parse(), data[start:end])
            start = end
        self._buffer = b""
        if start < len(data) and self.state is State.OPEN:
            self._receive(self._parse(), data[start:])  # a frame too big: refused from its header
        elif start < len(data):
            self._receive_closing(self._parse(), data[start:])
        protocol = self._protocol
        if (
            protocol is not None
            and self.state is State.OPEN
            and protocol.state is State.OPEN
            and self._fragments is None
        ):
            self._protocol = None  # idle again: between two frames, none begun

    def _read_simply(self, data: bytes, start: int, end: int) -> bool:
        """Read a common frame with no parser: a pong, or a short text message.

        Only unfragmented, masked frames with no extension bits, a pong of
        at most 125 bytes or a text message of at most 65,535 that is valid
        UTF-8 and within ``max_size``; anything else goes to the protocol
        (``False``). Those frames are the whole conversation of most clients.
        """
        first, second = data[start], data[start + 1]
        if not second & 0x80:
            return False
        if first == _PONG and second & 0x7F <= 125:
            self.pong_waiting = False
            self._control_frame()
            return True
        header = 8 if second & 0x7F == 126 else 6
        if first != _TEXT or second & 0x7F == 127 or end - start - header > self.settings.max_size:
            return False
        mask = data[start + header - 4 : start + header]
        try:
            text = apply_mask(data[start + header : end], mask).decode()
        except UnicodeDecodeError:
            return False  # the protocol closes with 1007
        handler = self.settings.handler
        handler.message_begun(self)
        if self.state is State.OPEN:
            handler.message_received(self, text)
        return True

    def _receive_closing(self, protocol: ServerProtocol, data: bytes) -> None:
        """Closing: the protocol reads the client's close, and frames before it, up to a point."""
        self._read_after_close += len(data)
        if self._read_after_close > MAX_READ_AFTER_CLOSE:
            self.transport.abort()  # it isn't closing: it floods
        else:
            self._receive(protocol, data)

    def _control_frame(self) -> None:
        """Count a ping or pong; close a client that sends more than its share."""
        self.control_frames += 1
        if self.control_frames > self.settings.max_control_frames and self.state is State.OPEN:
            self.close(CloseCode.POLICY_VIOLATION, "too many control frames")

    def _parse(self) -> ServerProtocol:
        """The sans-I/O protocol, made for the connection's state if there is none.

        Made on an open connection, it is handed the bytes held back (a
        frame cut short), so that it reads the rest of the stream right,
        whatever starts it: a frame, or a close begun by a timer.
        """
        if self._protocol is None:
            connecting = self.state is State.CONNECTING  # for the handshake's request and answer
            self._protocol = ServerProtocol(
                origins=self.settings.origins,
                state=State.CONNECTING if connecting else State.OPEN,
                max_size=self.settings.max_size,
                logger=protocol_logger,
            )
            if not connecting and self._buffer:
                held, self._buffer = self._buffer, b""
                self._protocol.receive_data(held)  # not a whole frame: no event
        return self._protocol

    def _receive(self, protocol: ServerProtocol, data: bytes) -> None:
        protocol.receive_data(data)
        events = protocol.events_received()
        self._flush(protocol)
        for event in events:
            if isinstance(event, Frame):
                self._frame(protocol, event)

    def _frame(self, protocol: ServerProtocol, frame: Frame) -> None:
        if frame.opcode is Opcode.PONG:
            self.pong_waiting = False
            self._control_frame()
            return
        if frame.opcode is Opcode.PING:
            self._control_frame()  # the protocol answered it
            return
        if frame.opcode is Opcode.CLOSE:
            return  # the protocol answered it
        if self.state is not State.OPEN:
            return
        if frame.opcode is not Opcode.CONT:
            self._fragments = []
            self.settings.handler.message_begun(self)
            if self.state is not State.OPEN:
                self._fragments = None
                return
        assert self._fragments is not None  # the protocol refuses a stray continuation
        if len(self._fragments) >= self.settings.max_fragments:
            self._fragments = None
            protocol.fail(CloseCode.MESSAGE_TOO_BIG, "too many fragments")
            self._flush(protocol)
            return
        self._fragments.append(frame)
        if not frame.fin:
            return
        fragments, self._fragments = self._fragments, None
        data = b"".join([fragment.data for fragment in fragments])
        if fragments[0].opcode is Opcode.BINARY:
            self.settings.handler.message_received(self, data)
            return
        try:
            text = data.decode()
        except UnicodeDecodeError as error:  # websockets' reason, word for word
            protocol.fail(CloseCode.INVALID_DATA, f"{error.reason} at position {error.start}")
            self._flush(protocol)
            return
        self.settings.handler.message_received(self, text)

    def _flush(self, protocol: ServerProtocol) -> None:
        """Write what the protocol has to send; follow its state."""
        for data in protocol.data_to_send():
            if data:
                self.transport.write(data)
            elif self.transport.can_write_eof():
                self.transport.write_eof()
            else:
                self.transport.close()
        if self.state is State.OPEN and protocol.state is not State.OPEN:
            self.state = protocol.state
            # Closing: the client has close_timeout to finish the handshake.
            self.set_timer(self.settings.close_timeout, self.transport.abort)
        elif self.state is State.CONNECTING and protocol.close_expected():
            self.transport.close()  # an HTTP answer: nothing else follows

    def _wake(self) -> None:
        waiters, self._drained = self._drained, None
        for waiter in waiters or ():
            if not waiter.done():
                waiter.set_result(None)


def _bare_lf(data: bytes | bytearray, start: int) -> bool:
    """Whether a LF at or after ``start`` in ``data`` has no CR before it."""
    at = data.find(b"\n", start)
    while at >= 0:
        if at == 0 or data[at - 1] != 0x0D:
            return True
        at = data.find(b"\n", at + 1)
    return False


def _abort(connection: Connection) -> None:
    connection.transport.abort()


def frame_length(data: bytes, start: int) -> int | None:
    """The length of the client frame at ``start`` in ``data``; ``None`` if its header is cut."""
    available = len(data) - start
    if available < 2:
        return None
    second = data[start + 1]
    length = second & 0x7F
    header = 2
    if length == 126:
        if available < 4:
            return None
        length = int.from_bytes(data[start + 2 : start + 4], "big")
        header = 4
    elif length == 127:
        if available < 10:
            return None
        length = int.from_bytes(data[start + 2 : start + 10], "big")
        header = 10
    if second & 0x80:
        header += 4  # the mask
    return header + length
