"""in.php and res.php against the app in process (tests/appkit.py): exact bytes in both modes.

Every reply is checked whole (body == b"...", so no trailing newline), with HTTP 200 and the mode's
Content-Type. Answers come from the sandbox worker; their random-looking parts are read from the
plain body and the json body must then match byte for byte.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

import httpx
import pytest

from capgate.solvers.sandbox import FAKE_USER_AGENT
from tests.appkit import AppHost
from tests.fixtures import (
    MODES,
    PAGEURL,
    TOKEN_RE,
    TRANSPORTS,
    Api,
    Mode,
    Transport,
    b64,
    bare_body,
    dumps,
    error_body,
    expect,
    expect_error,
    image_bytes,
    nonce,
    ok_body,
    png,
    task_id_of,
)

UA = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120 Safari/537.36"


@pytest.fixture(scope="module")
def http(app: AppHost) -> Iterator[httpx.Client]:
    with app.client() as client:
        yield client


@pytest.fixture(scope="module")
def api(app: AppHost, http: httpx.Client) -> Api:
    return Api(http, app.base_url, app.make_key(threads=200, balance="10"))


def solved_plain(api: Api, task_id: str) -> str:
    """Wait for the task, check the plain body is ``OK|...`` and return the payload."""
    response = api.get(task_id, wait=10)
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/plain; charset=utf-8"
    assert response.content.startswith(b"OK|"), response.content
    return response.content[3:].decode("utf-8")


# ------------------------------------------------------------------------------------------ in.php


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("mode", MODES)
def test_submit_answers_ok_and_an_id(api: Api, mode: Mode, transport: Transport) -> None:
    response = api.submit({"method": "turnstile", "sitekey": "0x4AAAAAAAB", "pageurl": PAGEURL, "n": nonce()},
                          mode, transport)
    task_id = task_id_of(response, mode)
    expect(response, ok_body(task_id, mode), mode)
    assert len(task_id) >= 8 and task_id.isdigit() and int(task_id) < 2**53


@pytest.mark.parametrize(("transport", "how"), [
    ("multipart", "file"), ("multipart", "body"), ("form", "body"), ("get", "body"), ("split", "file"),
    ("split", "body"), ("form", "data-uri"),
])
@pytest.mark.parametrize("mode", MODES)
def test_submit_image_every_way(api: Api, mode: Mode, transport: Transport, how: str) -> None:
    image = png(seed=int(nonce()[:6], 16))
    files = None
    params = {"method": "post" if how == "file" else "base64", "textinstructions": "sandbox-answer-img42"}
    if how == "file":
        files = {"file": ("captcha.png", image)}
    elif how == "data-uri":
        params["body"] = "data:image/png;base64," + b64(image)
    else:
        params["body"] = b64(image)
    response = api.submit(params, mode, transport, files)
    task_id = task_id_of(response, mode)
    expect(api.get(task_id, mode, wait=10), ok_body("img42", mode), mode)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "GIF", "BMP", "WEBP"])
def test_every_accepted_image_type(api: Api, fmt: str) -> None:
    data = image_bytes(fmt, seed=int(nonce()[:6], 16))
    ext = {"JPEG": "jpg"}.get(fmt, fmt.lower())
    by_file = api.submit({"method": "post", "n": nonce()}, files={"file": (f"c.{ext}", data)})
    task_id_of(by_file)
    task_id_of(api.submit({"method": "base64", "body": b64(data), "n": nonce()}, transport="form"))


# ------------------------------------------------------------------------------------------ res.php get


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("mode", MODES)
def test_not_ready(api: Api, mode: Mode, transport: Transport) -> None:
    task_id = api.submit_id({"method": "hcaptcha", "sitekey": "k", "pageurl": PAGEURL,
                             "sandbox": "sandbox-slow-60", "n": nonce()})
    expect(api.get(task_id, mode, transport=transport), error_body("CAPCHA_NOT_READY", mode), mode)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("answer", ["abc123", "ÄÖü|x;y:z,w", "一二三|四", "OK|CAPCHA_NOT_READY"])
def test_text_answer(api: Api, mode: Mode, answer: str) -> None:
    task_id = api.submit_id({"method": "base64", "body": b64(png(seed=7)), "n": nonce(),
                             "textinstructions": f"sandbox-answer-{answer}"})
    expect(api.get(task_id, mode, wait=10), ok_body(answer, mode), mode)


def test_text_answer_follows_the_image_options(api: Api) -> None:
    digits = solved_plain(api, api.submit_id({"method": "base64", "body": b64(png(seed=8)), "numeric": "1",
                                              "minLen": "4", "maxLength": "4", "n": nonce()}))
    assert re.fullmatch(r"[0-9]{4}", digits), digits
    letters = solved_plain(api, api.submit_id({"method": "base64", "body": b64(png(seed=8)), "numeric": "2",
                                               "min_len": "8", "n": nonce()}))
    assert re.fullmatch(r"[a-z]{8}", letters), letters
    calc = solved_plain(api, api.submit_id({"method": "base64", "body": b64(png(seed=8)), "calc": "1",
                                            "n": nonce()}))
    assert calc.isdigit(), calc


@pytest.mark.parametrize("params", [
    {"method": "turnstile", "sitekey": "0x4AAAA", "pageurl": PAGEURL},
    {"method": "userrecaptcha", "googlekey": "6Le-wvkS", "pageurl": PAGEURL},
    {"method": "userrecaptcha", "googlekey": "6Le-wvkS", "pageurl": PAGEURL, "version": "v3", "action": "login",
     "min_score": "0.3"},
    {"method": "hcaptcha", "sitekey": "k", "pageurl": PAGEURL},
    {"method": "friendly_captcha", "sitekey": "FCM", "pageurl": PAGEURL},
], ids=["turnstile", "recaptcha_v2", "recaptcha_v3", "hcaptcha", "friendly_captcha"])
def test_token_answer(api: Api, params: dict[str, str]) -> None:
    task_id = api.submit_id({**params, "n": nonce()})
    token = solved_plain(api, task_id)
    assert re.fullmatch(TOKEN_RE, token), token
    assert "FAKE" in token  # sandbox tokens say they are fake
    expect(api.get(task_id, "json"), ok_body(token, "json"), "json")


@pytest.mark.parametrize("params", [
    {"method": "userrecaptcha", "googlekey": "6Le", "pageurl": PAGEURL, "enterprise": "1", "action": "x"},
    {"method": "userrecaptcha", "googlekey": "6Le", "pageurl": PAGEURL, "enterprise": "1", "version": "v3"},
    {"method": "captchafox", "sitekey": "sk", "pageurl": PAGEURL, "proxy": "1.2.3.4:8080", "proxytype": "HTTP"},
], ids=["recaptcha_v2_enterprise", "recaptcha_v3_enterprise", "captchafox"])
@pytest.mark.parametrize("ua_param", ["userAgent", "user_agent", None])
def test_token_with_user_agent(api: Api, params: dict[str, str], ua_param: str | None) -> None:
    sent = {**params, "n": nonce()}
    if ua_param is not None:
        sent[ua_param] = UA
    task_id = api.submit_id(sent)
    token = solved_plain(api, task_id)
    assert re.fullmatch(TOKEN_RE, token), token
    expect(api.get(task_id, "plain"), ok_body(token, "plain"), "plain")
    agent = UA if ua_param is not None else FAKE_USER_AGENT
    expect(api.get(task_id, "json"), dumps({"status": 1, "request": token, "result": token, "user_agent": agent}),
           "json")


@pytest.mark.parametrize("method", [{"method": "geetest"}, {"method": "geetest", "version": "3"}])
def test_geetest_answer(api: Api, method: dict[str, str]) -> None:
    challenge = "12345678abc90123d45678ef90123a456" + nonce()[:8]
    task_id = api.submit_id({**method, "gt": "81388ea1fc187e0c335c0a8907ff2625", "challenge": challenge,
                             "pageurl": PAGEURL, "apiServer": "api-na.geetest.com"})
    payload = solved_plain(api, task_id)
    match = re.fullmatch(r"challenge:(.+),validate:(fake[0-9a-f]{28}),seccode:(fake[0-9a-f]{28}\|jordan)", payload)
    assert match is not None, payload
    assert match.group(1) == challenge
    validate, seccode = match.group(2), match.group(3)
    expect(api.get(task_id, "plain"), ok_body(f"challenge:{challenge},validate:{validate},seccode:{seccode}",
                                              "plain"), "plain")
    expect(api.get(task_id, "json"), dumps({"status": 1, "request": {
        "challenge": challenge, "validate": validate, "seccode": seccode}}), "json")


@pytest.mark.parametrize("ua", [UA, None])
def test_cloudflare_clearance(api: Api, ua: str | None) -> None:
    params = {"method": "cloudflare_challenge", "pageurl": PAGEURL, "proxy": "user:pass@1.2.3.4:3128",
              "proxytype": "HTTP", "n": nonce()}
    if ua is not None:
        params["userAgent"] = ua
    task_id = api.submit_id(params)
    payload = solved_plain(api, task_id)
    agent = ua or FAKE_USER_AGENT
    match = re.fullmatch(r"cf_clearance=(FAKE-CF-CLEARANCE-[0-9a-f]{64});user_agent=(.*)", payload)
    assert match is not None, payload
    assert match.group(2) == agent
    cookie = match.group(1)
    expect(api.get(task_id, "json"), dumps({"status": 1, "request": cookie, "result": cookie,
                                            "user_agent": agent}), "json")


@pytest.mark.parametrize(("params", "cells"), [
    ({"method": "base64", "grid_size": "3x3", "instructions": "cars", "img_type": "recaptcha"}, 9),
    ({"method": "base64", "grid_size": "4x4", "instructions": "cars"}, 16),
    ({"method": "base64", "recaptcha": "1", "recaptcharows": "4", "recaptchacols": "4",
      "textinstructions": "cars"}, 16),
], ids=["grid3x3", "grid4x4", "recaptcha=1"])
def test_grid_answer(api: Api, params: dict[str, str], cells: int) -> None:
    task_id = api.submit_id({**params, "body": b64(png(seed=3)), "n": nonce()})
    payload = solved_plain(api, task_id)
    check_cells(payload, cells)
    expect(api.get(task_id, "json"), ok_body(payload, "json"), "json")  # a JSON-encoded string (§5)


def check_cells(payload: str, count: int) -> None:
    values = json.loads(payload)
    assert isinstance(values, list) and values
    assert all(type(v) is int and 1 <= v <= count for v in values), values  # 1-based
    assert values == sorted(set(values))
    assert payload == json.dumps(values, separators=(",", ":"))  # compact, e.g. [1,4,7]


def test_bls_answer(api: Api) -> None:
    params = {"method": "bls", "instructions": "664", "n": nonce()}
    for i in range(1, 10):
        params[f"image_base64_{i}"] = "data:image/png;base64," + b64(png(width=40, height=40, seed=i))
    task_id = task_id_of(api.submit(params, transport="form"))
    payload = solved_plain(api, task_id)
    check_cells(payload, 9)
    expect(api.get(task_id, "json"), ok_body(payload, "json"), "json")


@pytest.mark.parametrize(("params", "keys"), [
    ({"method": "lemin", "captcha_id": "CROPPED_3dfdd5c_d1872b526b794d83ba3b365eb15a200b", "div_id": "lemin-cropped",
      "pageurl": PAGEURL, "apiServer": "api.leminnow.com"}, {"answer", "challenge_uuid", "challenge_id"}),
    ({"method": "geetest", "version": "4", "gt": "e392e1d7fd421dc63325744d5a2b9c73", "pageurl": PAGEURL},
     {"captcha_id", "lot_number", "pass_token", "gen_time", "captcha_output"}),
    ({"method": "geetest_v4", "captcha_id": "e392e1d7fd421dc63325744d5a2b9c73", "pageurl": PAGEURL},
     {"captcha_id", "lot_number", "pass_token", "gen_time", "captcha_output"}),
], ids=["lemin", "geetest+version=4", "geetest_v4"])
def test_object_answer(api: Api, params: dict[str, str], keys: set[str]) -> None:
    task_id = api.submit_id({**params, "n": nonce()})
    payload = solved_plain(api, task_id)
    value = json.loads(payload)
    assert set(value) == keys
    assert payload == dumps(value).decode()
    if "captcha_id" in keys:
        assert value["captcha_id"] == "e392e1d7fd421dc63325744d5a2b9c73"
    expect(api.get(task_id, "json"), dumps({"status": 1, "request": value}), "json")


def test_answers_are_deterministic(api: Api) -> None:
    """The same task always gets the same answer (sandbox promise)."""
    first = api.submit_id({"method": "turnstile", "sitekey": "same", "pageurl": PAGEURL})
    one = solved_plain(api, first)
    second = api.submit_id({"method": "turnstile", "sitekey": "same", "pageurl": PAGEURL})
    assert solved_plain(api, second) == one


# ------------------------------------------------------------------------------------------ batch, get2


@pytest.fixture(scope="module")
def batch(api: Api) -> dict[str, str]:
    """One solved, one pending, one unsolvable task, and an id nobody has."""
    tasks = {
        "solved": api.submit_id({"method": "base64", "body": b64(png(seed=11)), "n": nonce(),
                                 "textinstructions": "sandbox-answer-ab12"}),
        "pending": api.submit_id({"method": "hcaptcha", "sitekey": "k", "pageurl": PAGEURL, "n": nonce(),
                                  "sandbox": "sandbox-slow-120"}),
        "unsolvable": api.submit_id({"method": "hcaptcha", "sitekey": "k", "pageurl": PAGEURL, "n": nonce(),
                                     "sandbox": "sandbox-unsolvable"}),
        "unknown": "12345678901",
    }
    api.settle(tasks["solved"])
    api.settle(tasks["unsolvable"])
    return tasks


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("mode", MODES)
def test_batch_ids_in_order(api: Api, batch: dict[str, str], mode: Mode, transport: Transport) -> None:
    ids = ",".join(batch[k] for k in ("solved", "pending", "unsolvable", "unknown"))
    expect(api.res({"action": "get", "ids": ids}, mode, transport),
           bare_body("ab12|CAPCHA_NOT_READY|ERROR_CAPTCHA_UNSOLVABLE|ERROR_WRONG_CAPTCHA_ID", mode), mode)
    ids = ",".join(batch[k] for k in ("unknown", "unsolvable", "solved", "pending", "solved"))
    expect(api.res({"action": "get", "ids": ids}, mode, transport),
           bare_body("ERROR_WRONG_CAPTCHA_ID|ERROR_CAPTCHA_UNSOLVABLE|ab12|CAPCHA_NOT_READY|ab12", mode), mode)


def test_batch_single_id(api: Api, batch: dict[str, str]) -> None:
    expect(api.res({"action": "get", "ids": batch["solved"]}), b"ab12", "plain")
    expect(api.res({"action": "get", "ids": batch["pending"]}, "json"),
           b'{"status":1,"request":"CAPCHA_NOT_READY"}', "json")


@pytest.mark.parametrize("mode", MODES)
def test_get2_adds_the_price(api: Api, batch: dict[str, str], mode: Mode) -> None:
    body = b"OK|ab12|0.00" if mode == "plain" else b'{"status":1,"request":"ab12","price":"0.00"}'
    expect(api.get(batch["solved"], mode, action="get2"), body, mode)
    expect(api.get(batch["pending"], mode, action="get2"), error_body("CAPCHA_NOT_READY", mode), mode)
    expect(api.get(batch["unsolvable"], mode, action="get2"), error_body("ERROR_CAPTCHA_UNSOLVABLE", mode), mode)


# ------------------------------------------------------------------------------------------ account actions


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("mode", MODES)
def test_getbalance(app: AppHost, http: httpx.Client, mode: Mode, transport: Transport) -> None:
    key = app.make_key(balance="1.234")
    expect(Api(http, app.base_url, key).res({"action": "getbalance"}, mode, transport),
           bare_body("1.234", mode), mode)
    assert float(bare_body("1.234", "plain")) == 1.234  # what 2captcha-python does with it


@pytest.mark.parametrize(("balance", "text"), [("0", "0.00"), ("10", "10.00"), ("0.5", "0.50"),
                                               ("0.000001", "0.000001")])
def test_getbalance_format(app: AppHost, http: httpx.Client, balance: str, text: str) -> None:
    api = Api(http, app.base_url, app.make_key(balance=balance))
    expect(api.res({"action": "getbalance"}), text.encode(), "plain")


@pytest.mark.parametrize("mode", MODES)
def test_threadsinfo(app: AppHost, http: httpx.Client, mode: Mode) -> None:
    api = Api(http, app.base_url, app.make_key(threads=7))
    plain, js = b"OK|threads:7,working_threads:%d", b'{"status":1,"request":"OK","threads":7,"working_threads":%d}'
    expect(api.res({"action": "threadsinfo"}, mode), (plain if mode == "plain" else js) % 0, mode)
    api.submit_id({"method": "hcaptcha", "sitekey": "k", "pageurl": PAGEURL, "sandbox": "sandbox-slow-60"})
    api.submit_id({"method": "hcaptcha", "sitekey": "k2", "pageurl": PAGEURL, "sandbox": "sandbox-slow-60"})
    expect(api.res({"action": "threadsinfo"}, mode), (plain if mode == "plain" else js) % 2, mode)
    # a settled task frees its thread
    done = api.submit_id({"method": "hcaptcha", "sitekey": "k3", "pageurl": PAGEURL})
    api.settle(done)
    expect(api.res({"action": "threadsinfo"}, mode), (plain if mode == "plain" else js) % 2, mode)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("action", ["reportgood", "reportbad"])
def test_reports(api: Api, mode: Mode, action: str) -> None:
    task_id = api.submit_id({"method": "turnstile", "sitekey": "k", "pageurl": PAGEURL, "n": nonce()})
    api.settle(task_id)
    expect(api.res({"action": action, "id": task_id}, mode), bare_body("OK_REPORT_RECORDED", mode), mode)
    expect(api.res({"action": action, "id": task_id}, mode), error_body("ERROR_DUPLICATE_REPORT", mode), mode)
    other = "reportbad" if action == "reportgood" else "reportgood"
    expect(api.res({"action": other, "id": task_id}, mode), error_body("ERROR_DUPLICATE_REPORT", mode), mode)


@pytest.mark.parametrize("mode", MODES)
def test_reports_refused(api: Api, mode: Mode) -> None:
    pending = api.submit_id({"method": "turnstile", "sitekey": "k", "pageurl": PAGEURL, "n": nonce(),
                             "sandbox": "sandbox-slow-60"})
    unsolvable = api.submit_id({"method": "turnstile", "sitekey": "k", "pageurl": PAGEURL, "n": nonce(),
                                "sandbox": "sandbox-unsolvable"})
    api.settle(unsolvable)
    for task_id in (pending, unsolvable):
        for action in ("reportgood", "reportbad"):
            expect(api.res({"action": action, "id": task_id}, mode), error_body("REPORT_NOT_RECORDED", mode), mode)
    expect(api.res({"action": "reportbad", "id": "12345678901"}, mode), error_body("ERROR_WRONG_CAPTCHA_ID", mode),
           mode)
    expect(api.res({"action": "reportbad", "id": "x1"}, mode), error_body("ERROR_WRONG_ID_FORMAT", mode), mode)


# ------------------------------------------------------------------------------------------ CORS


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("mode", MODES)
def test_header_acao(api: Api, mode: Mode, transport: Transport) -> None:
    submit = api.submit({"method": "turnstile", "sitekey": "k", "pageurl": PAGEURL, "n": nonce(),
                         "header_acao": "1"}, mode, transport)
    assert submit.headers["access-control-allow-origin"] == "*"
    task_id = task_id_of(submit, mode)
    polled = api.res({"action": "get", "id": task_id, "header_acao": "1"}, mode, transport)
    assert polled.headers["access-control-allow-origin"] == "*"
    error = api.res({"action": "get", "id": "nope", "header_acao": "1"}, mode, transport)
    assert error.headers["access-control-allow-origin"] == "*"
    expect_error(error, "ERROR_WRONG_ID_FORMAT", mode)
    # default 0: no header
    assert "access-control-allow-origin" not in api.res({"action": "get", "id": task_id}, mode, transport).headers
    assert "access-control-allow-origin" not in api.res({"action": "get", "id": task_id, "header_acao": "0"},
                                                        mode, transport).headers


def test_unknown_parameters_are_ignored(api: Api) -> None:
    task_id = api.submit_id({"method": "turnstile", "sitekey": "k", "pageurl": PAGEURL, "soft_id": "4580",
                             "whatever": "x", "n": nonce()})
    assert re.fullmatch(TOKEN_RE, solved_plain(api, task_id))
    expect(api.res({"action": "getbalance", "soft_id": "4580", "extra": "1"}), b"10.00", "plain")
