"""A metrics port: ``GET /metrics`` from a daemon thread, 404 for anything else.

For a program whose metrics must not be on its public port, and whose main
thread is busy with something else (gunicorn's master supervising workers).
"""

from __future__ import annotations

import http.server
import threading
from collections.abc import Callable
from typing import Any

from shared import prometheus

METRICS_PATH = "/metrics"


def serve(
    render: Callable[[], str],
    *,
    port: int,
    host: str = "0.0.0.0",  # noqa: S104 - scraped by pod IP
) -> http.server.ThreadingHTTPServer:
    """Answer ``GET /metrics`` with ``render()`` on ``host:port``; return the server.

    Binding happens here, so a port in use raises at once. ``render`` runs in
    the server's threads, one per request: it must be thread-safe. Requests
    are not logged (Prometheus scrapes every few seconds).
    """

    class Handler(http.server.BaseHTTPRequestHandler):
        # A client that stalls mid-request doesn't keep its thread forever.
        timeout = 10

        def do_GET(self) -> None:
            if self.path.partition("?")[0] == METRICS_PATH:
                self._answer(200, render(), prometheus.CONTENT_TYPE)
            else:
                self._answer(404, "not found\n", "text/plain")

        def _answer(self, status: int, body: str, content_type: str) -> None:
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
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    return server
