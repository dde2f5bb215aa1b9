"""A project's own image runs the stack, as docs/howto/deploy-with-compose.md says.

The adoption test's project (``django-admin startproject mysite``, its own
user model, the README's steps: :mod:`tests.adoption`) gets settings that
read the variables compose gives, the package's wheel and the Dockerfile of
the how-to, read from it. Built, then started with ``make up APP_IMAGE=…
APP_SETTINGS_MODULE=…`` as a compose project of its own, with one
broadcaster: every service becomes healthy, ``make superuser`` and ``make
token`` work in it, and an admin change reaches a client on the direct port.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from websockets.sync.client import connect

from tests.adoption.test_startproject import (  # noqa: F401 - fixtures
    PROJECT,
    build_wheel,
    pinned_versions,
    project,
    venv,
)

from .stack import ROOT, WAIT, Settings

# It builds an image and starts a compose stack of its own: not the business
# of a run against a stack someone else started (make e2e-external, make
# k8s-test).
pytestmark = pytest.mark.skipif(
    Settings.from_environment().external, reason="starts a compose stack of its own"
)

HOWTO = ROOT / "docs" / "howto" / "deploy-with-compose.md"
IMAGE = "django-realtime-notifications/project-test:dev"
#: A compose project and ports of its own, beside the suite's stack.
STACK = {
    "COMPOSE_PROJECT_NAME": "notifications-project",
    "SITE_PORT": "18100",
    "WEBSOCKET_PORT": "18188",
    "BROADCASTERS": "1",
    "APP_IMAGE": IMAGE,
    "APP_SETTINGS_MODULE": f"{PROJECT}.docker",
}
PASSWORD = "a-Long-passphrase-for-images-9"  # noqa: S105 - a test user's

#: The project's settings for the stack: the variables compose gives, read
#: as this project chooses (any project reads them its own way).
DOCKER_SETTINGS = """
import os
from urllib.parse import urlsplit

from .settings import *  # noqa: F403

DEBUG = False
SECRET_KEY = os.environ["DJANGO_SECRET_KEY"]
ALLOWED_HOSTS = os.environ["DJANGO_ALLOWED_HOSTS"].split(",")
CSRF_TRUSTED_ORIGINS = os.environ["DJANGO_CSRF_TRUSTED_ORIGINS"].split(",")
SESAME_MAX_AGE = int(os.environ["SESAME_MAX_AGE"])
_database = urlsplit(os.environ["DATABASE_URL"])
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": _database.path.lstrip("/"),
        "USER": _database.username,
        "PASSWORD": _database.password,
        "HOST": _database.hostname,
        "PORT": _database.port or 5432,
    }
}
MIDDLEWARE = ["live_notifications.operations.OperationsMiddleware", *MIDDLEWARE]  # noqa: F405
"""


def dockerfile() -> str:
    """The how-to's Dockerfile, for this project."""
    (block,) = re.findall(r"^```dockerfile\n(.*?)^```$", HOWTO.read_text(), re.M | re.S)
    assert f'"{PROJECT}.wsgi"' in block, "the how-to's Dockerfile serves another project"
    return str(block)


def make(*arguments: str, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(
        ["make", "--no-print-directory", *arguments],
        cwd=ROOT,
        env={**os.environ, **STACK, **(env or {})},
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert result.returncode == 0, f"make {arguments}:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def compose_command() -> list[str]:
    """As the Makefile chooses it: ``docker compose`` (v2) if it answers, else docker-compose."""
    v2 = subprocess.run(["docker", "compose", "version"], capture_output=True, check=False)
    return ["docker", "compose"] if v2.returncode == 0 else ["docker-compose"]


@pytest.fixture
def image(project: Path, tmp_path: Path) -> Iterator[str]:  # noqa: F811 - the fixture
    """The project, with its Dockerfile and requirements, built."""
    context = tmp_path / PROJECT
    shutil.copytree(project, context)
    (context / PROJECT / "docker.py").write_text(DOCKER_SETTINGS.lstrip())
    wheel = build_wheel(context / "wheels")
    pins = dict(line.split("==") for line in pinned_versions().splitlines())
    (context / "requirements.txt").write_text(
        f"./wheels/{wheel.name}\n"
        f"gunicorn=={pins['gunicorn']}\n"
        f"psycopg[binary]=={pins['psycopg']}\n"
        f"--constraint constraints.txt\n"
    )
    (context / "constraints.txt").write_text(pinned_versions())
    ca = Path("/etc/ssl/certs/ca-certificates.crt")
    (context / "build-ca.crt").write_bytes(ca.read_bytes() if ca.exists() else b"")
    (context / "Dockerfile").write_text(dockerfile())
    # The base make up chose for this machine (.env), as the stack's own images.
    base = re.search(r"^PYTHON_IMAGE=(\S+)$", (ROOT / ".env").read_text(), re.M)
    arguments = ["--build-arg", f"PYTHON_IMAGE={base[1]}"] if base else []
    subprocess.run(
        ["docker", "build", "--quiet", "--tag", IMAGE, *arguments, str(context)],
        check=True,
        stdout=subprocess.DEVNULL,
        timeout=900,
    )
    try:
        yield IMAGE
    finally:
        subprocess.run(["docker", "image", "rm", "--force", IMAGE], capture_output=True)


def test_a_projects_own_image_runs_the_stack(image: str) -> None:
    try:
        output = make("up")
        assert "The stack is up" in output, output
        make(
            "superuser",
            env={
                "DJANGO_SUPERUSER_USERNAME": "root@example.com",
                "DJANGO_SUPERUSER_EMAIL": "root@example.com",
                "DJANGO_SUPERUSER_PASSWORD": PASSWORD,
            },
        )
        token = make("token", "USER=root@example.com").strip().splitlines()[-1]
        with connect(f"ws://127.0.0.1:{STACK['WEBSOCKET_PORT']}/", open_timeout=WAIT) as client:
            # The resuming form: its welcome says the client is registered.
            client.send(json.dumps({"token": token, "last_id": None}))
            assert json.loads(client.recv(timeout=WAIT))["type"] == "welcome"
            subprocess.run(
                [
                    *compose_command(),
                    "exec",
                    "-T",
                    "web",
                    "django-admin",
                    "shell",
                    "--command",
                    "from django.contrib.admin.models import ADDITION, LogEntry;"
                    "from django.contrib.auth.models import Group;"
                    "from django.contrib.auth import get_user_model;"
                    "group = Group.objects.create(name='built');"
                    "root = get_user_model().objects.get(email='root@example.com');"
                    "LogEntry.objects.log_actions(user_id=root.pk, queryset=[group],"
                    " action_flag=ADDITION, change_message='[]')",
                ],
                cwd=ROOT,
                env={**os.environ, **STACK},
                check=True,
                capture_output=True,
                timeout=WAIT,
            )
            event = json.loads(client.recv(timeout=WAIT))
            while "type" in event:  # a position: not an event
                event = json.loads(client.recv(timeout=WAIT))
        assert (event["model"], event["object"], event["action"]) == ("group", "built", "added")
    finally:
        subprocess.run(
            ["tests/e2e/compose-stack.sh", "down"],
            cwd=ROOT,
            env={**os.environ, **STACK},
            capture_output=True,
            timeout=300,
        )
