"""The sandbox worker: deterministic fake answers, documented magic inputs, and odd parameters that
must never stop it from answering."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

import pytest

from capgate.protocol.codes import C
from capgate.solvers import sandbox
from capgate.store.models import Pool, Task, TaskState
from tests.appkit import AppHost
from tests.fixtures import (
    MODES,
    PAGEURL,
    TOKEN_RE,
    Api,
    Mode,
    b64,
    error_body,
    expect,
    expect_error,
    nonce,
    ok_body,
    png,
)

TOKEN = {"method": "turnstile", "sitekey": "0x4AAAA", "pageurl": PAGEURL}


@pytest.fixture(scope="module")
def api(app: AppHost) -> Iterator[Api]:
    with app.client() as client:
        yield Api(client, app.base_url, app.make_key(threads=100))


# ------------------------------------------------------------------------------------------ in-process


def task(method: str, params: dict[str, str]) -> Task:
    return Task(id=12345678901, account_id=1, method=method, params=params, state=TaskState.PENDING,
                pool=Pool.SANDBOX, price=0, created_at=1_700_000_000.0, deadline_at=1_700_000_300.0,
                not_before=0.0, answer=None, error=None, settled_at=None, report=None, attempts=1,
                lease_owner=None, lease_until=None, confidence=None, pingback=None,
                fingerprint=json.dumps([method, params, "image"], sort_keys=True))


def test_directives() -> None:
    assert sandbox.directives({"pageurl": "https://x/sandbox-unsolvable"}).unsolvable
    assert sandbox.directives({"sandbox": "sandbox-noslot"}).noslot
    assert sandbox.directives({"sandbox": "sandbox-slow-2.5"}).delay == 2.5
    assert sandbox.directives({"sandbox": "sandbox-error-ERROR_ZERO_BALANCE"}).submit_error == C.ZERO_BALANCE
    found = sandbox.directives({"sandbox": "sandbox-error-ERROR_PROXY_CONNECTION_FAILED"})
    assert found.settle_error == C.PROXY_CONNECTION_FAILED and found.submit_error is None
    assert sandbox.directives({"sandbox": "sandbox-error-ERROR_TOKEN_EXPIRED"}).settle_error == "ERROR_TOKEN_EXPIRED"
    assert sandbox.directives({"sandbox": "sandbox-error-NOT_A_CODE"}) == sandbox.Directives()
    assert sandbox.directives({"textinstructions": "sandbox-answer-x1y2 and more"}).answer == "x1y2"
    assert sandbox.directives({"pageurl": PAGEURL}) == sandbox.Directives()


@pytest.mark.parametrize("method", ["normal", "grid", "bls", "recaptcha_v2", "recaptcha_v3_enterprise", "turnstile",
                                    "cloudflare_challenge", "geetest", "geetest_v4", "captchafox", "lemin",
                                    "hcaptcha", "friendly_captcha", "funcaptcha"])
def test_every_method_gets_a_deterministic_answer(method: str) -> None:
    params = {"sitekey": "k", "pageurl": PAGEURL, "challenge": "c", "captcha_id": "cid"}
    first, error = sandbox.solve(task(method, params))
    assert error is None and first is not None
    again, _ = sandbox.solve(task(method, dict(params)))
    assert again == first
    other, _ = sandbox.solve(task(method, {**params, "sitekey": "k2"}))
    assert other != first


@pytest.mark.parametrize(("params", "pattern"), [
    ({"numeric": "true"}, r"[0-9]{6}"),
    ({"numeric": "1", "min_len": "true"}, r"[0-9]{6}"),
    ({"min_len": " 4", "max_len": "4 "}, r"[0-9a-z]{4}"),
    ({"numeric": "", "max_len": ""}, r"[0-9a-z]{6}"),
    ({"regsense": "true", "numeric": "2", "min_len": "30"}, r"[a-zA-Z]{30}"),
])
def test_text_options_in_every_accepted_spelling(params: dict[str, str], pattern: str) -> None:
    """in.php accepts true/false and padded numbers for the image options: the sandbox must too."""
    answer, error = sandbox.solve(task("normal", params))
    assert error is None and answer is not None
    assert re.fullmatch(pattern, str(answer["request"])), answer


@pytest.mark.parametrize("params", [{"recaptcharows": "abc", "recaptcharows2": "3"},
                                    {"recaptcharows": "3", "recaptchacols": "x"},
                                    {"recaptcharows": "-3", "recaptchacols": "3"},
                                    {"recaptcharows": "0", "recaptchacols": "0"}])
def test_grid_with_odd_sizes_still_answers(params: dict[str, str]) -> None:
    answer, error = sandbox.solve(task("grid", {"recaptcha": "1", **params}))
    assert error is None and answer is not None
    assert all(cell >= 1 for cell in json.loads(str(answer["request"])))


# ------------------------------------------------------------------------------------------ over HTTP


def test_slow_answers_later(api: Api) -> None:
    task_id = api.submit_id({**TOKEN, "sandbox": "sandbox-slow-2", "n": nonce()})
    for mode in MODES:  # pending, where the default delay would already have answered it
        expect(api.get(task_id, mode), error_body("CAPCHA_NOT_READY", mode), mode)
    response = api.get(task_id, "json", wait=10)
    assert re.fullmatch(rb'\{"status":1,"request":"' + TOKEN_RE.encode() + rb'"\}', response.content)


@pytest.mark.parametrize("where", ["pageurl", "sitekey", "sandbox", "data"])
def test_magic_anywhere(api: Api, where: str) -> None:
    params = {**TOKEN, "n": nonce()}
    params[where] = params.get(where, "") + "sandbox-unsolvable"
    expect_error(api.settle(api.submit_id(params)), "ERROR_CAPTCHA_UNSOLVABLE", "plain")


@pytest.mark.parametrize(("params", "answer"), [
    ({"numeric": "true", "min_len": "true"}, r"[0-9]{6}"),
    ({"numeric": "1", "maxLen": " 4"}, r"[0-9]{4}"),
], ids=["true", "padded"])
def test_image_options_over_http(api: Api, params: dict[str, str], answer: str) -> None:
    task_id = api.submit_id({"method": "base64", "body": b64(png(seed=60)), "n": nonce(), **params})
    response = api.get(task_id, wait=10)
    assert re.fullmatch(rb"OK\|" + answer.encode(), response.content), response.content


def test_grid_with_odd_sizes_over_http(api: Api) -> None:
    task_id = api.submit_id({"method": "base64", "recaptcha": "1", "recaptcharows": "abc", "recaptchacols": "3",
                             "body": b64(png(seed=61)), "n": nonce()})
    response = api.get(task_id, wait=10)
    assert re.fullmatch(rb"OK\|\[[0-9,]+\]", response.content), response.content


@pytest.mark.parametrize("mode", MODES)
def test_answer_magic(api: Api, mode: Mode) -> None:
    task_id = api.submit_id({"method": "post", "textinstructions": "sandbox-answer-W7x9"},
                            files={"file": ("c.png", png(seed=int(nonce()[:5], 16)))})
    expect(api.get(task_id, mode, wait=10), ok_body("W7x9", mode), mode)
