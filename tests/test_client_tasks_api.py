"""capgate.client with ``api="tasks"``: 2captcha's JSON task API, the same typed answers and exceptions.

Unit tests read the exact requests on an httpx MockTransport and feed it the API's replies; integration
tests run against the in-process app (sandbox keys), sync and async."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from capgate.cli import main
from capgate.client import (
    AsyncClient,
    AuthError,
    BadInputError,
    Client,
    ProtocolError,
    TextAnswer,
    TokenAnswer,
    UnsolvableError,
)
from capgate.protocol.methods import METHODS, Method
from tests.appkit import AppHost
from tests.serverproc import ServerProcess
from tests.test_client_integration import check, params_for, png

KEY = "a" * 32
# Rows no JSON task type reaches: BLS, Cloudflare's challenge page, and GeeTest v4 (its task is GeeTest's
# with version 4, which the client does not add).
UNREACHED = {"bls", "cloudflare_challenge", "geetest_v4"}


# ------------------------------------------------------------------------------------------ unit


def mock(replies: list[dict[str, Any]], seen: list[httpx.Request]) -> Client:
    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=replies.pop(0))

    now = [0.0]  # the client's clock, moved on by its sleeps

    def sleep(seconds: float) -> None:
        now[0] += seconds

    return Client("https://api.example.test", KEY, api="tasks", transport=httpx.MockTransport(handle),
                  clock=lambda: now[0], sleep=sleep)


def body(request: httpx.Request) -> Any:
    assert request.method == "POST" and request.headers["content-type"] == "application/json"
    return json.loads(request.content)


def test_a_solve_is_create_task_then_get_task_result() -> None:
    seen: list[httpx.Request] = []
    client = mock([{"errorId": 0, "taskId": 7001}, {"errorId": 0, "status": "processing"},
                   {"errorId": 0, "status": "ready", "solution": {"gRecaptchaResponse": "T", "token": "T"},
                    "cost": "0.00", "ip": "1.2.3.4", "createTime": 1, "endTime": 2, "solveCount": 1}], seen)
    solution = client.recaptcha_v2("6Le-wvkS", "https://site.test/p", invisible=True)
    assert solution.task_id == "7001" and solution.answer == TokenAnswer("T")
    assert [str(r.url) for r in seen] == ["https://api.example.test/createTask",
                                          "https://api.example.test/getTaskResult",
                                          "https://api.example.test/getTaskResult"]
    assert body(seen[0]) == {"clientKey": KEY, "task": {"type": "RecaptchaV2TaskProxyless",
                                                        "websiteKey": "6Le-wvkS", "websiteURL": "https://site.test/p",
                                                        "isInvisible": True}}
    assert body(seen[1]) == {"clientKey": KEY, "taskId": 7001}


def test_image_fields_proxy_and_callback() -> None:
    seen: list[httpx.Request] = []
    client = mock([{"errorId": 0, "taskId": 5}, {"errorId": 0, "taskId": 6}], seen)
    client.submit("normal", image=png("x"), regsense=True, textinstructions="type it")
    client.submit("recaptcha_v2", pingback="https://hooks.test/cb", googlekey="k", pageurl="https://s.test",
                  proxy="u:p@10.0.0.1:3128", proxytype="HTTPS")
    image = body(seen[0])["task"]
    assert image["type"] == "ImageToTextTask" and image["case"] == "1" and image["comment"] == "type it"
    assert image["body"].startswith("iVBOR")
    proxied = body(seen[1])
    assert proxied["callbackUrl"] == "https://hooks.test/cb"
    assert proxied["task"] == {"type": "RecaptchaV2Task", "websiteKey": "k", "websiteURL": "https://s.test",
                               "proxyType": "https", "proxyAddress": "10.0.0.1", "proxyPort": 3128,
                               "proxyLogin": "u", "proxyPassword": "p"}


@pytest.mark.parametrize(("reply", "raised", "code"), [
    ({"errorId": 1, "errorCode": "ERROR_KEY_DOES_NOT_EXIST"}, AuthError, "ERROR_KEY_DOES_NOT_EXIST"),
    ({"errorId": 23, "errorCode": "ERROR_TASK_NOT_SUPPORTED"}, BadInputError, "ERROR_BAD_PARAMETERS"),
    ({"errorId": 110, "errorCode": "ERROR_PAGEURL"}, BadInputError, "ERROR_PAGEURL"),
])
def test_create_task_errors_raise_by_family(reply: dict[str, Any], raised: type[Exception], code: str) -> None:
    client = mock([reply], [])
    with pytest.raises(raised) as caught:
        client.turnstile("0x4AAA", "https://s.test")
    assert getattr(caught.value, "code", None) == code


def test_an_unsolvable_task_and_a_ready_task_without_its_solution() -> None:
    client = mock([{"errorId": 0, "taskId": 9}, {"errorId": 12, "errorCode": "ERROR_CAPTCHA_UNSOLVABLE"}], [])
    with pytest.raises(UnsolvableError) as caught:
        client.normal(png("y"))
    assert caught.value.task_id == "9"
    broken = mock([{"errorId": 0, "taskId": 10}, {"errorId": 0, "status": "ready", "solution": {"other": 1}}], [])
    with pytest.raises(ProtocolError):
        broken.normal(png("z"))


def test_balance_reports_and_no_threadsinfo() -> None:
    seen: list[httpx.Request] = []
    client = mock([{"errorId": 0, "balance": 12.345678}, {"errorId": 0, "status": "success"},
                   {"errorId": 16, "errorCode": "ERROR_NO_SUCH_CAPCHA_ID"}], seen)
    assert str(client.balance()) == "12.345678"  # read as a decimal, never a float
    assert client.report("41", False) is True
    with pytest.raises(BadInputError) as caught:
        client.report("42", True)
    assert caught.value.code == "ERROR_WRONG_CAPTCHA_ID"
    assert [str(r.url).rsplit("/", 1)[1] for r in seen] == ["getBalance", "reportIncorrect", "reportCorrect"]
    assert body(seen[1]) == {"clientKey": KEY, "taskId": 41}
    with pytest.raises(ProtocolError):
        client.threads()


def test_a_type_without_a_task_type_is_refused_before_any_request() -> None:
    seen: list[httpx.Request] = []
    with pytest.raises(BadInputError):
        mock([], seen).solve("cloudflare_challenge", pageurl="https://s.test", proxy="1.2.3.4:80", proxytype="HTTP")
    assert seen == []


def test_an_unknown_api_is_refused() -> None:
    with pytest.raises(ValueError, match="api is one of"):
        Client("https://api.example.test", KEY, api="v3")


# ------------------------------------------------------------------------------------------ the app


class FastTime:
    """A clock that skips the waits the client sleeps through (a task API poll is never held, so a
    token type's first poll would come 15 s after its submit): each sleep lasts a moment and moves the
    clock on by the rest."""

    MOMENT = 0.02

    def __init__(self) -> None:
        self.offset = 0.0

    def clock(self) -> float:
        return time.monotonic() + self.offset

    def sleep(self, seconds: float) -> None:
        time.sleep(min(seconds, self.MOMENT))
        self.offset += max(0.0, seconds - self.MOMENT)

    async def asleep(self, seconds: float) -> None:
        await asyncio.sleep(min(seconds, self.MOMENT))
        self.offset += max(0.0, seconds - self.MOMENT)


def client_for(app: AppHost, key: str) -> Client:
    fast = FastTime()
    return Client(app.base_url, key, api="tasks", http=app.client(), timeout=60, clock=fast.clock, sleep=fast.sleep)


@pytest.mark.parametrize("row", [m for m in METHODS if m.name not in UNREACHED], ids=lambda m: m.name)
def test_every_reached_type_solves(app: AppHost, row: Method) -> None:
    key = app.make_key()
    params = params_for(row, uuid.uuid4().hex[:12])
    with client_for(app, key) as client:
        solution = client.solve(row.name, **params)
    check(row, solution, params)
    stored = app.run(app.store.get_task(app.account_id(key), int(solution.task_id)))
    assert stored is not None and stored.method == row.name


@pytest.mark.parametrize("name", sorted(UNREACHED))
def test_unreached_types_are_bad_input(app: AppHost, name: str) -> None:
    row = next(m for m in METHODS if m.name == name)
    with client_for(app, app.make_key()) as client, pytest.raises(BadInputError):
        client.solve(name, **params_for(row, "u"))


def test_account_calls_and_both_apis_on_one_task(app: AppHost) -> None:
    key = app.make_key(balance="3.5")
    with client_for(app, key) as tasks, Client(app.base_url, key, http=app.client()) as classic:
        # Raw submits: parameters by their in.php names (textinstructions: the sandbox's answer).
        assert str(tasks.balance()) == "3.50"
        made = tasks.submit("normal", image=png("both"), textinstructions="sandbox-answer-both")
        assert classic.result(made, "normal").answer == TextAnswer("both")  # created here, polled on res.php
        other = classic.submit("normal", image=png("other"), textinstructions="sandbox-answer-other")
        assert tasks.result(other, "normal").answer == TextAnswer("other")  # and the other way round
        assert tasks.report(made, True) is True
        with pytest.raises(BadInputError):
            tasks.report("12345678901", True)
    with Client(app.base_url, "f" * 32, api="tasks", http=app.client("127.0.4.1")) as wrong, \
            pytest.raises(AuthError) as caught:
        wrong.balance()
    assert caught.value.code == "ERROR_KEY_DOES_NOT_EXIST"


def test_unsolvable(app: AppHost) -> None:
    with client_for(app, app.make_key()) as client, pytest.raises(UnsolvableError) as caught:
        client.turnstile("sandbox-unsolvable", f"https://site.test/{uuid.uuid4().hex}")
    assert caught.value.code == "ERROR_CAPTCHA_UNSOLVABLE" and caught.value.task_id


async def test_async_solves_at_once(app: AppHost) -> None:
    key = app.make_key()
    rows = [m for m in METHODS if m.name not in UNREACHED]
    calls: list[tuple[Method, dict[str, Any]]] = [(row, params_for(row, f"{uuid.uuid4().hex[:8]}-a")) for row in rows]
    fast = FastTime()
    async with AsyncClient(app.base_url, key, api="tasks", http=app.aclient(), timeout=60, clock=fast.clock,
                           sleep=fast.asleep) as client:
        solve: Callable[..., Any] = client.solve
        solutions = await asyncio.gather(*(solve(row.name, **params) for row, params in calls))
        assert await client.balance() == 0
    for (row, params), solution in zip(calls, solutions, strict=True):
        check(row, solution, params)


def test_the_cli_speaks_it_too(server: ServerProcess, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    key = server.create_key(sandbox=True, balance="2.5")
    assert main(["balance", "--server", server.base_url, "--key", key, "--api", "tasks"]) == 0
    assert capsys.readouterr().out == "2.50\n"
    image = tmp_path / "a.png"
    image.write_bytes(png("cli"))
    assert main(["solve", str(image), "--server", server.base_url, "--key", key, "--api", "tasks",
                 "--format", "jsonl"]) == 0
    row = json.loads(capsys.readouterr().out)
    assert row["task_id"].isdigit() and row["answer"]
