"""The broadcaster's configuration, read once from the environment.

Every variable is listed in docs/reference/environment.md (a test keeps them equal).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from live_notifications.shared import environment, redisurl
from live_notifications.shared.environment import ConfigurationError
from live_notifications.shared.eventlog import Retention

from .addresses import Networks, networks

#: Seconds of BROADCASTER_WRITE_INTERVAL beyond which events would be late, not gathered.
MAX_WRITE_INTERVAL = 1.0


@dataclasses.dataclass(frozen=True, kw_only=True)
class Config:
    #: Interface and port for WebSocket connections and the HTTP checks.
    host: str = "0.0.0.0"  # noqa: S104 - a container listens on all interfaces
    port: int = 8888
    #: Port of /metrics, on the same interface: never routed by the edge.
    metrics_port: int = 9000
    #: Redis holding the event log.
    redis_url: str = "redis://localhost:6379/0"
    #: Seconds a client has to send its token after connecting.
    auth_timeout: float = 5.0
    #: Connections that haven't authenticated yet, beyond which new ones are
    #: refused with HTTP 503: bounds what anonymous clients can hold (about
    #: 6 KiB each, and a request under 16 KiB). About what a replica checks
    #: within auth_timeout in a reconnect storm of users it doesn't know:
    #: 10,000 such clients, 2,000 at once, took 5.9 s and none refused
    #: (1,140 refused at 1,000).
    max_pending: int = 5000
    #: Connections, pending and authenticated, at which the broadcaster is
    #: full: /readyz answers 503 and new handshakes are refused with 503.
    max_connections: int = 10_000
    #: On SIGTERM, connections are closed over this many seconds rather than
    #: all at once, so that clients don't reconnect to the other replicas in
    #: one burst. The process exits within drain_seconds + close_timeout + 1.
    drain_seconds: float = 5.0
    #: Seconds to wait for a client to acknowledge a close before dropping it.
    close_timeout: float = 5.0
    #: Threads running Django ORM calls (each may hold a database connection).
    orm_threads: int = 4
    #: A client whose unsent data exceeds this many bytes is too slow to keep
    #: up: it is disconnected rather than allowed to grow memory without bound.
    slow_client_buffer: int = 256 * 1024
    #: Seconds between keepalive pings; a client that doesn't answer within
    #: the same delay is disconnected.
    ping_interval: float = 20.0
    #: Seconds between checks that Redis still answers while no event arrives.
    redis_check_interval: float = 5.0
    #: Resuming clients are told the log's position at least this often
    #: while it moves, so that those who see few events resume cheaply.
    position_seconds: float = 30.0
    #: Shortest time between two writes of live events, in seconds
    #: (BROADCASTER_WRITE_INTERVAL, in milliseconds; 0: none). Events read
    #: sooner wait, and go with the next ones as one write per client: under
    #: load, fewer writes and so less CPU per delivery, each event at most
    #: that much later; when events are rare, none waits.
    write_interval: float = 0.05
    #: How much history is kept for resuming clients (EVENT_HISTORY_*).
    retention: Retention = dataclasses.field(default_factory=Retention)
    #: Tokens checked together against the database, at most: one thread
    #: call and three queries however many (.identities).
    auth_batch: int = 500
    #: Users whose valid token was read recently, kept so that they
    #: reconnect with no query (least recently used dropped); 0: none.
    auth_cache_size: int = 10_000
    #: Seconds a user is kept at most: what the event log doesn't announce
    #: (``QuerySet.update()``, raw SQL) reaches new connections within this; 0: none.
    auth_cache_seconds: float = 60.0
    #: Seconds between two reads of the user tables that say whether the
    #: database lets this process authenticate anyone (.database).
    database_check_interval: float = 10.0
    #: Proxies whose X-Forwarded-For is believed (BROADCASTER_TRUSTED_PROXIES,
    #: addresses or CIDRs): a client behind one is logged with the address
    #: that proxy appended, anyone else with its socket's. None by default.
    trusted_proxies: Networks = ()

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Config:
        """Build the configuration from ``BROADCASTER_*``, ``EVENT_HISTORY_*`` and ``REDIS_URL``."""
        config = cls(
            host=environment.string("BROADCASTER_HOST", cls.host, env=env),
            port=environment.integer("BROADCASTER_PORT", cls.port, minimum=1, env=env),
            metrics_port=environment.integer(
                "BROADCASTER_METRICS_PORT", cls.metrics_port, minimum=1, env=env
            ),
            redis_url=redisurl.validate(environment.string("REDIS_URL", cls.redis_url, env=env)),
            auth_timeout=environment.number(
                "BROADCASTER_AUTH_TIMEOUT", cls.auth_timeout, minimum=0.1, env=env
            ),
            max_pending=environment.integer(
                "BROADCASTER_MAX_PENDING", cls.max_pending, minimum=1, env=env
            ),
            max_connections=environment.integer(
                "BROADCASTER_MAX_CONNECTIONS", cls.max_connections, minimum=1, env=env
            ),
            drain_seconds=environment.number(
                "BROADCASTER_DRAIN_SECONDS", cls.drain_seconds, env=env
            ),
            close_timeout=environment.number(
                "BROADCASTER_CLOSE_TIMEOUT", cls.close_timeout, minimum=0.1, env=env
            ),
            orm_threads=environment.integer(
                "BROADCASTER_ORM_THREADS", cls.orm_threads, minimum=1, env=env
            ),
            slow_client_buffer=environment.integer(
                "BROADCASTER_SLOW_CLIENT_BUFFER", cls.slow_client_buffer, minimum=1024, env=env
            ),
            ping_interval=environment.number(
                "BROADCASTER_PING_INTERVAL", cls.ping_interval, minimum=1, env=env
            ),
            redis_check_interval=environment.number(
                "BROADCASTER_REDIS_CHECK_INTERVAL", cls.redis_check_interval, minimum=0.1, env=env
            ),
            position_seconds=environment.number(
                "BROADCASTER_POSITION_SECONDS", cls.position_seconds, minimum=0.1, env=env
            ),
            write_interval=environment.number(
                "BROADCASTER_WRITE_INTERVAL", cls.write_interval * 1000, env=env
            )
            / 1000,
            retention=Retention.from_env(env),
            auth_batch=environment.integer(
                "BROADCASTER_AUTH_BATCH", cls.auth_batch, minimum=1, env=env
            ),
            auth_cache_size=environment.integer(
                "BROADCASTER_AUTH_CACHE_SIZE", cls.auth_cache_size, env=env
            ),
            auth_cache_seconds=environment.number(
                "BROADCASTER_AUTH_CACHE_SECONDS", cls.auth_cache_seconds, env=env
            ),
            database_check_interval=environment.number(
                "BROADCASTER_DATABASE_CHECK_INTERVAL",
                cls.database_check_interval,
                minimum=0.1,
                env=env,
            ),
            trusted_proxies=_trusted_proxies(env),
        )
        if config.write_interval > MAX_WRITE_INTERVAL:
            raise ConfigurationError(
                f"BROADCASTER_WRITE_INTERVAL must be at most {MAX_WRITE_INTERVAL * 1000:g} (ms),"
                f" got {config.write_interval * 1000:g}"
            )
        if config.metrics_port == config.port:
            raise ConfigurationError(
                f"BROADCASTER_METRICS_PORT must differ from BROADCASTER_PORT ({config.port})"
            )
        return config


def _trusted_proxies(env: Mapping[str, str] | None) -> Networks:
    try:
        return networks(environment.string_list("BROADCASTER_TRUSTED_PROXIES", "", env=env))
    except ValueError as error:
        raise ConfigurationError(f"BROADCASTER_TRUSTED_PROXIES: {error}") from None
