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
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

import psycopg
from psycopg import AsyncConnection, errors
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.rows import DictRow, dict_row
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from capgate.store.base import Store
from capgate.store.schema import migrate
from capgate.store.sql import Dialect, Script, Stmt

T = TypeVar("T")
P = ParamSpec("P")
Conn = AsyncConnection[DictRow]
_render = Dialect.POSTGRES.renderer()

TX_RETRIES = 5
CONNECT_TIMEOUT_S = 15.0


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
            conn = await AsyncConnection.connect(self.url, autocommit=True, row_factory=dict_row,
                                                 connect_timeout=int(CONNECT_TIMEOUT_S))
        except psycopg.OperationalError as exc:
            reason = " ".join(str(exc).split()) or type(exc).__name__
            raise ConnectionError(f"cannot connect to PostgreSQL at {redacted(self.url)}: {reason}") from None
        async with conn, conn.transaction():
            await drive(conn, migrate(Dialect.POSTGRES))
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
