"""Several capgate processes on one PostgreSQL database: "many API processes and workers share
PostgreSQL when one machine is not enough".

Two real ``capgate serve`` processes share a database made for this module: a task submitted
through one is answered and polled through the other, and workers claiming through both at once
never get the same task. Skipped when no PostgreSQL is reachable (see ``tests/pgdb.py``).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from capgate.store.schema import VERSION
from tests.pgdb import PgDatabase, throwaway_database
from tests.serverproc import REPO, ServerProcess, start_server

PAGEURL = "https://example.com/login"
TURNSTILE_PRICE = Decimal("0.001")


@dataclass
class Pair:
    a: ServerProcess
    b: ServerProcess

    def both(self) -> tuple[ServerProcess, ServerProcess]:
        return self.a, self.b


@pytest.fixture(scope="module")
def pg_db() -> Iterator[PgDatabase]:
    with throwaway_database("capgate_test_mp") as db:
        yield db


def server_env(db: PgDatabase, data_dir: Path) -> dict[str, str]:
    return {"CAPGATE_DB": db.url, "CAPGATE_OCR": "0", "CAPGATE_DATA_DIR": str(data_dir),
            "CAPGATE_PRICES": f"turnstile={TURNSTILE_PRICE}"}


@pytest.fixture(scope="module")
def pair(pg_db: PgDatabase, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    root = tmp_path_factory.mktemp("pg-pair")
    env = server_env(pg_db, root / "data")
    with start_server(root / "a", env=env) as a, start_server(root / "b", env=env) as b:
        yield Pair(a, b)


def turnstile() -> dict[str, str]:
    return {"method": "turnstile", "sitekey": f"0x4AAA{uuid.uuid4().hex[:12]}", "pageurl": PAGEURL}


async def submit(client: httpx.AsyncClient, server: ServerProcess, key: str, params: dict[str, str]) -> str:
    """A task id; retried while the service has not yet seen the worker (presence is cached ~1 s)."""
    for _ in range(40):
        reply = (await client.post(server.url("in.php"), data={"key": key, "json": "1", **params})).json()
        if reply["status"] == 1:
            return str(reply["request"])
        assert reply["request"] == "ERROR_NO_SLOT_AVAILABLE", reply
        await asyncio.sleep(0.1)
    raise AssertionError("in.php kept answering ERROR_NO_SLOT_AVAILABLE")


async def poll(client: httpx.AsyncClient, server: ServerProcess, key: str, task_id: str) -> dict[str, Any]:
    reply = await client.get(server.url("res.php"), params={"key": key, "action": "get", "id": task_id,
                                                            "wait": "5", "json": "1"})
    result: dict[str, Any] = reply.json()
    return result


async def worker_call(client: httpx.AsyncClient, server: ServerProcess, token: str, path: str,
                      body: dict[str, Any]) -> httpx.Response:
    return await client.post(server.url(f"/worker/v1/{path}"), json=body,
                             headers={"Authorization": f"Bearer {token}"})


# ------------------------------------------------------------------------------------------ tests


def test_processes_starting_at_once_migrate_once(tmp_path: Path) -> None:
    """Six commands opening a brand-new database at the same moment: one migrates, none fails."""
    with throwaway_database("capgate_test_mig") as db:
        full_env = {**os.environ, **server_env(db, tmp_path)}
        procs = [subprocess.Popen([sys.executable, "-m", "capgate", "keys", "list"], env=full_env, cwd=REPO,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(6)]
        outputs = [proc.communicate(timeout=120) for proc in procs]
        for proc, (_, err) in zip(procs, outputs, strict=True):
            assert proc.returncode == 0, err.decode()
        with psycopg.connect(db.url) as conn:
            versions = [row[0] for row in conn.execute("SELECT version FROM schema_version ORDER BY version")]
        assert versions == list(range(1, VERSION + 1))


async def test_submitted_through_one_polled_through_the_other(pair: Pair) -> None:
    key = pair.a.create_key(sandbox=True, threads=20, balance="1")
    async with httpx.AsyncClient(timeout=30.0) as client:
        for into, out in ((pair.a, pair.b), (pair.b, pair.a)):
            task_id = await submit(client, into, key, turnstile())
            result = await poll(client, out, key, task_id)
            assert result["status"] == 1, result
            assert str(result["request"]).startswith("SANDBOX-FAKE-TOKEN-")
            again = await poll(client, into, key, task_id)
            assert again == result
        # Both processes see the one balance, charged for the two answers.
        for server in pair.both():
            reply = await client.get(server.url("res.php"), params={"key": key, "action": "getbalance"})
            assert Decimal(reply.text) == 1 - 2 * TURNSTILE_PRICE


async def test_worker_claims_through_both_never_repeat(pair: Pair) -> None:
    token = pair.a.cli("workers", "create", "mp-bot", "--methods", "turnstile").stdout.strip().splitlines()[-1]
    key = pair.b.create_key(sandbox=False, threads=500, balance="10")
    servers = pair.both()
    async with httpx.AsyncClient(timeout=30.0, limits=httpx.Limits(max_connections=64)) as client:
        for server in servers:  # a claim tells each service that turnstile is served
            reply = await worker_call(client, server, token, "claim", {"methods": ["turnstile"]})
            assert reply.status_code == 200 and reply.json() == {"task": None}, reply.text
        submitted = await asyncio.gather(*(submit(client, servers[i % 2], key, turnstile()) for i in range(80)))
        assert len(set(submitted)) == 80

        claims: list[tuple[str, str, int]] = []  # (task id, lease, index of the server it came from)

        async def claimer(n: int) -> None:
            while True:
                index = n % 2
                reply = await worker_call(client, servers[index], token, "claim", {"methods": ["turnstile"]})
                assert reply.status_code == 200, reply.text
                task = reply.json()["task"]
                if task is None:
                    return
                claims.append((task["id"], task["lease"], index))
                n += 1

        await asyncio.gather(*(claimer(n) for n in range(24)))
        await claimer(0)  # whatever a racing claimer left behind
        ids = [task_id for task_id, _, _ in claims]
        assert len(ids) == len(set(ids)), "a task was handed out twice"
        assert set(ids) == set(submitted)
        assert {index for _, _, index in claims} == {0, 1}

        # Answer through the other process than the one that leased it; a second answer is refused.
        async def answer(task_id: str, lease: str, index: int) -> tuple[int, int]:
            body = {"lease": lease, "answer": {"token": f"tok-{task_id}"}}
            first = await worker_call(client, servers[1 - index], token, f"tasks/{task_id}/answer", body)
            second = await worker_call(client, servers[index], token, f"tasks/{task_id}/answer", body)
            return first.status_code, second.status_code

        statuses = await asyncio.gather(*(answer(*claim) for claim in claims))
        assert set(statuses) == {(200, 409)}
        for i, task_id in enumerate(submitted[:6]):
            result = await poll(client, servers[i % 2], key, task_id)
            assert result == {"status": 1, "request": f"tok-{task_id}"}
        balance = Decimal((await client.get(servers[0].url("res.php"),
                                            params={"key": key, "action": "getbalance"})).text)
        assert balance == Decimal(10) - 80 * TURNSTILE_PRICE


async def test_one_task_many_claimers(pair: Pair) -> None:
    token = pair.b.cli("workers", "create", "mp-racer", "--methods", "turnstile").stdout.strip().splitlines()[-1]
    key = pair.a.create_key(sandbox=False, threads=5, balance="1")
    servers = pair.both()
    async with httpx.AsyncClient(timeout=30.0, limits=httpx.Limits(max_connections=64)) as client:
        await worker_call(client, servers[0], token, "claim", {"methods": ["turnstile"]})
        for round_ in range(5):
            task_id = await submit(client, servers[round_ % 2], key, turnstile())
            replies = await asyncio.gather(*(worker_call(client, servers[i % 2], token, "claim",
                                                         {"methods": ["turnstile"]}) for i in range(20)))
            got = [r.json()["task"]["id"] for r in replies if r.json()["task"] is not None]
            assert got == [task_id]
