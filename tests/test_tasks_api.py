"""The JSON task API (2captcha API v2) by its own spellings, byte for byte, on both store backends: the
same accounts, tasks, prices and ledger as in.php / res.php, each side polling the other's tasks."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from capgate.money import micros_to_usd
from capgate.protocol.codes import CODES
from capgate.solvers.sandbox import FAKE_USER_AGENT
from tests.appkit import AppHost, app_host
from tests.fixtures import b64, dumps, png
from tests.storekit import BACKENDS, backend_of

JSON = "application/json"
SITEKEY = "6Le-wvkSAAAAAPBMRTvw0Q4Muexq9bi0DJwx_mJ-"


@pytest.fixture(scope="module", params=BACKENDS)
def host(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppHost]:
    backend = backend_of(request, request.param, tmp_path_factory.mktemp(f"tasks-{request.param}"))
    with app_host(backend) as app:
        yield app


@pytest.fixture()
def http(host: AppHost) -> Iterator[httpx.Client]:
    with host.client() as client:
        yield client


@pytest.fixture()
def key(host: AppHost) -> str:
    return host.make_key(balance="5")


def call(http: httpx.Client, path: str, body: Any) -> httpx.Response:
    response = http.post(path, content=body if isinstance(body, bytes) else dumps(body),
                         headers={"content-type": JSON})
    assert response.status_code == 200
    assert response.headers["content-type"] == JSON
    return response


def error(code: str, number: int, description: str | None = None) -> bytes:
    meaning = description if description is not None else CODES[code].meaning
    return dumps({"errorId": number, "errorCode": code, "errorDescription": meaning})


def create(http: httpx.Client, key: str, task: dict[str, Any]) -> int:
    response = call(http, "/createTask", {"clientKey": key, "task": task})
    task_id = response.json().get("taskId")
    assert isinstance(task_id, int), response.content
    assert response.content == dumps({"errorId": 0, "taskId": task_id})
    return task_id


def settle(http: httpx.Client, key: str, task_id: int) -> httpx.Response:
    deadline = time.monotonic() + 10
    while True:
        response = call(http, "/getTaskResult", {"clientKey": key, "taskId": task_id})
        if response.content != b'{"errorId":0,"status":"processing"}' or time.monotonic() > deadline:
            return response
        time.sleep(0.05)


def ready(host: AppHost, key: str, task_id: int, solution: dict[str, Any]) -> bytes:
    """The exact ``ready`` body: its times and cost are the store's."""
    outcome = host.run(host.store.outcomes(host.account_id(key), [task_id]))[task_id]
    assert outcome.settled_at is not None
    return dumps({"errorId": 0, "status": "ready", "solution": solution, "cost": micros_to_usd(outcome.price),
                  "ip": "127.0.0.1", "createTime": int(outcome.created_at), "endTime": int(outcome.settled_at),
                  "solveCount": 1})


def res_json(http: httpx.Client, key: str, task_id: int | str) -> dict[str, Any]:
    body: dict[str, Any] = http.get("/res.php", params={"key": key, "action": "get", "id": str(task_id),
                                                         "json": "1"}).json()
    return body


def test_image_to_text_is_created_polled_and_answered(host: AppHost, http: httpx.Client, key: str) -> None:
    task_id = create(http, key, {"type": "ImageToTextTask", "body": b64(png(seed=1)), "phrase": False,
                                 "case": True, "numeric": 0, "math": False, "minLength": 0, "maxLength": 0,
                                 "comment": "sandbox-answer-HelloWorld"})
    assert settle(http, key, task_id).content == ready(host, key, task_id, {"text": "HelloWorld"})
    # The same task through res.php: one store, one answer.
    assert res_json(http, key, task_id) == {"status": 1, "request": "HelloWorld"}
    stored = host.run(host.store.get_task(host.account_id(key), task_id))
    assert stored is not None and stored.method == "normal"
    assert stored.params["regsense"] == "1" and stored.params["textinstructions"] == "sandbox-answer-HelloWorld"


