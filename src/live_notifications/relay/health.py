"""/healthz and /readyz for the relay, from a thread of their own.

/metrics is on the metrics port (:mod:`shared.metricsserver`): here it is
404, like any other path.
"""

from __future__ import annotations

import http.server

from live_notifications.shared.metricsserver import Answer, serve_paths

from .relay import Relay


def serve(relay: Relay, host: str, port: int) -> http.server.ThreadingHTTPServer:
    """Start answering on ``host:port`` in a daemon thread; return the server."""

    def readyz() -> Answer:
        if relay.ready:
            return 200, "ready\n", "text/plain"
        return 503, "unavailable\n", "text/plain"

    return serve_paths(
        {"/healthz": lambda: (200, "ok\n", "text/plain"), "/readyz": readyz},
        port=port,
        host=host,
        name="http",
    )
