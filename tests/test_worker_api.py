"""The worker API (docs/worker-api.md) against a real ``capgate serve``: tokens, claim, lease,
heartbeat, answer, fail, and what the customer then reads from res.php.

One server for the module (no OCR worker, 2 attempts per task, Turnstile at 0.5 USD). Before each test
a *presence* token drains whatever an earlier test left claimable and keeps every method served
(a claim without ``methods`` registers ``*``); that token never claims with a method list, which would
replace its ``*``.

The helpers here (``provision``, ``claim``, ``submit``, ...) are shared by the other solving-side test
modules (long-poll, pingback, example worker, human page).
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import os
import secrets
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from capgate.server.keys import PREFIX_LENGTH, hash_secret, new_key
from capgate.server.workers import TOKEN_PREFIX
from capgate.store.models import usd_to_micros
from capgate.store.sqlite import SQLiteStore
from tests.serverproc import ServerProcess, start_server

MAX_ATTEMPTS = 2
TURNSTILE_PRICE = Decimal("0.5")
PAGEURL = "https://example.com/login"
Task = dict[str, Any]


# ------------------------------------------------------------------------------------------ helpers


def worker_token(server: ServerProcess, name: str, *flags: str) -> str:
    """``capgate workers create``: the token is alone on the last stdout line."""
    token = server.cli("workers", "create", name, *flags).stdout.strip().splitlines()[-1]
    assert token.startswith("cgw_"), token
    return token


def provision(db: Path, workers: dict[str, list[str]], sandbox: Sequence[bool] = (), *,
              humans: Sequence[str] = (), balance: str = "0") -> tuple[list[str], list[str]]:
    """Worker tokens (name -> methods, empty for any; ``humans`` names the ``--human`` ones) and keys
    (live or sandbox, 200 threads, ``balance`` USD), written straight to the store as
    ``capgate workers create`` and ``capgate keys create`` do, without a process start for each
    (those commands themselves run in the human-page and example-worker tests)."""
    async def run() -> tuple[list[str], list[str]]:
        store = SQLiteStore(db)
        await store.open()
        try:
            tokens, keys = [], []
            for name, methods in workers.items():
                token = TOKEN_PREFIX + secrets.token_hex(20)
                await store.create_worker(name, hash_secret(token), token[:8], methods, name in humans)
                tokens.append(token)
            for is_sandbox in sandbox:
                key = new_key()
                await store.create_account(hash_secret(key), key[:PREFIX_LENGTH], 200, usd_to_micros(Decimal(balance)),
                                           is_sandbox)
                keys.append(key)
            return tokens, keys
        finally:
            await store.close()

    with ThreadPoolExecutor(1) as pool:  # its own event loop, whatever the caller's thread runs
        return pool.submit(lambda: asyncio.run(run())).result()


def png_b64() -> str:
    """A PNG of random grey noise (never a duplicate, never under the 100-byte floor)."""
    buf = io.BytesIO()
    Image.frombytes("L", (60, 30), os.urandom(60 * 30)).save(buf, "PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def unique() -> str:
    return uuid.uuid4().hex


async def call(client: httpx.AsyncClient, token: str | None, path: str, body: Any = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return await client.post(f"/worker/v1/{path}", json={} if body is None else body, headers=headers)


async def claim(client: httpx.AsyncClient, token: str, methods: list[str] | None = None, wait: float = 0,
                lease_seconds: float | None = None) -> Task | None:
    body: dict[str, Any] = {"wait": wait}
    if methods is not None:
        body["methods"] = methods
    if lease_seconds is not None:
        body["lease_seconds"] = lease_seconds
    reply = await call(client, token, "claim", body)
    assert reply.status_code == 200, reply.text
    task: Task | None = reply.json()["task"]
    return task


async def claim_id(client: httpx.AsyncClient, token: str, task_id: str, methods: list[str] | None,
                   lease_seconds: float | None = None) -> Task:
    task = await claim(client, token, methods, wait=10, lease_seconds=lease_seconds)
    assert task is not None, f"no task for {methods}"
    assert task["id"] == task_id
    return task


async def act(client: httpx.AsyncClient, token: str, task: Task, verb: str, **body: Any) -> httpx.Response:
    return await call(client, token, f"tasks/{task['id']}/{verb}", {"lease": task["lease"], **body})


async def submit(client: httpx.AsyncClient, key: str, **params: str) -> str:
    """in.php; retried briefly while the service has not yet seen a worker for the method (its view of
    worker presence is cached for a second)."""
    for _ in range(80):
        reply = await client.post("/in.php", data={"key": key, **params})
        if reply.text != "ERROR_NO_SLOT_AVAILABLE":
            break
        await asyncio.sleep(0.1)
    assert reply.text.startswith("OK|"), reply.text
    return reply.text[3:]


def turnstile() -> dict[str, str]:
    return {"method": "turnstile", "sitekey": f"0x4AAA{unique()}", "pageurl": PAGEURL}


async def res(client: httpx.AsyncClient, key: str, **params: str | int) -> httpx.Response:
    reply = await client.get("/res.php", params={"key": key, **params})
    assert reply.status_code == 200
    return reply


async def get(client: httpx.AsyncClient, key: str, task_id: str, **params: str | int) -> str:
    return (await res(client, key, action="get", id=task_id, **params)).text


async def balance(client: httpx.AsyncClient, key: str) -> Decimal:
    return Decimal((await res(client, key, action="getbalance")).text)


def ledger(db: Path, task_id: str) -> list[tuple[str, int]]:
    """The ledger rows that name a task (kind, amount in micro-USD)."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        rows = conn.execute("SELECT kind, amount FROM ledger WHERE task_id = ? ORDER BY id", (int(task_id),))
        return [(str(kind), int(amount)) for kind, amount in rows.fetchall()]


