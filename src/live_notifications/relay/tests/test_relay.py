"""The relay against real PostgreSQL and Redis: nothing committed is lost or doubled."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator

import pytest
import redis
from redis.client import PubSub

from live_notifications import events as app_events
from live_notifications.models import OutboxEvent
from live_notifications.publishing import publish
from live_notifications.relay.config import Config
from live_notifications.shared import prometheus
from live_notifications.shared.environment import ConfigurationError
from live_notifications.shared.eventlog import EPOCH_KEY, STREAM, Position, parse_event_id
from live_notifications.shared.events import CHANNEL, Event
from tests.servers import RedisServer, RelayProcess, http_get, http_status, wait_until

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def client(redis_server: RedisServer) -> Iterator[redis.Redis]:
    with redis.Redis.from_url(redis_server.url) as client:
        yield client


def event(name: str) -> Event:
    return Event(
        model="group",
        object=name,
        message="Added.",
        timestamp="2026-11-21T14:00:00+00:00",
        user="admin",
        content_type_id=3,
        object_id="1",
        action="added",
    )


def publish_all(*names: str) -> None:
    for name in names:
        publish(event(name))


def log(client: redis.Redis) -> list[tuple[str, dict[str, object]]]:
    """The stream's entries: (entry id, message)."""
    return [
        (entry_id.decode(), json.loads(fields[b"message"]))
        for entry_id, fields in client.xrange(STREAM)
    ]


def wait_for_log(client: redis.Redis, count: int) -> list[tuple[str, dict[str, object]]]:
    wait_until(
        lambda: client.exists(STREAM) and client.xlen(STREAM) >= count, f"{count} in the log"
    )
    return log(client)


def assert_exactly(entries: list[tuple[str, dict[str, object]]], names: list[str]) -> None:
    """The log holds exactly ``names``, in order, each with the id of its entry."""
    assert [message["object"] for _, message in entries] == names
    for entry_id, message in entries:
        parsed = parse_event_id(message["id"])
        assert parsed is not None and str(parsed[1]) == entry_id, (entry_id, message)
    positions = [Position.parse(entry_id) for entry_id, _ in entries]
    assert positions == sorted(set(positions))


@contextlib.contextmanager
def subscribed(client: redis.Redis) -> Iterator[PubSub]:
    """Subscribed to the how-to's channel, as ``redis-cli SUBSCRIBE events`` is."""
    with client.pubsub() as pubsub:
        pubsub.subscribe(CHANNEL)
        assert pubsub.get_message(timeout=5)["type"] == "subscribe"  # type: ignore[index]
        yield pubsub


def first_message(pubsub: PubSub) -> list[dict[str, object]]:
    """Wait for the channel's next message; return it, parsed, in a list."""
    messages: list[dict[str, object]] = []

    def received() -> bool:
        message = pubsub.get_message(timeout=0.1)
        if message is not None:
            messages.append(json.loads(message["data"]))
        return bool(messages)

    wait_until(received, "a message on the channel")
    return messages


def test_committed_events_reach_the_log_with_their_ids(
    relay: RelayProcess, client: redis.Redis
) -> None:
    publish_all("a", "b", "c")
    entries = wait_for_log(client, 3)
    assert_exactly(entries, ["a", "b", "c"])
    assert client.get(EPOCH_KEY) is not None
    # The outbox rows keep the positions they were given.
    rows = OutboxEvent.objects.order_by("id").values_list("position_ms", "position_seq")
    assert [f"{ms}-{seq}" for ms, seq in rows] == [entry_id for entry_id, _ in entries]
    assert relay.metrics()["relay_events_relayed_total"] == 3


def test_the_how_to_channel_still_shows_every_event(
    relay: RelayProcess, client: redis.Redis
) -> None:
    with subscribed(client) as pubsub:
        publish_all("seen by redis-cli")
        messages = first_message(pubsub)
    [(_, logged)] = wait_for_log(client, 1)
    assert messages == [logged]


def test_an_app_events_audience_is_kept_apart_and_off_the_how_to_channel(
    relay: RelayProcess, client: redis.Redis
) -> None:
    """Clients never see an audience; the how-to's channel shows admin changes only
    (a how-to server reading it would take an app event for a broken one)."""
    with subscribed(client) as pubsub:
        app_events.publish("ticket.assigned", {"ticket": 7}, users=[7], groups=[1])
        publish_all("admin change")
        wait_for_log(client, 2)
        messages = first_message(pubsub)
    (_, app_fields), (_, admin_fields) = client.xrange(STREAM)
    assert set(app_fields) == {b"message", b"audience"}
    assert set(json.loads(app_fields[b"message"])) == {"event", "data", "timestamp", "id"}
    assert json.loads(app_fields[b"audience"]) == {"users": [7], "groups": [1]}
    assert set(admin_fields) == {b"message"}
    assert [m["object"] for m in messages] == ["admin change"]
    # Refilled from PostgreSQL, the entries are the same.
    before = client.xrange(STREAM)
    client.flushall()
    wait_until(lambda: client.exists(STREAM) and client.xlen(STREAM) == 2, "the refill")
    assert client.xrange(STREAM) == before


