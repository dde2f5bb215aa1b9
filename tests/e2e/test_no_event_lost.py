"""No change is lost, none repeated, for clients that resume (issue 8, 1-4).

Each test connects resuming clients (:mod:`.resuming`: the contract's JSON
first message, the last id sent back on every reconnection) through the
site's /ws/ and the direct port, has the administrator add groups at a
steady rate, breaks something while the changes flow, and ends with one
last change made after the fault: the sentinel. Once a client has the
sentinel it has everything before it in the log, or never will. So no sleep
orders anything, and each client is then counted: the events of this test's
changes are exactly the changes committed, in the order committed, each
once (no id received twice), with the same ids as every other client.

These tests count connections per replica, as test_scaling's do: they
expect no other client connected while they run. Each prints what it
counted (``pytest -rP`` shows it).
"""

from __future__ import annotations

import contextlib
import itertools
import secrets
from collections.abc import Sequence

import pytest

from .conftest import PersonFactory
from .helpers import (
    VIEW_GROUP,
    AdminSession,
    Person,
    authenticated,
    interactive_client,
    receive_until,
)
from .resuming import (
    ChangeFlow,
    ResumingClient,
    ResumingClients,
    assert_every_change_received,
    cutting_proxies,
)
from .stack import Stack, wait_until

#: Changes committed before the fault, and after it is over, at least: it
#: happens while they flow, whatever it takes.
BEFORE = 8
AFTER = 8
#: Resuming clients spread over the replicas, at least, half on each address.
CLIENTS = 6


def new_prefix(kind: str, suffix: str) -> str:
    """Names this test's groups: ``<kind>-<run>-<random>``, numbered after."""
    return f"{kind}-{suffix}-{secrets.token_hex(2)}"


def spread_clients(stack: Stack, resuming: ResumingClients, person: Person) -> dict[str, int]:
    """Resuming clients on both addresses until every replica has some, all
    welcomed; return how many each replica has."""
    stack.spread(lambda url: resuming.open(person, url), minimum=CLIENTS)
    if stack.ws_direct_url not in stack.balanced_urls:  # a port-forward: one replica
        resuming.open(person, stack.ws_direct_url)
    counts = stack.wait_for_connections(len(resuming.clients))
    resuming.wait_welcomed()
    return counts


def finish(admin: AdminSession, resuming: ResumingClients, flow: ChangeFlow) -> list[str]:
    """Make the sentinel change, wait until every client has it, count.

    Return the changes made, in order, the sentinel last."""
    sentinel = f"{flow.prefix}-end"
    admin.add_group(sentinel)
    resuming.wait_for_object(sentinel)
    expected = [*flow.made, sentinel]
    assert_every_change_received(resuming.clients, expected, flow.prefix)
    return expected


def report(what: str, expected: Sequence[str], clients: Sequence[ResumingClient]) -> None:
    print(f"{what}: {len(expected)} changes made (the sentinel included)")
    for client in clients:
        print(f"  {client.summary()}")


def disconnected(clients: Sequence[ResumingClient]) -> list[ResumingClient]:
    """The clients whose first connection ended (the others have only that one)."""
    return [client for client in clients if len(client.conversations) > 1]


def short(replica: str) -> str:
    return replica[:12]


def test_broadcaster_killed_while_changes_flow(
    stack: Stack,
    admin: AdminSession,
    make_person: PersonFactory,
    resuming: ResumingClients,
    suffix: str,
) -> None:
    """A broadcaster SIGKILLed while a change is made every quarter second:
    exactly its clients (chosen from the metrics so that it has some, on both
    addresses) lose their connection; each reconnects with a fresh token and
    its last id, is welcomed with recovered true, and ends with every change
    exactly once, in order, as do the clients of the other replicas, which
    stay connected throughout."""
    viewer = make_person("viewer", VIEW_GROUP)
    try:
        counts = spread_clients(stack, resuming, viewer)
        victim = max(counts, key=counts.__getitem__)
        with ChangeFlow(admin, new_prefix("killed", suffix)) as flow:
            flow.wait_made(BEFORE)
            stack.kill(victim)
            killed_after = len(flow.made)
            flow.wait_made(killed_after + AFTER)
        expected = finish(admin, resuming, flow)
        report(
            f"kill {short(victim)} after {killed_after} changes; clients per replica "
            f"{ {short(r): n for r, n in counts.items()} }",
            expected,
            resuming.clients,
        )
        moved = disconnected(resuming.clients)
        assert len(moved) == counts[victim], (
            f"{short(victim)} had {counts[victim]} clients; disconnected: "
            f"{[client.summary() for client in moved]}"
        )
    finally:
        resuming.stop()
        stack.restore()


