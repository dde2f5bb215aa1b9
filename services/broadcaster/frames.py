"""Frames written straight to the connections' transports: encoded once, written once.

websockets' ``broadcast()`` frames a message again for every connection and
writes each frame on its own: one ``send()`` system call per delivery, most
of the fan-out's CPU. A server's frames aren't masked, so the frame of a
message is the same bytes for every client: it is encoded once here, and
what is due to one connection is written to it in one call.
"""

from __future__ import annotations

from collections.abc import Iterable

from websockets.asyncio.server import ServerConnection
from websockets.frames import Frame, Opcode
from websockets.protocol import State


def text_frame(message: bytes) -> bytes:
    """The frame of a text message (``message`` is UTF-8), as a server sends it.

    Written without extensions: with permessage-deflate negotiated it would
    still be valid, as an uncompressed message (the broadcaster turns
    compression off anyway).
    """
    return Frame(Opcode.TEXT, message).serialize(mask=False)


def write(
    connections: Iterable[ServerConnection], data: bytes, *, limit: int
) -> tuple[int, list[ServerConnection]]:
    """Write ``data``, whole frames, to each of ``connections`` that may take it now.

    As ``broadcast()`` does, skips the connections that aren't open (nothing
    may follow a close frame) and those sending a fragmented message (no
    frame may come between its fragments). There is no backpressure: those
    whose unsent data already exceeds ``limit`` bytes get nothing and are
    returned, for the caller to disconnect; so is the number written to.
    Connections may be removed from ``connections`` once this returns, not
    before.
    """
    written = 0
    slow = []
    for connection in connections:
        if connection.protocol.state is not State.OPEN or connection.send_in_progress is not None:
            continue
        transport = connection.transport
        if transport.get_write_buffer_size() > limit:
            slow.append(connection)
            continue
        try:
            transport.write(data)
        except Exception as exc:  # as broadcast(): one failure doesn't stop the others
            connection.logger.warning("skipped write: %r", exc)
            continue
        written += 1
    return written, slow
