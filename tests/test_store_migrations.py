"""Upgrades from every released schema version, on both backends, with data written under it.

A database is built at version N with that version's own statements (``MIGRATIONS[:N]``), filled
with rows as a capgate of that release wrote them (only the columns version 1 has), and opened by
today's store, which migrates it. Then the old rows must behave as new ones: the pending task counts
toward the thread cap and settles, the balance matches the ledger, a worker's presence is read.

PostgreSQL's releases before the shared history stopped at their own version 3, which held the
partial indexes of the shared version 4: ``PG_RELEASED`` builds that one too.
"""

from __future__ import annotations

import asyncio
import copy
import pickle
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from capgate.protocol.codes import C
from capgate.store.base import ReportPolicy, Store, SubmitLimits
from capgate.store.models import Account, NewTask, Pool, TaskState
from capgate.store.postgres import PostgresStore
from capgate.store.schema import MIGRATIONS, VERSION
from capgate.store.sql import Dialect, one
from capgate.store.sqlite import SQLiteStore
from tests.pgdb import PgDatabase, fresh_schema

T0 = 2_000_000_000.0
LIMITS = SubmitLimits(C.ZERO_BALANCE, 1000)
# (backend, the version a released capgate left, which of MIGRATIONS built it)
SQLITE_RELEASED = [("sqlite", n, tuple(range(n))) for n in range(1, VERSION + 1)]
PG_RELEASED = [("postgres", 1, (0,)), ("postgres", 2, (0, 1)), ("postgres", 3, (0, 1, 3))]

ROWS = [
    ("INSERT INTO accounts (id, key_hash, key_prefix, threads, balance, disabled, sandbox, created_at, settings)"
     " VALUES (1, 'hash-old', 'oldkey00', 2, 700, FALSE, TRUE, ?, '{}')", (T0 - 100,)),
    ("INSERT INTO ledger (account_id, task_id, kind, amount, balance_after, created_at, note)"
     " VALUES (1, NULL, 'topup', 1000, 1000, ?, 'initial balance')", (T0 - 100,)),
    ("INSERT INTO tasks (id, account_id, method, params, fingerprint, state, pool, price, created_at, deadline_at,"
     " not_before, answer, settled_at, attempts, lease_owner, confidence)"
     " VALUES (11111111111, 1, 'normal', '{}', 'solved-fp', 'solved', 'main', 300, ?, ?, ?, '{\"text\": \"ok\"}',"
     " ?, 1, 'L0', 0.9)", (T0 - 50, T0 + 50, T0 - 50, T0 - 40)),
    ("INSERT INTO ledger (account_id, task_id, kind, amount, balance_after, created_at, note)"
     " VALUES (1, 11111111111, 'charge', -300, 700, ?, 'solved')", (T0 - 40,)),
    ("INSERT INTO tasks (id, account_id, method, params, fingerprint, state, pool, price, created_at, deadline_at,"
     " not_before, attempts) VALUES (22222222222, 1, 'normal', '{\"fp\": \"p\"}', 'p', 'pending', 'sandbox', 100,"
     " ?, ?, ?, 0)", (T0 - 10, T0 + 80, T0 - 10)),
    ("INSERT INTO task_blobs (task_id, name, data) VALUES (22222222222, 'body', ?)", (b"\x89PNG old",)),
    ("INSERT INTO workers (id, name, token_hash, token_prefix, methods, human, disabled, created_at, last_seen,"
     " serving) VALUES (1, 'bot', 'wh-old', 'cgw_old0', '[]', FALSE, FALSE, ?, ?, '[\"turnstile\"]')",
     (T0 - 100, T0 - 5)),
]


def build_sqlite(path: Path, built_with: tuple[int, ...], version: int) -> None:
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
        for index in built_with:
            for statement in MIGRATIONS[index].statements(Dialect.SQLITE):
                conn.execute(statement)
        conn.executemany("INSERT INTO schema_version VALUES (?)", [(v,) for v in range(1, version + 1)])
        _fill(lambda sql, args: conn.execute(Dialect.SQLITE.renderer()(sql), args))


def build_postgres(url: str, built_with: tuple[int, ...], version: int) -> None:
    with psycopg.connect(url, autocommit=True) as conn, conn.transaction():
        conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
        for index in built_with:
            for statement in MIGRATIONS[index].statements(Dialect.POSTGRES):
                conn.execute(statement)
        for v in range(1, version + 1):
            conn.execute("INSERT INTO schema_version VALUES (%s)", (v,))
        _fill(lambda sql, args: conn.execute(Dialect.POSTGRES.renderer()(sql), args))


def _fill(execute: Callable[[str, tuple[Any, ...]], object]) -> None:
    for sql, args in ROWS:
        execute(sql, args)


