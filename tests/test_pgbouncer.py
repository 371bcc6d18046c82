"""PostgreSQL behind a transaction pooler (docs/capacity.md: the first step past a few hundred
connections): the store through a real PgBouncer in ``pool_mode = transaction`` with fewer server
connections than the store's pool, and its LISTEN connection on PostgreSQL directly.

Through such a pooler each transaction may run on another server session. psycopg prepares a statement
once it has run five times on a connection; the next transaction then asks a session that never
prepared it (``prepared statement "_pg3_0" does not exist``). ``db_pooled`` turns that off; ``db_listen``
gives LISTEN the session of its own that a transaction pooler cannot keep.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import psycopg
import pytest

from capgate.keys import hash_secret, new_key
from capgate.protocol.codes import C
from capgate.settings import from_env
from capgate.store.base import Store, SubmitLimits
from capgate.store.factory import open_store
from capgate.store.models import NewTask, Pool
from capgate.testing import free_port
from tests.pgdb import PgDatabase, throwaway_database

PGBOUNCER = shutil.which("pgbouncer") or shutil.which("pgbouncer", path="/usr/sbin:/usr/local/sbin")
pytestmark = pytest.mark.skipif(PGBOUNCER is None, reason="needs PgBouncer (make test installs Debian's)")

LIMITS = SubmitLimits(C.NO_SLOT_AVAILABLE, 100_000)
TASKS = 200  # each statement runs on each of the 16 client connections more than five times


@pytest.fixture()
def database() -> Iterator[PgDatabase]:
    with throwaway_database("capgate_bouncer") as db:
        yield db


@pytest.fixture()
def bouncer(database: PgDatabase, tmp_path: Path) -> Iterator[str]:
    """A PgBouncer in transaction mode in front of ``database``, with 2 server connections; its URL."""
    assert PGBOUNCER is not None
    info = psycopg.conninfo.conninfo_to_dict(database.url)
    port = free_port()
    ini = tmp_path / "pgbouncer.ini"
    ini.write_text(
        "[databases]\n"
        f"* = host={info.get('host', '127.0.0.1')} port={info.get('port', '5432')}"
        f" user={info.get('user', 'postgres')}\n"
        "[pgbouncer]\n"
        f"listen_addr = 127.0.0.1\nlisten_port = {port}\nauth_type = any\npool_mode = transaction\n"
        "default_pool_size = 2\nmax_client_conn = 200\nunix_socket_dir =\n")  # it logs to stderr
    user = ["-u", "nobody"] if os.geteuid() == 0 else []  # PgBouncer refuses to run as root
    log = tmp_path / "pgbouncer.log"
    with log.open("wb") as sink:  # a file, not a pipe: nobody reads a pipe, and a full one stalls PgBouncer
        process = subprocess.Popen([PGBOUNCER, *user, str(ini)], stdout=subprocess.DEVNULL, stderr=sink)
    try:
        deadline = time.monotonic() + 20
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
                break
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "PgBouncer did not start"
            time.sleep(0.05)
        yield f"postgresql://{info.get('user', 'postgres')}@127.0.0.1:{port}/{database.name}"
    finally:
        process.terminate()
        process.wait(10)


@contextlib.asynccontextmanager
async def opened(url: str, listen: str = "", pooled: bool = False) -> AsyncIterator[Store]:
    store = open_store(url, schema="upgrade", pooled=pooled, listen=listen)
    await store.open()
    try:
        yield store
    finally:
        await store.close()


async def exercise(store: Store) -> None:
    """Many statements of each kind (past psycopg's five before it prepares one) from concurrent
    client connections over PgBouncer's 2 server sessions; every settle heard on the LISTEN connection."""
    heard: set[int] = set()
    ready, all_heard = asyncio.Event(), asyncio.Event()
    submitted: set[int] = set()

    async def listen() -> None:
        async for notice in store.notices():
            if notice.ready:
                ready.set()
            heard.update(notice.settled)
            if submitted and submitted <= heard:
                all_heard.set()

    listening = asyncio.create_task(listen())
    try:
        await asyncio.wait_for(ready.wait(), 10)
        accounts = []
        for _ in range(8):  # one batch of submits at a time per account: eight accounts, eight at once
            key = new_key()
            accounts.append(await store.create_account(hash_secret(key), key[:6], 1000, 10_000_000, False))

        async def one(i: int) -> int:
            now = time.time()
            task = NewTask(method="turnstile", params={"sitekey": "0x4AAA", "pageurl": "https://x/", "n": str(i)},
                           blobs={}, fingerprint=f"fp-{i}", price=1000, deadline_s=300.0, pool=Pool.MAIN)
            outcome = await store.submit(accounts[i % len(accounts)], task, now, LIMITS)
            assert outcome.task_id is not None, outcome
            return outcome.task_id

        submitted.update(await asyncio.gather(*(one(i) for i in range(TASKS))))
        answered: list[int] = []

        async def worker(n: int) -> None:
            while (leased := await store.claim(["main"], None, f"lease-{n}", 30.0, time.time(), 3)):
                assert await store.complete(leased.id, f"lease-{n}", {"token": "t"}, None, time.time())
                answered.append(leased.id)

        await asyncio.gather(*(worker(n) for n in range(8)))
        assert sorted(answered) == sorted(submitted)
        for account in accounts:
            refreshed = await store.get_account(account.id)
            assert refreshed is not None and refreshed.balance == 10_000_000 - TASKS // len(accounts) * 1000
        await asyncio.wait_for(all_heard.wait(), 10)  # every settle, NOTIFY'd through the pooler
    finally:
        listening.cancel()
        with contextlib.suppress(asyncio.CancelledError, ConnectionError):
            await listening


async def test_the_whole_lifecycle_through_a_transaction_pooler(bouncer: str, database: PgDatabase) -> None:
    async with opened(database.url):  # the schema, as `capgate db upgrade` would make it
        pass
    async with opened(bouncer, listen=database.url, pooled=True) as store:
        await exercise(store)


async def test_without_the_setting_prepared_statements_break(bouncer: str, database: PgDatabase) -> None:
    """What ``db_pooled`` is for: the same run with psycopg's prepared statements on fails through this
    PgBouncer (one that keeps prepared statements itself, 1.21 and later when asked to, would not)."""
    async with opened(database.url):
        pass
    async with opened(bouncer, listen=database.url, pooled=False) as store:
        try:
            await exercise(store)
        except psycopg.Error as exc:
            assert "prepared statement" in str(exc), exc
        else:
            pytest.skip("this PgBouncer keeps prepared statements across server sessions itself")


def test_a_pooled_address_without_a_direct_one_is_refused() -> None:
    """LISTEN through a transaction pooler succeeds and then hears nothing (0 of 120 settles, tried):
    every wake-up from another process would be lost without a word. Refused at the start instead."""
    with pytest.raises(ValueError, match="CAPGATE_DB_LISTEN"):
        from_env({"CAPGATE_DB": "postgresql://capgate@bouncer/capgate", "CAPGATE_DB_POOLED": "true"})
    with pytest.raises(ValueError, match="direct"):
        open_store("postgresql://capgate@bouncer/capgate", pooled=True)
    settings = from_env({"CAPGATE_DB": "postgresql://capgate@bouncer/capgate", "CAPGATE_DB_POOLED": "true",
                         "CAPGATE_DB_LISTEN": "postgresql://capgate@db/capgate"})
    assert settings.db_pooled and settings.db_listen == "postgresql://capgate@db/capgate"