@pytest.mark.parametrize("shutdown", ["scale", "restart"])
def test_graceful_shutdown_while_changes_flow(
    stack: Stack,
    admin: AdminSession,
    make_person: PersonFactory,
    resuming: ResumingClients,
    suffix: str,
    shutdown: str,
) -> None:
    """Scaling down by one broadcaster, or restarting one, while changes flow:
    exactly the clients of the replica that goes are closed, each with a
    position message and then 1001; each resumes from that position's id,
    is welcomed with recovered true, and ends with every change exactly
    once, in order, as do the other clients, which stay connected. The
    stack has its replicas back afterwards."""
    if shutdown == "scale" and stack.replicas < 2:
        pytest.skip("scaling down needs two broadcasters at least")
    viewer = make_person("viewer", VIEW_GROUP)
    try:
        counts = spread_clients(stack, resuming, viewer)
        with ChangeFlow(admin, new_prefix(shutdown, suffix)) as flow:
            flow.wait_made(BEFORE)
            if shutdown == "scale":
                stack.scale(stack.replicas - 1)
                gone = set(counts) - set(stack.broadcaster_ids())
            else:
                gone = {max(counts, key=counts.__getitem__)}
                stack.restart(*gone)
            flow.wait_made(len(flow.made) + AFTER)
        expected = finish(admin, resuming, flow)
        report(
            f"{shutdown}: {sorted(map(short, gone))} went; clients per replica "
            f"{ {short(r): n for r, n in counts.items()} }",
            expected,
            resuming.clients,
        )
        moved = disconnected(resuming.clients)
        assert len(moved) == sum(counts[replica] for replica in gone), (
            f"disconnected: {[client.summary() for client in moved]}"
        )
        for client in moved:
            conversations = client.conversations
            for ended, following in itertools.pairwise(conversations):
                close = ended.close
                assert close is not None and close.code == 1001, (
                    f"{client.name}: a connection {ended.describe_end()}"
                )
                if ended.welcome is None:
                    continue  # closed before it was welcomed: nothing to resume yet
                last = ended.messages[-1] if ended.messages else ended.welcome
                assert last.get("type") == "position", (
                    f"{client.name}: before the 1001 came {last}, not a position"
                )
                assert following.sent_last_id == last["id"], (
                    f"{client.name} resumed from {following.sent_last_id}, not {last['id']}"
                )
    finally:
        resuming.stop()
        stack.restore()


def test_connection_cut_without_close_frame(
    stack: Stack,
    admin: AdminSession,
    make_person: PersonFactory,
    resuming: ResumingClients,
    suffix: str,
) -> None:
    """While changes flow, the TCP connections of two clients (one on each
    address) are cut as a network failure would: the client gets a reset,
    the broadcaster neither a close frame nor a FIN, and goes on sending into
    the dead connection (what it sends there is counted, never delivered).
    Each cut client reconnects on its own and resumes, recovered true; like
    the clients not cut, which stay connected, it ends with every change
    exactly once, in order."""
    viewer = make_person("viewer", VIEW_GROUP)
    with cutting_proxies(*stack.websocket_urls) as proxies:
        cut = [resuming.open(viewer, proxy.url) for proxy in proxies]
        for url in stack.websocket_urls:  # and clients that are not cut
            resuming.open(viewer, url)
        stack.wait_for_connections(len(resuming.clients))
        resuming.wait_welcomed()
        with ChangeFlow(admin, new_prefix("cut", suffix)) as flow:
            flow.wait_made(BEFORE)
            assert [proxy.cut() for proxy in proxies] == [1] * len(proxies)
            cut_after = len(flow.made)
            flow.wait_made(cut_after + AFTER)
        expected = finish(admin, resuming, flow)
        dropped = [proxy.dropped for proxy in proxies]
        resuming.stop()
    report(
        f"cut after {cut_after} changes; bytes sent into the cut connections: {dropped}",
        expected,
        resuming.clients,
    )
    assert disconnected(resuming.clients) == cut
    for client in cut:
        first = client.conversations[0]
        assert first.describe_end() == "broken (no close frame)", f"{client.name}: {first}"
        assert client.reconnects >= 1, client.summary()
    assert all(dropped), f"the broadcasters sent nothing to a cut connection: {dropped}"


