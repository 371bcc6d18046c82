"""Statements written once for both backends, and the few places where their SQL differs.

A statement is written in SQLite's spelling with ``?`` placeholders; ``{markers}`` stand where the
dialects differ. :meth:`Dialect.render` turns it into the backend's text, once per statement text.

The differences, all of them:

* placeholders: ``?`` (sqlite3) against ``%s`` (psycopg);
* row locks: ``FOR UPDATE`` and ``FOR UPDATE SKIP LOCKED`` where several processes write at once
  (PostgreSQL); SQLite has one writer at a time, so it needs none;
* advisory locks (one sweeper at a time; one address's strikes counted one at a time) on PostgreSQL;
* how a submit reads its account's load: SQLite keeps running counts in triggers (its single writer
  makes one counter row free), PostgreSQL counts under the account's row lock (a counter row
  there would queue every process's submits behind one lock).

What both accept alike is written plainly: ``RETURNING``, ``ON CONFLICT``, ``TRUE``/``FALSE``,
``CAST(… AS …)``, JSON kept as TEXT.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Sequence
from typing import Any, Literal, NamedTuple, TypeVar

T = TypeVar("T")
Fetch = Literal["one", "all", "rowcount", "many", "none"]


class Stmt(NamedTuple):  # a tuple, not a dataclass: one is made per statement, on the writer's hot path
    sql: str
    args: Sequence[Any] = ()
    fetch: Fetch = "none"


# The constructors below build each Stmt with tuple.__new__: a NamedTuple's own __new__ is a
# Python function, a second call for every statement a script yields.
_new = tuple.__new__


def one(sql: str, *args: Any) -> Stmt:
    return _new(Stmt, (sql, args, "one"))


def rows(sql: str, *args: Any) -> Stmt:
    return _new(Stmt, (sql, args, "all"))


def count(sql: str, *args: Any) -> Stmt:
    """A write whose answer is how many rows it changed."""
    return _new(Stmt, (sql, args, "rowcount"))


def many(sql: str, rows_of_args: Sequence[Sequence[Any]]) -> Stmt:
    """One write for each of ``rows_of_args``, sent as one batch."""
    return _new(Stmt, (sql, rows_of_args, "many"))


def run(sql: str, *args: Any) -> Stmt:
    return _new(Stmt, (sql, args, "none"))


def marks(n: int) -> str:
    """``?, ?, ?`` for an ``IN (…)`` list of ``n`` values (both backends take it)."""
    return ", ".join("?" * n)


# A transaction, as a generator: it yields statements and receives each one's answer (a row or
# None, a list of rows, or a row count), and returns its result. A backend drives it inside one
# transaction of its own; written this way, every step is the same code on both backends.
Script = Generator[Stmt, Any, T]


class Dialect:
    """One of the two SQL dialects, :data:`SQLITE` and :data:`POSTGRES`.

    A plain class, not an ``Enum``: a submit asks its dialect twice, and on Python 3.11 an enum
    member costs a Python-level look-up each time it is named (BENCHMARKS.md, "One task lifecycle")."""

    __slots__ = ("name", "row_locks")
    SQLITE: Dialect
    POSTGRES: Dialect

    def __init__(self, name: str, row_locks: bool) -> None:
        self.name = name
        # Whether writers in other processes run at the same time, so rows must be locked.
        self.row_locks = row_locks

    def __repr__(self) -> str:
        return f"Dialect.{self.name.upper()}"

    # One instance per dialect, as an enum's members were: code compares them with ``is``, so a copy
    # or an unpickled one must be the instance itself.
    def __reduce__(self) -> tuple[Callable[[str], Dialect], tuple[str]]:
        return _dialect_named, (self.name,)

    def __copy__(self) -> Dialect:
        return self

    def __deepcopy__(self, memo: dict[int, object]) -> Dialect:
        return self

    def renderer(self) -> Callable[[str], str]:
        """A function from a statement to its text in this dialect, remembering each (statements are
        few and their texts repeat; a backend calls it for every statement it runs)."""
        cache: dict[str, str] = {}

        def render(sql: str) -> str:
            text = cache.get(sql)
            if text is None:
                text = _render(self, sql)
                if len(cache) < _RENDERED_MAX:
                    cache[sql] = text
            return text
        return render


Dialect.SQLITE = Dialect("sqlite", row_locks=False)
Dialect.POSTGRES = Dialect("postgres", row_locks=True)


def _dialect_named(name: str) -> Dialect:
    return Dialect.SQLITE if name == Dialect.SQLITE.name else Dialect.POSTGRES


# Pending-task counts of one account and of the service, with the duplicate check, for a submit.
# SQLite reads the running counts its triggers keep (they may still include tasks past their
# deadline that the sweeper has not settled: ``exact`` says so, and a submit they would refuse
# counts again); PostgreSQL counts live rows after taking the account's row lock.
_LOAD_SQLITE = (
    "SELECT balance, disabled, pending_count AS working, pending_reserved AS reserved,"
    " (SELECT value FROM counters WHERE name = 'pending') AS queued,"
    " EXISTS (SELECT 1 FROM tasks INDEXED BY tasks_account_pending WHERE account_id = accounts.id"
    "         AND fingerprint = ? AND state = 'pending' AND deadline_at > ?) AS duplicate,"
    " FALSE AS exact"
    " FROM accounts WHERE id = ?")
_LOAD_POSTGRES = (
    "SELECT a.balance, a.disabled, COUNT(t.id) AS working, CAST(COALESCE(SUM(t.price), 0) AS BIGINT) AS reserved,"
    " (SELECT COUNT(*) FROM tasks WHERE state = 'pending' AND deadline_at > ?) AS queued,"
    " EXISTS (SELECT 1 FROM tasks WHERE account_id = ? AND fingerprint = ? AND state = 'pending'"
    "         AND deadline_at > ?) AS duplicate,"
    " TRUE AS exact"
    " FROM accounts a LEFT JOIN tasks t ON t.account_id = a.id AND t.state = 'pending' AND t.deadline_at > ?"
    " WHERE a.id = ? GROUP BY a.balance, a.disabled")


def load_statement(dialect: Dialect, account_id: int, fingerprint: str, now: float) -> Stmt:
    if dialect is Dialect.SQLITE:
        return one(_LOAD_SQLITE, fingerprint, now, account_id)
    return one(_LOAD_POSTGRES, now, account_id, fingerprint, now, now, account_id)


_MARKERS = {
    Dialect.SQLITE: {
        "lock": "", "skip_locked": "",
        "migration_lock": "SELECT 1 AS locked",  # BEGIN IMMEDIATE holds the file's write lock already
        "sweep_lock": "SELECT TRUE AS mine",
        "strike_lock": "SELECT ? AS locked",
        # No notices: other processes read the file's data version (capgate.workers.notify).
        "notify_settled": "SELECT ? AS unheard", "notify_queued": "SELECT ? AS unheard",
        "async_commit": "SELECT 1 AS synchronous",  # synchronous=NORMAL in WAL mode already
    },
    Dialect.POSTGRES: {
        "lock": " FOR UPDATE", "skip_locked": " FOR UPDATE SKIP LOCKED",
        # pg_try_advisory_xact_lock keys: "capgate" + a byte, as big-endian 64-bit integers.
        "migration_lock": "SELECT CAST(pg_advisory_xact_lock(7161128471814759681) AS TEXT) AS locked",
        "sweep_lock": "SELECT pg_try_advisory_xact_lock(7161128471814759682) AS mine",
        "strike_lock": "SELECT CAST(pg_advisory_xact_lock(1667330151, hashtext(?)) AS TEXT) AS locked",
        # Delivered to LISTENers when the transaction commits (capgate.workers.notify).
        "notify_settled": "SELECT CAST(pg_notify('capgate_settled', ?) AS TEXT) AS sent",
        "notify_queued": "SELECT CAST(pg_notify('capgate_queued', ?) AS TEXT) AS sent",
        # A submit's commit returns before its WAL reaches the disk (within wal_writer_delay x 3,
        # 0.6 s by default). What a crash of PostgreSQL itself (not of capgate) may then lose is the
        # last moment's submits: tasks not yet charged, that no worker has answered (an answer's
        # commit waits for the disk, and so flushes every submit before it). docs/deploy.md.
        "async_commit": "SET LOCAL synchronous_commit = off",
    },
}


_RENDERED_MAX = 4096  # IN (…) lists give a text per length; beyond this many, render each time


def _render(dialect: Dialect, sql: str) -> str:
    if "{" in sql:
        for name, text in _MARKERS[dialect].items():
            sql = sql.replace("{" + name + "}", text)
    if dialect is Dialect.POSTGRES:
        sql = sql.replace("%", "%%").replace("?", "%s")
    return sql