# ------------------------------------------------------------------------------------------ fixtures


@dataclass(frozen=True)
class Tokens:
    presence: str  # drains the queue before each test; claims without methods only
    bot: str
    bot2: str
    turnstile_only: str
    human: str
    key: str  # a live customer key


@pytest.fixture(scope="module")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    env = {"CAPGATE_OCR": "0", "CAPGATE_MAX_ATTEMPTS": str(MAX_ATTEMPTS),
           "CAPGATE_PRICES": f"turnstile={TURNSTILE_PRICE}"}
    with start_server(tmp_path_factory.mktemp("worker-api"), env=env) as proc:
        yield proc


@pytest.fixture(scope="module")
def tokens(live_server: ServerProcess) -> Tokens:
    workers = {"presence": [], "bot": [], "bot2": [], "tbot": ["turnstile"], "alice": []}
    (presence, bot, bot2, tbot, alice), (key,) = provision(live_server.db, workers, [False], humans=["alice"],
                                                            balance="1000")
    return Tokens(presence, bot, bot2, tbot, alice, key)


async def drain(client: httpx.AsyncClient, presence: str) -> None:
    """Settle whatever an earlier test left claimable, and (claiming without a method list) tell the
    service that every method is served."""
    while (task := await claim(client, presence)) is not None:
        await act(client, presence, task, "fail", error="ERROR_CAPTCHA_UNSOLVABLE", final=True)


@pytest.fixture()
async def client(live_server: ServerProcess, tokens: Tokens) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=live_server.base_url, timeout=30) as http:
        await drain(http, tokens.presence)
        yield http


# ------------------------------------------------------------------------------------------ presence


@dataclass(frozen=True)
class Bare:
    """A server where no worker has claimed anything yet, a live key, and two worker tokens."""

    url: str
    key: str
    hcaptcha_bot: str  # may serve hcaptcha only
    any_bot: str


@pytest.fixture(scope="module")
def bare(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bare]:
    with start_server(tmp_path_factory.mktemp("worker-api-bare"), env={"CAPGATE_OCR": "0"}) as proc:
        (hcaptcha_bot, any_bot), (key,) = provision(proc.db, {"hbot": ["hcaptcha"], "multi": []}, [False])
        yield Bare(proc.base_url, key, hcaptcha_bot, any_bot)


