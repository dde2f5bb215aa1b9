"""The opening handshake's common case, answered without websockets' general path.

websockets' ``ServerProtocol.accept()`` parses every header it may need
(extensions, subprotocols), builds a ``Headers`` and a ``Date``, and was a
sixth of this server's CPU in a reconnect storm. :func:`accept` answers the
requests this server gets nearly always: an upgrade to WebSocket 13 with one
valid key, from an allowed origin, offering no subprotocol. It is stricter
than websockets, never looser: whatever it doesn't accept, it leaves to
``accept()``, which accepts it or answers the error (400, 403, 426, …).

The response has no extension (the broadcaster negotiates none) and no
``Date``, which RFC 9110 makes optional on a 1xx response.
"""

from __future__ import annotations

import binascii
import re
from base64 import b64decode
from collections.abc import Collection

from websockets.http11 import Request
from websockets.utils import accept_key

#: An HTTP token (RFC 9110, 5.6.2), as in a Connection header's list.
_TOKEN = re.compile(r"[-!#$%&'*+.^_`|~0-9A-Za-z]+")


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
