from __future__ import annotations

import json

import pytest

from live_notifications.shared.events import Event, InvalidEvent

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
