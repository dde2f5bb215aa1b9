"""The stack under test, driven from outside through its *stack command*.

The suite never calls Docker or kubectl itself. Everything it does to the
stack goes through one program, the stack command, which answers these verbs:

    up                 start the stack; return once every service is healthy
    down               remove the stack and its data
    token USER         print a fresh WebSocket token for USER, on the last line
    superuser          create DJANGO_SUPERUSER_USERNAME (_PASSWORD, _EMAIL)
    scale N            run N broadcasters; return once each one is ready
    broadcasters       print the ids of the broadcasters that serve, one a line
                       (not those shutting down)
    metrics ID         print that broadcaster's /metrics
    restart ID         restart that broadcaster, or replace it; return once
                       the stack has all its broadcasters ready again
    kill ID            SIGKILL that broadcaster and return at once; it is
                       started again, or replaced, by itself: the stack has
                       all its broadcasters ready again eventually
    redis restart      restart Redis gracefully; return once it answers
    redis kill         SIGKILL Redis, then start it again; return once it
                       answers (either way it comes back empty: it keeps no data)
    relay-metrics      print the relay's /metrics
    web-metrics        print web's /metrics (one series for all its workers)
    logs               print every service's logs (TAIL lines each, or all)

`tests/e2e/compose-stack.sh` answers them for compose with the Makefile's
targets (make up, token, superuser, scale, logs); `k8s/scripts/local-cluster.sh`
for a Kubernetes cluster. `up` and `down` are used only when the suite runs
a stack of its own (compose).

Configuration, from the environment (`make e2e E2E_EXTERNAL_STACK=true ...`):

    E2E_EXTERNAL_STACK   true: test the running stack at SITE_PORT and
                         WEBSOCKET_PORT (8000, 8888) and leave it running;
                         false (default): start one (project notifications-e2e,
                         ports 18000, 18888) and remove it at the end
    E2E_STACK_COMMAND    the stack command (default tests/e2e/compose-stack.sh)
    E2E_DIRECT_BALANCED  true (default): the direct address balances clients
                         over the broadcasters as the site's /ws/ does; false
                         where it reaches one broadcaster (a port-forward)
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import itertools
import os
import shlex
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TypeVar

from websockets.exceptions import InvalidHandshake
from websockets.sync.client import connect

from live_notifications.shared.environment import boolean, string
from tests.servers import metric_samples

T = TypeVar("T")

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_STACK = ROOT / "tests" / "e2e" / "compose-stack.sh"

#: Seconds to wait for anything that must eventually happen. Generous: a busy
#: two-core machine must not fail a correct stack. Never an assertion on speed.
WAIT = 60

#: The stack the suite starts itself: a compose project of its own on ports
#: of its own, so that a stack the user runs is left alone.
OWN_STACK = {
    "COMPOSE_PROJECT_NAME": "notifications-e2e",
    "SITE_PORT": "18000",
    "WEBSOCKET_PORT": "18888",
    "BROADCASTERS": "3",
}

#: Clients tried per replica before concluding that the edge doesn't reach
#: them all. Balancing needn't be even (round robin in several nginx workers
#: is close to random): 10 a replica leave a correct edge a chance of about
#: 3 in 100 000 to miss one of three replicas.
CLIENTS_TRIED_PER_REPLICA = 10

#: Seconds a token is reused for probes: well within SESAME_MAX_AGE (30 s).
TOKEN_REUSE = 10


class StackError(AssertionError):
    """A command driving the stack failed."""


class NotSpread(AssertionError):
    """New clients did not reach every broadcaster."""


def wait_until(
    probe: Callable[[], T],
    accept: Callable[[T], bool],
    what: str,
    *,
    timeout: float = WAIT,
    interval: float = 0.5,
    ignoring: tuple[type[BaseException], ...] = (),
) -> T:
    """Call ``probe`` until ``accept`` likes its result; fail after ``timeout`` s.

    Exceptions of the ``ignoring`` types count as "not yet". The failure
    message says what was awaited and what was last seen.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = probe()
        except ignoring as exc:
            last: object = exc
        else:
            if accept(value):
                return value
            last = value
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up after {timeout:g} s waiting for {what}; last: {last!r}")
        time.sleep(interval)


