"""Using the stack as its users do: the admin's forms, tokens, WebSocket clients."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import json
import os
import re
import secrets
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import requests
from websockets.exceptions import InvalidHandshake
from websockets.sync.client import ClientConnection, connect

from .forms import Form, find_form
from .stack import WAIT, wait_until

#: Seconds a client waits for its next event before the test fails.
RECEIVE_TIMEOUT = 30
#: Seconds for an HTTP request to the site.
HTTP_TIMEOUT = 30

#: Fields every event has (the contract's, plus ``action``).
EVENT_FIELDS = {
    "id",
    "model",
    "object",
    "message",
    "timestamp",
    "user",
    "content_type_id",
    "object_id",
    "action",
}
#: Fields every app event has (the demo's, such as ``group.renamed``).
APP_EVENT_FIELDS = {"id", "event", "data", "timestamp"}


def check_fields(event: dict[str, Any]) -> None:
    """An admin change with every field, or an app event with its own, exactly."""
    if "event" in event:
        assert event.keys() == APP_EVENT_FIELDS, f"app event with other fields: {event}"
    else:
        missing = EVENT_FIELDS - event.keys()
        assert not missing, f"event without {missing}: {event}"


# The permissions the tests grant, as the admin's user form labels them.
VIEW_GROUP = "Authentication and Authorization | group | Can view group"
CHANGE_USER = "Authentication and Authorization | user | Can change user"


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
    """Log in through the admin's login form; return the session.

    Each request gets a connection of its own: a session that sat idle while
    the test did something else would otherwise reuse a keep-alive
    connection the edge may be closing that very moment, and a POST isn't
    retried (RemoteDisconnected).
    """
    session = requests.Session()
    session.headers["Connection"] = "close"
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
    #: Primary key of the user, when the test made it.
    pk: str = ""

    def token(self) -> dict[str, Any]:
        """``GET /api/token/``: ``{"token", "url", "expires_in"}``."""
        response = self.session.get(f"{self.site_url}/api/token/", timeout=HTTP_TIMEOUT)
        assert response.status_code == 200, f"token for {self.username}: {response}"
        grant: dict[str, Any] = response.json()
        return grant

    def new_session(self) -> Person:
        """The same user logged in again, in a session of its own: one per
        thread (a requests session is not meant to be shared between threads)."""
        session = login(self.site_url, self.username, self.password)
        return Person(self.username, self.password, session, self.site_url)


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

    def set_groups(self, user_pk: str, *names: str) -> None:
        """Put the user in exactly these groups (by name), through the user form."""

        def select_groups(form: Form) -> None:
            form.set("groups", *form.option_values("groups", *names))

        self.change("auth/user", user_pk, {}, update=select_groups)

    def create_person(self, username: str, *permissions: str) -> Person:
        """A new staff user with these permissions, logged in with its own session."""
        password = new_password()
        pk = self.add_user(username, password)
        self.grant(pk, *permissions)
        session = login(self.site_url, username, password)
        return Person(username, password, session, self.site_url, pk)

    def deactivate(self, user_pk: str) -> None:
        """Untick "Active" on the user's change form and save."""
        self.change("auth/user", user_pk, {}, update=lambda form: form.set("is_active"))


def new_password() -> str:
    """A password Django's validators accept for any of the tests' usernames.

    Not hex: the usernames carry hex suffixes, and Django refuses a password
    whose characters overlap a username's too much (its similarity check
    counts shared characters), which hex against hex sometimes does.
    """
    return secrets.token_urlsafe(24)


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


def receive_any(websocket: ClientConnection) -> dict[str, Any]:
    """The next event on ``websocket``, an admin change or one of the demo's app
    events (services/web/notices); fails the test after RECEIVE_TIMEOUT s."""
    try:
        message = websocket.recv(timeout=RECEIVE_TIMEOUT)
    except TimeoutError:
        raise AssertionError(f"no event within {RECEIVE_TIMEOUT} s") from None
    assert isinstance(message, str), f"binary message: {message!r}"
    event: dict[str, Any] = json.loads(message)
    check_fields(event)
    timestamp = datetime.datetime.fromisoformat(event["timestamp"])
    assert timestamp.tzinfo is not None, f"timestamp without time zone: {event}"
    return event


def receive(websocket: ClientConnection) -> dict[str, Any]:
    """The next admin change on ``websocket``: the demo's app events, which tell
    users of changes to their access, are checked and passed over."""
    while "event" in (event := receive_any(websocket)):
        pass
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


class InteractiveClient:
    """``python -m websockets URL``, websockets' interactive client, as the how-to uses it."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.process = process
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line)

    def type(self, line: str) -> None:
        """Type ``line`` and Enter: the client sends it."""
        assert self.process.stdin is not None
        self.process.stdin.write(f"{line}\n")
        self.process.stdin.flush()

    def output(self) -> str:
        """What it printed so far, terminal escapes removed."""
        return re.sub(r"\x1b(?:\[[0-9;]*[A-Za-z]|[78])", "", "".join(self.lines))

    def received(self) -> list[dict[str, Any]]:
        """The messages it printed as received (``< …``), decoded."""
        return [json.loads(line[2:]) for line in self.output().splitlines() if line[:2] == "< "]


@contextlib.contextmanager
def interactive_client(url: str) -> Iterator[InteractiveClient]:
    """``python -m websockets URL`` running; at the end, Ctrl-D (its input closed)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "websockets", url],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        yield InteractiveClient(process)
    finally:
        if process.stdin is not None:
            process.stdin.close()
        try:
            process.wait(timeout=WAIT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
