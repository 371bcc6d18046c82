"""SQLite backend: one file, WAL mode, one writer thread, reads on the caller's thread.

Reads are single indexed look-ups that take microseconds and never wait for a writer in WAL mode,
so they run inline; a hop to a thread would cost more than the query. Every write runs on one
dedicated thread in ``BEGIN IMMEDIATE`` transactions, so a ``busy_timeout`` wait for another
process never blocks the event loop. What the statements are is ``scripts.py``'s business.
"""

from __future__ import annotations

import asyncio
import collections
import sqlite3
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from capgate.store.base import Store
from capgate.store.checkpoint import WRITER_AUTOCHECKPOINT_PAGES, Checkpointer
from capgate.store.schema import SchemaMode, prepare, require_current
from capgate.store.sql import Dialect, Script, Stmt

T = TypeVar("T")
P = ParamSpec("P")
GROUP_COMMIT_MAX = 128
_render = Dialect.SQLITE.renderer()


def execute(conn: sqlite3.Connection, stmt: Stmt) -> Any:
    """Run one statement; its answer as ``Stmt.fetch`` asks."""
    sql, args, fetch = stmt
    if fetch == "many":
        conn.executemany(_render(sql), args)
        return None
    cur = conn.execute(_render(sql), args)
    if fetch == "one":
        found = cur.fetchall()  # to the end: a RETURNING statement finishes only when read out
        return found[0] if found else None
    if fetch == "all":
        return cur.fetchall()
    if fetch == "rowcount":
        return cur.rowcount
    return None


def drive(conn: sqlite3.Connection, script: Script[T]) -> T:
    """Run a script's statements on ``conn``, in the caller's transaction."""
    send = script.send
    try:
        stmt = next(script)
        while True:
            stmt = send(execute(conn, stmt))
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]


class SQLiteStore(Store):
    dialect = Dialect.SQLITE

    def __init__(self, path: Path, *, schema: SchemaMode = "upgrade") -> None:
        self.path = path
        self.schema_mode = schema
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
        try:
            self.schema_found, now = await self._run(self._migrate)
            if self.schema_mode != "inspect":
                require_current(now)
        except BaseException:
            await self.close()
            raise
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

    def _migrate(self, conn: sqlite3.Connection) -> tuple[int, int]:
        # The version is read inside the write transaction: two processes opening a new file at
        # once must not both apply the same migration.
        conn.execute("BEGIN IMMEDIATE")
        try:
            versions = drive(conn, prepare(Dialect.SQLITE, self.schema_mode))
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        return versions

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

    def _transact(self, script: Callable[P, Script[T]], *args: P.args, **kwargs: P.kwargs) -> Awaitable[T]:
        # Not a coroutine of its own: the caller awaits _tx's, one frame fewer on every write.
        return self._tx(lambda conn: drive(conn, script(*args, **kwargs)))

    async def _read(self, stmt: Stmt) -> Any:
        assert self._reader is not None, "store is not open"
        with self._reader_lock:
            return execute(self._reader, stmt)

    async def data_version(self) -> int:
        # The reader's view of the file: it changes on any other connection's commit, this
        # process's writer's included (a wasted look, never a missed one).
        assert self._reader is not None, "store is not open"
        with self._reader_lock:
            return int(self._reader.execute("PRAGMA data_version").fetchone()[0])


def _resolve(items: list[tuple[asyncio.Future[Any], bool, Any]]) -> None:
    for future, ok, value in items:
        if future.done():  # the caller went away (cancelled); the write stands regardless
            continue
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)
