"""res.php long-poll: ``wait=N`` on ``action=get`` (and ``get2``, and batch ``ids=``) holds the request
until the task settles, at most ``CAPGATE_MAX_WAIT`` (30) seconds; without ``wait`` nothing changes.

Against the app in process (tests/appkit.py). Every poll a test starts is settled before the test
ends: a poll still held when the app stops would delay its shutdown.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import httpx
import pytest

from capgate.keys import hash_secret
from tests.appkit import AppHost, app_host
from tests.storekit import sqlite_backend
from tests.workerkit import PAGEURL, Task, act, claim_id, drain, get, res, submit, turnstile


@dataclass(frozen=True)
class Accounts:
    key: str  # live
    sandbox_key: str
    presence: str  # drains and keeps every method served
    bot: str


@pytest.fixture(scope="module")
def poll_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppHost]:
    with app_host(sqlite_backend(tmp_path_factory.mktemp("longpoll"))) as host:
        yield host


@pytest.fixture(scope="module")
def accounts(poll_app: AppHost) -> Accounts:
    return Accounts(poll_app.make_key(sandbox=False, threads=200), poll_app.make_key(threads=200),
                    poll_app.worker_token("presence"), poll_app.worker_token("bot"))


@pytest.fixture()
async def client(poll_app: AppHost, accounts: Accounts) -> AsyncIterator[httpx.AsyncClient]:
    async with poll_app.aclient(timeout=40) as http:
        await drain(http, accounts.presence)
        yield http


async def pending_task(client: httpx.AsyncClient, accounts: Accounts) -> Task:
    """A live Turnstile task, claimed by the bot (so nothing settles it but the test)."""
    task_id = await submit(client, accounts.key, **turnstile())
    return await claim_id(client, accounts.bot, task_id, ["turnstile"])


@pytest.mark.parametrize("wait", ["10", "1000"])  # over the cap is capped, not refused
@pytest.mark.parametrize("mode", ["plain", "json"])
async def test_wait_returns_the_answer_once_the_worker_answers(client: httpx.AsyncClient, accounts: Accounts,
                                                               mode: str, wait: str) -> None:
    task = await pending_task(client, accounts)
    task_id = str(task["id"])
    extra = {"json": 1} if mode == "json" else {}
    poll = asyncio.create_task(get(client, accounts.key, task_id, wait=wait, **extra))
    await asyncio.sleep(0.3)  # the poll is in flight before the answer exists
    assert (await act(client, accounts.bot, task, "answer", answer={"token": "long-polled"})).status_code == 200
    reply = await poll
    if mode == "json":
        assert json.loads(reply) == {"status": 1, "request": "long-polled"}
    else:
        assert reply == "OK|long-polled"
    assert await get(client, accounts.key, task_id, wait=wait) == "OK|long-polled"  # settled: at once


async def test_every_concurrent_poller_gets_the_answer(client: httpx.AsyncClient, accounts: Accounts) -> None:
    task = await pending_task(client, accounts)
    task_id = str(task["id"])
    polls = [asyncio.create_task(get(client, accounts.key, task_id, wait=10, **extra))
             for extra in ({}, {}, {"json": 1})]
    await asyncio.sleep(0.3)
    assert (await act(client, accounts.bot, task, "answer", answer={"token": "for-all"})).status_code == 200
    first, second, as_json = await asyncio.gather(*polls)
    assert first == second == "OK|for-all"
    assert json.loads(as_json) == {"status": 1, "request": "for-all"}


async def test_wait_returns_an_unsolvable_task_too(client: httpx.AsyncClient, accounts: Accounts) -> None:
    task = await pending_task(client, accounts)
    poll = asyncio.create_task(get(client, accounts.key, str(task["id"]), wait=10))
    await asyncio.sleep(0.3)
    assert (await act(client, accounts.bot, task, "fail", error="ERROR_CAPTCHA_UNSOLVABLE",
                      final=True)).status_code == 200
    assert await poll == "ERROR_CAPTCHA_UNSOLVABLE"


async def test_get2_waits_too(client: httpx.AsyncClient, accounts: Accounts) -> None:
    task = await pending_task(client, accounts)
    poll = asyncio.create_task(res(client, accounts.key, action="get2", id=str(task["id"]), wait=10, json=1))
    await asyncio.sleep(0.3)
    assert (await act(client, accounts.bot, task, "answer", answer={"token": "priced"})).status_code == 200
    body = (await poll).json()
    assert body["status"] == 1
    assert body["request"] == "priced"
    assert "price" in body


async def test_sandbox_task_wait(client: httpx.AsyncClient, accounts: Accounts) -> None:
    task_id = await submit(client, accounts.sandbox_key, method="turnstile", sitekey="0x4AAA-sandbox",
                           pageurl=f"{PAGEURL}?sandbox-slow-1")
    reply = await get(client, accounts.sandbox_key, task_id, wait=15)
    assert reply.startswith("OK|SANDBOX-FAKE-TOKEN-"), reply


async def test_clients_without_wait_see_the_standard_behaviour(poll_app: AppHost, accounts: Accounts) -> None:
    # A short client timeout: a poll that were held (up to 30 s) would fail here rather than pass slowly.
    async with poll_app.aclient(timeout=8) as client:
        await drain(client, accounts.presence)
        task = await pending_task(client, accounts)
        task_id = str(task["id"])
        try:
            for extra in ({}, {"wait": ""}, {"wait": "0"}, {"wait": "-5"}):
                assert await get(client, accounts.key, task_id, **extra) == "CAPCHA_NOT_READY", extra
                body = json.loads(await get(client, accounts.key, task_id, json=1, **extra))
                assert body == {"status": 0, "request": "CAPCHA_NOT_READY"}
                batch = await res(client, accounts.key, action="get", ids=task_id, **extra)
                assert batch.text == "CAPCHA_NOT_READY"
        finally:
            await act(client, accounts.bot, task, "answer", answer={"token": "done"})


@pytest.mark.parametrize("wait", ["abc", "5s", "1,5", "0x10", "ten"])
async def test_a_bad_wait_value_is_bad_parameters(client: httpx.AsyncClient, accounts: Accounts,
                                                  wait: str) -> None:
    task = await pending_task(client, accounts)
    task_id = str(task["id"])
    try:
        for action, ident in (("get", {"id": task_id}), ("get2", {"id": task_id}), ("get", {"ids": task_id})):
            assert (await res(client, accounts.key, action=action, wait=wait, **ident)).text == \
                "ERROR_BAD_PARAMETERS", (action, ident)
            body = (await res(client, accounts.key, action=action, wait=wait, json=1, **ident)).json()
            assert (body["status"], body["request"]) == (0, "ERROR_BAD_PARAMETERS")
    finally:
        await act(client, accounts.bot, task, "answer", answer={"token": "done"})


async def test_wait_nan_is_bad_parameters(poll_app: AppHost, accounts: Accounts) -> None:
    async with poll_app.aclient(timeout=2) as client:
        await drain(client, accounts.presence)
        task = await pending_task(client, accounts)
        try:
            reply = await get(client, accounts.key, str(task["id"]), wait="nan")
        finally:  # releases the poll the server may still hold
            await act(client, accounts.bot, task, "answer", answer={"token": "done"})
        assert reply == "ERROR_BAD_PARAMETERS"


async def test_batch_wait_returns_when_any_task_settles(client: httpx.AsyncClient, accounts: Accounts) -> None:
    first = await pending_task(client, accounts)
    second = await pending_task(client, accounts)
    ids = f"{first['id']},{second['id']}"
    plain = asyncio.create_task(res(client, accounts.key, action="get", ids=ids, wait=10))
    as_json = asyncio.create_task(res(client, accounts.key, action="get", ids=ids, wait=10, json=1))
    await asyncio.sleep(0.3)
    assert (await act(client, accounts.bot, second, "answer", answer={"token": "tok-2"})).status_code == 200
    assert (await plain).text == "CAPCHA_NOT_READY|tok-2"
    assert (await as_json).json() == {"status": 1, "request": "CAPCHA_NOT_READY|tok-2"}
    # One settled already: the batch comes back at once with what there is.
    assert (await res(client, accounts.key, action="get", ids=ids, wait=10)).text == "CAPCHA_NOT_READY|tok-2"
    assert (await act(client, accounts.bot, first, "answer", answer={"token": "tok-1"})).status_code == 200
    assert (await res(client, accounts.key, action="get", ids=ids)).text == "tok-1|tok-2"


# ------------------------------------------------------------------------------------------ the cap


@pytest.fixture(scope="module")
def capped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[AppHost, str]]:
    """An app whose long-polls last at most one second, and a sandbox key on it."""
    with app_host(sqlite_backend(tmp_path_factory.mktemp("longpoll-capped")), max_wait=1.0) as host:
        yield host, host.make_key(threads=200)


async def test_wait_is_capped(capped: tuple[AppHost, str]) -> None:
    app, key = capped
    # Held by the sandbox for a minute; a client timeout well under that shows the cap applies.
    async with app.aclient(timeout=10) as client:
        task_id = await submit(client, key, method="turnstile", sitekey="0x4AAA-capped",
                               pageurl=f"{PAGEURL}?sandbox-slow-60")

        async def batch() -> str:
            return (await res(client, key, action="get", ids=task_id, wait="3600")).text

        replies = await asyncio.gather(*(get(client, key, task_id, wait=wait) for wait in ("3600", "1e9", "inf")),
                                       batch())
        assert replies == ["CAPCHA_NOT_READY"] * 4


async def test_a_long_poll_answers_from_what_it_read_not_from_an_earlier_poll(
        poll_app: AppHost, client: httpx.AsyncClient, accounts: Accounts) -> None:
    """The store commits a settle a moment before this process hears of it; a long-poll that sees
    the settle must answer it, not the pending outcome an earlier poll left in the memo."""
    task = await pending_task(client, accounts)
    task_id = str(task["id"])
    assert await get(client, accounts.key, task_id) == "CAPCHA_NOT_READY"  # remembered for 0.1 s
    bot = await poll_app.arun(poll_app.store.worker_by_token_hash(hash_secret(accounts.bot)))
    assert bot is not None
    # Settled behind the service's back: the store has it, the process has not been told.
    assert await poll_app.arun(poll_app.store.complete(int(task_id), str(task["lease"]), {"request": "behind"},
                                                       None, time.time(), worker_id=bot.id))
    assert await get(client, accounts.key, task_id, wait=5) == "OK|behind"
