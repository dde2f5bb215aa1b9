from __future__ import annotations

import pytest

from live_notifications.broadcaster.config import Config
from live_notifications.shared.environment import ConfigurationError


def test_defaults() -> None:
    config = Config.from_env({})
    assert (config.port, config.auth_timeout, config.max_pending) == (8888, 5.0, 5000)
    assert (config.metrics_port, config.max_connections) == (9000, 10_000)


def test_from_environment() -> None:
    config = Config.from_env(
        {
            "BROADCASTER_PORT": "9000",
            "BROADCASTER_METRICS_PORT": "9100",
            "BROADCASTER_MAX_CONNECTIONS": "1",
            "REDIS_URL": "redis://redis:6379/1",
            "BROADCASTER_DRAIN_SECONDS": "2.5",
        }
    )
    assert (config.port, config.redis_url, config.drain_seconds) == (
        9000,
        "redis://redis:6379/1",
        2.5,
    )
    assert (config.metrics_port, config.max_connections) == (9100, 1)


def test_bad_value_names_the_variable() -> None:
    with pytest.raises(ConfigurationError, match="BROADCASTER_PORT must be an integer"):
        Config.from_env({"BROADCASTER_PORT": "http"})


def test_at_least_one_connection() -> None:
    with pytest.raises(ConfigurationError, match="BROADCASTER_MAX_CONNECTIONS must be at least 1"):
        Config.from_env({"BROADCASTER_MAX_CONNECTIONS": "0"})


def test_metrics_port_differs_from_the_public_one() -> None:
    with pytest.raises(
        ConfigurationError, match=r"BROADCASTER_METRICS_PORT must differ from BROADCASTER_PORT"
    ):
        Config.from_env({"BROADCASTER_PORT": "9000"})


def test_redis_url_is_checked() -> None:
    # A typo in a TLS option would otherwise connect without verifying the server.
    with pytest.raises(ConfigurationError, match=r"REDIS_URL.*ssl_ca_cert"):
        Config.from_env({"REDIS_URL": "rediss://redis:6380/0?ssl_ca_cert=/ca.crt"})


def test_authentication_batches_and_cache() -> None:
    config = Config.from_env({})
    assert (config.auth_batch, config.auth_cache_size, config.auth_cache_seconds) == (
        500,
        10_000,
        60.0,
    )
    config = Config.from_env(
        {
            "BROADCASTER_AUTH_BATCH": "50",
            "BROADCASTER_AUTH_CACHE_SIZE": "0",
            "BROADCASTER_AUTH_CACHE_SECONDS": "2.5",
        }
    )
    assert (config.auth_batch, config.auth_cache_size, config.auth_cache_seconds) == (50, 0, 2.5)
    with pytest.raises(ConfigurationError, match="BROADCASTER_AUTH_BATCH must be at least 1"):
        Config.from_env({"BROADCASTER_AUTH_BATCH": "0"})
