"""Tokens, permissions, access changes and revocation with a project's own user model.

The notifications app is relabelled ``live`` too, so that the outbox's
table is ``live_outboxevent``: the relay must find it.

With ``accounts.Person`` (email login, UUID primary key, table ``people``,
its relations in ``people_groups`` and ``people_user_permissions``): a real
relay and broadcaster, real clients. Each hidden event is followed by a
sentinel its client may see: the sentinel arriving first proves the
hidden event never comes.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group, Permission

from live_notifications import events
from live_notifications.broadcaster.tests.helpers import authenticated, closed, event_for, receive
from live_notifications.models import OutboxEvent
from live_notifications.publishing import publish
from live_notifications.tokens import token_for
from tests.servers import BroadcasterProcess

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(
        settings.AUTH_USER_MODEL != "accounts.Person",
        reason="run with --ds=live_notifications.tests.project.settings (make unit does)",
    ),
]


def person(email: str, *permissions: str, group: Group | None = None, **fields: object):  # type: ignore[no-untyped-def]
    created = get_user_model()._default_manager.create_user(email, **fields)  # type: ignore[attr-defined]
    for codename in permissions:
        created.user_permissions.add(Permission.objects.get(codename=codename))
    if group is not None:
        created.groups.add(group)
    return created


def test_the_user_model_and_the_apps_label_are_the_projects() -> None:
    assert OutboxEvent._meta.db_table == "live_outboxevent"
    model = get_user_model()
    assert model._meta.db_table == "people"
    assert model._meta.pk is not None and model._meta.pk.get_internal_type() == "UUIDField"
    assert model.USERNAME_FIELD == "email"


def test_events_follow_the_custom_users_permissions_and_access_changes(
    start_broadcaster: Callable[..., BroadcasterProcess],
) -> None:
    broadcaster = start_broadcaster()
    editors = Group.objects.create(name="editors")
    editors.permissions.add(Permission.objects.get(codename="view_group"))
    root = person("root@example.com", is_superuser=True)
    member = person("member@example.com", group=editors)
    outsider = person("outsider@example.com", "view_permission")
    assert isinstance(member.pk, uuid.UUID)
    with (
        authenticated(broadcaster, token_for(root)) as root_client,
        authenticated(broadcaster, token_for(member)) as member_client,
        authenticated(broadcaster, token_for(outsider)) as outsider_client,
    ):
        # The superuser sees all; a member of a group that may view groups
        # sees a group's change; the outsider doesn't, but sees the sentinel.
        publish(event_for(Group, "one"))
        publish(event_for(Permission, "sentinel"))
        assert receive(root_client).object == "one"
        assert receive(root_client).object == "sentinel"
        assert receive(member_client).object == "one"
        assert receive(outsider_client).object == "sentinel"

        # Granted while connected, through the group: from the next event on.
        outsider.groups.add(editors)
        publish(event_for(Group, "two"))
        assert receive(outsider_client).object == "two"
        assert receive(member_client).object == "two"
        assert receive(root_client).object == "two"

        # Deactivated while connected: closed, on the model's own is_active.
        member.is_active = False
        member.save()
        assert closed(member_client) == (1008, "access revoked")

        # Removed from the group (the model's own relation): hidden again.
        outsider.groups.remove(editors)
        publish(event_for(Group, "three"))
        publish(event_for(Permission, "sentinel 2"))
        assert receive(outsider_client).object == "sentinel 2"
        assert receive(root_client).object == "three"
    assert broadcaster.metrics()["broadcaster_access_revoked_total"] == 1


def test_a_password_change_revokes_a_custom_users_connections(
    start_broadcaster: Callable[..., BroadcasterProcess],
) -> None:
    broadcaster = start_broadcaster()
    someone = person("someone@example.com", "view_group")
    with authenticated(broadcaster, token_for(someone)) as client:
        someone.set_password("another-Long-passphrase-5")
        someone.save()
        assert closed(client) == (1008, "access revoked")


def test_app_events_reach_custom_users_by_uuid_group_and_permission(
    start_broadcaster: Callable[..., BroadcasterProcess],
) -> None:
    """publish() with the custom model's UUID keys, its own groups relation and
    its own permissions relation; each client ends with a sentinel for everyone."""
    broadcaster = start_broadcaster()
    team = Group.objects.create(name="team")
    alice = person("alice@example.com", group=team)
    bob = person("bob@example.com", "view_permission")
    carol = person("carol@example.com")
    with (
        authenticated(broadcaster, token_for(alice)) as alice_client,
        authenticated(broadcaster, token_for(bob)) as bob_client,
        authenticated(broadcaster, token_for(carol)) as carol_client,
    ):
        events.publish("for.carol", None, users=[str(carol.pk)])  # a UUID's text
        events.publish("for.alice", None, users=[alice])
        events.publish("for.team", None, groups=[team])
        events.publish("for.viewers", None, permissions=["auth.view_permission"])
        events.publish("sentinel", None, everyone=True)
        received = {}
        for name, client in [("alice", alice_client), ("bob", bob_client), ("carol", carol_client)]:
            received[name] = []
            while not received[name] or received[name][-1] != "sentinel":
                received[name].append(json.loads(client.recv(timeout=30))["event"])
    assert received == {
        "alice": ["for.alice", "for.team", "sentinel"],
        "bob": ["for.viewers", "sentinel"],
        "carol": ["for.carol", "sentinel"],
    }
    (row,) = [r for r in OutboxEvent.objects.all() if '"for.carol"' in r.payload]
    assert f'"users": ["{carol.pk}"]' in row.payload
