"""Frames written straight to the connections' transports: encoded once, written once.

websockets' ``broadcast()`` frames a message again for every connection and
writes each frame on its own: one ``send()`` system call per delivery, most
of the fan-out's CPU. A server's frames aren't masked, so the frame of a
message is the same bytes for every client: it is encoded once here, and
what is due to one connection is written to it in one call.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING

from websockets.frames import Frame, Opcode
from websockets.protocol import State

if TYPE_CHECKING:  # connections write the frames made here
    from .connection import Connection

logger = logging.getLogger(__name__)


#: An empty ping: pongs aren't matched to pings, any pong answers (.keepalive).
PING = Frame(Opcode.PING, b"").serialize(mask=False)


def text_frame(message: bytes) -> bytes:
    """The frame of a text message (``message`` is UTF-8), as a server sends it.

    Written without extensions: with permessage-deflate negotiated it would
    still be valid, as an uncompressed message (the broadcaster turns
    compression off anyway).
    """
    return Frame(Opcode.TEXT, message).serialize(mask=False)


def write(
    connections: Iterable[Connection], data: bytes, *, limit: int
) -> tuple[int, list[Connection]]:
    """Write ``data``, whole frames, to each of ``connections`` that may take it now.

    As ``broadcast()`` does, skips the connections that aren't open: nothing
    may follow a close frame. There is no backpressure: those whose unsent
    data already exceeds ``limit`` bytes get nothing and are returned, for
    the caller to disconnect; so is the number written to. Connections may
    be removed from ``connections`` once this returns, not before.
    """
    written = 0
    slow = []
    for connection in connections:
        if connection.state is not State.OPEN:
            continue
        transport = connection.transport
        if transport.get_write_buffer_size() > limit:
            slow.append(connection)
            continue
        try:
            transport.write(data)
        except Exception as exc:  # as broadcast(): one failure doesn't stop the others
            logger.warning("event=write_failed remote=%s error=%r", connection.address, exc)
            continue
        written += 1
    return written, slow
