"""Replicas share the clients, and scaling keeps every client served.

These tests count connections per replica: they expect no other client to be
connected while they run (each test closes its clients before it ends).
"""

from __future__ import annotations

import contextlib
import secrets

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection

from .conftest import ClientSet, PersonFactory
from .helpers import (
    RECEIVE_TIMEOUT,
    VIEW_GROUP,
    AdminSession,
    authenticated,
    receive,
    reconnect,
)
from .stack import Stack, wait_until

#: Clients per test, at least: three per replica of a stack of three.
CLIENTS = 9


def assert_all_receive(websockets: list[ClientConnection], name: str, action: str) -> None:
    """Every client's next event is ``action`` on the group ``name``."""
    for number, websocket in enumerate(websockets):
        event = receive(websocket)
        assert (event["model"], event["object"], event["action"]) == ("group", name, action), (
            f"client {number}"
        )


def test_clients_spread_over_every_replica(
    stack: Stack, admin: AdminSession, make_person: PersonFactory, clients: ClientSet
) -> None:
    """Clients arriving through the balanced addresses (the site's /ws/, and
    the direct port where it is balanced too) are shared by every replica: each
    has some, and the replicas' metrics add up to the clients. Clients on an
    address that reaches one replica (a port-forward) are counted too. One
    admin change reaches every one of them."""
    viewer = make_person("viewer", VIEW_GROUP)
    websockets: list[ClientConnection] = []

    def open_client(url: str) -> None:
        websockets.append(clients.open(viewer, url))

    # spread() returns once the replicas' metrics add up to the clients.
    counts = stack.spread(open_client, minimum=CLIENTS)
    assert len(counts) == stack.replicas, counts
    if stack.ws_direct_url not in stack.balanced_urls:
        for _ in range(stack.replicas):
            open_client(stack.ws_direct_url)
        stack.wait_for_connections(len(websockets))

    name = f"spread-{secrets.token_hex(4)}"
    admin.add_group(name)
    assert_all_receive(websockets, name, "added")


def test_scaling_with_connected_clients(
    stack: Stack, admin: AdminSession, make_person: PersonFactory
) -> None:
    """Scaling up to 5 keeps the clients connected and served. Scaling down
    to one closes exactly the clients of the removed replicas, with 1001 or
    1012; they reconnect with a fresh token from /api/token/ and every client
    receives the next change. The stack has its replicas back afterwards.

    The clients use the balanced addresses: after a scale-down, the others
    may lead to a replica that is gone."""
    viewer = make_person("viewer", VIEW_GROUP)
    try:
        with contextlib.ExitStack() as exits:
            websockets: list[ClientConnection] = []
            urls: list[str] = []

            def open_client(url: str) -> None:
                websockets.append(exits.enter_context(authenticated(viewer, url)))
                urls.append(url)

            stack.spread(open_client, minimum=CLIENTS)
            clients = len(websockets)

            stack.scale(5)
            group_name = f"scaled-{secrets.token_hex(4)}"
            group_pk = admin.add_group(group_name)
            assert_all_receive(websockets, group_name, "added")

            before = stack.connections()
            assert sum(before.values()) == clients, before
            stack.scale(1)
            (survivor,) = stack.broadcaster_ids()
            assert survivor in before, f"{survivor} is not one of {before}"
            expected_closed = clients - before[survivor]
            # Every replica had clients: at least the other ones' are closed.
            assert expected_closed >= stack.replicas - 1, f"survivor {survivor}: {before}"

            closed = wait_until(
                lambda: [
                    n for n, websocket in enumerate(websockets) if websocket.close_code is not None
                ],
                lambda numbers: len(numbers) >= expected_closed,
                f"{expected_closed} clients to be closed by the removed replicas",
            )
            assert len(closed) == expected_closed, f"closed: {closed}, before: {before}"
            short = {replica[:12]: count for replica, count in before.items()}
            print(f"clients per replica: {short}; kept {survivor[:12]}; closed: {closed}")
            for number in closed:
                assert_going_away(websockets[number])
                websockets[number] = reconnect(viewer, urls[number], exits)
            stack.wait_for_connections(clients)

            renamed = f"{group_name}-renamed"
            admin.change("auth/group", group_pk, {"name": renamed})
            assert_all_receive(websockets, renamed, "changed")
    finally:
        # Other tests count on the stack's replicas, all of them reachable.
        stack.restore()


def assert_going_away(websocket: ClientConnection) -> None:
    """The server closed ``websocket`` as a shutting-down replica should."""
    with pytest.raises(ConnectionClosed) as closed:
        websocket.recv(timeout=RECEIVE_TIMEOUT)
    received = closed.value.rcvd
    assert received is not None, f"closed without a close frame: {closed.value}"
    assert received.code in (1001, 1012), f"closed with {received.code} {received.reason!r}"
