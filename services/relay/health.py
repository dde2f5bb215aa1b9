"""/healthz, /readyz and /metrics for the relay, from a thread of their own."""

from __future__ import annotations

import http.server
import threading
from typing import Any

from shared import prometheus

from .relay import Relay


def serve(relay: Relay, host: str, port: int) -> http.server.ThreadingHTTPServer:
    """Start answering on ``host:port`` in a daemon thread; return the server."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.partition("?")[0]
            if path == "/healthz":
                self._answer(200, "ok\n")
            elif path == "/readyz":
                self._answer(200, "ready\n") if relay.ready else self._answer(503, "unavailable\n")
            elif path == "/metrics":
                body = relay.metrics.render(ready=relay.ready, leader=relay.leader)
                self._answer(200, body, prometheus.CONTENT_TYPE)
            else:
                self._answer(404, "not found\n")

        def _answer(self, status: int, body: str, content_type: str = "text/plain") -> None:
            data = body.encode()
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # probes every few seconds: not worth a line each

    server = http.server.ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="http", daemon=True).start()
    return server
