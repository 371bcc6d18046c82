"""SQLite backend: one file, WAL mode, one writer thread, reads on the caller's thread.

Reads are single indexed look-ups that take microseconds and never wait for a writer in WAL mode,
so they run inline; a hop to a thread would cost more than the query. Every write runs on one
dedicated thread in ``BEGIN IMMEDIATE`` transactions, so a ``busy_timeout`` wait for another
process never blocks the event loop.
"""

from __future__ import annotations

import asyncio
import collections
import json
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from capgate.protocol.codes import C
from capgate.store.base import ReportPolicy, Solve, Store, SubmitLimits, SubmitOutcome
from capgate.store.checkpoint import WRITER_AUTOCHECKPOINT_PAGES, Checkpointer
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
from capgate.store.presence import merge_serving, served_since
from capgate.store.schema import SQLITE_MIGRATIONS

T = TypeVar("T")
GROUP_COMMIT_MAX = 128


class SQLiteStore(Store):
    def __init__(self, path: Path) -> None:
        self.path = path
        self._reader: sqlite3.Connection | None = None
        self._writer: sqlite3.Connection | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._reader_lock = threading.Lock()
        self._queue: collections.deque[tuple[Callable[[sqlite3.Connection], Any], asyncio.Future[Any],
                                             asyncio.AbstractEventLoop]] = collections.deque()
        self._drain_scheduled = False
        self._checkpointer = Checkpointer(self._connect)

    # ------------------------------------------------------------------------------------ plumbing

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=10.0)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("PRAGMA busy_timeout=10000")
        return conn

    async def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="capgate-sqlite-writer")
        self._writer = await asyncio.get_running_loop().run_in_executor(self._executor, self._connect)
        self._writer.execute(f"PRAGMA wal_autocheckpoint={WRITER_AUTOCHECKPOINT_PAGES}")
        await self._run(self._migrate)
        self._reader = self._connect()
        self._checkpointer.start()

    async def close(self) -> None:
        self._checkpointer.stop()
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        if self._writer is not None and self._executor is not None:
            writer = self._writer
            await asyncio.get_running_loop().run_in_executor(self._executor, writer.close)
            self._writer = None
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None

    def _migrate(self, conn: sqlite3.Connection) -> None:
        # The version is read inside the write transaction: two processes opening a new file at
        # once must not both apply the same migration.
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            current = conn.execute("SELECT MAX(version) AS v FROM schema_version").fetchone()["v"] or 0
            for version, script in enumerate(SQLITE_MIGRATIONS, start=1):
                if version > current:
                    for statement in _statements(script):
                        conn.execute(statement)
                    conn.execute("INSERT INTO schema_version VALUES (?)", (version,))
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        assert self._executor is not None and self._writer is not None, "store is not open"
        writer = self._writer
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, writer)

    async def _tx(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` in a write transaction; resolves after the commit.

        Group commit: jobs that queue up while the writer is busy share one transaction, each in a
        savepoint of its own (a job that raises rolls back alone). A commit is most of a small
        write's cost, so a burst of submits costs one commit per batch, not per submit.
        """
        assert self._executor is not None and self._writer is not None, "store is not open"
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._queue.append((fn, future, loop))
        if not self._drain_scheduled:
            self._drain_scheduled = True
            loop.run_in_executor(self._executor, self._drain)
        result: T = await future
        return result

    def _drain(self) -> None:
        """On the writer thread: commit everything queued, in batches."""
        self._drain_scheduled = False  # jobs queued from now on schedule another drain
        conn = self._writer
        assert conn is not None
        while self._queue:
            batch: list[tuple[Callable[[sqlite3.Connection], Any], asyncio.Future[Any], asyncio.AbstractEventLoop]] = []
            while self._queue and len(batch) < GROUP_COMMIT_MAX:
                batch.append(self._queue.popleft())
            outcomes: list[tuple[bool, Any]] = []
            try:
                conn.execute("BEGIN IMMEDIATE")
                for fn, _, _ in batch:
                    conn.execute("SAVEPOINT job")
                    try:
                        outcomes.append((True, fn(conn)))
                        conn.execute("RELEASE job")
                    except Exception as exc:
                        conn.execute("ROLLBACK TO job")
                        conn.execute("RELEASE job")
                        outcomes.append((False, exc))
                conn.execute("COMMIT")
            except Exception as exc:  # BEGIN or COMMIT failed: nothing of the batch is written
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                outcomes = [(False, exc)] * len(batch)
            by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], bool, Any]]] = {}
            for (_, future, loop), (ok, value) in zip(batch, outcomes, strict=True):
                by_loop.setdefault(loop, []).append((future, ok, value))
            for loop, items in by_loop.items():
                loop.call_soon_threadsafe(_resolve, items)

    def _read(self, sql: str, args: Sequence[Any] = ()) -> list[sqlite3.Row]:
        assert self._reader is not None, "store is not open"
        with self._reader_lock:
            return self._reader.execute(sql, args).fetchall()

    def _read_one(self, sql: str, args: Sequence[Any] = ()) -> sqlite3.Row | None:
        rows = self._read(sql, args)
        return rows[0] if rows else None

    # ------------------------------------------------------------------------------------ accounts

    async def create_account(self, key_hash: str, key_prefix: str, threads: int, balance: int,
                             sandbox: bool) -> Account:
        def run(conn: sqlite3.Connection) -> Account:
            now = time.time()
            cur = conn.execute(
                "INSERT INTO accounts (key_hash, key_prefix, threads, balance, disabled, sandbox, created_at,"
                " settings) VALUES (?, ?, ?, 0, 0, ?, ?, '{}')",
                (key_hash, key_prefix, threads, int(sandbox), now))
            account_id = int(cur.lastrowid or 0)
            if balance:
                _ledger(conn, account_id, None, LedgerKind.TOPUP, balance, now, "initial balance")
            return Account.from_row(conn.execute("SELECT * FROM accounts WHERE id = ?", (account_id,)).fetchone())
        return await self._tx(run)

    async def account_by_key_hash(self, key_hash: str) -> Account | None:
        row = self._read_one("SELECT * FROM accounts WHERE key_hash = ?", (key_hash,))
        return Account.from_row(row) if row else None

    async def account_by_prefix(self, prefix: str) -> list[Account]:
        rows = self._read("SELECT * FROM accounts WHERE key_prefix LIKE ? ORDER BY id",
                          (prefix.replace("%", "").replace("_", "") + "%",))
        return [Account.from_row(r) for r in rows]

    async def list_accounts(self) -> list[Account]:
        return [Account.from_row(r) for r in self._read("SELECT * FROM accounts ORDER BY id")]

    async def topup(self, account_id: int, amount: int, note: str) -> Account:
        def run(conn: sqlite3.Connection) -> Account:
            _ledger(conn, account_id, None, LedgerKind.TOPUP, amount, time.time(), note)
            return Account.from_row(conn.execute("SELECT * FROM accounts WHERE id = ?", (account_id,)).fetchone())
        return await self._tx(run)

    async def update_account(self, account_id: int, *, disabled: bool | None = None,
                             threads: int | None = None, settings: dict[str, object] | None = None,
                             ) -> Account:
        def run(conn: sqlite3.Connection) -> Account:
            if disabled is not None:
                conn.execute("UPDATE accounts SET disabled = ? WHERE id = ?", (int(disabled), account_id))
            if threads is not None:
                conn.execute("UPDATE accounts SET threads = ? WHERE id = ?", (threads, account_id))
            if settings is not None:
                row = conn.execute("SELECT settings FROM accounts WHERE id = ?", (account_id,)).fetchone()
                merged = {**json.loads(row["settings"]), **settings}
                conn.execute("UPDATE accounts SET settings = ? WHERE id = ?", (json.dumps(merged), account_id))
            return Account.from_row(conn.execute("SELECT * FROM accounts WHERE id = ?", (account_id,)).fetchone())
        return await self._tx(run)

    async def ledger(self, account_id: int, limit: int = 100) -> list[LedgerEntry]:
        rows = self._read("SELECT * FROM ledger WHERE account_id = ? ORDER BY id DESC LIMIT ?",
                          (account_id, limit))
        return [LedgerEntry.from_row(r) for r in rows]

    # ------------------------------------------------------------------------------------ tasks

    async def submit(self, account: Account, task: NewTask, now: float, limits: SubmitLimits,
                     ) -> SubmitOutcome:
        def run(conn: sqlite3.Connection) -> SubmitOutcome:
            # The running counts include tasks past their deadline that the sweeper has not settled
            # yet (at most a second's worth); only when they say "full" is the exact count taken.
            # One statement for the account's counts, the service's count and the duplicate check:
            # this runs for every submit on the writer thread, which holds the GIL between steps.
            row = conn.execute(
                "SELECT balance, pending_count, pending_reserved,"
                " (SELECT value FROM counters WHERE name = 'pending') AS queued,"
                " EXISTS (SELECT 1 FROM tasks INDEXED BY tasks_account_pending WHERE account_id = accounts.id"
                "         AND fingerprint = ? AND state = 'pending' AND deadline_at > ?) AS duplicate"
                " FROM accounts WHERE id = ?", (task.fingerprint, now, account.id)).fetchone()
            count, reserved = row["pending_count"], row["pending_reserved"]
            short = task.price > 0 and row["balance"] - reserved < task.price
            if count >= account.threads or short:
                live = conn.execute(
                    "SELECT COUNT(*) AS n, COALESCE(SUM(price), 0) AS reserved FROM tasks"
                    " WHERE account_id = ? AND state = 'pending' AND deadline_at > ?", (account.id, now)).fetchone()
                count, reserved = live["n"], live["reserved"]
            if count >= account.threads:
                return SubmitOutcome(code=limits.thread_cap_code)
            if task.price > 0 and row["balance"] - reserved < task.price:
                return SubmitOutcome(code=C.ZERO_BALANCE)
            if row["duplicate"]:
                return SubmitOutcome(code=C.BAD_DUPLICATES)
            queued = row["queued"]
            if queued >= limits.max_pending:
                queued = conn.execute("SELECT COUNT(*) AS n FROM tasks WHERE state = 'pending'"
                                      " AND deadline_at > ?", (now,)).fetchone()["n"]
                if queued >= limits.max_pending:
                    return SubmitOutcome(code=C.NO_SLOT_AVAILABLE)
            for _ in range(8):
                task_id = new_task_id()
                try:
                    conn.execute(
                        "INSERT INTO tasks (id, account_id, method, params, fingerprint, state, pool, price,"
                        " created_at, deadline_at, not_before, attempts, pingback)"
                        " VALUES (?, ?, ?, ?, ?, 'pending', ?, ?, ?, ?, ?, 0, ?)",
                        (task_id, account.id, task.method, json.dumps(task.params, ensure_ascii=False),
                         task.fingerprint, task.pool.value, task.price, now, now + task.deadline_s,
                         task.not_before or now, task.pingback))
                    break
                except sqlite3.IntegrityError:
                    continue
            else:  # pragma: no cover - 8 collisions in a 9e10 space
                return SubmitOutcome(code=C.SERVER_ERROR)
            conn.executemany("INSERT INTO task_blobs (task_id, name, data) VALUES (?, ?, ?)",
                             [(task_id, name, data) for name, data in task.blobs.items()])
            return SubmitOutcome(task_id=task_id)
        return await self._tx(run)

    async def get_task(self, account_id: int, task_id: int) -> Task | None:
        row = self._read_one("SELECT * FROM tasks WHERE id = ? AND account_id = ?", (task_id, account_id))
        return Task.from_row(row) if row else None

    async def get_tasks(self, account_id: int, task_ids: Sequence[int]) -> dict[int, Task]:
        if not task_ids:
            return {}
        marks = ",".join("?" * len(task_ids))
        rows = self._read(f"SELECT * FROM tasks WHERE account_id = ? AND id IN ({marks})",
                          (account_id, *task_ids))
        return {int(r["id"]): Task.from_row(r) for r in rows}

    async def outcomes(self, account_id: int, task_ids: Sequence[int]) -> dict[int, TaskOutcome]:
        if len(task_ids) == 1:
            rows = self._read(f"SELECT {TaskOutcome.COLUMNS} FROM tasks WHERE id = ? AND account_id = ?",
                              (task_ids[0], account_id))
        else:
            marks = ",".join("?" * len(task_ids))
            rows = self._read(f"SELECT {TaskOutcome.COLUMNS} FROM tasks WHERE account_id = ? AND id IN ({marks})",
                              (account_id, *task_ids)) if task_ids else []
        return {int(r[0]): TaskOutcome.from_row(r) for r in rows}

    async def working_threads(self, account_id: int, now: float) -> int:
        row = self._read_one("SELECT COUNT(*) AS n FROM tasks WHERE account_id = ? AND state = 'pending'"
                             " AND deadline_at > ?", (account_id, now))
        return int(row["n"]) if row else 0

    async def report(self, account_id: int, task_id: int, good: bool, now: float,
                     policy: ReportPolicy) -> str | None:
        def run(conn: sqlite3.Connection) -> str | None:
            row = conn.execute("SELECT * FROM tasks WHERE id = ? AND account_id = ?",
                               (task_id, account_id)).fetchone()
            if row is None:
                return C.WRONG_CAPTCHA_ID
            task = Task.from_row(row)
            if task.report is not None:
                return C.DUPLICATE_REPORT
            if task.state is not TaskState.SOLVED or task.settled_at is None:
                return C.REPORT_NOT_RECORDED
            if now - task.settled_at > policy.window_s:
                return C.REPORT_NOT_RECORDED
            conn.execute("UPDATE tasks SET report = ? WHERE id = ?", ("good" if good else "bad", task_id))
            if not good and policy.refund_bad and task.price > 0:
                _ledger(conn, account_id, task_id, LedgerKind.REFUND, task.price, now, "reportbad")
            return None
        return await self._tx(run)

    # ------------------------------------------------------------------------------------ workers

    def _queue_filter(self, pools: Sequence[str], methods: Sequence[str] | None, now: float,
                      max_attempts: int) -> tuple[str, list[Any]]:
        where = (f"state = 'pending' AND pool IN ({','.join('?' * len(pools))})"
                 " AND not_before <= ? AND (lease_until IS NULL OR lease_until < ?) AND deadline_at > ?"
                 " AND attempts < ?")
        args: list[Any] = [*pools, now, now, now, max_attempts]
        if methods is not None:
            where += f" AND method IN ({','.join('?' * len(methods))})"
            args.extend(methods)
        return where, args

    async def leased_task(self, task_id: int, lease: str) -> Task | None:
        row = self._read_one("SELECT * FROM tasks WHERE id = ? AND state = 'pending' AND lease_owner = ?",
                             (task_id, lease))
        return Task.from_row(row) if row else None

    async def has_claimable(self, pools: Sequence[str], methods: Sequence[str] | None, now: float,
                            max_attempts: int) -> bool:
        if methods is not None and not methods:
            return False
        where, args = self._queue_filter(pools, methods, now, max_attempts)
        return self._read_one(f"SELECT 1 FROM tasks WHERE {where} LIMIT 1", args) is not None

    async def claim(self, pools: Sequence[str], methods: Sequence[str] | None, lease: str,
                    lease_s: float, now: float, max_attempts: int) -> Task | None:
        if methods is not None and not methods:
            return None
        where, args = self._queue_filter(pools, methods, now, max_attempts)

        def run(conn: sqlite3.Connection) -> Task | None:
            row = conn.execute(f"SELECT id FROM tasks WHERE {where} ORDER BY not_before, created_at LIMIT 1",
                               args).fetchone()
            if row is None:
                return None
            claimed = conn.execute(
                "UPDATE tasks SET lease_owner = ?, lease_until = ?, attempts = attempts + 1"
                " WHERE id = ? RETURNING *", (lease, now + lease_s, row["id"])).fetchone()
            return Task.from_row(claimed)
        return await self._tx(run)

    async def settle_due(self, pool: str, now: float, limit: int, solve: Solve) -> list[int]:
        def run(conn: sqlite3.Connection) -> list[int]:
            rows = conn.execute(
                "SELECT * FROM tasks WHERE state = 'pending' AND pool = ? AND not_before <= ?"
                " AND (lease_until IS NULL OR lease_until < ?) AND deadline_at > ?"
                " ORDER BY not_before, created_at LIMIT ?", (pool, now, now, now, limit)).fetchall()
            settled = []
            for row in rows:
                task = Task.from_row(row)
                answer, error = solve(task)
                if answer is not None:
                    conn.execute("UPDATE tasks SET state = 'solved', answer = ?, confidence = 1.0, settled_at = ?,"
                                 " attempts = attempts + 1 WHERE id = ?",
                                 (json.dumps(answer, ensure_ascii=False), now, task.id))
                    if task.price > 0:
                        _ledger(conn, task.account_id, task.id, LedgerKind.CHARGE, -task.price, now, "solved")
                else:
                    conn.execute("UPDATE tasks SET state = 'unsolvable', error = ?, settled_at = ?,"
                                 " attempts = attempts + 1 WHERE id = ?", (error or C.CAPTCHA_UNSOLVABLE, now, task.id))
                settled.append(task.id)
            return settled
        return await self._tx(run)

    async def blobs(self, task_id: int) -> dict[str, bytes]:
        rows = self._read("SELECT name, data FROM task_blobs WHERE task_id = ?", (task_id,))
        return {r["name"]: bytes(r["data"]) for r in rows}

    async def heartbeat(self, task_id: int, worker: str, lease_s: float, now: float) -> bool:
        def run(conn: sqlite3.Connection) -> bool:
            cur = conn.execute(
                "UPDATE tasks SET lease_until = ? WHERE id = ? AND state = 'pending' AND lease_owner = ?"
                " AND lease_until >= ? AND deadline_at > ?", (now + lease_s, task_id, worker, now, now))
            return cur.rowcount == 1
        return await self._tx(run)

    async def complete(self, task_id: int, worker: str, answer: dict[str, object],
                       confidence: float | None, now: float) -> bool:
        def run(conn: sqlite3.Connection) -> bool:
            row = conn.execute(
                "UPDATE tasks SET state = 'solved', answer = ?, confidence = ?, settled_at = ?,"
                " lease_until = NULL WHERE id = ? AND state = 'pending' AND lease_owner = ?"
                " AND lease_until >= ? AND deadline_at > ? RETURNING account_id, price",
                (json.dumps(answer, ensure_ascii=False), confidence, now, task_id, worker, now, now),
            ).fetchone()
            if row is None:
                return False
            if row["price"] > 0:
                _ledger(conn, row["account_id"], task_id, LedgerKind.CHARGE, -row["price"], now, "solved")
            return True
        return await self._tx(run)

    async def fail(self, task_id: int, worker: str, error: str | None, max_attempts: int,
                   now: float, retry_pool: str | None = None) -> bool:
        def run(conn: sqlite3.Connection) -> bool:
            row = conn.execute("SELECT attempts FROM tasks WHERE id = ? AND state = 'pending'"
                               " AND lease_owner = ? AND lease_until >= ?", (task_id, worker, now)).fetchone()
            if row is None:
                return False
            if row["attempts"] >= max_attempts:
                conn.execute("UPDATE tasks SET state = 'unsolvable', error = ?, settled_at = ?,"
                             " lease_until = NULL WHERE id = ?", (error or C.CAPTCHA_UNSOLVABLE, now, task_id))
            else:
                conn.execute("UPDATE tasks SET lease_owner = NULL, lease_until = NULL,"
                             " pool = COALESCE(?, pool) WHERE id = ?", (retry_pool, task_id))
            return True
        return await self._tx(run)

    async def sweep(self, now: float, retention_s: float, max_attempts: int) -> list[int]:
        def run(conn: sqlite3.Connection) -> list[int]:
            overdue = conn.execute(
                "UPDATE tasks SET state = 'unsolvable', error = ?, lease_until = NULL,"
                " settled_at = CASE WHEN deadline_at <= ? THEN deadline_at ELSE ? END"
                " WHERE state = 'pending' AND (deadline_at <= ?"
                " OR (attempts >= ? AND (lease_until IS NULL OR lease_until < ?))) RETURNING id",
                (C.CAPTCHA_UNSOLVABLE, now, now, now, max_attempts, now)).fetchall()
            cutoff = now - retention_s
            conn.execute("DELETE FROM task_blobs WHERE task_id IN (SELECT id FROM tasks"
                         " WHERE state IN ('solved', 'unsolvable') AND settled_at < ?)", (cutoff,))
            # Expired rows stay (ledger rows point at them) but lose their parameters and answer.
            conn.execute("UPDATE tasks SET state = 'expired', params = '{}', answer = NULL"
                         " WHERE state IN ('solved', 'unsolvable') AND settled_at < ?", (cutoff,))
            conn.execute("DELETE FROM ip_strikes WHERE at < ?", (now - 3600,))
            conn.execute("DELETE FROM ip_bans WHERE until < ?", (now,))
            return [int(r["id"]) for r in overdue]
        return await self._tx(run)

    async def get_account(self, account_id: int) -> Account | None:
        row = self._read_one("SELECT * FROM accounts WHERE id = ?", (account_id,))
        return Account.from_row(row) if row else None

    async def due_pingbacks(self, now: float, hold_s: float, limit: int) -> list[Task]:
        def run(conn: sqlite3.Connection) -> list[Task]:
            rows = conn.execute(
                "UPDATE tasks SET pingback_next = ? WHERE id IN (SELECT id FROM tasks"
                " WHERE pingback IS NOT NULL AND pingback_done = 0 AND state IN ('solved', 'unsolvable')"
                " AND COALESCE(pingback_next, 0) <= ? LIMIT ?) RETURNING *",
                (now + hold_s, now, limit)).fetchall()
            return [Task.from_row(r) for r in rows]
        return await self._tx(run)

    async def pingback_done(self, task_id: int, delivered: bool, next_at: float | None) -> None:
        def run(conn: sqlite3.Connection) -> None:
            if delivered or next_at is None:
                conn.execute("UPDATE tasks SET pingback_done = ?, pingback_attempts = pingback_attempts + 1"
                             " WHERE id = ?", (1 if delivered else -1, task_id))
            else:
                conn.execute("UPDATE tasks SET pingback_next = ?, pingback_attempts = pingback_attempts + 1"
                             " WHERE id = ?", (next_at, task_id))
        await self._tx(run)

    async def pending_methods(self, now: float) -> dict[str, int]:
        rows = self._read("SELECT method, COUNT(*) AS n FROM tasks WHERE state = 'pending'"
                          " AND deadline_at > ? GROUP BY method", (now,))
        return {r["method"]: int(r["n"]) for r in rows}

    # ------------------------------------------------------------------------------------ addresses

    async def ip_banned(self, ip: str, now: float) -> bool:
        return self._read_one("SELECT 1 FROM ip_bans WHERE ip = ? AND until > ?", (ip, now)) is not None

    async def strike(self, ip: str, now: float, window_s: float, threshold: int, ban_s: float) -> bool:
        def run(conn: sqlite3.Connection) -> bool:
            conn.execute("INSERT INTO ip_strikes (ip, at) VALUES (?, ?)", (ip, now))
            count = conn.execute("SELECT COUNT(*) AS n FROM ip_strikes WHERE ip = ? AND at > ?",
                                 (ip, now - window_s)).fetchone()["n"]
            if count >= threshold:
                conn.execute("INSERT INTO ip_bans (ip, until) VALUES (?, ?) ON CONFLICT (ip)"
                             " DO UPDATE SET until = excluded.until", (ip, now + ban_s))
                conn.execute("DELETE FROM ip_strikes WHERE ip = ?", (ip,))
                return True
            return False
        return await self._tx(run)

    # ------------------------------------------------------------------------------------ pingback

    async def pingback_hosts(self, account_id: int) -> list[str]:
        rows = self._read("SELECT host FROM pingback_hosts WHERE account_id = ? ORDER BY host", (account_id,))
        return [r["host"] for r in rows]

    async def add_pingback_host(self, account_id: int, host: str) -> None:
        await self._tx(lambda conn: conn.execute(
            "INSERT OR IGNORE INTO pingback_hosts (account_id, host) VALUES (?, ?)", (account_id, host)))

    async def del_pingback_host(self, account_id: int, host: str | None) -> None:
        if host is None:
            await self._tx(lambda conn: conn.execute(
                "DELETE FROM pingback_hosts WHERE account_id = ?", (account_id,)))
        else:
            await self._tx(lambda conn: conn.execute(
                "DELETE FROM pingback_hosts WHERE account_id = ? AND host = ?", (account_id, host)))

    # ------------------------------------------------------------------------------------ workers

    async def create_worker(self, name: str, token_hash: str, token_prefix: str, methods: Sequence[str],
                            human: bool) -> WorkerToken:
        def run(conn: sqlite3.Connection) -> WorkerToken:
            cur = conn.execute(
                "INSERT INTO workers (name, token_hash, token_prefix, methods, human, disabled, created_at)"
                " VALUES (?, ?, ?, ?, ?, 0, ?)",
                (name, token_hash, token_prefix, json.dumps(list(methods)), int(human), time.time()))
            return WorkerToken.from_row(conn.execute("SELECT * FROM workers WHERE id = ?", (cur.lastrowid,)).fetchone())
        return await self._tx(run)

    async def worker_by_token_hash(self, token_hash: str) -> WorkerToken | None:
        row = self._read_one("SELECT * FROM workers WHERE token_hash = ?", (token_hash,))
        return WorkerToken.from_row(row) if row else None

    async def list_workers(self) -> list[WorkerToken]:
        return [WorkerToken.from_row(r) for r in self._read("SELECT * FROM workers ORDER BY id")]

    async def worker_seen(self, worker_id: int, methods: Sequence[str], now: float) -> None:
        def run(conn: sqlite3.Connection) -> None:
            row = conn.execute("SELECT serving FROM workers WHERE id = ?", (worker_id,)).fetchone()
            serving = merge_serving(row["serving"] if row else None, methods, now)
            conn.execute("UPDATE workers SET last_seen = ?, serving = ? WHERE id = ?", (now, serving, worker_id))
        await self._tx(run)

    async def active_worker_methods(self, since: float) -> set[str]:
        rows = self._read("SELECT serving FROM workers WHERE disabled = 0 AND last_seen >= ?", (since,))
        served: set[str] = set()
        for row in rows:
            served.update(served_since(row["serving"], since))
        return served


def _resolve(items: list[tuple[asyncio.Future[Any], bool, Any]]) -> None:
    for future, ok, value in items:
        if future.done():  # the caller went away (cancelled); the write stands regardless
            continue
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)


def _statements(script: str) -> list[str]:
    """Split a migration into statements (executescript would commit the open transaction)."""
    statements, current = [], ""
    for line in script.splitlines(keepends=True):
        current += line
        if sqlite3.complete_statement(current):
            statements.append(current.strip())
            current = ""
    return [s for s in statements if s]


def _ledger(conn: sqlite3.Connection, account_id: int, task_id: int | None, kind: LedgerKind, amount: int,
            now: float, note: str) -> None:
    """Move money and write the row that says why, in the caller's transaction."""
    row = conn.execute("UPDATE accounts SET balance = balance + ? WHERE id = ? RETURNING balance",
                       (amount, account_id)).fetchone()
    conn.execute("INSERT INTO ledger (account_id, task_id, kind, amount, balance_after, created_at, note)"
                 " VALUES (?, ?, ?, ?, ?, ?, ?)", (account_id, task_id, kind.value, amount, row["balance"], now, note))