@dataclasses.dataclass(frozen=True)
class Settings:
    """Which stack the suite tests, and how it reaches it (module docstring)."""

    external: bool
    command: Path
    direct_balanced: bool
    environment: Mapping[str, str]

    @classmethod
    def from_environment(cls) -> Settings:
        external = boolean("E2E_EXTERNAL_STACK", False)
        command = Path(string("E2E_STACK_COMMAND", str(COMPOSE_STACK)))
        if not command.is_absolute():
            command = ROOT / command
        if not external and command != COMPOSE_STACK:
            raise ValueError(
                f"E2E_STACK_COMMAND={command} drives a running stack: "
                "set E2E_EXTERNAL_STACK=true too (the suite starts compose stacks only)"
            )
        if external:
            environment = {
                "SITE_PORT": string("SITE_PORT", "8000"),
                "WEBSOCKET_PORT": string("WEBSOCKET_PORT", "8888"),
            }
        else:
            environment = OWN_STACK
        return cls(external, command, boolean("E2E_DIRECT_BALANCED", True), environment)


#: What an outer make (`make e2e`) passes down: its command-line variables
#: (`make e2e SITE_PORT=8000`) would override this stack's in the inner makes.
_FROM_OUTER_MAKE = {"MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES"}


def _environment() -> dict[str, str]:
    """This process's environment, without what the make that started it added."""
    return {name: value for name, value in os.environ.items() if name not in _FROM_OUTER_MAKE}


def _stop_group(process: subprocess.Popen[str]) -> None:
    """Stop ``process`` and its children: SIGTERM, then SIGKILL after 30 s."""
    for signum in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signum)
        try:
            process.communicate(timeout=30)
            return
        except subprocess.TimeoutExpired:
            continue


