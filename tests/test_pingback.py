"""Pingback: when a task submitted with ``pingback=URL`` settles, capgate POSTs ``id=<id>&code=<answer>``
to it (form-urlencoded), retrying failed deliveries a bounded number of times; only to hosts the account
registered with ``res.php?action=add_pingback``, and never to private addresses unless the operator
allows it (``CAPGATE_PINGBACK_ALLOW_PRIVATE``).

Against the app in process (tests/appkit.py, on SQLite). The receiver is a small HTTP server on
127.0.0.1 in a thread, so the module's main app allows private addresses; one more app keeps the
default fence. Whether a delivery is finished (sent, or given up) is read from the task row
(read-only, from the app's SQLite file), so the tests wait for an outcome instead of sleeping.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode

import httpx
import pytest

from tests.appkit import AppHost, app_host
from tests.storekit import sqlite_backend
from tests.workerkit import PAGEURL, act, claim_id, drain, get, res, submit, turnstile

ATTEMPTS = 2


@dataclass(frozen=True)
class Hit:
    path: str
    content_type: str
    body: bytes

    @property
    def form(self) -> dict[str, list[str]]:
        return parse_qs(self.body.decode("ascii"), keep_blank_values=True, strict_parsing=True)


class Receiver:
    """Records every POST; answers with ``statuses`` in turn, then 200."""

    def __init__(self) -> None:
        self.hits: list[Hit] = []
        self.statuses: list[int] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                with receiver._lock:
                    receiver.hits.append(Hit(self.path, self.headers.get("content-type", ""), body))
                    status = receiver.statuses.pop(0) if receiver.statuses else 200
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)
        self.thread.start()

    def url(self, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}"

    async def wait_for(self, count: int, timeout: float = 20) -> list[Hit]:
        await until(lambda: len(self.hits) >= count, timeout)
        with self._lock:
            return list(self.hits)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


def delivery(db: Path, task_id: str) -> tuple[int, int]:
    """``(pingback_done, pingback_attempts)``: done is 1 delivered, -1 given up, 0 still to do."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        row = conn.execute("SELECT pingback_done, pingback_attempts FROM tasks WHERE id = ?",
                           (int(task_id),)).fetchone()
    return int(row[0]), int(row[1])


