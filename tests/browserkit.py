"""Debian's Chromium driven by Playwright, for the tests of the pages capgate serves.

A test module calls :func:`skip_without_browser` before importing Playwright's names, then uses the
``browser`` fixture (tests/conftest.py: one Chromium per module) and :func:`new_page` in its own.
"""

from __future__ import annotations

import contextlib
import importlib.util
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest

from tests.serverproc import ServerProcess

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]


def skip_without_browser() -> None:
    """Skip the calling module, saying why, when Playwright or Debian's chromium is missing."""
    if importlib.util.find_spec("playwright") is None:  # pragma: no cover - the dev extra installs it
        pytest.skip("playwright is not installed (pip install -e '.[dev]')", allow_module_level=True)
    if not CHROMIUM.exists():  # pragma: no cover
        pytest.skip("Debian's chromium is not installed (make browser)", allow_module_level=True)


@contextlib.contextmanager
def chromium() -> Iterator[Browser]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=ARGS)
        yield launched
        launched.close()


@contextlib.contextmanager
def new_page(browser: Browser, init_script: str | None = None) -> Iterator[Page]:
    """A page in a fresh context (no cookies or storage shared between tests)."""
    context = browser.new_context()
    opened = context.new_page()
    opened.set_default_timeout(15_000)
    if init_script is not None:
        opened.add_init_script(init_script)
    yield opened
    context.close()


def sign_in_human(page: Page, server: ServerProcess, token: str) -> None:
    """The human-solver page, signed in with a worker token."""
    from playwright.sync_api import expect

    page.goto(server.url("/human"))
    expect(page).to_have_title("capgate · human solver")
    page.fill("#token", token)
    page.click("#signin button[type=submit]")


def submit_when_served(http: httpx.Client, key: str, **params: str) -> str:
    """in.php's task id, retried until the page's first claim has told the service the type is served."""
    for _ in range(80):
        reply = http.post("/in.php", data={"key": key, **params})
        if reply.text != "ERROR_NO_SLOT_AVAILABLE":
            break
        time.sleep(0.1)
    assert reply.text.startswith("OK|"), reply.text
    return reply.text[3:]
