"""``manage.py check`` names what is missing or wrong in the settings the app reads."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core import checks
from django.test import override_settings

SERVICES = Path(__file__).parents[2]


def ids() -> set[str]:
    return {message.id for message in checks.run_checks() if message.id}


def test_the_test_settings_pass() -> None:
    assert not {id_ for id_ in ids() if id_.startswith("notifications.")}


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        pytest.param({"WEBSOCKET_TOKEN_SCOPE": ""}, "notifications.E001", id="no-scope"),
        pytest.param({"SESAME_MAX_AGE": None}, "notifications.E002", id="tokens-never-expire"),
        pytest.param({"SESAME_MAX_AGE": 86400}, "notifications.E002", id="tokens-live-a-day"),
        pytest.param({"SESAME_MAX_AGE": 1}, "notifications.E002", id="tokens-live-a-second"),
        pytest.param({"CSRF_TRUSTED_ORIGINS": []}, "notifications.W003", id="no-origins"),
        pytest.param(
            {"SESAME_PRIMARY_KEY_FIELD": "username"}, "notifications.E004", id="not-by-pk"
        ),
    ],
)
def test_each_wrong_setting_has_its_check(overrides: dict[str, object], expected: str) -> None:
    with override_settings(**overrides):
        assert expected in ids()


def test_manage_py_check_fails_with_the_id_and_a_hint() -> None:
    result = subprocess.run(
        [sys.executable, "web/manage.py", "check"],
        cwd=SERVICES,
        capture_output=True,
        text=True,
        env={
            **os.environ,
            "PYTHONPATH": str(SERVICES),
            "DJANGO_SETTINGS_MODULE": "web.settings.test",
            "SESAME_MAX_AGE": "100000",
        },
        timeout=60,
    )
    assert result.returncode == 1
    assert "(notifications.E002) SESAME_MAX_AGE is 100000" in result.stderr
    assert "HINT: Set SESAME_MAX_AGE = 30" in result.stderr
