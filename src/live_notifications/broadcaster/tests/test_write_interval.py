"""BROADCASTER_WRITE_INTERVAL: events read soon after a write wait for the next one.

Whatever else the broadcaster writes to a client must not overtake them: a
position, a close, the catch-up of a client that registers meanwhile. The
interval here is long (up to the maximum, one second): an event read less
than that after the previous write waits, which the
``broadcaster_events_waiting`` gauge shows, and the tests do what they test
while it does. None of them measures time.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.contrib.auth.models import Group
from websockets.sync.client import ClientConnection

from live_notifications.broadcaster.config import Config
from live_notifications.publishing import publish
from live_notifications.shared.environment import ConfigurationError
from live_notifications.shared.eventlog import Position, parse_event_id
from live_notifications.tokens import token_for
from tests.servers import BroadcasterProcess, wait_until

from .helpers import authenticated, closed, event_for, receive_message, resuming, user

pytestmark = pytest.mark.django_db(transaction=True)


def test_configuration() -> None:
    assert Config.from_env({}).write_interval == 0.05
    assert Config.from_env({"BROADCASTER_WRITE_INTERVAL": "25"}).write_interval == 0.025
    assert Config.from_env({"BROADCASTER_WRITE_INTERVAL": "0"}).write_interval == 0
    with pytest.raises(ConfigurationError, match="BROADCASTER_WRITE_INTERVAL must be at most 1000"):
        Config.from_env({"BROADCASTER_WRITE_INTERVAL": "1001"})
    with pytest.raises(ConfigurationError, match="BROADCASTER_WRITE_INTERVAL must be at least 0"):
        Config.from_env({"BROADCASTER_WRITE_INTERVAL": "-1"})


def waiting_after_a_write(
    broadcaster: BroadcasterProcess, client: ClientConnection, *names: str
) -> None:
    """Publish an event and receive it on ``client`` (a write), then ``names``
    in one transaction: they wait, as the gauge shows."""
    publish(event_for(Group, "written"))
    assert [m["object"] for m in messages_until(client, "written")][-1] == "written"
    publish(*(event_for(Group, name) for name in names))
    wait_until(
        lambda: broadcaster.metrics()["broadcaster_events_waiting"] == len(names),
        "the events to wait for the interval",
    )


def place(message: dict[str, Any]) -> Position:
    parsed = parse_event_id(message["id"])
    assert parsed is not None, message
    return parsed[1]


def messages_until(client: ClientConnection, last: str) -> list[dict[str, Any]]:
    """Every message received up to the event whose object is ``last``."""
    received = [receive_message(client)]
    while received[-1].get("object") != last:
        received.append(receive_message(client))
    return received


@contextlib.contextmanager
def both_protocols(broadcaster: BroadcasterProcess) -> Iterator[list[ClientConnection]]:
    """A how-to client and a resuming one of a superuser, registered."""
    root = user("root", is_superuser=True)
    with (
        authenticated(broadcaster, token_for(root)) as how_to,
        resuming(broadcaster, token_for(root)) as (resumer, _),
    ):
        yield [how_to, resumer]


def test_positions_never_overtake_waiting_events(
    start_broadcaster: Callable[..., BroadcasterProcess],
) -> None:
    """Positions every 0.1 s, writes 0.2 s apart: a position sent before
    the events it passes would make a resuming client skip them."""
    broadcaster = start_broadcaster(
        BROADCASTER_WRITE_INTERVAL="200", BROADCASTER_POSITION_SECONDS="0.1"
    )
    names = [f"event {i}" for i in range(20)]
    with both_protocols(broadcaster) as (how_to, resumer):
        for name in names:
            publish(event_for(Group, name))  # one transaction each: read one by one
        assert [m["object"] for m in messages_until(how_to, names[-1])] == names
        received = messages_until(resumer, names[-1])
    assert [m["object"] for m in received if "type" not in m] == names
    places = [place(m) for m in received]
    assert places == sorted(places), received
    events = [place(m) for m in received if "type" not in m]
    assert len(set(events)) == len(events)


def test_a_client_registering_while_events_wait_gets_each_once(
    start_broadcaster: Callable[..., BroadcasterProcess],
) -> None:
    """It catches up through the waiting events itself: they must not be
    written to it again when the interval ends."""
    broadcaster = start_broadcaster(BROADCASTER_WRITE_INTERVAL="1000")
    root = user("root", is_superuser=True)
    with resuming(broadcaster, token_for(root)) as (first, _):
        publish(event_for(Group, "before"))
        last_id = messages_until(first, "before")[-1]["id"]
        waiting_after_a_write(broadcaster, first, "waiting")
        with resuming(broadcaster, token_for(root), last_id) as (newcomer, welcome):
            assert welcome["recovered"] is True
            publish(event_for(Group, "sentinel"))
            received = messages_until(newcomer, "sentinel")
            assert [m["object"] for m in received if "type" not in m] == [
                "written",
                "waiting",
                "sentinel",
            ]
        received = messages_until(first, "sentinel")
        assert [m["object"] for m in received if "type" not in m] == ["waiting", "sentinel"]


def test_sigterm_writes_waiting_events_before_the_position_and_1001(
    start_broadcaster: Callable[..., BroadcasterProcess],
) -> None:
    broadcaster = start_broadcaster(BROADCASTER_WRITE_INTERVAL="1000")
    with both_protocols(broadcaster) as (how_to, resumer):
        waiting_after_a_write(broadcaster, how_to, "waiting")
        assert broadcaster.terminate() == 0
        assert receive_message(how_to)["object"] == "waiting"
        assert closed(how_to) == (1001, "server shutting down")
        messages_until(resumer, "written")
        event, told = receive_message(resumer), receive_message(resumer)
        assert event["object"] == "waiting"
        assert told == {"type": "position", "id": event["id"]}
        assert closed(resumer) == (1001, "server shutting down")


def test_a_revocation_after_waiting_events(
    start_broadcaster: Callable[..., BroadcasterProcess],
) -> None:
    """The revoked user gets the events read before the revocation, then 1008."""
    broadcaster = start_broadcaster(BROADCASTER_WRITE_INTERVAL="1000")
    alice = user("alice", "auth.view_group")
    with authenticated(broadcaster, token_for(alice)) as client:
        waiting_after_a_write(broadcaster, client, "one", "two")
        alice.is_active = False
        alice.save()  # revokes, in the log after the events
        assert [receive_message(client)["object"] for _ in range(2)] == ["one", "two"]
        assert closed(client) == (1008, "access revoked")


def test_event_delays_are_measured_from_the_log_to_the_write(
    start_broadcaster: Callable[..., BroadcasterProcess],
) -> None:
    """``broadcaster_event_delay_seconds``: one observation per live event,
    from its place in the log to its write. An event that waits for the
    interval is written after it was seen waiting and before the scrape
    after its receipt: its delay lies between those two times, less its
    place's."""
    broadcaster = start_broadcaster(BROADCASTER_WRITE_INTERVAL="1000")
    root = user("root", is_superuser=True)
    name = "broadcaster_event_delay_seconds"
    with authenticated(broadcaster, token_for(root)) as client:
        publish(event_for(Group, "written"))
        assert messages_until(client, "written")[-1]["object"] == "written"
        publish(event_for(Group, "waiting"))
        while True:  # bounded by the interval: the event is written within a second
            seen_waiting = time.time()  # before the scrape that finds it waiting
            before = broadcaster.metrics()
            if before["broadcaster_events_waiting"] == 1:
                break
            assert before[f"{name}_count"] == 1, "written before it was seen waiting"
        message = receive_message(client)
        # After a scrape: the event loop that answers it finished the write,
        # and timed it, before (the client may receive it before it is timed).
        after = broadcaster.metrics()
        scraped = time.time()
    assert message["object"] == "waiting"
    assert (before[f"{name}_count"], after[f"{name}_count"]) == (1, 2)
    placed = place(message).ms / 1000
    delay = after[f"{name}_sum"] - before[f"{name}_sum"]
    assert seen_waiting - placed <= delay <= scraped - placed, (seen_waiting, delay, scraped)
    # Cumulative buckets: the delay is counted from the first bound at or above it.
    buckets = {k: v for k, v in after.items() if k.startswith(f"{name}_bucket")}
    assert buckets[f'{name}_bucket{{le="+Inf"}}'] == 2
    for key, count in buckets.items():
        bound = float(key.partition('le="')[2].rstrip('"}'))
        assert count == sum(1 for d in (before[f"{name}_sum"], delay) if d <= bound), key
