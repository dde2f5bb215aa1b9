"""The stack under test: one the suite starts (compose), or one already running.

By default the suite starts a stack of its own with `make up`, under a compose
project and ports of its own (notifications-e2e, 18000 and 18888), and
removes it at the end: a stack the user runs is left alone. With
E2E_EXTERNAL_STACK=true it tests the running stack it is pointed at and leaves
it running (tests/e2e/stack.py). Either way, users and permissions are made
from the outside only: the administrator with the stack command's
`superuser` (make superuser), everyone else through the admin's HTML forms.
"""

from __future__ import annotations

import contextlib
import re
import secrets
import signal
from collections.abc import Iterator
from typing import Protocol

import pytest
from websockets.sync.client import ClientConnection

from .helpers import AdminSession, Person, authenticated
from .resuming import ResumingClients
from .stack import ROOT, Settings, Stack

ARTIFACTS = ROOT / "artifacts"
#: Lines of the stack's logs printed when something failed (all are in the file).
LOG_LINES_SHOWN = 200

_interrupted = False


def pytest_keyboard_interrupt() -> None:
    """Ctrl-C during the tests: the stack's teardown dumps the logs too."""
    global _interrupted
    _interrupted = True


@pytest.fixture(scope="session")
def suffix() -> str:
    """Makes this run's names unique: tests never depend on each other's data."""
    return secrets.token_hex(3)


@pytest.fixture(scope="session")
def stack(request: pytest.FixtureRequest, suffix: str) -> Iterator[Stack]:
    """The whole stack, healthy, with an administrator of this run's own.

    A stack the suite started is removed at the end, always.
    """
    settings = Settings.from_environment()
    stack = Stack(
        settings,
        admin_username=f"e2e-admin-{suffix}",
        admin_password=secrets.token_urlsafe(18),
    )
    failed = True
    try:
        if settings.external:
            stack.replicas = len(stack.broadcaster_ids())
            assert stack.replicas, f"{settings.command} broadcasters: none is running"
        else:
            stack.up()
            stack.replicas = int(settings.environment["BROADCASTERS"])
        stack.create_superuser()
        stack.wait_for_edge()
        failed = False
        yield stack
    finally:
        # A Ctrl-C now waits: the stack is removed whatever happens.
        with _deferred_interrupts():
            # testsfailed counts failures seen so far: at session teardown, all of them.
            if failed or request.session.testsfailed or _interrupted:
                _dump_logs(request, stack)
            if not settings.external:
                stack.down()


@contextlib.contextmanager
def _deferred_interrupts() -> Iterator[None]:
    """Hold SIGINT (Ctrl-C) back until the block is done, then raise it."""
    received: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if received:
        raise KeyboardInterrupt


def _dump_logs(request: pytest.FixtureRequest, stack: Stack) -> None:
    """Write every service's logs to artifacts/ and show their end on the terminal."""
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / "e2e-stack.log"
    try:
        output = stack.logs()
    except Exception as exc:  # the logs are a help; removing the stack matters more
        output = f"make logs failed: {exc!r}\n"
    path.write_text(re.sub(r"\x1b\[[0-9;]*m", "", output))  # compose colours the names
    tail = "\n".join(path.read_text().splitlines()[-LOG_LINES_SHOWN:])
    capture = request.config.pluginmanager.getplugin("capturemanager")
    disabled = capture.global_and_fixture_disabled() if capture else contextlib.nullcontext()
    with disabled:
        print(f"\n--- last {LOG_LINES_SHOWN} lines of the stack's logs (all in {path}) ---")
        print(tail)
        print("--- end of the stack's logs ---")


@pytest.fixture(scope="session")
def admin(stack: Stack) -> AdminSession:
    """The administrator, logged in to the admin with a real form post."""
    return AdminSession.login(stack.site_url, stack.admin_username, stack.admin_password)


@pytest.fixture
def make_person(admin: AdminSession, suffix: str) -> Iterator[PersonFactory]:
    """Creates staff users with permissions through the admin, each logged in."""
    made: list[Person] = []

    def make(name: str, *permissions: str) -> Person:
        person = admin.create_person(f"{name}-{suffix}-{secrets.token_hex(2)}", *permissions)
        made.append(person)
        return person

    yield make
    for person in made:
        person.session.close()


class PersonFactory(Protocol):
    """Type of :func:`make_person`: ``make_person(name, *permission_labels)``."""

    def __call__(self, name: str, *permissions: str) -> Person: ...


@pytest.fixture
def clients(stack: Stack) -> Iterator[ClientSet]:
    """Opens authenticated WebSocket clients; closes them all after the test."""
    with contextlib.ExitStack() as exits:
        yield ClientSet(exits)
    # Let the broadcasters forget them before the next test counts connections.
    stack.wait_for_connections(0)


class ClientSet:
    """Authenticated clients, closed when the test ends."""

    def __init__(self, exits: contextlib.ExitStack) -> None:
        self.exits = exits

    def open(self, person: Person, url: str) -> ClientConnection:
        """A client of ``person`` on ``url``, token sent (authentication may be pending)."""
        return self.exits.enter_context(authenticated(person, url))


@pytest.fixture
def resuming(stack: Stack) -> Iterator[ResumingClients]:
    """Starts resuming clients, each in a thread of its own; stops them all
    after the test (a test that restores the stack stops them before)."""
    clients = ResumingClients()
    try:
        yield clients
    finally:
        clients.stop()
    # Let the broadcasters forget them before the next test counts connections.
    stack.wait_for_connections(0)
