"""A token check that fails with a bug, not the database: 1011, and counted apart.

The only way to reach this path is a bug, so one is put in: the broadcaster
runs in this process, on the real Redis and relay, and the thread that reads the
database raises what no database error is.
"""

from __future__ import annotations

import asyncio

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosedError

from live_notifications.broadcaster.config import Config
from live_notifications.broadcaster.server import Broadcaster
from live_notifications.tokens import token_for
from tests.servers import RedisServer, RelayProcess, free_port

from .helpers import RECEIVE_TIMEOUT, user

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_token_check_that_fails_with_a_bug_closes_1011(
    redis_server: RedisServer, relay: RelayProcess
) -> None:
    token = token_for(user("root", is_superuser=True))
    port = free_port()
    config = Config.from_env(
        {
            "REDIS_URL": redis_server.url,
            "BROADCASTER_HOST": "127.0.0.1",
            "BROADCASTER_PORT": str(port),
            "BROADCASTER_METRICS_PORT": str(free_port()),
        }
    )

    async def broken(func: object, *args: object) -> object:
        raise RuntimeError("a bug where the tokens are read")

    async def main() -> tuple[int, str, int]:
        broadcaster = Broadcaster(config)
        broadcaster.identities.to_thread = broken
        stop = asyncio.get_running_loop().create_future()
        serving = asyncio.create_task(broadcaster.serve(stop))
        try:
            async with asyncio.timeout(RECEIVE_TIMEOUT):
                while not broadcaster.ready:  # noqa: ASYNC110 (a property: nothing to wait on)
                    await asyncio.sleep(0.05)
                async with connect(f"ws://127.0.0.1:{port}/") as client:
                    await client.send(token)
                    with pytest.raises(ConnectionClosedError) as closed:
                        await client.recv()
            assert closed.value.rcvd is not None
            return (
                closed.value.rcvd.code,
                closed.value.rcvd.reason,
                broadcaster.metrics.auth_failures["error"],
            )
        finally:
            stop.set_result(None)
            await serving

    assert asyncio.run(main()) == (1011, "authentication failed", 1)