def test_recaptcha_v2_solution_carries_both_token_spellings(host: AppHost, http: httpx.Client, key: str) -> None:
    task_id = create(http, key, {"type": "RecaptchaV2TaskProxyless", "websiteURL": "https://site.test/v2",
                                 "websiteKey": SITEKEY, "isInvisible": True})
    token = res_json(http, key, task_id)
    deadline = time.monotonic() + 10
    while token.get("status") != 1 and time.monotonic() < deadline:
        time.sleep(0.05)
        token = res_json(http, key, task_id)
    assert settle(http, key, task_id).content == ready(host, key, task_id, {"gRecaptchaResponse": token["request"],
                                                                             "token": token["request"]})
    stored = host.run(host.store.get_task(host.account_id(key), task_id))
    assert stored is not None and stored.method == "recaptcha_v2"
    assert stored.params["googlekey"] == SITEKEY and stored.params["invisible"] == "1"


@pytest.mark.parametrize(("task", "method", "params"), [
    ({"type": "RecaptchaV3TaskProxyless", "websiteURL": "https://s.test", "websiteKey": SITEKEY, "minScore": 0.7,
      "pageAction": "verify"}, "recaptcha_v3", {"min_score": "0.7", "version": "v3"}),
    ({"type": "RecaptchaV3TaskProxyless", "websiteURL": "https://s.test", "websiteKey": SITEKEY,
      "isEnterprise": True}, "recaptcha_v3_enterprise", {"enterprise": "1"}),
    ({"type": "RecaptchaV2EnterpriseTaskProxyless", "websiteURL": "https://s.test", "websiteKey": SITEKEY,
      "enterprisePayload": {"s": "SOME"}}, "recaptcha_v2_enterprise", {"data_s": "SOME"}),
    ({"type": "RecaptchaV2Task", "websiteURL": "https://s.test", "websiteKey": SITEKEY, "proxyType": "http",
      "proxyAddress": "10.0.0.1", "proxyPort": 3128, "proxyLogin": "u", "proxyPassword": "p"}, "recaptcha_v2",
     {"proxy": "u:p@10.0.0.1:3128", "proxytype": "HTTP"}),
    ({"type": "TurnstileTaskProxyless", "websiteURL": "https://s.test", "websiteKey": "0x4AAAAAAA"}, "turnstile",
     {"sitekey": "0x4AAAAAAA"}),
    ({"type": "HCaptchaTaskProxyless", "websiteURL": "https://s.test", "websiteKey": "a5f74b19-9e45-40e0"},
     "hcaptcha", {"sitekey": "a5f74b19-9e45-40e0"}),
    ({"type": "GeeTestTaskProxyless", "websiteURL": "https://s.test", "gt": "81dc9bdb52d04dc2", "challenge": "c1"},
     "geetest", {"gt": "81dc9bdb52d04dc2", "challenge": "c1"}),
    ({"type": "GeeTestTaskProxyless", "websiteURL": "https://s.test", "version": 4,
      "initParameters": {"captcha_id": "e392e1d7fd421dc6"}}, "geetest_v4", {"captcha_id": "e392e1d7fd421dc6"}),
    ({"type": "FunCaptchaTaskProxyless", "websiteURL": "https://s.test", "websitePublicKey": "69A21A01-CC7B"},
     "funcaptcha", {"publickey": "69A21A01-CC7B"}),
    ({"type": "LeminTaskProxyless", "websiteURL": "https://s.test", "captchaId": "CROPPED_3dfdd5c_d1872b",
      "divId": "lemin-cropped-captcha"}, "lemin", {"div_id": "lemin-cropped-captcha"}),
    ({"type": "FriendlyCaptchaTaskProxyless", "websiteURL": "https://s.test", "websiteKey": "FCMST5VUMCBOCGQ9"},
     "friendly_captcha", {"sitekey": "FCMST5VUMCBOCGQ9"}),
    ({"type": "GridTask", "body": b64(png(seed=3)), "rows": 3, "columns": 3, "comment": "bicycles"}, "grid",
     {"recaptcharows": "3", "textinstructions": "bicycles"}),
])
def test_each_task_type_reaches_its_row(host: AppHost, http: httpx.Client, key: str, task: dict[str, Any],
                                        method: str, params: dict[str, str]) -> None:
    task_id = create(http, key, task)
    stored = host.run(host.store.get_task(host.account_id(key), task_id))
    assert stored is not None and stored.method == method
    assert params.items() <= stored.params.items()
    body = settle(http, key, task_id).json()
    assert body["status"] == "ready" and body["errorId"] == 0


