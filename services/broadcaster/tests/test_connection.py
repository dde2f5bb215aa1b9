"""Connections trimmed for idle clients still behave as websockets' own.

:class:`broadcaster.connection.Connection` queues in lists what websockets
queues in deques, and forgets the handshake but X-Forwarded-For. The
clients here write frames as given (:class:`.bare.BareClient`), to reach
the queue of frames received but not read yet.
"""

from __future__ import annotations

import asyncio
import collections

import pytest
from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve

from broadcaster.connection import Connection, SmallQueue
from testing import BroadcasterProcess, wait_until
from web.notifications.tokens import token_for

from .bare import BareClient, serve_until
from .helpers import user

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_token_sent_in_fragments_authenticates(broadcaster: BroadcasterProcess) -> None:
    root = user("root", is_superuser=True)
    with BareClient(broadcaster.port) as client:
        # In one write: the frames are queued together, and read in order.
        client.write(client.fragments(token_for(root), parts=3))
        wait_until(lambda: broadcaster.metrics()["broadcaster_connections"] == 1, "registered")


def test_a_token_left_unfinished_times_out(broadcaster: BroadcasterProcess) -> None:
    """The frames of a message cut short by the timeout are put back, then it closes."""
    root = user("root", is_superuser=True)
    with BareClient(broadcaster.port) as client:
        client.write(client.fragments(token_for(root), final=False))
        serve_until([client], lambda: client.close is not None, "the close")
        assert client.close == (1008, "authentication timed out")
    assert broadcaster.metrics()['broadcaster_auth_failures_total{reason="timeout"}'] == 1


def test_the_address_behind_the_proxy_outlives_the_handshake(
    broadcaster: BroadcasterProcess,
) -> None:
    root = user("root", is_superuser=True)
    forwarded = ("X-Forwarded-For", "203.0.113.7, 10.0.0.2")
    with BareClient(broadcaster.port, headers=[forwarded]) as client:
        client.send_text(token_for(root))
        wait_until(lambda: broadcaster.metrics()["broadcaster_connections"] == 1, "registered")
        client.send_text("hello?")
        serve_until([client], lambda: client.close is not None, "the close")
        assert client.close == (1008, "clients send nothing")
    wait_until(lambda: "event=disconnect" in broadcaster.output(), "the disconnection")
    output = broadcaster.output()
    assert "event=client_sent remote=203.0.113.7\n" in output
    assert "event=disconnect user=root remote=203.0.113.7 " in output


def test_an_idle_connection_keeps_no_deque_and_no_handshake() -> None:
    """What the trimming gives back is actually given back.

    It replaces websockets' internals: a new websockets that renamed them
    would leave the deques (760 bytes each) in place, silently.
    """
    asyncio.run(inspect_an_idle_connection())


async def inspect_an_idle_connection() -> None:
    handled: asyncio.Future[ServerConnection] = asyncio.get_running_loop().create_future()

    async def handler(websocket: ServerConnection) -> None:
        handled.set_result(websocket)
        await websocket.wait_closed()

    async with serve(
        handler, "127.0.0.1", 0, create_connection=Connection, ping_interval=None
    ) as server:
        port = server.sockets[0].getsockname()[1]
        headers = {"X-Forwarded-For": "203.0.113.7", "Cookie": "sessionid=" + "x" * 500}
        async with connect(f"ws://127.0.0.1:{port}/", additional_headers=headers):
            connection = await handled
            assert connection.request is not None and connection.response is None
            assert list(connection.request.headers.raw_items()) == [
                ("X-Forwarded-For", "203.0.113.7")
            ]
            queues = [*vars(connection).values(), *vars(connection.recv_messages.frames).values()]
            assert not any(isinstance(value, collections.deque) for value in queues)
            assert sum(isinstance(value, SmallQueue) for value in queues) == 2
