"""One task pings every connection; a peer that doesn't answer is closed as websockets would.

The clients here answer pings only if told to (:class:`.bare.BareClient`).
The assertions are about order, not time: a client that doesn't answer is
closed after one unanswered ping, before a second one; a client that
answers keeps being pinged and is never closed.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from live_notifications.tokens import token_for
from tests.servers import BroadcasterProcess

from .bare import BareClient, serve_until
from .helpers import user

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_client_that_does_not_answer_pings_is_closed_with_1011(
    start_broadcaster: Callable[..., BroadcasterProcess],
) -> None:
    # The close timeout bounds how long the server waits for a dead peer's
    # answer to its close frame.
    broadcaster = start_broadcaster(BROADCASTER_PING_INTERVAL="1", BROADCASTER_CLOSE_TIMEOUT="1")
    root = user("root", is_superuser=True)
    with (
        BareClient(broadcaster.port) as answering,
        BareClient(broadcaster.port, answers=False) as silent,
    ):
        answering.send_text(token_for(root))
        silent.send_text(token_for(root))
        serve_until(
            [answering, silent],
            lambda: broadcaster.metrics()["broadcaster_connections"] == 2,
            "both clients",
        )

        serve_until([answering, silent], lambda: silent.close is not None, "the silent one's close")
        # The close code and reason of websockets' own keepalive.
        assert silent.close == (1011, "keepalive ping timeout")
        assert silent.opcodes == ["PING", "CLOSE"]  # one ping unanswered, then closed

        pinged = answering.pings
        serve_until(
            [answering],
            lambda: (
                answering.pings >= pinged + 2
                and broadcaster.metrics()["broadcaster_connections"] == 1
            ),
            "two more pings, and the silent one gone",
        )
        assert answering.close is None
        assert answering.opcodes == ["PING"] * answering.pings
    assert "event=ping_timeout" in broadcaster.output()


def test_a_client_that_answers_late_but_within_the_interval_stays(
    start_broadcaster: Callable[..., BroadcasterProcess],
) -> None:
    broadcaster = start_broadcaster(BROADCASTER_PING_INTERVAL="1")
    root = user("root", is_superuser=True)
    with BareClient(broadcaster.port, answers=False) as client:
        client.send_text(token_for(root))
        for answered in range(3):
            serve_until([client], lambda: client.pings > answered, "a ping")  # noqa: B023
            time.sleep(0.3)  # a slow network: the pong leaves 300 ms after the ping came
            client.answer()
        serve_until([client], lambda: client.pings > 3, "a fourth ping")
        assert client.opcodes == ["PING"] * 4


def test_the_first_ping_comes_an_interval_after_connecting(
    start_broadcaster: Callable[..., BroadcasterProcess],
) -> None:
    """As with websockets: no ping right after the handshake, whatever the slot.

    An older client pinged once an interval is the clock: clients that
    connect right after one of its pings, dealt into every slot, get none
    before its next one.
    """
    broadcaster = start_broadcaster(BROADCASTER_PING_INTERVAL="1")
    root = user("root", is_superuser=True)
    with BareClient(broadcaster.port) as clock:
        clock.send_text(token_for(root))
        serve_until([clock], lambda: clock.pings >= 1, "the clock's first ping")
        ticked = clock.pings
        newcomers = [BareClient(broadcaster.port) for _ in range(20)]  # 20 slots a second
        try:
            for client in newcomers:
                client.send_text(token_for(root))
            serve_until(
                [clock, *newcomers], lambda: any(c.pings for c in newcomers), "a newcomer's ping"
            )
            assert clock.pings > ticked
        finally:
            for client in newcomers:
                client.sock.close()


def test_pings_reach_every_connection(
    start_broadcaster: Callable[..., BroadcasterProcess],
) -> None:
    """Connections are dealt into the interval's slots: all are pinged, each once a round."""
    broadcaster = start_broadcaster(BROADCASTER_PING_INTERVAL="1")
    root = user("root", is_superuser=True)
    clients = [BareClient(broadcaster.port) for _ in range(30)]
    try:
        for client in clients:
            client.send_text(token_for(root))
        serve_until(
            clients, lambda: broadcaster.metrics()["broadcaster_connections"] == 30, "30 clients"
        )
        serve_until(clients, lambda: all(c.pings >= 3 for c in clients), "three pings each")
        # Once a round: when the last one has its third ping, none has had a fifth.
        assert max(c.pings for c in clients) <= 4
        assert all(c.close is None for c in clients)
    finally:
        for client in clients:
            client.sock.close()
