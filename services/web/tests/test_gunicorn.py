"""The production entry point: gunicorn, production settings, collected static files."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from django.db import connection

from testing import SERVICES, PostgresServer, free_port, http_status, wait_until

pytestmark = pytest.mark.django_db(transaction=True)


def test_entrypoint_serves_the_site_and_static_files(
    postgres_server: PostgresServer, tmp_path: Path
) -> None:
    port = free_port()
    not_a_directory = tmp_path / "file"
    not_a_directory.touch()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("DJANGO_")},
        "PYTHONPATH": str(SERVICES),
        # gunicorn from this environment, as the image has it on PATH.
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        "DJANGO_SETTINGS_MODULE": "web.settings.production",
        "DJANGO_SECRET_KEY": "test-only-" + "x" * 40,
        "DATABASE_URL": postgres_server.url(connection.settings_dict["NAME"]),
        "DJANGO_STATIC_ROOT": str(tmp_path / "static"),
        "WEB_PORT": str(port),
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
