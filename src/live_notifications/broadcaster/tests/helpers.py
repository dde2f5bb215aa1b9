"""What the broadcaster's tests share: users, events, clients, fixtures' helpers."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from django.contrib.auth.models import Permission, User
from django.contrib.contenttypes.models import ContentType
from django.db import models
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from live_notifications.shared.eventlog import MESSAGE_FIELD, STREAM, Position
from live_notifications.shared.events import Event
from tests.servers import BroadcasterProcess, wait_until

#: Seconds a client waits for a message before the test fails. Generous: a
#: slow machine must not fail a correct program.
RECEIVE_TIMEOUT = 30


def append_raw(client: redis.Redis, message: bytes | str) -> None:
    """Put ``message`` in the log's stream as if it were an entry, after the head."""
    head = Position.parse(client.xinfo_stream(STREAM)["last-generated-id"])
    client.xadd(STREAM, {MESSAGE_FIELD: message}, id=str(head.following(time.time_ns() // 10**6)))


def user(username: str, *permissions: str, **fields: object) -> User:
    """Create a user with permissions given as ``"app_label.codename"``."""
    created = User.objects.create_user(username, **fields)  # type: ignore[arg-type]
    for permission in permissions:
        app_label, codename = permission.split(".")
        created.user_permissions.add(
            Permission.objects.get(content_type__app_label=app_label, codename=codename)
        )
    return created


def event_for(model: type[models.Model], name: str = "x") -> Event:
    return Event(
        model=str(model._meta.verbose_name),
        object=name,
        message="Added.",
        timestamp="2026-11-21T14:00:00+00:00",
        user="admin",
        content_type_id=ContentType.objects.get_for_model(model).id,
        object_id="1",
        action="added",
    )


@contextlib.contextmanager
def authenticated(broadcaster: BroadcasterProcess, token: str) -> Iterator[ClientConnection]:
    """Connect and send the token; enter once the broadcaster registered the client."""
    before = broadcaster.metrics()["broadcaster_connections_opened_total"]
    with connect(broadcaster.url, open_timeout=RECEIVE_TIMEOUT) as client:
        client.send(token)
        wait_until(
            lambda: broadcaster.metrics()["broadcaster_connections_opened_total"] > before,
            "the client to be registered",
        )
        yield client


def receive(client: ClientConnection) -> Event:
    """The next event, which must have an id; returned without it, to compare."""
    event = Event.decode(client.recv(timeout=RECEIVE_TIMEOUT))
    assert event.id is not None, f"event without id: {event}"
    return dataclasses.replace(event, id=None)


def closed(client: ClientConnection) -> tuple[int, str]:
    """Wait for the server to close ``client``; return the code and reason it sent."""
    with pytest.raises(ConnectionClosed) as info:
        client.recv(timeout=RECEIVE_TIMEOUT)
    assert info.value.rcvd is not None, "the connection dropped without a close frame"
    return info.value.rcvd.code, info.value.rcvd.reason


@contextlib.contextmanager
def resuming(
    broadcaster: BroadcasterProcess, token: str, last_id: object = None
) -> Iterator[tuple[ClientConnection, dict[str, Any]]]:
    """Connect with the JSON form; enter with the client and its welcome.

    The client buffers what it hasn't read without limit: one that leaves
    with a replay under way must still read through to the server's close.
    """
    with connect(broadcaster.url, open_timeout=RECEIVE_TIMEOUT, max_queue=None) as client:
        client.send(json.dumps({"token": token, "last_id": last_id}))
        welcome = json.loads(client.recv(timeout=RECEIVE_TIMEOUT))
        assert welcome["type"] == "welcome", welcome
        assert set(welcome) == {"type", "id", "recovered"}, welcome
        yield client, welcome


def receive_message(client: ClientConnection) -> dict[str, Any]:
    """The next message of any kind, as JSON."""
    message: dict[str, Any] = json.loads(client.recv(timeout=RECEIVE_TIMEOUT))
    return message


def objects_until(client: ClientConnection, last: str) -> list[str]:
    """Objects of the events received up to ``last``; control messages skipped."""
    received: list[str] = []
    while not received or received[-1] != last:
        message = receive_message(client)
        if "type" not in message:
            received.append(str(message["object"]))
    return received
