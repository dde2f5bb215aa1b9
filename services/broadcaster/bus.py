"""The subscription to the event channel in Redis, kept alive across outages."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable

import redis.asyncio
from redis.exceptions import RedisError

from shared.events import CHANNEL

from .metrics import Metrics

logger = logging.getLogger(__name__)


class EventBus:
    """Reads the event channel and hands each message to ``on_message``.

    When Redis goes away, the subscription is retried with jittered exponential
    backoff, forever; :attr:`subscribed` is false meanwhile. Redis Pub/Sub
    doesn't keep messages: events published while no subscription exists are
    not delivered.
    """

    def __init__(
        self,
        url: str,
        on_message: Callable[[bytes], None],
        *,
        metrics: Metrics,
        check_interval: float = 5.0,
        channel: str = CHANNEL,
        first_retry: float = 0.5,
        last_retry: float = 30.0,
    ) -> None:
        self.url = url
        self.on_message = on_message
        self.metrics = metrics
        self.check_interval = check_interval
        self.channel = channel
        self.first_retry = first_retry
        self.last_retry = last_retry
        #: True while Redis has confirmed the subscription.
        self.subscribed = False

    async def run(self) -> None:
        """Read events until cancelled."""
        retry = self.first_retry
        try:
            while True:
                try:
                    await self._subscribe_and_read()
                except (RedisError, OSError) as exc:
                    if self.subscribed:  # it worked until now: start the backoff over
                        logger.warning("event=bus_lost channel=%s error=%r", self.channel, str(exc))
                        retry = self.first_retry
                    self.subscribed = False
                    self.metrics.redis_reconnects += 1
                    delay = retry * random.uniform(0.5, 1.0)  # noqa: S311 - jitter, not crypto
                    logger.warning("event=bus_retry in=%.1fs error=%r", delay, str(exc))
                    await asyncio.sleep(delay)
                    retry = min(retry * 2, self.last_retry)
        finally:
            self.subscribed = False

    async def _subscribe_and_read(self) -> None:
        client = redis.asyncio.Redis.from_url(
            self.url, socket_connect_timeout=5, socket_keepalive=True
        )
        try:
            async with client.pubsub() as pubsub:
                await pubsub.subscribe(self.channel)
                awaiting_pong = False
                while True:
                    message = await pubsub.get_message(timeout=self.check_interval)
                    if message is None:
                        # Nothing for a while: make sure Redis is still there,
                        # since a silent network failure wouldn't raise.
                        if awaiting_pong:
                            raise ConnectionError("Redis did not answer PING")
                        await pubsub.ping()
                        awaiting_pong = True
                        continue
                    awaiting_pong = False
                    kind = message["type"]
                    if kind == "message":
                        try:
                            self.on_message(message["data"])
                        except Exception:  # a bug must not stop the next events
                            logger.exception("event=handler_error")
                    elif kind == "subscribe":
                        self.subscribed = True
                        logger.info("event=bus_subscribed channel=%s", self.channel)
        finally:
            await client.aclose()
