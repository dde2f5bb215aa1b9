"""The live page, in a real browser: it connects, shows changes, and recovers."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright
from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

from .conftest import ARTIFACTS, PersonFactory
from .helpers import VIEW_GROUP, AdminSession
from .stack import WAIT, Stack

#: Debian's chromium package, used where installed (Playwright can't
#: download its own browser where only Debian and PyPI are reachable).
CHROMIUM = Path("/usr/bin/chromium")


@pytest.fixture
def browser() -> Iterator[Browser]:
    """Headless Chromium driven by Playwright: Debian's where installed, else
    the one `playwright install chromium` downloads."""
    executable = str(CHROMIUM) if CHROMIUM.exists() else None
    with sync_playwright() as playwright:
        try:
            browser = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        except PlaywrightError as exc:
            raise AssertionError(
                "no browser for the live page's test: apt-get install chromium "
                f"(Debian), or .venv/bin/playwright install chromium\n{exc}"
            ) from None
        yield browser
        browser.close()


#: Keeps every state the page's status line goes through in window.statusLog.
RECORD_STATUS = """() => {
  window.statusLog = [];
  const status = document.getElementById("status");
  new MutationObserver(() => {
    window.statusLog.push({ state: status.dataset.state, text: status.textContent });
  }).observe(status, { attributes: true, childList: true, characterData: true, subtree: true });
}"""


def wait_connected(page: Page) -> None:
    """Wait for the page to say it is connected; fail with what it says instead."""
    try:
        page.wait_for_selector('#status[data-state="connected"]', timeout=WAIT * 1000)
    except PlaywrightTimeoutError:
        status = page.locator("#status").text_content()
        raise AssertionError(f"the page didn't connect within {WAIT} s: {status!r}") from None


def test_live_page_shows_changes_and_recovers(
    stack: Stack, admin: AdminSession, make_person: PersonFactory, browser: Browser
) -> None:
    """A user who may view groups logs in through the admin's login page, lands
    on the live page, and sees a group change appear. When its broadcaster
    restarts, the page reconnects by itself and shows the next change."""
    viewer = make_person("viewer", VIEW_GROUP)
    context = browser.new_context()
    try:
        page = context.new_page()
        page.goto(f"{stack.site_url}/admin/login/?next=/")
        page.fill("#id_username", viewer.username)
        page.fill("#id_password", viewer.password)
        page.get_by_role("button", name="Log in").click()
        page.wait_for_url(f"{stack.site_url}/", timeout=WAIT * 1000)
        wait_connected(page)
        # "connected" means the socket is open; the token is checked after that.
        counts = stack.wait_for_connections(1)

        name = f"browser-{secrets.token_hex(4)}"
        group_pk = admin.add_group(name)
        latest = page.locator("#events li").first
        expect(latest).to_contain_text(name, timeout=WAIT * 1000)
        expect(latest).to_contain_text("added")
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=ARTIFACTS / "live-page.png", full_page=True)

        # Restart the replica holding the page's connection: it closes it
        # with 1001 while shutting down; the page gets a new token and returns.
        page.evaluate(RECORD_STATUS)
        (holder,) = (replica for replica, count in counts.items() if count == 1)
        stack.restart(holder)
        page.wait_for_function(
            "() => window.statusLog.some((s) => s.state === 'connected')", timeout=WAIT * 1000
        )
        states = page.evaluate("window.statusLog")
        assert states[0]["state"] == "waiting", states
        assert "1001 server shutting down" in states[0]["text"], states
        stack.wait_for_connections(1)
        renamed = f"{name}-renamed"
        admin.change("auth/group", group_pk, {"name": renamed})
        expect(latest).to_contain_text(renamed, timeout=WAIT * 1000)
        expect(page.locator("#events li")).to_have_count(2)
    finally:
        context.close()
        # Back to the stack's replicas, all reachable, for the next tests.
        stack.restore()
