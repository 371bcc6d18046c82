"""The human-solver page (GET /human) in a real browser: Playwright driving Debian's chromium
(``make browser`` installs it; the tests skip without it)."""

from __future__ import annotations

import base64
import io
import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from PIL import Image

from tests.browserkit import new_page, skip_without_browser
from tests.browserkit import sign_in_human as sign_in
from tests.browserkit import submit_when_served as submit
from tests.serverproc import ServerProcess, start_server
from tests.workerkit import worker_token

skip_without_browser()
from playwright.sync_api import Browser, Dialog, Page, expect  # noqa: E402

pytestmark = pytest.mark.slow


def png(width: int = 120, height: int = 40) -> bytes:
    buf = io.BytesIO()
    Image.frombytes("L", (width, height), os.urandom(width * height)).save(buf, "PNG")
    data = buf.getvalue()
    assert len(data) >= 100
    return data


@pytest.fixture(scope="module")
def human_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with start_server(tmp_path_factory.mktemp("human-page"), env={"CAPGATE_OCR": "0"}) as proc:
        yield proc


@pytest.fixture()
def page(browser: Browser) -> Iterator[Page]:
    with new_page(browser) as opened:
        yield opened


def test_a_person_solves_an_image_task(human_server: ServerProcess, page: Page, tmp_path: Path) -> None:
    token = worker_token(human_server, "alice", "--human")
    key = human_server.create_key(sandbox=False, threads=200)
    image = png()
    with httpx.Client(base_url=human_server.base_url, timeout=30) as http:
        sign_in(page, human_server, token)
        expect(page.locator("#work")).to_be_visible()
        expect(page.locator("#signin")).to_be_hidden()
        task_id = submit(http, key, method="base64", body=base64.b64encode(image).decode(), numeric="1",
                         min_len="4", max_len="4")

        expect(page.locator("#status")).to_have_text(f"Task {task_id}")
        expect(page.locator("#task")).to_be_visible()
        expect(page.locator("#hints")).to_have_text("digits only · at least 4 characters · at most 4 characters")
        source = page.get_attribute("#image", "src") or ""
        assert base64.b64decode(source.removeprefix("data:image/png;base64,")) == image
        assert page.eval_on_selector("#image", "img => img.naturalWidth") == 120  # the browser decoded it
        expect(page.locator("#answer")).to_be_focused()

        page.keyboard.type("4821")
        shot = page.screenshot(path=str(tmp_path / "human-page.png"), full_page=True)
        assert shot.startswith(b"\x89PNG")
        page.keyboard.press("Enter")
        assert http.get("/res.php", params={"key": key, "action": "get", "id": task_id, "wait": 10}).text \
            == "OK|4821"
        expect(page.locator("#count")).to_have_text("1")
        expect(page.locator("#task")).to_be_hidden()  # waiting for the next one

        # The page is long-polling again; give it a task so no claim is left open when the server stops.
        last = submit(http, key, method="base64", body=base64.b64encode(png()).decode())
        expect(page.locator("#status")).to_have_text(f"Task {last}")


@pytest.mark.parametrize("who", ["customer-key", "unknown-token"])
def test_a_refused_token_signs_out(human_server: ServerProcess, page: Page, who: str) -> None:
    key = human_server.create_key(sandbox=False, threads=200)
    token = key if who == "customer-key" else "cgw_" + "0" * 40
    messages: list[str] = []

    def dismiss(dialog: Dialog) -> None:
        messages.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", dismiss)
    sign_in(page, human_server, token)
    expect(page.locator("#signin")).to_be_visible()
    expect(page.locator("#work")).to_be_hidden()
    assert len(messages) == 1
    assert ("cgw_" if who == "customer-key" else "unknown or disabled worker token") in messages[0]
    assert page.evaluate("sessionStorage.getItem('capgate-token')") is None


def test_cant_read_it_gives_the_task_up(human_server: ServerProcess, page: Page) -> None:
    token = worker_token(human_server, "bob", "--human")
    key = human_server.create_key(sandbox=False, threads=200)
    with httpx.Client(base_url=human_server.base_url, timeout=30) as http:
        sign_in(page, human_server, token)
        expect(page.locator("#work")).to_be_visible()
        task_id = submit(http, key, method="base64", body=base64.b64encode(png()).decode())
        expect(page.locator("#status")).to_have_text(f"Task {task_id}")
        # Each press fails the attempt; the task may come back (to this page) until its attempts are used.
        for _ in range(5):
            lease = page.evaluate("current.lease")
            with page.expect_response(lambda response: response.url.endswith(f"/tasks/{task_id}/fail")):
                page.click("#skip")
            reply = http.get("/res.php", params={"key": key, "action": "get", "id": task_id}).text
            if reply != "CAPCHA_NOT_READY":
                break
            page.wait_for_function("(old) => current !== null && current.lease !== old", arg=lease)
            expect(page.locator("#status")).to_have_text(f"Task {task_id}")
        assert reply == "ERROR_CAPTCHA_UNSOLVABLE"
        expect(page.locator("#count")).to_have_text("0")
        last = submit(http, key, method="base64", body=base64.b64encode(png()).decode())
        expect(page.locator("#status")).to_have_text(f"Task {last}")


def test_the_page_holds_an_answer_to_the_tasks_hints(human_server: ServerProcess, page: Page) -> None:
    """The input carries the task's length hints, and what the browser lets through the server refuses
    with the reason (issue 16): the task stays on screen to be corrected, nothing is settled."""
    token = worker_token(human_server, "carol", "--human")
    key = human_server.create_key(sandbox=False, threads=200)
    with httpx.Client(base_url=human_server.base_url, timeout=30) as http:
        sign_in(page, human_server, token)
        expect(page.locator("#work")).to_be_visible()
        task_id = submit(http, key, method="base64", body=base64.b64encode(png()).decode(), numeric="1",
                         min_len="5", max_len="6")
        expect(page.locator("#status")).to_have_text(f"Task {task_id}")
        assert page.get_attribute("#answer", "minlength") == "5"
        assert page.get_attribute("#answer", "maxlength") == "6"
        assert page.get_attribute("#answer", "inputmode") == "numeric"
        page.keyboard.type("1234567")
        expect(page.locator("#answer")).to_have_value("123456")  # the seventh character is not taken

        with page.expect_response(lambda response: response.url.endswith(f"/tasks/{task_id}/answer")) as sent:
            page.evaluate("settle('answer', { answer: { text: '12a45' } })")
        assert sent.value.status == 422
        expect(page.locator("#status")).to_contain_text("digits only")
        expect(page.locator("#task")).to_be_visible()
        assert http.get("/res.php", params={"key": key, "action": "get", "id": task_id}).text == "CAPCHA_NOT_READY"

        page.fill("#answer", "12345")
        page.keyboard.press("Enter")
        assert http.get("/res.php", params={"key": key, "action": "get", "id": task_id, "wait": 10}).text \
            == "OK|12345"
        expect(page.locator("#count")).to_have_text("1")
        last = submit(http, key, method="base64", body=base64.b64encode(png()).decode())
        expect(page.locator("#status")).to_have_text(f"Task {last}")
