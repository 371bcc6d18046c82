"""capgate.client against a real capgate process (sandbox keys: fake, deterministic answers)."""

from __future__ import annotations

import asyncio
import collections
import io
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image, ImageDraw

from capgate.client import (
    AngleAnswer,
    AsyncClient,
    AuthError,
    BadInputError,
    CapacityError,
    CellsAnswer,
    ClearanceAnswer,
    Client,
    CoordinatesAnswer,
    FundsError,
    GeeTestAnswer,
    ObjectAnswer,
    Solution,
    TextAnswer,
    TokenAnswer,
    UnsolvableError,
)
from capgate.protocol.answers import Answer, AnswerKind
from capgate.protocol.methods import METHODS, Method
from capgate.solvers.sandbox import FAKE_USER_AGENT
from tests.serverproc import ServerProcess


def png(text: str, size: tuple[int, int] = (160, 50)) -> bytes:
    image = Image.new("RGB", size, "white")
    ImageDraw.Draw(image).text((10, 15), text, fill="black")
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def params_for(row: Method, unique: str) -> dict[str, Any]:
    """The row's required params, unique per call so that no submit duplicates a pending one."""
    params: dict[str, Any] = {}
    for name in row.required:
        if name == "body":
            params["image"] = png(unique)
        elif name.startswith("image_base64_"):
            params["images"] = [png(f"{unique}-{i}", (100, 100)) for i in range(9)]
        elif name == "pageurl":
            params[name] = f"https://site.test/{unique}"
        elif name == "proxytype":
            params[name] = "HTTP"
        elif name == "instructions":
            params[name] = "664"
        else:
            params[name] = f"{name}-{unique}"
    return params


def check(row: Method, solution: Solution[Answer], params: dict[str, Any]) -> None:
    answer = solution.answer
    assert solution.method == row.name and solution.task_id.isdigit() and solution.raw
    if row.answer is AnswerKind.TEXT:
        assert isinstance(answer, TextAnswer) and len(answer.text) == 6
    elif row.answer is AnswerKind.TOKEN:
        assert isinstance(answer, TokenAnswer) and answer.token.startswith("SANDBOX-FAKE-TOKEN-")
    elif row.answer is AnswerKind.TOKEN_UA:
        assert isinstance(answer, TokenAnswer) and answer.user_agent == FAKE_USER_AGENT
    elif row.answer is AnswerKind.GEETEST:
        assert isinstance(answer, GeeTestAnswer) and answer.challenge == params["challenge"]
        assert answer.seccode.endswith("|jordan")
    elif row.answer is AnswerKind.CLEARANCE:
        assert isinstance(answer, ClearanceAnswer) and answer.cf_clearance.startswith("FAKE-CF-CLEARANCE-")
        assert answer.user_agent == FAKE_USER_AGENT
    elif row.answer is AnswerKind.CELLS:
        assert isinstance(answer, CellsAnswer) and answer.cells
        assert all(1 <= cell <= 9 for cell in answer.cells)
    elif row.answer is AnswerKind.COORDINATES:
        assert isinstance(answer, CoordinatesAnswer) and len(answer.points) == 2
    elif row.answer is AnswerKind.ANGLE:
        assert isinstance(answer, AngleAnswer) and answer.angle % 40 == 0
    else:
        assert isinstance(answer, ObjectAnswer) and answer.fields


@pytest.mark.parametrize("row", METHODS, ids=lambda m: m.name)
def test_sync_solves_every_type(server: ServerProcess, sandbox_key: str, row: Method) -> None:
    params = params_for(row, uuid.uuid4().hex[:12])
    with Client(server.base_url, sandbox_key) as client:
        solution = client.solve(row.name, timeout=60, **params)
    check(row, solution, params)


async def test_async_solves_every_type_at_once(server: ServerProcess, sandbox_key: str) -> None:
    calls = [(row, params_for(row, f"{uuid.uuid4().hex[:8]}-{i}")) for row in METHODS for i in range(3)]
    async with AsyncClient(server.base_url, sandbox_key, timeout=60) as client:
        solutions = await asyncio.gather(*(client.solve(row.name, **params) for row, params in calls))
    for (row, params), solution in zip(calls, solutions, strict=True):
        check(row, solution, params)


def test_wrappers_send_what_the_sandbox_reads(server: ServerProcess, sandbox_key: str) -> None:
    unique = uuid.uuid4().hex[:8]
    with Client(server.base_url, sandbox_key) as client:
        digits = client.normal(png(unique), numeric=1, min_len=8, max_len=8)
        cased = client.normal(png(unique), case_sensitive=True, min_len=12, max_len=12, numeric=2)
        told = client.normal(png(unique), instructions="sandbox-answer-hello42")
        agent = client.captchafox("sk", f"https://site.test/{unique}", "1.2.3.4:80", "HTTP", user_agent="MyUA/1")
    assert digits.answer.text.isdigit() and len(digits.answer.text) == 8
    assert len(cased.answer.text) == 12 and cased.answer.text.isalpha()
    assert told.answer.text == "hello42"
    assert agent.answer.user_agent == "MyUA/1"


