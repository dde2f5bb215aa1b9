"""A client for scripts and services: the broadcasters' events as an async iterator.

It speaks the resuming conversation (docs/reference/websocket.md): it opens
with ``{"token": …, "last_id": …}``, keeps the id of the last event, welcome
or position it received, and after a dropped connection reconnects with a
fresh token and that id, so that the broadcaster replays what it missed.
Between attempts it waits a random delay of 2 to 4 s, doubled on each failure
up to 30 to 60 s, as the live page does, so that a fleet of clients doesn't
come back at once.

    async for event in EventStream("wss://example.com/ws/", get_token):
        print(event["model"], event["object"])

``python -m live_notifications.client URL COMMAND…`` prints the events, one
JSON document a line, getting each token from the last line COMMAND prints
(``python manage.py websocket_token alice``), as the how-to's console does.
"""

from __future__ import annotations

import asyncio
import json
import random
import shlex
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

#: Get a fresh token: a function, or a coroutine function (an HTTP request
#: to the site's token endpoint, ``manage.py websocket_token``, …).
TokenSource = Callable[[], str | Awaitable[str]]

#: Seconds before the first retry (then doubled, up to :data:`MAX_DELAY`);
#: each wait is a random delay between it and twice it.
MIN_DELAY = 2.0
MAX_DELAY = 30.0


class AccessRevoked(Exception):
    """The user's access was revoked (1008), and a fresh token was refused too."""


class EventStream:
    """The events a user may see, from ``url``, with resume across reconnections.

    Iterating yields each event as a dict, as the server sent it, in log
    order, each once, none missed while the history window allows it; control
    messages are consumed. When a reconnection couldn't be resumed (the
    client was away longer than the history holds), :attr:`missed` is true
    while the first event after it is handled: events may be missing before
    it, and the caller may reload what it shows.

    Iteration stops with :exc:`AccessRevoked` when the user's access was
    revoked and a fresh token doesn't bring it back; it never stops on its
    own otherwise. There is one connection at a time; don't iterate twice
    concurrently.
    """

    def __init__(
        self,
        url: str,
        token: TokenSource,
        *,
        last_id: str | None = None,
        min_delay: float = MIN_DELAY,
        max_delay: float = MAX_DELAY,
    ) -> None:
        self.url = url
        self.token = token
        #: The id to resume from: the last event, welcome or position received.
        self.last_id = last_id
        #: Whether events may be missing before the one just yielded.
        self.missed = False
        self._gap = False
        #: Whether the current connection's token was accepted (welcomed).
        self._welcomed = False
        self.min_delay = min_delay
        self.max_delay = max_delay

    def __aiter__(self) -> AsyncIterator[dict[str, Any]]:
        return self._events()

    async def _events(self) -> AsyncIterator[dict[str, Any]]:
        delay = self.min_delay
        #: Whether the last connection was closed for revoked access.
        revoked = False
        while True:
            try:
                async for message in self._connection():
                    delay = self.min_delay
                    yield message
            except ConnectionClosed as exc:
                if self._welcomed:  # its token was accepted: earlier refusals are over
                    delay, revoked = self.min_delay, False
                if exc.rcvd is not None and exc.rcvd.reason == "access revoked":
                    if revoked:  # a fresh token was revoked as well
                        raise AccessRevoked(str(exc)) from None
                    revoked = True
                    continue  # at once: maybe only the password changed
                if revoked and exc.rcvd is not None and exc.rcvd.code == 1011:
                    # The fresh token was refused: deactivated or deleted.
                    raise AccessRevoked(str(exc)) from None
            except (OSError, InvalidHandshake, TimeoutError):
                pass  # unreachable, refused (503 full, draining): try later
            await asyncio.sleep(random.uniform(delay, 2 * delay))  # noqa: S311 - jitter
            delay = min(2 * delay, self.max_delay)

    async def _connection(self) -> AsyncIterator[dict[str, Any]]:
        """One connection's messages: welcome, replay, live events."""
        self._welcomed = False
        token = self.token()
        if not isinstance(token, str):
            token = await token
        async with connect(self.url, max_size=2**20) as websocket:
            await websocket.send(json.dumps({"token": token, "last_id": self.last_id}))
            async for raw in websocket:
                message = json.loads(raw)
                if not isinstance(message, dict):
                    continue
                kind = message.get("type")
                if kind == "welcome":
                    self._welcomed = True
                    self._gap = self.last_id is not None and not message.get("recovered")
                elif kind is None:  # an event
                    self.missed, self._gap = self._gap, False
                    if isinstance(message.get("id"), str):
                        self.last_id = message["id"]
                    yield message
                    continue
                if isinstance(message.get("id"), str):  # a welcome or a position
                    self.last_id = message["id"]


async def _print_events(url: str, command: list[str]) -> None:
    async def token() -> str:
        result = await asyncio.to_thread(
            subprocess.run, command, capture_output=True, text=True, check=True
        )
        return result.stdout.strip().splitlines()[-1]

    async for event in EventStream(url, token):
        print(json.dumps(event, ensure_ascii=False), flush=True)


def main(argv: list[str]) -> None:
    if len(argv) < 3:
        sys.exit(
            f"usage: python -m {__spec__.name} URL COMMAND…"
            " (COMMAND prints a token: python manage.py websocket_token <user>)"
        )
    try:
        asyncio.run(_print_events(argv[1], argv[2:]))
    except KeyboardInterrupt:
        pass
    except AccessRevoked:
        sys.exit("access revoked")
    except subprocess.CalledProcessError as exc:
        sys.exit(f"no token: {shlex.join(exc.cmd)} exited with {exc.returncode}:\n{exc.stderr}")


if __name__ == "__main__":
    main(sys.argv)
