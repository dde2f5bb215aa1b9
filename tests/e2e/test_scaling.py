"""Replicas share the clients, and `make scale` keeps every client served.

These tests count connections per replica: they expect no other client to be
connected while they run (each test closes its clients before it ends).
"""

from __future__ import annotations

import contextlib
import itertools
import secrets

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection

from .conftest import REPLICAS, ClientSet, PersonFactory
from .helpers import (
    RECEIVE_TIMEOUT,
    VIEW_GROUP,
    AdminSession,
    Stack,
    authenticated,
    receive,
    reconnect,
    wait_until,
)

#: Clients per test: three per replica.
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
    """Clients arriving through both addresses are shared by all three replicas
    (each has some, the metrics add up to the clients), and one admin change
    reaches every one of them."""
    viewer = make_person("viewer", VIEW_GROUP)
    urls = itertools.islice(itertools.cycle(stack.websocket_urls), CLIENTS)
    websockets = [clients.open(viewer, url) for url in urls]

    counts = stack.wait_for_connections(CLIENTS)
    assert len(counts) == REPLICAS, counts
    assert all(count >= 1 for count in counts.values()), f"a replica has no client: {counts}"

    name = f"spread-{secrets.token_hex(4)}"
    admin.add_group(name)
    assert_all_receive(websockets, name, "added")


def test_make_scale_with_connected_clients(
    stack: Stack, admin: AdminSession, make_person: PersonFactory
) -> None:
    """Scaling up keeps the clients connected and served. Scaling down to one
    closes exactly the clients of the removed replicas, with 1001 or 1012;
    they reconnect with a fresh token from /api/token/ and every client
    receives the next change. The stack is back to three replicas afterwards."""
    viewer = make_person("viewer", VIEW_GROUP)
    try:
        with contextlib.ExitStack() as exits:
            urls = list(itertools.islice(itertools.cycle(stack.websocket_urls), CLIENTS))
            websockets = [exits.enter_context(authenticated(viewer, url)) for url in urls]
            stack.wait_for_connections(CLIENTS)

            stack.scale(5)
            group_name = f"scaled-{secrets.token_hex(4)}"
            group_pk = admin.add_group(group_name)
            assert_all_receive(websockets, group_name, "added")

            before = stack.connections()
            assert sum(before.values()) == CLIENTS, before
            stack.scale(1)
            (survivor,) = stack.broadcaster_ids()
            assert survivor in before, f"{survivor} is not one of {before}"
            expected_closed = CLIENTS - before[survivor]
            # Three replicas shared the clients: the survivor had at most a third.
            assert expected_closed * 3 >= CLIENTS * 2, f"survivor {survivor[:12]}: {before}"

            closed = wait_until(
                lambda: [
                    n for n, websocket in enumerate(websockets) if websocket.close_code is not None
                ],
                lambda numbers: len(numbers) >= expected_closed,
                f"{expected_closed} clients to be closed by the removed replicas",
            )
            assert len(closed) == expected_closed, f"closed: {closed}, before: {before}"
            short = {container[:12]: count for container, count in before.items()}
            print(f"clients per replica: {short}; kept {survivor[:12]}; closed: {closed}")
            for number in closed:
                assert_going_away(websockets[number])
                websockets[number] = reconnect(viewer, urls[number], exits)
            stack.wait_for_connections(CLIENTS)

            renamed = f"{group_name}-renamed"
            admin.change("auth/group", group_pk, {"name": renamed})
            assert_all_receive(websockets, renamed, "changed")
    finally:
        # Other tests count on three replicas, all of them reachable.
        stack.restore(REPLICAS)


def assert_going_away(websocket: ClientConnection) -> None:
    """The server closed ``websocket`` as a shutting-down replica should."""
    with pytest.raises(ConnectionClosed) as closed:
        websocket.recv(timeout=RECEIVE_TIMEOUT)
    received = closed.value.rcvd
    assert received is not None, f"closed without a close frame: {closed.value}"
    assert received.code in (1001, 1012), f"closed with {received.code} {received.reason!r}"