async def test_many_concurrent_solves_poll_in_batches(server: ServerProcess) -> None:
    key = server.create_key(sandbox=True, threads=1000)
    counts: collections.Counter[str] = collections.Counter()
    inner = httpx.AsyncHTTPTransport()

    class Counting(httpx.AsyncBaseTransport):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            counts["batch" if "ids" in request.url.params else request.url.path] += 1
            return await inner.handle_async_request(request)

        async def aclose(self) -> None:
            await inner.aclose()

    unique = uuid.uuid4().hex[:8]
    tasks = 150
    async with AsyncClient(server.base_url, key, transport=Counting(), timeout=120) as client:
        solutions = await asyncio.gather(*(client.normal(png(f"{unique}-{i}")) for i in range(tasks)))
    assert len({s.task_id for s in solutions}) == tasks
    assert counts["/in.php"] == tasks
    assert counts["batch"] >= 1
    assert counts["batch"] + counts["/res.php"] <= tasks // 2


def test_unsolvable(server: ServerProcess, sandbox_key: str) -> None:
    with Client(server.base_url, sandbox_key) as client, pytest.raises(UnsolvableError) as caught:
        client.turnstile("sandbox-unsolvable", f"https://site.test/{uuid.uuid4().hex}")
    assert caught.value.code == "ERROR_CAPTCHA_UNSOLVABLE" and caught.value.task_id


def test_settle_error_from_the_sandbox(server: ServerProcess, sandbox_key: str) -> None:
    with Client(server.base_url, sandbox_key) as client, pytest.raises(UnsolvableError) as caught:
        client.geetest("gt", uuid.uuid4().hex, "https://site.test/sandbox-error-ERROR_TOKEN_EXPIRED")
    assert caught.value.code == "ERROR_TOKEN_EXPIRED"


def test_no_slot_gives_up_inside_the_deadline(server: ServerProcess, sandbox_key: str) -> None:
    with Client(server.base_url, sandbox_key) as client, pytest.raises(CapacityError) as caught:
        client.turnstile("sk", f"https://site.test/{uuid.uuid4().hex}/sandbox-noslot", timeout=3)
    assert caught.value.code == "ERROR_NO_SLOT_AVAILABLE"


def test_zero_balance_with_free_threads_stops(server: ServerProcess, sandbox_key: str) -> None:
    with Client(server.base_url, sandbox_key) as client, pytest.raises(FundsError) as caught:
        client.turnstile("sandbox-error-ERROR_ZERO_BALANCE", f"https://site.test/{uuid.uuid4().hex}")
    assert caught.value.code == "ERROR_ZERO_BALANCE"


def test_blocked_image_and_tiny_image(server: ServerProcess, sandbox_key: str) -> None:
    with Client(server.base_url, sandbox_key) as client:
        with pytest.raises(BadInputError) as caught:
            client.normal(png(uuid.uuid4().hex), instructions="sandbox-error-ERROR_CAPTCHAIMAGE_BLOCKED")
        assert caught.value.code == "ERROR_CAPTCHAIMAGE_BLOCKED"
        with pytest.raises(BadInputError) as caught:
            client.normal(b"\x89PNG tiny")
        assert caught.value.code == "ERROR_ZERO_CAPTCHA_FILESIZE"


def test_unknown_key(server: ServerProcess) -> None:
    with Client(server.base_url, "f" * 32) as client, pytest.raises(AuthError) as caught:
        client.balance()
    assert caught.value.code == "ERROR_KEY_DOES_NOT_EXIST"


def test_account_calls(server: ServerProcess) -> None:
    key = server.create_key(sandbox=True, threads=7, balance="3.5")
    with Client(server.base_url, key) as client:
        assert str(client.balance()) == "3.50"
        assert client.threads().threads == 7
        solution = client.turnstile("sk", f"https://site.test/{uuid.uuid4().hex}")
        assert client.report(solution.task_id, True) is True
        assert client.report(solution.task_id, False) is False  # reported already
        with pytest.raises(BadInputError):
            client.report("12345678901", True)


def test_submit_then_result_and_pingback(server: ServerProcess, sandbox_key: str, tmp_path: Path) -> None:
    image = tmp_path / "captcha.png"
    image.write_bytes(png(uuid.uuid4().hex))
    added = httpx.get(server.url("res.php"), params={"key": sandbox_key, "action": "add_pingback",
                                                     "addr": "https://hooks.test/cb"})
    assert added.text == "OK"
    with Client(server.base_url, sandbox_key) as client:
        task_id = client.submit("normal", pingback="https://hooks.test/cb", image=image)
        solution = client.result(task_id, "normal")
    assert solution.task_id == task_id and isinstance(solution.answer, TextAnswer)


async def test_async_submit_result_and_account(server: ServerProcess, sandbox_key: str) -> None:
    async with AsyncClient(server.base_url, sandbox_key) as client:
        task_id = await client.submit("hcaptcha", sitekey="sk", pageurl=f"https://site.test/{uuid.uuid4().hex}")
        solution = await client.result(task_id, "hcaptcha")
        assert isinstance(solution.answer, TokenAnswer)
        assert await client.report(task_id, False) is True
        assert (await client.threads()).threads == 50
        assert await client.balance() > 0


async def test_thread_cap_is_waited_for(server: ServerProcess) -> None:
    key = server.create_key(sandbox=True, threads=3)
    unique = uuid.uuid4().hex[:8]
    async with AsyncClient(server.base_url, key, timeout=120) as client:
        solutions = await asyncio.gather(*(client.turnstile("sk", f"https://site.test/{unique}/{i}")
                                           for i in range(12)))
    assert len({s.task_id for s in solutions}) == 12
