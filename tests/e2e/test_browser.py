"""The live page, in a real browser: it connects, shows changes, and resumes
where it was after a disconnection, or says that it could not."""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, Route, expect
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

from tests.browser import chromium

from .conftest import ARTIFACTS, PersonFactory
from .helpers import VIEW_GROUP, AdminSession, Person, authenticated, receive_until
from .stack import WAIT, Stack


@pytest.fixture
def browser() -> Iterator[Browser]:
    with chromium() as browser:
        yield browser


#: Keeps every state the page's status line goes through in window.statusLog.
RECORD_STATUS = """() => {
  window.statusLog = [];
  const status = document.getElementById("status");
  new MutationObserver(() => {
    window.statusLog.push({ state: status.dataset.state, text: status.textContent });
  }).observe(status, { attributes: true, childList: true, characterData: true, subtree: true });
}"""


#: Where live.js keeps the last id it got (sessionStorage, per tab).
STORED_ID = "notifications.lastId"

#: True once the status line has said "connected" (recorded by RECORD_STATUS).
RECONNECTED = "() => window.statusLog.some((s) => s.state === 'connected')"


def wait_connected(page: Page) -> None:
    """Wait for the page to say it is connected; fail with what it says instead.

    The page says so when the server's welcome arrives: authenticated, and
    positioned in the event log (what follows reaches it).
    """
    try:
        page.wait_for_selector('#status[data-state="connected"]', timeout=WAIT * 1000)
    except PlaywrightTimeoutError:
        status = page.locator("#status").text_content()
        raise AssertionError(f"the page didn't connect within {WAIT} s: {status!r}") from None


def open_live_page(context: BrowserContext, stack: Stack, person: Person) -> Page:
    """Log ``person`` in through the admin's login page, landing on the live page."""
    page = context.new_page()
    page.goto(f"{stack.site_url}/admin/login/?next=/")
    page.fill("#id_username", person.username)
    page.fill("#id_password", person.password)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(f"{stack.site_url}/", timeout=WAIT * 1000)
    wait_connected(page)
    return page


class HeldTokens:
    """Holds the page's token requests until :meth:`release`: meanwhile it
    can't reconnect (it waits on the request; nothing times out)."""

    def __init__(self, page: Page) -> None:
        self.held: list[Route] = []
        self.released = False
        page.route("**/api/token/", self._handle)

    def _handle(self, route: Route) -> None:
        if self.released:
            route.continue_()
        else:
            self.held.append(route)

    def release(self) -> None:
        self.released = True
        while self.held:
            self.held.pop(0).continue_()


def test_live_page_shows_changes_and_resumes(
    stack: Stack, admin: AdminSession, make_person: PersonFactory, browser: Browser
) -> None:
    """A user who may view groups logs in through the admin's login page, lands
    on the live page, and sees a group change appear. When its broadcaster
    restarts, the page reconnects by itself with its last id, and shows the
    change made while it was disconnected: nothing is missed, nothing said."""
    viewer = make_person("viewer", VIEW_GROUP)
    context = browser.new_context()
    try:
        page = open_live_page(context, stack, viewer)
        counts = stack.wait_for_connections(1)
        expect(page.locator("#missed")).to_have_count(0)

        name = f"browser-{secrets.token_hex(4)}"
        group_pk = admin.add_group(name)
        latest = page.locator("#events li").first
        expect(latest).to_contain_text(name, timeout=WAIT * 1000)
        expect(latest).to_contain_text("added")
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=ARTIFACTS / "live-page.png", full_page=True)

        # Restart the replica holding the page's connection: it closes it
        # with 1001 while shutting down. The page's next token is held back
        # until a change has been made and delivered to another client.
        page.evaluate(RECORD_STATUS)
        tokens = HeldTokens(page)
        (holder,) = (replica for replica, count in counts.items() if count == 1)
        stack.restart(holder)
        page.wait_for_function(
            "() => window.statusLog.some((s) => s.state === 'waiting')", timeout=WAIT * 1000
        )
        renamed = f"{name}-renamed"
        with authenticated(admin, stack.ws_site_url) as watcher:
            stack.wait_for_connections(1)  # the watcher; the page is held
            admin.change("auth/group", group_pk, {"name": renamed})
            receive_until(watcher, lambda event: event.get("object") == renamed)
        states = page.evaluate("window.statusLog")
        assert not any(state["state"] == "connected" for state in states), states

        tokens.release()
        page.wait_for_function(RECONNECTED, timeout=WAIT * 1000)
        states = page.evaluate("window.statusLog")
        assert states[0]["state"] == "waiting", states
        assert "1001 server shutting down" in states[0]["text"], states
        expect(latest).to_contain_text(renamed, timeout=WAIT * 1000)
        expect(latest).to_contain_text("changed")
        expect(page.locator("#events li")).to_have_count(2)
        expect(page.locator("#missed")).to_have_count(0)
    finally:
        context.close()
        # Back to the stack's replicas, all reachable, for the next tests.
        stack.restore()


