"""``manage.py check`` names what is missing or wrong in the settings the app reads."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core import checks
from django.test import override_settings

from tests.servers import PYTHONPATH, ROOT


def ids() -> set[str]:
    return {message.id for message in checks.run_checks() if message.id}


def test_the_test_settings_pass() -> None:
    assert not {id_ for id_ in ids() if id_.startswith("live_notifications.")}


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        pytest.param({"LIVE_NOTIFICATIONS_TOKEN_SCOPE": ""}, "E001", id="no-scope"),
        pytest.param({"LIVE_NOTIFICATIONS_TOKEN_MAX_AGE": None}, "E002", id="no-lifetime"),
        pytest.param({"LIVE_NOTIFICATIONS_TOKEN_MAX_AGE": 86400}, "E002", id="a-day"),
        pytest.param({"LIVE_NOTIFICATIONS_TOKEN_MAX_AGE": 1}, "E002", id="a-second"),
        pytest.param({"CSRF_TRUSTED_ORIGINS": []}, "W003", id="no-origins"),
        pytest.param({"LIVE_NOTIFICATIONS_ALLOWED_ORIGINS": []}, "W003", id="none-allowed"),
        pytest.param({"SESAME_PRIMARY_KEY_FIELD": "username"}, "E004", id="not-by-pk"),
        pytest.param({"SESAME_MAX_AGE": None}, "E005", id="tokens-carry-no-date"),
        pytest.param(
            {"LIVE_NOTIFICATIONS_ALLOWED_ORIGINS": ["https://example.com/"]}, "E006", id="a-path"
        ),
        pytest.param({"LIVE_NOTIFICATIONS_ALLOWED_ORIGINS": ["example.com"]}, "E006", id="a-host"),
        pytest.param({"CSRF_TRUSTED_ORIGINS": ["https://*.example.com"]}, "W009", id="a-wildcard"),
    ],
)
def test_each_wrong_setting_has_its_check(overrides: dict[str, object], expected: str) -> None:
    with override_settings(**overrides):
        assert f"live_notifications.{expected}" in ids()


def test_manage_py_check_fails_with_the_id_and_a_hint() -> None:
    result = subprocess.run(
        [sys.executable, "services/web/manage.py", "check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={
            **os.environ,
            "PYTHONPATH": PYTHONPATH,
            "DJANGO_SETTINGS_MODULE": "web.settings.test",
            "SESAME_MAX_AGE": "100000",
        },
        timeout=60,
    )
    assert result.returncode == 1
    assert "(live_notifications.E002) LIVE_NOTIFICATIONS_TOKEN_MAX_AGE is 100000" in result.stderr
    assert "HINT: Remove LIVE_NOTIFICATIONS_TOKEN_MAX_AGE (default 30 seconds)" in result.stderr


def test_a_database_other_than_postgresql_is_refused(tmp_path: Path) -> None:
    (tmp_path / "sqlite_settings.py").write_text(
        "from web.settings.test import *  # noqa: F403\n"
        "DATABASES = {'default': {'ENGINE': 'django.db.backends.sqlite3', 'NAME': ':memory:'}}\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "django", "check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(tmp_path), PYTHONPATH]),
            "DJANGO_SETTINGS_MODULE": "sqlite_settings",
            "DATABASE_URL": "postgres://unused/unused",
        },
        timeout=60,
    )
    assert result.returncode == 1
    assert "(live_notifications.E007) The default database is sqlite" in result.stderr
