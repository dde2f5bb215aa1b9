"""Access that changes while connected: revoked users stop at once, granted ones start.

Each test changes access through the ORM, then publishes an event that the
old permissions would show and a sentinel the user may still see: the
sentinel arriving first proves the hidden event never comes, no sleep needed.
"""

from __future__ import annotations

import contextlib
import json
import socket
from collections.abc import Callable, Iterator

import pytest
from django.contrib.auth.models import Group, Permission, User
from django.contrib.contenttypes.models import ContentType
from django.db import connection
from django.test.utils import CaptureQueriesContext
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from live_notifications.access import announce
from live_notifications.broadcaster.auth import access_of
from live_notifications.publishing import publish
from live_notifications.tokens import token_for
from tests.servers import BroadcasterProcess, wait_until

from .helpers import (
    RECEIVE_TIMEOUT,
    authenticated,
    closed,
    event_for,
    objects_until,
    receive_message,
    resuming,
    user,
)

pytestmark = pytest.mark.django_db(transaction=True)


def permission(codename: str) -> Permission:
    return Permission.objects.get(codename=codename)


@contextlib.contextmanager
def both_protocols(broadcaster: BroadcasterProcess, who: User) -> Iterator[list[ClientConnection]]:
    """A how-to client and a resuming one of ``who``, both registered."""
    with (
        authenticated(broadcaster, token_for(who)) as how_to,
        resuming(broadcaster, token_for(who)) as (resumer, _),
    ):
        yield [how_to, resumer]


@pytest.mark.parametrize(
    "revoke",
    [
        pytest.param(lambda u: setattr(u, "is_active", False) or u.save(), id="deactivated"),
        pytest.param(lambda u: u.delete(), id="deleted"),
        pytest.param(lambda u: u.set_password("new-Long-passphrase-3") or u.save(), id="password"),
    ],
)
def test_revoked_users_are_closed_on_every_replica(
    start_broadcaster: Callable[..., BroadcasterProcess], revoke: Callable[[User], None]
) -> None:
    first, second = start_broadcaster(), start_broadcaster()
    alice = user("alice", "auth.view_group")
    with both_protocols(first, alice) as on_first, both_protocols(second, alice) as on_second:
        revoke(alice)
        publish(event_for(Group, "after the revocation"))
        for client in [*on_first, *on_second]:
            assert closed(client) == (1008, "access revoked")
    assert first.metrics()["broadcaster_access_revoked_total"] == 2


@pytest.mark.parametrize(
    ("via_group", "reduce"),
    [
        pytest.param(
            False, lambda u, g: u.user_permissions.remove(permission("view_user")), id="own"
        ),
        pytest.param(True, lambda u, g: u.groups.remove(g), id="left the group"),
        pytest.param(True, lambda u, g: g.user_set.remove(u), id="removed from the group"),
        pytest.param(
            True, lambda u, g: g.permissions.remove(permission("view_user")), id="group's"
        ),
        pytest.param(True, lambda u, g: g.delete(), id="group deleted"),
    ],
)
def test_reduced_permissions_apply_before_the_next_event(
    broadcaster: BroadcasterProcess, via_group: bool, reduce: Callable[[User, Group], None]
) -> None:
    alice = user("alice", "auth.view_group", *([] if via_group else ["auth.view_user"]))
    readers = Group.objects.create(name="Readers")
    readers.permissions.add(permission("view_user"))
    if via_group:
        alice.groups.add(readers)
    with both_protocols(broadcaster, alice) as clients:
        publish(event_for(User, "seen"))
        for client in clients:
            assert objects_until(client, "seen") == ["seen"]
        reduce(alice, readers)
        publish(event_for(User, "hidden"))
        publish(event_for(Group, "sentinel"))
        for client in clients:
            assert objects_until(client, "sentinel") == ["sentinel"]


