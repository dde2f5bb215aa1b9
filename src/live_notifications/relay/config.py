"""The relay's configuration, read once from the environment.

Every variable is listed in docs/reference/environment.md (a test keeps them equal).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from live_notifications.shared import environment, redisurl
from live_notifications.shared.environment import ConfigurationError
from live_notifications.shared.eventlog import Retention


@dataclasses.dataclass(frozen=True, kw_only=True)
class Config:
    #: Interface and port of /healthz and /readyz.
    host: str = "0.0.0.0"  # noqa: S104 - a container listens on all interfaces
    port: int = 8001
    #: Port of /metrics, on the same interface.
    metrics_port: int = 9000
    #: Redis holding the event log.
    redis_url: str = "redis://localhost:6379/0"
    #: How much history to keep (EVENT_HISTORY_SECONDS, EVENT_HISTORY_MAX_EVENTS).
    retention: Retention = dataclasses.field(default_factory=Retention)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Config:
        """Build the configuration from ``RELAY_*``, ``REDIS_URL`` and ``EVENT_HISTORY_*``."""
        config = cls(
            host=environment.string("RELAY_HOST", cls.host, env=env),
            port=environment.integer("RELAY_PORT", cls.port, minimum=1, env=env),
            metrics_port=environment.integer(
                "RELAY_METRICS_PORT", cls.metrics_port, minimum=1, env=env
            ),
            redis_url=redisurl.validate(environment.string("REDIS_URL", cls.redis_url, env=env)),
            retention=Retention.from_env(env),
        )
        if config.metrics_port == config.port:
            raise ConfigurationError(
                f"RELAY_METRICS_PORT must differ from RELAY_PORT ({config.port})"
            )
        return config