@pytest.fixture()
def pg_url(request: pytest.FixtureRequest) -> Iterator[str]:
    db: PgDatabase = request.getfixturevalue("pg_database")
    yield fresh_schema(db)


@pytest.mark.parametrize(("backend", "version", "built_with"), SQLITE_RELEASED + PG_RELEASED,
                         ids=[f"{b}-v{v}" for b, v, _ in SQLITE_RELEASED + PG_RELEASED])
async def test_upgrade_from_a_released_version(backend: str, version: int, built_with: tuple[int, ...],
                                               tmp_path: Path, request: pytest.FixtureRequest) -> None:
    store: Store
    if backend == "sqlite":
        build_sqlite(tmp_path / "old.db", built_with, version)
        store = SQLiteStore(tmp_path / "old.db")
    else:
        url = request.getfixturevalue("pg_url")
        await asyncio.to_thread(build_postgres, url, built_with, version)
        store = PostgresStore(url, max_size=2)
    await store.open()
    try:
        acc = await store.get_account(1)
        assert acc is not None and (acc.balance, acc.threads, acc.key_prefix) == (700, 2, "oldkey00")
        assert await store.account_by_key_hash("hash-old") == acc
        solved = await store.get_task(1, 11111111111)
        assert solved is not None and (solved.state, solved.answer) == (TaskState.SOLVED, {"text": "ok"})
        # The old pending task counts toward the cap, its price is reserved, it is a duplicate.
        assert await store.working_threads(1, T0) == 1
        assert (await store.submit(acc, _task("p", 100), T0, LIMITS)).code == C.BAD_DUPLICATES
        assert (await store.submit(acc, _task("q", 650), T0, LIMITS)).code == C.ZERO_BALANCE
        second = await store.submit(acc, _task("q", 100), T0, LIMITS)
        assert second.task_id is not None
        assert (await store.submit(acc, _task("r", 0), T0, LIMITS)).code == C.ZERO_BALANCE  # two threads
        assert await store.settle_due(Pool.SANDBOX.value, T0 + 1, 10, lambda t: ({"text": "x"}, None)) \
            == [22222222222]
        assert await store.blobs(22222222222) == {"body": b"\x89PNG old"}
        assert await store.report(1, 11111111111, False, T0, ReportPolicy(window_s=1e9, refund_bad=True)) is None
        after = await store.get_account(1)
        assert after is not None and after.balance == 700 - 100 + 300
        assert after.balance == sum(entry.amount for entry in await store.ledger(1, 100))
        await store.worker_seen(1, ["hcaptcha"], T0)
        assert await store.active_worker_methods(T0 - 1) == {"hcaptcha"}
    finally:
        await store.close()
    assert await _version_of(store) == VERSION


def _task(fingerprint: str, price: int) -> NewTask:
    return NewTask(method="normal", params={"fp": fingerprint}, blobs={}, fingerprint=fingerprint, price=price,
                   deadline_s=60.0, pool=Pool.MAIN)


async def _version_of(store: Store) -> int:
    await store.open()
    try:
        row = await store._read(one("SELECT MAX(version) AS v FROM schema_version"))
        return int(row["v"])
    finally:
        await store.close()


async def test_processes_opening_one_new_database_at_once_migrate_it_once(request: pytest.FixtureRequest) -> None:
    url = request.getfixturevalue("pg_url")
    stores = [PostgresStore(url, max_size=2) for _ in range(6)]
    opened = await asyncio.gather(*(s.open() for s in stores), return_exceptions=True)
    try:
        assert [r for r in opened if r is not None] == []
        acc: Account = await stores[3].create_account("h", "p", 1, 0, False)
        assert await stores[5].get_account(acc.id) == acc
    finally:
        await asyncio.gather(*(s.close() for s in stores))
    with psycopg.connect(url) as conn:
        versions = [row[0] for row in conn.execute("SELECT version FROM schema_version ORDER BY version")]
    assert versions == list(range(1, VERSION + 1))


async def test_pg_unreachable_is_a_clear_error() -> None:
    store = PostgresStore("postgresql://nobody:secret@127.0.0.1:1/none")
    with pytest.raises(ConnectionError, match="cannot connect to PostgreSQL at") as caught:
        await store.open()
    assert "secret" not in str(caught.value)


def test_each_dialect_is_one_instance_whatever_copies_it() -> None:
    """Stores and statements compare dialects with ``is``: a copy or an unpickled one is the same."""
    for dialect in (Dialect.SQLITE, Dialect.POSTGRES):
        assert pickle.loads(pickle.dumps(dialect)) is dialect
        assert copy.copy(dialect) is dialect and copy.deepcopy({"d": dialect})["d"] is dialect
    assert Dialect.SQLITE.renderer()("SELECT ?{lock}") == "SELECT ?"
    assert Dialect.POSTGRES.renderer()("SELECT ?{lock}") == "SELECT %s FOR UPDATE"
