"""Clients that resume, changes that flow, and connections that break.

What the tests of the event log use (the contract's "Resuming"): clients that
send their last id every time they connect, each in a thread of its own and
recording everything they receive; the administrator adding groups at a
steady rate in a thread of its own; a TCP relay whose connections the test
cuts as a network failure would.

Every wait is bounded (:data:`~tests.e2e.stack.WAIT`) and fails with what was
seen. A client that sees something the contract forbids (a welcome that
doesn't recover its last id, an event without its fields) stops and keeps
the failure, which the test's next wait on it raises.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import json
import selectors
import socket
import struct
import threading
import time
from collections.abc import Iterator
from types import TracebackType
from typing import Any, Self
from urllib.parse import urlsplit

from websockets.exceptions import ConnectionClosed, InvalidHandshake
from websockets.frames import Close
from websockets.sync.client import ClientConnection, connect

from .helpers import RECEIVE_TIMEOUT, AdminSession, Person, check_fields
from .stack import WAIT, wait_until

#: Seconds between checks, in the threads, of whether to stop.
POLL = 0.2
#: Seconds between attempts to connect while the edge has nowhere to send a
#: client (every replica gone or not ready yet).
RETRY = 0.5
#: Seconds a client waits before it reconnects, as real ones do (the live
#: page waits 2-4 s): a few changes are made meanwhile, which only the replay
#: from its last id can deliver. Nothing is ordered by it.
RECONNECT_DELAY = 1.0
#: Close codes after which a client connects again (and resumes): going away
#: (a replica shutting down), try again later (its database unreachable).
RECONNECT_AFTER = {1001, 1013}

Message = dict[str, Any]


@dataclasses.dataclass
class Conversation:
    """One connection of a resuming client, from its first message to its end."""

    url: str
    #: The ``last_id`` it sent (``None`` on a first connection).
    sent_last_id: str | None
    #: ``{"type": "welcome", "id", "recovered"}``, once received.
    welcome: Message | None = None
    #: Everything received after the welcome, in order: events and positions.
    messages: list[Message] = dataclasses.field(default_factory=list)
    #: Whether it ended, and how: the server's close frame (``None``: there
    #: was none, the connection just broke), or the client's own close.
    ended: bool = False
    close: Close | None = None
    by_client: bool = False

    @property
    def events(self) -> list[Message]:
        return [message for message in self.messages if "type" not in message]

    def describe_end(self) -> str:
        if not self.ended:
            return "open"
        if self.by_client:
            return "closed by the client"
        if self.close is None:
            return "broken (no close frame)"
        return f"closed {self.close.code} {self.close.reason!r}"


class ResumingClient:
    """A client of the contract's JSON form that never gives up.

    Each connection gets a fresh token from ``/api/token/`` and sends
    ``{"token": …, "last_id": …}``, the id of the last event, position or
    welcome received (``null`` the first time); it checks the welcome:
    ``recovered`` false on the first connection, true with ``id`` ==
    ``last_id`` on every later one. Whenever a connection ends, other than by
    :meth:`stop`, it connects again after :data:`RECONNECT_DELAY`, retrying
    while the edge refuses it (for up to :data:`WAIT` s).

    It runs in a thread of its own from :meth:`start` to :meth:`stop`;
    :meth:`start` again resumes from the last id.
    """

    def __init__(self, person: Person, url: str, name: str) -> None:
        self.person = person
        self.url = url
        self.name = name
        self.conversations: list[Conversation] = []
        self.last_id: str | None = None
        self.failure: BaseException | None = None
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    # Reading what it saw (from the test's thread, while it runs).

    def events(self) -> list[Message]:
        """Every event received, over all connections, in order."""
        return [event for conversation in list(self.conversations) for event in conversation.events]

    def welcomed(self) -> list[Conversation]:
        """The connections that got as far as the welcome."""
        return [conversation for conversation in list(self.conversations) if conversation.welcome]

    @property
    def reconnects(self) -> int:
        return max(0, len(self.welcomed()) - 1)

    def summary(self) -> str:
        conversations = list(self.conversations)
        positions = sum(
            1 for conversation in conversations for m in conversation.messages if "type" in m
        )
        recovered = [c.welcome["recovered"] for c in conversations if c.welcome]
        ends = [c.describe_end() for c in conversations]
        return (
            f"{self.name} on {self.url}: {len(self.events())} events, {positions} positions, "
            f"{len(conversations)} connections (recovered: {recovered}; ends: {ends})"
        )

    def check(self) -> None:
        """Raise what went wrong in the client's thread, if anything did."""
        if self.failure is not None:
            raise AssertionError(f"{self.name} failed: {self.failure}; {self.summary()}")

    def wait_welcomed(self) -> None:
        """Wait until its current connection got its welcome."""

        def probe() -> tuple[bool, str]:
            self.check()
            current = self.conversations[-1] if self.conversations else None
            return current is not None and current.welcome is not None, self.summary()

        wait_until(probe, lambda seen: seen[0], f"{self.name} to be welcomed")

    def wait_for_object(self, name: str) -> None:
        """Wait until an event about the object ``name`` arrived."""

        def probe() -> tuple[bool, str]:
            self.check()
            return any(event.get("object") == name for event in self.events()), self.summary()

        wait_until(probe, lambda seen: seen[0], f"{self.name} to receive {name!r}")

    # Running.

    def start(self) -> None:
        assert self._thread is None, f"{self.name} runs already"
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Close the connection (code 1000) and end the thread; keep the last id."""
        if self._thread is None:
            return
        self._stopping.set()
        self._thread.join(WAIT)
        assert not self._thread.is_alive(), f"{self.name} didn't stop within {WAIT} s"
        self._thread = None

    def _run(self) -> None:
        try:
            while not self._stopping.is_set():
                opened = self._connect()
                if opened is None:
                    return
                websocket, token = opened
                with websocket:  # closes it (1000) if the client stops
                    self._converse(websocket, token)
                self._stopping.wait(RECONNECT_DELAY)
        except BaseException as exc:
            self.failure = exc

    def _connect(self) -> tuple[ClientConnection, str] | None:
        """A new connection and the fresh token to send on it (``None``: stopping)."""
        deadline = time.monotonic() + WAIT
        last: BaseException | None = None
        while not self._stopping.is_set():
            try:
                token = self.person.token()["token"]
                return connect(self.url, open_timeout=RECEIVE_TIMEOUT), token
            except (InvalidHandshake, OSError, TimeoutError) as exc:  # requests' too
                last = exc
            if time.monotonic() > deadline:
                raise AssertionError(f"no connection to {self.url} within {WAIT} s: {last!r}")
            self._stopping.wait(RETRY)
        return None

    def _converse(self, websocket: ClientConnection, token: str) -> None:
        conversation = Conversation(self.url, self.last_id)
        self.conversations.append(conversation)
        try:
            websocket.send(json.dumps({"token": token, "last_id": conversation.sent_last_id}))
            while True:
                try:
                    message = websocket.recv(timeout=POLL)
                except TimeoutError:
                    if self._stopping.is_set():
                        conversation.ended = conversation.by_client = True
                        return
                    continue
                self._receive(conversation, message)
        except ConnectionClosed as closed:
            conversation.ended, conversation.close = True, closed.rcvd
            # A broken connection (no close frame) or a going-away: resume.
            # Anything else (1011 authentication failed, 1008) is a failure.
            if closed.rcvd is not None and closed.rcvd.code not in RECONNECT_AFTER:
                raise AssertionError(
                    f"closed with {closed.rcvd.code} {closed.rcvd.reason!r}"
                ) from None

    def _receive(self, conversation: Conversation, data: str | bytes) -> None:
        assert isinstance(data, str), f"binary message: {data!r}"
        message: Message = json.loads(data)
        assert isinstance(message.get("id"), str), f"message without a string id: {message}"
        if conversation.welcome is None:
            self._check_welcome(conversation, message)
            conversation.welcome = message
        elif "type" in message:
            assert message["type"] == "position", f"unexpected control message: {message}"
            conversation.messages.append(message)
        else:
            check_fields(message)
            conversation.messages.append(message)
        self.last_id = message["id"]

    def _check_welcome(self, conversation: Conversation, message: Message) -> None:
        """The first connection starts afresh; every later one recovers its last id."""
        assert message.get("type") == "welcome", f"first message not a welcome: {message}"
        assert isinstance(message.get("recovered"), bool), f"welcome without recovered: {message}"
        sent = conversation.sent_last_id
        if not any(earlier.welcome for earlier in self.conversations[:-1]):
            assert message["recovered"] is (sent is not None), f"sent {sent!r}, got {message}"
        else:
            assert message == {"type": "welcome", "id": sent, "recovered": True}, (
                f"resuming from {sent!r} on {conversation.url}, welcomed with {message}"
            )


class ResumingClients:
    """The resuming clients of a test: opened, waited for, stopped together."""

    def __init__(self) -> None:
        self.clients: list[ResumingClient] = []

    def open(self, person: Person, url: str) -> ResumingClient:
        """Start a client of ``person`` on ``url``, in a session of its own."""
        client = ResumingClient(person.new_session(), url, f"client {len(self.clients) + 1}")
        self.clients.append(client)
        client.start()
        return client

    def wait_welcomed(self) -> None:
        for client in self.clients:
            client.wait_welcomed()

    def wait_for_object(self, name: str) -> None:
        for client in self.clients:
            client.wait_for_object(name)

    def stop(self) -> None:
        for client in self.clients:
            client.stop()


class AdminFlow:
    """The administrator making changes, one round every ``interval`` s, in a
    thread and an admin session of their own, until stopped (at most
    ``limit`` rounds); :meth:`round` is what a round does.

    :attr:`made` lists what each round's saves made, once they returned the
    admin's redirect: committed, in the order of the log. A save that fails
    stops the flow; :meth:`stop` (the end of the ``with`` block) raises its
    failure.
    """

    def __init__(
        self, admin: AdminSession, prefix: str, *, interval: float = 0.25, limit: int = 120
    ) -> None:
        self.admin = AdminSession.login(admin.site_url, admin.username, admin.password)
        self.prefix = prefix
        self.interval = interval
        self.limit = limit
        self.made: list[str] = []
        self.failure: BaseException | None = None
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"changes {prefix}", daemon=True)

    def round(self, number: int) -> str:
        """Make round ``number``'s changes; return what names it."""
        raise NotImplementedError

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def _run(self) -> None:
        try:
            due = time.monotonic()
            for number in range(1, self.limit + 1):
                # Pacing only: nothing is ordered by it.
                if self._stopping.wait(max(0.0, due - time.monotonic())):
                    return
                due = max(due + self.interval, time.monotonic())
                self.made.append(self.round(number))  # asserts committed saves
        except BaseException as exc:
            self.failure = exc

    def check(self) -> None:
        if self.failure is not None:
            raise AssertionError(
                f"an admin save failed after {len(self.made)} committed: {self.failure}"
            )

    def wait_made(self, count: int) -> int:
        """Wait until ``count`` rounds are committed; return how many are."""

        def probe() -> int:
            self.check()
            return len(self.made)

        return wait_until(
            probe,
            lambda made: made >= count,
            f"{count} rounds of changes committed by the administrator (at most {self.limit})",
            timeout=WAIT + count * self.interval,
        )

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(WAIT)
        assert not self._thread.is_alive(), f"the change flow didn't stop within {WAIT} s"
        self.check()


