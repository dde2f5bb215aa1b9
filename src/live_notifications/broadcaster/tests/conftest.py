"""Fixtures of the broadcaster's tests (the servers' are in the root conftest.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
import redis

from tests.servers import BroadcasterProcess, RedisServer


@pytest.fixture
def broadcaster(start_broadcaster: Callable[..., BroadcasterProcess]) -> BroadcasterProcess:
    return start_broadcaster()


@pytest.fixture
def redis_client(redis_server: RedisServer) -> Iterator[redis.Redis]:
    """A client of the tests' Redis, where the log is."""
    client = redis.Redis.from_url(redis_server.url)
    yield client
    client.close()
