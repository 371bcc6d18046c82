"""The human-solver page serves every type a person can do on a page (issue 15): typed text (images,
text questions, recordings), squares picked on a grid, points clicked on an image, an image turned
upright. Each is solved in a real browser (Playwright driving Debian's chromium), and the customer then
reads exactly what the person did from res.php."""

from __future__ import annotations

import base64
import io
import os
from collections.abc import Iterator

import httpx
import pytest
from PIL import Image

from tests.browserkit import new_page, skip_without_browser
from tests.browserkit import sign_in_human as sign_in
from tests.browserkit import submit_when_served as submit
from tests.serverproc import ServerProcess, start_server
from tests.workerkit import worker_token

skip_without_browser()
from playwright.sync_api import Browser, Page, expect  # noqa: E402

pytestmark = pytest.mark.slow


def png(width: int, height: int) -> str:
    buf = io.BytesIO()
    Image.frombytes("L", (width, height), os.urandom(width * height)).save(buf, "PNG")
    return base64.b64encode(buf.getvalue()).decode()


@pytest.fixture(scope="module")
def human_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with start_server(tmp_path_factory.mktemp("human-types"), env={"CAPGATE_OCR": "0"}) as proc:
        yield proc


@pytest.fixture()
def page(browser: Browser) -> Iterator[Page]:
    with new_page(browser) as opened:
        yield opened


@pytest.fixture()
def session(human_server: ServerProcess, page: Page) -> Iterator[tuple[httpx.Client, str]]:
    """A signed-in person and a live customer key."""
    token = worker_token(human_server, f"person-{os.urandom(4).hex()}", "--human")
    key = human_server.create_key(sandbox=False, threads=200)
    with httpx.Client(base_url=human_server.base_url, timeout=30) as http:
        sign_in(page, human_server, token)
        expect(page.locator("#work")).to_be_visible()
        yield http, key
        # Leave nothing leased to this page once it closes (a lease that ran out would hand the task to
        # the next test's page): a last task, which the page then gives up for good.
        last = submit(http, key, method="base64", body=png(60, 30))
        expect(page.locator("#status")).to_have_text(f"Task {last}")
        with page.expect_response(lambda response: response.url.endswith(f"/tasks/{last}/fail")):
            page.evaluate("settle('fail', { error: 'ERROR_CAPTCHA_UNSOLVABLE', final: true })")
        assert result(http, key, last) == "ERROR_CAPTCHA_UNSOLVABLE"


def result(http: httpx.Client, key: str, task_id: str, json_mode: bool = False) -> str:
    params: dict[str, str | int] = {"key": key, "action": "get", "id": task_id, "wait": 10}
    if json_mode:
        params["json"] = 1
    return http.get("/res.php", params=params).text


def test_a_person_picks_squares_on_a_grid(session: tuple[httpx.Client, str], page: Page) -> None:
    http, key = session
    task_id = submit(http, key, method="base64", body=png(300, 300), recaptcha="1", recaptcharows="4",
                     recaptchacols="4", textinstructions="Select all squares with traffic lights")
    expect(page.locator("#status")).to_have_text(f"Task {task_id}")
    expect(page.locator("#kind")).to_have_text("Pick every square that matches")
    expect(page.locator("#hints")).to_have_text("Select all squares with traffic lights")
    cells = page.locator("#grid button")
    expect(cells).to_have_count(16)
    expect(page.locator("#answer")).to_be_hidden()
    for cell in (2, 7, 16, 3):
        cells.nth(cell - 1).click()
    cells.nth(2).click()  # picked again: dropped
    expect(page.locator("#grid button.on")).to_have_count(3)
    page.click("#submit")
    assert result(http, key, task_id) == "OK|[2,7,16]"
    expect(page.locator("#count")).to_have_text("1")


def test_a_person_clicks_points_on_an_image(session: tuple[httpx.Client, str], page: Page) -> None:
    http, key = session
    task_id = submit(http, key, method="base64", coordinatescaptcha="1", body=png(200, 100),
                     textinstructions="Click the apples", min_clicks="2", max_clicks="3")
    expect(page.locator("#status")).to_have_text(f"Task {task_id}")
    expect(page.locator("#kind")).to_have_text("Click the points asked for")
    expect(page.locator("#hints")).to_have_text("at least 2 clicks · at most 3 clicks · Click the apples")
    assert page.eval_on_selector("#image", "img => img.naturalWidth") == 200
    page.click("#image", position={"x": 50, "y": 25})
    page.click("#submit")  # one point of the two asked for: not sent
    expect(page.locator("#status")).to_have_text(f"Task {task_id}: click at least 2 points")
    page.click("#clear")
    expect(page.locator(".mark")).to_have_count(0)
    for x, y in ((10, 20), (150, 75), (199, 0), (5, 5)):  # the fourth is past max_clicks: not taken
        page.click("#image", position={"x": x, "y": y})
    expect(page.locator(".mark")).to_have_count(3)
    page.click("#submit")
    assert result(http, key, task_id) == "OK|coordinates:x=10,y=20;x=150,y=75;x=199,y=0"
    assert result(http, key, task_id, json_mode=True) == \
        '{"status":1,"request":[{"x":"10","y":"20"},{"x":"150","y":"75"},{"x":"199","y":"0"}]}'


def test_a_person_turns_an_image_upright(session: tuple[httpx.Client, str], page: Page) -> None:
    http, key = session
    task_id = submit(http, key, method="rotatecaptcha", body=png(100, 100), angle="30")
    expect(page.locator("#status")).to_have_text(f"Task {task_id}")
    expect(page.locator("#kind")).to_have_text("Turn the image upright")
    for button in ("#right", "#right", "#right", "#left"):
        page.click(button)
    expect(page.locator("#angle")).to_have_text("60°")
    assert page.eval_on_selector("#image", "img => img.style.transform") == "rotate(60deg)"
    page.click("#left")
    page.click("#left")
    page.click("#left")
    expect(page.locator("#angle")).to_have_text("330°")
    page.click("#submit")
    assert result(http, key, task_id) == "OK|330"


def test_a_person_answers_a_text_question(session: tuple[httpx.Client, str], page: Page) -> None:
    http, key = session
    question = "If tomorrow is Saturday, what day is today?"
    task_id = submit(http, key, method="post", textcaptcha=question, lang="en")
    expect(page.locator("#status")).to_have_text(f"Task {task_id}")
    expect(page.locator("#question")).to_have_text(question)
    expect(page.locator("#stage")).to_be_hidden()
    expect(page.locator("#answer")).to_be_focused()
    page.keyboard.type("Friday")
    page.keyboard.press("Enter")
    assert result(http, key, task_id) == "OK|Friday"


def test_a_person_writes_down_a_recording(session: tuple[httpx.Client, str], page: Page) -> None:
    http, key = session
    recording = b"ID3\x04\x00\x00\x00\x00\x00\x00" + os.urandom(400)
    task_id = submit(http, key, method="audio", body=base64.b64encode(recording).decode(), lang="en")
    expect(page.locator("#status")).to_have_text(f"Task {task_id}")
    expect(page.locator("#kind")).to_have_text("Type what you hear")
    expect(page.locator("#audio")).to_be_visible()
    source = page.get_attribute("#audio", "src") or ""
    assert base64.b64decode(source.removeprefix("data:audio/mpeg;base64,")) == recording
    expect(page.locator("#stage")).to_be_hidden()
    page.keyboard.type("seven two nine")
    page.keyboard.press("Enter")
    assert result(http, key, task_id) == "OK|seven two nine"
