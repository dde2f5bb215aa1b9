"""The metrics port: /metrics from the render function, 404 for anything else."""

from __future__ import annotations

import socket
import urllib.request

import pytest

from live_notifications.shared import metricsserver, prometheus
from tests.servers import free_port, http_status


def test_serves_metrics_and_nothing_else() -> None:
    renders = []

    def render() -> str:
        renders.append(1)
        return f"scrapes_total {len(renders)}\n"

    port = free_port()
    server = metricsserver.serve(render, port=port, host="127.0.0.1")
    try:
        base = f"http://127.0.0.1:{port}"
        with urllib.request.urlopen(f"{base}/metrics?x=1", timeout=5) as response:  # noqa: S310
            assert response.headers["Content-Type"] == prometheus.CONTENT_TYPE
            assert response.read() == b"scrapes_total 1\n"
        assert http_status(f"{base}/metrics") == 200
        assert renders == [1, 1]  # rendered per request, not cached
        for path in ("/", "/healthz", "/metrics/", "/metricsx"):
            assert http_status(base + path) == 404
    finally:
        server.shutdown()
        server.server_close()


def test_a_port_in_use_fails_at_once() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(OSError):
            metricsserver.serve(str, port=taken.getsockname()[1], host="127.0.0.1")
