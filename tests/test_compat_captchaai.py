"""The official CaptchaAI SDK (``captchaai`` 1.0.1), unmodified, against capgate with a sandbox key.

Every type the SDK has, with its sync and async clients. The SDK sleeps for real (up to 15 s before
its first poll), so every call runs at once: sync calls in threads, async calls gathered, both
together, in one module fixture; the tests then look at what each call returned.
"""

from __future__ import annotations

import asyncio
import functools
import io
import threading
import uuid
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from captchaai import AsyncCaptchaAI, CaptchaAI
from captchaai.exceptions import UnsolvableError
from PIL import Image, ImageDraw

from capgate.solvers.sandbox import FAKE_USER_AGENT
from tests.serverproc import ServerProcess

PROXY = {"proxy": "user:pass@10.0.0.1:3128", "proxytype": "HTTP"}


def png(text: str, size: tuple[int, int] = (160, 50)) -> bytes:
    image = Image.new("RGB", size, "white")
    ImageDraw.Draw(image).text((8, 15), text, fill="black")
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def calls(unique: str) -> dict[str, Callable[[Any], Any]]:
    """One SDK call per type (plus the manual API); each works with the sync and the async client."""
    url = f"https://site.test/{unique}"
    return {
        "normal": lambda c: c.normal(png(unique), numeric=1, min_len=5, max_len=5, case_sensitive=0),
        "normal_path_like_base64": lambda c: c.normal(
            "data:image/png;base64," + __import__("base64").b64encode(png(unique + "b")).decode()),
        "grid": lambda c: c.grid(png(unique + "g", (300, 300)), "crosswalks", "3x3"),
        "grid_4x4": lambda c: c.grid(png(unique + "g4", (400, 400)), "bicycles", "4x4"),
        "bls": lambda c: c.bls([png(f"{unique}{i}", (100, 100)) for i in range(9)], "664"),
        "recaptcha_v2": lambda c: c.recaptcha_v2("6Le-wvkS", url + "/v2"),
        "recaptcha_v2_invisible": lambda c: c.recaptcha_v2("6Le-wvkS", url + "/inv", invisible=True),
        "recaptcha_v2_enterprise": lambda c: c.recaptcha_v2("6Le-wvkS", url + "/ent", enterprise=True,
                                                            action="login"),
        "recaptcha_v3": lambda c: c.recaptcha_v3("6Le-wvkS", url + "/v3", action="verify", min_score=0.7),
        "recaptcha_v3_enterprise": lambda c: c.recaptcha_v3("6Le-wvkS", url + "/v3e", action="verify",
                                                            enterprise=True, user_agent="MyAgent/2.0"),
        "turnstile": lambda c: c.turnstile("0x4AAAAAAA", url + "/ts"),
        "cloudflare_challenge": lambda c: c.cloudflare_challenge(url + "/cf", **PROXY),
        "geetest": lambda c: c.geetest("81dc9bdb52d04dc20036dbd8313ed055", f"ch{unique}", url + "/gt"),
        "captchafox": lambda c: c.captchafox("sk-fox", url + "/fox", **PROXY),
        "friendly_captcha": lambda c: c.friendly_captcha("FCMST5VU", url + "/fc", version="v2"),
        "lemin": lambda c: c.lemin("CROPPED_d3d4d56_73ca4008925b4f83a8bed59c2dd0df6d", "lemin-cropped-captcha",
                                   url + "/lemin"),
        "unsolvable": lambda c: c.turnstile("sandbox-unsolvable", url + "/unsolvable"),
    }


def _manual_sync(client: CaptchaAI, unique: str) -> Any:
    task_id = client.send("turnstile", sitekey="sk", pageurl=f"https://site.test/{unique}/manual")
    return task_id, client.get_result("turnstile", task_id)


async def _manual_async(client: AsyncCaptchaAI, unique: str) -> Any:
    task_id = await client.send("turnstile", sitekey="sk", pageurl=f"https://site.test/{unique}/manual")
    return task_id, await client.get_result("turnstile", task_id)


