"""Real PostgreSQL, Redis and broadcaster processes for the services' tests.

The servers are private to the test session: started on free loopback ports
from Debian's ``postgresql`` and ``redis-server`` packages, and stopped at the
end. Tests may stop and restart them to exercise outages.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
#: The demo site's folder (the Django project web).
SERVICES = ROOT / "services"
#: The package, and the demo project whose settings most tests run with.
PYTHONPATH = os.pathsep.join(str(ROOT / folder) for folder in ("src", "services"))

# Seconds to wait for a server to come up: generous, since CI machines are slow.
# A test fails if a server doesn't start in time; it never measures speed.
STARTUP_TIMEOUT = 60


# Ports handed out in this process. The kernel may give a port again once its
# probe socket is closed, before the server meant for it has bound it: a
# relay's main and metrics ports once came out the same.
_ports_given: set[int] = set()


def free_port() -> int:
    """A free loopback port, never one this process has handed out before."""
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port not in _ports_given:
            _ports_given.add(port)
            return port


def wait_until(predicate: Callable[[], bool], what: str, timeout: float = STARTUP_TIMEOUT) -> None:
    """Poll ``predicate`` until it's true; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


def http_status(url: str) -> int | None:
    """GET ``url``; return the status, or None if nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - loopback
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return None


def http_get(url: str) -> tuple[int, str, str]:
    """GET ``url``; return the status, body and Content-Type."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - loopback
            return response.status, response.read().decode(), response.headers["Content-Type"]
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(), exc.headers["Content-Type"]


def metric_samples(text: str) -> dict[str, float]:
    """Prometheus text ``text`` as ``{'name{labels}': value}``, comments left out."""
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


def find_program(name: str) -> str:
    """Find a server program on PATH or in Debian's PostgreSQL directories."""
    found = shutil.which(name) or next(
        iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)), None
    )
    if found is None:
        pytest.exit(
            f"{name} not found: install Debian's postgresql and redis-server packages "
            "(.ci/run does it)",
            returncode=3,
        )
    return found


class CertificateAuthority:
    """A throwaway certificate authority in ``directory``, made with the openssl CLI.

    :meth:`issue` signs server certificates for ``localhost`` and ``127.0.0.1``;
    clients trust them with :attr:`certificate` as their CA file.
    """

    def __init__(self, directory: Path, name: str = "ca") -> None:
        self.directory = directory
        self.name = name
        self.certificate = directory / f"{name}.crt"
        self.key = directory / f"{name}.key"
        self._openssl(
            "req", "-x509", "-days", "2", "-subj", f"/CN=Test CA {name}",
            "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", str(self.key), "-out", str(self.certificate),
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        )  # fmt: skip

    def issue(self, name: str) -> tuple[Path, Path]:
        """Sign a server certificate; return the paths of it and of its key."""
        certificate, key = self.directory / f"{name}.crt", self.directory / f"{name}.key"
        request, extensions = self.directory / f"{name}.csr", self.directory / f"{name}.ext"
        extensions.write_text(
            "subjectAltName = DNS:localhost, IP:127.0.0.1\n"
            "basicConstraints = critical, CA:FALSE\n"
            "keyUsage = critical, digitalSignature\n"
            "extendedKeyUsage = serverAuth\n"
            "subjectKeyIdentifier = hash\n"
            "authorityKeyIdentifier = keyid\n"
        )
        self._openssl(
            "req", "-subj", "/CN=localhost", "-newkey", "ec",
            "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", str(key), "-out", str(request),
        )  # fmt: skip
        self._openssl(
            "x509", "-req", "-days", "2", "-in", str(request),
            "-CA", str(self.certificate), "-CAkey", str(self.key), "-CAcreateserial",
            "-extfile", str(extensions), "-out", str(certificate),
        )  # fmt: skip
        return certificate, key

    @staticmethod
    def _openssl(*args: str) -> None:
        subprocess.run([find_program("openssl"), *args], check=True, capture_output=True)


