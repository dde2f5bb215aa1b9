"""The processes a run needs, started as the services' tests start them, and /proc.

PostgreSQL and Redis are :mod:`tests.servers`'s (Debian's programs on free
loopback ports); the relay, the broadcaster and the baseline are
``python -m <module>`` on free ports, as :class:`tests.servers.ServiceProcess`
starts them, from the working tree's ``src/`` and ``services/`` or from a git revision's
(:func:`checkout`). The server measured gets a CPU of its own
(:class:`Cpus`); everything else, the load generator included, shares the
others.
"""

from __future__ import annotations

import contextlib
import dataclasses
import glob
import io
import os
import platform
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator
from importlib import metadata
from pathlib import Path

import redis

from tests.servers import free_port, http_get, http_status, metric_samples

from .config import ROOT

#: Seconds a server has to come up.
STARTUP_TIMEOUT = 60.0


def checkout(revision: str, directory: Path) -> Path:
    """Extract the code of git ``revision`` (``src/`` where it has one, ``services/``)
    into ``directory``, and return it: a tree for :class:`Program`.

    Read-only for the repository (``git archive``): the working tree and the
    index are left alone.
    """
    folders = [
        folder
        for folder in ("src", "services")
        if subprocess.run(
            ["git", "cat-file", "-e", f"{revision}:{folder}"], cwd=ROOT, check=False
        ).returncode
        == 0
    ]
    archive = subprocess.run(
        ["git", "archive", "--format=tar", revision, *folders],
        cwd=ROOT,
        capture_output=True,
        check=False,
    )
    if archive.returncode != 0:
        raise RuntimeError(f"git archive {revision}: {archive.stderr.decode().strip()}")
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(directory, filter="data")
    return directory


def package_program(tree: Path, name: str) -> str:
    """The module of the package's program ``name`` (relay, broadcaster) in ``tree``:
    revisions before the package ran them from ``services/`` as top-level modules."""
    return f"live_notifications.{name}" if (tree / "src" / "live_notifications").is_dir() else name


