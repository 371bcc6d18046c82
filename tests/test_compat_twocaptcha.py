"""The official 2captcha client (``2captcha-python`` 2.1.2), unmodified, against capgate over TLS.

2captcha-python builds ``https://<server>/in.php`` whatever it is given, so capgate serves TLS here with
a certificate from a throwaway trustme CA; ``requests`` trusts it through ``REQUESTS_CA_BUNDLE`` and
httpx (the async solver, and the readiness check) through ``SSL_CERT_FILE``. Every type the client has
that capgate serves, with its sync and async solvers, plain and extended (json) responses.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import io
import json
import re
import threading
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import trustme
from PIL import Image, ImageDraw
from twocaptcha import AsyncTwoCaptcha, TwoCaptcha
from twocaptcha.exceptions.api import ApiException as ApiClientException

from capgate.solvers.sandbox import FAKE_USER_AGENT
from tests.serverproc import ServerProcess, start_server

PROXY = {"type": "HTTPS", "uri": "user:pass@10.0.0.1:3128"}


def png(text: str, size: tuple[int, int] = (160, 50)) -> bytes:
    image = Image.new("RGB", size, "white")
    ImageDraw.Draw(image).text((8, 15), text, fill="black")
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    folder = tmp_path_factory.mktemp("tls")
    ca = trustme.CA()
    issued = ca.issue_cert("127.0.0.1", "localhost")
    ca_path, cert_path, key_path = folder / "ca.pem", folder / "cert.pem", folder / "key.pem"
    ca.cert_pem.write_to_path(str(ca_path))
    issued.cert_chain_pems[0].write_to_path(str(cert_path))
    issued.private_key_pem.write_to_path(str(key_path))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("REQUESTS_CA_BUNDLE", str(ca_path))
        patch.setenv("SSL_CERT_FILE", str(ca_path))
        # verify=True with SSL_CERT_FILE: httpx deprecates verify=<path> (a warning, an error here).
        with start_server(folder / "server", args=["--ssl-certfile", str(cert_path), "--ssl-keyfile",
                                                   str(key_path)], scheme="https") as server:
            yield server


def host(server: ServerProcess) -> str:
    return server.base_url.removeprefix("https://")


def calls(unique: str, folder: Path) -> dict[str, Callable[[Any], Any]]:
    """One call per type 2captcha-python has and capgate serves; works for both solvers."""
    url = f"https://site.test/{unique}"
    image = folder / f"{unique}.png"
    image.write_bytes(png(unique))
    grid = folder / f"{unique}-grid.png"
    grid.write_bytes(png(unique + "g", (300, 300)))
    b64 = base64.b64encode(png(unique + "b64")).decode()
    recording = base64.b64encode(b"ID3\x04\x00\x00\x00\x00\x00\x00" + unique.encode() * 20).decode()
    waf_key = "AQIDAHjcYu/GjX+QlghicBgQ/7bFaQZ+m5FKCMDnO+vTbNg96AHMDLodoefdvyOnsHMRt0ZEmvmw=="
    return {
        "normal_file": lambda s: s.normal(str(image), numeric=1, minLen=5, maxLen=5),
        "normal_base64": lambda s: s.normal(b64, caseSensitive=1, hintText="sandbox-answer-Hello"),
        "grid": lambda s: s.grid(str(grid), hintText="select all bicycles", rows=3, cols=3),
        "recaptcha_v2": lambda s: s.recaptcha("6Le-wvkS", url + "/v2", invisible=1),
        "recaptcha_v3": lambda s: s.recaptcha("6Le-wvkS", url + "/v3", version="v3", action="verify", score=0.7),
        "recaptcha_enterprise": lambda s: s.recaptcha("6Le-wvkS", url + "/ent", enterprise=1),
        "funcaptcha": lambda s: s.funcaptcha("69A21A01-CC7B-B9C6", url + "/fun", surl="https://client-api.test"),
        "geetest": lambda s: s.geetest("81dc9bdb52d04dc20036dbd8313ed055", f"ch{unique}", url + "/gt",
                                       apiServer="api.geetest.com"),
        "geetest_v4": lambda s: s.geetest_v4("e392e1d7fd421dc63325744d5a2b9c73", url + "/gt4"),
        "hcaptcha": lambda s: s.hcaptcha("f7de0da3-3303", url + "/hc"),
        "lemin": lambda s: s.lemin("CROPPED_3dfdd5c_d1872b526b794d83ba3b365eb15a200b", "lemin-cropped-captcha",
                                   url + "/lemin", api_server="api.leminnow.com"),
        "turnstile": lambda s: s.turnstile("0x4AAAAAAAC3DHQFLr1GavRN", url + "/ts", action="login"),
        "friendly_captcha": lambda s: s.friendly_captcha("FCMGEMUD2KTDSQ5H", url + "/fc"),
        "captchafox": lambda s: s.captchafox("sk_ILKWNruBBVKDOM7dZs59KHnDLEWiH", url + "/fox", "MyUA/3", PROXY),
        "unsolvable": lambda s: s.turnstile("sandbox-unsolvable", url + "/unsolvable"),
        # 2captcha's other types (issue 15)
        "text": lambda s: s.text(f"If tomorrow is Saturday, what day is today? ({unique})", lang="en"),
        "coordinates": lambda s: s.coordinates(str(image), hintText="click the apples", min_clicks=2),
        "rotate": lambda s: s.rotate(str(image), angle=40),
        "audio": lambda s: s.audio(recording, "en"),
        "keycaptcha": lambda s: s.keycaptcha("184015", f"9ff29e0176e78eb7ba59314f92dbac1b{unique}",
                                             "964635241a3e5e76980f2572e5f63452", "3ca802a38ffc5831fa293ac2819b1204",
                                             url + "/kc"),
        "capy": lambda s: s.capy("PUZZLE_Abc1dEFghIJKLM2no34P56q7rStu8v", url + "/capy",
                                 api_server="https://jp.api.capy.me/"),
        "amazon_waf": lambda s: s.amazon_waf(waf_key, "CgAHbCe2GgAAAAAj", f"9BUgmlm48F92WUoqv97a49ZuEJJ50T{unique}",
                                             url + "/waf"),
        "mtcaptcha": lambda s: s.mtcaptcha("MTPublic-KzqLY1cKH", url + "/mt"),
        "datadome": lambda s: s.datadome("https://geo.captcha-delivery.com/captcha/?initialCid=AHrlqAAA",
                                         url + "/dd", "MyUA/4", PROXY),
        "cutcaptcha": lambda s: s.cutcaptcha("a1488b66da00bf332a1488993a5443c79047e752", "SAb83IIB", url + "/cut"),
        "tencent": lambda s: s.tencent("190014885", url + "/tc"),
        "atb_captcha": lambda s: s.atb_captcha("af25e409b33d722a95e56a230ff8771c", "https://cap.aisecurius.com",
                                               url + "/atb"),
        "yandex_smart": lambda s: s.yandex_smart("Y5Lh0tiycconMJGsFd3EbbuNKSp1yaZESUOIHfeV", url + "/ya"),
        "prosopo": lambda s: s.prosopo("5EPQoMZEDc5LpN7gtxMMzYPTzA6UeWqL2stk1rso9gy4Ahqt", url + "/pro"),
    }


def _outcome(fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except Exception as exc:
        return exc


def _sync(server: ServerProcess, key: str, unique: str, folder: Path, extended: bool) -> dict[str, Any]:
    solver = TwoCaptcha(key, server=host(server), pollingInterval=1, extendedResponse=extended or None)
    todo = {name: functools.partial(fn, solver) for name, fn in calls(unique, folder).items()}
    with ThreadPoolExecutor(len(todo)) as pool:
        futures = {name: pool.submit(_outcome, fn) for name, fn in todo.items()}
        return {name: future.result() for name, future in futures.items()}


async def _async(server: ServerProcess, key: str, unique: str, folder: Path) -> dict[str, Any]:
    solver = AsyncTwoCaptcha(key, server=host(server), pollingInterval=1)

    async def outcome(fn: Callable[[Any], Any]) -> Any:
        try:
            return await fn(solver)
        except Exception as exc:
            return exc

    todo = calls(unique, folder)
    return dict(zip(todo, await asyncio.gather(*(outcome(fn) for fn in todo.values())), strict=True))


@pytest.fixture(scope="module")
def key(tls_server: ServerProcess) -> str:
    return tls_server.create_key(sandbox=True, threads=100, balance="10")


@pytest.fixture(scope="module")
def results(tls_server: ServerProcess, key: str,
            tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    folder = tmp_path_factory.mktemp("images")
    unique = uuid.uuid4().hex[:10]
    found: dict[str, dict[str, Any]] = {}

    def run_async() -> None:
        found["async"] = asyncio.run(_async(tls_server, key, unique + "a", folder))

    thread = threading.Thread(target=run_async)
    thread.start()
    found["sync"] = _sync(tls_server, key, unique + "s", folder, extended=False)
    found["extended"] = _sync(tls_server, key, unique + "e", folder, extended=True)
    thread.join()
    return found


SOLVES = ["normal_file", "normal_base64", "grid", "recaptcha_v2", "recaptcha_v3", "recaptcha_enterprise",
          "funcaptcha", "geetest", "geetest_v4", "hcaptcha", "lemin", "turnstile", "friendly_captcha", "captchafox",
          "text", "coordinates", "rotate", "audio", "keycaptcha", "capy", "amazon_waf", "mtcaptcha", "datadome",
          "cutcaptcha", "tencent", "atb_captcha", "yandex_smart", "prosopo"]


@pytest.fixture(params=["sync", "async", "extended"])
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.mark.parametrize("name", SOLVES)
def test_every_type_solves(results: dict[str, dict[str, Any]], mode: str, name: str) -> None:
    result = results[mode][name]
    assert not isinstance(result, Exception), repr(result)
    assert result["captchaId"].isdigit()
    code = result["code"]
    if name in ("grid",):
        cells = code if isinstance(code, str) else str(code)
        assert cells.startswith("[") and cells.endswith("]")
    elif name == "geetest":
        if mode == "extended":
            assert set(code) == {"challenge", "validate", "seccode"}
        else:
            assert code.startswith("challenge:ch") and code.endswith("|jordan")
    elif name in ("geetest_v4", "lemin"):
        assert isinstance(code, (str, dict)) and code
    elif name in ("capy", "amazon_waf", "tencent"):  # a JSON object (extended: parsed, plain: as text)
        fields = code if mode == "extended" else json.loads(code)
        assert set(fields) == {"capy": {"captchakey", "challengekey", "answer"},
                               "amazon_waf": {"captcha_voucher", "existing_token"},
                               "tencent": {"appid", "ret", "ticket", "randstr"}}[name]
    elif name == "coordinates":
        if mode == "extended":
            assert len(code) == 2 and all(set(point) == {"x", "y"} and point["x"].isdigit() for point in code)
        else:
            assert re.fullmatch(r"coordinates:x=\d+,y=\d+;x=\d+,y=\d+", code), code
    elif name == "rotate":
        assert code.isdigit() and int(code) % 40 == 0
    elif name in ("text", "audio"):
        assert re.fullmatch(r"[0-9a-z]{6}", code), code
    elif name == "normal_file":
        assert code.isdigit() and len(code) == 5
    elif name == "normal_base64":
        assert code == "Hello"
    else:
        assert code.startswith("SANDBOX-FAKE-TOKEN-")
    if mode == "extended" and name == "recaptcha_enterprise":
        assert result["user_agent"] == FAKE_USER_AGENT
    if mode == "extended" and name == "captchafox":
        assert result["user_agent"] == "MyUA/3"


def test_unsolvable_is_an_api_exception(results: dict[str, dict[str, Any]], mode: str) -> None:
    error = results[mode]["unsolvable"]
    assert isinstance(error, Exception) and "ERROR_CAPTCHA_UNSOLVABLE" in str(error)


def test_balance_report_and_manual_api(tls_server: ServerProcess, key: str) -> None:
    solver = TwoCaptcha(key, server=host(tls_server), pollingInterval=1)
    assert solver.balance() == 10.0
    task_id = solver.send(method="turnstile", sitekey="sk", url=f"https://site.test/{uuid.uuid4().hex}")
    for _ in range(100):
        try:
            answer = solver.get_result(task_id)
            break
        except Exception as exc:  # NetworkException is how it says CAPCHA_NOT_READY
            assert type(exc).__name__ == "NetworkException"
            threading.Event().wait(0.1)
    assert answer.startswith("SANDBOX-FAKE-TOKEN-")
    assert solver.report(task_id, True) == "OK_REPORT_RECORDED"
    with pytest.raises(ApiClientException, match="ERROR_DUPLICATE_REPORT"):
        solver.report(task_id, False)


def test_wrong_key_and_unknown_method(tls_server: ServerProcess, key: str) -> None:
    with pytest.raises(ApiClientException, match="ERROR_KEY_DOES_NOT_EXIST"):
        TwoCaptcha("d" * 32, server=host(tls_server)).balance()
    with pytest.raises(ApiClientException, match="ERROR_BAD_PARAMETERS"):
        TwoCaptcha(key, server=host(tls_server)).cybersiara("tpjOCKjjpdzv3d8Ub2E9COEWKt1vl1Mv",
                                                            "https://site.test/", "MyUA/5")
