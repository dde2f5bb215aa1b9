"""Access changed in the admin while connected: revoked users are closed at once,
the others see exactly what their new permissions allow, from the next event on.

Each reduction is followed by a change the old permissions would show and a
sentinel the user may still see: the sentinel arriving proves the hidden
change never comes, without a sleep.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable

import pytest
from websockets.exceptions import ConnectionClosed

from .conftest import ClientSet, PersonFactory
from .forms import Form
from .helpers import CHANGE_USER, RECEIVE_TIMEOUT, VIEW_GROUP, AdminSession, Person, receive_until
from .stack import Stack


def change_password(admin: AdminSession, person: Person) -> None:
    path = f"/admin/auth/user/{person.pk}/password/"
    form = admin.form(path, has_field="password1")
    password = secrets.token_urlsafe(24)
    form.set("password1", password)
    form.set("password2", password)
    admin.submit(path, form)


@pytest.mark.parametrize(
    "revoke",
    [
        pytest.param(lambda admin, person: admin.deactivate(person.pk), id="deactivated"),
        pytest.param(change_password, id="password changed"),
        pytest.param(lambda admin, person: admin.delete("auth/user", person.pk), id="deleted"),
    ],
)
def test_revoked_users_are_closed_on_both_addresses(
    stack: Stack,
    admin: AdminSession,
    make_person: PersonFactory,
    clients: ClientSet,
    revoke: Callable[[AdminSession, Person], None],
) -> None:
    viewer = make_person("viewer", VIEW_GROUP)
    websockets = [clients.open(viewer, url) for url in stack.websocket_urls]
    stack.wait_for_connections(len(websockets))
    revoke(admin, viewer)
    admin.add_group(f"after-{secrets.token_hex(4)}")
    for websocket in websockets:
        with pytest.raises(ConnectionClosed) as info:
            while True:  # nothing but the close may come
                message = websocket.recv(timeout=RECEIVE_TIMEOUT)
                raise AssertionError(f"received after the revocation: {message!r}")
        assert info.value.rcvd is not None
        assert (info.value.rcvd.code, info.value.rcvd.reason) == (1008, "access revoked")


def select(name: str, *labels: str) -> Callable[[Form], None]:
    """Set a select of the form to exactly the options with these labels."""
    return lambda form: form.set(name, *form.option_values(name, *labels))


def test_permissions_changed_in_the_admin_apply_before_the_next_event(
    stack: Stack, admin: AdminSession, make_person: PersonFactory, clients: ClientSet
) -> None:
    """A user who may view groups and change users, directly, then through a
    group only, then not at all; then through the group again: their open
    connections follow each change through the admin's forms."""
    person = make_person("changing", VIEW_GROUP, CHANGE_USER)
    websockets = [clients.open(person, url) for url in stack.websocket_urls]
    stack.wait_for_connections(len(websockets))
    group = admin.add_group(f"readers-{secrets.token_hex(4)}")
    admin.change("auth/group", group, {}, update=select("permissions", CHANGE_USER))

    def user_change_is_seen(seen: bool) -> None:
        hidden_or_not = admin.add_user(f"probe-{secrets.token_hex(4)}", secrets.token_urlsafe(24))
        sentinel = f"sentinel-{secrets.token_hex(4)}"
        admin.add_group(sentinel)
        for websocket in websockets:
            events = receive_until(websocket, lambda e: e.get("object") == sentinel)
            users = [
                e for e in events if e.get("model") == "user" and e["object_id"] == hidden_or_not
            ]
            assert bool(users) is seen, events

    user_change_is_seen(True)  # own permission
    admin.change("auth/user", person.pk, {}, update=lambda form: form.set("groups", group))
    admin.grant(person.pk, VIEW_GROUP)  # own permission removed, still in the group
    user_change_is_seen(True)
    admin.change("auth/group", group, {}, update=lambda form: form.set("permissions"))
    user_change_is_seen(False)  # the group lost it
    admin.change("auth/group", group, {}, update=select("permissions", CHANGE_USER))
    user_change_is_seen(True)  # and got it back
    admin.change("auth/user", person.pk, {}, update=lambda form: form.set("groups"))
    user_change_is_seen(False)  # left the group