@pytest.mark.parametrize(
    ("member", "extend"),
    [
        pytest.param(False, lambda u, g: u.user_permissions.add(permission("view_user")), id="own"),
        pytest.param(False, lambda u, g: u.groups.add(g), id="joined a group"),
        pytest.param(False, lambda u, g: g.user_set.add(u), id="added to a group"),
        pytest.param(True, lambda u, g: g.permissions.add(permission("view_user")), id="group's"),
        pytest.param(
            False, lambda u, g: setattr(u, "is_superuser", True) or u.save(), id="superuser"
        ),
    ],
)
def test_extended_permissions_apply_before_the_next_event(
    broadcaster: BroadcasterProcess, member: bool, extend: Callable[[User, Group], None]
) -> None:
    alice = user("alice", "auth.view_group")
    readers = Group.objects.create(name="Readers")
    if member:  # the group gains the permission
        alice.groups.add(readers)
    else:  # alice gains it, or the group that has it
        readers.permissions.add(permission("view_user"))
    with both_protocols(broadcaster, alice) as clients:
        publish(event_for(User, "before"))
        publish(event_for(Group, "sentinel"))
        for client in clients:
            assert objects_until(client, "sentinel") == ["sentinel"]
        extend(alice, readers)
        publish(event_for(User, "now visible"))
        for client in clients:
            assert objects_until(client, "now visible") == ["now visible"]


def test_superuser_status_removed(broadcaster: BroadcasterProcess) -> None:
    root = user("root", "auth.view_group", is_superuser=True)
    with both_protocols(broadcaster, root) as clients:
        root.is_superuser = False
        root.save()
        publish(event_for(User, "hidden"))
        publish(event_for(Group, "sentinel"))
        for client in clients:
            assert objects_until(client, "sentinel") == ["sentinel"]


def test_a_group_of_many_is_recomputed_in_one_batch(broadcaster: BroadcasterProcess) -> None:
    """50 members connected, their group loses a permission: one recompute
    (two queries) for all of them, not one per connection."""
    readers = Group.objects.create(name="Readers")
    readers.permissions.add(permission("view_user"), permission("view_group"))
    members = [user(f"member{i}") for i in range(50)]
    readers.user_set.add(*members)
    with contextlib.ExitStack() as stack:
        clients = [stack.enter_context(authenticated(broadcaster, token_for(m))) for m in members]
        publish(event_for(Group, "ready"))  # after it, the memberships' own changes are applied
        for client in clients:
            assert objects_until(client, "ready") == ["ready"]
        before = broadcaster.metrics()
        readers.permissions.remove(permission("view_user"))
        publish(event_for(User, "hidden"))
        publish(event_for(Group, "sentinel"))
        for client in clients:
            assert objects_until(client, "sentinel") == ["sentinel"]
    after = broadcaster.metrics()
    for name, added in [("recomputes", 1), ("users_recomputed", 50)]:
        metric = f"broadcaster_access_{name}_total"
        assert after[metric] == before[metric] + added, metric


def test_access_is_what_djangos_model_backend_says() -> None:
    """The hand-written query against the how-to's way: ``has_perm`` on every content type."""
    editors, viewers = Group.objects.create(name="Editors"), Group.objects.create(name="Viewers")
    editors.permissions.add(permission("change_user"), permission("add_group"))
    viewers.permissions.add(permission("view_group"), permission("view_user"))
    users = [
        user("direct_view", "auth.view_group"),
        user("direct_change", "auth.change_permission", "admin.view_logentry"),
        user("neither", "auth.add_group", "auth.delete_user"),
        user("nothing"),
        user("in_a_group"),
        user("in_both_and_direct", "auth.view_group", "admin.change_logentry"),
        user("root", is_superuser=True),
        user("inactive", "auth.view_group", is_active=False),
    ]
    users[4].groups.add(editors)
    users[5].groups.add(editors, viewers)
    expected = {}
    for who in users:
        who = User.objects.get(pk=who.pk)  # no permission cache
        if not who.is_active:
            continue
        if who.is_superuser:
            expected[who.pk] = (True, frozenset(), frozenset(), groups_of(who))
            continue
        expected[who.pk] = (
            False,
            frozenset(
                content_type.id
                for content_type in ContentType.objects.all()
                if who.has_perm(f"{content_type.app_label}.view_{content_type.model}")
                or who.has_perm(f"{content_type.app_label}.change_{content_type.model}")
            ),
            frozenset(who.get_all_permissions()),  # Django's own reading
            groups_of(who),
        )
    found = access_of([who.pk for who in users])
    assert {
        pk: (a.superuser, a.content_types, a.permissions, a.groups) for pk, a in found.items()
    } == expected
    assert expected[users[2].pk][1] == expected[users[3].pk][1] == frozenset()  # add, delete: no
    assert len(expected[users[5].pk][1]) == 3  # groups, users, log entries
    assert all(expected[who.pk][2] for who in (*users[:3], *users[4:6]))  # some permission
    assert expected[users[5].pk][3] == {editors.pk, viewers.pk}


