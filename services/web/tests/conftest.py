from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from shared.events import CHANNEL, Event
from testing import RedisServer

SENTINEL = b"sentinel: nothing else was published before this"


class Subscriber:
    """A real Redis subscriber to the event channel, as a broadcaster is."""

    def __init__(self, url: str) -> None:
        self.client = redis.Redis.from_url(url)
        self.pubsub = self.client.pubsub()
        self.pubsub.subscribe(CHANNEL)
        assert self._next_message()["type"] == "subscribe"

    def _next_message(self) -> dict[str, object]:
        for _ in range(300):  # 30 s
            message = self.pubsub.get_message(timeout=0.1)
            if message is not None:
                return message
        raise AssertionError("nothing published within 30 s")

    def next_raw(self) -> bytes:
        data = self._next_message()["data"]
        assert isinstance(data, bytes)
        return data

    def next(self) -> Event:
        return Event.decode(self.next_raw())

    def assert_nothing_more(self) -> None:
        """Publish a sentinel: the next message must be it, so nothing else came first."""
        self.client.publish(CHANNEL, SENTINEL)
        assert self.next_raw() == SENTINEL

    def close(self) -> None:
        self.pubsub.close()
        self.client.close()


@pytest.fixture
def events(redis_server: RedisServer) -> Iterator[Subscriber]:
    subscriber = Subscriber(redis_server.url)
    yield subscriber
    subscriber.close()
