"""The Python client (:mod:`live_notifications.client`) against real broadcasters.

Events published in the database reach the iterator through a real relay and
broadcaster; a broadcaster restarted on the same port is resumed from, with
what was published meanwhile and nothing twice; a resume the server can't
honour is flagged; revoked access ends the iteration; the command line prints
events as JSON lines.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import queue
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.contrib.auth.models import Group, Permission

from live_notifications import events
from live_notifications.broadcaster.tests.helpers import event_for, user
from live_notifications.client import AccessRevoked, EventStream
from live_notifications.publishing import publish
from live_notifications.tokens import token_for
from tests.servers import PYTHONPATH, ROOT, BroadcasterProcess, wait_until

pytestmark = pytest.mark.django_db(transaction=True)

RECEIVE_TIMEOUT = 30


class Listener:
    """Iterates a stream in a thread of its own; the test reads what it got."""

    def __init__(self, stream: EventStream) -> None:
        self.stream = stream
        self.received: queue.Queue[tuple[dict[str, Any], bool] | BaseException] = queue.Queue()
        self.loop = asyncio.new_event_loop()
        self.task: asyncio.Task[None] | None = None
        self.thread = threading.Thread(target=self._run)
        self.thread.start()

    def _run(self) -> None:
        self.task = self.loop.create_task(self._listen())
        try:
            self.loop.run_until_complete(self.task)
        except asyncio.CancelledError:
            pass
        finally:
            self.loop.close()

    async def _listen(self) -> None:
        try:
            async for event in self.stream:
                self.received.put((event, self.stream.missed))
        except Exception as exc:
            self.received.put(exc)

    def next(self) -> tuple[dict[str, Any], bool]:
        """The next event and whether events may be missing before it."""
        item = self.received.get(timeout=RECEIVE_TIMEOUT)
        if isinstance(item, BaseException):
            raise item
        return item

    def objects(self, count: int) -> list[str]:
        return [str(self.next()[0]["object"]) for _ in range(count)]

    def stop(self) -> None:
        # The loop is closed once iteration ended (AccessRevoked): nothing to cancel.
        if self.task is not None and not self.loop.is_closed():
            with contextlib.suppress(RuntimeError):  # it closed meanwhile
                self.loop.call_soon_threadsafe(self.task.cancel)
        self.thread.join(timeout=RECEIVE_TIMEOUT)
        assert not self.thread.is_alive(), "the client didn't stop"


@pytest.fixture
def listen() -> Iterator[Callable[[EventStream], Listener]]:
    listeners: list[Listener] = []

    def start(stream: EventStream) -> Listener:
        listeners.append(Listener(stream))
        return listeners[-1]

    yield start
    for listener in listeners:
        listener.stop()


def test_events_arrive_and_resume_across_a_restart(
    start_broadcaster: Callable[..., BroadcasterProcess],
    listen: Callable[[EventStream], Listener],
) -> None:
    broadcaster = start_broadcaster()
    token = token_for(user("root", is_superuser=True))
    # Short waits between attempts: the restart below is seconds long.
    listener = listen(EventStream(broadcaster.url, lambda: token, min_delay=0.1, max_delay=0.5))
    wait_connected(broadcaster)
    publish(event_for(Group, "one"))
    publish(event_for(Group, "two"))
    assert listener.objects(2) == ["one", "two"]

    assert broadcaster.terminate() == 0
    publish(event_for(Group, "three"))  # while no broadcaster runs
    restarted = start_broadcaster(port=broadcaster.port)
    publish(event_for(Group, "four"))
    # Replayed, then live, in order; nothing twice, nothing flagged missing.
    got = [listener.next() for _ in range(2)]
    assert [(event["object"], missed) for event, missed in got] == [
        ("three", False),
        ("four", False),
    ]
    publish(event_for(Group, "five"))
    assert listener.objects(1) == ["five"]
    assert restarted.metrics()['broadcaster_resumes_total{outcome="recovered"}'] == 1


def test_app_events_come_as_they_are_sent(
    start_broadcaster: Callable[..., BroadcasterProcess],
    listen: Callable[[EventStream], Listener],
) -> None:
    broadcaster = start_broadcaster()
    alice = user("alice")
    token = token_for(alice)
    listener = listen(EventStream(broadcaster.url, lambda: token))
    wait_connected(broadcaster)
    events.publish("export.ready", {"file": "a.csv"}, users=[alice])
    event, missed = listener.next()
    assert (event["event"], event["data"], missed) == ("export.ready", {"file": "a.csv"}, False)
    assert set(event) == {"event", "data", "timestamp", "id"}


def wait_connected(broadcaster: BroadcasterProcess) -> None:
    wait_until(lambda: broadcaster.metrics()["broadcaster_connections"] == 1, "the client")


def test_a_resume_the_server_cant_honour_is_flagged(
    start_broadcaster: Callable[..., BroadcasterProcess],
    listen: Callable[[EventStream], Listener],
) -> None:
    broadcaster = start_broadcaster()
    token = token_for(user("root", is_superuser=True))
    listener = listen(EventStream(broadcaster.url, lambda: token, last_id="not-an-id"))
    wait_connected(broadcaster)
    publish(event_for(Group, "after the gap"))
    publish(event_for(Group, "next"))
    first, missed = listener.next()
    assert (first["object"], missed) == ("after the gap", True)
    second, missed = listener.next()
    assert (second["object"], missed) == ("next", False)


def test_revoked_access_ends_the_iteration(
    start_broadcaster: Callable[..., BroadcasterProcess],
    listen: Callable[[EventStream], Listener],
) -> None:
    broadcaster = start_broadcaster()
    someone = user("someone", "auth.view_group")
    token = token_for(someone)
    listener = listen(EventStream(broadcaster.url, lambda: token, min_delay=0.1))
    wait_connected(broadcaster)
    publish(event_for(Group, "seen"))
    assert listener.objects(1) == ["seen"]
    someone.is_active = False
    someone.save()
    # Closed 1008; the same token, tried again at once, is refused: the end.
    with pytest.raises(AccessRevoked):
        listener.next()


def test_the_command_line_prints_events(
    start_broadcaster: Callable[..., BroadcasterProcess],
) -> None:
    broadcaster = start_broadcaster()
    token = token_for(user("root", is_superuser=True))
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "live_notifications.client",
            broadcaster.url,
            sys.executable,
            "-c",
            f"print('noise'); print({token!r})",
        ],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": PYTHONPATH},
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        wait_connected(broadcaster)
        publish(event_for(Permission, "printed"))
        assert process.stdout is not None
        line = process.stdout.readline()
        assert json.loads(line)["object"] == "printed"
    finally:
        process.kill()
        process.wait()