def test_events_committed_while_redis_is_down_arrive_once_it_is_back(
    relay: RelayProcess, client: redis.Redis, redis_server: RedisServer
) -> None:
    publish_all("before")
    wait_for_log(client, 1)
    with redis_server.down():
        wait_until(lambda: http_status(f"{relay.http}/readyz") == 503, "the relay to notice")
        publish_all("during 1", "during 2")  # commits: PostgreSQL alone is needed
    # The tests' Redis keeps nothing: it comes back empty and is refilled.
    assert_exactly(wait_for_log(client, 3), ["before", "during 1", "during 2"])
    assert relay.metrics()["relay_refills_total"] == 1


def test_a_restarted_relay_appends_nothing_twice(
    start_relay: Callable[..., RelayProcess], client: redis.Redis
) -> None:
    first = start_relay()
    publish_all("one", "two")
    wait_for_log(client, 2)
    first.kill()
    publish_all("three")  # committed while no relay runs
    start_relay()
    publish_all("four")
    assert_exactly(wait_for_log(client, 4), ["one", "two", "three", "four"])


def test_rows_assigned_but_not_appended_are_appended_after_a_crash(
    start_relay: Callable[..., RelayProcess], client: redis.Redis
) -> None:
    """A relay that died between giving positions and writing to Redis: the
    next one appends those rows with the positions they have, once."""
    relay = start_relay()
    publish_all("one")
    wait_for_log(client, 1)
    relay.kill()
    publish_all("two", "three")
    head = Position.parse(client.xinfo_stream(STREAM)["last-generated-id"])
    for offset, row in enumerate(OutboxEvent.objects.filter(position_ms=None).order_by("id")):
        row.position_ms, row.position_seq = head.ms + 1 + offset, 0
        row.save()
    start_relay()
    assert_exactly(wait_for_log(client, 3), ["one", "two", "three"])


def test_one_relay_leads_and_a_standby_takes_over(
    start_relay: Callable[..., RelayProcess], client: redis.Redis
) -> None:
    first, second = start_relay(), start_relay()
    wait_until(
        lambda: first.metrics()["relay_leader"] + second.metrics()["relay_leader"] == 1,
        "one leader",
    )
    leader, standby = (first, second) if first.metrics()["relay_leader"] else (second, first)
    publish_all("from the leader")
    wait_for_log(client, 1)
    leader.kill()
    wait_until(lambda: standby.metrics()["relay_leader"] == 1, "the standby to lead")
    publish_all("from the standby")
    assert_exactly(wait_for_log(client, 2), ["from the leader", "from the standby"])


def test_the_outbox_is_trimmed_to_the_history(
    start_relay: Callable[..., RelayProcess], client: redis.Redis
) -> None:
    start_relay(EVENT_HISTORY_MAX_EVENTS="5")
    names = [f"event {i}" for i in range(12)]
    publish_all(*names)
    wait_for_log(client, 12)
    # The window (5) and the newest row before it, so that a refill knows the head.
    wait_until(lambda: OutboxEvent.objects.count() == 6, "the outbox to be trimmed")
    kept = [Event.decode(row.payload).object for row in OutboxEvent.objects.order_by("id")]
    assert kept == names[-6:]


def test_a_log_redis_lost_is_refilled_with_the_same_ids(
    relay: RelayProcess, client: redis.Redis
) -> None:
    publish_all("a", "b")
    before = wait_for_log(client, 2)
    client.flushall()  # as a Redis restarted without its data
    after = wait_for_log(client, 2)
    assert after == before
    assert client.get(EPOCH_KEY) is not None
    info = client.xinfo_stream(STREAM)
    # Counted as if one entry had come before: readers won't take the refilled
    # stream for the whole history.
    assert info["entries-added"] == info["length"] + 1
    publish_all("c")
    assert_exactly(wait_for_log(client, 3), ["a", "b", "c"])


def test_sigterm_stops_the_relay(relay: RelayProcess) -> None:
    assert relay.terminate() == 0
    assert "event=stopped" in relay.output()


def test_health_and_metrics_ports(relay: RelayProcess) -> None:
    assert http_get(f"{relay.http}/healthz")[:2] == (200, "ok\n")
    assert http_get(f"{relay.http}/readyz")[:2] == (200, "ready\n")
    assert http_get(f"{relay.http}/metrics")[:2] == (404, "not found\n")

    status, text, content_type = http_get(f"{relay.metrics_http}/metrics?x=1")
    assert (status, content_type) == (200, prometheus.CONTENT_TYPE)
    assert "relay_ready 1" in text.splitlines()
    for path in ("/healthz", "/readyz", "/"):
        assert http_get(f"{relay.metrics_http}{path}")[:2] == (404, "not found\n")


def test_configuration() -> None:
    config = Config.from_env({"RELAY_PORT": "9001", "EVENT_HISTORY_SECONDS": "60"})
    assert (config.port, config.retention.seconds, config.retention.max_events) == (
        9001,
        60.0,
        10_000,
    )
    assert config.metrics_port == 9000
    assert Config.from_env({"RELAY_METRICS_PORT": "9100"}).metrics_port == 9100


def test_metrics_port_differs_from_the_public_one() -> None:
    with pytest.raises(ConfigurationError, match="RELAY_METRICS_PORT must differ from RELAY_PORT"):
        Config.from_env({"RELAY_PORT": "9000"})


def test_redis_url_is_checked() -> None:
    with pytest.raises(ConfigurationError, match=r"REDIS_URL.*ssl_ca_cert"):
        Config.from_env({"REDIS_URL": "rediss://redis:6380/0?ssl_ca_cert=/ca.crt"})
