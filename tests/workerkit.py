"""Worker-API helpers shared by the solving-side tests (worker API, long-poll, pingback, example
worker, human page, OCR service): calls of docs/worker-api.md and the customer calls around them.

Every helper takes an ``httpx.AsyncClient`` whose base URL is the service (an in-process app's
:meth:`tests.appkit.AppHost.aclient` or a real server's URL).
"""

from __future__ import annotations

import asyncio
import base64
import io
import os
import sqlite3
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
from PIL import Image

from capgate.testing import ServerProcess

PAGEURL = "https://example.com/login"
Task = dict[str, Any]

__all__ = ["PAGEURL", "Task", "act", "balance", "call", "claim", "claim_id", "drain", "get", "png_b64", "res",
           "sqlite_ledger", "submit", "turnstile", "unique", "worker_token"]


def worker_token(server: ServerProcess, name: str, *flags: str) -> str:
    """``capgate workers create`` on a real server's database: the token is alone on the last line."""
    token = server.cli("workers", "create", name, *flags).stdout.strip().splitlines()[-1]
    assert token.startswith("cgw_"), token
    return token


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
    """in.php; retried briefly while the service has not yet seen a worker for the method (a process
    other than the one the worker claimed through reads who serves what at most a second late)."""
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


async def drain(client: httpx.AsyncClient, presence: str) -> None:
    """Settle whatever an earlier test left claimable, and (claiming without a method list) tell the
    service that every method is served."""
    while (task := await claim(client, presence)) is not None:
        await act(client, presence, task, "fail", error="ERROR_CAPTCHA_UNSOLVABLE", final=True)


def sqlite_ledger(db: Path, task_id: str) -> list[tuple[str, int]]:
    """The ledger rows that name a task (kind, amount in micro-USD), read-only from a real server's
    SQLite file (for the tests where the server process is the point)."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        rows = conn.execute("SELECT kind, amount FROM ledger WHERE task_id = ? ORDER BY id", (int(task_id),))
        return [(str(kind), int(amount)) for kind, amount in rows.fetchall()]