def test_live_page_resumes_after_leaving_and_says_when_it_cannot(
    stack: Stack, admin: AdminSession, make_person: PersonFactory, browser: Browser
) -> None:
    """Back on the live page after a visit to the admin, the user sees what
    changed meanwhile. When the page's last id is one the server can't
    honour, the page says that changes may have been missed, links to the
    admin, and goes on showing new changes."""
    viewer = make_person("viewer", VIEW_GROUP)
    context = browser.new_context()
    try:
        page = open_live_page(context, stack, viewer)
        first = f"browser-{secrets.token_hex(4)}"
        admin.add_group(first)
        latest = page.locator("#events li").first
        expect(latest).to_contain_text(first, timeout=WAIT * 1000)

        # Away: the page's connection closes. Back: a new page, same tab.
        page.goto(f"{stack.site_url}/admin/")
        while_away = f"browser-{secrets.token_hex(4)}"
        admin.add_group(while_away)
        page.goto(f"{stack.site_url}/")
        wait_connected(page)
        expect(latest).to_contain_text(while_away, timeout=WAIT * 1000)
        expect(page.locator("#events li")).to_have_count(1)
        expect(page.locator("#missed")).to_have_count(0)

        page.evaluate("(key) => window.sessionStorage.setItem(key, 'bogus')", STORED_ID)
        page.reload()
        wait_connected(page)
        notice = page.locator("#missed")
        expect(notice).to_be_visible()
        expect(notice).to_contain_text(
            "Some changes may have been missed while this page was disconnected."
        )
        expect(notice.get_by_role("link")).to_have_attribute("href", "/admin/")
        expect(page.locator("#events li")).to_have_count(0)
        after = f"browser-{secrets.token_hex(4)}"
        admin.add_group(after)
        expect(latest).to_contain_text(after, timeout=WAIT * 1000)
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=ARTIFACTS / "live-page-missed.png", full_page=True)
    finally:
        context.close()
        stack.wait_for_connections(0)


def test_live_page_says_signed_out_when_access_is_revoked(
    stack: Stack, admin: AdminSession, make_person: PersonFactory, browser: Browser
) -> None:
    """The administrator deactivates a user whose live page is open, through
    the admin's user form: the page's connection is closed with 1008 "access
    revoked", its one token request is refused (the session went with the
    user), and it says the user is signed out instead of retrying."""
    viewer = make_person("viewer", VIEW_GROUP)
    context = browser.new_context()
    try:
        page = open_live_page(context, stack, viewer)
        page.evaluate(RECORD_STATUS)
        admin.deactivate(viewer.pk)
        status = page.locator('#status[data-state="signed-out"]')
        expect(status).to_contain_text("Signed out", timeout=WAIT * 1000)
        expect(status.get_by_role("link")).to_have_attribute("href", re.compile("/admin/login/"))
        states = [s["state"] for s in page.evaluate("() => window.statusLog")]
        assert "waiting" not in states, states  # asked once, at once: no backoff
    finally:
        context.close()
        stack.wait_for_connections(0)


def test_live_page_shows_the_users_own_events(
    stack: Stack, admin: AdminSession, make_person: PersonFactory, browser: Browser
) -> None:
    """The demo's own events on the live page: the administrator puts the user
    in a group (the user is told), then renames the group (its members are
    told). Another user, not in the group, is told neither: the admin's own
    event of the rename, which both may see, comes after, and shows alone."""
    member, other = make_person("member", VIEW_GROUP), make_person("other", VIEW_GROUP)
    name = f"browser-team-{secrets.token_hex(4)}"
    group_pk = admin.add_group(name)
    context, other_context = browser.new_context(), browser.new_context()  # a session each
    try:
        page = open_live_page(context, stack, member)
        other_page = open_live_page(other_context, stack, other)
        stack.wait_for_connections(2)

        admin.set_groups(member.pk, name)
        told_first = page.locator("#events li.app").first
        expect(told_first).to_contain_text(
            "An administrator changed your groups.", timeout=WAIT * 1000
        )
        admin.change("auth/group", group_pk, {"name": f"{name}-renamed"})
        told = page.locator("#events li.app").first
        expect(told).to_contain_text(
            f"Your group “{name}” is now called “{name}-renamed”.", timeout=WAIT * 1000
        )
        expect(page.locator("#events li.app")).to_have_count(2)
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=ARTIFACTS / "live-page-own-events.png", full_page=True)
        renamed_line = other_page.locator("#events li.changed")
        expect(renamed_line).to_contain_text(f"{name}-renamed", timeout=WAIT * 1000)
        expect(other_page.locator("#events li.app")).to_have_count(0)
    finally:
        context.close()
        other_context.close()
        stack.wait_for_connections(0)
