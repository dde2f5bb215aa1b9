"""Events read together are written together: each client still gets exactly its own.

The fan-out frames an event once and writes what is due to a connection
from consecutive events in one call. These tests append several entries to
the log in one Redis transaction, so that the broadcaster reads them in one
batch, and check what real clients see: each allowed event once, in order,
as valid frames (websockets' client parses them); access changes in the
middle of a batch applied at their place; connections that are closing
left alone; slow clients cut within a run.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import socket
import time
from collections.abc import Callable, Iterator

import pytest
import redis
from django.contrib.auth.models import Group, Permission, User
from django.contrib.contenttypes.models import ContentType
from django.db import connection
from websockets.asyncio.client import connect as connect_async
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.sync.client import ClientConnection

from live_notifications.broadcaster.auth import Identity, access
from live_notifications.broadcaster.connection import Connection, Settings
from live_notifications.broadcaster.fanout import Fanout
from live_notifications.broadcaster.history import Entry, History
from live_notifications.broadcaster.log import EventLogReader
from live_notifications.broadcaster.metrics import Metrics
from live_notifications.publishing import publish
from live_notifications.shared.eventlog import (
    EPOCH_KEY,
    MESSAGE_FIELD,
    ORIGIN,
    STREAM,
    Position,
    Retention,
    event_id,
)
from live_notifications.shared.events import CHANGED, REVOKED, AccessChange, Audience, Event
from live_notifications.tokens import token_for
from tests.servers import BroadcasterProcess, wait_until

from .helpers import (
    RECEIVE_TIMEOUT,
    authenticated,
    closed,
    event_for,
    objects_until,
    resuming,
    user,
)

pytestmark = pytest.mark.django_db(transaction=True)


def append_together(client: redis.Redis, *entries: Event | AccessChange) -> None:
    """Append ``entries`` after the log's head in one transaction, as the relay would.

    The broadcaster, blocked on XREAD, gets them all in one reply. Nothing
    else may be publishing meanwhile (the relay would take the same ids).
    """
    epoch = client.get(EPOCH_KEY)
    assert epoch is not None, "no log yet: publish something first"
    head = Position.parse(client.xinfo_stream(STREAM)["last-generated-id"])
    pipeline = client.pipeline(transaction=True)
    for entry in entries:
        head = head.following(time.time_ns() // 10**6)
        message = json.loads(entry.encode()) | {"id": event_id(epoch.decode(), head)}
        pipeline.xadd(STREAM, {MESSAGE_FIELD: json.dumps(message)}, id=str(head))
    pipeline.execute()


@contextlib.contextmanager
def clients_of(
    broadcaster: BroadcasterProcess, *users: User
) -> Iterator[dict[str, list[ClientConnection]]]:
    """For each user, a how-to client and a resuming one, registered and past a first event."""
    with contextlib.ExitStack() as stack:
        clients: dict[str, list[ClientConnection]] = {}
        for who in users:
            how_to = stack.enter_context(authenticated(broadcaster, token_for(who)))
            resumer, _ = stack.enter_context(resuming(broadcaster, token_for(who)))
            clients[who.username] = [how_to, resumer]
        ready = event_for(Group, "ready")
        publish(ready)  # makes the log, if it wasn't
        for who in users:
            if may_see(who, ready):
                for client in clients[who.username]:
                    assert objects_until(client, "ready") == ["ready"]
        yield clients


def permission(codename: str) -> Permission:
    return Permission.objects.get(codename=codename)


@pytest.mark.parametrize(
    "sizes",
    [
        pytest.param([10] * 12, id="small"),
        # Past the 64 KiB after which a run is written: three runs and a bit.
        pytest.param([3000] * 70, id="several runs"),
        # Frames with 2-, 4- and 10-byte headers in one write.
        pytest.param([10, 70_000, 200, 10], id="large"),
    ],
)
def test_a_batch_reaches_each_client_once_in_order(
    broadcaster: BroadcasterProcess, redis_client: redis.Redis, sizes: list[int]
) -> None:
    users = [
        user("grouper", "auth.view_group"),
        user("userer", "auth.view_user"),
        user("both", "auth.view_group", "auth.view_user"),
        user("root", is_superuser=True),
    ]
    models = [Group, User, Permission]
    batch = [event_for(models[i % 3], f"{i} {'x' * size}") for i, size in enumerate(sizes)]
    sentinels = [event_for(Group, "group sentinel"), event_for(User, "user sentinel")]
    with clients_of(broadcaster, *users) as clients:
        before = broadcaster.metrics()["broadcaster_messages_sent_total"]
        append_together(redis_client, *batch)
        publish(*sentinels)  # after the batch: the end of every stream
        sent = 0
        for who in users:
            expected = [e.object for e in [*batch, *sentinels] if may_see(who, e)]
            for client in clients[who.username]:
                # Exactly once: the sentinels come after the batch.
                assert objects_until(client, expected[-1]) == expected, who.username
                sent += len(expected)
        after = broadcaster.metrics()["broadcaster_messages_sent_total"]
        assert after == before + sent


def may_see(who: User, event: Event) -> bool:
    model = ContentType.objects.get_for_id(event.content_type_id).model_class()
    assert model is not None
    return who.has_perm(f"{model._meta.app_label}.view_{model._meta.model_name}")


def test_a_revocation_in_a_batch_stops_what_follows(
    broadcaster: BroadcasterProcess, redis_client: redis.Redis
) -> None:
    alice = user("alice", "auth.view_group")
    root = user("root", is_superuser=True)
    with clients_of(broadcaster, alice, root) as clients:
        append_together(
            redis_client,
            event_for(Group, "before 1"),
            event_for(Group, "before 2"),
            AccessChange(access=REVOKED, users=(alice.pk,)),
            event_for(Group, "after"),
        )
        for client in clients["alice"]:
            assert objects_until(client, "before 2") == ["before 1", "before 2"]
            assert closed(client) == (1008, "access revoked")
        for client in clients["root"]:
            assert objects_until(client, "after") == ["before 1", "before 2", "after"]


def remove_permission_unannounced(who: User, codename: str) -> None:
    with connection.cursor() as cursor:
        cursor.execute(
            f"DELETE FROM {User.user_permissions.through._meta.db_table}"  # noqa: S608
            " WHERE user_id = %s AND permission_id = %s",
            [who.pk, permission(codename).pk],
        )


def add_permission_unannounced(who: User, codename: str) -> None:
    through = User.user_permissions.through
    through.objects.bulk_create([through(user_id=who.pk, permission_id=permission(codename).pk)])


@pytest.mark.parametrize(
    ("permissions", "change", "alice_sees"),
    [
        pytest.param(
            ["auth.view_group", "auth.view_user"],
            lambda who: remove_permission_unannounced(who, "view_user"),
            ["user 1", "group 1", "group 2"],
            id="reduced",
        ),
        pytest.param(
            ["auth.view_group"],
            lambda who: add_permission_unannounced(who, "view_user"),
            ["group 1", "user 2", "group 2"],
            id="extended",
        ),
    ],
)
def test_a_permission_change_in_a_batch_applies_at_its_place(
    broadcaster: BroadcasterProcess,
    redis_client: redis.Redis,
    permissions: list[str],
    change: Callable[[User], None],
    alice_sees: list[str],
) -> None:
    """What alice may see changes in the database, then the log says so in
    the middle of a batch: the events before it follow her old permissions,
    those after it her new ones, in order."""
    alice = user("alice", *permissions)
    root = user("root", is_superuser=True)
    with clients_of(broadcaster, alice, root) as clients:
        change(alice)  # not announced: the log's entry below does it
        batch = [
            event_for(User, "user 1"),
            event_for(Group, "group 1"),
            AccessChange(access=CHANGED, users=(alice.pk,)),
            event_for(User, "user 2"),
            event_for(Group, "group 2"),
        ]
        append_together(redis_client, *batch)
        for client in clients["alice"]:
            assert objects_until(client, "group 2") == alice_sees
        for client in clients["root"]:
            assert objects_until(client, "group 2") == ["user 1", "group 1", "user 2", "group 2"]
        publish(event_for(Group, "sentinel"))  # and nothing twice
        for client in [*clients["alice"], *clients["root"]]:
            assert objects_until(client, "sentinel") == ["sentinel"]


class RawClient:
    """A WebSocket client on a bare socket: it sends what it's told, and
    doesn't answer the server's close frame, so that the server waits."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=RECEIVE_TIMEOUT)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            f"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        self.data = b""
        while b"\r\n\r\n" not in self.data:
            self.data += self._recv()
        response, _, self.data = self.data.partition(b"\r\n\r\n")
        assert response.startswith(b"HTTP/1.1 101"), response

    def __enter__(self) -> RawClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.sock.close()

    def _recv(self) -> bytes:
        chunk = self.sock.recv(65536)
        assert chunk, "the server closed the TCP connection"
        return chunk

    def send_text(self, text: str) -> None:
        payload = text.encode()
        assert len(payload) < 126
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(bytes([0x81, 0x80 | len(payload)]) + mask + masked)

    def frame(self) -> tuple[int, bytes]:
        """The next frame sent by the server: opcode and payload."""
        while len(self.data) < 2:
            self.data += self._recv()
        length, header = self.data[1] & 0x7F, 2
        if length >= 126:
            header = 4 if length == 126 else 10
            while len(self.data) < header:
                self.data += self._recv()
            length = int.from_bytes(self.data[2:header], "big")
        while len(self.data) < header + length:
            self.data += self._recv()
        opcode, payload = self.data[0] & 0x0F, self.data[header : header + length]
        self.data = self.data[header + length :]
        return opcode, payload

    def pending(self) -> bytes:
        """What the server sent that wasn't read yet, waiting a moment for more."""
        self.sock.settimeout(0.5)
        with contextlib.suppress(TimeoutError):
            while chunk := self.sock.recv(65536):
                self.data += chunk
        return self.data


