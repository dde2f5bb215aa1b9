"""Headless Chromium for the tests that need a real browser."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from playwright.sync_api import Browser, sync_playwright
from playwright.sync_api import Error as PlaywrightError

#: Debian's chromium package, used where installed (Playwright can't
#: download its own browser where only Debian and PyPI are reachable).
CHROMIUM = Path("/usr/bin/chromium")


@contextlib.contextmanager
def chromium() -> Iterator[Browser]:
    """Headless Chromium driven by Playwright: Debian's where installed, else
    the one `playwright install chromium` downloads."""
    executable = str(CHROMIUM) if CHROMIUM.exists() else None
    with sync_playwright() as playwright:
        try:
            browser = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        except PlaywrightError as exc:
            raise AssertionError(
                "no browser for this test: apt-get install chromium "
                f"(Debian), or .venv/bin/playwright install chromium\n{exc}"
            ) from None
        yield browser
        browser.close()
