"""/healthz and /readyz for the relay, from a thread of their own.

/metrics is on the metrics port (:mod:`shared.metricsserver`): here it is
404, like any other path.
"""

from __future__ import annotations

import http.server
import threading
from typing import Any

from .relay import Relay


def serve(relay: Relay, host: str, port: int) -> http.server.ThreadingHTTPServer:
    """Start answering on ``host:port`` in a daemon thread; return the server."""

    class Handler(http.server.BaseHTTPRequestHandler):
        # A client that stalls mid-request doesn't keep its thread forever.
        timeout = 10

        def do_GET(self) -> None:
            path = self.path.partition("?")[0]
            if path == "/healthz":
                self._answer(200, "ok\n")
            elif path == "/readyz":
                self._answer(200, "ready\n") if relay.ready else self._answer(503, "unavailable\n")
            else:
                self._answer(404, "not found\n")

        def _answer(self, status: int, body: str) -> None:
            data = body.encode()
            self.send_response(status)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # probes every few seconds: not worth a line each

    server = http.server.ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="http", daemon=True).start()
    return server
