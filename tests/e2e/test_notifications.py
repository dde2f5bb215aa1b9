"""Admin changes reach exactly the users allowed to see them, on both addresses."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from .conftest import ClientSet, PersonFactory
from .helpers import (
    CHANGE_USER,
    RECEIVE_TIMEOUT,
    VIEW_GROUP,
    AdminSession,
    new_password,
    receive_until,
)
from .stack import Stack

#: What identifies an event in the expected sequences.
Summary = tuple[str, str, str, str, str]  # model, object, action, message, object_id


def summary(event: dict[str, Any]) -> Summary:
    return (
        event["model"],
        event["object"],
        event["action"],
        event["message"],
        event["object_id"],
    )


def is_event(expected: Summary) -> Callable[[dict[str, Any]], bool]:
    return lambda event: summary(event) == expected


def test_admin_changes_reach_exactly_the_allowed_users(
    stack: Stack,
    admin: AdminSession,
    make_person: PersonFactory,
    clients: ClientSet,
    suffix: str,
) -> None:
    """Each user receives, in order, exactly the events of the models they may
    view (alice: groups) or change (bob: users), with every field right; the
    superuser receives them all; through the site's /ws/ and the direct port alike."""
    alice = make_person("alice", VIEW_GROUP)
    bob = make_person("bob", CHANGE_USER)
    grant = alice.token()
    assert (grant["url"], grant["expires_in"]) == (stack.ws_site_url, 30)

    # Everyone connected on both addresses before the first change.
    readers = [
        (person, url, clients.open(person, url))
        for person in (alice, bob, admin)
        for url in stack.websocket_urls
    ]
    stack.wait_for_connections(len(readers))

    tag = f"{suffix}-{secrets.token_hex(2)}"
    group, renamed, user, end = f"group-{tag}", f"renamed-{tag}", f"user-{tag}", f"end-{tag}"
    password = new_password()
    group_pk = admin.add_group(group)
    admin.change("auth/group", group_pk, {"name": renamed})
    admin.delete("auth/group", group_pk)
    user_pk = admin.add_user(user, password)
    admin.change("auth/user", user_pk, {"first_name": "Ulla"})
    admin.delete("auth/user", user_pk)
    # Sentinels: the user's first, so that alice's reading spans every change.
    end_user_pk = admin.add_user(end, password)
    end_group_pk = admin.add_group(end)

    group_events: list[Summary] = [
        ("group", group, "added", "Added.", group_pk),
        ("group", renamed, "changed", "Changed Name.", group_pk),
        ("group", renamed, "deleted", "Deleted.", group_pk),
    ]
    user_events: list[Summary] = [
        ("user", user, "added", "Added.", user_pk),
        ("user", user, "changed", "Changed First name.", user_pk),
        ("user", user, "deleted", "Deleted.", user_pk),
    ]
    end_user: Summary = ("user", end, "added", "Added.", end_user_pk)
    end_group: Summary = ("group", end, "added", "Added.", end_group_pk)
    expected = {
        alice.username: ([*group_events, end_group], end_group),
        bob.username: ([*user_events, end_user], end_user),
        admin.username: ([*group_events, *user_events, end_user, end_group], end_group),
    }

    content_types: dict[str, set[int]] = {}
    for person, url, websocket in readers:
        wanted, sentinel = expected[person.username]
        received = receive_until(websocket, is_event(sentinel))
        assert [summary(event) for event in received] == wanted, f"{person.username} on {url}"
        assert {event["user"] for event in received} == {admin.username}
        for event in received:
            content_types.setdefault(event["model"], set()).add(event["content_type_id"])
    # One content type per model, a different one for each model.
    assert {model: len(ids) for model, ids in content_types.items()} == {"group": 1, "user": 1}
    assert content_types["group"] != content_types["user"]


@pytest.mark.parametrize("address", ["ws_site_url", "ws_direct_url"])
@pytest.mark.parametrize("kind", ["garbage", "tampered"])
def test_bad_token_is_closed_with_1011(
    stack: Stack, make_person: PersonFactory, address: str, kind: str
) -> None:
    """A token that isn't one, or a real one altered, is refused on both
    addresses: the client receives close code 1011 "authentication failed"."""
    if kind == "garbage":
        token = "not-a-token"  # noqa: S105 - deliberately not a token
    else:
        real = make_person("carol", VIEW_GROUP).token()["token"]
        middle = len(real) // 2  # a character that carries 6 bits of the token
        token = real[:middle] + ("A" if real[middle] != "A" else "B") + real[middle + 1 :]
    with connect(getattr(stack, address)) as websocket:
        websocket.send(token)
        with pytest.raises(ConnectionClosed) as closed:
            websocket.recv(timeout=RECEIVE_TIMEOUT)
    received = closed.value.rcvd
    assert received is not None, f"closed without a close frame: {closed.value}"
    assert (received.code, received.reason) == (1011, "authentication failed")
