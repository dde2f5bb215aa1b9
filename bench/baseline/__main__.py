"""``python -m bench.baseline``: the how-to's server, for the bench to compare with.

Written from the design of the websockets how-to "Integrate with Django"
(section "Broadcast events") and kept that naive on purpose: it stands for
the how-to, so that every figure of ``make bench`` is a ratio to it measured
in the same run. What it does, as the how-to does:

* websockets' defaults: permessage-deflate on (browsers ask for it), a ping
  every 20 s, no limit on connections;
* the first message is the token; ``get_user()`` and the content types the
  user may view or change (all content types, then ``user.has_perm()`` on
  each) in :func:`asyncio.to_thread`, in the default thread pool;
* a dict of connections, scanned for every event; ``broadcast()`` to those
  allowed;
* events read from the Redis Pub/Sub channel ``events`` with
  ``redis.asyncio``, on which the relay publishes every event too.

Three differences, none of them in the fan-out path: the token is checked
by ``live_notifications.tokens.user_for`` (``get_user()`` with this project's
WebSocket scope, so that the bench's tokens work for both servers); the
server greets each client once it is registered ("Hello <username>!", as the
how-to's authentication step does), so that the load generator knows it is
authenticated; and the address, Redis and compression come from the
environment: ``BASELINE_HOST`` (localhost), ``BASELINE_PORT`` (8888),
``REDIS_URL`` (the project's settings), ``BASELINE_COMPRESSION`` (``deflate``,
or ``none`` to measure the how-to without it).

It runs with the Django project's settings (``DJANGO_SETTINGS_MODULE``) and
database, like the broadcaster, and handles no signal: the bench kills it.
"""

from __future__ import annotations

import asyncio
import json
import os
from typing import Literal, cast

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "web.settings.production")
django.setup()

from django.conf import settings  # noqa: E402 - after django.setup()
from django.contrib.auth.models import User  # noqa: E402
from django.contrib.contenttypes.models import ContentType  # noqa: E402
from redis import asyncio as aioredis  # noqa: E402
from websockets.asyncio.server import ServerConnection, broadcast, serve  # noqa: E402
from websockets.frames import CloseCode  # noqa: E402

from live_notifications.shared.events import CHANNEL  # noqa: E402
from live_notifications.tokens import user_for  # noqa: E402

#: Each authenticated connection, with the content types it may see.
CONNECTIONS: dict[ServerConnection, dict[str, set[int]]] = {}


def get_content_types(user: User) -> set[int]:
    """IDs of the content types ``user`` may view or change.

    Three queries: Django caches the user's permissions on the first
    ``has_perm()``.
    """
    return {
        content_type.id
        for content_type in ContentType.objects.all()
        if user.has_perm(f"{content_type.app_label}.view_{content_type.model}")
        or user.has_perm(f"{content_type.app_label}.change_{content_type.model}")
    }


async def handler(websocket: ServerConnection) -> None:
    """Authenticate the client with its first message, then register it until it leaves."""
    token = await websocket.recv()
    user = cast("User | None", await asyncio.to_thread(user_for, str(token)))
    if user is None:
        await websocket.close(CloseCode.INTERNAL_ERROR, "authentication failed")
        return
    content_type_ids = await asyncio.to_thread(get_content_types, user)
    CONNECTIONS[websocket] = {"content_type_ids": content_type_ids}
    try:
        await websocket.send(f"Hello {user.get_username()}!")
        await websocket.wait_closed()
    finally:
        del CONNECTIONS[websocket]


async def process_events() -> None:
    """Read events from Redis and broadcast each to the connections allowed to see it."""
    redis = aioredis.from_url(settings.REDIS_URL)
    pubsub = redis.pubsub()
    await pubsub.subscribe(CHANNEL)
    async for message in pubsub.listen():
        if message["type"] != "message":
            continue
        payload = message["data"].decode()
        event = json.loads(payload)
        recipients = (
            websocket
            for websocket, connection in CONNECTIONS.items()
            if event["content_type_id"] in connection["content_type_ids"]
        )
        broadcast(recipients, payload)


async def main() -> None:
    host = os.environ.get("BASELINE_HOST", "localhost")
    port = int(os.environ.get("BASELINE_PORT", "8888"))
    choice = os.environ.get("BASELINE_COMPRESSION", "deflate")
    if choice not in ("deflate", "none"):
        raise SystemExit(f"BASELINE_COMPRESSION must be deflate or none, got {choice!r}")
    compression: Literal["deflate"] | None = "deflate" if choice == "deflate" else None
    async with serve(handler, host, port, compression=compression):
        await process_events()  # runs forever


if __name__ == "__main__":
    asyncio.run(main())
