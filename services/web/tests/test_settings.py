"""Configuration from the environment: parsing, and failing fast."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from shared.environment import ConfigurationError
from testing import SERVICES
from web.settings.base import database_from_url


def test_database_url() -> None:
    assert database_from_url("postgres://app:s%40cret@db:5433/notifications") == {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": "notifications",
        "USER": "app",
        "PASSWORD": "s@cret",
        "HOST": "db",
        "PORT": "5433",
        "CONN_MAX_AGE": 60,
        "CONN_HEALTH_CHECKS": True,
    }


@pytest.mark.parametrize(
    ("url", "error"),
    [("mysql://db/app", "must start with postgres://"), ("postgres://db", "must name a database")],
)
def test_bad_database_url(url: str, error: str) -> None:
    with pytest.raises(ConfigurationError, match=error):
        database_from_url(url)


def load_settings(module: str, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "DATABASE_"))}
    return subprocess.run(
        [sys.executable, "-c", "import django; django.setup(); print('loaded')"],
        cwd=SERVICES,
        env={**base, "PYTHONPATH": str(SERVICES), "DJANGO_SETTINGS_MODULE": module, **env},
        capture_output=True,
        text=True,
    )


def test_production_requires_a_secret_key() -> None:
    result = load_settings("web.settings.production", DATABASE_URL="postgres://db/app")
    assert result.returncode != 0
    assert "DJANGO_SECRET_KEY must be set" in result.stderr


def test_production_requires_a_database() -> None:
    result = load_settings("web.settings.production", DJANGO_SECRET_KEY="x" * 50)
    assert result.returncode != 0
    assert "DATABASE_URL must be set" in result.stderr


def test_production_loads_with_both() -> None:
    result = load_settings(
        "web.settings.production", DJANGO_SECRET_KEY="x" * 50, DATABASE_URL="postgres://db/app"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "loaded"
