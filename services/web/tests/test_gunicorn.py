"""The production entry point: gunicorn, its settings, its workers and the metrics port."""

from __future__ import annotations

import os
import re
import secrets
import signal
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.db import connection
from django.test import Client

from live_notifications.models import OutboxEvent
from tests.servers import PYTHONPATH, SERVICES, PostgresServer, free_port, http_status, wait_until

pytestmark = pytest.mark.django_db(transaction=True)


def test_entrypoint_serves_the_site_and_static_files(
    postgres_server: PostgresServer, tmp_path: Path
) -> None:
    port = free_port()
    not_a_directory = tmp_path / "file"
    not_a_directory.touch()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("DJANGO_")},
        "PYTHONPATH": PYTHONPATH,
        # gunicorn from this environment, as the image has it on PATH.
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        "DJANGO_SETTINGS_MODULE": "web.settings.production",
        "DJANGO_SECRET_KEY": "test-only-" + "x" * 40,
        "DATABASE_URL": postgres_server.url(connection.settings_dict["NAME"]),
        "DJANGO_STATIC_ROOT": str(tmp_path / "static"),
        "WEB_PORT": str(port),
        "WEB_METRICS_PORT": str(free_port()),
        "WEB_CONCURRENCY": "1",
        # As in the image, a home directory that can't be created (below a
        # file: even root can't): gunicorn must not need one.
        "HOME": str(not_a_directory / "home"),
    }
    subprocess.run(
        [sys.executable, str(SERVICES / "web" / "manage.py"), "collectstatic", "--noinput"],
        env=env,
        check=True,
        capture_output=True,
    )
    server = subprocess.Popen(
        [str(SERVICES / "web" / "entrypoint.sh")],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        base = f"http://127.0.0.1:{port}"

        def up() -> bool:
            if server.poll() is not None:
                pytest.fail(f"gunicorn exited:\n{server.communicate()[0].decode()}")
            return http_status(f"{base}/healthz") == 200

        wait_until(up, "gunicorn")
        with urllib.request.urlopen(f"{base}/admin/login/", timeout=10) as response:  # noqa: S310
            page = response.read().decode()
        stylesheet = re.search(r'href="(/static/admin/css/base\.[0-9a-f]+\.css)"', page)
        assert stylesheet, "the admin should link its stylesheet by hashed name"
        with urllib.request.urlopen(base + stylesheet[1], timeout=10) as response:  # noqa: S310
            assert response.status == 200
            assert "immutable" in response.headers["Cache-Control"]
    finally:
        server.send_signal(signal.SIGTERM)
        output = server.communicate(timeout=60)[0].decode()
    assert server.returncode == 0, output
    assert "Shutting down: Master" in output
    assert "[ERROR]" not in output


class Gunicorn:
    """web's entry script with several workers; its access log names each request's worker."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.port, self.metrics_port = free_port(), free_port()
        self.http = f"http://127.0.0.1:{self.port}"
        self.log = log
        self.process = subprocess.Popen(
            [str(SERVICES / "web" / "entrypoint.sh")],
            env={
                **env,
                "WEB_PORT": str(self.port),
                "WEB_METRICS_PORT": str(self.metrics_port),
                "WEB_CONCURRENCY": "3",
                "GUNICORN_CMD_ARGS": "--access-logformat 'served-by %(p)s %(m)s %(U)s %(s)s'",
            },
            stdout=log.open("w"),
            stderr=subprocess.STDOUT,
        )

        def up() -> bool:
            if self.process.poll() is not None:
                pytest.fail(f"gunicorn exited:\n{self.output()}")
            return http_status(f"{self.http}/healthz") == 200 and self.metrics_answers()

        wait_until(up, "gunicorn and its metrics port")

    def metrics_answers(self) -> bool:
        return http_status(f"http://127.0.0.1:{self.metrics_port}/metrics") == 200

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def workers_that_served(self, path: str) -> list[str]:
        """The pids of the workers that answered each request for ``path``, in order."""
        # gunicorn writes %(p)s as <pid>.
        return re.findall(rf"served-by <(\d+)> POST {re.escape(path)} ", self.output())

    def workers_booted(self) -> list[str]:
        return re.findall(r"Booting worker with pid: (\d+)", self.output())

    def published(self) -> float:
        """``web_events_published_total``, as Prometheus would scrape it."""
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
            text = response.read().decode()
        (value,) = re.findall(r"^web_events_published_total (\S+)$", text, re.MULTILINE)
        return float(value)


@pytest.fixture
def gunicorn(
    postgres_server: PostgresServer, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Gunicorn]:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "WEB_"))},
        "PYTHONPATH": PYTHONPATH,
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        # The test's settings: the same secret key signs the sessions made here.
        "DJANGO_SETTINGS_MODULE": "web.settings.test",
        "DATABASE_URL": postgres_server.url(connection.settings_dict["NAME"]),
    }
    server = Gunicorn(env, tmp_path / "gunicorn.log")
    yield server
    if server.process.poll() is None:
        server.process.send_signal(signal.SIGTERM)
        server.process.wait(timeout=60)
    if getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed:
        print(f"--- gunicorn log ---\n{server.output()}")


class Admin:
    """A logged-in admin adding groups over HTTP, each POST on a connection of its own."""

    path = "/admin/auth/group/add/"

    def __init__(self, server: Gunicorn, user: User) -> None:
        client = Client()
        client.force_login(user)
        self.url = server.http + self.path
        # Django accepts an unmasked CSRF secret, repeated in cookie and form.
        self.csrf = secrets.token_hex(16)
        self.cookie = f"sessionid={client.cookies['sessionid'].value}; csrftoken={self.csrf}"
        self.added = 0

    def add_group(self) -> None:
        self.added += 1
        form = {"name": f"group {self.added}", "csrfmiddlewaretoken": self.csrf}
        request = urllib.request.Request(  # noqa: S310 - loopback
            self.url,
            data=urllib.parse.urlencode(form).encode(),
            # Connection: close, so that the next POST is accepted anew, by any worker.
            headers={"Cookie": self.cookie, "Connection": "close"},
        )
        opener = urllib.request.build_opener(NoRedirects)
        try:
            opener.open(request, timeout=10)
        except urllib.error.HTTPError as exc:
            assert exc.code == 302, exc.read().decode()  # to the list: added
        else:
            pytest.fail("the admin should redirect after adding a group")


class NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


def test_metrics_count_every_workers_publications_on_the_metrics_port(
    gunicorn: Gunicorn, django_user_model: type[User]
) -> None:
    admin = Admin(gunicorn, django_user_model.objects.create_superuser("admin"))
    before = OutboxEvent.objects.count()  # creating the admin announced access changes

    def add_until_served_by(enough: Callable[[set[str]], bool]) -> None:
        for _ in range(100):
            admin.add_group()
            wait_until(
                lambda: len(gunicorn.workers_that_served(admin.path)) == admin.added,
                "the access log",
            )
            if enough(set(gunicorn.workers_that_served(admin.path))):
                return
        pytest.fail(f"workers that served: {gunicorn.workers_that_served(admin.path)}")

    # Several changes, answered by at least two of the three workers.
    add_until_served_by(lambda workers: admin.added >= 6 and len(workers) >= 2)
    published = OutboxEvent.objects.count() - before
    assert published == admin.added  # a group without members: one event, no access change
    assert gunicorn.published() == published

    # Not on the public port; nothing else on the metrics port.
    assert http_status(f"{gunicorn.http}/metrics") == 404
    assert http_status(f"http://127.0.0.1:{gunicorn.metrics_port}/") == 404
    assert http_status(f"http://127.0.0.1:{gunicorn.metrics_port}/healthz") == 404

    # A worker dies: its publications still count, and its replacement adds to them.
    booted = gunicorn.workers_booted()
    os.kill(int(gunicorn.workers_that_served(admin.path)[-1]), signal.SIGKILL)
    wait_until(lambda: len(gunicorn.workers_booted()) > len(booted), "a new worker")
    assert gunicorn.published() == published
    (replacement,) = set(gunicorn.workers_booted()) - set(booted)
    add_until_served_by(lambda workers: replacement in workers)
    assert gunicorn.published() == OutboxEvent.objects.count() - before > published