class Program:
    """``python -m <module>`` from ``tree`` (the package and the demo site), on free
    ports, its output in a log file.

    ``<PREFIX>_HOST``, ``_PORT`` and ``_METRICS_PORT`` are set as
    :class:`tests.servers.ServiceProcess` sets them.
    """

    def __init__(
        self,
        module: str,
        prefix: str,
        env: dict[str, str],
        *,
        tree: Path = ROOT,
        args: tuple[str, ...] = (),
        port: int | None = None,
    ) -> None:
        self.module = module
        self.port = port or free_port()
        self.metrics_port = free_port()
        self.http = f"http://127.0.0.1:{self.port}"
        self.log = tempfile.NamedTemporaryFile(prefix=f"bench-{module}-", suffix=".log")  # noqa: SIM115
        # The baseline (bench.baseline) is always the working tree's: the reference.
        path = os.pathsep.join([str(tree / "src"), str(tree / "services"), str(ROOT)])
        self.process = subprocess.Popen(
            [sys.executable, "-m", module, *args],
            cwd=tree,
            env={
                **os.environ,
                **env,
                "PYTHONPATH": path,
                f"{prefix}_HOST": "127.0.0.1",
                f"{prefix}_PORT": str(self.port),
                f"{prefix}_METRICS_PORT": str(self.metrics_port),
            },
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    def output(self) -> str:
        return Path(self.log.name).read_text(errors="replace")

    def wait_ready(self, ready: Callable[[], bool]) -> None:
        """Poll ``ready`` until it's true; raise if the process exits or time runs out."""
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while not ready():
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"{self.module} exited with {self.process.returncode}:\n{self.output()}"
                )
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"{self.module} not ready after {STARTUP_TIMEOUT:.0f} s:\n{self.output()}"
                )
            time.sleep(0.05)

    def remove(self) -> None:
        """Kill it (the figures are taken: no drain to wait for) and drop its log."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()
        self.log.close()


def start_relay(env: dict[str, str], *, tree: Path = ROOT) -> Program:
    relay = Program(package_program(tree, "relay"), "RELAY", env, tree=tree)
    relay.wait_ready(lambda: http_status(f"{relay.http}/readyz") == 200)
    return relay


def start_server(name: str, env: dict[str, str], cpus: Cpus, *, tree: Path = ROOT) -> Program:
    """Start the server ``name`` pinned to :attr:`Cpus.server`; return it once it's ready.

    The baseline has no health check: it is ready once it listens and has
    subscribed to the Pub/Sub channel.
    """
    with cpus.pinned(cpus.server):  # children inherit the parent's affinity
        if name == "broadcaster":
            process = Program(package_program(tree, "broadcaster"), "BROADCASTER", env, tree=tree)
        else:
            compression = "none" if name == "baseline-plain" else "deflate"
            process = Program(
                "bench.baseline",
                "BASELINE",
                {**env, "BASELINE_COMPRESSION": compression},
                tree=tree,
            )
    if name == "broadcaster":
        process.wait_ready(lambda: http_status(f"{process.http}/readyz") == 200)
    else:
        with redis.Redis.from_url(env["REDIS_URL"]) as client:

            def subscribed() -> bool:
                numsub = dict(client.pubsub_numsub("events"))
                return listens(process.port) and int(numsub.get(b"events", 0)) > 0

            process.wait_ready(subscribed)
    return process


def start_web(env: dict[str, str], cpus: Cpus, *, workers: int, tree: Path = ROOT) -> Program:
    """Start the site as its image does (gunicorn, ``web/gunicorn_conf.py``), every
    worker pinned to :attr:`Cpus.server`, on loopback alone; return it once it answers."""
    port = free_port()
    with cpus.pinned(cpus.server):
        process = Program(
            "gunicorn",
            "WEB",
            {**env, "WEB_CONCURRENCY": str(workers)},
            tree=tree,
            # The command line wins over the configuration file's 0.0.0.0.
            args=(
                "--config",
                "python:web.gunicorn_conf",
                "--bind",
                f"127.0.0.1:{port}",
                "web.wsgi",
            ),
            port=port,
        )
    process.wait_ready(
        lambda: (
            http_status(f"{process.http}/healthz") == 200 and len(children(process.pid)) == workers
        )
    )
    return process


def metrics(program: Program) -> dict[str, float]:
    """Every sample on ``program``'s metrics port, by name with its labels."""
    status, text, _ = http_get(f"http://127.0.0.1:{program.metrics_port}/metrics")
    if status != 200:
        raise RuntimeError(f"{program.module}: /metrics answered {status}")
    return metric_samples(text)


def histogram(samples: dict[str, float], name: str) -> list[tuple[float, float]]:
    """Histogram ``name``'s cumulative buckets in :func:`metrics`' ``samples``, as
    ``(upper bound, count)`` in order, ``+Inf`` last."""
    prefix = f'{name}_bucket{{le="'
    return sorted(
        (float(key.removeprefix(prefix).rstrip('"}')), value)
        for key, value in samples.items()
        if key.startswith(prefix)
    )


def listens(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


@dataclasses.dataclass(frozen=True)
class Cpus:
    """Which CPUs the server gets, and which the rest; ``None``: no pinning (one CPU)."""

    server: frozenset[int] | None
    others: frozenset[int] | None

    @classmethod
    def split(cls) -> Cpus:
        available = sorted(os.sched_getaffinity(0))
        if len(available) < 2:
            return cls(None, None)
        return cls(frozenset(available[:1]), frozenset(available[1:]))

    def describe(self) -> str:
        if self.server is None or self.others is None:
            return "one CPU: server, load generator, PostgreSQL, Redis and relay share it"
        return (
            f"server on CPU {cpu_list(self.server)}; load generator, PostgreSQL, Redis, "
            f"relay and driver on CPU {cpu_list(self.others)}"
        )

    @contextlib.contextmanager
    def pinned(self, cpus: frozenset[int] | None) -> Iterator[None]:
        """Run the block (and the processes it starts) on ``cpus``."""
        if cpus is None:
            yield
            return
        saved = os.sched_getaffinity(0)
        os.sched_setaffinity(0, cpus)
        try:
            yield
        finally:
            os.sched_setaffinity(0, saved)


def cpu_list(cpus: frozenset[int]) -> str:
    """``cpus`` as ``taskset`` and this bench write them: ``0,2,3``."""
    return ",".join(str(cpu) for cpu in sorted(cpus))


def raise_file_limit(connections: int) -> int:
    """Raise the file descriptor limit for ``connections`` clients (inherited by children).

    Returns the limit in force, which may be lower than asked if the
    machine refuses: the caller says so.
    """
    wanted = connections + 4096
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= wanted:
        return soft
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, max(hard, wanted)))
        return wanted
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


