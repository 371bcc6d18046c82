"""The human-solver page under its Content-Security-Policy, in a real browser (Playwright driving
Debian's chromium, as tests/test_human_page.py; skipped without it): the page's own script and style
run, nothing is reported as a violation, and no other page may frame it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.browserkit import new_page, skip_without_browser
from tests.serverproc import ServerProcess, start_server
from tests.workerkit import worker_token

skip_without_browser()
from playwright.sync_api import Browser, ConsoleMessage, Page, expect  # noqa: E402

pytestmark = pytest.mark.slow

WATCH = """
window.__violations = [];
document.addEventListener("securitypolicyviolation",
                          (e) => window.__violations.push(`${e.violatedDirective} ${e.blockedURI}`));
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with start_server(tmp_path_factory.mktemp("human-csp"), env={"CAPGATE_OCR": "0"}) as proc:
        yield proc


@pytest.fixture()
def page(browser: Browser) -> Iterator[Page]:
    with new_page(browser, WATCH) as opened:
        yield opened


def test_the_page_runs_under_its_policy(server: ServerProcess, page: Page) -> None:
    console: list[str] = []

    def record(message: ConsoleMessage) -> None:
        console.append(message.text)

    page.on("console", record)
    token = worker_token(server, "csp", "--human")
    response = page.goto(server.url("/human"))
    assert response is not None and "frame-ancestors 'none'" in response.headers["content-security-policy"]
    # The inline style applies (the body's font) and the inline script runs (signing in shows the work).
    assert "system-ui" in page.evaluate("getComputedStyle(document.body).fontFamily")
    page.fill("#token", token)
    page.click("#signin button[type=submit]")
    expect(page.locator("#work")).to_be_visible()
    expect(page.locator("#status")).to_have_text("Waiting for a task…")
    page.click("#signout")
    expect(page.locator("#signin")).to_be_visible()
    assert page.evaluate("window.__violations") == []
    assert not [text for text in console if "Content Security Policy" in text], console


def test_no_page_may_frame_it(server: ServerProcess, page: Page) -> None:
    page.goto(server.url("/healthz"))  # any page of another document: the frame's parent
    page.evaluate("""(url) => new Promise((resolve) => {
        const frame = document.createElement("iframe");
        frame.onload = () => resolve();
        frame.src = url;
        document.body.appendChild(frame);
        setTimeout(resolve, 5000);
    })""", server.url("/human"))
    framed = [frame for frame in page.frames if frame is not page.main_frame]
    assert framed
    assert all(frame.locator("#token").count() == 0 for frame in framed)
