"""The token requests' client (bench.tokens.fetch) against a small loopback server.

Each request is answered once, counted once; one whose connection breaks
fails by its reason and is not sent again; one never answered fails by the
deadline.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable

from bench.tokens import Answer, fetch, request

Handler = Callable[[str], Awaitable[bytes | None]]


def response(token: str, *, close: bool = False) -> bytes:
    body = json.dumps({"token": token}).encode()
    connection = "Connection: close\r\n" if close else ""
    return (
        f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n{connection}"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


async def serve(
    handler: Handler, requests: list[bytes], **options: float
) -> tuple[list[Answer], list[str]]:
    """Run :func:`fetch` against a server answering with ``handler(cookie)``:
    bytes to send, or ``None`` to close the connection. The answers and the
    session keys the server was sent, in order."""
    received: list[str] = []

    async def connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = (await reader.readuntil(b"\r\n\r\n")).decode()
                cookie = head.partition("Cookie: sessionid=")[2].partition("\r\n")[0]
                received.append(cookie)
                answer = await handler(cookie)
                if answer is None:
                    break
                writer.write(answer)
                if b"Connection: close" in answer:
                    break
        except asyncio.IncompleteReadError:
            pass
        writer.close()

    server = await asyncio.start_server(connection, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        answers = await fetch(port, requests, concurrency=3, within=options.get("within", 10))
    return answers, received


def keys(count: int) -> list[str]:
    return [f"key{index}" for index in range(count)]


def test_each_request_is_answered_once_over_kept_alive_or_closed_connections() -> None:
    async def handler(cookie: str) -> bytes:
        # Every third answer closes its connection: the client opens another.
        return response(f"token-{cookie}", close=int(cookie[3:]) % 3 == 0)

    sessions = keys(30)
    answers, received = asyncio.run(serve(handler, [request("sessionid", k) for k in sessions]))
    assert sorted(received) == sorted(sessions)
    assert [(a.status, a.token, a.failure) for a in answers] == [
        (200, f"token-{key}", None) for key in sessions
    ]
    assert all(a.seconds > 0 for a in answers)


def test_a_broken_connection_fails_its_request_once_and_the_rest_go_on() -> None:
    async def handler(cookie: str) -> bytes | None:
        return None if cookie == "key4" else response(f"token-{cookie}")

    sessions = keys(12)
    answers, received = asyncio.run(serve(handler, [request("sessionid", k) for k in sessions]))
    assert sorted(received) == sorted(sessions)  # key4 was sent once, not retried
    assert answers[4].status == 0 and answers[4].failure == "IncompleteReadError"
    assert [a.token for i, a in enumerate(answers) if i != 4] == [
        f"token-{key}" for i, key in enumerate(sessions) if i != 4
    ]


def test_requests_unanswered_at_the_deadline_fail_by_it() -> None:
    async def handler(cookie: str) -> bytes:
        if cookie == "key0":
            await asyncio.sleep(60)  # never, within the test's deadline
        return response(f"token-{cookie}")

    answers, _ = asyncio.run(serve(handler, [request("sessionid", k) for k in keys(5)], within=0.5))
    assert answers[0].failure == "deadline"
    assert [a.status for a in answers[1:]] == [200] * 4