class ChangeFlow(AdminFlow):
    """The administrator adding groups ``<prefix>-001``, ``-002``…: :attr:`made`
    lists their names."""

    def round(self, number: int) -> str:
        name = f"{self.prefix}-{number:03d}"
        self.admin.add_group(name)
        return name


class CuttingProxy:
    """A TCP relay from a port of its own to one WebSocket address of the stack.

    Clients connect to :attr:`url` instead. :meth:`cut` ends each relayed
    connection as a network failure would: the client gets a TCP reset and
    no close frame; the server gets nothing at all, neither a close frame
    nor a FIN, and its connection stays open, delivering nothing: what it
    sends is counted in :attr:`dropped` and discarded, until :meth:`close`.
    Connections made after a cut are relayed normally.
    """

    def __init__(self, url: str) -> None:
        target = urlsplit(url)
        assert target.hostname and target.port, url
        self._target = (target.hostname, target.port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(POLL)
        port = self._listener.getsockname()[1]
        self.url = target._replace(netloc=f"127.0.0.1:{port}").geturl()
        self._pipes: list[_Pipe] = []
        self._closing = threading.Event()
        self._acceptor = threading.Thread(target=self._accept, name=f"proxy {port}", daemon=True)
        self._acceptor.start()

    @property
    def dropped(self) -> int:
        """Bytes the server sent on cut connections, never delivered."""
        return sum(pipe.dropped for pipe in list(self._pipes))

    def _accept(self) -> None:
        while not self._closing.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                upstream = socket.create_connection(self._target, timeout=RECEIVE_TIMEOUT)
            except OSError:
                client.close()  # as the stack would refuse it
                continue
            pipe = _Pipe(client, upstream, self._closing)
            self._pipes.append(pipe)
            pipe.start()

    def cut(self) -> int:
        """Cut every connection relayed now; return how many were cut."""
        pipes = [pipe for pipe in list(self._pipes) if not pipe.ended.is_set()]
        for pipe in pipes:
            pipe.cut_requested.set()
        for pipe in pipes:
            assert pipe.was_cut.wait(WAIT) or pipe.ended.is_set(), "a cut didn't happen"
        return sum(pipe.was_cut.is_set() for pipe in pipes)

    def close(self) -> None:
        """Stop relaying; close every connection (the server's get a FIN)."""
        self._closing.set()
        self._acceptor.join(WAIT)
        self._listener.close()
        for pipe in list(self._pipes):
            pipe.thread.join(WAIT)


class _Pipe:
    """One relayed connection, in a thread of its own."""

    def __init__(self, client: socket.socket, upstream: socket.socket, closing: threading.Event):
        self.client = client
        self.upstream = upstream
        self.closing = closing
        self.cut_requested = threading.Event()
        self.was_cut = threading.Event()
        self.ended = threading.Event()
        self.dropped = 0
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self.thread.start()

    def _run(self) -> None:
        with contextlib.ExitStack() as exits:
            exits.callback(self.ended.set)
            exits.enter_context(self.client)
            exits.enter_context(self.upstream)
            selector = exits.enter_context(selectors.DefaultSelector())
            selector.register(self.client, selectors.EVENT_READ)
            selector.register(self.upstream, selectors.EVENT_READ)
            while not self.closing.is_set():
                if self.cut_requested.is_set() and not self.was_cut.is_set():
                    selector.unregister(self.client)
                    _reset(self.client)
                    self.was_cut.set()
                for key, _ in selector.select(timeout=POLL):
                    if not self._forward(key.fileobj):
                        return  # one side closed: close the other

    def _forward(self, source: Any) -> bool:
        """Relay what ``source`` has to say; ``False`` once it closed."""
        try:
            data = source.recv(65536)
            if not data:
                return False
            if source is self.client:
                self.upstream.sendall(data)
            elif self.was_cut.is_set():
                self.dropped += len(data)
            else:
                self.client.sendall(data)
        except OSError:
            return False
        return True


def _reset(sock: socket.socket) -> None:
    """Close ``sock`` with a TCP reset (RST), not the orderly FIN."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


@contextlib.contextmanager
def cutting_proxies(*urls: str) -> Iterator[list[CuttingProxy]]:
    """A :class:`CuttingProxy` for each of ``urls``, closed at the end."""
    with contextlib.ExitStack() as exits:
        proxies = []
        for url in urls:
            proxy = CuttingProxy(url)
            exits.callback(proxy.close)
            proxies.append(proxy)
        yield proxies


# Counting.


def assert_every_change_received(
    clients: list[ResumingClient], expected: list[str], prefix: str
) -> None:
    """Each client received the events of ``expected`` (group names, in the
    order they were committed) exactly: none lost, none repeated, in that
    order; every id it received once only; and all clients the same id for
    the same change."""
    ids_by_name: dict[str, str] | None = None
    for client in clients:
        client.check()
        events = client.events()
        counts = collections.Counter(event["id"] for event in events)
        repeated = sorted(event_id for event_id, count in counts.items() if count > 1)
        assert not repeated, f"{client.name} received ids more than once: {repeated}"
        ours = [e for e in events if e.get("model") == "group" and e["object"].startswith(prefix)]
        names = [event["object"] for event in ours]
        if names != expected:
            lost = [name for name in expected if name not in names]
            unexpected = [name for name in names if name not in expected]
            raise AssertionError(
                f"{client.name}: {len(names)} events for {len(expected)} changes; lost: {lost}; "
                f"unexpected: {unexpected}; received: {names}; {client.summary()}"
            )
        assert {event["action"] for event in ours} == {"added"}, ours
        by_name = {event["object"]: event["id"] for event in ours}
        if ids_by_name is None:
            ids_by_name = by_name
        assert by_name == ids_by_name, f"{client.name} got other ids for the same changes"
