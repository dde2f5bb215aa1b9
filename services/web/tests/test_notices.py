"""The demo's own events: what an administrator changes of a user's access is told them."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from django.contrib.auth.models import Group, Permission, User
from django.test import Client

from live_notifications.models import OutboxEvent
from web.notices import receivers

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _notices() -> Iterator[None]:
    """The demo's app publishes them when ready; its test settings leave it out."""
    receivers.connect()
    yield
    receivers.disconnect()


def app_events() -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """``(name, data, audience)`` of the app events in the outbox, in order."""
    rows = [json.loads(row.payload) for row in OutboxEvent.objects.order_by("id")]
    return [(row["event"], row["data"], row["audience"]) for row in rows if "event" in row]


def test_renaming_a_group_in_the_admin_tells_its_members(admin_client: Client) -> None:
    team = Group.objects.create(name="Support")
    response = admin_client.post(f"/admin/auth/group/{team.pk}/change/", {"name": "Helpdesk"})
    assert response.status_code == 302
    assert app_events() == [
        (
            "group.renamed",
            {
                "message": "Your group “Support” is now called “Helpdesk”.",
                "old": "Support",
                "new": "Helpdesk",
            },
            {"groups": [team.pk]},
        )
    ]


def test_saving_a_group_unchanged_tells_nobody(admin_client: Client) -> None:
    team = Group.objects.create(name="Support")
    admin_client.post(f"/admin/auth/group/{team.pk}/change/", {"name": "Support"})
    assert app_events() == []


def test_a_users_groups_and_permissions(admin_user: User) -> None:
    alice, bob = User.objects.create_user("alice"), User.objects.create_user("bob")
    team = Group.objects.create(name="Support")
    alice.groups.add(team)
    team.user_set.add(bob)
    alice.user_permissions.add(Permission.objects.get(codename="view_group"))
    team.permissions.add(Permission.objects.get(codename="view_user"))
    assert [(name, audience) for name, _, audience in app_events()] == [
        ("access.changed", {"users": [alice.pk]}),
        ("access.changed", {"users": [bob.pk]}),
        ("access.changed", {"users": [alice.pk]}),
        ("group.changed", {"groups": [team.pk]}),
    ]
    assert app_events()[0][1] == {"message": "An administrator changed your groups."}
    assert app_events()[2][1] == {"message": "An administrator changed your permissions."}
