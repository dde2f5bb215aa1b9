"""The browser client (static/live_notifications/client.js) in Chromium.

The page under test (urls_client_page.py) is a few lines that use only the
documented API (docs/reference/javascript-api.md), served with the token
endpoint and the static files by pytest-django's live server; the
broadcasters and the relay are real processes. Where a reconnection must
come from the browser's ``online`` or ``visibilitychange`` event, the
client's delays are an hour: the timer can't be what brings it back.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.contrib.auth.models import Group, User
from django.test import Client
from playwright.sync_api import Browser, BrowserContext, Page

from live_notifications.events import publish
from tests.browser import chromium
from tests.servers import BroadcasterProcess, wait_until

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.urls("live_notifications.tests.urls_client_page"),
]

#: Seconds the browser gets for what the test waits on.
WAIT = 30

#: The client's delays (urls_client_page.DELAYS): quick retries, or an hour.
QUICK, NEVER = "quick", "never"


@pytest.fixture
def browser(monkeypatch: pytest.MonkeyPatch) -> Iterator[Browser]:
    # Playwright's sync API keeps an event loop in this thread, which Django
    # takes for async code; the ORM calls of these tests are plain sync ones.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    with chromium() as browser:
        yield browser


@pytest.fixture
def start_site_broadcaster(
    live_server: Any, start_broadcaster: Callable[..., BroadcasterProcess], settings: Any
) -> Callable[..., BroadcasterProcess]:
    """Broadcasters that accept the live server's origin; the token
    endpoint sends clients to the last one started."""

    def start(port: int | None = None) -> BroadcasterProcess:
        broadcaster = start_broadcaster(port=port, DJANGO_CSRF_TRUSTED_ORIGINS=live_server.url)
        settings.LIVE_NOTIFICATIONS_WEBSOCKET_URL = f"ws://localhost:{broadcaster.port}/"
        return broadcaster

    return start


@pytest.fixture
def open_page(browser: Browser, live_server: Any) -> Iterator[Callable[[User, str], Page]]:
    """Opens the page of the live server's origin, signed in as a user, with
    the client's delays given; connected. Their browser contexts are closed
    after the test."""
    contexts: list[BrowserContext] = []

    def open_page(who: User, delays: str) -> Page:
        client = Client()
        client.force_login(who)
        context = browser.new_context()
        contexts.append(context)
        cookie = client.cookies[django_settings.SESSION_COOKIE_NAME].value
        context.add_cookies(
            [{"name": django_settings.SESSION_COOKIE_NAME, "value": cookie, "url": live_server.url}]
        )
        page = context.new_page()
        page.goto(f"{live_server.url}/client-test/?delays={delays}")
        wait_for_status(page, "connected")
        return page

    yield open_page
    for context in contexts:
        context.close()


def log(page: Page) -> dict[str, Any]:
    found: dict[str, Any] = page.evaluate("window.log")
    return found


def wait_for_status(page: Page, status: str, count: int = 1) -> None:
    page.wait_for_function(
        f"window.log && window.log.statuses.filter((s) => s.status === {json.dumps(status)})"
        f".length >= {count}",
        timeout=WAIT * 1000,
    )


def wait_for_message(page: Page, name: str) -> list[str]:
    """Wait for app event ``name``; return the names of the app events so far."""
    page.wait_for_function(
        f"window.log.messages.some((m) => m.event === {json.dumps(name)})", timeout=WAIT * 1000
    )
    return [m["event"] for m in log(page)["messages"] if "event" in m]


def test_a_page_receives_its_events_and_resumes_across_a_restart(
    open_page: Callable[[User, str], Page],
    start_site_broadcaster: Callable[..., BroadcasterProcess],
) -> None:
    broadcaster = start_site_broadcaster()
    alice, bob = User.objects.create_user("alice"), User.objects.create_user("bob")
    team = Group.objects.create(name="team")
    alice.groups.add(team)
    page = open_page(alice, QUICK)
    publish("for.bob", None, users=[bob])
    publish("for.team", {"n": 1}, groups=[team])
    assert wait_for_message(page, "for.team") == ["for.team"]
    broadcaster.terminate()  # 1001: the client waits, then comes back resuming
    wait_for_status(page, "waiting")
    publish("while.away", {"n": 2}, users=[alice])
    start_site_broadcaster(port=broadcaster.port)
    wait_for_status(page, "connected", count=2)
    publish("after", None, everyone=True)
    assert wait_for_message(page, "after") == ["for.team", "while.away", "after"]
    assert log(page)["missed"] == 0
    assert page.evaluate("window.live.lastId") == log(page)["messages"][-1]["id"]


def test_a_resume_that_cant_be_honoured_is_said(
    open_page: Callable[[User, str], Page],
    start_site_broadcaster: Callable[..., BroadcasterProcess],
) -> None:
    start_site_broadcaster()
    alice = User.objects.create_user("alice")
    page = open_page(alice, QUICK)
    page.evaluate("window.sessionStorage.setItem('notifications.lastId', 'x:1-0')")
    page.reload()
    wait_for_status(page, "connected")
    assert log(page)["missed"] == 1


def test_back_online_it_reconnects_at_once(
    open_page: Callable[[User, str], Page],
    start_site_broadcaster: Callable[..., BroadcasterProcess],
) -> None:
    broadcaster = start_site_broadcaster()
    alice = User.objects.create_user("alice")
    page = open_page(alice, NEVER)
    page.context.set_offline(True)
    broadcaster.kill()  # the network is cut: the connection drops
    wait_for_status(page, "waiting")
    publish("while.offline", None, users=[alice])
    start_site_broadcaster(port=broadcaster.port)
    page.context.set_offline(False)  # "online": now, not in an hour
    assert wait_for_message(page, "while.offline") == ["while.offline"]
    assert [s["status"] for s in log(page)["statuses"]][-3:] == [
        "waiting",
        "connecting",
        "connected",
    ]


def test_a_hidden_tab_made_visible_reconnects_at_once(
    open_page: Callable[[User, str], Page],
    start_site_broadcaster: Callable[..., BroadcasterProcess],
) -> None:
    broadcaster = start_site_broadcaster()
    alice = User.objects.create_user("alice")
    page = open_page(alice, NEVER)
    broadcaster.kill()
    wait_for_status(page, "waiting")
    start_site_broadcaster(port=broadcaster.port)
    # Headless tabs are always visible: the browser's event, as it comes
    # when the user switches back to the tab.
    page.evaluate("document.dispatchEvent(new Event('visibilitychange'))")
    wait_for_status(page, "connected", count=2)


def test_revoked_access_signs_out_and_stops(
    open_page: Callable[[User, str], Page],
    start_site_broadcaster: Callable[..., BroadcasterProcess],
) -> None:
    broadcaster = start_site_broadcaster()
    alice = User.objects.create_user("alice")
    page = open_page(alice, QUICK)
    alice.is_active = False
    alice.save()  # announced: 1008, then the token endpoint says 401
    wait_for_status(page, "signed-out")
    statuses = [s["status"] for s in log(page)["statuses"]]
    assert statuses == ["connecting", "connected", "connecting", "signed-out"]
    assert page.evaluate("window.live.status") == "signed-out"
    wait_until(lambda: broadcaster.metrics()["broadcaster_connections"] == 0, "no connection")


def test_close_disconnects_for_good(
    open_page: Callable[[User, str], Page],
    start_site_broadcaster: Callable[..., BroadcasterProcess],
) -> None:
    broadcaster = start_site_broadcaster()
    alice = User.objects.create_user("alice")
    page = open_page(alice, QUICK)
    wait_until(lambda: broadcaster.metrics()["broadcaster_connections"] == 1, "connected")
    page.evaluate("window.live.close()")
    wait_until(lambda: broadcaster.metrics()["broadcaster_connections"] == 0, "closed")
    assert page.evaluate("window.live.status") == "closed"
    publish("after.close", None, users=[alice])
    publish("sentinel", None, users=[alice])
    page.evaluate("window.live.start()")  # resumes where it was
    assert wait_for_message(page, "sentinel") == ["after.close", "sentinel"]
