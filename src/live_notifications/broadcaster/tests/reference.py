"""websockets' own server, configured as the broadcaster is and holding the same conversation.

The differential suite (:mod:`.test_differential`) sends the same bytes to
this server and to a real broadcaster and compares what comes back. This
is the how-to's server with the broadcaster's settings: the same limits
(1 KiB messages, no compression), the same origins, timeouts and close
codes; a token is good if it is the one the test issued. It runs on an
event loop of its own, in a thread, so that the test's blocking sockets
can talk to it.
"""

from __future__ import annotations

import asyncio
import http
import threading
from collections.abc import Collection, Iterator
from contextlib import contextmanager

from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.frames import CloseCode
from websockets.http11 import Request, Response
from websockets.typing import Origin


def _health(connection: ServerConnection, request: Request) -> Response | None:
    if request.path in ("/healthz", "/readyz"):
        return connection.respond(http.HTTPStatus.OK, "ok\n")
    return None


async def _conversation(
    connection: ServerConnection, *, tokens: Collection[str], auth_timeout: float
) -> None:
    """The broadcaster's conversation: a token first, then nothing (pongs aside)."""
    try:
        async with asyncio.timeout(auth_timeout):
            message = await connection.recv()
    except TimeoutError:
        await connection.close(CloseCode.POLICY_VIOLATION, "authentication timed out")
        return
    except ConnectionClosed:
        return
    if not isinstance(message, str) or message not in tokens:
        await connection.close(CloseCode.INTERNAL_ERROR, "authentication failed")
        return
    try:
        await connection.recv()
    except ConnectionClosed:
        return
    await connection.close(CloseCode.POLICY_VIOLATION, "clients send nothing")


@contextmanager
def reference_server(
    *,
    tokens: Collection[str],
    origins: list[Origin | None],
    auth_timeout: float,
    close_timeout: float,
    ping_interval: float,
    max_size: int,
) -> Iterator[int]:
    """Serve on a free port of 127.0.0.1 in a thread; yield the port."""
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    ports: list[int] = []
    stop = asyncio.Event()

    async def main() -> None:
        async def handler(connection: ServerConnection) -> None:
            await _conversation(connection, tokens=tokens, auth_timeout=auth_timeout)

        async with serve(
            handler,
            "127.0.0.1",
            0,
            process_request=_health,
            origins=origins,
            compression=None,
            max_size=max_size,
            ping_interval=ping_interval,
            ping_timeout=ping_interval,
            close_timeout=close_timeout,
        ) as server:
            ports.append(server.sockets[0].getsockname()[1])
            ready.set()
            await stop.wait()

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    if not ready.wait(timeout=30):
        raise RuntimeError("websockets' server did not start")
    try:
        yield ports[0]
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(timeout=30)
        loop.close()
