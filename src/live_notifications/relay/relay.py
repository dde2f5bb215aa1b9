"""The loop that moves events from the outbox to the Redis event log."""

from __future__ import annotations

import logging
import random
import threading
import time

import redis
from django.db import DatabaseError, connection
from redis.exceptions import RedisError

from live_notifications.shared.eventlog import Position

from . import outbox, stream
from .config import Config
from .metrics import Metrics

logger = logging.getLogger(__name__)

#: Rows assigned and appended per round trip.
BATCH = 500
#: Seconds between looks at the outbox and at Redis when no NOTIFY comes:
#: also how soon a Redis that lost its data is refilled.
POLL_SECONDS = 1.0
#: Seconds between trims of the outbox.
TRIM_SECONDS = 10.0
#: How often a standby relay checks whether it can lead.
STANDBY_SECONDS = 2.0


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class Relay:
    """Relays until stopped, surviving PostgreSQL and Redis outages.

    One relay leads at a time (a PostgreSQL advisory lock); others stand by
    and take over when its connection goes. After any failure the relay
    starts over from what PostgreSQL and Redis hold, so nothing committed is
    skipped and nothing is appended twice.
    """

    def __init__(self, config: Config, metrics: Metrics | None = None) -> None:
        self.config = config
        self.metrics = metrics or Metrics()
        #: Both PostgreSQL and Redis answered on the last try.
        self.ready = False
        #: This relay holds the leader's lock.
        self.leader = False

    def run(
        self, stop: threading.Event, *, first_retry: float = 0.5, last_retry: float = 10.0
    ) -> None:
        """Relay until ``stop`` is set."""
        retry = first_retry
        while not stop.is_set():
            try:
                self._connected(stop)
                retry = first_retry
            except (DatabaseError, RedisError, OSError) as exc:
                self.metrics.errors += 1
                delay = retry * random.uniform(0.5, 1.0)  # noqa: S311 - jitter, not crypto
                logger.warning("event=relay_error retry_in=%.1fs error=%r", delay, str(exc))
                stop.wait(delay)
                retry = min(retry * 2, last_retry)

    def _connected(self, stop: threading.Event) -> None:
        client = redis.Redis.from_url(
            self.config.redis_url, socket_timeout=5, socket_connect_timeout=5
        )
        try:
            client.ping()
            outbox.check()
            self.ready = True
            while not outbox.try_lead():
                if stop.wait(STANDBY_SECONDS):
                    return
                client.ping()
                outbox.check()
            self.leader = True
            logger.info("event=leading")
            outbox.listen()
            self._lead(client, outbox.epoch(), stop)
        finally:
            self.ready = self.leader = False
            client.close()
            connection.close()  # also releases the leader's lock

    def _lead(self, client: redis.Redis, epoch: str, stop: threading.Event) -> None:
        declared = False
        next_trim = 0.0
        while not stop.is_set():
            head = stream.head(client)
            if head is None:
                head = self._refill(client, epoch)
                declared = False
            if not declared or not stream.declared(client):
                stream.declare(client, epoch)
                declared = True
            if self._relay(client, epoch, head):
                continue  # more may be waiting: no pause
            if time.monotonic() >= next_trim:
                self.metrics.rows_trimmed += outbox.trim(self.config.retention, now_ms=now_ms())
                next_trim = time.monotonic() + TRIM_SECONDS
            outbox.wait(POLL_SECONDS)

    def _refill(self, client: redis.Redis, epoch: str) -> Position | None:
        rows = outbox.newest(self.config.retention.max_events + 1)
        if not rows:
            return None
        stream.refill(client, epoch, rows, retention=self.config.retention, now_ms=now_ms())
        self.metrics.refills += 1
        logger.warning(
            "event=log_refilled events=%d from=%s to=%s",
            len(rows),
            rows[0].position,
            rows[-1].position,
        )
        return rows[-1].position

    def _relay(self, client: redis.Redis, epoch: str, head: Position | None) -> bool:
        """Append the rows past ``head``, assigning positions first. Return whether any."""
        outbox.assign(after=head, now_ms=now_ms(), limit=BATCH)
        rows = outbox.after(head, limit=BATCH)
        if not rows:
            return False
        stream.append(client, epoch, rows, retention=self.config.retention, now_ms=now_ms())
        self.metrics.events_relayed += len(rows)
        self.metrics.lag_seconds = max(0.0, time.time() - rows[0].created)
        return True