def _outcome(fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except Exception as exc:
        return exc


def _run_sync(base_url: str, key: str, unique: str) -> dict[str, Any]:
    client = CaptchaAI(key, base_url=base_url)
    todo: dict[str, Callable[[], Any]] = {name: functools.partial(fn, client) for name, fn in calls(unique).items()}
    todo["manual"] = lambda: _manual_sync(client, unique)
    todo["threads_info"] = client.threads_info
    try:
        with ThreadPoolExecutor(len(todo)) as pool:
            futures = {name: pool.submit(_outcome, fn) for name, fn in todo.items()}
            return {name: future.result() for name, future in futures.items()}
    finally:
        client.close()


async def _run_async(base_url: str, key: str, unique: str) -> dict[str, Any]:
    client = await AsyncCaptchaAI.create(api_key=key, base_url=base_url)

    async def outcome(awaitable: Awaitable[Any]) -> Any:
        try:
            return await awaitable
        except Exception as exc:
            return exc

    todo: dict[str, Awaitable[Any]] = {name: fn(client) for name, fn in calls(unique).items()}
    todo["manual"] = _manual_async(client, unique)
    todo["threads_info"] = client.threads_info()
    try:
        results = await asyncio.gather(*(outcome(a) for a in todo.values()))
        return dict(zip(todo, results, strict=True))
    finally:
        await client.aclose()


@pytest.fixture(scope="module")
def results(server: ServerProcess) -> Iterator[dict[str, dict[str, Any]]]:
    key = server.create_key(sandbox=True, threads=100, balance="10")
    unique = uuid.uuid4().hex[:10]
    found: dict[str, dict[str, Any]] = {}

    def run_async() -> None:
        found["async"] = asyncio.run(_run_async(server.base_url, key, unique + "a"))

    thread = threading.Thread(target=run_async)
    thread.start()
    found["sync"] = _run_sync(server.base_url, key, unique + "s")
    thread.join()
    yield found


SOLVES = [name for name in calls("x") if name != "unsolvable"]


@pytest.fixture(params=["sync", "async"])
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.mark.parametrize("name", SOLVES)
def test_every_type_solves(results: dict[str, dict[str, Any]], mode: str, name: str) -> None:
    result = results[mode][name]
    assert not isinstance(result, Exception), repr(result)
    assert result.task_id.isdigit()
    solution = result.solution
    if name.startswith(("grid", "bls")):
        assert isinstance(solution, list) and solution and all(isinstance(c, int) for c in solution)
        assert max(solution) <= (16 if name == "grid_4x4" else 9)
    elif name == "geetest":
        assert set(solution) == {"challenge", "validate", "seccode"}
        assert solution["challenge"].startswith("ch") and solution["seccode"].endswith("|jordan")
    elif name == "lemin":
        assert isinstance(solution, dict) and solution["answer"].startswith("FAKE-LEMIN-ANSWER-")
        assert solution["challenge_uuid"] == solution["challenge_id"]  # the SDK reads the first
    elif name.startswith("normal"):
        assert isinstance(solution, str) and solution
    elif name == "cloudflare_challenge":
        assert solution.startswith("FAKE-CF-CLEARANCE-")
    else:
        assert isinstance(solution, str) and solution.startswith("SANDBOX-FAKE-TOKEN-")
    if name in ("recaptcha_v2_enterprise", "cloudflare_challenge", "captchafox"):
        assert result.user_agent == FAKE_USER_AGENT
    if name == "recaptcha_v3_enterprise":
        assert result.user_agent == "MyAgent/2.0"
    if name == "normal":
        assert solution.isdigit() and len(solution) == 5


def test_unsolvable_raises_the_sdks_error(results: dict[str, dict[str, Any]], mode: str) -> None:
    assert isinstance(results[mode]["unsolvable"], UnsolvableError)


def test_manual_send_and_get_result(results: dict[str, dict[str, Any]], mode: str) -> None:
    result = results[mode]["manual"]
    assert not isinstance(result, Exception), repr(result)
    task_id, solved = result
    assert solved.task_id == task_id and solved.solution.startswith("SANDBOX-FAKE-TOKEN-")


def test_threads_info(results: dict[str, dict[str, Any]], mode: str) -> None:
    info = results[mode]["threads_info"]
    assert not isinstance(info, Exception), repr(info)
    assert info["threads"] == 100 and 0 <= info["working_threads"] <= 100


def test_wrong_key_is_the_sdks_invalid_key_error(server: ServerProcess) -> None:
    from captchaai.exceptions import InvalidKeyError

    with pytest.raises(InvalidKeyError):
        CaptchaAI("e" * 32, base_url=server.base_url)