def test_recomputing_costs_three_queries_however_many_users() -> None:
    readers = Group.objects.create(name="Readers")
    readers.permissions.add(permission("view_group"))
    members = User.objects.bulk_create([User(username=f"m{i}") for i in range(5000)])
    User.groups.through.objects.bulk_create(
        [User.groups.through(user_id=m.pk, group_id=readers.pk) for m in members]
    )
    with CaptureQueriesContext(connection) as one:
        access_of([members[0].pk])
    with CaptureQueriesContext(connection) as many:
        access = access_of([m.pk for m in members])
    assert len(one) == len(many) == 3  # the users, their permissions, their groups
    assert len(set(map(id, access.values()))) == 1  # one object, shared
    (shared,) = set(access.values())
    assert shared.content_types == {permission("view_group").content_type_id}
    assert shared.permissions == {"auth.view_group"}
    assert shared.groups == {readers.pk}


def test_access_changes_are_not_sent_to_clients(broadcaster: BroadcasterProcess) -> None:
    root = user("root", is_superuser=True)
    alice = user("alice")
    with both_protocols(broadcaster, root) as clients:
        alice.user_permissions.add(permission("view_user"))  # an access change in the log
        publish(event_for(Group, "sentinel"))
        for client in clients:
            assert objects_until(client, "sentinel") == ["sentinel"]


def test_a_client_that_sends_is_closed(broadcaster: BroadcasterProcess) -> None:
    root = user("root", is_superuser=True)
    with authenticated(broadcaster, token_for(root)) as client:
        client.send("hello?")
        assert closed(client) == (1008, "clients send nothing")
    assert broadcaster.metrics()["broadcaster_clients_sending_total"] == 1


def test_a_client_that_stops_reading_is_cut(
    start_broadcaster: Callable[..., BroadcasterProcess],
) -> None:
    # The close frame waits behind what was queued: give the client time to
    # read through to it once it reads again.
    broadcaster = start_broadcaster(
        BROADCASTER_SLOW_CLIENT_BUFFER="65536", BROADCASTER_CLOSE_TIMEOUT="60"
    )
    root = user("root", is_superuser=True)
    # max_queue=1: this client stops reading its socket after one message,
    # so the server's buffers fill as a stalled browser's would. A small
    # receive buffer, set before connecting: Linux would otherwise let it grow
    # to tens of megabytes on loopback.
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    sock.connect(("127.0.0.1", broadcaster.port))
    with connect(broadcaster.url, sock=sock, max_queue=1, open_timeout=RECEIVE_TIMEOUT) as client:
        client.send(token_for(root))
        wait_until(
            lambda: broadcaster.metrics()["broadcaster_connections"] == 1, "the client to register"
        )
        big = "x" * 4000
        publish(*(event_for(Group, f"{big} {i}") for i in range(4000)))  # 16 MB
        wait_until(
            lambda: broadcaster.metrics()["broadcaster_slow_clients_dropped_total"] == 1,
            "the broadcaster to drop the client",
        )
        received = 0
        with pytest.raises(ConnectionClosed) as info:
            while True:
                client.recv(timeout=RECEIVE_TIMEOUT)
                received += 1
    assert info.value.rcvd is not None
    assert (info.value.rcvd.code, info.value.rcvd.reason) == (1008, "too slow")
    assert received < 4000
    assert "event=slow_client" in broadcaster.output()


