"""A brand-new Django project adopts the package by following the README.

``django-admin startproject``, an app with the project's own user model
(email login, UUID primary key, its own table names), then the README's
"Add it to your Django project" steps, read from the README: the package's
wheel installed into a clean virtualenv (which must bring its
dependencies), the settings and URLs appended as written, ``migrate``,
``check``, the two programs started by their console scripts from the
project's directory. Then, with real PostgreSQL, Redis, relay, broadcaster
and the project's own site (under gunicorn): an admin change made over HTTP
reaches a superuser and a member of a group that may view the model, not a
user without the permission; a permission granted while connected takes
effect; deactivating a user closes its connection 1008; a client resumes
after a broadcaster restart and gets what it missed. The project's own test
suite still passes with the package installed.

Each hidden event is followed by a sentinel its client may see: the
sentinel arriving first proves the hidden event never comes.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from tests.e2e.helpers import AdminSession, login
from tests.servers import (
    ROOT,
    BroadcasterProcess,
    PostgresServer,
    RedisServer,
    RelayProcess,
    ServiceProcess,
    free_port,
    http_status,
    wait_until,
)

from . import readme

#: The README's project name (its DJANGO_SETTINGS_MODULE is mysite.settings).
PROJECT = "mysite"
PASSWORD = "a-Long-passphrase-for-tests-7"  # noqa: S105 - a test user's
RECEIVE_TIMEOUT = 30
PIP_TIMEOUT = 600

#: The project's own app: a user model as many projects write one.
USERS_MODELS = """
import uuid

from django.contrib.auth.models import AbstractBaseUser, BaseUserManager, PermissionsMixin
from django.db import models


class MemberManager(BaseUserManager):
    def create_user(self, email, password=None, **fields):
        member = self.model(email=self.normalize_email(email), **fields)
        member.set_password(password)
        member.save(using=self._db)
        return member

    def create_superuser(self, email, password=None, **fields):
        return self.create_user(email, password, is_staff=True, is_superuser=True, **fields)


class Member(AbstractBaseUser, PermissionsMixin):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    email = models.EmailField(unique=True)
    is_active = models.BooleanField(default=True)
    is_staff = models.BooleanField(default=False)

    objects = MemberManager()

    USERNAME_FIELD = "email"
    EMAIL_FIELD = "email"

    class Meta:
        db_table = "members"
"""

#: The project's own tests, which must still pass with the package installed.
USERS_TESTS = """
from django.contrib.auth import get_user_model
from django.test import TestCase


class MemberTests(TestCase):
    def test_a_member_logs_in(self):
        get_user_model().objects.create_user("x@example.com", "a-Long-passphrase-3")
        self.assertTrue(self.client.login(username="x@example.com", password="a-Long-passphrase-3"))
