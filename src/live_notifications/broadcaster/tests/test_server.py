"""A real broadcaster process, real WebSocket clients, real PostgreSQL and Redis."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import select
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from unittest import mock

import pytest
import redis
from django.contrib.admin.models import LogEntry
from django.contrib.auth.models import Group, Permission, User
from django.db import connection
from django.test import Client
from sesame.utils import get_token
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from live_notifications.models import OutboxEvent
from live_notifications.publishing import publish
from live_notifications.shared import prometheus
from live_notifications.shared.events import Event
from live_notifications.tokens import token_for
from tests.servers import (
    PYTHONPATH,
    SERVICES,
    BroadcasterProcess,
    PostgresServer,
    RedisServer,
    http_get,
    http_status,
    wait_until,
)

from .helpers import (
    RECEIVE_TIMEOUT,
    append_raw,
    authenticated,
    closed,
    event_for,
    receive,
    user,
)

pytestmark = pytest.mark.django_db(transaction=True)


# Authentication.


def test_valid_token_receives_events(broadcaster: BroadcasterProcess) -> None:
    root = user("root", is_superuser=True)
    with authenticated(broadcaster, token_for(root)) as client:
        event = event_for(Group, "Editors")
        publish(event)
        assert receive(client) == event


def test_message_is_forwarded_unchanged(broadcaster: BroadcasterProcess) -> None:
    root = user("root", is_superuser=True)
    payload = json.loads(event_for(Group).encode()) | {"extra": "kept"}
    with authenticated(broadcaster, token_for(root)) as client:
        OutboxEvent.objects.create(payload=json.dumps(payload))
        received = json.loads(client.recv(timeout=RECEIVE_TIMEOUT))
    assert received == payload | {"id": received["id"]}


@pytest.mark.parametrize(
    "make_token",
    [
        pytest.param(lambda u: "not a token", id="garbage"),
        pytest.param(lambda u: get_token(u), id="login-link scope"),
        pytest.param(lambda u: get_token(u, scope="other"), id="other scope"),
        pytest.param(lambda u: expired(u), id="expired"),
    ],
)
def test_bad_token_is_closed_with_1011(
    broadcaster: BroadcasterProcess, make_token: Callable[[User], str]
) -> None:
    alice = user("alice", "auth.view_group")
    with connect(broadcaster.url) as client:
        client.send(make_token(alice))
        assert closed(client) == (1011, "authentication failed")
    assert broadcaster.metrics()['broadcaster_auth_failures_total{reason="invalid"}'] == 1


def expired(who: User) -> str:
    with mock.patch("sesame.tokens_v2.time.time", return_value=time.time() - 3600):
        return token_for(who)


def test_token_of_inactive_user_is_refused(broadcaster: BroadcasterProcess) -> None:
    bob = user("bob", "auth.view_group")
    token = token_for(bob)
    bob.is_active = False
    bob.save()
    with connect(broadcaster.url) as client:
        client.send(token)
        assert closed(client) == (1011, "authentication failed")


def test_binary_first_message_is_refused(broadcaster: BroadcasterProcess) -> None:
    alice = user("alice")
    with connect(broadcaster.url) as client:
        client.send(token_for(alice).encode())
        assert closed(client) == (1011, "authentication failed")


def test_silent_client_is_closed(broadcaster: BroadcasterProcess) -> None:
    with connect(broadcaster.url) as client:
        assert closed(client) == (1008, "authentication timed out")
    assert broadcaster.metrics()['broadcaster_auth_failures_total{reason="timeout"}'] == 1


def test_oversized_first_message_is_refused(broadcaster: BroadcasterProcess) -> None:
    with connect(broadcaster.url, max_size=None) as client:
        client.send("x" * 100_000)
        code, _ = closed(client)
    assert code == 1009  # message too big: refused without being read whole
    assert broadcaster.metrics()['broadcaster_auth_failures_total{reason="too_large"}'] == 1


def test_unauthenticated_connections_are_limited(
    start_broadcaster: Callable[..., BroadcasterProcess],
) -> None:
    broadcaster = start_broadcaster(BROADCASTER_MAX_PENDING="2", BROADCASTER_AUTH_TIMEOUT="30")
    with connect(broadcaster.url), connect(broadcaster.url):
        wait_until(
            lambda: broadcaster.metrics()["broadcaster_pending_connections"] == 2,
            "two pending connections",
        )
        with pytest.raises(InvalidStatus) as info:
            connect(broadcaster.url)
        assert info.value.response.status_code == 503


def test_connections_are_capped(start_broadcaster: Callable[..., BroadcasterProcess]) -> None:
    broadcaster = start_broadcaster(BROADCASTER_MAX_CONNECTIONS="3")
    readyz = f"{broadcaster.http}/readyz"
    root = user("root", is_superuser=True)
    with contextlib.ExitStack() as stack:
        clients = [
            stack.enter_context(authenticated(broadcaster, token_for(root))) for _ in range(3)
        ]
        assert http_get(readyz)[:2] == (503, "full\n")
        with pytest.raises(InvalidStatus) as info:
            connect(broadcaster.url)
        assert (info.value.response.status_code, info.value.response.body) == (503, b"full\n")
        metrics = broadcaster.metrics()
        assert metrics["broadcaster_max_connections"] == 3
        assert metrics["broadcaster_connections_refused_total"] == 1
        assert metrics["broadcaster_ready"] == 0

        clients.pop().close()
        wait_until(lambda: http_status(readyz) == 200, "room for one more")
        with authenticated(broadcaster, token_for(root)) as newcomer:
            event = event_for(Group, "for the newcomer")
            publish(event)
            assert receive(newcomer) == event
            assert receive(clients[0]) == event


def test_pending_connections_count_towards_the_cap(
    start_broadcaster: Callable[..., BroadcasterProcess],
) -> None:
    broadcaster = start_broadcaster(BROADCASTER_MAX_CONNECTIONS="2", BROADCASTER_AUTH_TIMEOUT="30")
    root = user("root", is_superuser=True)
    with authenticated(broadcaster, token_for(root)), connect(broadcaster.url):
        wait_until(
            lambda: broadcaster.metrics()["broadcaster_pending_connections"] == 1,
            "one pending connection",
        )
        assert http_get(f"{broadcaster.http}/readyz")[:2] == (503, "full\n")
        with pytest.raises(InvalidStatus) as info:
            connect(broadcaster.url)
        assert info.value.response.status_code == 503


def test_browsers_from_other_origins_are_refused(broadcaster: BroadcasterProcess) -> None:
    with pytest.raises(InvalidStatus) as info:
        connect(broadcaster.url, origin="https://evil.example")  # type: ignore[arg-type]
    assert info.value.response.status_code == 403
    with connect(broadcaster.url, origin="http://localhost:8000") as client:  # type: ignore[arg-type]
        assert closed(client)[0] == 1008  # accepted, then timed out waiting for a token


# Who receives what.


def test_each_user_receives_exactly_what_they_may_see(broadcaster: BroadcasterProcess) -> None:
    # Everyone may see log entries: an event of that type ends each stream.
    grouper = user("grouper", "admin.view_logentry", "auth.view_group")
    changer = user("changer", "admin.view_logentry", "auth.change_user")
    nobody = user("nobody", "admin.view_logentry")
    root = user("root", is_superuser=True)
    group_event, user_event = event_for(Group, "Editors"), event_for(User, "alice")
    permission_event, last = event_for(Permission), event_for(LogEntry, "end")

    with contextlib.ExitStack() as stack:
        clients = {
            who.username: stack.enter_context(authenticated(broadcaster, token_for(who)))
            for who in (grouper, changer, nobody, root)
        }
        for event in (group_event, user_event, permission_event, last):
            publish(event)

        def stream(username: str) -> list[Event]:
            received = []
            while not received or received[-1] != last:
                received.append(receive(clients[username]))
            return received

        assert stream("grouper") == [group_event, last]
        assert stream("changer") == [user_event, last]
        assert stream("nobody") == [last]
        assert stream("root") == [group_event, user_event, permission_event, last]
    assert broadcaster.metrics()["broadcaster_messages_sent_total"] == 2 + 2 + 1 + 4


def test_permissions_through_a_group(broadcaster: BroadcasterProcess) -> None:
    editors = Group.objects.create(name="Editors")
    editors.permissions.add(Permission.objects.get(codename="view_group"))
    alice = user("alice")
    alice.groups.add(editors)
    with authenticated(broadcaster, token_for(alice)) as client:
        publish(event_for(User))
        publish(event_for(Group, "seen"))
        assert receive(client).object == "seen"


def test_admin_change_reaches_a_connected_client(
    broadcaster: BroadcasterProcess, admin_client: Client, admin_user: User
) -> None:
    watcher = user("watcher", "auth.view_group")
    with authenticated(broadcaster, token_for(watcher)) as client:
        response = admin_client.post("/admin/auth/group/add/", {"name": "Editors"})
        assert response.status_code == 302
        event = receive(client)
    group = Group.objects.get()
    assert (event.action, event.model, event.object) == ("added", "group", "Editors")
    assert (event.user, event.object_id) == (admin_user.username, str(group.pk))


# Robustness.


def test_malformed_entries_are_skipped(
    broadcaster: BroadcasterProcess, redis_client: redis.Redis
) -> None:
    root = user("root", is_superuser=True)
    good = event_for(Group, "after the bad ones")
    with authenticated(broadcaster, token_for(root)) as client:
        publish(event_for(Group, "first"))  # makes the stream
        assert receive(client).object == "first"
        append_raw(redis_client, b"not json")
        append_raw(redis_client, json.dumps({"model": "group", "object": "no content type"}))
        publish(good)
        assert receive(client) == good
    metrics = broadcaster.metrics()
    assert metrics["broadcaster_events_invalid_total"] == 2
    assert metrics["broadcaster_events_received_total"] == 2


def test_redis_restart(broadcaster: BroadcasterProcess, redis_server: RedisServer) -> None:
    root = user("root", is_superuser=True)
    with authenticated(broadcaster, token_for(root)) as client:
        with redis_server.down():
            wait_until(lambda: http_status(f"{broadcaster.http}/readyz") == 503, "not ready")
            client.ping().wait(RECEIVE_TIMEOUT)  # still served meanwhile
        wait_until(lambda: http_status(f"{broadcaster.http}/readyz") == 200, "ready again")
        assert broadcaster.metrics()["broadcaster_redis_reconnects_total"] >= 1
        event = event_for(Group, "after the restart")
        publish(event)
        assert receive(client) == event
    assert "event=log_reading" in broadcaster.output()


def test_postgres_restart_does_not_break_authentication(
    start_broadcaster: Callable[..., BroadcasterProcess],
    postgres_server: PostgresServer,
) -> None:
    # One ORM thread: the second authentication reuses the first one's connection.
    broadcaster = start_broadcaster(BROADCASTER_ORM_THREADS="1")
    root = user("root", is_superuser=True)
    event = event_for(Group)
    with authenticated(broadcaster, token_for(root)):
        pass
    token = token_for(root)
    postgres_server.restart()
    connection.close()  # this test process's own connection went stale too
    with authenticated(broadcaster, token) as client:
        publish(event)
        assert receive(client) == event


def test_sigterm_closes_clients_with_1001_and_exits(
    broadcaster: BroadcasterProcess,
) -> None:
    root = user("root", is_superuser=True)
    with contextlib.ExitStack() as stack:
        clients = [
            stack.enter_context(authenticated(broadcaster, token_for(root))) for _ in range(3)
        ]
        assert broadcaster.terminate() == 0
        for client in clients:
            assert closed(client) == (1001, "server shutting down")
    output = broadcaster.output()
    assert "event=draining connections=3" in output
    assert "event=drained" in output


def test_health_endpoints(broadcaster: BroadcasterProcess) -> None:
    assert http_get(f"{broadcaster.http}/healthz")[:2] == (200, "ok\n")
    assert http_get(f"{broadcaster.http}/readyz")[:2] == (200, "ready\n")
    metrics = broadcaster.metrics()
    assert metrics["broadcaster_ready"] == 1
    assert metrics["broadcaster_connections"] == 0
    assert metrics["broadcaster_max_connections"] == 10_000


def test_metrics_are_on_the_metrics_port_only(broadcaster: BroadcasterProcess) -> None:
    assert http_get(f"{broadcaster.http}/metrics")[:2] == (404, "not found\n")
    with pytest.raises(InvalidStatus) as info:
        connect(broadcaster.url + "metrics")
    assert info.value.response.status_code == 404

    status, text, content_type = http_get(f"{broadcaster.metrics_http}/metrics?x=1")
    assert (status, content_type) == (200, prometheus.CONTENT_TYPE)
    with urllib.request.urlopen(f"{broadcaster.metrics_http}/metrics") as response:  # noqa: S310
        assert response.headers.get_all("Content-Type") == [prometheus.CONTENT_TYPE]
    assert "# TYPE broadcaster_connections gauge" in text
    for path in ("/healthz", "/readyz", "/", "/metricsx"):
        assert http_get(f"{broadcaster.metrics_http}{path}")[:2] == (404, "not found\n")
    # It never upgrades, not even a handshake to /metrics.
    for path in ("/", "/metrics"):
        with pytest.raises(InvalidStatus) as info:
            connect(f"ws://127.0.0.1:{broadcaster.metrics_port}{path}")
        assert info.value.response.status_code == (200 if path == "/metrics" else 404)


def test_metrics_port_is_served_while_draining(
    start_broadcaster: Callable[..., BroadcasterProcess],
) -> None:
    broadcaster = start_broadcaster(BROADCASTER_DRAIN_SECONDS="3")
    root = user("root", is_superuser=True)
    with authenticated(broadcaster, token_for(root)), authenticated(broadcaster, token_for(root)):
        broadcaster.process.send_signal(signal.SIGTERM)
        wait_until(lambda: "event=draining" in broadcaster.output(), "the drain to start")
        assert http_status(f"{broadcaster.http}/readyz") in (503, None)
        assert broadcaster.metrics()["broadcaster_ready"] == 0
        assert broadcaster.process.wait(timeout=RECEIVE_TIMEOUT) == 0
    assert http_status(f"{broadcaster.metrics_http}/metrics") is None


@pytest.mark.parametrize("program", ["broadcaster", "relay"])
@pytest.mark.parametrize(
    ("settings_module", "environment", "error"),
    [
        pytest.param(None, {}, "DJANGO_SETTINGS_MODULE must be set", id="no-settings-module"),
        pytest.param("web.settings.production", {}, "DATABASE_URL must be set", id="no-database"),
        # What manage.py check reports (web/tests/test_checks.py), refused alike.
        pytest.param(
            "web.settings.test",
            {"SESAME_MAX_AGE": "100000"},
            "?: (live_notifications.E002) LIVE_NOTIFICATIONS_TOKEN_MAX_AGE is 100000",
            id="check-error",
        ),
    ],
)
def test_missing_configuration_fails_fast(
    program: str, settings_module: str | None, environment: dict[str, str], error: str
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "DATABASE_"))}
    if settings_module is not None:
        env["DJANGO_SETTINGS_MODULE"] = settings_module
    result = subprocess.run(
        [sys.executable, "-m", f"live_notifications.{program}"],
        cwd=SERVICES,
        capture_output=True,
        text=True,
        env={**env, **environment, "PYTHONPATH": PYTHONPATH, "DJANGO_SECRET_KEY": "x" * 50},
        timeout=60,
    )
    assert result.returncode != 0
    assert f"{program}: configuration error:" in result.stderr
    assert error in result.stderr


# The how-to's command-line client.


def test_python_m_websockets(broadcaster: BroadcasterProcess) -> None:
    root = user("root", is_superuser=True)
    before = broadcaster.metrics()["broadcaster_connections_opened_total"]
    cli = subprocess.Popen(
        [sys.executable, "-m", "websockets", broadcaster.url],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    assert cli.stdin is not None and cli.stdout is not None
    try:
        cli.stdin.write(token_for(root).encode() + b"\n")  # paste the token, press Enter
        cli.stdin.flush()
        wait_until(
            lambda: broadcaster.metrics()["broadcaster_connections_opened_total"] > before,
            "the CLI to authenticate",
        )
        event = event_for(Group, "seen in the terminal")
        publish(event)
        output = b""
        deadline = time.monotonic() + RECEIVE_TIMEOUT
        while b"seen in the terminal" not in output and time.monotonic() < deadline:
            if select.select([cli.stdout], [], [], 1)[0]:
                output += os.read(cli.stdout.fileno(), 65536)
        text = output.decode()
        assert f"Connected to {broadcaster.url}" in text
        line = next(line for line in text.splitlines() if "seen in the terminal" in line)
        shown = Event.decode(line[line.index("< ") + 2 :].strip())
        assert shown.id is not None  # the how-to's client sees the new field too
        assert dataclasses.replace(shown, id=None) == event
    finally:
        cli.stdin.close()
        cli.wait(timeout=RECEIVE_TIMEOUT)