@dataclasses.dataclass
class Stack:
    """A running stack, its addresses, and the verbs of its stack command."""

    settings: Settings
    admin_username: str
    admin_password: str
    #: Broadcasters the stack runs normally; a test that scales puts it back.
    replicas: int = 0

    @property
    def site_url(self) -> str:
        return f"http://127.0.0.1:{self.settings.environment['SITE_PORT']}"

    @property
    def ws_site_url(self) -> str:
        """The broadcasters behind the site's origin, as the browser page uses them."""
        return f"ws://127.0.0.1:{self.settings.environment['SITE_PORT']}/ws/"

    @property
    def ws_direct_url(self) -> str:
        """The broadcasters directly, as in the how-to."""
        return f"ws://127.0.0.1:{self.settings.environment['WEBSOCKET_PORT']}/"

    @property
    def websocket_urls(self) -> tuple[str, str]:
        return (self.ws_site_url, self.ws_direct_url)

    @property
    def balanced_urls(self) -> tuple[str, ...]:
        """The addresses that spread new clients over every broadcaster."""
        if self.settings.direct_balanced:
            return self.websocket_urls
        return (self.ws_site_url,)

    # The stack command.

    def run(
        self,
        *arguments: str,
        environment: Mapping[str, str] | None = None,
        check: bool = True,
        timeout: float = 600,
    ) -> subprocess.CompletedProcess[str]:
        """``<stack command> <arguments>`` in the repository, in the stack's environment.

        The command gets a process group of its own: if the tests are
        interrupted (Ctrl-C) or it times out, the whole group (make, compose,
        kubectl) is stopped before the exception goes on, so that nothing
        keeps changing the stack while the teardown removes it.
        """
        command = [str(self.settings.command), *arguments]
        process = subprocess.Popen(
            command,
            cwd=ROOT,
            env={**_environment(), **self.settings.environment, **(environment or {})},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        try:
            output, _ = process.communicate(timeout=timeout)
        except BaseException:
            _stop_group(process)
            raise
        result = subprocess.CompletedProcess(command, process.returncode, output)
        if check and result.returncode != 0:
            tail = "\n".join(result.stdout.splitlines()[-80:])
            raise StackError(f"`{shlex.join(command)}` exited with {result.returncode}:\n{tail}")
        return result

    def up(self) -> None:
        self.run("up", timeout=1800)

    def down(self) -> None:
        self.run("down", check=False, timeout=300)

    def logs(self) -> str:
        return self.run("logs", environment={"TAIL": "all"}, check=False, timeout=300).stdout

    def create_superuser(self) -> None:
        self.run(
            "superuser",
            environment={
                "DJANGO_SUPERUSER_USERNAME": self.admin_username,
                "DJANGO_SUPERUSER_PASSWORD": self.admin_password,
                "DJANGO_SUPERUSER_EMAIL": f"{self.admin_username}@example.com",
            },
        )

    def token(self, username: str) -> str:
        return self.run("token", username).stdout.strip().splitlines()[-1]

    def scale(self, replicas: int) -> None:
        """Run ``replicas`` broadcasters; returns once each one is ready."""
        self.run("scale", str(replicas))
        ids = self.broadcaster_ids()
        assert len(ids) == replicas, f"after scale {replicas}: {ids}"

    def restart(self, broadcaster: str) -> None:
        self.run("restart", broadcaster)

    def kill(self, broadcaster: str) -> None:
        """SIGKILL ``broadcaster``; returns at once, without waiting for its
        replacement (compose: the same container started again; Kubernetes: a
        new pod), which becomes ready by itself."""
        self.run("kill", broadcaster)

    def redis(self, action: str) -> None:
        """Restart Redis gracefully (``restart``), or SIGKILL it and start it
        again (``kill``); returns once it answers. It comes back empty."""
        self.run("redis", action)

    def broadcaster_ids(self) -> list[str]:
        return self.run("broadcasters", timeout=120).stdout.split()

    def metrics(self, broadcaster: str) -> dict[str, float]:
        return metric_samples(self.run("metrics", broadcaster, timeout=120).stdout)

    def relay_metrics(self) -> dict[str, float]:
        return metric_samples(self.run("relay-metrics", timeout=120).stdout)

    def web_metrics(self) -> dict[str, float]:
        return metric_samples(self.run("web-metrics", timeout=120).stdout)

    # Connections, as the broadcasters count them.

    def connections(self) -> dict[str, int]:
        """Authenticated connections per broadcaster (id → count)."""
        return {
            broadcaster: int(self.metrics(broadcaster)["broadcaster_connections"])
            for broadcaster in self.broadcaster_ids()
        }

    def wait_for_connections(self, total: int) -> dict[str, int]:
        """Wait until the broadcasters hold ``total`` authenticated connections in all.

        A client's token is checked after its handshake: events published
        before that would not reach it. Return the count per broadcaster.
        """
        return wait_until(
            self.connections,
            lambda counts: sum(counts.values()) == total,
            f"{total} authenticated connections over the broadcasters",
            ignoring=(StackError,),
        )

    def spread(
        self,
        open_client: Callable[[str], object],
        *,
        minimum: int,
        already: int = 0,
        urls: Sequence[str] = (),
    ) -> dict[str, int]:
        """Open clients through ``urls`` until each broadcaster has one.

        ``urls`` are used in turn (default: the balanced addresses).
        ``open_client(url)`` opens one authenticated client. At least
        ``minimum`` are opened, more while a broadcaster has none, up to
        CLIENTS_TRIED_PER_REPLICA a broadcaster; then :class:`NotSpread`.
        ``already`` clients were connected before. Return the count per
        broadcaster.
        """
        broadcasters = len(self.broadcaster_ids())
        limit = max(minimum, CLIENTS_TRIED_PER_REPLICA * broadcasters)
        urls = urls or self.balanced_urls
        turns = itertools.cycle(urls)
        counts: dict[str, int] = {}
        for opened in range(1, limit + 1):
            open_client(next(turns))
            if opened < minimum:
                continue
            counts = self.wait_for_connections(already + opened)
            if len(counts) == broadcasters and all(counts.values()):
                return counts
        raise NotSpread(f"{limit} clients through {urls} reached only: {counts}")

    def wait_for_edge(self) -> None:
        """Wait until new clients reach each of the stack's broadcasters through
        each balanced address, and are served through the others.

        A broadcaster is ready before the edge has noticed it (compose: DNS
        and health checks; Kubernetes: endpoints, and a port-forward that
        starts again when its pod has gone), within seconds. No other client
        may be connected meanwhile.
        """
        for url in self.websocket_urls:
            balanced = url in self.balanced_urls
            wait_until(
                functools.partial(self._probe, url, balanced=balanced),
                lambda counts: len(counts) == self.replicas,
                f"new clients through {url} to reach "
                + (f"each of {self.replicas} broadcasters" if balanced else "a broadcaster"),
                interval=1,
                ignoring=(NotSpread, StackError, InvalidHandshake, OSError),
            )

    def _probe(self, url: str, *, balanced: bool) -> dict[str, int]:
        """Probe clients (the administrator's) through ``url``: until each
        broadcaster has one if ``balanced``, else one. Closed before returning."""
        self.wait_for_connections(0)
        token, fetched = "", -float("inf")
        with contextlib.ExitStack() as exits:

            def open_probe(url: str) -> None:
                nonlocal token, fetched
                if time.monotonic() - fetched > TOKEN_REUSE:
                    token, fetched = self.token(self.admin_username), time.monotonic()
                exits.enter_context(connect(url, open_timeout=WAIT)).send(token)

            if balanced:
                counts = self.spread(open_probe, minimum=self.replicas, urls=[url])
            else:
                open_probe(url)
                counts = self.wait_for_connections(1)
        self.wait_for_connections(0)
        return counts

    def restore(self) -> None:
        """Back to the stack's broadcasters, all of them reachable.

        For the end of a test that scaled or restarted broadcasters: its
        clients must be closed, the next test counts connections from zero.
        """
        self.scale(self.replicas)
        self.wait_for_edge()
