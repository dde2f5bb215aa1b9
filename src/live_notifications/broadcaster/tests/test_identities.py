"""Tokens checked in batches, known users kept: fewer queries, not fewer checks.

Against the real PostgreSQL (and, for access changes, the relay and Redis):
the queries are counted by wrapping the execution of those made in the
thread that :class:`.Identities` reads in.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar
from unittest import mock

import pytest
from django.contrib.auth.models import Group, Permission, User
from django.contrib.contenttypes.models import ContentType
from django.db import DatabaseError, connection, connections
from sesame import tokens_v1
from sesame.utils import get_token
from websockets.sync.client import connect

from live_notifications.broadcaster.auth import Identity, access
from live_notifications.broadcaster.identities import Identities
from live_notifications.broadcaster.log import EventLogReader
from live_notifications.broadcaster.metrics import Metrics
from live_notifications.publishing import publish
from live_notifications.shared.eventlog import Retention
from live_notifications.tokens import token_for
from tests.servers import BroadcasterProcess, PostgresServer, RedisServer, RelayProcess

from .helpers import RECEIVE_TIMEOUT, authenticated, closed, event_for, receive, user

pytestmark = pytest.mark.django_db(transaction=True)

T = TypeVar("T")
#: Seconds an asynchronous step of a test may take before it fails.
TIMEOUT = 30


class Thread:
    """Where :class:`.Identities` reads: one thread, whose queries are counted.

    ``pause``, when set, is awaited after a read and before its result is
    handed back: the read is in flight meanwhile.
    """

    def __init__(self) -> None:
        self.executor = ThreadPoolExecutor(max_workers=1)
        self.calls = 0
        self.queries: list[str] = []
        self.pause: Callable[[], Coroutine[Any, Any, None]] | None = None

    async def __call__(self, func: Callable[..., T], *args: Any) -> T:
        self.calls += 1
        loop = asyncio.get_running_loop()
        result = await loop.run_in_executor(self.executor, self._counted, func, *args)
        if self.pause is not None:
            await self.pause()
        return result

    def _counted(self, func: Callable[..., T], *args: Any) -> T:
        with connection.execute_wrapper(self._count):
            return func(*args)

    def _count(self, execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        self.queries.append(sql)
        return execute(sql, params, many, context)

    async def orm(self, func: Callable[..., T], *args: Any) -> T:
        """Run ORM code of the test (which can't run in the event loop), uncounted."""
        return await asyncio.get_running_loop().run_in_executor(self.executor, func, *args)

    def close(self) -> None:
        self.executor.submit(connections.close_all).result()
        self.executor.shutdown()


@pytest.fixture
def thread() -> Iterator[Thread]:
    thread = Thread()
    yield thread
    thread.close()


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    async def bounded() -> T:
        async with asyncio.timeout(TIMEOUT):
            return await coroutine

    return asyncio.run(bounded())


def identities(thread: Thread, **kwargs: Any) -> Identities:
    return Identities(to_thread=thread, **kwargs)


def view(model: type[Any]) -> int:
    return ContentType.objects.get_for_model(model).pk


async def identify_all(ids: Identities, tokens: list[str]) -> list[Identity | None]:
    """Identify ``tokens`` as clients arriving together would."""
    return list(await asyncio.gather(*(ids.identify(token) for token in tokens)))


# Batches.


def test_tokens_arriving_together_are_checked_in_one_batch(thread: Thread) -> None:
    root = user("root", is_superuser=True)
    readers = [user(f"reader{i}", "auth.view_group") for i in range(5)]
    nobody = user("nobody")
    everyone = [root, *readers, nobody]
    tokens = [token_for(u) for _ in range(20) for u in everyone]  # 140 tokens of 7 users
    ids = identities(thread)

    found = run(identify_all(ids, tokens))

    assert thread.calls == 1
    assert len(thread.queries) == 3  # the users, their permissions, their groups
    reader = access(content_types=[view(Group)], permissions=["auth.view_group"])
    expected = {
        root.pk: Identity(root.pk, "root", access(superuser=True)),
        nobody.pk: Identity(nobody.pk, "nobody", access()),
        **{r.pk: Identity(r.pk, r.username, reader) for r in readers},
    }
    assert found == [expected[u.pk] for _ in range(20) for u in everyone]


def test_the_queries_of_a_batch_dont_grow_with_its_users(thread: Thread) -> None:
    many = [user(f"u{i}", "auth.view_group") for i in range(50)]
    ids = identities(thread)
    assert all(run(identify_all(ids, [token_for(u) for u in many])))
    assert (thread.calls, len(thread.queries)) == (1, 3)


def test_tokens_arriving_meanwhile_make_the_next_batch(thread: Thread) -> None:
    first, *others = [user(f"u{i}") for i in range(4)]
    ids = identities(thread, batch_size=2)

    async def scenario() -> list[Identity | None]:
        reading = asyncio.Event()
        resume = asyncio.Event()

        async def pause() -> None:
            thread.pause = None
            reading.set()
            await resume.wait()

        thread.pause = pause
        alone = asyncio.ensure_future(ids.identify(token_for(first)))
        await reading.wait()
        # Three arrive while the first batch is out: two batches of at most two.
        later = asyncio.gather(*(ids.identify(token_for(u)) for u in others))
        await asyncio.sleep(0)
        resume.set()
        return [await alone, *await later]

    found = run(scenario())
    assert [i.user_id if i else None for i in found] == [first.pk, *(u.pk for u in others)]
    assert thread.calls == 3


def test_a_known_user_reconnects_with_no_query(thread: Thread) -> None:
    alice = user("alice", "auth.view_group")
    ids = identities(thread)
    first = run(ids.identify(token_for(alice)))
    calls, queries = thread.calls, len(thread.queries)

    again = run(identify_all(ids, [token_for(alice) for _ in range(100)]))

    assert again == [first] * 100
    assert (thread.calls, len(thread.queries)) == (calls, queries)
    assert ids.hits == 100


def test_known_and_unknown_users_together(thread: Thread) -> None:
    alice, bob = user("alice"), user("bob")
    ids = identities(thread)
    run(ids.identify(token_for(alice)))
    found = run(identify_all(ids, [token_for(alice), token_for(bob), token_for(alice)]))
    assert [i.username if i else None for i in found] == ["alice", "bob", "alice"]
    assert thread.calls == 2  # alice once, bob once
    assert alice.pk in ids and bob.pk in ids


# Refusals: each still refused, cold and with the user known.


def expired(who: User) -> str:
    long_ago = time.time() - 3600
    with mock.patch("sesame.tokens_v2.time.time", return_value=long_ago):
        return token_for(who)


def bad_signature(who: User) -> str:
    token = token_for(who)
    flipped = "B" if token[-3] == "A" else "A"  # a byte of the signature changes
    return token[:-3] + flipped + token[-2:]


def v1_token(who: User) -> str:
    return str(tokens_v1.create_token(who))


#: Tokens refused because of the token itself: the user stays known.
TOKEN_REFUSALS = {
    "expired": expired,
    "login link": lambda who: str(get_token(who)),  # the default scope, not the WebSocket's
    "other scope": lambda who: str(get_token(who, scope="other")),
    "bad signature": bad_signature,
    "truncated": lambda who: token_for(who)[:-4],
    "v1 token": v1_token,
    "garbage": lambda who: "not a token!",
    "empty": lambda who: "",
}


@pytest.mark.parametrize("make", TOKEN_REFUSALS.values(), ids=TOKEN_REFUSALS.keys())
@pytest.mark.parametrize("known", [False, True], ids=["cold", "known"])
def test_bad_tokens_are_refused_and_change_nothing(
    thread: Thread, make: Callable[[User], str], known: bool
) -> None:
    alice = user("alice", "auth.view_group")
    ids = identities(thread)
    if known:
        run(ids.identify(token_for(alice)))
    before = list(ids._known.items())
    bad = make(alice)

    assert run(identify_all(ids, [bad] * 3)) == [None] * 3

    assert list(ids._known.items()) == before  # nothing added, evicted, or replaced
    assert run(ids.identify(token_for(alice))) is not None


def test_tokens_refused_before_their_user_is_needed_cost_no_query(thread: Thread) -> None:
    alice = user("alice")
    ids = identities(thread)
    for bad in (expired(alice), "not a token!", token_for(alice)[:10]):
        assert run(ids.identify(bad)) is None
    assert thread.calls == 0


def deactivate(who: User) -> None:
    who.is_active = False
    who.save()


def change_password(who: User) -> None:
    who.set_password("new-Long-passphrase-3")
    who.save()


#: Tokens refused because of their user; each change is announced in the log.
USER_REFUSALS: dict[str, Callable[[User], None]] = {
    "inactive": deactivate,
    "password changed": change_password,
    "deleted": lambda who: who.delete(),
}


@pytest.mark.parametrize("change", USER_REFUSALS.values(), ids=USER_REFUSALS.keys())
@pytest.mark.parametrize("known", [False, True], ids=["cold", "known"])
def test_tokens_of_users_who_may_no_longer_connect_are_refused(
    thread: Thread, change: Callable[[User], None], known: bool
) -> None:
    alice, bob = user("alice", "auth.view_group"), user("bob")
    ids = identities(thread)
    token = token_for(alice)
    if known:
        run(identify_all(ids, [token_for(alice), token_for(bob)]))
    user_id = alice.pk
    change(alice)
    if known:
        ids.forget([user_id])  # as the fan-out does when the log announces the change

    assert run(identify_all(ids, [token, token])) == [None, None]
    assert user_id not in ids
    assert (bob.pk in ids) is known


def test_a_token_the_known_row_refuses_is_checked_against_the_database(thread: Thread) -> None:
    # The password changed, and the log hasn't told this replica yet.
    alice = user("alice", "auth.view_group")
    ids = identities(thread)
    old = token_for(alice)
    run(ids.identify(old))
    change_password(alice)
    new = token_for(alice)
    calls = thread.calls

    found = run(ids.identify(new))

    assert found is not None and found.user_id == alice.pk
    assert thread.calls == calls + 1
    assert run(ids.identify(new)) == found  # the row read again is kept: no query
    assert thread.calls == calls + 1
    assert run(ids.identify(old)) is None  # refused by the database too


# What is kept, and for how long.


@pytest.fixture
def log_reader(
    relay: RelayProcess, redis_server: RedisServer
) -> Callable[[Identities], EventLogReader]:
    """A reader of the event log that tells ``Identities`` of access changes, as the fan-out."""

    def make(ids: Identities) -> EventLogReader:
        def on_entries(entries: list[Any]) -> None:
            for entry in entries:
                if entry.access is not None:
                    ids.forget(entry.access.users)
                else:
                    objects.append(json.loads(entry.message)["object"])

        return EventLogReader(
            redis_server.url,
            on_entries,
            metrics=Metrics(),
            retention=Retention(),
            check_interval=0.5,
        )

    return make


#: Objects of the events read by :func:`log_reader`'s readers.
objects: list[str] = []


async def read_up(thread: Thread, log: EventLogReader) -> None:
    """Return once ``log`` reads the entries published so far (alice's creation...)."""
    await until(lambda: log.reading)
    sentinel = f"sentinel {time.monotonic()}"
    await thread.orm(lambda: publish(event_for(Group, sentinel)))
    await until(lambda: sentinel in objects)


async def until(predicate: Callable[[], bool]) -> None:
    while not predicate():  # noqa: ASYNC110 - polls state owned by the code under test
        await asyncio.sleep(0.01)


def test_a_password_change_in_the_log_refuses_the_old_token(
    thread: Thread, log_reader: Callable[[Identities], EventLogReader]
) -> None:
    alice = user("alice", "auth.view_group")
    ids = identities(thread)
    old = token_for(alice)

    async def scenario() -> None:
        log = log_reader(ids)
        reading = asyncio.create_task(log.run())
        try:
            await read_up(thread, log)
            assert await ids.identify(old) is not None
            assert alice.pk in ids
            await thread.orm(change_password, alice)  # announced: revoked
            await until(lambda: alice.pk not in ids)
            calls = thread.calls
            assert await ids.identify(old) is None
            assert thread.calls == calls + 1  # read again
        finally:
            reading.cancel()

    run(scenario())


def test_a_permission_change_in_the_log_is_read_again(
    thread: Thread, log_reader: Callable[[Identities], EventLogReader]
) -> None:
    alice = user("alice", "auth.view_group")
    ids = identities(thread)
    groups, users = view(Group), view(User)

    def grant(who: User) -> None:
        who.user_permissions.add(Permission.objects.get(codename="view_user"))

    async def scenario() -> None:
        log = log_reader(ids)
        reading = asyncio.create_task(log.run())
        try:
            await read_up(thread, log)
            before = await ids.identify(token_for(alice))
            assert before is not None and before.access.content_types == {groups}
            await thread.orm(grant, alice)  # announced: changed
            await until(lambda: alice.pk not in ids)
            after = await ids.identify(token_for(alice))
            assert after is not None and after.access.content_types == {groups, users}
        finally:
            reading.cancel()

    run(scenario())


@pytest.mark.parametrize("revoke", [change_password, deactivate], ids=["password", "inactive"])
def test_a_replica_that_knew_a_user_refuses_its_old_token_once_revoked(
    broadcaster: BroadcasterProcess, revoke: Callable[[User], None]
) -> None:
    alice = user("alice", "auth.view_group")
    root = user("root", is_superuser=True)
    old = token_for(alice)
    with authenticated(broadcaster, old):
        pass  # now known to the broadcaster
    with authenticated(broadcaster, token_for(root)) as watcher:
        revoke(alice)
        publish(event_for(Group, "after the revocation"))
        assert receive(watcher).object == "after the revocation"  # the revocation was read
    with connect(broadcaster.url, open_timeout=RECEIVE_TIMEOUT) as client:
        client.send(old)
        assert closed(client) == (1011, "authentication failed")


def test_a_read_in_flight_when_its_user_is_forgotten_is_not_kept(thread: Thread) -> None:
    alice, bob = user("alice", "auth.view_group"), user("bob", "auth.view_group")
    ids = identities(thread)

    async def scenario() -> list[Identity | None]:
        async def pause() -> None:
            # The read is done, its result not handed back: the log announces
            # a change of alice's, committed after the read started.
            ids.forget([alice.pk])

        thread.pause = pause
        return await identify_all(ids, [token_for(alice), token_for(bob)])

    found = run(scenario())
    # Those who asked get the read: their seen precedes the change, which
    # the fan-out applies to them.
    assert [i.username if i else None for i in found] == ["alice", "bob"]
    assert alice.pk not in ids
    assert bob.pk in ids


def test_forgetting_between_batches_doesnt_prevent_keeping(thread: Thread) -> None:
    alice = user("alice")
    ids = identities(thread)
    ids.forget([alice.pk])  # before the read started: the read reflects it
    assert run(ids.identify(token_for(alice))) is not None
    assert alice.pk in ids


def test_the_number_of_users_kept_is_bounded(thread: Thread) -> None:
    users = [user(f"u{i}") for i in range(5)]
    ids = identities(thread, cache_size=3)
    run(identify_all(ids, [token_for(u) for u in users[:3]]))
    run(ids.identify(token_for(users[0])))  # used: now the most recent
    run(identify_all(ids, [token_for(u) for u in users[3:]]))
    assert len(ids) == 3
    assert [u.pk in ids for u in users] == [True, False, False, True, True]


def test_a_batch_larger_than_the_bound_keeps_the_last(thread: Thread) -> None:
    users = [user(f"u{i}") for i in range(10)]
    ids = identities(thread, cache_size=4)
    assert all(run(identify_all(ids, [token_for(u) for u in users])))
    assert len(ids) == 4


@pytest.mark.parametrize("setting", [{"cache_size": 0}, {"cache_seconds": 0}])
def test_nothing_is_kept_when_disabled(thread: Thread, setting: dict[str, float]) -> None:
    alice = user("alice")
    ids = identities(thread, **setting)
    for _ in range(2):
        assert run(ids.identify(token_for(alice))) is not None
    assert len(ids) == 0
    assert thread.calls == 2


def test_users_are_read_again_after_cache_seconds(thread: Thread) -> None:
    now = [1000.0]
    alice = user("alice", "auth.view_group")
    ids = identities(thread, cache_seconds=60, clock=lambda: now[0])
    run(ids.identify(token_for(alice)))
    # A change the log doesn't see: a deactivation through QuerySet.update().
    User.objects.filter(pk=alice.pk).update(is_active=False)
    now[0] += 59
    assert run(ids.identify(token_for(alice))) is not None  # documented: up to 60 s
    now[0] += 1
    assert run(ids.identify(token_for(alice))) is None
    assert alice.pk not in ids


# The database unavailable.


def test_a_database_error_reaches_every_waiter_and_the_next_batch_works(
    thread: Thread, postgres_server: PostgresServer
) -> None:
    alice, bob = user("alice", "auth.view_group"), user("bob")
    known = user("carol")
    ids = identities(thread)
    run(ids.identify(token_for(known)))
    tokens = [token_for(alice), token_for(bob), token_for(alice)]

    async def failing() -> list[object]:
        return list(
            await asyncio.gather(*(ids.identify(t) for t in tokens), return_exceptions=True)
        )

    postgres_server.stop()
    try:
        failed = run(failing())
        # A known user still connects: no query.
        assert run(ids.identify(token_for(known))) is not None
    finally:
        postgres_server.start()
    connection.close()  # this test process's connection went with the server

    assert [isinstance(f, DatabaseError) for f in failed] == [True, True, True]
    assert alice.pk not in ids and bob.pk not in ids
    found = run(identify_all(ids, tokens))
    assert [i.username if i else None for i in found] == ["alice", "bob", "alice"]


def test_a_client_leaving_while_its_token_is_checked_leaves_the_others_alone(
    thread: Thread,
) -> None:
    alice, bob = user("alice"), user("bob")
    ids = identities(thread)

    async def scenario() -> Identity | None:
        leaving = asyncio.ensure_future(ids.identify(token_for(alice)))
        staying = asyncio.ensure_future(ids.identify(token_for(bob)))
        await asyncio.sleep(0)
        leaving.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await leaving
        return await staying

    found = run(scenario())
    assert found is not None and found.username == "bob"