def test_access_changes_met_while_catching_up_apply_too(broadcaster: BroadcasterProcess) -> None:
    """A client resuming from before an access change meets it in its replay:
    a revocation closes it with 1008 (not the 1000 of a handler that returned),
    a permission change is recomputed before the next replayed event."""
    alice = user("alice", "auth.view_group", "auth.view_user")
    with resuming(broadcaster, token_for(alice)) as (client, _):
        publish(event_for(Group, "seen"))
        last_id = receive_message(client)["id"]
    announce([alice.pk])  # by hand, as after a QuerySet.update()
    publish(event_for(Group, "after the change"))
    before = broadcaster.metrics()["broadcaster_access_recomputes_total"]
    with resuming(broadcaster, token_for(alice), last_id) as (client, welcome):
        assert welcome["recovered"] is True
        assert objects_until(client, "after the change") == ["after the change"]
    assert broadcaster.metrics()["broadcaster_access_recomputes_total"] == before + 1

    announce([alice.pk], revoked=True)  # alice may still get tokens: only the log says so
    with resuming(broadcaster, token_for(alice), last_id) as (client, welcome):
        assert welcome["recovered"] is True
        assert receive_message(client)["object"] == "after the change"  # before the revocation
        assert closed(client) == (1008, "access revoked")


def test_a_revocation_read_while_a_client_catches_up_comes_after_its_replay(
    broadcaster: BroadcasterProcess,
) -> None:
    """A revocation that arrives while a resuming client is still being sent
    its replay closes it where the log has it: after every event before it."""
    alice = user("alice", "auth.view_group")
    with resuming(broadcaster, token_for(alice)) as (client, _):
        publish(event_for(Group, "seen"))
        last_id = receive_message(client)["id"]
    big = "x" * 4000
    missed = [f"{big} {i}" for i in range(4000)]  # 16 MB: more than the sockets hold
    received = broadcaster.metrics()["broadcaster_events_received_total"]
    publish(*(event_for(Group, name) for name in missed))
    wait_until(
        lambda: broadcaster.metrics()["broadcaster_events_received_total"] == received + 4000,
        "the broadcaster to read the events the client missed",
    )
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    sock.connect(("127.0.0.1", broadcaster.port))
    with connect(broadcaster.url, sock=sock, max_queue=1, open_timeout=RECEIVE_TIMEOUT) as client:
        client.send(json.dumps({"token": token_for(alice), "last_id": last_id}))
        # The client reads nothing more: its replay stalls part way.
        wait_until(
            lambda: broadcaster.metrics()["broadcaster_events_replayed_total"] > 0,
            "the replay to start",
        )
        received = broadcaster.metrics()["broadcaster_events_received_total"]
        announce([alice.pk], revoked=True)
        publish(event_for(Group, "after the revocation"))
        wait_until(  # read after the revocation: the revocation was read too
            lambda: broadcaster.metrics()["broadcaster_events_received_total"] > received,
            "the broadcaster to read the revocation",
        )
        assert broadcaster.metrics()["broadcaster_connections"] == 0  # still catching up
        assert receive_message(client)["type"] == "welcome"
        objects = []
        with pytest.raises(ConnectionClosed) as info:
            while True:
                objects.append(receive_message(client)["object"])
    assert objects == missed
    assert info.value.rcvd is not None
    assert (info.value.rcvd.code, info.value.rcvd.reason) == (1008, "access revoked")


def groups_of(who: User) -> frozenset[int]:
    return frozenset(who.groups.values_list("pk", flat=True))
