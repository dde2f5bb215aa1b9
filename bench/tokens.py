"""The site's share of a reconnect storm: ``GET /api/token/`` for many logged-in users.

When a broadcaster replica goes, each of its clients asks the site for a
fresh token before it connects again (the page's script does), so a storm
of 10,000 reconnections is first 10,000 token requests to gunicorn. This
part of the bench starts the site as its image does, on the server's CPU,
sends one request per session (``BENCH_TOKEN_CONCURRENCY`` in flight, each
connection kept alive as the edge keeps it), and records what a web replica
spends on a token: its CPU, its memory with its workers, and the latency.
Every token answered is then checked to be its session's user's.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import datetime
import json
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from . import stack
from .report import Record, percentile

if TYPE_CHECKING:
    from .config import Config
    from .population import Population

PATH = "/api/token/"
#: Largest response head or body read: a token answer is about 300 bytes.
LIMIT = 64 * 1024


@dataclasses.dataclass(frozen=True)
class Answer:
    #: The HTTP status; 0 when there was no answer, ``failure`` saying why.
    status: int
    seconds: float = 0.0
    token: str | None = None
    failure: str | None = None


def request(cookie_name: str, session_key: str) -> bytes:
    return (
        f"GET {PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: application/json\r\n"
        f"Cookie: {cookie_name}={session_key}\r\n\r\n"
    ).encode()


async def fetch(
    port: int,
    requests: Sequence[bytes],
    *,
    concurrency: int,
    within: float,
) -> list[Answer]:
    """Send each request once over at most ``concurrency`` kept-alive connections.

    A request whose connection fails is not retried: it counts as failed,
    by reason. Those unanswered after ``within`` seconds failed by "deadline".
    """
    pending = collections.deque(range(len(requests)))
    answers: list[Answer | None] = [None] * len(requests)

    async def connection() -> None:
        reader: asyncio.StreamReader | None = None
        writer: asyncio.StreamWriter | None = None
        while pending:
            index = pending.popleft()
            try:
                if writer is None:
                    reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=LIMIT)
                assert reader is not None
                started = time.monotonic()
                writer.write(requests[index])
                answer, keep = await _response(reader)
                answers[index] = dataclasses.replace(answer, seconds=time.monotonic() - started)
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
                answers[index] = Answer(0, failure=type(exc).__name__)
                keep = False
            if not keep and writer is not None:
                writer.close()
                reader = writer = None
        if writer is not None:
            writer.close()

    tasks = [asyncio.create_task(connection()) for _ in range(min(concurrency, len(requests)))]
    _, late = await asyncio.wait(tasks, timeout=within)
    for task in late:
        task.cancel()
    await asyncio.gather(*late, return_exceptions=True)
    return [answer or Answer(0, failure="deadline") for answer in answers]


async def _response(reader: asyncio.StreamReader) -> tuple[Answer, bool]:
    """Read one response; the answer, and whether the connection stays open."""
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
    status_line, *lines = head.split("\r\n")
    status = int(status_line.split()[1])
    headers = dict(
        (name.strip().lower(), value.strip())
        for name, _, value in (line.partition(":") for line in lines if line)
    )
    length = int(headers.get("content-length", "0"))
    if length > LIMIT:
        raise asyncio.LimitOverrunError("response body too large", length)
    body = await reader.readexactly(length)
    token = json.loads(body).get("token") if status == 200 else None
    return Answer(status, token=token), headers.get("connection", "").lower() != "close"


def _total(read: Callable[[int], float], pids: Sequence[int]) -> float:
    """``read`` summed over the processes still there."""
    total = 0.0
    for pid in pids:
        with contextlib.suppress(OSError):
            total += read(pid)
    return total


def measure(
    config: Config, env: dict[str, str], cpus: stack.Cpus, people: Population, *, tree: Path
) -> Record:
    """Start the site, request ``config.tokens`` tokens, check them; the record."""
    from django.conf import settings

    from live_notifications.tokens import user_for

    from . import population

    users = people.users
    keys = population.sessions(users, config.tokens)
    requests = [request(settings.SESSION_COOKIE_NAME, key) for key in keys]
    web = stack.start_web(env, cpus, workers=config.web_workers, tree=tree)
    try:
        processes = [web.pid, *stack.children(web.pid)]
        time.sleep(config.idle_seconds)
        rss_idle = _total(stack.memory_kib, processes)
        cpu_before = _total(stack.cpu_seconds, processes)
        started = time.monotonic()
        answers = asyncio.run(
            fetch(
                web.port,
                requests,
                concurrency=config.token_concurrency,
                within=config.phase_timeout,
            )
        )
        seconds = time.monotonic() - started
        cpu = _total(stack.cpu_seconds, processes) - cpu_before
        time.sleep(config.idle_seconds)
        workers_after = stack.children(web.pid)
        rss_after = _total(stack.memory_kib, processes)
        rss_peak = _total(lambda pid: stack.memory_kib(pid, "VmHWM"), processes)
    except Exception:
        print(f"--- web log (last lines)\n{web.output()[-4000:]}")
        raise
    finally:
        web.remove()
    # After the measured span: a token is right if it names its session's user.
    wrong = sum(
        1
        for index, answer in enumerate(answers)
        if answer.status == 200
        and getattr(user_for(answer.token or ""), "pk", None) != users[index % len(users)].pk
    )
    statuses = Counter(str(answer.status) for answer in answers if answer.status)
    latencies = sorted(answer.seconds for answer in answers if answer.status)
    ok = statuses.get("200", 0)
    return {
        "kind": "tokens",
        "time": f"{datetime.datetime.now(datetime.UTC):%Y-%m-%dT%H:%M:%SZ}",
        "server": "web",
        "workers": config.web_workers,
        "requests": len(requests),
        "concurrency": config.token_concurrency,
        "statuses": dict(statuses),
        "failures": dict(Counter(a.failure for a in answers if a.failure)),
        "wrong": wrong,
        # A worker that died (and was replaced) took its CPU and memory figures with it.
        "workers_replaced": len(set(processes[1:]) - set(workers_after)),
        "seconds": seconds,
        "per_second": ok / seconds if ok and seconds > 0 else None,
        "cpu_ms_per_token": cpu * 1000 / ok if ok else None,
        "server_busy": cpu / seconds if seconds > 0 else None,
        "rss_idle_kib": rss_idle,
        "rss_after_kib": rss_after,
        "rss_peak_kib": rss_peak,
        "latency": {
            "p50": percentile(latencies, 50),
            "p95": percentile(latencies, 95),
            "p99": percentile(latencies, 99),
            "max": latencies[-1] if latencies else None,
        },
    }
