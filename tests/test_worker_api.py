"""The worker API (docs/worker-api.md) against the app in process (tests/appkit.py), on both backends
(SQLite on a temporary file, PostgreSQL in a fresh schema): tokens, claim, lease, heartbeat, answer,
fail, presence, the human pool, and what the customer then reads from res.php.

One app per backend for the module (2 attempts per task, Turnstile at 0.5 USD). Before each test a
*presence* token drains whatever an earlier test left claimable and keeps every method served (a claim
without ``methods`` registers ``*``); that token never claims with a method list. The presence tests
get an app of their own each, where no worker has claimed anything yet.

The shared helpers (``claim``, ``act``, ``submit``, ...) live in tests/workerkit.py.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from capgate.testing import ServerProcess
from tests.appkit import AppHost, app_host
from tests.storekit import backend_of
from tests.workerkit import (
    PAGEURL,
    act,
    balance,
    call,
    claim,
    claim_id,
    drain,
    get,
    png_b64,
    res,
    submit,
    turnstile,
    unique,
    worker_token,
)

MAX_ATTEMPTS = 2
TURNSTILE_PRICE = Decimal("0.5")
BACKENDS = ["sqlite", "postgres"]


# ------------------------------------------------------------------------------------------ fixtures


@dataclass(frozen=True)
class Tokens:
    presence: str  # drains the queue before each test; claims without methods only
    bot: str
    bot2: str
    turnstile_only: str
    human: str
    key: str  # a live customer key


@pytest.fixture(scope="module", params=BACKENDS)
def live(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppHost]:
    backend = backend_of(request, request.param, tmp_path_factory.mktemp(f"worker-api-{request.param}"))
    with app_host(backend, max_attempts=MAX_ATTEMPTS, prices=f"turnstile={TURNSTILE_PRICE}") as host:
        yield host


@pytest.fixture(scope="module")
def tokens(live: AppHost) -> Tokens:
    return Tokens(live.worker_token("presence"), live.worker_token("bot"), live.worker_token("bot2"),
                  live.worker_token("tbot", ["turnstile"]), live.worker_token("alice", human=True),
                  live.make_key(sandbox=False, threads=200, balance="1000"))


@pytest.fixture()
async def client(live: AppHost, tokens: Tokens) -> AsyncIterator[httpx.AsyncClient]:
    async with live.aclient() as http:
        await drain(http, tokens.presence)
        yield http


def ledger(live: AppHost, tokens: Tokens, task_id: str) -> list[tuple[str, int]]:
    """The ledger rows that name a task (kind, amount in micro-USD)."""
    return live.ledger(tokens.key, task_id)


# ------------------------------------------------------------------------------------------ presence


@dataclass(frozen=True)
class Bare:
    """An app where no worker has claimed anything yet (default settings: 3 attempts), a live key,
    and two worker tokens."""

    host: AppHost
    key: str
    hcaptcha_bot: str  # may serve hcaptcha only
    any_bot: str


@pytest.fixture(params=BACKENDS)
def bare(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Bare]:
    with app_host(backend_of(request, request.param, tmp_path)) as host:
        yield Bare(host, host.make_key(sandbox=False, threads=200), host.worker_token("hbot", ["hcaptcha"]),
                   host.worker_token("multi"))


async def served_now(host: AppHost) -> set[str]:
    """The methods the store says some worker serves: what a process that saw no claim reads."""
    return await host.arun(host.store.active_worker_methods(time.time() - host.settings.worker_presence))


async def test_live_submit_needs_a_worker_that_claimed_the_method(bare: Bare) -> None:
    key, token = bare.key, bare.hcaptcha_bot
    hcaptcha = {"method": "hcaptcha", "sitekey": unique(), "pageurl": PAGEURL}
    async with bare.host.aclient() as http:
        for params in (hcaptcha, turnstile()):
            assert (await http.post("/in.php", data={"key": key, **params})).text == "ERROR_NO_SLOT_AVAILABLE"
        assert await claim(http, token) is None  # registers presence for the token's methods
        # Taken at once: the process the worker claimed through knows it, whatever it cached before.
        reply = (await http.post("/in.php", data={"key": key, **hcaptcha})).text
        assert reply.startswith("OK|"), reply
        task_id = reply.removeprefix("OK|")
        assert (await http.post("/in.php", data={"key": key, **turnstile()})).text == "ERROR_NO_SLOT_AVAILABLE"
        task = await claim_id(http, token, task_id, None)
        assert (await act(http, token, task, "answer", answer={"token": "h-token"})).status_code == 200


async def test_presence_covers_each_method_a_token_claims(bare: Bare) -> None:
    key, token = bare.key, bare.any_bot
    async with bare.host.aclient() as http:
        assert await claim(http, token, ["lemin"]) is None
        assert await claim(http, token, ["friendly_captcha"]) is None
        params = {"method": "friendly_captcha", "sitekey": unique(), "pageurl": PAGEURL}
        assert (await http.post("/in.php", data={"key": key, **params})).text.startswith("OK|")
    # What every other process reads: the store, past this one's notes.
    assert {"lemin", "friendly_captcha"} <= await served_now(bare.host)


async def test_a_token_that_claims_turnstile_then_hcaptcha_serves_both(bare: Bare) -> None:
    """Issue 10, defect 1: a later claim of another method must not drop the earlier one."""
    key, token = bare.key, bare.any_bot
    async with bare.host.aclient() as http:
        assert await claim(http, token, ["turnstile"]) is None
        assert await claim(http, token, ["hcaptcha"]) is None
        # The defect was in the store, which the other processes read: this process's own notes of
        # the two claims would hide it from in.php here.
        assert {"turnstile", "hcaptcha"} <= await served_now(bare.host)
        reply = (await http.post("/in.php", data={"key": key, **turnstile()})).text
        assert reply.startswith("OK|"), reply
        hcaptcha = {"method": "hcaptcha", "sitekey": unique(), "pageurl": PAGEURL}
        assert (await http.post("/in.php", data={"key": key, **hcaptcha})).text.startswith("OK|")


async def test_giving_back_without_error_on_the_last_attempt_settles_unsolvable_at_once(bare: Bare) -> None:
    """Issue 10, defect 2: ``fail`` with ``"error": null`` on each of the 3 attempts (max_attempts=3)
    settles the task ERROR_CAPTCHA_UNSOLVABLE then and there, not at its deadline."""
    assert bare.host.settings.max_attempts == 3
    key, token = bare.key, bare.any_bot
    async with bare.host.aclient() as http:
        assert await claim(http, token) is None  # presence for every method
        task_id = await submit(http, key, **turnstile())
        for attempt in (1, 2, 3):
            task = await claim_id(http, token, task_id, ["turnstile"])
            assert task["attempt"] == attempt
            assert (await act(http, token, task, "fail", error=None)).status_code == 200
        assert await get(http, key, task_id) == "ERROR_CAPTCHA_UNSOLVABLE"
        assert json.loads(await get(http, key, task_id, json=1))["request"] == "ERROR_CAPTCHA_UNSOLVABLE"
        assert await claim(http, token, ["turnstile"]) is None
        assert bare.host.ledger(key, task_id) == []


# ------------------------------------------------------------------------------------------ auth and input


@pytest.mark.parametrize("auth", ["none", "basic", "unknown", "customer-key", "prefix-only"])
async def test_bad_tokens_get_401(client: httpx.AsyncClient, tokens: Tokens, auth: str) -> None:
    headers = {
        "none": {},
        "basic": {"Authorization": "Basic " + base64.b64encode(b"user:pass").decode()},
        "unknown": {"Authorization": "Bearer cgw_" + "0" * 40},
        "customer-key": {"Authorization": f"Bearer {tokens.key}"},
        "prefix-only": {"Authorization": "Bearer cgw_"},
    }[auth]
    for path in ("claim", "tasks/123456789/heartbeat", "tasks/123456789/answer", "tasks/123456789/fail"):
        reply = await client.post(f"/worker/v1/{path}", json={"lease": "x", "answer": {"token": "t"}},
                                  headers=headers)
        assert reply.status_code == 401, (path, reply.text)
        assert isinstance(reply.json()["error"], str)


async def test_methods_outside_the_token_list_get_403(client: httpx.AsyncClient, tokens: Tokens) -> None:
    for methods in (["hcaptcha"], ["turnstile", "hcaptcha"]):
        reply = await call(client, tokens.turnstile_only, "claim", {"methods": methods})
        assert reply.status_code == 403, reply.text
        assert "turnstile" in reply.json()["error"]
    assert await claim(client, tokens.turnstile_only, ["turnstile"]) is None
    # Without a method list the token claims only what it may serve: the older hcaptcha task is skipped.
    hcaptcha_id = await submit(client, tokens.key, method="hcaptcha", sitekey=unique(), pageurl=PAGEURL)
    turnstile_id = await submit(client, tokens.key, **turnstile())
    task = await claim_id(client, tokens.turnstile_only, turnstile_id, None)
    assert task["method"] == "turnstile"
    other = await claim_id(client, tokens.bot, hcaptcha_id, ["hcaptcha"])
    for token, done in ((tokens.turnstile_only, task), (tokens.bot, other)):
        assert (await act(client, token, done, "answer", answer={"token": "t"})).status_code == 200


async def test_malformed_requests(client: httpx.AsyncClient, tokens: Tokens) -> None:
    auth = {"Authorization": f"Bearer {tokens.bot}"}
    for raw in (b"not json", b"[1, 2]", b'"text"'):
        reply = await client.post("/worker/v1/claim", content=raw, headers=auth)
        assert reply.status_code == 400, raw
    for body in ({"methods": ["no_such_method"]}, {"methods": "turnstile"}, {"wait": -1}, {"wait": "5"},
                 {"wait": True}, {"lease_seconds": -3}):
        assert (await call(client, tokens.bot, "claim", body)).status_code == 400, body
    assert (await call(client, tokens.bot, "tasks/abc/heartbeat", {"lease": "x"})).status_code == 400
    assert (await call(client, tokens.bot, "tasks/123/heartbeat", {})).status_code == 400
    assert (await call(client, tokens.bot, "tasks/123/answer", {"lease": "x", "answer": "t"})).status_code == 400
    assert (await call(client, tokens.bot, "tasks/123/fail", {"lease": "x", "error": 5})).status_code == 400
    assert (await call(client, tokens.bot, "tasks/123/fail", {"lease": "x", "final": "yes"})).status_code == 400
    # A well-formed call about a task that is not leased to the caller: 409.
    assert (await call(client, tokens.bot, "tasks/123/answer",
                       {"lease": "x", "answer": {"token": "t"}})).status_code == 409
    big = b'{"methods": ["turnstile"], "pad": "' + b"x" * (2 * 1024 * 1024) + b'"}'
    assert (await client.post("/worker/v1/claim", content=big, headers=auth)).status_code == 413


# ------------------------------------------------------------------------------------------ claim and lease


async def test_claim_long_poll_gets_a_task_submitted_during_the_wait(client: httpx.AsyncClient,
                                                                     tokens: Tokens) -> None:
    assert await claim(client, tokens.bot, ["turnstile"]) is None
    waiting = asyncio.create_task(claim(client, tokens.bot, ["turnstile"], wait=15))
    await asyncio.sleep(0.3)
    sitekey = f"0x4AAA{unique()}"
    task_id = await submit(client, tokens.key, method="turnstile", googlekey=sitekey, pageurl=PAGEURL,
                           soft_id="1234")
    task = await waiting
    assert task is not None
    assert task["id"] == task_id
    assert task["method"] == "turnstile"
    assert task["answer_kind"] == "token"
    assert task["params"] == {"sitekey": sitekey, "pageurl": PAGEURL}  # alias folded, transport params gone
    assert task["images"] == {}
    assert task["attempt"] == 1
    assert task["account_settings"] == {}
    assert isinstance(task["lease"], str) and task["lease"]
    assert task["deadline_at"] > task["lease_until"] > 0
    assert (await act(client, tokens.bot, task, "answer", answer={"token": "tok"})).status_code == 200


async def test_image_task_carries_its_image_and_canonical_options(client: httpx.AsyncClient,
                                                                  tokens: Tokens) -> None:
    body = png_b64()
    task_id = await submit(client, tokens.key, method="base64", body=body, numeric="1", minLen="4",
                           caseSensitive="1")
    task = await claim_id(client, tokens.bot, task_id, ["normal"])
    assert task["method"] == "normal"
    assert task["answer_kind"] == "text"
    assert task["images"] == {"body": body}
    assert task["params"] == {"numeric": "1", "min_len": "4", "regsense": "1"}
    assert (await act(client, tokens.bot, task, "answer", answer={"text": "4821"})).status_code == 200
    assert await get(client, tokens.key, task_id) == "OK|4821"


async def test_heartbeat_keeps_the_lease(client: httpx.AsyncClient, tokens: Tokens) -> None:
    task_id = await submit(client, tokens.key, **turnstile())
    task = await claim_id(client, tokens.bot, task_id, ["turnstile"], lease_seconds=2)
    reply = await act(client, tokens.bot, task, "heartbeat", lease_seconds=30)
    assert reply.status_code == 200, reply.text
    assert reply.json()["lease_until"] > task["lease_until"]
    wrong = await call(client, tokens.bot, f"tasks/{task_id}/heartbeat", {"lease": "not-the-lease"})
    assert wrong.status_code == 409
    await asyncio.sleep(2.5)  # past the first lease: only the heartbeat keeps the task
    assert await claim(client, tokens.bot2, ["turnstile"]) is None
    assert (await act(client, tokens.bot, task, "heartbeat")).status_code == 200
    assert (await act(client, tokens.bot, task, "answer", answer={"token": "kept"})).status_code == 200
    assert (await act(client, tokens.bot, task, "heartbeat")).status_code == 409  # settled
    assert await get(client, tokens.key, task_id) == "OK|kept"


async def test_lease_length_is_bounded(client: httpx.AsyncClient, tokens: Tokens) -> None:
    task_id = await submit(client, tokens.key, **turnstile())
    before = time.time()
    task = await claim_id(client, tokens.bot, task_id, ["turnstile"], lease_seconds=1e9)
    assert before + 60 < task["lease_until"] <= time.time() + 600  # capped at ten minutes
    reply = await act(client, tokens.bot, task, "heartbeat", lease_seconds=1e9)
    assert reply.json()["lease_until"] <= time.time() + 600
    assert (await act(client, tokens.bot, task, "answer", answer={"token": "t"})).status_code == 200


async def test_expired_lease_goes_to_another_worker_and_the_late_answer_is_refused(
        client: httpx.AsyncClient, tokens: Tokens, live: AppHost) -> None:
    task_id = await submit(client, tokens.key, **turnstile())
    first = await claim_id(client, tokens.bot, task_id, ["turnstile"], lease_seconds=1)
    second = await claim_id(client, tokens.bot2, task_id, ["turnstile"])  # waits for the lease to run out
    assert second["attempt"] == 2
    assert second["lease"] != first["lease"]
    for verb, body in (("heartbeat", {}), ("answer", {"answer": {"token": "late"}}), ("fail", {"error": None})):
        assert (await act(client, tokens.bot, first, verb, **body)).status_code == 409, verb
    assert (await act(client, tokens.bot2, second, "answer", answer={"token": "on-time"})).status_code == 200
    assert (await act(client, tokens.bot2, second, "answer", answer={"token": "again"})).status_code == 409
    assert (await act(client, tokens.bot, first, "answer", answer={"token": "late"})).status_code == 409
    assert await get(client, tokens.key, task_id) == "OK|on-time"
    assert ledger(live, tokens, task_id) == [("charge", -500_000)]


async def test_concurrent_answers_settle_the_task_once(client: httpx.AsyncClient, tokens: Tokens,
                                                       live: AppHost) -> None:
    before = await balance(client, tokens.key)
    task_id = await submit(client, tokens.key, **turnstile())
    task = await claim_id(client, tokens.bot, task_id, ["turnstile"])
    replies = await asyncio.gather(*(act(client, tokens.bot, task, "answer", answer={"token": f"t{i}"})
                                     for i in range(8)))
    statuses = sorted(reply.status_code for reply in replies)
    assert statuses == [200] + [409] * 7
    winner = next(i for i, reply in enumerate(replies) if reply.status_code == 200)
    assert await get(client, tokens.key, task_id) == f"OK|t{winner}"
    assert ledger(live, tokens, task_id) == [("charge", -500_000)]
    assert await balance(client, tokens.key) == before - TURNSTILE_PRICE


# ------------------------------------------------------------------------------------------ failing


async def test_failed_attempts_end_unsolvable_and_uncharged(client: httpx.AsyncClient, tokens: Tokens,
                                                            live: AppHost) -> None:
    before = await balance(client, tokens.key)
    task_id = await submit(client, tokens.key, **turnstile())
    first = await claim_id(client, tokens.bot, task_id, ["turnstile"])
    assert (await act(client, tokens.bot, first, "fail", error="ERROR_CAPTCHA_UNSOLVABLE")).json() == {"ok": True}
    assert await get(client, tokens.key, task_id) == "CAPCHA_NOT_READY"  # back in the queue
    second = await claim_id(client, tokens.bot2, task_id, ["turnstile"])
    assert second["attempt"] == MAX_ATTEMPTS
    assert (await act(client, tokens.bot2, second, "fail", error="ERROR_CAPTCHA_UNSOLVABLE")).status_code == 200
    assert await get(client, tokens.key, task_id) == "ERROR_CAPTCHA_UNSOLVABLE"
    assert json.loads(await get(client, tokens.key, task_id, json=1))["request"] == "ERROR_CAPTCHA_UNSOLVABLE"
    assert await claim(client, tokens.bot, ["turnstile"]) is None
    assert await balance(client, tokens.key) == before
    assert ledger(live, tokens, task_id) == []


async def test_lost_leases_end_unsolvable_and_uncharged(client: httpx.AsyncClient, tokens: Tokens,
                                                        live: AppHost) -> None:
    before = await balance(client, tokens.key)
    task_id = await submit(client, tokens.key, **turnstile())
    await claim_id(client, tokens.bot, task_id, ["turnstile"], lease_seconds=1)
    last = await claim_id(client, tokens.bot2, task_id, ["turnstile"], lease_seconds=1)
    assert last["attempt"] == MAX_ATTEMPTS
    assert await get(client, tokens.key, task_id, wait=20) == "ERROR_CAPTCHA_UNSOLVABLE"
    assert (await act(client, tokens.bot2, last, "answer", answer={"token": "too-late"})).status_code == 409
    assert await balance(client, tokens.key) == before
    assert ledger(live, tokens, task_id) == []


async def test_attempts_given_back_without_error_also_end_unsolvable(client: httpx.AsyncClient,
                                                                     tokens: Tokens) -> None:
    task_id = await submit(client, tokens.key, **turnstile())
    for token in (tokens.bot, tokens.bot2):
        task = await claim_id(client, token, task_id, ["turnstile"])
        assert (await act(client, token, task, "fail", error=None)).status_code == 200
    assert await get(client, tokens.key, task_id, wait="1.5") == "ERROR_CAPTCHA_UNSOLVABLE"


@pytest.mark.parametrize(("error", "shown"), [
    ("ERROR_PROXY_CONNECTION_FAILED", "ERROR_PROXY_CONNECTION_FAILED"),
    ("ERROR_TOKEN_EXPIRED", "ERROR_TOKEN_EXPIRED"),
    ("ERROR_CAPTCHA_UNSOLVABLE", "ERROR_CAPTCHA_UNSOLVABLE"),
    ("ERROR_ZERO_BALANCE", "ERROR_CAPTCHA_UNSOLVABLE"),  # not of the unsolvable family
    ("made-up", "ERROR_CAPTCHA_UNSOLVABLE"),
])
async def test_fail_final_settles_at_once(client: httpx.AsyncClient, tokens: Tokens, live: AppHost,
                                          error: str, shown: str) -> None:
    task_id = await submit(client, tokens.key, **turnstile())
    task = await claim_id(client, tokens.bot, task_id, ["turnstile"])
    assert task["attempt"] == 1
    assert (await act(client, tokens.bot, task, "fail", error=error, final=True)).status_code == 200
    assert await get(client, tokens.key, task_id) == shown
    body = json.loads(await get(client, tokens.key, task_id, json=1))
    assert body["status"] == 0
    assert body["request"] == shown
    assert ledger(live, tokens, task_id) == []


async def test_fail_final_without_error_only_gives_the_task_back(client: httpx.AsyncClient,
                                                                 tokens: Tokens) -> None:
    task_id = await submit(client, tokens.key, **turnstile())
    task = await claim_id(client, tokens.bot, task_id, ["turnstile"])
    assert (await act(client, tokens.bot, task, "fail", error=None, final=True)).status_code == 200
    assert await get(client, tokens.key, task_id) == "CAPCHA_NOT_READY"
    again = await claim_id(client, tokens.bot2, task_id, ["turnstile"])
    assert (await act(client, tokens.bot2, again, "answer", answer={"token": "second"})).status_code == 200
    assert await get(client, tokens.key, task_id) == "OK|second"


# ------------------------------------------------------------------------------------------ answer shapes


@dataclass(frozen=True)
class Shape:
    params: dict[str, str]
    method: str
    good: dict[str, Any]
    bad: list[dict[str, Any]]
    plain: str
    json: dict[str, Any]


UA = "Mozilla/5.0 (X11; Linux x86_64) capgate-test/1.0"


def shapes() -> dict[str, Shape]:
    return {
        "text": Shape(
            {"method": "base64", "body": png_b64()}, "normal", {"text": "aB3kZ"},
            [{}, {"text": ""}, {"text": 5}, {"token": "x"}, {"text": "a", "extra": "b"}],
            "OK|aB3kZ", {"status": 1, "request": "aB3kZ"}),
        "token": Shape(
            turnstile(), "turnstile", {"token": "0.tok+en/="},
            [{}, {"token": ""}, {"token": ["x"]}, {"text": "x"}, {"token": "t", "cells": [1]}],
            "OK|0.tok+en/=", {"status": 1, "request": "0.tok+en/="}),
        "token_ua": Shape(
            {"method": "userrecaptcha", "enterprise": "1", "googlekey": unique(), "pageurl": PAGEURL},
            "recaptcha_v2_enterprise", {"token": "03AF-ent", "user_agent": UA},
            [{"user_agent": UA}, {"token": "t", "user_agent": 5}, {"token": "t", "user_agent": ""}],
            "OK|03AF-ent", {"status": 1, "request": "03AF-ent", "result": "03AF-ent", "user_agent": UA}),
        "token_ua-no-agent": Shape(
            {"method": "captchafox", "sitekey": unique(), "pageurl": PAGEURL, "proxy": "1.2.3.4:8080",
             "proxytype": "HTTP"},
            "captchafox", {"token": "fox-token"}, [{"token": None}],
            "OK|fox-token", {"status": 1, "request": "fox-token", "result": "fox-token"}),
        "geetest": Shape(
            {"method": "geetest", "gt": unique(), "challenge": unique(), "pageurl": PAGEURL},
            "geetest", {"challenge": "ch1", "validate": "va1", "seccode": "va1|jordan"},
            [{"challenge": "c", "validate": "v"}, {"challenge": "c", "validate": "v", "seccode": ""},
             {"challenge": "c", "validate": "v", "seccode": 1}, {"token": "x"}],
            "OK|challenge:ch1,validate:va1,seccode:va1|jordan",
            {"status": 1, "request": {"challenge": "ch1", "validate": "va1", "seccode": "va1|jordan"}}),
        "clearance": Shape(
            {"method": "cloudflare_challenge", "pageurl": f"{PAGEURL}?{unique()}", "proxy": "1.2.3.4:8080",
             "proxytype": "HTTP"},
            "cloudflare_challenge", {"cf_clearance": "cf.v-1", "user_agent": UA},
            [{"cf_clearance": "x"}, {"cf_clearance": "", "user_agent": UA}, {"token": "x"},
             {"cf_clearance": "x", "user_agent": 7}],
            f"OK|cf_clearance=cf.v-1;user_agent={UA}",
            {"status": 1, "request": "cf.v-1", "result": "cf.v-1", "user_agent": UA}),
        "cells": Shape(
            {"method": "base64", "body": png_b64(), "img_type": "recaptcha", "textinstructions": "buses"},
            "grid", {"cells": [1, 4, 9]},
            [{"cells": "1,4"}, {"cells": [1, "4"]}, {"cells": [True]}, {"cells": [-1]}, {"cells": [1.5]},
             {"text": "1"}],
            "OK|[1,4,9]", {"status": 1, "request": "[1,4,9]"}),
        "object": Shape(
            {"method": "lemin", "captcha_id": unique(), "div_id": "lemin-cropped-captcha", "pageurl": PAGEURL},
            "lemin", {"fields": {"answer": "0xab", "challenge_id": "e1"}},
            [{}, {"fields": "x"}, {"fields": [1]}, {"answer": "0xab"}],
            'OK|{"answer":"0xab","challenge_id":"e1"}',
            {"status": 1, "request": {"answer": "0xab", "challenge_id": "e1"}}),
    }


@pytest.mark.parametrize("kind", list(shapes()))
async def test_answer_shape_per_kind_and_what_res_php_shows(client: httpx.AsyncClient, tokens: Tokens,
                                                           kind: str) -> None:
    shape = shapes()[kind]
    task_id = await submit(client, tokens.key, **shape.params)
    task = await claim_id(client, tokens.bot, task_id, [shape.method])
    assert task["answer_kind"] == kind.split("-")[0]
    for bad in shape.bad:
        reply = await act(client, tokens.bot, task, "answer", answer=bad)
        assert reply.status_code == 400, (bad, reply.text)
        assert reply.json()["error"]
    # A malformed answer leaves the lease with the worker.
    assert (await act(client, tokens.bot, task, "answer", answer=shape.good)).status_code == 200
    plain = await res(client, tokens.key, action="get", id=task_id)
    assert plain.text == shape.plain
    assert plain.headers["content-type"].startswith("text/plain")
    as_json = await res(client, tokens.key, action="get", id=task_id, json=1)
    assert as_json.json() == shape.json
    assert as_json.headers["content-type"].startswith("application/json")


async def test_confidence_must_be_a_probability(client: httpx.AsyncClient, tokens: Tokens) -> None:
    task_id = await submit(client, tokens.key, **turnstile())
    task = await claim_id(client, tokens.bot, task_id, ["turnstile"])
    for confidence in (1.5, -0.1, "high", [1]):
        reply = await act(client, tokens.bot, task, "answer", answer={"token": "t"}, confidence=confidence)
        assert reply.status_code == 400, confidence
    assert (await act(client, tokens.bot, task, "answer", answer={"token": "t"}, confidence=0.9)).status_code == 200


async def test_clearance_answer_needs_a_user_agent(client: httpx.AsyncClient, tokens: Tokens) -> None:
    params = {"method": "cloudflare_challenge", "pageurl": f"{PAGEURL}?{unique()}", "proxy": "1.2.3.4:8080",
              "proxytype": "HTTP"}
    task_id = await submit(client, tokens.key, **params)
    task = await claim_id(client, tokens.bot, task_id, ["cloudflare_challenge"])
    reply = await act(client, tokens.bot, task, "answer", answer={"cf_clearance": "cf", "user_agent": None})
    try:
        assert reply.status_code == 400
    finally:
        if reply.status_code == 400:
            await act(client, tokens.bot, task, "answer", answer={"cf_clearance": "cf", "user_agent": UA})
    assert await get(client, tokens.key, task_id) == f"OK|cf_clearance=cf;user_agent={UA}"


async def test_cell_zero_is_not_a_cell(client: httpx.AsyncClient, tokens: Tokens) -> None:
    task_id = await submit(client, tokens.key, method="base64", body=png_b64(), img_type="recaptcha")
    task = await claim_id(client, tokens.bot, task_id, ["grid"])
    reply = await act(client, tokens.bot, task, "answer", answer={"cells": [0, 2]})
    if reply.status_code != 200:
        await act(client, tokens.bot, task, "answer", answer={"cells": [2]})
    assert reply.status_code == 400


# ------------------------------------------------------------------------------------------ human pool


async def test_human_tokens_get_tasks_from_the_human_pool(client: httpx.AsyncClient, tokens: Tokens) -> None:
    task_id = await submit(client, tokens.key, method="base64", body=png_b64(), numeric="1")
    task = await claim_id(client, tokens.bot, task_id, ["normal"])
    # A worker that can't read it hands it to people (what the OCR worker does for a low confidence).
    assert (await act(client, tokens.bot, task, "fail", error=None, to_human=True)).status_code == 200
    assert await claim(client, tokens.bot2, ["normal"]) is None
    assert await claim(client, tokens.presence) is None
    human = await claim_id(client, tokens.human, task_id, ["normal"])
    assert human["attempt"] == 2
    assert human["images"] == task["images"]
    assert (await act(client, tokens.human, human, "answer", answer={"text": "1234"})).status_code == 200
    assert await get(client, tokens.key, task_id) == "OK|1234"
    # A human token also serves the ordinary queue.
    other_id = await submit(client, tokens.key, **turnstile())
    other = await claim_id(client, tokens.human, other_id, None)
    assert (await act(client, tokens.human, other, "answer", answer={"token": "by-hand"})).status_code == 200
    assert await get(client, tokens.key, other_id) == "OK|by-hand"


# ------------------------------------------------------------------------------------------ a worker that hangs up


async def test_a_worker_gone_before_its_body_ended_gets_no_server_error(bare: Bare) -> None:
    """The connection ends partway through an answer's body: a 400 that reaches no one, no 500, and the
    task is still the worker's to answer (seen under load: Starlette's ClientDisconnect made a 500)."""
    key, token = bare.key, bare.any_bot
    async with bare.host.aclient() as http:
        assert await claim(http, token) is None
        task_id = await submit(http, key, **turnstile())
        task = await claim_id(http, token, task_id, ["turnstile"])
    body = json.dumps({"lease": task["lease"], "answer": {"token": "t"}}).encode()
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    sent = await bare.host.cut_short("POST", f"/worker/v1/tasks/{task_id}/answer", headers, body, 10)
    assert sent[0]["type"] == "http.response.start" and sent[0]["status"] == 400, sent
    async with bare.host.aclient() as http:
        assert (await act(http, token, task, "answer", answer={"token": "t"})).status_code == 200
        assert await get(http, key, task_id) == "OK|t"


async def test_a_claim_whose_worker_hung_up_leases_nothing(server: ServerProcess) -> None:
    """A worker stopped while its claim long-polled: the task that arrives next goes to a live worker,
    not to the dead connection (where it would sit leased, unanswered, until the lease ran out)."""
    key = server.create_key(sandbox=False, threads=5)
    token = worker_token(server, f"hangup-{unique()}", "--methods", "turnstile")
    body = json.dumps({"methods": ["turnstile"], "wait": 20}).encode()
    _reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"POST /worker/v1/claim HTTP/1.1\r\nHost: capgate\r\nContent-Type: application/json\r\n"
                 b"Authorization: Bearer " + token.encode() + b"\r\nContent-Length: "
                 + str(len(body)).encode() + b"\r\n\r\n" + body)
    await writer.drain()
    await asyncio.sleep(0.3)  # the claim is waiting on the server
    writer.close()
    await writer.wait_closed()
    async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as client:
        task_id = await submit(client, key, **turnstile())
        await asyncio.sleep(1.5)  # three of the dead claim's re-checks: it would have taken the task by now
        claimed = await claim(client, token, ["turnstile"], wait=5)
        assert claimed is not None and claimed["id"] == task_id