class PostgresServer:
    """A throwaway PostgreSQL cluster on a free port, trusting loopback clients.

    PostgreSQL refuses to run as root; when the tests do, the server runs as the
    ``postgres`` user that Debian's package creates.
    """

    def __init__(self) -> None:
        self.port = free_port()
        self.user = "postgres" if os.geteuid() == 0 else None
        self.directory = Path(tempfile.mkdtemp(prefix="test-postgres-"))
        self.data = self.directory / "data"
        if self.user:
            shutil.chown(self.directory, self.user)
        self._run(
            find_program("initdb"),
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--locale=C",
        )

    def _run(self, *args: str) -> None:
        subprocess.run(args, check=True, capture_output=True, user=self.user)

    def start(self) -> None:
        options = (
            f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1 "
            "-c fsync=off -c full_page_writes=off"
        )
        self._run(
            find_program("pg_ctl"),
            "-D",
            str(self.data),
            "-o",
            options,
            "-l",
            str(self.directory / "log"),
            "-w",
            "start",
        )

    def stop(self) -> None:
        self._run(find_program("pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")

    def restart(self) -> None:
        """Restart the server: every existing client connection is cut."""
        self.stop()
        self.start()

    def url(self, database: str) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/{database}"

    def remove(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)


class RedisServer:
    """A redis-server on a free port, without persistence."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                find_program("redis-server"),
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--loglevel",
                "warning",
            ],
            stdout=subprocess.DEVNULL,
        )
        wait_until(self._answers, "redis-server")

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=STARTUP_TIMEOUT)
            self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()

    @contextlib.contextmanager
    def down(self) -> Iterator[None]:
        """Stop Redis for the duration of the block, then start it again."""
        self.stop()
        try:
            yield
        finally:
            self.start()


class ServiceProcess:
    """``python -m <module>`` in a subprocess, as in production, on a free port."""

    #: The program's module, and the prefix of its HOST, PORT and METRICS_PORT variables.
    module = ""
    prefix = ""

    def __init__(
        self,
        env: dict[str, str],
        *,
        command: list[str] | None = None,
        cwd: Path = ROOT,
        port: int | None = None,
    ) -> None:
        """Start it; ``command`` (for example an installed console script, from a
        project's directory ``cwd``) replaces ``python -m <module>``; ``port``,
        a free one (the port of a process it replaces, say)."""
        self.port = port or free_port()
        self.http = f"http://127.0.0.1:{self.port}"
        # A port of its own, so that processes started together don't all try 9000.
        self.metrics_port = free_port()
        self.metrics_http = f"http://127.0.0.1:{self.metrics_port}"
        self.log = tempfile.NamedTemporaryFile(prefix=f"{self.module}-", suffix=".log")  # noqa: SIM115
        self.process = subprocess.Popen(
            command or [sys.executable, "-m", self.module],
            cwd=cwd,
            env={
                **os.environ,
                "PYTHONPATH": PYTHONPATH,
                **env,
                f"{self.prefix}_HOST": "127.0.0.1",
                f"{self.prefix}_PORT": str(self.port),
                f"{self.prefix}_METRICS_PORT": str(self.metrics_port),
            },
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    def wait_ready(self) -> None:
        def ready() -> bool:
            if self.process.poll() is not None:
                pytest.fail(
                    f"{self.module} exited with {self.process.returncode}:\n{self.output()}"
                )
            return http_status(f"{self.http}/readyz") == 200

        wait_until(ready, f"{self.module} to be ready")

    def metrics(self) -> dict[str, float]:
        """Parse the metrics port's /metrics into ``{'name{labels}': value}``."""
        status, text, _ = http_get(f"{self.metrics_http}/metrics")
        assert status == 200, (status, text)
        return metric_samples(text)

    def output(self) -> str:
        return Path(self.log.name).read_text(errors="replace")

    def terminate(self) -> int:
        """Send SIGTERM; return the exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=STARTUP_TIMEOUT)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def remove(self) -> None:
        self.kill()
        self.log.close()


class BroadcasterProcess(ServiceProcess):
    """The broadcaster program; WebSocket clients connect to :attr:`url`."""

    module = "live_notifications.broadcaster"
    prefix = "BROADCASTER"

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/"


class RelayProcess(ServiceProcess):
    """The relay program: moves the outbox to Redis's event log."""

    module = "live_notifications.relay"
    prefix = "RELAY"
