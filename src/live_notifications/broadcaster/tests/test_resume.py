"""Resuming: clients that come back with their last id miss nothing and get nothing twice.

Real broadcaster and relay processes, real PostgreSQL and Redis; events go
through the real publishing path (the outbox, then the relay).
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable

import pytest
import redis
from django.contrib.auth.models import Group, Permission, User
from django.db import connection, connections
from websockets.sync.client import ClientConnection, connect

from live_notifications.publishing import publish
from live_notifications.shared.eventlog import STREAM
from live_notifications.shared.events import Event
from live_notifications.tokens import token_for
from tests.servers import BroadcasterProcess, RedisServer, RelayProcess, wait_until

from .helpers import (
    RECEIVE_TIMEOUT,
    authenticated,
    closed,
    event_for,
    receive_message,
    resuming,
    user,
)

pytestmark = pytest.mark.django_db(transaction=True)


def groups(*names: str) -> list[Event]:
    """Publish one group event per name, each in its own transaction."""
    events = [event_for(Group, name) for name in names]
    for event in events:
        publish(event)
    return events


def events_until(client: ClientConnection, last: str) -> list[dict[str, object]]:
    """Messages up to and including the event whose object is ``last``."""
    received = []
    while not received or received[-1].get("object") != last:
        received.append(receive_message(client))
    return received


def objects(messages: list[dict[str, object]]) -> list[object]:
    return [message["object"] for message in messages if "type" not in message]


def test_first_connection_is_welcomed_at_the_head(broadcaster: BroadcasterProcess) -> None:
    root = user("root", is_superuser=True)
    with authenticated(broadcaster, token_for(root)) as watcher:
        groups("before")
        head = json.loads(watcher.recv(timeout=RECEIVE_TIMEOUT))["id"]
    with resuming(broadcaster, token_for(root)) as (client, welcome):
        assert welcome == {"type": "welcome", "id": head, "recovered": False}
        groups("live")
        event = receive_message(client)
    assert event["object"] == "live"
    assert event["id"] != head


def test_missed_events_are_replayed_then_live_ones_follow(
    broadcaster: BroadcasterProcess,
) -> None:
    root = user("root", is_superuser=True)
    with resuming(broadcaster, token_for(root)) as (client, _):
        groups("seen")
        last_id = receive_message(client)["id"]
    groups("missed 1", "missed 2")
    wait_until(  # so that they are replayed, not sent live
        lambda: broadcaster.metrics()["broadcaster_events_received_total"] == 3,
        "the broadcaster to read the missed events",
    )
    with resuming(broadcaster, token_for(root), last_id) as (client, welcome):
        assert welcome == {"type": "welcome", "id": last_id, "recovered": True}
        groups("live")
        received = events_until(client, "live")
    assert objects(received) == ["missed 1", "missed 2", "live"]
    metrics = broadcaster.metrics()
    assert metrics['broadcaster_resumes_total{outcome="recovered"}'] == 1
    assert metrics["broadcaster_events_replayed_total"] == 2


def test_replay_honours_the_permissions_the_user_has_now(
    broadcaster: BroadcasterProcess,
) -> None:
    alice = user("alice", "auth.view_group", "auth.view_user")
    with resuming(broadcaster, token_for(alice)) as (client, _):
        publish(event_for(Group, "seen"))
        last_id = receive_message(client)["id"]
    alice.user_permissions.remove(Permission.objects.get(codename="view_user"))
    alice = User.objects.get(pk=alice.pk)  # drop the permission cache
    publish(event_for(User, "hidden now"))
    publish(event_for(Group, "visible"))
    with resuming(broadcaster, token_for(alice), last_id) as (client, welcome):
        assert welcome["recovered"] is True
        publish(event_for(Group, "end"))
        received = events_until(client, "end")
    assert objects(received) == ["visible", "end"]


@pytest.mark.parametrize(
    "last_id",
    [
        pytest.param("not an id", id="malformed"),
        pytest.param(42, id="not a string"),
        pytest.param("0123abcd:1700000000000-0", id="another history"),
        pytest.param("", id="empty"),
    ],
)
def test_a_last_id_that_cannot_be_honoured_gets_live_events(
    broadcaster: BroadcasterProcess, last_id: object
) -> None:
    root = user("root", is_superuser=True)
    with resuming(broadcaster, token_for(root), last_id) as (client, welcome):
        assert welcome["recovered"] is False
        groups("live")
        event = receive_message(client)
        assert event["object"] == "live"
        client.ping().wait(RECEIVE_TIMEOUT)  # healthy
    assert broadcaster.metrics()['broadcaster_resumes_total{outcome="not_recovered"}'] == 1


def test_a_last_id_older_than_the_history_gets_live_events(
    start_broadcaster: Callable[..., BroadcasterProcess],
) -> None:
    broadcaster = start_broadcaster(EVENT_HISTORY_MAX_EVENTS="3")
    root = user("root", is_superuser=True)
    with resuming(broadcaster, token_for(root)) as (client, _):
        groups("first")
        first_id = receive_message(client)["id"]
        groups(*(f"later {i}" for i in range(5)))
        head = events_until(client, "later 4")[-1]["id"]
    with resuming(broadcaster, token_for(root), first_id) as (client, welcome):
        assert welcome == {"type": "welcome", "id": head, "recovered": False}
        groups("live")
        assert receive_message(client)["object"] == "live"


def test_no_gap_and_no_duplicate_at_the_seam(broadcaster: BroadcasterProcess) -> None:
    """A client that keeps reconnecting while events flow gets each one exactly
    once: the first connection's events come live, and every later one starts
    with a replay (it waits until the broadcaster has read past its last id)."""
    root = user("root", is_superuser=True)
    names = [f"event {i}" for i in range(150)]
    publisher = threading.Thread(target=groups_in_thread, args=(names, 0.01))
    received: list[str] = []
    reconnects = 0
    last_id = None

    def read_past_the_client() -> bool:
        read = broadcaster.metrics()["broadcaster_events_received_total"]
        return read > len(received) or read == len(names)

    try:
        while not received or received[-1] != names[-1]:
            with resuming(broadcaster, token_for(root), last_id) as (client, welcome):
                assert welcome["recovered"] is (last_id is not None), welcome
                if not publisher.is_alive() and last_id is None:
                    publisher.start()  # registered before the first event
                for _ in range(7):  # a few events, then leave mid-stream
                    message = receive_message(client)
                    received.append(str(message["object"]))
                    last_id = message["id"]
                    if received[-1] == names[-1]:
                        break
            reconnects += 1
            wait_until(read_past_the_client, "the broadcaster to read past the client")
    finally:
        if publisher.ident is not None:
            publisher.join()
    assert received == names
    assert reconnects > 10
    metrics = broadcaster.metrics()
    assert metrics["broadcaster_events_replayed_total"] >= reconnects - 1
    assert metrics["broadcaster_messages_sent_total"] >= 7


def groups_in_thread(names: list[str], pause: float = 0.0) -> None:
    """Publish from a thread, as another process would; ``pause`` s after each."""
    try:
        for name in names:
            groups(name)
            time.sleep(pause)
    finally:
        connection.close()  # this thread's own database connection


def test_concurrent_writers_are_seen_in_one_order(
    start_broadcaster: Callable[..., BroadcasterProcess],
) -> None:
    """Events committed by several processes at once (gunicorn's workers) reach
    every client of every replica in the same order, each once."""
    first, second = start_broadcaster(), start_broadcaster()
    root = user("root", is_superuser=True)
    writers = [[f"w{w}-{i}" for i in range(25)] for w in range(4)]
    with contextlib.ExitStack() as stack:
        clients = [
            stack.enter_context(resuming(b, token_for(root)))[0] for b in (first, second, first)
        ]
        threads = [threading.Thread(target=groups_in_thread, args=(names,)) for names in writers]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        groups("end")
        streams = [objects(events_until(client, "end")) for client in clients]
    assert streams[0] == streams[1] == streams[2]
    assert sorted(streams[0]) == sorted([*(n for names in writers for n in names), "end"])
    for names in writers:  # each writer's own commits keep their order
        assert [n for n in streams[0] if n in names] == names


def test_positions_move_clients_past_what_they_may_not_see(
    start_broadcaster: Callable[..., BroadcasterProcess],
) -> None:
    broadcaster = start_broadcaster(BROADCASTER_POSITION_SECONDS="0.2")
    root = user("root", is_superuser=True)
    bystander = user("bystander", "auth.view_user")
    with (
        authenticated(broadcaster, token_for(root)) as watcher,
        resuming(broadcaster, token_for(bystander)) as (client, _),
    ):
        groups("not for the bystander")
        head = json.loads(watcher.recv(timeout=RECEIVE_TIMEOUT))["id"]
        message = receive_message(client)
        while message["id"] != head:  # positions sent before the event was read
            assert message["type"] == "position", message
            message = receive_message(client)
        assert message == {"type": "position", "id": head}
    with resuming(broadcaster, token_for(bystander), head) as (client, welcome):
        assert welcome == {"type": "welcome", "id": head, "recovered": True}
        publish(event_for(User, "for the bystander"))
        assert receive_message(client)["object"] == "for the bystander"


def test_sigterm_tells_resuming_clients_their_position_before_1001(
    broadcaster: BroadcasterProcess,
) -> None:
    root = user("root", is_superuser=True)
    bystander = user("bystander", "auth.view_user")
    with (
        resuming(broadcaster, token_for(root)) as (root_client, _),
        resuming(broadcaster, token_for(bystander)) as (client, _),
        connect(broadcaster.url) as how_to_client,
    ):
        how_to_client.send(token_for(root))
        groups("last")
        head = receive_message(root_client)["id"]
        wait_until(
            lambda: broadcaster.metrics()["broadcaster_connections"] == 3, "three registered"
        )
        assert broadcaster.terminate() == 0
        assert receive_message(client) == {"type": "position", "id": head}
        assert closed(client) == (1001, "server shutting down")
        assert receive_message(root_client) == {"type": "position", "id": head}
        assert closed(root_client) == (1001, "server shutting down")
        assert json.loads(how_to_client.recv(timeout=RECEIVE_TIMEOUT))["object"] == "last"
        assert closed(how_to_client) == (1001, "server shutting down")  # no position


def test_json_first_message_without_a_token_is_refused(broadcaster: BroadcasterProcess) -> None:
    for message in ['{"last_id": null}', '{"token": 5}', "{not json", "[]"]:
        with connect(broadcaster.url) as client:
            client.send(message)
            assert closed(client) == (1011, "authentication failed"), message


def test_ids_survive_a_redis_that_lost_its_data(
    start_broadcaster: Callable[..., BroadcasterProcess],
    relay: RelayProcess,
    redis_server: RedisServer,
) -> None:
    """Redis restarted empty (the tests' Redis keeps nothing): the relay refills
    the log from PostgreSQL with the same ids, so a broadcaster started afterwards,
    which knows only what Redis holds, still honours a position from before."""
    broadcaster = start_broadcaster()
    root = user("root", is_superuser=True)
    with resuming(broadcaster, token_for(root)) as (client, _):
        groups("one", "two")
        received = events_until(client, "two")
    one_id, two_id = (message["id"] for message in received)
    broadcaster.kill()
    redis_server.restart()
    client = redis.Redis.from_url(redis_server.url)
    wait_until(lambda: client.exists(STREAM) == 1, "the relay to refill the log")
    assert [m[b"message"] for _, m in client.xrange(STREAM)] == [
        json.dumps(message).encode() for message in received
    ]
    assert relay.metrics()["relay_refills_total"] == 1
    groups("three")
    fresh = start_broadcaster()
    with resuming(fresh, token_for(root), one_id) as (replayed, welcome):
        assert welcome == {"type": "welcome", "id": one_id, "recovered": True}
        messages = events_until(replayed, "three")
    assert messages[0]["id"] == two_id
    assert objects(messages) == ["two", "three"]


@pytest.mark.parametrize("form", ["json", "bare"])
def test_an_event_read_while_the_token_is_checked_comes_first(
    broadcaster: BroadcasterProcess, form: str
) -> None:
    """A client's stream starts where the log was when its token arrived.

    Most clients are registered at once, with no task; one whose token
    took a while (the database is held here by a lock) gets what was read
    meanwhile first, once.
    """
    alice = user("alice", "auth.view_group")  # her check reads direct permissions
    with resuming(broadcaster, token_for(user("root", is_superuser=True))) as (witness, _):
        groups("before")
        before = receive_message(witness)
    replayed = broadcaster.metrics()["broadcaster_events_replayed_total"]
    table = User.user_permissions.through._meta.db_table
    holder = connections.create_connection("default")
    holder.set_autocommit(False)
    try:
        with holder.cursor() as cursor:
            cursor.execute(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")
        with connect(broadcaster.url, open_timeout=RECEIVE_TIMEOUT) as client:
            token = token_for(alice)
            client.send(json.dumps({"token": token, "last_id": None}) if form == "json" else token)

            def waiting_for_the_lock() -> bool:
                with connection.cursor() as cursor:
                    cursor.execute(
                        "SELECT count(*) FROM pg_locks"
                        " WHERE NOT granted AND relation = %s::regclass",
                        [table],
                    )
                    return bool(cursor.fetchone()[0])

            wait_until(waiting_for_the_lock, "the token's check to wait for the lock")
            groups("meanwhile")
            wait_until(
                lambda: broadcaster.metrics()["broadcaster_events_received_total"] == 2,
                "the broadcaster to read the event while the token is checked",
            )
            holder.rollback()
            if form == "json":
                welcome = receive_message(client)
                assert welcome["type"] == "welcome", welcome
                assert welcome["id"] == before["id"] and welcome["recovered"] is False, welcome
            assert receive_message(client)["object"] == "meanwhile"
            groups("after")
            assert receive_message(client)["object"] == "after"
    finally:
        holder.close()
    assert broadcaster.metrics()["broadcaster_events_replayed_total"] == replayed + 1