def test_solution_objects_per_answer_kind(host: AppHost, http: httpx.Client, key: str) -> None:
    geetest = create(http, key, {"type": "GeeTestTaskProxyless", "websiteURL": "https://s.test",
                                 "gt": "81dc9bdb52d04dc2", "challenge": "c2"})
    grid = create(http, key, {"type": "GridTask", "body": b64(png(seed=4)), "rows": 3, "columns": 3})
    enterprise = create(http, key, {"type": "RecaptchaV2EnterpriseTaskProxyless", "websiteURL": "https://s.test",
                                    "websiteKey": SITEKEY})
    solution = settle(http, key, geetest).json()["solution"]
    assert list(solution) == ["challenge", "validate", "seccode"]
    assert solution == res_json(http, key, geetest)["request"]
    click = settle(http, key, grid).json()["solution"]
    assert list(click) == ["click"] and json.dumps(click["click"], separators=(",", ":")) == \
        res_json(http, key, grid)["request"]
    token = settle(http, key, enterprise).json()["solution"]
    assert token["userAgent"] == FAKE_USER_AGENT and token["token"] == token["gRecaptchaResponse"]


def test_a_task_made_on_in_php_is_polled_here(host: AppHost, http: httpx.Client, key: str) -> None:
    made = http.post("/in.php", data={"key": key, "method": "base64", "body": b64(png(seed=5)),
                                      "textinstructions": "sandbox-answer-FROM-IN.PHP"})
    task_id = int(made.text.removeprefix("OK|"))
    assert settle(http, key, task_id).content == ready(host, key, task_id, {"text": "FROM-IN.PHP"})


def test_balance_reports_and_ledger(host: AppHost, http: httpx.Client) -> None:
    key = host.make_key(sandbox=True, balance="5")
    assert call(http, "/getBalance", {"clientKey": key}).content == b'{"errorId":0,"balance":5.00}'
    task_id = create(http, key, {"type": "ImageToTextTask", "body": b64(png(seed=6)),
                                 "comment": "sandbox-answer-abc"})
    settle(http, key, task_id)
    assert call(http, "/reportCorrect", {"clientKey": key, "taskId": task_id}).content == \
        b'{"errorId":0,"status":"success"}'
    balance = http.get("/res.php", params={"key": key, "action": "getbalance"}).text
    assert call(http, "/getBalance", {"clientKey": key}).content == b'{"errorId":0,"balance":%s}' % balance.encode()
    other = create(http, key, {"type": "ImageToTextTask", "body": b64(png(seed=7)), "comment": "sandbox-answer-x"})
    settle(http, key, other)
    assert call(http, "/reportIncorrect", {"clientKey": key, "taskId": str(other)}).content == \
        b'{"errorId":0,"status":"success"}'
    # Made again, a report stands as made: success, and no second refund (the balance is unchanged).
    assert call(http, "/reportIncorrect", {"clientKey": key, "taskId": other}).content == \
        b'{"errorId":0,"status":"success"}'
    assert call(http, "/reportCorrect", {"clientKey": key, "taskId": 123}).content == \
        error("ERROR_NO_SUCH_CAPCHA_ID", 16, "The task id is unknown, belongs to another key, or has expired.")