def test_a_closing_connection_gets_nothing_after_its_close_frame(
    start_broadcaster: Callable[..., BroadcasterProcess], redis_client: redis.Redis
) -> None:
    """A client that sends is closed, and stays registered until it answers
    the close (up to the close timeout): events meanwhile must not follow
    the close frame."""
    broadcaster = start_broadcaster(BROADCASTER_CLOSE_TIMEOUT="60")
    root = user("root", is_superuser=True)
    with clients_of(broadcaster, root) as clients, RawClient(broadcaster.port) as raw:
        raw.send_text(token_for(root))
        wait_until(lambda: broadcaster.metrics()["broadcaster_connections"] == 3, "registered")
        raw.send_text("hello?")
        assert raw.frame() == (0x8, (1008).to_bytes(2, "big") + b"clients send nothing")
        assert broadcaster.metrics()["broadcaster_connections"] == 3  # still closing
        append_together(redis_client, event_for(Group, "one"), event_for(Group, "two"))
        publish(event_for(Group, "three"))
        for client in clients["root"]:
            assert objects_until(client, "three") == ["one", "two", "three"]
        assert raw.pending() == b""


# What can't be made from outside the process, or not precisely: a slow
# client behind small socket buffers. Here are a real server and client in
# this process, with the fan-out of a broadcaster.


