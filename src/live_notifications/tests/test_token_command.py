"""``manage.py websocket_token``: what ``make token USER=`` runs."""

from __future__ import annotations

import io
import os
import subprocess
import sys

import pytest
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command
from django.db import connection

from live_notifications.tokens import user_for
from tests.servers import SERVICES, PostgresServer

pytestmark = pytest.mark.django_db


def test_prints_a_token_on_the_last_line(django_user_model: type[User]) -> None:
    alice = django_user_model.objects.create_user("alice")
    out = io.StringIO()
    call_command("websocket_token", "alice", stdout=out)
    assert user_for(out.getvalue().splitlines()[-1]) == alice


def test_unknown_user() -> None:
    with pytest.raises(CommandError, match="no user named 'nobody'"):
        call_command("websocket_token", "nobody")


def test_inactive_user(django_user_model: type[User]) -> None:
    django_user_model.objects.create_user("bob", is_active=False)
    with pytest.raises(CommandError, match="inactive"):
        call_command("websocket_token", "bob")


@pytest.mark.django_db(transaction=True)
def test_manage_py_from_the_shell(
    django_user_model: type[User], postgres_server: PostgresServer
) -> None:
    alice = django_user_model.objects.create_user("alice")
    result = subprocess.run(
        [sys.executable, str(SERVICES / "web" / "manage.py"), "websocket_token", "alice"],
        env={
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "web.settings.test",
            "DATABASE_URL": postgres_server.url(connection.settings_dict["NAME"]),
        },
        capture_output=True,
        text=True,
        check=True,
    )
    assert user_for(result.stdout.splitlines()[-1]) == alice
