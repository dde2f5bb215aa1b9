"""REDIS_URL: what validate() accepts, and that redis-py connects with it, TLS and password."""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from live_notifications.shared.environment import ConfigurationError
from live_notifications.shared.redisurl import ALLOWED, validate
from tests.servers import CertificateAuthority, find_program, free_port, wait_until

PASSWORD = "s3cret:p@ss"
QUOTED_PASSWORD = "s3cret%3Ap%40ss"


@pytest.mark.parametrize(
    "url",
    [
        "redis://localhost",
        "redis://redis:6379",
        "redis://redis:6379/",
        "redis://:s3cret@redis:6379/0",
        "redis://app:s%40cret@redis/15",
        "rediss://:pw@redis:6380/0?ssl_ca_certs=/etc/ca.crt",
        "rediss://redis/0?ssl_ca_certs=/ca.crt&ssl_certfile=/c.crt&ssl_keyfile=/c.key"
        "&ssl_cert_reqs=required&ssl_check_hostname=false",
        "rediss://redis/0?ssl_cert_reqs=none",
    ],
)
def test_valid_urls_are_returned_unchanged(url: str) -> None:
    assert validate(url) == url


@pytest.mark.parametrize(
    ("url", "error"),
    [
        ("localhost:6379", "must start with redis:// or rediss://"),
        ("unix:///run/redis.sock", "must start with redis:// or rediss://"),
        ("http://redis:6379/0", "got http://"),
        ("redis:///0", "must name a host"),
        ("redis://redis:port/0", "invalid port"),
        ("redis://redis:70000/0", "invalid port"),
        ("redis://redis:0/0", "invalid port"),
        ("redis://redis:6379/zero", "the path must be a database number"),
        ("redis://redis:6379/0/1", "the path must be a database number"),
        ("redis://redis:6379/-1", "the path must be a database number"),
        ("redis://redis/0?db=1", r"unknown option 'db' \(the database is the path: /N\)"),
        ("rediss://redis/0?ssl_ca_cert=/ca.crt", "unknown option 'ssl_ca_cert'"),
        ("rediss://redis/0?ssl_cert_reqs=maybe", "ssl_cert_reqs must be one of none, optional"),
        ("rediss://redis/0?ssl_check_hostname=no", "ssl_check_hostname must be one of true"),
        ("rediss://redis/0?ssl_ca_certs=", "'ssl_ca_certs' has no value"),
        ("rediss://redis/0?ssl_ca_certs=/a&ssl_ca_certs=/b", "'ssl_ca_certs' is given twice"),
        ("redis://redis/0?ssl_ca_certs=/ca.crt", r"TLS options \(ssl_ca_certs\) need rediss://"),
    ],
)
def test_invalid_urls(url: str, error: str) -> None:
    with pytest.raises(ConfigurationError, match=error):
        validate(url)


def test_errors_name_the_variable_and_the_allowed_keys() -> None:
    with pytest.raises(ConfigurationError) as caught:
        validate("rediss://redis/0?timeout=5", name="BROADCASTER_REDIS_URL")
    message = str(caught.value)
    assert message.startswith("BROADCASTER_REDIS_URL: unknown option 'timeout'")
    assert all(key in message for key in ALLOWED)


class Server:
    """A redis-server started with ``args``, on a free port; :attr:`port`."""

    def __init__(self, *args: str, tls: bool = False) -> None:
        self.port = free_port()
        listen = (
            ["--port", "0", "--tls-port", str(self.port)] if tls else ["--port", str(self.port)]
        )
        self.process = subprocess.Popen(
            [find_program("redis-server"), *listen, "--bind", "127.0.0.1", "--save", "", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        wait_until(self._listening, "redis-server")

    def _listening(self) -> bool:
        if self.process.poll() is not None:
            output = self.process.communicate()[0].decode()
            pytest.fail(f"redis-server exited with {self.process.returncode}:\n{output}")
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
        except OSError:
            return False
        return True

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> CertificateAuthority:
    return CertificateAuthority(tmp_path_factory.mktemp("redis-ca"))


@pytest.fixture(scope="module")
def tls_redis(ca: CertificateAuthority) -> Iterator[Server]:
    """redis-server on TLS only, with a password; its certificate signed by ``ca``."""
    certificate, key = ca.issue("redis")
    server = Server(
        "--tls-cert-file",
        str(certificate),
        "--tls-key-file",
        str(key),
        "--tls-ca-cert-file",
        str(ca.certificate),
        "--tls-auth-clients",
        "no",
        "--requirepass",
        PASSWORD,
        tls=True,
    )
    yield server
    server.stop()


@pytest.fixture(scope="module")
def password_redis() -> Iterator[Server]:
    server = Server("--requirepass", PASSWORD)
    yield server
    server.stop()


def ping(url: str) -> bool:
    with redis.Redis.from_url(validate(url), socket_timeout=5, socket_connect_timeout=5) as client:
        return bool(client.ping())


def test_tls_with_the_servers_ca(tls_redis: Server, ca: CertificateAuthority) -> None:
    url = f"rediss://:{QUOTED_PASSWORD}@localhost:{tls_redis.port}/0?ssl_ca_certs={ca.certificate}"
    assert ping(url)


def test_tls_refuses_another_ca(tls_redis: Server, tmp_path: Path) -> None:
    other = CertificateAuthority(tmp_path, "other")
    url = (
        f"rediss://:{QUOTED_PASSWORD}@localhost:{tls_redis.port}/0?ssl_ca_certs={other.certificate}"
    )
    with pytest.raises(redis.ConnectionError, match="certificate verify failed"):
        ping(url)


def test_tls_refuses_a_plain_client(tls_redis: Server) -> None:
    with pytest.raises(redis.ConnectionError):
        ping(f"redis://:{QUOTED_PASSWORD}@localhost:{tls_redis.port}/0")


def test_password_in_the_url(password_redis: Server) -> None:
    assert ping(f"redis://:{QUOTED_PASSWORD}@127.0.0.1:{password_redis.port}/0")


def test_without_the_password(password_redis: Server) -> None:
    with pytest.raises(redis.AuthenticationError):
        ping(f"redis://127.0.0.1:{password_redis.port}/0")


def test_with_a_wrong_password(password_redis: Server) -> None:
    with pytest.raises(redis.AuthenticationError):
        ping(f"redis://:wrong@127.0.0.1:{password_redis.port}/0")
