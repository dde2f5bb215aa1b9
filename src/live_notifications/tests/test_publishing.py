"""Admin changes become events in the outbox, in their own transaction."""

from __future__ import annotations

import datetime

import pytest
from django.contrib.admin.models import CHANGE, LogEntry
from django.contrib.auth.models import Group, User
from django.contrib.contenttypes.models import ContentType
from django.db import transaction
from django.test import Client

from live_notifications import metrics
from tests.servers import RedisServer

from .conftest import Outbox

pytestmark = pytest.mark.django_db(transaction=True)


def group_type_id() -> int:
    return ContentType.objects.get_for_model(Group).id


def test_adding_through_the_admin_publishes_one_event(
    admin_client: Client, admin_user: User, events: Outbox
) -> None:
    response = admin_client.post("/admin/auth/group/add/", {"name": "Editors"})
    assert response.status_code == 302
    group = Group.objects.get(name="Editors")

    event = events.next()
    assert event.model == "group"
    assert event.object == "Editors"
    assert event.message == "Added."
    assert event.action == "added"
    assert event.user == admin_user.username
    assert event.content_type_id == group_type_id()
    assert event.object_id == str(group.pk)
    when = datetime.datetime.fromisoformat(event.timestamp)
    assert when.tzinfo is not None
    assert abs(when - LogEntry.objects.get().action_time) < datetime.timedelta(seconds=1)
    events.assert_nothing_more()


def test_changing_publishes_the_readable_change_message(
    admin_client: Client, events: Outbox
) -> None:
    group = Group.objects.create(name="Editors")
    response = admin_client.post(f"/admin/auth/group/{group.pk}/change/", {"name": "Writers"})
    assert response.status_code == 302

    event = events.next()
    assert (event.action, event.object, event.message) == ("changed", "Writers", "Changed Name.")
    events.assert_nothing_more()


def test_deleting_one_object_publishes_a_deletion(admin_client: Client, events: Outbox) -> None:
    group = Group.objects.create(name="Editors")
    response = admin_client.post(f"/admin/auth/group/{group.pk}/delete/", {"post": "yes"})
    assert response.status_code == 302
    assert not Group.objects.exists()

    event = events.next()
    assert (event.action, event.object, event.message) == ("deleted", "Editors", "Deleted.")
    assert event.object_id == str(group.pk)
    events.assert_nothing_more()


def test_bulk_deletion_publishes_one_event_per_object(admin_client: Client, events: Outbox) -> None:
    # Django >= 5.1 logs these with bulk_create(), which sends no post_save.
    groups = [Group.objects.create(name=name) for name in ("Editors", "Writers", "Readers")]
    response = admin_client.post(
        "/admin/auth/group/",
        {"action": "delete_selected", "_selected_action": [g.pk for g in groups], "post": "yes"},
    )
    assert response.status_code == 302
    assert not Group.objects.exists()

    announced = {(e.action, e.object, e.object_id) for e in (events.next() for _ in groups)}
    assert announced == {("deleted", g.name, str(g.pk)) for g in groups}
    events.assert_nothing_more()


def test_two_models_publish_their_own_content_types(admin_client: Client, events: Outbox) -> None:
    admin_client.post("/admin/auth/group/add/", {"name": "Editors"})
    admin_client.post(
        "/admin/auth/user/add/",
        {
            "username": "alice",
            "password1": "a-Long-passphrase-1",
            "password2": "a-Long-passphrase-1",
            "usable_password": "true",
        },
    )
    group_event, user_event = events.next(), events.next()
    assert (group_event.model, group_event.content_type_id) == ("group", group_type_id())
    assert (user_event.model, user_event.object) == ("user", "alice")
    assert user_event.content_type_id == ContentType.objects.get_for_model(User).id


def test_rolled_back_change_publishes_nothing(admin_user: User, events: Outbox) -> None:
    group = Group.objects.create(name="Editors")
    with pytest.raises(RuntimeError), transaction.atomic():
        LogEntry.objects.log_actions(
            user_id=admin_user.pk, queryset=[group], action_flag=CHANGE, change_message="Renamed."
        )
        raise RuntimeError("the view failed after logging")
    assert not LogEntry.objects.exists()
    events.assert_nothing_more()


def test_committed_log_entry_outside_the_admin_is_published_once(
    admin_user: User, events: Outbox
) -> None:
    group = Group.objects.create(name="Editors")
    with transaction.atomic():
        LogEntry.objects.log_actions(
            user_id=admin_user.pk,
            queryset=[group],
            action_flag=CHANGE,
            change_message="Renamed.",
            single_object=True,
        )
    assert events.next().message == "Renamed."
    events.assert_nothing_more()


def test_admin_save_succeeds_with_redis_down(
    admin_client: Client, redis_server: RedisServer, events: Outbox
) -> None:
    """Publishing needs only PostgreSQL: the relay takes the event to Redis later."""
    with redis_server.down():
        response = admin_client.post("/admin/auth/group/add/", {"name": "Editors"})
    assert response.status_code == 302
    assert Group.objects.filter(name="Editors").exists()
    assert events.next().object == "Editors"
    events.assert_nothing_more()


def test_publishing_counts_committed_events(admin_client: Client) -> None:
    before = metrics.published()
    admin_client.post("/admin/auth/group/add/", {"name": "Editors"})
    assert metrics.published() == before + 1
