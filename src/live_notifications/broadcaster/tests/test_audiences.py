"""A project's own events reach their audience, as it stands at their place in the log.

Real PostgreSQL, Redis, relay and two broadcasters; every user has a client
on each. Each test ends with a sentinel for everyone, published last: a
client that receives it has received everything before it that it ever
will, so what it has is compared whole, with no sleep.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from django.contrib.auth.models import Group, Permission, User
from django.db import transaction
from websockets.sync.client import ClientConnection

from live_notifications.events import publish
from live_notifications.shared.eventlog import STREAM
from live_notifications.tokens import token_for
from tests.servers import BroadcasterProcess, RedisServer, wait_until

from .helpers import authenticated, receive_message, resuming, user

pytestmark = pytest.mark.django_db(transaction=True)

SENTINEL = "sentinel"


@pytest.fixture
def replicas(start_broadcaster: Callable[..., BroadcasterProcess]) -> list[BroadcasterProcess]:
    return [start_broadcaster(), start_broadcaster()]


@contextlib.contextmanager
def clients(
    replicas: list[BroadcasterProcess], *users: User
) -> Iterator[dict[str, list[ClientConnection]]]:
    """For each user, a resuming client on the first replica and a how-to one on the second."""
    with contextlib.ExitStack() as stack:
        connected: dict[str, list[ClientConnection]] = {}
        for who in users:
            resumer, _ = stack.enter_context(resuming(replicas[0], token_for(who)))
            how_to = stack.enter_context(authenticated(replicas[1], token_for(who)))
            connected[who.get_username()] = [resumer, how_to]
        yield connected


def app_events_until_sentinel(client: ClientConnection) -> list[dict[str, Any]]:
    """The app events received up to the sentinel, which ends the list."""
    received: list[dict[str, Any]] = []
    while not received or received[-1]["event"] != SENTINEL:
        message = receive_message(client)
        if "type" not in message:
            received.append(message)
    return received


def names(client: ClientConnection) -> list[str]:
    return [message["event"] for message in app_events_until_sentinel(client)]


def received_by_each(connected: dict[str, list[ClientConnection]]) -> dict[str, list[str]]:
    """What each user received, the same on both replicas (checked)."""
    publish(SENTINEL, None, everyone=True)
    received = {}
    for username, (first, second) in connected.items():
        received[username] = names(first)
        assert names(second) == received[username], username
    return received


def test_a_user_audience_reaches_that_user_only(replicas: list[BroadcasterProcess]) -> None:
    root = user("root", is_superuser=True)
    agent, lead = user("agent", "auth.view_group"), user("lead", "auth.view_group")
    with clients(replicas, root, agent, lead) as connected:
        publish("ticket.assigned", {"ticket": 7}, users=[agent])
        publish("ticket.escalated", {"ticket": 7}, users=[lead.pk, root])
        assert received_by_each(connected) == {
            "root": ["ticket.escalated", SENTINEL],
            "agent": ["ticket.assigned", SENTINEL],
            "lead": ["ticket.escalated", SENTINEL],
        }


def test_the_wire_is_the_event_without_its_audience(replicas: list[BroadcasterProcess]) -> None:
    agent = user("agent")
    with resuming(replicas[0], token_for(agent)) as (client, _):
        publish("ticket.assigned", {"ticket": 7, "title": "Écran noir"}, users=[agent])
        message = receive_message(client)
    assert set(message) == {"event", "data", "timestamp", "id"}
    assert (message["event"], message["data"]) == (
        "ticket.assigned",
        {"ticket": 7, "title": "Écran noir"},
    )


def test_group_audiences_follow_membership_in_log_order(
    replicas: list[BroadcasterProcess],
) -> None:
    support = Group.objects.create(name="Support")
    root = user("root", is_superuser=True)
    alice, bob = user("alice"), user("bob")
    alice.groups.add(support)
    with clients(replicas, root, alice, bob) as connected:
        publish("comment.added", 1, groups=[support])
        alice.groups.remove(support)  # announced: after it, alice receives nothing of Support
        publish("comment.added", 2, groups=[support.pk])
        support.user_set.add(bob)  # and bob everything
        publish("comment.added", 3, groups=[support])
        publish(SENTINEL, None, everyone=True)
        data = {
            username: [m["data"] for m in app_events_until_sentinel(first)][:-1]
            for username, (first, _) in connected.items()
        }
        for username, (_, second) in connected.items():
            assert [m["data"] for m in app_events_until_sentinel(second)][:-1] == data[username]
    assert data == {"root": [], "alice": [1], "bob": [3]}


def test_permission_audiences_follow_grants_in_log_order(
    replicas: list[BroadcasterProcess],
) -> None:
    shippers = Group.objects.create(name="Shippers")
    shippers.permissions.add(Permission.objects.get(codename="change_user"))
    root = user("root", is_superuser=True)
    direct, grouped, later, nobody = (
        user("direct", "auth.change_user"),
        user("grouped"),
        user("later"),
        user("nobody", "auth.view_user"),
    )
    grouped.groups.add(shippers)
    with clients(replicas, root, direct, grouped, later, nobody) as connected:
        publish("order.shipped", 1, permissions=["auth.change_user"])
        shippers.permissions.clear()  # grouped loses it
        later.user_permissions.add(Permission.objects.get(codename="change_user"))
        publish("order.shipped", 2, permissions=["auth.change_user", "auth.add_user"])
        received = received_by_each(connected)
    shipped = ["order.shipped", "order.shipped", SENTINEL]
    assert received == {
        "root": shipped,
        "direct": shipped,
        "grouped": ["order.shipped", SENTINEL],
        "later": ["order.shipped", SENTINEL],
        "nobody": [SENTINEL],
    }


def test_model_audiences_follow_the_how_tos_rule(replicas: list[BroadcasterProcess]) -> None:
    root = user("root", is_superuser=True)
    viewer, changer, adder = (
        user("viewer", "auth.view_group"),
        user("changer", "auth.change_group"),
        user("adder", "auth.add_group"),
    )
    with clients(replicas, root, viewer, changer, adder) as connected:
        publish("group.exported", None, models=[Group])
        publish("group.renamed", None, models=[Group.objects.create(name="an object")])
        received = received_by_each(connected)
    both = ["group.exported", "group.renamed", SENTINEL]
    assert received == {"root": both, "viewer": both, "changer": both, "adder": [SENTINEL]}


def test_a_union_is_received_once(replicas: list[BroadcasterProcess]) -> None:
    team = Group.objects.create(name="Team")
    alice = user("alice", "auth.view_group")
    alice.groups.add(team)
    with clients(replicas, alice) as connected:
        publish("many.ways", None, users=[alice], groups=[team], models=[Group], everyone=True)
        assert received_by_each(connected) == {"alice": ["many.ways", SENTINEL]}


def test_a_rolled_back_publish_is_never_delivered(replicas: list[BroadcasterProcess]) -> None:
    alice = user("alice")
    with clients(replicas, alice) as connected:
        with contextlib.suppress(RuntimeError), transaction.atomic():
            publish("never", None, users=[alice])
            raise RuntimeError("rolled back")
        assert received_by_each(connected) == {"alice": [SENTINEL]}


def test_replays_apply_the_access_the_user_has_now(replicas: list[BroadcasterProcess]) -> None:
    team = Group.objects.create(name="Team")
    alice, bob = user("alice"), user("bob")
    alice.groups.add(team)
    last_ids = {}
    for who in (alice, bob):
        with resuming(replicas[0], token_for(who)) as (_, welcome):
            last_ids[who.pk] = welcome["id"]
    # Both away: a group event, then they swap places.
    publish("while.away", 1, groups=[team])
    publish("for.alice", 2, users=[alice])
    team.user_set.remove(alice)
    team.user_set.add(bob)
    publish("while.away", 3, groups=[team])
    publish(SENTINEL, None, everyone=True)
    replayed = {}
    for who in (alice, bob):
        with resuming(replicas[1], token_for(who), last_ids[who.pk]) as (client, welcome):
            assert welcome["recovered"] is True
            replayed[who.get_username()] = [
                (m["event"], m["data"]) for m in app_events_until_sentinel(client)
            ]
    assert replayed == {
        "alice": [("for.alice", 2), (SENTINEL, None)],
        "bob": [("while.away", 1), ("while.away", 3), (SENTINEL, None)],
    }


def test_publish_while_redis_is_down_arrives_once_it_is_back(
    start_broadcaster: Callable[..., BroadcasterProcess], redis_server: RedisServer
) -> None:
    """Redis restarted empty: the relay refills the log from PostgreSQL, where
    the event was committed, and a broadcaster replays it."""
    broadcaster = start_broadcaster()
    alice = user("alice")
    with resuming(broadcaster, token_for(alice)) as (_, welcome):
        last_id = welcome["id"]
    broadcaster.kill()
    with redis_server.down():
        publish("during.outage", {"n": 1}, users=[alice])  # PostgreSQL alone is needed
    client = redis.Redis.from_url(redis_server.url)
    wait_until(lambda: client.exists(STREAM) == 1, "the relay to refill the log")
    publish(SENTINEL, None, everyone=True)
    with resuming(start_broadcaster(), token_for(alice), last_id) as (replayed, welcome):
        assert welcome["recovered"] is True
        assert [(m["event"], m["data"]) for m in app_events_until_sentinel(replayed)] == [
            ("during.outage", {"n": 1}),
            (SENTINEL, None),
        ]