async def until(condition: Callable[[], bool], timeout: float) -> None:
    """Return once ``condition()`` holds, or after ``timeout`` seconds (the caller's assertion then fails)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return
        await asyncio.sleep(0.05)


async def finished(db: Path, task_id: str, timeout: float = 20) -> tuple[int, int]:
    """Wait until capgate has delivered the pingback or given up on it."""
    await until(lambda: delivery(db, task_id)[0] != 0, timeout)
    return delivery(db, task_id)


def form(task_id: str, code: str) -> bytes:
    return urlencode({"id": task_id, "code": code}).encode("ascii")


async def register(client: httpx.AsyncClient, key: str, addr: str) -> None:
    assert (await res(client, key, action="add_pingback", addr=addr)).text == "OK"


# ------------------------------------------------------------------------------------------ fixtures


@dataclass(frozen=True)
class Accounts:
    db: Path
    presence: str
    bot: str
    live: str
    sandbox: str
    registry: str  # used only by the registry test
    other: str  # a live key that registers nothing


@pytest.fixture(scope="module")
def pb_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppHost]:
    with app_host(sqlite_backend(tmp_path_factory.mktemp("pingback")),
                  pingback_allow_private=True, pingback_attempts=ATTEMPTS) as host:
        yield host


@pytest.fixture(scope="module")
def accounts(pb_app: AppHost) -> Accounts:
    keys = [pb_app.make_key(sandbox=sandbox, threads=200) for sandbox in (False, True, False, False)]
    return Accounts(Path(pb_app.settings.db), pb_app.worker_token("presence"), pb_app.worker_token("bot"), *keys)


@pytest.fixture()
def receiver() -> Iterator[Receiver]:
    running = Receiver()
    yield running
    running.close()


@pytest.fixture()
async def client(pb_app: AppHost, accounts: Accounts) -> AsyncIterator[httpx.AsyncClient]:
    async with pb_app.aclient() as http:
        await drain(http, accounts.presence)
        for key in (accounts.live, accounts.sandbox):
            await register(http, key, "127.0.0.1")
        yield http


# ------------------------------------------------------------------------------------------ registry


async def test_pingback_host_registry_plain_and_json(client: httpx.AsyncClient, accounts: Accounts) -> None:
    key = accounts.registry

    async def call(action: str, json_mode: bool = False, **params: str) -> httpx.Response:
        return await res(client, key, action=action, **params, **({"json": 1} if json_mode else {}))

    assert (await call("get_pingback")).text == "OK|"
    assert (await call("get_pingback", True)).json() == {"status": 1, "request": []}
    assert (await call("add_pingback", addr="https://Hooks.Example.com:8443/cb?x=1")).text == "OK"
    assert (await call("add_pingback", True, addr="example.org")).json() == {"status": 1, "request": "OK"}
    assert (await call("add_pingback", addr="example.org")).text == "OK"  # again: no duplicate
    assert (await call("get_pingback")).text == "OK|example.org,hooks.example.com"
    assert (await call("get_pingback", True)).json() == {"status": 1,
                                                         "request": ["example.org", "hooks.example.com"]}
    # Registrations belong to the account.
    assert (await res(client, accounts.other, action="get_pingback")).text == "OK|"
    for bad in ("", "ftp://example.net/x", "http://"):
        assert (await call("add_pingback", addr=bad)).text == "ERROR_IP_ADDRES", bad
        body = (await call("add_pingback", True, addr=bad)).json()
        assert (body["status"], body["request"]) == (0, "ERROR_IP_ADDRES")
    assert (await call("del_pingback", addr="http://example.org/any/path")).text == "OK"
    assert (await call("get_pingback")).text == "OK|hooks.example.com"
    assert (await call("add_pingback", addr="example.org")).text == "OK"
    assert (await call("del_pingback", True, addr="all")).json() == {"status": 1, "request": "OK"}
    assert (await call("get_pingback")).text == "OK|"


async def test_a_host_the_account_did_not_register_is_bad_parameters(client: httpx.AsyncClient,
                                                                     accounts: Accounts,
                                                                     receiver: Receiver) -> None:
    for key in (accounts.live, accounts.sandbox):  # both have 127.0.0.1 only
        for url in (receiver.url("localhost"), "http://10.1.2.3/hook", "ftp://127.0.0.1/hook",
                    "http://127.0.0.1.example.com/hook"):
            reply = await client.post("/in.php", data={"key": key, **turnstile(), "pingback": url})
            assert reply.text == "ERROR_BAD_PARAMETERS", (key, url)
    reply = await client.post("/in.php", data={"key": accounts.other, **turnstile(), "pingback": receiver.url(),
                                               "json": "1"})
    assert reply.json()["request"] == "ERROR_BAD_PARAMETERS"


# ------------------------------------------------------------------------------------------ delivery


@pytest.mark.parametrize("param", ["pingback", "callback"])  # callback: the alias some clients send
async def test_a_sandbox_task_pings_its_answer(client: httpx.AsyncClient, accounts: Accounts,
                                               receiver: Receiver, param: str) -> None:
    task_id = await submit(client, accounts.sandbox, **turnstile(), **{param: f"{receiver.url()}/hook?src=cg"})
    hits = await receiver.wait_for(1)
    answer = await get(client, accounts.sandbox, task_id)
    assert answer.startswith("OK|SANDBOX-FAKE-TOKEN-")
    assert len(hits) == 1
    assert hits[0].path == "/hook?src=cg"
    assert hits[0].content_type == "application/x-www-form-urlencoded"
    assert hits[0].body == form(task_id, answer[3:])
    assert await finished(accounts.db, task_id) == (1, 1)
    assert len(receiver.hits) == 1


async def test_a_worker_answer_is_pinged_exactly(client: httpx.AsyncClient, accounts: Accounts,
                                                 receiver: Receiver) -> None:
    task_id = await submit(client, accounts.live, method="geetest", gt="gt-1", challenge="ch-pb",
                           pageurl=PAGEURL, pingback=f"{receiver.url()}/geetest")
    task = await claim_id(client, accounts.bot, task_id, ["geetest"])
    answer = {"challenge": "c+1 /", "validate": "v&2", "seccode": "s=3|jordan"}
    assert (await act(client, accounts.bot, task, "answer", answer=answer)).status_code == 200
    hits = await receiver.wait_for(1)
    code = "challenge:c+1 /,validate:v&2,seccode:s=3|jordan"
    assert await get(client, accounts.live, task_id) == f"OK|{code}"
    assert [hit.body for hit in hits] == [form(task_id, code)]
    assert hits[0].form == {"id": [task_id], "code": [code]}


@pytest.mark.parametrize("how", ["worker", "worker-proxy", "sandbox"])
async def test_an_unsolvable_task_pings_its_error(client: httpx.AsyncClient, accounts: Accounts,
                                                  receiver: Receiver, how: str) -> None:
    hook = f"{receiver.url()}/unsolvable"
    if how == "sandbox":
        code = "ERROR_CAPTCHA_UNSOLVABLE"
        task_id = await submit(client, accounts.sandbox, method="turnstile", sitekey="0x4AAA-pb",
                               pageurl=f"{PAGEURL}?sandbox-unsolvable", pingback=hook)
    else:
        code = "ERROR_PROXY_CONNECTION_FAILED" if how == "worker-proxy" else "ERROR_CAPTCHA_UNSOLVABLE"
        task_id = await submit(client, accounts.live, **turnstile(), pingback=hook)
        task = await claim_id(client, accounts.bot, task_id, ["turnstile"])
        assert (await act(client, accounts.bot, task, "fail", error=code, final=True)).status_code == 200
    hits = await receiver.wait_for(1)
    assert [hit.body for hit in hits] == [form(task_id, code)]
    assert await get(client, accounts.live if how != "sandbox" else accounts.sandbox, task_id) == code


async def test_failed_deliveries_are_retried_a_bounded_number_of_times(
        client: httpx.AsyncClient, accounts: Accounts, receiver: Receiver) -> None:
    receiver.statuses = [500]  # then 200
    down = Receiver()
    down.statuses = [500, 503, 500, 500, 500]
    try:
        flaky_id = await submit(client, accounts.sandbox, **turnstile(), pingback=f"{receiver.url()}/flaky")
        down_id = await submit(client, accounts.sandbox, **turnstile(), pingback=f"{down.url()}/down")
        assert await finished(accounts.db, flaky_id) == (1, 2)  # delivered at the second attempt
        assert await finished(accounts.db, down_id) == (-1, ATTEMPTS)  # given up after ATTEMPTS
    finally:
        down.close()
    answer = (await get(client, accounts.sandbox, flaky_id))[3:]
    assert [hit.body for hit in receiver.hits] == [form(flaky_id, answer)] * 2
    answer = (await get(client, accounts.sandbox, down_id))[3:]
    assert [hit.body for hit in down.hits] == [form(down_id, answer)] * ATTEMPTS


# ------------------------------------------------------------------------------------------ the fence


@pytest.fixture(scope="module")
def fenced(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[AppHost, str]]:
    """An app with the default settings (private pingback addresses refused) and a sandbox key."""
    with app_host(sqlite_backend(tmp_path_factory.mktemp("pingback-fenced"))) as host:
        yield host, host.make_key(threads=200)


async def test_private_addresses_get_nothing_by_default(fenced: tuple[AppHost, str], receiver: Receiver) -> None:
    app, key = fenced
    db = Path(app.settings.db)
    async with app.aclient() as client:
        # An address the fence refuses is refused when registered already (tests/test_security.py).
        assert (await res(client, key, action="add_pingback", addr="127.0.0.1")).text == "ERROR_IP_ADDRES"
        # A name is registered whatever it resolves to, so in.php takes it; the fence applies when sending.
        await register(client, key, "localhost")
        ids = [await submit(client, key, **turnstile(), pingback=f"{receiver.url('localhost')}/private")]
        for task_id in ids:
            assert (await get(client, key, task_id, wait=10)).startswith("OK|")
            assert (await finished(db, task_id))[0] == -1  # given up on, not sent
        await asyncio.sleep(1)
    assert receiver.hits == []
