"""The metrics port: Prometheus's ``GET /metrics``, apart from the public port.

The edge never routes to this port, so the counters aren't public. Requests
are read by websockets' handshake parser, which bounds the request line and
headers, reads no body and gives up after ``REQUEST_TIMEOUT``; every request
is answered before the handshake, so no connection is ever upgraded.
"""

from __future__ import annotations

from collections.abc import Callable

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.http11 import Request, Response

from live_notifications.shared import prometheus

#: Seconds a scraper has to send its request before the connection is dropped.
REQUEST_TIMEOUT = 10.0


def serve_metrics(render: Callable[[], str], host: str, port: int) -> Server:
    """Listen on ``host:port``: ``GET /metrics`` gets ``render()``, anything else 404.

    Use it as ``async with serve_metrics(...):``; it stops listening on exit.
    """

    def process_request(connection: ServerConnection, request: Request) -> Response:
        if request.method != "GET" or request.path.partition("?")[0] != "/metrics":
            return connection.respond(404, "not found\n")
        response = connection.respond(200, render())
        # Headers are multi-valued: assigning would add a second Content-Type.
        del response.headers["Content-Type"]
        response.headers["Content-Type"] = prometheus.CONTENT_TYPE
        return response

    return serve(
        _never_called,
        host,
        port,
        process_request=process_request,
        compression=None,
        open_timeout=REQUEST_TIMEOUT,
    )


async def _never_called(websocket: ServerConnection) -> None:
    raise AssertionError("the metrics port answers every request before the handshake")
