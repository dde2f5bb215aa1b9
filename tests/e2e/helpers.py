"""Driving the stack from the outside: make, compose, the admin's forms, WebSockets."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import json
import os
import re
import secrets
import shlex
import signal
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import requests
from websockets.exceptions import InvalidHandshake
from websockets.sync.client import ClientConnection, connect

from .forms import Form, find_form

T = TypeVar("T")

#: Seconds to wait for anything that must eventually happen. Generous: a busy
#: two-core machine must not fail a correct stack. Never an assertion on speed.
WAIT = 60
#: Seconds a client waits for its next event before the test fails.
RECEIVE_TIMEOUT = 30
#: Seconds for an HTTP request to the site.
HTTP_TIMEOUT = 30

#: Fields every event has (the contract's, plus ``action``).
EVENT_FIELDS = {
    "model",
    "object",
    "message",
    "timestamp",
    "user",
    "content_type_id",
    "object_id",
    "action",
}

# The permissions the tests grant, as the admin's user form labels them.
VIEW_GROUP = "Authentication and Authorization | group | Can view group"
CHANGE_USER = "Authentication and Authorization | user | Can change user"


class StackError(AssertionError):
    """A command driving the stack failed."""


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


def _compose_command() -> list[str]:
    """`docker compose` (v2) if installed, else docker-compose: as the Makefile."""
    found = subprocess.run(
        ["docker", "compose", "version"], capture_output=True, check=False, timeout=60
    )
    return ["docker", "compose"] if found.returncode == 0 else ["docker-compose"]


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


#: The Makefile's metrics port is not published; read it from inside a replica.
_READ_METRICS = (
    "import urllib.request;"
    "print(urllib.request.urlopen('http://127.0.0.1:8888/metrics', timeout=10).read().decode())"
)


@dataclasses.dataclass
class Stack:
    """A running stack and the commands that drive it, all with its environment."""

    root: Path
    environment: Mapping[str, str]
    admin_username: str
    admin_password: str
    compose_command: list[str] = dataclasses.field(default_factory=_compose_command)

    @property
    def site_url(self) -> str:
        return f"http://127.0.0.1:{self.environment['SITE_PORT']}"

    @property
    def ws_site_url(self) -> str:
        """The broadcasters behind the site's origin, as the browser page uses them."""
        return f"ws://127.0.0.1:{self.environment['SITE_PORT']}/ws/"

    @property
    def ws_direct_url(self) -> str:
        """The broadcasters directly, as in the how-to."""
        return f"ws://127.0.0.1:{self.environment['WEBSOCKET_PORT']}/"

    @property
    def websocket_urls(self) -> tuple[str, str]:
        return (self.ws_site_url, self.ws_direct_url)

    # Commands.

    def run(
        self,
        command: Sequence[str],
        *,
        environment: Mapping[str, str] | None = None,
        check: bool = True,
        timeout: float = 300,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``command`` in the repository with the stack's environment.

        The command gets a process group of its own: if the tests are
        interrupted (Ctrl-C) or it times out, the whole group (make, compose)
        is stopped before the exception goes on, so that nothing keeps
        changing the stack while the teardown removes it.
        """
        process = subprocess.Popen(
            command,
            cwd=self.root,
            env={**_environment(), **self.environment, **(environment or {})},
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

    def make(
        self,
        *arguments: str,
        environment: Mapping[str, str] | None = None,
        check: bool = True,
        timeout: float = 600,
    ) -> subprocess.CompletedProcess[str]:
        """``make <arguments>``, as a user would type it, in this stack's environment."""
        return self.run(
            ["make", "--no-print-directory", *arguments],
            environment=environment,
            check=check,
            timeout=timeout,
        )

    def compose(
        self, *arguments: str, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        return self.run([*self.compose_command, *arguments], check=check, timeout=timeout)

    def token(self, username: str) -> str:
        """A token from `make token`, which prints it on its last line."""
        return self.make("token", f"USER={username}").stdout.strip().splitlines()[-1]

    def scale(self, replicas: int) -> None:
        """`make scale BROADCASTERS=n`: returns once every container is healthy."""
        self.make("scale", f"BROADCASTERS={replicas}")
        ids = self.broadcaster_ids()
        assert len(ids) == replicas, f"after make scale BROADCASTERS={replicas}: {ids}"

    def restore(self, replicas: int) -> None:
        """Back to ``replicas`` healthy replicas, all reachable through the edge.

        For the end of a test that scaled or restarted replicas: its clients
        must be closed, the next test counts connections from zero.
        """
        self.scale(replicas)
        self.wait_for_edge(replicas)

    # Broadcasters.

    def broadcaster_ids(self) -> list[str]:
        """Ids of the broadcaster containers, in the order compose lists them."""
        return self.compose("ps", "-q", "broadcaster").stdout.split()

    def metrics(self, container: str) -> dict[str, float]:
        """One replica's /metrics, read from inside its container."""
        text = self.run(["docker", "exec", container, "python", "-c", _READ_METRICS], timeout=60)
        samples = {}
        for line in text.stdout.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                samples[name] = float(value)
        return samples

    def connections(self) -> dict[str, int]:
        """Authenticated connections per replica (container id → count)."""
        return {
            container: int(self.metrics(container)["broadcaster_connections"])
            for container in self.broadcaster_ids()
        }

    def wait_for_connections(self, total: int) -> dict[str, int]:
        """Wait until the replicas hold ``total`` authenticated connections in all.

        A client's token is checked after its handshake: events published
        before that would not reach it. Return the count per replica.
        """
        return wait_until(
            self.connections,
            lambda counts: sum(counts.values()) == total,
            f"{total} authenticated connections over the broadcasters",
            ignoring=(StackError,),
        )

    def wait_for_edge(self, replicas: int) -> None:
        """Wait until the edge sends new clients to each of ``replicas`` replicas.

        Compose reports a replica healthy before the edge has resolved and
        checked it (within seconds). With no other client connected, the
        edge's leastconn balancing then puts one probe on each replica.
        """

        def probe() -> dict[str, int]:
            self.wait_for_connections(0)
            token = self.token(self.admin_username)
            with contextlib.ExitStack() as probes:
                for _ in range(replicas):
                    websocket = probes.enter_context(connect(self.ws_direct_url))
                    websocket.send(token)
                counts = self.wait_for_connections(replicas)
            self.wait_for_connections(0)
            return counts

        wait_until(
            probe,
            lambda counts: len(counts) == replicas and all(n == 1 for n in counts.values()),
            f"the edge to balance new clients over {replicas} broadcasters",
            interval=1,
        )


# The site, through its pages and forms.


def _check_page(response: requests.Response) -> None:
    assert response.status_code == 200, f"{response.request.method} {response.url}: {response}"


def _form_errors(html: str) -> list[str]:
    """The error lists of a re-rendered form, as text."""
    return [
        " ".join(re.sub(r"<[^>]+>", " ", errors).split())
        for errors in re.findall(r'<ul class="errorlist[^"]*"[^>]*>(.*?)</ul>', html, re.S)
    ]


def login(site_url: str, username: str, password: str) -> requests.Session:
    """Log in through the admin's login form; return the session."""
    session = requests.Session()
    page = session.get(f"{site_url}/admin/login/", timeout=HTTP_TIMEOUT)
    _check_page(page)
    form = find_form(page.text, "login-form")
    form.set("username", username)
    form.set("password", password)
    response = session.post(
        f"{site_url}/admin/login/",
        data=form.data(),
        allow_redirects=False,
        timeout=HTTP_TIMEOUT,
    )
    assert response.status_code == 302, (
        f"login of {username} failed: {response}: {_form_errors(response.text)}"
    )
    return session


@dataclasses.dataclass
class Person:
    """A user logged in to the site, getting tokens as the live page does."""

    username: str
    password: str
    session: requests.Session
    site_url: str

    def token(self) -> dict[str, Any]:
        """``GET /api/token/``: ``{"token", "url", "expires_in"}``."""
        response = self.session.get(f"{self.site_url}/api/token/", timeout=HTTP_TIMEOUT)
        assert response.status_code == 200, f"token for {self.username}: {response}"
        grant: dict[str, Any] = response.json()
        return grant


@dataclasses.dataclass
class AdminSession(Person):
    """The administrator at work in the Django admin, through its HTML forms."""

    @classmethod
    def login(cls, site_url: str, username: str, password: str) -> AdminSession:
        return cls(username, password, login(site_url, username, password), site_url)

    def form(self, path: str, form_id: str | None = None, *, has_field: str | None = None) -> Form:
        """A form of an admin page, as the page shows it now."""
        page = self.session.get(f"{self.site_url}{path}", timeout=HTTP_TIMEOUT)
        _check_page(page)
        return find_form(page.text, form_id, has_field=has_field)

    def submit(self, path: str, form: Form, button: str | None = None) -> str:
        """Post ``form`` to ``path`` as a browser would; return where it redirects."""
        response = self.session.post(
            f"{self.site_url}{path}",
            data=form.data(button),
            headers={"Referer": f"{self.site_url}{path}"},
            allow_redirects=False,
            timeout=HTTP_TIMEOUT,
        )
        assert response.status_code == 302, (
            f"POST {path}: {response}, errors: {_form_errors(response.text)}"
        )
        return response.headers["Location"]

    def add(self, model: str, fields: Mapping[str, str]) -> str:
        """Add an object with "Save and continue editing"; return its primary key."""
        path = f"/admin/{model}/add/"
        form = self.form(path, _form_id(model))
        for name, value in fields.items():
            form.set(name, value)
        location = self.submit(path, form, "_continue")
        match = re.fullmatch(rf"/admin/{model}/(\d+)/change/", location)
        assert match, f"adding to {model} redirected to {location}"
        return match.group(1)

    def change(
        self,
        model: str,
        pk: str,
        fields: Mapping[str, str],
        *,
        update: Callable[[Form], None] | None = None,
    ) -> None:
        """Submit the object's change form with every current field, some changed.

        ``update``, if given, edits the form further, for fields that depend
        on the page (such as a select's option values).
        """
        path = f"/admin/{model}/{pk}/change/"
        form = self.form(path, _form_id(model))
        for name, value in fields.items():
            form.set(name, value)
        if update is not None:
            update(form)
        self.submit(path, form, "_save")

    def delete(self, model: str, pk: str) -> None:
        """Delete the object through its confirmation page ("Yes, I'm sure")."""
        path = f"/admin/{model}/{pk}/delete/"
        form = self.form(path, has_field="post")
        assert form.fields.get("post") == ["yes"], f"not a delete confirmation: {form}"
        self.submit(path, form)

    def add_group(self, name: str) -> str:
        return self.add("auth/group", {"name": name})

    def add_user(self, username: str, password: str) -> str:
        return self.add(
            "auth/user",
            {
                "username": username,
                "usable_password": "true",
                "password1": password,
                "password2": password,
            },
        )

    def grant(self, user_pk: str, *permissions: str) -> None:
        """Make the user staff (to log in) with exactly these permissions (by label)."""

        def select_permissions(form: Form) -> None:
            values = form.option_values("user_permissions", *permissions)
            form.set("user_permissions", *values)

        self.change("auth/user", user_pk, {"is_staff": "on"}, update=select_permissions)

    def create_person(self, username: str, *permissions: str) -> Person:
        """A new staff user with these permissions, logged in with its own session."""
        password = f"Pw-{secrets.token_hex(12)}"
        pk = self.add_user(username, password)
        self.grant(pk, *permissions)
        return Person(username, password, login(self.site_url, username, password), self.site_url)


def _form_id(model: str) -> str:
    """The admin's id for the add and change forms of ``app/model``: ``model_form``."""
    return f"{model.rpartition('/')[2]}_form"


# WebSocket clients.


@contextlib.contextmanager
def authenticated(person: Person, url: str) -> Iterator[ClientConnection]:
    """A client of ``person`` on ``url`` that sent a fresh token from /api/token/."""
    grant = person.token()
    with connect(url, open_timeout=WAIT) as websocket:
        websocket.send(grant["token"])
        yield websocket


def reconnect(person: Person, url: str, exits: contextlib.ExitStack) -> ClientConnection:
    """Connect again as a client would after a close: fresh token, retries.

    While replicas go away, the edge may briefly have nowhere to send a new
    connection (HTTP 503 or a reset): try again until it works.
    """

    def attempt() -> ClientConnection:
        return exits.enter_context(authenticated(person, url))

    return wait_until(
        attempt,
        lambda _: True,
        f"{person.username} to reconnect to {url}",
        ignoring=(InvalidHandshake, OSError, TimeoutError),
    )


def receive(websocket: ClientConnection) -> dict[str, Any]:
    """The next event on ``websocket``; fails the test after RECEIVE_TIMEOUT s."""
    try:
        message = websocket.recv(timeout=RECEIVE_TIMEOUT)
    except TimeoutError:
        raise AssertionError(f"no event within {RECEIVE_TIMEOUT} s") from None
    assert isinstance(message, str), f"binary message: {message!r}"
    event: dict[str, Any] = json.loads(message)
    missing = EVENT_FIELDS - event.keys()
    assert not missing, f"event without {missing}: {event}"
    timestamp = datetime.datetime.fromisoformat(event["timestamp"])
    assert timestamp.tzinfo is not None, f"timestamp without time zone: {event}"
    return event


def receive_until(
    websocket: ClientConnection, last: Callable[[dict[str, Any]], bool], *, limit: int = 50
) -> list[dict[str, Any]]:
    """Events up to and including the first that ``last`` accepts."""
    events: list[dict[str, Any]] = []
    while True:
        try:
            event = receive(websocket)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; received so far: {events}") from None
        events.append(event)
        if last(event):
            return events
        assert len(events) < limit, f"no end after {limit} events: {events}"
