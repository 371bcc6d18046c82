"""PostgreSQL backend: many API processes and workers on one database.

The statements are ``scripts.py``'s, the same as SQLite's; what makes them safe for writers in
several processes at once is in ``sql.py``'s PostgreSQL spelling: a submit locks its account's row
(the thread cap, balance and duplicate checks of one account run one at a time across every process),
a claim takes the oldest due task with ``FOR UPDATE SKIP LOCKED`` (two workers never lease the same
task, and neither waits for the other), a task change locks the task's row, and one sweeper runs at a
time (a transaction-level advisory lock; the others skip that round).

Connections come from a ``psycopg_pool.AsyncConnectionPool`` in autocommit mode: reads are single
statements, writes run in explicit transactions, run again from the start when PostgreSQL breaks a
deadlock.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Callable
from typing import Any, ParamSpec, TypeVar

import psycopg
from psycopg import AsyncConnection, errors
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.rows import DictRow, dict_row
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from capgate.store import scripts
from capgate.store.base import Notice, Store, SubmitLimits, SubmitOutcome
from capgate.store.models import Account, NewTask
from capgate.store.schema import SchemaMode, prepare, require_current
from capgate.store.sql import Dialect, Script, Stmt

T = TypeVar("T")
P = ParamSpec("P")
Conn = AsyncConnection[DictRow]
_render = Dialect.POSTGRES.renderer()

TX_RETRIES = 5
SUBMIT_BATCH_MAX = 64  # one account's submits in one transaction, at most
CONNECT_TIMEOUT_S = 15.0
LISTEN_CHANNELS = ("capgate_settled", "capgate_queued")  # sent by scripts.notify_settled / notify_queued
# TCP keepalives on the listener's connection: a listener whose server vanished without a word
# (a machine gone, a cable pulled) notices within about 25 s instead of waiting forever.
LISTEN_KEEPALIVE: dict[str, Any] = {"keepalives": 1, "keepalives_idle": 10, "keepalives_interval": 5,
                                    "keepalives_count": 3}


def redacted(url: str) -> str:
    """The URL without its password, for error messages."""
    try:
        params = conninfo_to_dict(url)
    except Exception:
        return "the configured PostgreSQL URL"
    params.pop("password", None)
    return make_conninfo("", **params)


async def execute(conn: Conn, stmt: Stmt) -> Any:
    """Run one statement; its answer as ``Stmt.fetch`` asks."""
    if stmt.fetch == "many":
        async with conn.cursor() as many:
            await many.executemany(_render(stmt.sql), stmt.args)
        return None
    cur = await conn.execute(_render(stmt.sql), stmt.args)
    if stmt.fetch == "one":
        return await cur.fetchone()
    if stmt.fetch == "all":
        return await cur.fetchall()
    if stmt.fetch == "rowcount":
        return cur.rowcount
    return None


async def drive(conn: Conn, script: Script[T]) -> T:
    """Run a script's statements on ``conn``, in the caller's transaction."""
    try:
        stmt = next(script)
        while True:
            stmt = script.send(await execute(conn, stmt))
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]


class PostgresStore(Store):
    dialect = Dialect.POSTGRES
    has_notices = True

    def __init__(self, url: str, *, min_size: int = 1, max_size: int = 16, schema: SchemaMode = "upgrade",
                 pooled: bool = False, listen_url: str = "") -> None:
        if pooled and not listen_url:  # LISTEN through a transaction pooler hears nothing, and says nothing
            raise ValueError("a pooled PostgreSQL address needs a direct one to LISTEN on")
        self.url = url
        self.listen_url = listen_url or url
        # Behind a transaction pooler a prepared statement may be asked of a server session that never
        # prepared it: psycopg then sends every statement as it is (prepare_threshold None).
        self._connect_kwargs: dict[str, Any] = {"prepare_threshold": None} if pooled else {}
        self.schema_mode = schema
        self.min_size = min_size
        self.max_size = max(max_size, min_size)
        self._pool: AsyncConnectionPool[Conn] | None = None
        # Account id -> submits waiting for the account's batch in flight to commit (group commit).
        self._submits: dict[int, list[tuple[Account, NewTask, float, asyncio.Future[SubmitOutcome]]]] = {}
        self._batches: set[asyncio.Task[None]] = set()

    # ------------------------------------------------------------------------------------ plumbing

    async def open(self) -> None:
        # The schema on a connection of its own first (schema.prepare): a server that cannot be reached fails here at
        # once, with libpq's reason, instead of as a pool timeout.
        try:
            conn = await AsyncConnection.connect(self.url, autocommit=True, row_factory=dict_row,
                                                 connect_timeout=int(CONNECT_TIMEOUT_S), **self._connect_kwargs)
        except psycopg.OperationalError as exc:
            reason = " ".join(str(exc).split()) or type(exc).__name__
            raise ConnectionError(f"cannot connect to PostgreSQL at {redacted(self.url)}: {reason}") from None
        async with conn:
            async with conn.transaction():
                self.schema_found, now = await drive(conn, prepare(Dialect.POSTGRES, self.schema_mode))
            if self.schema_mode != "inspect":
                require_current(now)
        pool: AsyncConnectionPool[Conn] = AsyncConnectionPool(
            self.url, connection_class=AsyncConnection[DictRow], min_size=self.min_size,
            max_size=self.max_size, open=False, name="capgate",
            kwargs={"autocommit": True, "row_factory": dict_row, **self._connect_kwargs})
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

    async def _transact(self, script: Callable[P, Script[T]], *args: P.args, **kwargs: P.kwargs) -> T:
        for attempt in range(TX_RETRIES):
            try:
                async with self._get_pool().connection() as conn, conn.transaction():
                    return await drive(conn, script(*args, **kwargs))
            except (errors.DeadlockDetected, errors.SerializationFailure):
                if attempt == TX_RETRIES - 1:
                    raise
                await asyncio.sleep(random.uniform(0.005, 0.05) * (attempt + 1))
        raise AssertionError("unreachable")  # pragma: no cover

    async def _read(self, stmt: Stmt) -> Any:
        async with self._get_pool().connection() as conn:
            return await execute(conn, stmt)

    # ------------------------------------------------------------------------------------ group commit

    async def submit(self, account: Account, task: NewTask, now: float, limits: SubmitLimits) -> SubmitOutcome:
        """A submit goes at once when none of its account's is in flight; otherwise it waits for that
        one's commit and goes in the next batch, with every other that queued meanwhile (as SQLite's
        writer does). An account's submits are one after the other anyway (its row lock): batching
        them costs no waiting that the lock would not have cost."""
        queued = self._submits.get(account.id)
        if queued is not None:
            future: asyncio.Future[SubmitOutcome] = asyncio.get_running_loop().create_future()
            queued.append((account, task, now, future))
            return await future
        self._submits[account.id] = []
        try:
            return (await self._submit_batch(account, [(task, now)], limits))[0]
        finally:
            self._next_batch(account.id, limits)

    async def _submit_batch(self, account: Account, tasks: list[tuple[NewTask, float]], limits: SubmitLimits,
                            ) -> list[SubmitOutcome]:
        results = await self._transact(scripts.submit_many, self.dialect, account, tasks, limits.max_pending,
                                       limits.thread_cap_code)
        return [SubmitOutcome(code=r) if isinstance(r, str) else SubmitOutcome(task_id=r) for r in results]

    def _next_batch(self, account_id: int, limits: SubmitLimits) -> None:
        queued = self._submits.get(account_id)
        if not queued:
            self._submits.pop(account_id, None)
            return
        batch, self._submits[account_id] = queued[:SUBMIT_BATCH_MAX], queued[SUBMIT_BATCH_MAX:]
        running = asyncio.get_running_loop().create_task(self._run_batch(account_id, batch, limits))
        self._batches.add(running)
        running.add_done_callback(self._batches.discard)

    async def _run_batch(self, account_id: int,
                         batch: list[tuple[Account, NewTask, float, asyncio.Future[SubmitOutcome]]],
                         limits: SubmitLimits) -> None:
        try:
            outcomes = await self._submit_batch(batch[-1][0], [(task, now) for _, task, now, _ in batch], limits)
        except Exception as exc:  # every submit of the batch gets the failure
            for *_, future in batch:
                if not future.done():
                    future.set_exception(exc)
        except BaseException:  # cancelled (the store closes): so are the submits waiting on it
            for *_, future in batch:
                future.cancel()
            raise
        else:
            for (*_, future), outcome in zip(batch, outcomes, strict=True):
                if not future.done():  # the caller went away; the task stands regardless
                    future.set_result(outcome)
        finally:
            self._next_batch(account_id, limits)

    async def notices(self) -> AsyncIterator[Notice]:
        # A connection of its own, outside the pool: it sits in LISTEN for the process's life.
        conn = await AsyncConnection.connect(self.listen_url, autocommit=True,
                                             connect_timeout=int(CONNECT_TIMEOUT_S),
                                             application_name="capgate-listen", **LISTEN_KEEPALIVE)
        async with conn:
            for channel in LISTEN_CHANNELS:
                await conn.execute(f"LISTEN {channel}")
            yield Notice(ready=True)
            async for notice in conn.notifies():
                if notice.channel == LISTEN_CHANNELS[0]:
                    yield Notice(settled=tuple(int(part) for part in notice.payload.split(",") if part.isdigit()))
                else:
                    yield Notice(queued=True)
        raise ConnectionError("the listening connection closed")
