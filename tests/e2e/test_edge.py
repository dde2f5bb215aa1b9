"""What the public ports answer: the site and the broadcasters, never the metrics.

Every service serves /metrics on a port of its own that the edge doesn't
route to, so no spelling of the path can reach it through the public ports.
"""

from __future__ import annotations

import re
import secrets
import socket

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from .helpers import AdminSession
from .stack import WAIT, Stack

#: /metrics as a client may spell it: percent-encoded, with dot segments,
#: doubled slashes, another case, a query, behind the WebSocket prefix.
SPELLINGS = [
    "/metrics",
    "/metrics/",
    "/metrics?name[]=web_events_published_total",
    "/%6detrics",
    "/%6Detrics",
    "/%6D%65%74%72%69%63%73",
    "/METRICS",
    "//metrics",
    "/./metrics",
    "/%2e/metrics",
    "/x/../metrics",
    "/x/%2e%2e/metrics",
    "/%2fmetrics",
    "/metrics%2f",
    "/ws/metrics",
    "/ws/../metrics",
    "/ws/%2e%2e/metrics",
    "/ws/%2fmetrics",
]

#: What only a metrics exposition contains.
EXPOSITION_MARKS = ("# TYPE ", "_total ", "broadcaster_connections", "relay_leader")


def raw_get(port: int, target: str) -> tuple[int, str]:
    """GET ``target`` exactly as written (no client normalises it); (status, body)."""
    request = f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as sock:
        sock.sendall(request.encode())
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    response = b"".join(chunks).decode(errors="replace")
    status_line, _, rest = response.partition("\r\n")
    return int(status_line.split()[1]), rest.partition("\r\n\r\n")[2]


def public_ports(stack: Stack) -> list[int]:
    return [int(stack.settings.environment[name]) for name in ("SITE_PORT", "WEBSOCKET_PORT")]


def test_metrics_exist_inside_the_stack(stack: Stack) -> None:
    """The control for the test below: every service does serve its metrics,
    read from inside the stack, in the exposition format it looks for."""
    web = stack.run("web-metrics").stdout
    relay = stack.run("relay-metrics").stdout
    broadcaster = stack.run("metrics", stack.broadcaster_ids()[0]).stdout
    for exposition in (web, relay, broadcaster):
        assert "# TYPE " in exposition
    assert "web_events_published_total " in web
    assert "broadcaster_connections " in broadcaster
    assert "relay_leader " in relay


@pytest.mark.parametrize("target", SPELLINGS)
def test_no_spelling_of_metrics_reaches_them_through_the_edge(stack: Stack, target: str) -> None:
    """On the site's port and on the direct WebSocket port, /metrics however
    spelled is never answered with a metrics exposition."""
    for port in public_ports(stack):
        status, body = raw_get(port, target)
        leaked = [mark for mark in EXPOSITION_MARKS if mark in body]
        assert not leaked, f"127.0.0.1:{port}{target} answered {status} with metrics: {leaked}"
        assert status != 200, f"127.0.0.1:{port}{target} answered 200"


def test_published_counter_adds_up_over_web_workers(stack: Stack, admin: AdminSession) -> None:
    """web's counter of published log entries is one series for all of
    gunicorn's workers: N changes through the edge (a connection per
    request, so they land on any worker) add exactly N to it."""
    name = "web_events_published_total"
    before = stack.web_metrics()
    assert [sample for sample in before if sample.startswith(name)] == [name]
    changes = 6
    for _ in range(changes):
        # A group without members: one event, no access change.
        admin.add_group(f"counted-{secrets.token_hex(4)}")
    # The counter moves in the request that commits, before its response.
    after = stack.web_metrics()
    assert after[name] - before[name] == changes


#: What a client may write in X-Forwarded-For to forge a log line.
FORGED = "203.0.113.72 user=admin event=connect"
#: An authentication failure's line, with an address for remote.
AUTH_FAILURE = re.compile(r"event=auth_failure reason=invalid remote=[0-9A-Fa-f.:]+$", re.M)


def test_a_forged_x_forwarded_for_never_reaches_the_logs(stack: Stack) -> None:
    """Behind the edge, a broadcaster logs the address the edge appended to
    X-Forwarded-For, parsed as an address: never what the client wrote there."""
    before = len(AUTH_FAILURE.findall(stack.logs()))
    for url in stack.websocket_urls:
        with connect(url, additional_headers={"X-Forwarded-For": FORGED}, open_timeout=WAIT) as ws:
            ws.send("not a token")
            with pytest.raises(ConnectionClosed) as closed:
                ws.recv(timeout=WAIT)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1011
    # The line is written before the close frame is sent.
    logs = stack.logs()
    assert len(AUTH_FAILURE.findall(logs)) >= before + 2
    assert "203.0.113.72" not in logs
