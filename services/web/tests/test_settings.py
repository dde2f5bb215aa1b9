"""Configuration from the environment: parsing, and failing fast."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.servers import PYTHONPATH, SERVICES


def load_settings(module: str, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "DATABASE_"))}
    return subprocess.run(
        [sys.executable, "-c", "import django; django.setup(); print('loaded')"],
        cwd=SERVICES,
        env={**base, "PYTHONPATH": PYTHONPATH, "DJANGO_SETTINGS_MODULE": module, **env},
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


def test_a_bad_database_option_stops_the_settings() -> None:
    result = load_settings(
        "web.settings.production",
        DJANGO_SECRET_KEY="x" * 50,
        DATABASE_URL="postgres://db/app?sslmode=verify",
    )
    assert result.returncode != 0
    assert "DATABASE_URL: sslmode must be one of" in result.stderr


def test_a_bad_redis_url_stops_the_settings() -> None:
    result = load_settings(
        "web.settings.production",
        DJANGO_SECRET_KEY="x" * 50,
        DATABASE_URL="postgres://db/app",
        REDIS_URL="redis://redis:6379/0?ssl_ca_certs=/ca.crt",
    )
    assert result.returncode != 0
    assert "REDIS_URL: TLS options (ssl_ca_certs) need rediss://" in result.stderr