# /proc

_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of process ``pid``, all its threads, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS  # utime, stime


def children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (gunicorn's workers, for its master)."""
    found = []
    for stat in glob.glob("/proc/[0-9]*/stat"):
        with contextlib.suppress(OSError):
            if int(Path(stat).read_text().rpartition(")")[2].split()[1]) == pid:
                found.append(int(stat.split("/")[2]))
    return sorted(found)


def cpu_times() -> dict[int, tuple[int, int]]:
    """Each CPU's ``(busy, total)`` ticks since boot, from /proc/stat."""
    times = {}
    for line in Path("/proc/stat").read_text().splitlines():
        name, *fields = line.split()
        if name.startswith("cpu") and name != "cpu":
            ticks = [int(field) for field in fields]
            idle = ticks[3] + ticks[4]  # idle, iowait
            times[int(name[3:])] = (sum(ticks[:8]) - idle, sum(ticks[:8]))
    return times


def busy_shares(
    before: dict[int, tuple[int, int]], after: dict[int, tuple[int, int]]
) -> dict[str, float]:
    """How busy each CPU was between two :func:`cpu_times`, by any process."""
    shares = {}
    for cpu, (busy, total) in after.items():
        busy_before, total_before = before.get(cpu, (0, 0))
        elapsed = total - total_before
        shares[str(cpu)] = round((busy - busy_before) / elapsed, 3) if elapsed else 0.0
    return shares


def memory_kib(pid: int, field: str = "VmRSS") -> int:
    """``VmRSS`` (resident now) or ``VmHWM`` (peak) of process ``pid``, in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} for process {pid}")


def machine() -> dict[str, object]:
    """What the figures were measured on and with."""
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.partition(":")[2].strip()
                break
    return {
        "cores": os.cpu_count(),
        "cpu_model": model,
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "websockets": metadata.version("websockets"),
        "redis_py": metadata.version("redis"),
        "django": metadata.version("django"),
        "uvloop": _version("uvloop"),
        "redis_server": _program_version("redis-server"),
        "postgresql": _program_version("postgres"),
    }


def revision(measured: str = "") -> dict[str, object]:
    """The git revision measured: ``measured``, or the working tree's ``HEAD`` and
    whether ``src/``, ``services/`` or ``bench/`` differ from it (what ran is then not it)."""

    def git(*args: str) -> str:
        try:
            result = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)
        except OSError:  # no git: a copy of the tree
            return ""
        return result.stdout.strip() if result.returncode == 0 else ""

    if measured:
        return {
            "revision": git("rev-parse", "--short=12", measured) or measured,
            "services_from": f"revision {measured}",
            "dirty": False,
        }
    changed = git("status", "--porcelain", "--", "src", "services", "bench")
    return {
        "revision": git("rev-parse", "--short=12", "HEAD") or "unknown",
        "services_from": "working tree",
        "dirty": bool(changed),
    }


def _version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def program(name: str) -> str | None:
    """Where ``name`` is: on PATH or in Debian's PostgreSQL directories, as the tests look."""
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)
    return shutil.which(name) or next(iter(candidates), None)


def _program_version(name: str) -> str:
    path = program(name)
    if path is None:
        return ""
    result = subprocess.run([path, "--version"], capture_output=True, text=True)
    return result.stdout.strip()