def test_errors_by_their_api_spellings(host: AppHost, http: httpx.Client, key: str) -> None:
    wrong = "0" * 32
    with host.client("127.0.0.9") as elsewhere:  # a wrong key strikes its address; keep 127.0.0.1 clean
        assert call(elsewhere, "/getBalance", {"clientKey": wrong}).content == \
            error("ERROR_KEY_DOES_NOT_EXIST", 1)
        assert call(elsewhere, "/createTask", {"clientKey": "short", "task": {"type": "ImageToTextTask"}}).content \
            == error("ERROR_KEY_DOES_NOT_EXIST", 1, CODES["ERROR_WRONG_USER_KEY"].meaning)
    assert call(http, "/createTask", {"clientKey": key}).content == \
        error("ERROR_TASK_ABSENT", 22, "The task object is missing, or the body is not a JSON object.")
    assert call(http, "/createTask", b"not json").content == \
        error("ERROR_TASK_ABSENT", 22, "The task object is missing, or the body is not a JSON object.")
    assert call(http, "/createTask", {"clientKey": key, "task": {"type": "NoSuchTask"}}).content == \
        error("ERROR_TASK_NOT_SUPPORTED", 23, "The task type is not one this service knows.")
    assert call(http, "/createTask", {"clientKey": key, "task": {"type": "RecaptchaV2TaskProxyless",
                                                                  "websiteKey": SITEKEY}}).content == \
        error("ERROR_PAGEURL", 110)
    assert call(http, "/createTask", {"clientKey": key, "task": {"type": "RecaptchaV2Task", "websiteKey": SITEKEY,
                                                                  "websiteURL": "https://s.test"}}).content == \
        error("ERROR_BAD_PARAMETERS", 110)
    assert call(http, "/createTask", {"clientKey": key, "task": {"type": "RecaptchaV2TaskProxyless",
                                                                  "websiteURL": "https://s.test",
                                                                  "websiteKey": "<script>"}}).content == \
        error("ERROR_RECAPTCHA_INVALID_SITEKEY", 31, CODES["ERROR_WRONG_GOOGLEKEY"].meaning)
    assert call(http, "/createTask", {"clientKey": key, "task": {"type": "ImageToTextTask"}}).content == \
        error("ERROR_UPLOAD", 110)
    missing = error("ERROR_NO_SUCH_CAPCHA_ID", 16, "The task id is unknown, belongs to another key, or has expired.")
    assert call(http, "/getTaskResult", {"clientKey": key, "taskId": 999999999999}).content == missing
    assert call(http, "/getTaskResult", {"clientKey": key, "taskId": "abc"}).content == missing
    assert call(http, "/getTaskResult", {"clientKey": key}).content == missing
    assert call(http, "/getTaskResult", b"[1,2]").content == error("ERROR_BAD_PARAMETERS", 110)
    deep = b'{"clientKey": "' + key.encode() + b'", "task": ' + b"[" * 50_000 + b"]" * 50_000 + b"}"
    assert call(http, "/createTask", deep).content == \
        error("ERROR_TASK_ABSENT", 22, "The task object is missing, or the body is not a JSON object.")
    nested = {"clientKey": key, "task": {"type": "HCaptchaTaskProxyless", "websiteURL": "https://s.test",
                                         "websiteKey": "k", "enterprisePayload": {"rqdata": {"a": [1, {"b": 2}]}}}}
    assert call(http, "/createTask", nested).json()["errorId"] == 0  # a nested value travels as its JSON text


def test_unsolvable_task(host: AppHost, http: httpx.Client, key: str) -> None:
    task_id = create(http, key, {"type": "TurnstileTaskProxyless", "websiteURL": "https://s.test/sandbox-unsolvable",
                                 "websiteKey": "0x4AAAAAAA"})
    assert settle(http, key, task_id).content == error("ERROR_CAPTCHA_UNSOLVABLE", 12)


def test_a_body_over_the_limit(host: AppHost, http: httpx.Client, key: str) -> None:
    big = dumps({"clientKey": key, "task": {"type": "ImageToTextTask", "body": "A" * (host.settings.body_limit + 1)}})
    assert call(http, "/createTask", big).content == error("ERROR_TOO_BIG_CAPTCHA_FILESIZE", 4)
