from __future__ import annotations

import json

import pytest

from live_notifications.shared.events import (
    AppEvent,
    Audience,
    Event,
    InvalidEvent,
    decode_entry,
    split_audience,
)

EVENT = Event(
    model="group",
    object="Editors",
    message="Added.",
    timestamp="2026-11-21T14:00:00+00:00",
    user="admin",
    content_type_id=3,
    object_id="7",
    action="added",
)


def test_round_trip() -> None:
    assert Event.decode(EVENT.encode()) == EVENT


def test_encoding_has_the_how_to_fields() -> None:
    assert set(json.loads(EVENT.encode())) >= {
        "model",
        "object",
        "message",
        "timestamp",
        "user",
        "content_type_id",
        "object_id",
    }


def test_unknown_fields_are_ignored() -> None:
    data = json.loads(EVENT.encode()) | {"added_later": True}
    assert Event.decode(json.dumps(data)) == EVENT


def test_object_id_may_be_null() -> None:
    data = json.loads(EVENT.encode()) | {"object_id": None}
    assert Event.decode(json.dumps(data)).object_id is None


@pytest.mark.parametrize(
    ("payload", "error"),
    [
        (b"not json", "not JSON"),
        (b"\xff\xfe", "not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (json.dumps({"model": "group"}).encode(), "missing field"),
        (
            json.dumps(json.loads(EVENT.encode()) | {"content_type_id": "3"}).encode(),
            "content_type_id",
        ),
        (
            json.dumps(json.loads(EVENT.encode()) | {"content_type_id": True}).encode(),
            "content_type_id",
        ),
        (json.dumps(json.loads(EVENT.encode()) | {"user": None}).encode(), "user"),
    ],
)
def test_invalid(payload: bytes, error: str) -> None:
    with pytest.raises(InvalidEvent, match=error):
        Event.decode(payload)


APP_EVENT = AppEvent(
    event="ticket.assigned",
    data={"ticket": 7},
    timestamp="2026-12-07T12:00:00+00:00",
    audience=Audience(users=frozenset({2, "3f1c0e0a-0000-4000-8000-000000000000"})),
)


def test_an_app_event_is_its_message_and_its_audience_apart() -> None:
    message, audience = split_audience(json.loads(APP_EVENT.encode()))
    assert message == json.loads(APP_EVENT.message())
    assert set(message) == {"event", "data", "timestamp"}
    assert audience is not None
    assert decode_entry(json.dumps(message), audience) == APP_EVENT


def test_admin_changes_and_access_changes_have_no_audience() -> None:
    assert split_audience(json.loads(EVENT.encode())) == (json.loads(EVENT.encode()), None)


@pytest.mark.parametrize(
    ("message", "audience", "error"),
    [
        ({"event": "x", "data": 1, "timestamp": "t"}, None, "without an audience"),
        ({"event": "x", "data": 1, "timestamp": "t"}, "{}", "empty audience"),
        ({"event": "x", "data": 1, "timestamp": "t"}, '{"users": [true]}', "wrong type"),
        ({"event": "x", "data": 1, "timestamp": "t"}, '{"groups": ["a"]}', "wrong type"),
        ({"event": "x", "data": 1, "timestamp": "t"}, '{"everyone": 1}', "wrong type"),
        ({"event": "x", "data": 1, "timestamp": "t"}, '{"owner": [1]}', "an audience is"),
        ({"event": "x", "data": 1, "timestamp": "t"}, "[1]", "an audience is"),
        ({"event": "x", "data": 1, "timestamp": "t"}, "{", "not JSON"),
        (
            {"event": "x", "data": 1, "timestamp": "t"},
            json.dumps({"users": list(range(10_001))}),
            "more than 10000",
        ),
        ({"event": 7, "data": 1, "timestamp": "t"}, '{"everyone": true}', "a name and data"),
        ({"event": "x", "timestamp": "t"}, '{"everyone": true}', "a name and data"),
        ({"event": "x", "data": 1}, '{"everyone": true}', "timestamp"),
        ({"event": "x", "data": 1, "timestamp": "t", "id": 3}, '{"everyone": true}', "id"),
    ],
)
def test_invalid_app_events(message: dict[str, object], audience: str | None, error: str) -> None:
    with pytest.raises(InvalidEvent, match=error):
        decode_entry(json.dumps(message), audience)
