"""A metrics port: ``GET /metrics`` from a daemon thread, 404 for anything else.

:func:`serve_paths` is the small HTTP server under it, for other fixed
answers too (the relay's health checks).

For a program whose metrics must not be on its public port, and whose main
thread is busy with something else (gunicorn's master supervising workers).
"""

from __future__ import annotations

import http.server
import threading
from collections.abc import Callable, Mapping
from typing import Any

from live_notifications.shared import prometheus

METRICS_PATH = "/metrics"


#: What a path answers: status, body, Content-Type.
Answer = tuple[int, str, str]


def serve(
    render: Callable[[], str],
    *,
    port: int,
    host: str = "0.0.0.0",  # noqa: S104 - scraped by pod IP
) -> http.server.ThreadingHTTPServer:
    """Answer ``GET /metrics`` with ``render()`` on ``host:port``; return the server.

    Binding happens here, so a port in use raises at once. ``render`` runs in
    the server's threads, one per request: it must be thread-safe.
    """
    return serve_paths(
        {METRICS_PATH: lambda: (200, render(), prometheus.CONTENT_TYPE)},
        port=port,
        host=host,
        name="metrics",
    )


def serve_paths(
    paths: Mapping[str, Callable[[], Answer]],
    *,
    port: int,
    host: str,
    name: str,
) -> http.server.ThreadingHTTPServer:
    """Answer ``GET`` of each of ``paths`` (query ignored), 404 for any other.

    From a daemon thread called ``name``; requests are not logged (probes and
    scrapes come every few seconds). The callables run in the server's
    threads: they must be thread-safe.
    """

    class Handler(http.server.BaseHTTPRequestHandler):
        # A client that stalls mid-request doesn't keep its thread forever.
        timeout = 10

        def do_GET(self) -> None:
            answer = paths.get(self.path.partition("?")[0])
            status, body, content_type = (
                answer() if answer is not None else (404, "not found\n", "text/plain")
            )
            data = body.encode()
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name=name, daemon=True).start()
    return server
