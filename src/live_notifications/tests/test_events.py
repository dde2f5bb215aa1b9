"""``publish()``: what reaches the outbox, and what is refused at the call."""

from __future__ import annotations

import datetime
import decimal
import json
import re
import uuid
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import Group, Permission, User
from django.contrib.contenttypes.models import ContentType
from django.db import transaction

from live_notifications.events import EventError, publish
from live_notifications.models import OutboxEvent
from live_notifications.shared.events import MAX_EVENT_BYTES, AppEvent, decode_entry

pytestmark = pytest.mark.django_db(transaction=True)


def outbox() -> list[dict[str, Any]]:
    return [json.loads(row.payload) for row in OutboxEvent.objects.order_by("id")]


def test_an_event_is_written_with_its_audience() -> None:
    alice = User.objects.create_user("alice")
    team = Group.objects.create(name="Team")
    when = datetime.datetime(2026, 12, 7, 12, 0, tzinfo=datetime.UTC)
    publish(
        "ticket.assigned",
        {"ticket": 7, "due": when, "price": decimal.Decimal("1.50"), "ref": uuid.UUID(int=1)},
        users=[alice, 42],
        groups=[team, 99],
        permissions=["auth.view_user"],
        models=[Group, team],  # a model and an object of it: one content type
        everyone=False,
    )
    [row] = outbox()
    assert row.pop("audience") == {
        "users": sorted([42, alice.pk]),
        "groups": [team.pk, 99],
        "permissions": ["auth.view_user"],
        "content_types": [ContentType.objects.get_for_model(Group).pk],
    }
    timestamp = datetime.datetime.fromisoformat(row.pop("timestamp"))
    assert timestamp.tzinfo is not None
    assert row == {
        "event": "ticket.assigned",
        "data": {
            "ticket": 7,
            "due": "2026-12-07T12:00:00Z",
            "price": "1.50",
            "ref": "00000000-0000-0000-0000-000000000001",
        },
    }


def test_it_is_read_back_as_the_broadcasters_read_it() -> None:
    publish("export.ready", [1, "two"], everyone=True)
    payload = json.loads(OutboxEvent.objects.get().payload)
    audience = json.dumps(payload.pop("audience"))
    event = decode_entry(json.dumps(payload), audience)
    assert isinstance(event, AppEvent)
    assert (event.event, event.data, event.audience.everyone) == ("export.ready", [1, "two"], True)


@pytest.mark.parametrize("key", [uuid.UUID(int=1), 1.0, True, "1.5"])
def test_a_key_of_another_type_is_refused(key: object) -> None:
    # int() would take each of them; UUID keys are tested in the relabelled
    # project, whose user model has them.
    with pytest.raises(EventError, match="not a primary key"):
        publish("x", None, users=[key])


def test_it_is_written_in_the_callers_transaction() -> None:
    with pytest.raises(RuntimeError), transaction.atomic():
        publish("never", None, everyone=True)
        assert len(outbox()) == 1
        raise RuntimeError
    assert outbox() == []


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"name": ""}, "an event's name"),
        ({"name": "has space"}, "an event's name"),
        ({"name": "x" * 101}, "an event's name"),
        ({"name": 7}, "an event's name"),
        ({"data": object()}, "isn't JSON"),
        ({"data": float("nan")}, "isn't JSON"),
        ({"data": "x" * MAX_EVENT_BYTES}, "more than 65536"),
        ({"users": list(range(1, 10_002))}, "names 10001 users, groups, permissions and models"),
        ({"everyone": False}, "has no audience"),
        ({"users": []}, "has no audience"),
        ({"users": "alice"}, "users is a list"),
        ({"users": [None]}, "without a primary key"),
        ({"users": ["not a number"]}, "not a primary key"),
        ({"users": [Group(pk=1)]}, "not a auth.User"),
        ({"users": [User()]}, "without a primary key"),
        ({"groups": ["Team"]}, "not a group"),
        ({"groups": [True]}, "not a group"),
        ({"permissions": ["view_user"]}, "app_label.codename"),
        ({"permissions": ["auth.fly"]}, "no such permission: auth.fly"),
        ({"permissions": "auth.view_user"}, "permissions is a list"),
        ({"models": ["auth.Group"]}, "not a model"),
    ],
)
def test_bad_input_raises_at_the_call(kwargs: dict[str, Any], error: str) -> None:
    arguments: dict[str, Any] = {"name": "ok", "data": None, "everyone": True} | kwargs
    if "everyone" not in kwargs and set(kwargs) & {"users", "groups", "permissions", "models"}:
        arguments["everyone"] = False
    with pytest.raises(EventError, match=error):
        publish(arguments.pop("name"), arguments.pop("data"), **arguments)
    assert outbox() == []


def test_an_audience_of_the_most_users_is_published() -> None:
    publish("x", None, users=list(range(1, 10_001)))
    assert len(outbox()[0]["audience"]["users"]) == 10_000


def test_the_size_limit_is_of_the_message_clients_receive() -> None:
    overhead = len(b'{"event": "x", "data": "", "timestamp": "2026-12-07T12:00:00.000000+00:00"}')
    publish("x", "a" * (MAX_EVENT_BYTES - overhead), everyone=True)
    assert len(outbox()) == 1


def test_a_permission_is_checked_against_the_database() -> None:
    Permission.objects.create(
        codename="ship_order",
        name="Can ship",
        content_type=ContentType.objects.get_for_model(Group),
    )
    publish("order.shipped", None, permissions=["auth.ship_order", "auth.view_group"])
    assert outbox()[0]["audience"] == {"permissions": ["auth.ship_order", "auth.view_group"]}


class OwnerBackend:
    """Per-object permissions, as django-guardian or django-rules give: a user
    may change the groups whose name has their username."""

    def authenticate(self, request: object, **credentials: object) -> None:
        return None

    def has_perm(self, user: User, permission: str, obj: object = None) -> bool:
        return (
            permission == "auth.change_group"
            and isinstance(obj, Group)
            and user.get_username() in obj.name.split()
        )


def readme_block(heading: str, index: int) -> str:
    text = (Path(__file__).resolve().parents[3] / "README.md").read_text()
    start = text.index(heading)
    section = text[start : text.index("\n## ", start + len(heading))]
    blocks: list[str] = re.findall(r"```python\n(.*?)```", section, re.DOTALL)
    return blocks[index]


def test_the_readmes_per_object_pattern(settings: Any) -> None:
    settings.AUTHENTICATION_BACKENDS = [
        "django.contrib.auth.backends.ModelBackend",
        f"{__name__}.OwnerBackend",
    ]
    alice, bob = User.objects.create_user("alice"), User.objects.create_user("bob")
    User.objects.create_user("alison", is_active=False)
    namespace: dict[str, Any] = {}
    exec(readme_block("## Send your own events", 1), namespace)  # noqa: S102
    publish_to_viewers = namespace["publish_to_viewers"]

    publish_to_viewers("group.noted", {"n": 1}, Group(name="alice alison"), "auth.change_group")
    publish_to_viewers("group.noted", {"n": 2}, Group(name="nobody"), "auth.change_group")
    publish_to_viewers("group.noted", {"n": 3}, Group(name="bob"), "auth.change_group")
    assert [(row["data"], row["audience"]) for row in outbox()] == [
        ({"n": 1}, {"users": [alice.pk]}),  # not the inactive alison
        ({"n": 3}, {"users": [bob.pk]}),
    ]