@pytest.mark.parametrize("outage", ["restart", "kill"])
def test_redis_outage_while_changes_flow(
    stack: Stack,
    admin: AdminSession,
    make_person: PersonFactory,
    resuming: ResumingClients,
    suffix: str,
    outage: str,
) -> None:
    """Redis restarted, or SIGKILLed and started again (empty either way),
    while changes flow: the admin's saves during the outage succeed (some are
    made while the stack command is at it), and nothing committed before,
    during or after the outage is lost. Clients connected throughout, on
    both addresses, and one that left before the outage and comes back once
    Redis answers, with its last id (welcomed with recovered true), each end
    with every change exactly once, in order."""
    viewer = make_person("viewer", VIEW_GROUP)
    try:
        for url in stack.websocket_urls:
            resuming.open(viewer, url)
            resuming.open(viewer, url)
        stack.wait_for_connections(len(resuming.clients))
        resuming.wait_welcomed()
        away = resuming.clients[-1]
        refills = "relay_refills_total"
        before = stack.relay_metrics().get(refills)
        with ChangeFlow(admin, new_prefix(f"redis-{outage}", suffix)) as flow:
            flow.wait_made(BEFORE)
            away.stop()  # a normal close, its last id kept
            started = len(flow.made)
            stack.redis(outage)
            during = flow.made[started:]
            away.start()
            flow.wait_made(len(flow.made) + AFTER)
        expected = finish(admin, resuming, flow)
        after = stack.relay_metrics().get(refills)
        report(
            f"redis {outage}: {len(during)} changes committed while it ran "
            f"({during[0] if during else ''} … {during[-1] if during else ''}); "
            f"{refills} {before} -> {after}",
            expected,
            resuming.clients,
        )
        assert during, f"no admin save was committed while `redis {outage}` ran"
        assert away.reconnects >= 1, away.summary()
    finally:
        resuming.stop()
        stack.restore()


def test_how_to_protocol_is_unchanged(
    stack: Stack,
    admin: AdminSession,
    make_person: PersonFactory,
    resuming: ResumingClients,
    suffix: str,
) -> None:
    """Clients that send the bare token, as in the how-to (websockets' own
    client on both addresses, and ``python -m websockets`` on the direct
    port), receive every change as an event with its id, the same id the
    resuming clients get for it, and no control message: no welcome, no
    position."""
    viewer = make_person("viewer", VIEW_GROUP)
    with contextlib.ExitStack() as exits:
        terminal = exits.enter_context(interactive_client(stack.ws_direct_url))
        wait_until(terminal.output, lambda text: "Connected to" in text, "python -m websockets")
        terminal.type(viewer.token()["token"])
        bare = [exits.enter_context(authenticated(viewer, url)) for url in stack.websocket_urls]
        for url in stack.websocket_urls:
            resuming.open(viewer, url)
        stack.wait_for_connections(len(bare) + 1 + len(resuming.clients))
        resuming.wait_welcomed()

        prefix = new_prefix("how-to", suffix)
        expected = [f"{prefix}-{number:03d}" for number in range(1, 4)] + [f"{prefix}-end"]
        for name in expected:
            admin.add_group(name)
        resuming.wait_for_object(expected[-1])
        assert_every_change_received(resuming.clients, expected, prefix)
        ids = {event["object"]: event["id"] for event in resuming.clients[0].events()}

        for websocket in bare:
            received = receive_until(websocket, lambda event: event.get("object") == expected[-1])
            assert [event["object"] for event in received] == expected
            assert [event["id"] for event in received] == [ids[name] for name in expected]
            assert not [event for event in received if "type" in event]
        wait_until(
            terminal.received,
            lambda messages: any(m.get("object") == expected[-1] for m in messages),
            f"python -m websockets to print {expected[-1]!r}",
        )
        printed = terminal.received()
    assert [message.get("object") for message in printed] == expected, terminal.output()
    assert [message["id"] for message in printed] == [ids[name] for name in expected]
