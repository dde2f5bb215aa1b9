"""The opening handshake's common case, read and answered without websockets' general path.

websockets' sans-I/O parser reads a request a line at a time through
generators, and ``ServerProtocol.accept()`` parses every header it may need
(extensions, subprotocols), builds a ``Headers`` and a ``Date``, and was a
sixth of this server's CPU in a reconnect storm. :func:`accept` answers the
requests this server gets nearly always: an upgrade to WebSocket 13 with one
valid key, from an allowed origin, offering no subprotocol. It is stricter
than websockets, never looser: whatever it doesn't accept, it leaves to
``accept()``, which accepts it or answers the error (400, 403, 426, …).

:func:`parse` reads a whole request (through its blank line) at once, with
websockets' own rules (line and header limits, the same token and value
patterns, no body); whatever it doesn't read the same way, it leaves to
websockets' parser, which reads it or answers the error.

The response has no extension (the broadcaster negotiates none) and no
``Date``, which RFC 9110 makes optional on a 1xx response.
"""

from __future__ import annotations

import binascii
import re
from base64 import b64decode
from collections.abc import Collection

from websockets.datastructures import Headers
from websockets.http11 import MAX_LINE_LENGTH, MAX_NUM_HEADERS, Request
from websockets.http11 import _token_re as _NAME  # its parser's own patterns, not copies
from websockets.http11 import _value_re as _VALUE
from websockets.utils import accept_key

#: An HTTP token (RFC 9110, 5.6.2), as in a Connection header's list.
_TOKEN = re.compile(r"[-!#$%&'*+.^_`|~0-9A-Za-z]+")
#: A Host header's value (RFC 9112, 3.2: uri-host [ ":" port ], RFC 3986):
#: an IP literal in brackets, or an IPv4 address or registered name, which
#: may be empty.
_HOST = re.compile(
    r"(?:\[[0-9A-Za-z:.\-_~!$&'()*+,;=]+\]|[0-9A-Za-z\-._~!$&'()*+,;=%]*)(?::[0-9]*)?"
)
#: The one version of the protocol there is (RFC 6455, 4.4).
VERSION = "13"


def refusal(request: Request) -> tuple[int, str, list[tuple[str, str]]] | None:
    """The status, text and headers that RFCs 9112 and 6455 require for ``request``, if any.

    Two MUSTs that websockets doesn't keep: an HTTP/1.1 request without
    exactly one valid ``Host`` gets 400 (RFC 9112, 3.2), whatever its path;
    a WebSocket version other than 13 gets 426 naming the version this
    server speaks (RFC 6455, 4.4), where websockets answers 400 without.
    """
    headers = request.headers
    if request.protocol == "HTTP/1.1":
        host = headers.get_all("Host")
        if len(host) != 1 or not _HOST.fullmatch(host[0]):
            return (
                400,
                "Failed to open a WebSocket connection: one valid Host header is required.\n",
                [],
            )
    version = headers.get_all("Sec-WebSocket-Version")
    if version and version != [VERSION]:
        text = (
            "Failed to open a WebSocket connection: unsupported version;"
            f" this server speaks {VERSION}.\n"
        )
        return 426, text, [("Sec-WebSocket-Version", VERSION)]
    return None


def parse(data: bytes) -> Request | None:
    """The request in ``data``, which ends with its blank line; ``None`` to leave it to websockets.

    What it reads, websockets' parser reads the same (path, method, protocol,
    every header in order). It leaves alone anything out of the common
    case: another method or protocol, a line over websockets' limit or not
    ended by CRLF alone, more headers than its limit, a malformed one, a
    body announced.
    """
    lines = data.split(b"\r\n")
    # The request line, the headers, and the two empty strings of the blank line.
    if len(lines) > MAX_NUM_HEADERS + 3 or lines[-2:] != [b"", b""]:
        return None
    request_line, *header_lines = lines[:-2]
    crlf = data.count(b"\r\n")
    if data.count(b"\n") != crlf or data.count(b"\r") != crlf:
        return None  # a CR or LF alone: websockets cuts lines at LF, and refuses CR
    parts = request_line.split(b" ", 2)
    if len(parts) != 3 or parts[0] != b"GET" or parts[2] != b"HTTP/1.1":
        return None
    if not parts[1].isascii() or len(request_line) + 2 > MAX_LINE_LENGTH:
        return None
    headers = Headers()
    for line in header_lines:
        if len(line) + 2 > MAX_LINE_LENGTH:
            return None
        name, colon, value = line.partition(b":")
        value = value.strip(b" \t")
        if not colon or not _NAME.fullmatch(name) or not _VALUE.fullmatch(value):
            return None
        headers[name.decode("ascii")] = value.decode("iso-8859-1")
    if "Transfer-Encoding" in headers or not set(headers.get_all("Content-Length")) <= {"0"}:
        return None
    return Request(parts[1].decode("ascii"), headers)


def accept(request: Request, origins: Collection[str | None] | None) -> bytes | None:
    """The 101 response to ``request``, if it is the common case; else ``None``.

    ``origins`` are those allowed, ``None`` for a request without one; or
    ``None``: any.
    """
    headers = request.headers
    key = headers.get_all("Sec-WebSocket-Key")
    origin = headers.get_all("Origin")
    if (
        request.method != "GET"
        or request.protocol != "HTTP/1.1"
        or len(key) != 1
        or headers.get_all("Sec-WebSocket-Version") != ["13"]
        or [value.lower() for value in headers.get_all("Upgrade")] != ["websocket"]
        or len(origin) > 1
        or (origins is not None and (origin[0] if origin else None) not in origins)
        or "Sec-WebSocket-Protocol" in headers
        or not _upgrades(headers.get_all("Connection"))
    ):
        return None
    try:
        if len(b64decode(key[0].encode(), validate=True)) != 16:
            return None
    except binascii.Error:
        return None
    return (
        b"HTTP/1.1 101 Switching Protocols\r\n"
        b"Upgrade: websocket\r\n"
        b"Connection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: " + accept_key(key[0]).encode() + b"\r\n\r\n"
    )


def _upgrades(values: list[str]) -> bool:
    """Whether the Connection header lists ``upgrade``, every item a token."""
    items = [item.strip() for value in values for item in value.split(",")]
    items = [item for item in items if item]  # empty list items are allowed
    return all(_TOKEN.fullmatch(item) for item in items) and any(
        item.lower() == "upgrade" for item in items
    )
