"""Wake-ups across processes (capgate.workers.notify): a long-poll or a waiting worker in one process
is woken by a change another process makes, on PostgreSQL (LISTEN/NOTIFY) and on one SQLite file
(its data version); the listener comes back after its connection is cut; the per-account cap on
long-polls answers the call beyond it at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import psycopg
import pytest

from capgate.store.base import Store, SubmitLimits
from capgate.store.models import NewTask, Pool
from capgate.workers.notify import SettleHub
from tests.appkit import app_host
from tests.pgdb import PgDatabase, create_database, drop_database
from tests.serverproc import ServerProcess, start_server
from tests.storekit import Backend

PAGEURL = "https://example.com/login"


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def two_servers(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
                ) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    root = tmp_path_factory.mktemp(f"wake-{request.param}")
    db: PgDatabase | None = None
    if request.param == "postgres":
        db = create_database("capgate_test_wake")
        url = db.url
    else:
        url = str(root / "shared.db")
    env = {"CAPGATE_DB": url, "CAPGATE_OCR": "0", "CAPGATE_DATA_DIR": str(root / "data")}
    try:
        with start_server(root / "a", env=env) as a, start_server(root / "b", env=env) as b:
            yield a, b
    finally:
        if db is not None:
            drop_database(db)


def turnstile() -> dict[str, str]:
    return {"method": "turnstile", "sitekey": f"0x4AAA{uuid.uuid4().hex[:12]}", "pageurl": PAGEURL}


async def worker_call(client: httpx.AsyncClient, server: ServerProcess, token: str, path: str,
                      body: dict[str, Any]) -> Any:
    reply = await client.post(server.url(f"/worker/v1/{path}"), json=body, headers={"Authorization": f"Bearer {token}"})
    assert reply.status_code == 200, reply.text
    return reply.json()


async def submit(client: httpx.AsyncClient, server: ServerProcess, key: str) -> str:
    for _ in range(40):  # the service sees the worker's presence within ~1 s
        reply = (await client.post(server.url("in.php"), data={"key": key, "json": "1", **turnstile()})).json()
        if reply["status"] == 1:
            return str(reply["request"])
        assert reply["request"] == "ERROR_NO_SLOT_AVAILABLE", reply
        await asyncio.sleep(0.1)
    raise AssertionError("in.php kept answering ERROR_NO_SLOT_AVAILABLE")


async def test_long_poll_answered_by_a_settle_in_another_process(two_servers: tuple[ServerProcess, ServerProcess],
                                                                 ) -> None:
    a, b = two_servers
    token = a.cli("workers", "create", f"wake-{uuid.uuid4().hex[:6]}", "--methods", "turnstile").stdout.split()[-1]
    key = a.create_key(sandbox=False, threads=10, balance="1")
    async with httpx.AsyncClient(timeout=60.0) as client:
        assert await worker_call(client, a, token, "claim", {"methods": ["turnstile"]}) == {"task": None}
        task_id = await submit(client, a, key)
        claimed = (await worker_call(client, b, token, "claim", {"methods": ["turnstile"]}))["task"]
        assert claimed["id"] == task_id

        # A waits (up to 25 s) for the task; B settles it; A's poll answers with B's answer.
        waiting = asyncio.ensure_future(client.get(a.url("res.php"), params={
            "key": key, "action": "get", "id": task_id, "wait": "25"}))
        await asyncio.sleep(0.5)
        assert not waiting.done()
        await worker_call(client, b, token, f"tasks/{task_id}/answer",
                          {"lease": claimed["lease"], "answer": {"token": f"tok-{task_id}"}})
        reply = await waiting
        assert reply.text == f"OK|tok-{task_id}"


async def test_waiting_worker_woken_by_a_submit_in_another_process(
        two_servers: tuple[ServerProcess, ServerProcess]) -> None:
    a, b = two_servers
    token = a.cli("workers", "create", f"claimer-{uuid.uuid4().hex[:6]}", "--methods", "turnstile").stdout.split()[-1]
    key = a.create_key(sandbox=False, threads=10, balance="1")
    async with httpx.AsyncClient(timeout=60.0) as client:
        # Drain whatever an earlier test left, and tell A that turnstile is served.
        while (await worker_call(client, a, token, "claim", {"methods": ["turnstile"]}))["task"] is not None:
            pass
        claiming = asyncio.ensure_future(worker_call(client, b, token, "claim", {"methods": ["turnstile"], "wait": 25}))
        await asyncio.sleep(0.5)
        assert not claiming.done()
        task_id = await submit(client, a, key)
        claimed = (await claiming)["task"]
        assert claimed is not None and claimed["id"] == task_id


# ------------------------------------------------------------------------------------------ in-process hubs


async def _new_task(store: Store, key_hash: str) -> int:
    account = await store.create_account(key_hash, key_hash[:8], 50, 10**9, False)
    task = NewTask(method="turnstile", params={"sitekey": uuid.uuid4().hex}, blobs={},
                   fingerprint=uuid.uuid4().hex, pool=Pool.MAIN, price=0, deadline_s=60.0)
    outcome = await store.submit(account, task, time.time(), SubmitLimits("ERROR_ZERO_BALANCE", 1000))
    assert outcome.task_id is not None
    return outcome.task_id


async def _settle(store: Store, task_id: int) -> None:
    now = time.time()
    claimed = await store.claim(["main"], None, "lease-x", 30.0, now, 3)
    assert claimed is not None and claimed.id == task_id
    assert await store.complete(task_id, "lease-x", {"token": "t"}, None, time.time())


async def _wait_settled(hub: SettleHub, store: Store, task_id: int, timeout: float) -> bool:
    async def done() -> bool:
        return bool(await store.settled_among([task_id]))

    await hub.wait([task_id], timeout, done)
    return await done()


async def test_one_store_hears_another(backend: Backend) -> None:
    """Two stores on one database, as two processes: a settle through one wakes a wait on the other."""
    mine, theirs = await backend.open_many(2)
    hub = SettleHub()
    watcher = asyncio.create_task(hub.watch(mine))
    try:
        task_id = await _new_task(theirs, uuid.uuid4().hex)
        waiting = asyncio.create_task(_wait_settled(hub, mine, task_id, 30.0))
        await asyncio.sleep(0.3)
        assert not waiting.done()
        await _settle(theirs, task_id)
        assert await waiting
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher


async def _listening(hub: SettleHub) -> None:
    for _ in range(300):
        if hub.listening:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the listener did not connect")


def _cut_listeners(url: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database()"
                            " AND application_name = 'capgate-listen' AND pid <> pg_backend_pid()").fetchall()
    return len(rows)


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
async def test_listener_reconnects(backend: Backend) -> None:
    """The listening connection is cut: a settle while it is down is still heard (the fallback
    re-read, or the look on reconnecting), and once back it hears notices again."""
    mine, theirs = await backend.open_many(2)
    hub = SettleHub()
    watcher = asyncio.create_task(hub.watch(mine))
    try:
        await _listening(hub)
        first = await _new_task(theirs, uuid.uuid4().hex)
        waiting = asyncio.create_task(_wait_settled(hub, mine, first, 30.0))
        await asyncio.sleep(0.2)
        assert _cut_listeners(backend.db) >= 1
        await _settle(theirs, first)
        assert await waiting
        await _listening(hub)
        second = await _new_task(theirs, uuid.uuid4().hex)
        waiting = asyncio.create_task(_wait_settled(hub, mine, second, 30.0))
        await asyncio.sleep(0.2)
        assert not waiting.done()
        await _settle(theirs, second)
        assert await waiting
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher


# ------------------------------------------------------------------------------------------ the cap


async def test_long_polls_per_account_capped(backend: Backend) -> None:
    """Beyond ``long_polls_per_account`` waiting polls, the next is answered at once; another
    account's waits are not affected."""
    with app_host(backend, long_polls_per_account=2, sandbox_delay=60.0) as host:
        key, other = host.make_key(sandbox=True), host.make_key(sandbox=True)
        async with host.aclient() as client:
            ids = []
            for k in (key, other):
                reply = await client.post("/in.php", data={"key": k, **turnstile()})
                assert reply.text.startswith("OK|"), reply.text
                ids.append(reply.text[3:])

            def long_poll(k: str, task_id: str) -> asyncio.Future[httpx.Response]:
                return asyncio.ensure_future(client.get("/res.php", params={
                    "key": k, "action": "get", "id": task_id, "wait": "3"}))

            held = [long_poll(key, ids[0]) for _ in range(2)]
            theirs = long_poll(other, ids[1])
            await asyncio.sleep(0.5)
            assert not any(p.done() for p in [*held, theirs])
            beyond = await client.get("/res.php", params={"key": key, "action": "get", "id": ids[0], "wait": "3"})
            assert beyond.text == "CAPCHA_NOT_READY"
            assert not any(p.done() for p in [*held, theirs])
            for p in [*held, theirs]:
                assert (await p).text == "CAPCHA_NOT_READY"