def in_process_fanout(*, slow_client_buffer: int = 65536) -> tuple[Fanout, Metrics]:
    """A fan-out on an empty history, for connections of this process's server."""
    metrics = Metrics()
    log = EventLogReader(
        "redis://127.0.0.1:9/0", lambda entries: None, metrics=metrics, retention=Retention()
    )
    log.history = History("epoch", ORIGIN, from_origin=True)
    fanout = Fanout(
        log=log, metrics=metrics, slow_client_buffer=slow_client_buffer, access_of=lambda _: {}
    )
    return fanout, metrics


def entry(seq: int, message: str) -> Entry:
    """An event of content type 1, which a superuser may see."""
    return Entry(Position(1, seq), Audience(content_types=frozenset({1})), message.encode())


class Opening:
    """A server's side of :class:`.Connection` that accepts all and tells who opened."""

    def __init__(self, on_open: Callable[[Connection], None]) -> None:
        self.on_open = on_open

    def process_request(self, connection: Connection, request: Request) -> Response | None:
        return None

    def connection_open(self, connection: Connection) -> None:
        self.on_open(connection)

    def message_begun(self, connection: Connection) -> None:
        pass

    def message_received(self, connection: Connection, message: str | bytes) -> None:
        pass

    def too_slow(self, connection: Connection) -> None:
        pass

    def connection_closed(self, connection: Connection) -> None:
        pass


def test_a_slow_client_is_cut_within_a_run_past_the_limit() -> None:
    """A megabyte read in one batch: written as one run, it would all be
    buffered for a client that can't take it; written in runs, the client
    is cut a run or two past the limit."""
    asyncio.run(slow_client_is_cut())


async def slow_client_is_cut() -> None:
    fanout, metrics = in_process_fanout(slow_client_buffer=65536)
    registered = asyncio.Event()
    followed = []

    def on_open(connection: Connection) -> None:
        # Small kernel buffers: what the client can't take stays in the transport's.
        connection.transport.get_extra_info("socket").setsockopt(
            socket.SOL_SOCKET, socket.SO_SNDBUF, 4096
        )
        identity = Identity(1, "root", access(superuser=True))
        task = asyncio.create_task(fanout.follow(connection, identity, ORIGIN, resuming=False))
        task.add_done_callback(lambda _: registered.set())
        followed.append(task)

    settings = Settings(
        Opening(on_open), origins=None, max_size=1024, max_buffer=1 << 30, close_timeout=5
    )
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Connection(settings), "127.0.0.1", 0)
    async with server:
        port = server.sockets[0].getsockname()[1]
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", port))
        async with connect_async(f"ws://127.0.0.1:{port}/", sock=sock) as client:
            async with asyncio.timeout(RECEIVE_TIMEOUT):
                await registered.wait()
            assert followed[0].result() is True
            # The client reads nothing meanwhile: this loop is busy here.
            fanout.on_entries([entry(i, f"{i:04d} {'x' * 1000}") for i in range(1, 1001)])
            received = 0
            with pytest.raises(ConnectionClosed) as info:
                async with asyncio.timeout(RECEIVE_TIMEOUT):
                    while True:
                        await client.recv()
                        received += 1
    assert info.value.rcvd is not None
    assert (info.value.rcvd.code, info.value.rcvd.reason) == (1008, "too slow")
    assert 0 < received < 500  # a run is 64 events of this size
    assert metrics.slow_clients_dropped == 1
