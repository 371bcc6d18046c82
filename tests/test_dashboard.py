"""The dashboard (/admin) in a real browser: Playwright driving Debian's chromium. Sign in with an admin
token, see a task submitted during the test appear, top up an account and see its balance change, with
no console error; screenshots at a laptop's and a phone's size are kept in ``tests/artifacts/dashboard/``
(gitignored) for a person to look at."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.browserkit import new_page, skip_without_browser
from tests.serverproc import REPO, ServerProcess, start_server

skip_without_browser()
from playwright.sync_api import Browser, ConsoleMessage, Page, expect  # noqa: E402

pytestmark = pytest.mark.slow
ARTIFACTS = REPO / "tests" / "artifacts" / "dashboard"
TURNSTILE = {"method": "turnstile", "sitekey": "0x4AAAAAAA", "pageurl": "https://example.com/"}


@pytest.fixture(scope="module")
def dashboard_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with start_server(tmp_path_factory.mktemp("dashboard"), env={"CAPGATE_OCR": "0"}) as proc:
        yield proc


@pytest.fixture()
def page(browser: Browser) -> Iterator[tuple[Page, list[str]]]:
    with new_page(browser) as opened:
        problems: list[str] = []

        def console(message: ConsoleMessage) -> None:
            if message.type in ("error", "warning"):
                problems.append(f"console {message.type}: {message.text}")

        opened.on("console", console)
        opened.on("pageerror", lambda error: problems.append(f"page error: {error}"))
        yield opened, problems


def png() -> str:
    """A base64 PNG of grey noise, never the same twice (no duplicates), above the 100-byte floor."""
    import base64
    import io
    import os

    from PIL import Image

    buffer = io.BytesIO()
    Image.frombytes("L", (120, 40), os.urandom(120 * 40)).save(buffer, "PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def populate(server: ServerProcess, http: httpx.Client) -> None:
    """A few minutes of a small service's life, so the screenshots show every figure: tokens solved
    at different speeds, failures, a queue waiting for a worker, OCR answers reported good and bad."""
    farm = server.cli("workers", "create", "hcaptcha-farm", "--methods", "hcaptcha").stdout.strip().splitlines()[-1]
    assert http.post("/worker/v1/claim", json={}, headers={"Authorization": f"Bearer {farm}"}).status_code == 200
    shop = server.create_key(sandbox=True, threads=20, balance="25")
    live = server.create_key(sandbox=False, threads=8, balance="3")
    ids = []
    for n in range(12):
        method = ("turnstile", "userrecaptcha", "turnstile")[n % 3]
        extra = {"sitekey": f"0x4AAA{n}", "googlekey": f"6Le{n}" + "x" * 30}
        marker = "sandbox-unsolvable" if n % 5 == 4 else f"sandbox-slow-{(n % 4) * 0.2:.1f}"
        reply = http.post("/in.php", data={"key": shop, "method": method, "pageurl": f"https://shop.example/{marker}",
                                           **extra})
        assert reply.text.startswith("OK|"), reply.text
    for _ in range(6):
        reply = http.post("/in.php", data={"key": shop, "method": "base64", "body": png(),
                                           "textinstructions": "sandbox-answer-ab12"})
        assert reply.text.startswith("OK|"), reply.text
        ids.append(reply.text[3:])
    for n in range(3):
        reply = http.post("/in.php", data={"key": live, "method": "hcaptcha", "sitekey": f"s{n}",
                                           "pageurl": "https://forum.example/"})
        assert reply.text.startswith("OK|"), reply.text
    for n, task_id in enumerate(ids):
        assert http.get("/res.php", params={"key": shop, "action": "get", "id": task_id, "wait": "10"}).text \
            .startswith("OK|")
        action = "reportbad" if n == 0 else "reportgood"
        assert http.get("/res.php", params={"key": shop, "action": action, "id": task_id}).status_code == 200
    time.sleep(1.0)  # the slowest sandbox answers


def sign_in(page: Page, server: ServerProcess, token: str) -> None:
    page.goto(server.url("/admin"))
    expect(page).to_have_title("capgate · dashboard")
    expect(page.locator("#signin")).to_be_visible()
    page.fill("#token", token)
    page.click("#signin-form button[type=submit]")
    expect(page.locator("#nav")).to_be_visible()
    expect(page.locator("#signin")).to_be_hidden()


def test_sign_in_watch_a_task_and_top_up(dashboard_server: ServerProcess, page: tuple[Page, list[str]]) -> None:
    tab, problems = page
    server = dashboard_server
    admin = server.cli("admin-tokens", "create", "browser").stdout.strip().splitlines()[-1]
    key = server.create_key(sandbox=True, threads=4, balance="5")
    account_id = server.cli("keys", "list").stdout.split(f"{key[:6]}…")[0].split()[-1]

    tab.goto(server.url("/admin"))
    tab.fill("#token", "cga_" + "0" * 40)
    tab.click("#signin-form button[type=submit]")
    expect(tab.locator("#signin-error")).to_contain_text("unknown or disabled admin token")
    problems.clear()  # the refused sign-in's 401 is the browser's own console line; nothing after it may be
    sign_in(tab, server, admin)
    expect(tab.locator("#who")).to_have_text("browser")
    expect(tab.locator("#stat-accounts .value")).not_to_have_text("0")

    # A task submitted now appears on the tasks page without a reload, and settles there.
    tab.click("#nav a[data-view=tasks]")
    expect(tab.locator("#view h1")).to_have_text("Tasks")
    with httpx.Client(base_url=server.base_url, timeout=30) as http:
        submitted = http.post("/in.php", data={"key": key, **TURNSTILE})
        assert submitted.text.startswith("OK|"), submitted.text
        task_id = submitted.text[3:]
        expect(tab.locator("a.task-id", has_text=task_id)).to_be_visible()
        assert http.get("/res.php", params={"key": key, "action": "get", "id": task_id, "wait": "10"}).text \
            .startswith("OK|")
    row = tab.locator("tr", has=tab.locator("a.task-id", has_text=task_id))
    expect(row).to_contain_text("solved")
    tab.locator("a.task-id", has_text=task_id).click()
    expect(tab.locator("#view h1")).to_have_text(f"Task {task_id}")
    expect(tab.locator("#view")).to_contain_text("submitted")

    # Top up the account and see its balance change.
    tab.goto(server.url(f"/admin#/accounts/{account_id}"))
    balance = tab.locator(f".balance[data-account='{account_id}']")
    expect(balance).to_have_text("$5.00")
    tab.fill(".topup-amount", "2.5")
    tab.click("form.inline button[type=submit] >> text=Top up")
    expect(balance).to_have_text("$7.50")
    expect(tab.locator("#view")).to_contain_text("dashboard topup")

    # The overview, screenshotted at a laptop's and a phone's size once its figures are in.
    with httpx.Client(base_url=server.base_url, timeout=30) as http:
        populate(server, http)
    tab.click("#nav a[data-view=overview]")
    expect(tab.locator("#stat-pending .value")).to_have_text("3")
    expect(tab.locator("#view")).to_contain_text("83% of 6", timeout=30_000)  # 5 of 6 reported good
    expect(tab.locator("#stat-solved .value")).not_to_have_text("0")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for name, width, height in (("dashboard-1280x800.png", 1280, 800), ("dashboard-390x844.png", 390, 844)):
        tab.set_viewport_size({"width": width, "height": height})
        time.sleep(0.3)  # the layout settles at the new width
        tab.screenshot(path=str(ARTIFACTS / name), full_page=width < 800)
        assert (ARTIFACTS / name).stat().st_size > 10_000
    tab.set_viewport_size({"width": 1280, "height": 800})
    tab.click("#nav a[data-view=accounts]")
    expect(tab.locator("#view h1")).to_have_text("Accounts")
    tab.screenshot(path=str(ARTIFACTS / "accounts-1280x800.png"))
    tab.click("#nav a[data-view=workers]")
    expect(tab.locator("#view h1")).to_have_text("Workers")

    tab.click("#signout")
    expect(tab.locator("#signin")).to_be_visible()
    assert problems == []


def test_the_page_runs_nothing_but_its_own_files(dashboard_server: ServerProcess, tmp_path: Path) -> None:
    with httpx.Client(base_url=dashboard_server.base_url) as http:
        page = http.get("/admin")
        policy = page.headers["content-security-policy"]
        assert "script-src 'self'" in policy and "unsafe-inline" not in policy and "frame-ancestors 'none'" in policy
        assert "<script>" not in page.text and "http" not in page.text.replace("http-equiv", "")
        for asset in ("dashboard.js", "dashboard.css", "logo.svg"):
            assert http.get(f"/admin/static/{asset}").status_code == 200
        assert http.get("/admin/static/../app.py").status_code == 404
        assert http.get("/admin/static/landing.html").status_code == 404
        landing = http.get("/")
        assert landing.status_code == 200 and 'href="/admin"' in landing.text and 'href="/human"' in landing.text
        assert http.get("/dashboard", follow_redirects=False).headers["location"] == "/admin"