"""


def run(*command: str | Path, cwd: Path, env: dict[str, str]) -> str:
    result = subprocess.run(
        [str(word) for word in command],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=PIP_TIMEOUT,
        check=False,
    )
    assert result.returncode == 0, f"{command}:\n{result.stdout}\n{result.stderr}"
    return result.stdout + result.stderr


def pinned_versions() -> str:
    """The demo's lock as plain pins: the same versions, resolved from the wheel's metadata."""
    lock = (ROOT / "services" / "web" / "requirements.txt").read_text()
    pins = re.findall(r"^([A-Za-z0-9_.\-]+)(?:\[[a-z,]+\])?(==[^\s\\]+)", lock, re.M)
    return "\n".join(name + version for name, version in pins)


def build_wheel(directory: Path) -> Path:
    """Build the package's wheel into ``directory`` (as ``make wheel`` does); return it."""
    run(
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "--quiet",
        "--no-deps",
        "--no-build-isolation",
        "--wheel-dir",
        directory,
        ROOT,
        cwd=ROOT,
        env={k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")},
    )
    (wheel,) = directory.glob("*.whl")
    return wheel


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A clean virtualenv with the package's wheel, installed as the README says."""
    command = readme.steps().commands[0]
    assert command[:2] == ["pip", "install"], f"the first step isn't pip install: {command}"
    directory = tmp_path_factory.mktemp("adoption")
    wheels = directory / "wheels"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    wheel = build_wheel(wheels)
    names = subprocess.run(
        [sys.executable, "-m", "zipfile", "-l", str(wheel)], capture_output=True, text=True
    ).stdout
    assert "live_notifications/static/live_notifications/live.js" in names
    assert "live_notifications/static/live_notifications/client.js" in names
    assert "/tests/" not in names, "the wheel ships tests"
    venv = directory / "venv"
    run(sys.executable, "-m", "venv", venv, cwd=directory, env=env)
    constraints = directory / "constraints.txt"
    constraints.write_text(pinned_versions())
    # The wheel alone brings the package's dependencies; the project picks
    # how psycopg finds libpq, as a project does.
    run(
        venv / "bin" / "pip",
        "install",
        "--quiet",
        "--constraint",
        constraints,
        wheel,
        "psycopg[binary]",
        "gunicorn",  # the project's server
        cwd=directory,
        env=env,
    )
    installed = run(venv / "bin" / "pip", "list", "--format=freeze", cwd=directory, env=env)
    for dependency in ("Django", "django-sesame", "redis", "websockets", "psycopg"):
        assert re.search(rf"^{dependency}==", installed, re.M | re.I), installed
    return venv


@pytest.fixture(scope="module")
def project(
    venv: Path, postgres_server: PostgresServer, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """``startproject``, the project's own user model, then the README's steps up to migrate."""
    directory = tmp_path_factory.mktemp("project")
    env = project_env(venv)
    run(venv / "bin" / "django-admin", "startproject", PROJECT, directory, cwd=directory, env=env)
    run(venv / "bin" / "python", "manage.py", "startapp", "users", cwd=directory, env=env)
    (directory / "users" / "models.py").write_text(USERS_MODELS.lstrip())
    (directory / "users" / "admin.py").write_text(
        "from django.contrib import admin\n\nfrom .models import Member\n\n"
        "admin.site.register(Member)\n"
    )
    (directory / "users" / "tests.py").write_text(USERS_TESTS.lstrip())
    with psycopg.connect(postgres_server.url("postgres"), autocommit=True) as connection:
        connection.execute(f"DROP DATABASE IF EXISTS {PROJECT}")
        connection.execute(f"CREATE DATABASE {PROJECT}")
    settings = directory / PROJECT / "settings.py"
    steps = readme.steps()
    settings.write_text(
        settings.read_text()
        # The project's own choices, before the README's lines.
        + textwrap.dedent(
            f"""
            INSTALLED_APPS += ["users"]
            AUTH_USER_MODEL = "users.Member"
            DATABASES = {{
                "default": {{
                    "ENGINE": "django.db.backends.postgresql",
                    "NAME": "{PROJECT}",
                    "HOST": "127.0.0.1",
                    "PORT": "{postgres_server.port}",
                    "USER": "postgres",
                }}
            }}
            """
        )
        + "\n"
        + steps.settings
    )
    urls = directory / PROJECT / "urls.py"
    urls.write_text(urls.read_text() + "\n" + steps.urls)
    run(venv / "bin" / "python", "manage.py", "makemigrations", "users", cwd=directory, env=env)
    return directory


def project_env(venv: Path) -> dict[str, str]:
    """The environment of a shell in the project's virtualenv: nothing of this repository."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("PYTHONPATH", "VIRTUAL_ENV", "DJANGO_SETTINGS_MODULE")
    }
    return {**env, "PATH": f"{venv / 'bin'}{os.pathsep}{env['PATH']}", "VIRTUAL_ENV": str(venv)}


class Project:
    """The README's commands, followed in the project's directory."""

    def __init__(self, venv: Path, directory: Path, redis_server: RedisServer) -> None:
        self.venv = venv
        self.directory = directory
        self.redis_server = redis_server
        self.env = project_env(venv)
        self.started: list[ServiceProcess] = []
        self.broadcaster: BroadcasterProcess | None = None

    def follow(self, command: list[str]) -> None:
        """One step of the README, with this machine's addresses."""
        match command:
            case ["pip", "install", *_]:
                pass  # the venv fixture did it, with the wheel
            case ["python", "manage.py", "check", *options]:
                output = self.manage("check", *options)
                assert "live_notifications." not in output, output
            case ["python", "manage.py", "websocket_token", _]:
                pass  # each client runs it with its own username: token()
            case ["python", "manage.py", *arguments]:
                self.manage(*arguments)
            case ["export", *assignments]:
                variables = dict(assignment.split("=", 1) for assignment in assignments)
                assert variables.pop("DJANGO_SETTINGS_MODULE") == f"{PROJECT}.settings"
                assert variables.pop("REDIS_URL").startswith("redis://")
                assert not variables, f"the README exports more than this test knows: {variables}"
                self.env |= {
                    "DJANGO_SETTINGS_MODULE": f"{PROJECT}.settings",
                    "REDIS_URL": self.redis_server.url,
                }
            case ["RELAY_METRICS_PORT=9001", "live-notifications-relay"]:
                # The metrics port moves off the broadcaster's here; the test
                # gives each program free ports of its own anyway.
                relay = RelayProcess(
                    self.program_env(), command=self.script(command[-1:]), cwd=self.directory
                )
                self.started.append(relay)
                relay.wait_ready()
            case ["live-notifications-broadcaster"]:
                self.broadcaster = self.start_broadcaster()
            case ["python", "-m", "websockets", url]:
                assert url == "ws://localhost:8888/", url  # the broadcaster's default port
            case _:
                pytest.fail(f"a README step this test doesn't know how to follow: {command}")

    def start_broadcaster(self) -> BroadcasterProcess:
        broadcaster = BroadcasterProcess(
            self.program_env(),
            command=self.script(["live-notifications-broadcaster"]),
            cwd=self.directory,
        )
        self.started.append(broadcaster)
        broadcaster.wait_ready()
        return broadcaster

    def program_env(self) -> dict[str, str]:
        return {**self.env, "PYTHONPATH": ""}

    def script(self, command: list[str]) -> list[str]:
        return [str(self.venv / "bin" / command[0]), *command[1:]]

    def manage(self, *arguments: str) -> str:
        return run(
            self.venv / "bin" / "python", "manage.py", *arguments, cwd=self.directory, env=self.env
        )

    def shell(self, code: str) -> str:
        """Run ``code`` in ``manage.py shell``, as a developer or a script would."""
        return self.manage("shell", "--command", textwrap.dedent(code))

    def token(self, email: str) -> str:
        """The README's ``manage.py websocket_token``, for this user."""
        return self.manage("websocket_token", email).strip().splitlines()[-1]

    def stop(self) -> None:
        for process in self.started:
            if process.process.poll() is None:
                print(process.output()[-3000:])  # shown if the test fails
            process.remove()


@pytest.fixture
def adopted(
    venv: Path, project: Path, redis_server: RedisServer, tmp_path: Path
) -> Iterator[tuple[Project, str]]:
    """The README followed to its end; the project's site, under gunicorn, and its URL."""
    followed = Project(venv, project, redis_server)
    site: subprocess.Popen[bytes] | None = None
    log = tmp_path / "site.log"
    try:
        for command in readme.steps().commands:
            followed.follow(command)
        assert followed.broadcaster is not None, "the README starts no broadcaster"
        port = free_port()
        with log.open("wb") as output:
            site = subprocess.Popen(
                [followed.venv / "bin" / "gunicorn", f"--bind=127.0.0.1:{port}", f"{PROJECT}.wsgi"],
                cwd=project,
                env=followed.env,
                stdout=output,
                stderr=subprocess.STDOUT,
            )
        url = f"http://127.0.0.1:{port}"
        wait_until(lambda: http_status(f"{url}/admin/login/") == 200, "the site to answer")
        yield followed, url
    finally:
        if site is not None:
            site.terminate()
            site.wait()
            print(log.read_text(errors="replace")[-3000:])  # shown if the test fails
        followed.stop()


@contextlib.contextmanager
def hello(
    broadcaster: BroadcasterProcess, token: str, last_id: str | None = None
) -> Iterator[tuple[ClientConnection, dict[str, Any]]]:
    """Connect with the resuming form; enter with the client and its welcome."""
    with connect(broadcaster.url, open_timeout=RECEIVE_TIMEOUT, max_queue=None) as client:
        client.send(json.dumps({"token": token, "last_id": last_id}))
        welcome = json.loads(client.recv(timeout=RECEIVE_TIMEOUT))
        assert welcome["type"] == "welcome", welcome
        yield client, welcome


def next_event(client: ClientConnection) -> dict[str, Any]:
    """The next admin event, control messages skipped."""
    while True:
        message: dict[str, Any] = json.loads(client.recv(timeout=RECEIVE_TIMEOUT))
        if "type" not in message:
            return message


def closed(client: ClientConnection) -> tuple[int, str]:
    with pytest.raises(ConnectionClosed) as info:
        while True:
            client.recv(timeout=RECEIVE_TIMEOUT)
    assert info.value.rcvd is not None, "the connection dropped without a close frame"
    return info.value.rcvd.code, info.value.rcvd.reason


def test_a_new_project_adopts_the_package_by_the_readme(adopted: tuple[Project, str]) -> None:
    project, site = adopted
    broadcaster = project.broadcaster
    assert broadcaster is not None
    project.shell(
        f"""
        from django.contrib.auth import get_user_model
        from django.contrib.auth.models import Group, Permission
        Member = get_user_model()
        viewers = Group.objects.create(name="viewers")
        viewers.permissions.add(Permission.objects.get(codename="view_group"))
        Member.objects.create_superuser("root@example.com", "{PASSWORD}")
        member = Member.objects.create_user("member@example.com", "{PASSWORD}", is_staff=True)
        member.groups.add(viewers)
        outsider = Member.objects.create_user("outsider@example.com", "{PASSWORD}")
        outsider.user_permissions.add(Permission.objects.get(codename="view_member"))
        """
    )
    admin = AdminSession.login(site, "root@example.com", PASSWORD)
    # The token endpoint, mounted under the README's prefix, gives a token too.
    grant = login(site, "member@example.com", PASSWORD).get(f"{site}/live/api/token/").json()
    assert set(grant) == {"token", "url", "expires_in"} and grant["expires_in"] == 30

    with contextlib.ExitStack() as clients:
        root, _ = clients.enter_context(hello(broadcaster, project.token("root@example.com")))
        member, _ = clients.enter_context(hello(broadcaster, grant["token"]))
        outsider, _ = clients.enter_context(
            hello(broadcaster, project.token("outsider@example.com"))
        )
        # A group added in the admin: the superuser and the group's members
        # see it; the outsider sees only the sentinel, a change to a member.
        admin.add("auth/group", {"name": "one"})
        sentinel = project.shell(
            """
            from django.contrib.admin.models import CHANGE, LogEntry
            from django.contrib.auth import get_user_model
            from django.contrib.contenttypes.models import ContentType
            outsider = get_user_model().objects.get(email="outsider@example.com")
            LogEntry.objects.log_actions(
                user_id=get_user_model().objects.get(email="root@example.com").pk,
                queryset=[outsider], action_flag=CHANGE, change_message="sentinel",
            )
            print(outsider.pk)
            """
        ).strip()
        assert next_event(root)["object"] == "one"
        assert next_event(root)["object"] == "outsider@example.com"
        assert next_event(member)["object"] == "one"
        assert next_event(outsider)["object"] == "outsider@example.com", sentinel

        # Granted while connected, through the group: from the next change on.
        project.shell(
            """
            from django.contrib.auth import get_user_model
            from django.contrib.auth.models import Group
            get_user_model().objects.get(email="outsider@example.com").groups.add(
                Group.objects.get(name="viewers")
            )
            """
        )
        admin.add("auth/group", {"name": "two"})
        assert next_event(outsider)["object"] == "two"
        assert next_event(member)["object"] == "two"
        last = next_event(root)
        assert last["object"] == "two"

        # Deactivated while connected: closed at once.
        project.shell(
            """
            from django.contrib.auth import get_user_model
            member = get_user_model().objects.get(email="member@example.com")
            member.is_active = False
            member.save()
            """
        )
        assert closed(member) == (1008, "access revoked")

    # The broadcaster restarts; a change is made meanwhile; the superuser
    # resumes from the last event it got and receives it.
    assert broadcaster.terminate() == 0
    admin.add("auth/group", {"name": "missed"})
    restarted = project.start_broadcaster()
    with hello(restarted, project.token("root@example.com"), last["id"]) as (resumed, welcome):
        assert welcome["recovered"] is True, welcome
        assert next_event(resumed)["object"] == "missed"


def test_the_projects_own_tests_still_pass(venv: Path, project: Path) -> None:
    output = run(
        venv / "bin" / "python", "manage.py", "test", "users", cwd=project, env=project_env(venv)
    )
    assert "Ran 1 test" in output and "OK" in output, output
