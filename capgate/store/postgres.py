"""PostgreSQL backend: many API processes and workers on one database.

The same rules as ``sqlite.py``, made safe for writers in several processes at once:

* a submit locks its account's row first (``SELECT … FOR UPDATE``), so the thread cap, balance and
  duplicate checks of one account run one at a time across every process;
* a claim takes the oldest due task with ``FOR UPDATE SKIP LOCKED``, so two workers never lease the
  same task, and neither waits for the other;
* every change of money is an ``UPDATE accounts SET balance = balance + …`` in the transaction of
  the task change that causes it;
* one sweeper at a time (a transaction-level advisory lock; the others skip that round).

Connections come from a ``psycopg_pool.AsyncConnectionPool`` in autocommit mode: reads are single
statements, writes run in explicit transactions, retried when PostgreSQL reports a deadlock.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import psycopg
from psycopg import AsyncConnection, errors
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.rows import DictRow, dict_row
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from capgate.protocol.codes import C
from capgate.store.base import ReportPolicy, Solve, Store, SubmitLimits, SubmitOutcome
from capgate.store.ids import new_task_id
from capgate.store.models import (
    Account,
    LedgerEntry,
    LedgerKind,
    NewTask,
    Task,
    TaskOutcome,
    TaskState,
    WorkerToken,
)
from capgate.store.pg_schema import migrate

T = TypeVar("T")
Conn = AsyncConnection[DictRow]

SWEEP_LOCK = 0x6361706761746502  # pg_try_advisory_xact_lock key: one sweeper at a time
STRIKE_LOCK_SPACE = 0x63617067  # first key of pg_advisory_xact_lock(int, int): strikes of one address
TX_RETRIES = 5
# PostgreSQL text cannot hold NUL. A lease or host that has one (sent by a client) matches nothing
# stored, so look-ups by it answer "not found" as SQLite would, without asking the server.
_NUL = "\x00"
CONNECT_TIMEOUT_S = 15.0


def redacted(url: str) -> str:
    """The URL without its password, for error messages."""
    try:
        params = conninfo_to_dict(url)
    except Exception:
        return "the configured PostgreSQL URL"
    params.pop("password", None)
    return make_conninfo("", **params)


class PostgresStore(Store):
    def __init__(self, url: str, *, min_size: int = 1, max_size: int = 16) -> None:
        self.url = url
        self.min_size = min_size
        self.max_size = max(max_size, min_size)
        self._pool: AsyncConnectionPool[Conn] | None = None

    # ------------------------------------------------------------------------------------ plumbing

    async def open(self) -> None:
        # Migrate on a connection of its own first: a server that cannot be reached fails here at
        # once, with libpq's reason, instead of as a pool timeout.
        try:
            conn = await AsyncConnection.connect(self.url, autocommit=True,
                                                 connect_timeout=int(CONNECT_TIMEOUT_S))
        except psycopg.OperationalError as exc:
            reason = " ".join(str(exc).split()) or type(exc).__name__
            raise ConnectionError(f"cannot connect to PostgreSQL at {redacted(self.url)}: {reason}") from None
        async with conn:
            await migrate(conn)
        pool: AsyncConnectionPool[Conn] = AsyncConnectionPool(
            self.url, connection_class=AsyncConnection[DictRow], min_size=self.min_size,
            max_size=self.max_size, open=False, name="capgate",
            kwargs={"autocommit": True, "row_factory": dict_row})
        try:
            await pool.open(wait=True, timeout=CONNECT_TIMEOUT_S)
        except PoolTimeout:
            await pool.close()
            raise ConnectionError(f"cannot connect to PostgreSQL at {redacted(self.url)}") from None
        self._pool = pool

    async def close(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()

    def _get_pool(self) -> AsyncConnectionPool[Conn]:
        assert self._pool is not None, "store is not open"
        return self._pool

    async def _tx(self, fn: Callable[[Conn], Awaitable[T]], *, single: bool = False) -> T:
        """Run ``fn`` in one transaction; again from the start if PostgreSQL broke a deadlock.
        ``single``: ``fn`` runs one statement, atomic by itself, so no BEGIN/COMMIT round trips."""
        for attempt in range(TX_RETRIES):
            try:
                async with self._get_pool().connection() as conn:
                    if single:
                        return await fn(conn)
                    async with conn.transaction():
                        return await fn(conn)
            except (errors.DeadlockDetected, errors.SerializationFailure):
                if attempt == TX_RETRIES - 1:
                    raise
                await asyncio.sleep(random.uniform(0.005, 0.05) * (attempt + 1))
        raise AssertionError("unreachable")  # pragma: no cover

    async def _read(self, sql: str, args: Sequence[Any] = ()) -> list[DictRow]:
        async with self._get_pool().connection() as conn:
            cur = await conn.execute(sql, args)
            return await cur.fetchall()

    async def _read_one(self, sql: str, args: Sequence[Any] = ()) -> DictRow | None:
        rows = await self._read(sql, args)
        return rows[0] if rows else None

    # ------------------------------------------------------------------------------------ accounts

    async def create_account(self, key_hash: str, key_prefix: str, threads: int, balance: int,
                             sandbox: bool) -> Account:
        async def run(conn: Conn) -> Account:
            now = time.time()
            cur = await conn.execute(
                "INSERT INTO accounts (key_hash, key_prefix, threads, balance, disabled, sandbox, created_at,"
                " settings) VALUES (%s, %s, %s, 0, FALSE, %s, %s, '{}') RETURNING id",
                (key_hash, key_prefix, threads, sandbox, now))
            account_id = int(_one(await cur.fetchone())["id"])
            if balance:
                await _ledger(conn, account_id, None, LedgerKind.TOPUP, balance, now, "initial balance")
            return await _fetch_account(conn, account_id)
        return await self._tx(run)

    async def account_by_key_hash(self, key_hash: str) -> Account | None:
        row = await self._read_one("SELECT * FROM accounts WHERE key_hash = %s", (key_hash,))
        return Account.from_row(row) if row else None

    async def account_by_prefix(self, prefix: str) -> list[Account]:
        rows = await self._read("SELECT * FROM accounts WHERE key_prefix LIKE %s ORDER BY id",
                                (prefix.replace("%", "").replace("_", "").replace("\\", "") + "%",))
        return [Account.from_row(r) for r in rows]

    async def list_accounts(self) -> list[Account]:
        return [Account.from_row(r) for r in await self._read("SELECT * FROM accounts ORDER BY id")]

    async def topup(self, account_id: int, amount: int, note: str) -> Account:
        async def run(conn: Conn) -> Account:
            await _ledger(conn, account_id, None, LedgerKind.TOPUP, amount, time.time(), note)
            return await _fetch_account(conn, account_id)
        return await self._tx(run)

    async def update_account(self, account_id: int, *, disabled: bool | None = None,
                             threads: int | None = None, settings: dict[str, object] | None = None,
                             ) -> Account:
        async def run(conn: Conn) -> Account:
            cur = await conn.execute("SELECT settings FROM accounts WHERE id = %s FOR UPDATE", (account_id,))
            row = await cur.fetchone()
            if row is None:
                raise LookupError(f"no account {account_id}")
            if disabled is not None:
                await conn.execute("UPDATE accounts SET disabled = %s WHERE id = %s", (disabled, account_id))
            if threads is not None:
                await conn.execute("UPDATE accounts SET threads = %s WHERE id = %s", (threads, account_id))
            if settings is not None:
                merged = {**json.loads(row["settings"]), **settings}
                await conn.execute("UPDATE accounts SET settings = %s WHERE id = %s",
                                   (json.dumps(merged), account_id))
            return await _fetch_account(conn, account_id)
        return await self._tx(run)

    async def ledger(self, account_id: int, limit: int = 100) -> list[LedgerEntry]:
        rows = await self._read("SELECT * FROM ledger WHERE account_id = %s ORDER BY id DESC LIMIT %s",
                                (account_id, limit))
        return [LedgerEntry.from_row(r) for r in rows]

    # ------------------------------------------------------------------------------------ tasks

    async def submit(self, account: Account, task: NewTask, now: float, limits: SubmitLimits,
                     ) -> SubmitOutcome:
        async def run(conn: Conn) -> SubmitOutcome:
            # The account's row lock: this account's submits, in every process, check one at a time.
            cur = await conn.execute("SELECT balance FROM accounts WHERE id = %s FOR UPDATE", (account.id,))
            balance = await cur.fetchone()
            if balance is None:
                raise LookupError(f"no account {account.id}")
            # A statement after the lock, so its snapshot holds every task the lock's previous
            # holder committed. All four figures in one round trip; checked in sqlite.py's order.
            cur = await conn.execute(
                "SELECT COUNT(*) AS n, COALESCE(SUM(price), 0)::BIGINT AS reserved,"
                " EXISTS (SELECT 1 FROM tasks WHERE account_id = %(account)s AND fingerprint = %(fingerprint)s"
                " AND state = 'pending' AND deadline_at > %(now)s) AS duplicate,"
                " (SELECT COUNT(*) FROM tasks WHERE state = 'pending' AND deadline_at > %(now)s) AS queued"
                " FROM tasks WHERE account_id = %(account)s AND state = 'pending' AND deadline_at > %(now)s",
                {"account": account.id, "fingerprint": task.fingerprint, "now": now})
            live = _one(await cur.fetchone())
            if live["n"] >= account.threads:
                return SubmitOutcome(code=limits.thread_cap_code)
            if task.price > 0 and balance["balance"] - live["reserved"] < task.price:
                return SubmitOutcome(code=C.ZERO_BALANCE)
            if live["duplicate"]:
                return SubmitOutcome(code=C.BAD_DUPLICATES)
            if live["queued"] >= limits.max_pending:
                return SubmitOutcome(code=C.NO_SLOT_AVAILABLE)
            for _ in range(8):
                task_id = new_task_id()
                cur = await conn.execute(
                    "INSERT INTO tasks (id, account_id, method, params, fingerprint, state, pool, price,"
                    " created_at, deadline_at, not_before, attempts, pingback)"
                    " VALUES (%s, %s, %s, %s, %s, 'pending', %s, %s, %s, %s, %s, 0, %s)"
                    " ON CONFLICT (id) DO NOTHING RETURNING id",
                    (task_id, account.id, task.method, json.dumps(task.params, ensure_ascii=False),
                     task.fingerprint, task.pool.value, task.price, now, now + task.deadline_s,
                     task.not_before or now, task.pingback))
                if await cur.fetchone() is not None:
                    break
            else:  # pragma: no cover - 8 collisions in a 9e10 space
                return SubmitOutcome(code=C.SERVER_ERROR)
            for name, data in task.blobs.items():  # one image, mostly; up to nine (bls)
                await conn.execute("INSERT INTO task_blobs (task_id, name, data) VALUES (%s, %s, %s)",
                                   (task_id, name, data))
            return SubmitOutcome(task_id=task_id)
        return await self._tx(run)

    async def get_task(self, account_id: int, task_id: int) -> Task | None:
        row = await self._read_one("SELECT * FROM tasks WHERE id = %s AND account_id = %s", (task_id, account_id))
        return Task.from_row(row) if row else None

    async def get_tasks(self, account_id: int, task_ids: Sequence[int]) -> dict[int, Task]:
        if not task_ids:
            return {}
        rows = await self._read("SELECT * FROM tasks WHERE account_id = %s AND id = ANY(%s)",
                                (account_id, [int(i) for i in task_ids]))
        return {int(r["id"]): Task.from_row(r) for r in rows}

    async def outcomes(self, account_id: int, task_ids: Sequence[int]) -> dict[int, TaskOutcome]:
        if not task_ids:
            return {}
        rows = await self._read(f"SELECT {TaskOutcome.COLUMNS} FROM tasks WHERE account_id = %s AND id = ANY(%s)",
                                (account_id, list(task_ids)))
        return {int(r["id"]): TaskOutcome.from_row(list(r.values())) for r in rows}

    async def working_threads(self, account_id: int, now: float) -> int:
        row = await self._read_one("SELECT COUNT(*) AS n FROM tasks WHERE account_id = %s AND state = 'pending'"
                                   " AND deadline_at > %s", (account_id, now))
        return int(row["n"]) if row else 0

    async def report(self, account_id: int, task_id: int, good: bool, now: float,
                     policy: ReportPolicy) -> str | None:
        async def run(conn: Conn) -> str | None:
            cur = await conn.execute("SELECT * FROM tasks WHERE id = %s AND account_id = %s FOR UPDATE",
                                     (task_id, account_id))
            row = await cur.fetchone()
            if row is None:
                return C.WRONG_CAPTCHA_ID
            task = Task.from_row(row)
            if task.report is not None:
                return C.DUPLICATE_REPORT
            if task.state is not TaskState.SOLVED or task.settled_at is None:
                return C.REPORT_NOT_RECORDED
            if now - task.settled_at > policy.window_s:
                return C.REPORT_NOT_RECORDED
            await conn.execute("UPDATE tasks SET report = %s WHERE id = %s", ("good" if good else "bad", task_id))
            if not good and policy.refund_bad and task.price > 0:
                await _ledger(conn, account_id, task_id, LedgerKind.REFUND, task.price, now, "reportbad")
            return None
        return await self._tx(run)

    # ------------------------------------------------------------------------------------ workers

    @staticmethod
    def _queue_filter(pools: Sequence[str], methods: Sequence[str] | None, now: float,
                      max_attempts: int) -> tuple[str, list[Any]]:
        where = ("state = 'pending' AND pool = ANY(%s) AND not_before <= %s"
                 " AND (lease_until IS NULL OR lease_until < %s) AND deadline_at > %s AND attempts < %s")
        args: list[Any] = [list(pools), now, now, now, max_attempts]
        if methods is not None:
            where += " AND method = ANY(%s)"
            args.append(list(methods))
        return where, args

    async def leased_task(self, task_id: int, lease: str) -> Task | None:
        if _NUL in lease:
            return None
        row = await self._read_one(
            "SELECT * FROM tasks WHERE id = %s AND state = 'pending' AND lease_owner = %s", (task_id, lease))
        return Task.from_row(row) if row else None

    async def has_claimable(self, pools: Sequence[str], methods: Sequence[str] | None, now: float,
                            max_attempts: int) -> bool:
        if methods is not None and not methods:
            return False
        where, args = self._queue_filter(pools, methods, now, max_attempts)
        return await self._read_one(f"SELECT 1 FROM tasks WHERE {where} LIMIT 1", args) is not None

    async def claim(self, pools: Sequence[str], methods: Sequence[str] | None, lease: str,
                    lease_s: float, now: float, max_attempts: int) -> Task | None:
        if methods is not None and not methods:
            return None
        where, args = self._queue_filter(pools, methods, now, max_attempts)

        async def run(conn: Conn) -> Task | None:
            # SKIP LOCKED: a task another claimer is taking right now is passed over, not waited for;
            # once that claim commits the row no longer matches (its lease runs), so no task is
            # ever leased twice.
            cur = await conn.execute(
                "UPDATE tasks SET lease_owner = %s, lease_until = %s, attempts = attempts + 1"
                f" WHERE id = (SELECT id FROM tasks WHERE {where} ORDER BY not_before, created_at LIMIT 1"
                " FOR UPDATE SKIP LOCKED) RETURNING *", [lease, now + lease_s, *args])
            row = await cur.fetchone()
            return Task.from_row(row) if row is not None else None
        return await self._tx(run, single=True)

    async def settle_due(self, pool: str, now: float, limit: int, solve: Solve) -> list[int]:
        async def run(conn: Conn) -> list[int]:
            # SKIP LOCKED: sandbox workers in several processes share the due tasks between them.
            cur = await conn.execute(
                "SELECT * FROM tasks WHERE state = 'pending' AND pool = %s AND not_before <= %s"
                " AND (lease_until IS NULL OR lease_until < %s) AND deadline_at > %s"
                " ORDER BY not_before, created_at LIMIT %s FOR UPDATE SKIP LOCKED", (pool, now, now, now, limit))
            tasks = [Task.from_row(r) for r in await cur.fetchall()]
            if not tasks:
                return []
            charges: list[Task] = []
            for task in tasks:
                answer, error = solve(task)
                if answer is not None:
                    await conn.execute(
                        "UPDATE tasks SET state = 'solved', answer = %s, confidence = 1.0, settled_at = %s,"
                        " attempts = attempts + 1 WHERE id = %s",
                        (json.dumps(answer, ensure_ascii=False), now, task.id))
                    if task.price > 0:
                        charges.append(task)
                else:
                    await conn.execute(
                        "UPDATE tasks SET state = 'unsolvable', error = %s, settled_at = %s,"
                        " attempts = attempts + 1 WHERE id = %s", (error or C.CAPTCHA_UNSOLVABLE, now, task.id))
            # Accounts in id order: two batches charging the same accounts never wait on each other
            # in a circle.
            for task in sorted(charges, key=lambda t: t.account_id):
                await _ledger(conn, task.account_id, task.id, LedgerKind.CHARGE, -task.price, now, "solved")
            return [t.id for t in tasks]
        return await self._tx(run)

    async def blobs(self, task_id: int) -> dict[str, bytes]:
        rows = await self._read("SELECT name, data FROM task_blobs WHERE task_id = %s", (task_id,))
        return {r["name"]: bytes(r["data"]) for r in rows}

    async def heartbeat(self, task_id: int, worker: str, lease_s: float, now: float) -> bool:
        if _NUL in worker:
            return False

        async def run(conn: Conn) -> bool:
            cur = await conn.execute(
                "UPDATE tasks SET lease_until = %s WHERE id = %s AND state = 'pending' AND lease_owner = %s"
                " AND lease_until >= %s AND deadline_at > %s", (now + lease_s, task_id, worker, now, now))
            return cur.rowcount == 1
        return await self._tx(run, single=True)

    async def complete(self, task_id: int, worker: str, answer: dict[str, object],
                       confidence: float | None, now: float) -> bool:
        if _NUL in worker:
            return False

        async def run(conn: Conn) -> bool:
            cur = await conn.execute(
                "UPDATE tasks SET state = 'solved', answer = %s, confidence = %s, settled_at = %s,"
                " lease_until = NULL WHERE id = %s AND state = 'pending' AND lease_owner = %s"
                " AND lease_until >= %s AND deadline_at > %s RETURNING account_id, price",
                (json.dumps(answer, ensure_ascii=False), confidence, now, task_id, worker, now, now))
            row = await cur.fetchone()
            if row is None:
                return False
            if row["price"] > 0:
                await _ledger(conn, row["account_id"], task_id, LedgerKind.CHARGE, -row["price"], now, "solved")
            return True
        return await self._tx(run)

    async def fail(self, task_id: int, worker: str, error: str | None, max_attempts: int,
                   now: float, retry_pool: str | None = None) -> bool:
        if _NUL in worker:
            return False

        async def run(conn: Conn) -> bool:
            cur = await conn.execute(
                "SELECT attempts FROM tasks WHERE id = %s AND state = 'pending' AND lease_owner = %s"
                " AND lease_until >= %s FOR UPDATE", (task_id, worker, now))
            row = await cur.fetchone()
            if row is None:
                return False
            if error is not None and row["attempts"] >= max_attempts:
                await conn.execute("UPDATE tasks SET state = 'unsolvable', error = %s, settled_at = %s,"
                                   " lease_until = NULL WHERE id = %s", (error, now, task_id))
            else:
                await conn.execute("UPDATE tasks SET lease_owner = NULL, lease_until = NULL,"
                                   " pool = COALESCE(%s::TEXT, pool) WHERE id = %s", (retry_pool, task_id))
            return True
        return await self._tx(run)

    async def sweep(self, now: float, retention_s: float, max_attempts: int) -> list[int]:
        async def run(conn: Conn) -> list[int]:
            cur = await conn.execute("SELECT pg_try_advisory_xact_lock(%s) AS mine", (SWEEP_LOCK,))
            if not _one(await cur.fetchone())["mine"]:
                return []  # another process is sweeping this very moment
            cur = await conn.execute(
                "UPDATE tasks SET state = 'unsolvable', error = %s, lease_until = NULL,"
                " settled_at = CASE WHEN deadline_at <= %s THEN deadline_at ELSE %s END"
                " WHERE state = 'pending' AND (deadline_at <= %s"
                " OR (attempts >= %s AND lease_until IS NOT NULL AND lease_until < %s)) RETURNING id",
                (C.CAPTCHA_UNSOLVABLE, now, now, now, max_attempts, now))
            overdue = [int(r["id"]) for r in await cur.fetchall()]
            cutoff = now - retention_s
            await conn.execute("DELETE FROM task_blobs WHERE task_id IN (SELECT id FROM tasks"
                               " WHERE state IN ('solved', 'unsolvable') AND settled_at < %s)", (cutoff,))
            # Expired rows stay (ledger rows point at them) but lose their parameters and answer.
            await conn.execute("UPDATE tasks SET state = 'expired', params = '{}', answer = NULL"
                               " WHERE state IN ('solved', 'unsolvable') AND settled_at < %s", (cutoff,))
            await conn.execute("DELETE FROM ip_strikes WHERE at < %s", (now - 3600,))
            await conn.execute("DELETE FROM ip_bans WHERE until < %s", (now,))
            return overdue
        return await self._tx(run)

    async def get_account(self, account_id: int) -> Account | None:
        row = await self._read_one("SELECT * FROM accounts WHERE id = %s", (account_id,))
        return Account.from_row(row) if row else None

    async def due_pingbacks(self, now: float, hold_s: float, limit: int) -> list[Task]:
        async def run(conn: Conn) -> list[Task]:
            # SKIP LOCKED: a task another sender is taking right now is left to it.
            cur = await conn.execute(
                "UPDATE tasks SET pingback_next = %s WHERE id IN (SELECT id FROM tasks"
                " WHERE pingback IS NOT NULL AND pingback_done = 0 AND state IN ('solved', 'unsolvable')"
                " AND COALESCE(pingback_next, 0) <= %s LIMIT %s FOR UPDATE SKIP LOCKED) RETURNING *",
                (now + hold_s, now, limit))
            return [Task.from_row(r) for r in await cur.fetchall()]
        return await self._tx(run, single=True)

    async def pingback_done(self, task_id: int, delivered: bool, next_at: float | None) -> None:
        async def run(conn: Conn) -> None:
            if delivered or next_at is None:
                await conn.execute(
                    "UPDATE tasks SET pingback_done = %s, pingback_attempts = pingback_attempts + 1"
                    " WHERE id = %s", (1 if delivered else -1, task_id))
            else:
                await conn.execute(
                    "UPDATE tasks SET pingback_next = %s, pingback_attempts = pingback_attempts + 1"
                    " WHERE id = %s", (next_at, task_id))
        await self._tx(run, single=True)

    async def pending_methods(self, now: float) -> dict[str, int]:
        rows = await self._read("SELECT method, COUNT(*) AS n FROM tasks WHERE state = 'pending'"
                                " AND deadline_at > %s GROUP BY method", (now,))
        return {r["method"]: int(r["n"]) for r in rows}

    # ------------------------------------------------------------------------------------ addresses

    async def ip_banned(self, ip: str, now: float) -> bool:
        return await self._read_one("SELECT 1 FROM ip_bans WHERE ip = %s AND until > %s", (ip, now)) is not None

    async def strike(self, ip: str, now: float, window_s: float, threshold: int, ban_s: float) -> bool:
        async def run(conn: Conn) -> bool:
            # One address's strikes count one at a time, whichever process took them.
            await conn.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (STRIKE_LOCK_SPACE, ip))
            await conn.execute("INSERT INTO ip_strikes (ip, at) VALUES (%s, %s)", (ip, now))
            cur = await conn.execute("SELECT COUNT(*) AS n FROM ip_strikes WHERE ip = %s AND at > %s",
                                     (ip, now - window_s))
            if _one(await cur.fetchone())["n"] >= threshold:
                await conn.execute("INSERT INTO ip_bans (ip, until) VALUES (%s, %s) ON CONFLICT (ip)"
                                   " DO UPDATE SET until = excluded.until", (ip, now + ban_s))
                await conn.execute("DELETE FROM ip_strikes WHERE ip = %s", (ip,))
                return True
            return False
        return await self._tx(run)

    # ------------------------------------------------------------------------------------ pingback

    async def pingback_hosts(self, account_id: int) -> list[str]:
        rows = await self._read("SELECT host FROM pingback_hosts WHERE account_id = %s ORDER BY host",
                                (account_id,))
        return [r["host"] for r in rows]

    async def add_pingback_host(self, account_id: int, host: str) -> None:
        await self._write("INSERT INTO pingback_hosts (account_id, host) VALUES (%s, %s)"
                          " ON CONFLICT DO NOTHING", (account_id, host))

    async def del_pingback_host(self, account_id: int, host: str | None) -> None:
        if host is not None and _NUL in host:
            return  # no such host can be stored
        if host is None:
            await self._write("DELETE FROM pingback_hosts WHERE account_id = %s", (account_id,))
        else:
            await self._write("DELETE FROM pingback_hosts WHERE account_id = %s AND host = %s",
                              (account_id, host))

    # ------------------------------------------------------------------------------------ workers

    async def create_worker(self, name: str, token_hash: str, token_prefix: str, methods: Sequence[str],
                            human: bool) -> WorkerToken:
        async def run(conn: Conn) -> WorkerToken:
            cur = await conn.execute(
                "INSERT INTO workers (name, token_hash, token_prefix, methods, human, disabled, created_at)"
                " VALUES (%s, %s, %s, %s, %s, FALSE, %s) RETURNING *",
                (name, token_hash, token_prefix, json.dumps(list(methods)), human, time.time()))
            return WorkerToken.from_row(_one(await cur.fetchone()))
        return await self._tx(run, single=True)

    async def worker_by_token_hash(self, token_hash: str) -> WorkerToken | None:
        row = await self._read_one("SELECT * FROM workers WHERE token_hash = %s", (token_hash,))
        return WorkerToken.from_row(row) if row else None

    async def list_workers(self) -> list[WorkerToken]:
        return [WorkerToken.from_row(r) for r in await self._read("SELECT * FROM workers ORDER BY id")]

    async def worker_seen(self, worker_id: int, methods: Sequence[str], now: float) -> None:
        await self._write("UPDATE workers SET last_seen = %s, serving = %s WHERE id = %s",
                          (now, json.dumps(list(methods)), worker_id))

    async def active_worker_methods(self, since: float) -> set[str]:
        rows = await self._read("SELECT serving FROM workers WHERE NOT disabled AND last_seen >= %s", (since,))
        served: set[str] = set()
        for row in rows:
            served.update(json.loads(row["serving"] or "[]"))
        return served

    async def _write(self, sql: str, args: Sequence[Any]) -> None:
        """One statement, its own transaction (autocommit)."""
        async def run(conn: Conn) -> None:
            await conn.execute(sql, args)
        await self._tx(run, single=True)


def _one(row: DictRow | None) -> DictRow:
    if row is None:
        raise LookupError("the statement returned no row")
    return row


async def _fetch_account(conn: Conn, account_id: int) -> Account:
    cur = await conn.execute("SELECT * FROM accounts WHERE id = %s", (account_id,))
    row = await cur.fetchone()
    if row is None:
        raise LookupError(f"no account {account_id}")
    return Account.from_row(row)


async def _ledger(conn: Conn, account_id: int, task_id: int | None, kind: LedgerKind, amount: int,
                  now: float, note: str) -> None:
    """Move money and write the row that says why, in the caller's transaction."""
    cur = await conn.execute("UPDATE accounts SET balance = balance + %s WHERE id = %s RETURNING balance",
                             (amount, account_id))
    row = await cur.fetchone()
    if row is None:
        raise LookupError(f"no account {account_id}")
    await conn.execute("INSERT INTO ledger (account_id, task_id, kind, amount, balance_after, created_at, note)"
                       " VALUES (%s, %s, %s, %s, %s, %s, %s)",
                       (account_id, task_id, kind.value, amount, row["balance"], now, note))
