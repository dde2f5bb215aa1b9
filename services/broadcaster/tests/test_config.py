from __future__ import annotations

import pytest

from broadcaster.config import Config
from shared.environment import ConfigurationError


def test_defaults() -> None:
    config = Config.from_env({})
    assert (config.port, config.auth_timeout, config.max_pending) == (8888, 5.0, 1000)


def test_from_environment() -> None:
    config = Config.from_env(
        {
            "BROADCASTER_PORT": "9000",
            "REDIS_URL": "redis://redis:6379/1",
            "BROADCASTER_DRAIN_SECONDS": "2.5",
        }
    )
    assert (config.port, config.redis_url, config.drain_seconds) == (
        9000,
        "redis://redis:6379/1",
        2.5,
    )


def test_bad_value_names_the_variable() -> None:
    with pytest.raises(ConfigurationError, match="BROADCASTER_PORT must be an integer"):
        Config.from_env({"BROADCASTER_PORT": "http"})