async def test_live_submit_needs_a_worker_that_claimed_the_method(bare: Bare) -> None:
    key, token = bare.key, bare.hcaptcha_bot
    hcaptcha = {"method": "hcaptcha", "sitekey": unique(), "pageurl": PAGEURL}
    async with httpx.AsyncClient(base_url=bare.url, timeout=30) as http:
        for params in (hcaptcha, turnstile()):
            assert (await http.post("/in.php", data={"key": key, **params})).text == "ERROR_NO_SLOT_AVAILABLE"
        assert await claim(http, token) is None  # registers presence for the token's methods
        task_id = await submit(http, key, **hcaptcha)
        assert (await http.post("/in.php", data={"key": key, **turnstile()})).text == "ERROR_NO_SLOT_AVAILABLE"
        task = await claim_id(http, token, task_id, None)
        assert (await act(http, token, task, "answer", answer={"token": "h-token"})).status_code == 200


async def test_presence_covers_each_method_a_token_claims(bare: Bare) -> None:
    key, token = bare.key, bare.any_bot
    async with httpx.AsyncClient(base_url=bare.url, timeout=30) as http:
        assert await claim(http, token, ["lemin"]) is None
        assert await claim(http, token, ["friendly_captcha"]) is None
        params = {"method": "friendly_captcha", "sitekey": unique(), "pageurl": PAGEURL}
        reply = "ERROR_NO_SLOT_AVAILABLE"
        for _ in range(15):  # past the service's one-second cache of who is serving what
            reply = (await http.post("/in.php", data={"key": key, **params})).text
            if reply != "ERROR_NO_SLOT_AVAILABLE":
                break
            await asyncio.sleep(0.1)
        assert reply.startswith("OK|")


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
        client: httpx.AsyncClient, tokens: Tokens, live_server: ServerProcess) -> None:
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
    assert ledger(live_server.db, task_id) == [("charge", -500_000)]


async def test_concurrent_answers_settle_the_task_once(client: httpx.AsyncClient, tokens: Tokens,
                                                       live_server: ServerProcess) -> None:
    before = await balance(client, tokens.key)
    task_id = await submit(client, tokens.key, **turnstile())
    task = await claim_id(client, tokens.bot, task_id, ["turnstile"])
    replies = await asyncio.gather(*(act(client, tokens.bot, task, "answer", answer={"token": f"t{i}"})
                                     for i in range(8)))
    statuses = sorted(reply.status_code for reply in replies)
    assert statuses == [200] + [409] * 7
    winner = next(i for i, reply in enumerate(replies) if reply.status_code == 200)
    assert await get(client, tokens.key, task_id) == f"OK|t{winner}"
    assert ledger(live_server.db, task_id) == [("charge", -500_000)]
    assert await balance(client, tokens.key) == before - TURNSTILE_PRICE


# ------------------------------------------------------------------------------------------ failing


async def test_failed_attempts_end_unsolvable_and_uncharged(client: httpx.AsyncClient, tokens: Tokens,
                                                            live_server: ServerProcess) -> None:
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
    assert ledger(live_server.db, task_id) == []


async def test_lost_leases_end_unsolvable_and_uncharged(client: httpx.AsyncClient, tokens: Tokens,
                                                        live_server: ServerProcess) -> None:
    before = await balance(client, tokens.key)
    task_id = await submit(client, tokens.key, **turnstile())
    await claim_id(client, tokens.bot, task_id, ["turnstile"], lease_seconds=1)
    last = await claim_id(client, tokens.bot2, task_id, ["turnstile"], lease_seconds=1)
    assert last["attempt"] == MAX_ATTEMPTS
    assert await get(client, tokens.key, task_id, wait=20) == "ERROR_CAPTCHA_UNSOLVABLE"
    assert (await act(client, tokens.bot2, last, "answer", answer={"token": "too-late"})).status_code == 409
    assert await balance(client, tokens.key) == before
    assert ledger(live_server.db, task_id) == []


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
async def test_fail_final_settles_at_once(client: httpx.AsyncClient, tokens: Tokens, live_server: ServerProcess,
                                          error: str, shown: str) -> None:
    task_id = await submit(client, tokens.key, **turnstile())
    task = await claim_id(client, tokens.bot, task_id, ["turnstile"])
    assert task["attempt"] == 1
    assert (await act(client, tokens.bot, task, "fail", error=error, final=True)).status_code == 200
    assert await get(client, tokens.key, task_id) == shown
    body = json.loads(await get(client, tokens.key, task_id, json=1))
    assert body["status"] == 0
    assert body["request"] == shown
    assert ledger(live_server.db, task_id) == []


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
