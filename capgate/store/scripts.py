"""Every statement and transaction of the store, written once for both backends.

A transaction is a generator (:data:`capgate.store.sql.Script`): it yields statements, gets each
one's answer back and returns its result; the backend runs it inside one transaction of its own.
Reads that need no transaction are plain :class:`~capgate.store.sql.Stmt` values.

No transition of a task is decided here: each task change reads the task, asks
:func:`capgate.store.lifecycle.decide`, and writes the columns and money it returns (``_apply``).

State literals (``state = 'pending'``) stay in the SQL text rather than in parameters: the partial
indexes are chosen only when the query's own text implies their ``WHERE``.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Sequence
from enum import Enum
from typing import Any, NamedTuple

from capgate.protocol.codes import C
from capgate.store import lifecycle
from capgate.store.ids import new_task_id
from capgate.store.lifecycle import Context, Decision, Event, Load, Refused, TaskView
from capgate.store.models import (
    Account,
    AdminToken,
    LedgerKind,
    NewTask,
    Pool,
    Puzzle,
    Task,
    TaskOutcome,
    TaskSearch,
    TaskState,
    WorkerToken,
)
from capgate.store.presence import merge_serving
from capgate.store.sql import Dialect, Script, Stmt, count, load_statement, many, marks, one, rows, run

VIEW = ", ".join(TaskView._fields)
OUTCOME = ", ".join(TaskOutcome.NAMES)
ID_TRIES = 8  # fresh random ids to try before giving up: 8 collisions in a 9e10 space never happen
STRIKES_KEPT_S = 3600.0

# PostgreSQL text cannot hold NUL. A lease or host that has one (sent by a client) matches nothing
# stored, on either backend, so look-ups by it answer "not found" without asking the database.
_NUL = "\x00"


def _in(states: Sequence[TaskState]) -> str:
    return "(" + ", ".join(f"'{state.value}'" for state in states) + ")"


_SETTLED = _in(lifecycle.states_that_allow(Event.EXPIRE))
NOTIFY_IDS = 300  # task ids per notice: PostgreSQL's payload holds under 8000 bytes

# ------------------------------------------------------------------------------------ change notices
# Sent in the transaction that makes the change, so another process hears of it only once it is
# committed (PostgreSQL's NOTIFY; on SQLite the statement does nothing and the file's data version
# tells: capgate.workers.notify).


def notify_settled(task_ids: Sequence[int]) -> Script[None]:
    for start in range(0, len(task_ids), NOTIFY_IDS):
        yield run("{notify_settled}", ",".join(str(i) for i in task_ids[start:start + NOTIFY_IDS]))


def notify_queued(method: str) -> Script[None]:
    yield run("{notify_queued}", method)


def settled_among(task_ids: Sequence[int]) -> Stmt:
    return rows(f"SELECT id FROM tasks WHERE id IN ({marks(len(task_ids))}) AND state <> 'pending'", *task_ids)


# ------------------------------------------------------------------------------------ accounts


class Entry(NamedTuple):
    """One ledger row to write: the money it moves and why."""

    task_id: int | None
    kind: LedgerKind
    amount: int
    note: str


def ledger_entry(account_id: int, task_id: int | None, kind: LedgerKind, amount: int, now: float,
                 note: str) -> Script[int]:
    """Move money and write the row that says why, in the caller's transaction."""
    return (yield from ledger_entries(account_id, [Entry(task_id, kind, amount, note)], now))


def ledger_entries(account_id: int, entries: Sequence[Entry], now: float) -> Script[int]:
    """Several rows of one account's money in one balance update (a sandbox batch charges dozens of
    tasks at once): each row's ``balance_after`` is what it would be had they been written one by one."""
    if not entries:
        raise ValueError("no ledger entries to write")
    total = sum(entry.amount for entry in entries)
    row = yield one("UPDATE accounts SET balance = balance + ? WHERE id = ? RETURNING balance", total, account_id)
    if row is None:
        raise LookupError(f"no account {account_id}")
    balance = int(row["balance"]) - total
    values = []
    for entry in entries:
        balance += entry.amount
        values.append((account_id, entry.task_id, entry.kind.value, entry.amount, balance, now, entry.note))
    insert = ("INSERT INTO ledger (account_id, task_id, kind, amount, balance_after, created_at, note)"
              " VALUES (?, ?, ?, ?, ?, ?, ?)")
    # One row (a charge, a top-up) as a plain statement: on PostgreSQL a batch costs a cursor of its own.
    yield run(insert, *values[0]) if len(values) == 1 else many(insert, values)
    return balance


def fetch_account(account_id: int) -> Script[Account]:
    row = yield one("SELECT * FROM accounts WHERE id = ?", account_id)
    if row is None:
        raise LookupError(f"no account {account_id}")
    return Account.from_row(row)


def create_account(key_hash: str, key_prefix: str, threads: int, balance: int, sandbox: bool) -> Script[Account]:
    now = time.time()
    row = yield one("INSERT INTO accounts (key_hash, key_prefix, threads, balance, disabled, sandbox, created_at,"
                    " settings) VALUES (?, ?, ?, 0, FALSE, ?, ?, '{}') RETURNING id",
                    key_hash, key_prefix, threads, sandbox, now)
    account_id = int(row["id"])
    if balance:
        yield from ledger_entry(account_id, None, LedgerKind.TOPUP, balance, now, "initial balance")
    return (yield from fetch_account(account_id))


def topup(account_id: int, amount: int, note: str) -> Script[Account]:
    yield from ledger_entry(account_id, None, LedgerKind.TOPUP, amount, time.time(), note)
    return (yield from fetch_account(account_id))


def update_account(account_id: int, disabled: bool | None, threads: int | None,
                   settings: dict[str, object] | None) -> Script[Account]:
    row = yield one("SELECT settings FROM accounts WHERE id = ?{lock}", account_id)
    if row is None:
        raise LookupError(f"no account {account_id}")
    if disabled is not None:
        yield run("UPDATE accounts SET disabled = ? WHERE id = ?", disabled, account_id)
        if disabled:
            yield from _cancel_pending(account_id, time.time())
    if threads is not None:
        yield run("UPDATE accounts SET threads = ? WHERE id = ?", threads, account_id)
    if settings is not None:
        merged = {**json.loads(row["settings"]), **settings}
        yield run("UPDATE accounts SET settings = ? WHERE id = ?", json.dumps(merged), account_id)
    return (yield from fetch_account(account_id))


def _cancel_pending(account_id: int, now: float) -> Script[list[int]]:
    """A disabled account's queued and running tasks settle now, uncharged; enabling it again
    brings none back."""
    found = yield rows(f"SELECT {VIEW} FROM tasks WHERE account_id = ? AND state = 'pending'{{lock}}", account_id)
    cancelled = []
    for row in found:
        decision = lifecycle.decide(TaskView.from_row(row), Event.CANCEL, Context(now, max_attempts=0))
        if isinstance(decision, Decision):
            yield from _apply(decision, now)
            cancelled.append(decision.task.id)
    yield from notify_settled(cancelled)
    return cancelled


def account_by_key_hash(key_hash: str) -> Stmt:
    return one("SELECT * FROM accounts WHERE key_hash = ?", key_hash)


def account_by_id(account_id: int) -> Stmt:
    return one("SELECT * FROM accounts WHERE id = ?", account_id)


def accounts_by_prefix(prefix: str) -> Stmt:
    pattern = "".join(ch for ch in prefix if ch not in "%_\\") + "%"
    return rows("SELECT * FROM accounts WHERE key_prefix LIKE ? ORDER BY id", pattern)


def all_accounts() -> Stmt:
    return rows("SELECT * FROM accounts ORDER BY id")


def ledger(account_id: int, limit: int) -> Stmt:
    return rows("SELECT * FROM ledger WHERE account_id = ? ORDER BY id DESC LIMIT ?", account_id, limit)


# ------------------------------------------------------------------------------------ customer side


def submit(dialect: Dialect, account: Account, task: NewTask, now: float, max_pending: int,
           thread_cap_code: str) -> Script[int | str]:
    """The new task's id, or the code that refuses it."""
    if dialect.row_locks:
        # The commit does not wait for the disk (sql.py "async_commit"): the account's row lock is
        # held until the commit, and waiting for a flush under it made one account's submits one
        # fsync each, one after the other.
        yield run("{async_commit}")
        # This account's submits, in every process, check its load one at a time; the next
        # statement's snapshot then holds every task the lock's previous holder committed.
        locked = yield one("SELECT id FROM accounts WHERE id = ?{lock}", account.id)
        if locked is None:
            raise LookupError(f"no account {account.id}")
    row = yield load_statement(dialect, account.id, task.fingerprint, now)
    load = Load.from_row(row, account.threads)
    refused = lifecycle.admit(load, task.price, max_pending, thread_cap_code)
    if refused is not None and not row["exact"]:
        # Running counts still hold tasks whose deadline passed unswept: count the live ones.
        live = yield one("SELECT COUNT(*) AS n, CAST(COALESCE(SUM(price), 0) AS BIGINT) AS reserved FROM tasks"
                         " WHERE account_id = ? AND state = 'pending' AND deadline_at > ?", account.id, now)
        queued = load.queued
        if queued >= max_pending:
            total = yield one("SELECT COUNT(*) AS n FROM tasks WHERE state = 'pending' AND deadline_at > ?", now)
            queued = int(total["n"])
        load = load._replace(working=int(live["n"]), reserved=int(live["reserved"]), queued=queued)
        refused = lifecycle.admit(load, task.price, max_pending, thread_cap_code)
    if refused is not None:
        return refused
    for _ in range(ID_TRIES):
        task_id = new_task_id()
        inserted = yield count(
            "INSERT INTO tasks (id, account_id, method, params, fingerprint, state, pool, price,"
            " created_at, deadline_at, not_before, attempts, pingback)"
            " VALUES (?, ?, ?, ?, ?, 'pending', ?, ?, ?, ?, ?, 0, ?) ON CONFLICT (id) DO NOTHING",
            task_id, account.id, task.method, json.dumps(task.params, ensure_ascii=False), task.fingerprint,
            task.pool.value, task.price, now, now + task.deadline_s, task.not_before or now, task.pingback)
        if inserted:
            break
    else:  # pragma: no cover
        return C.SERVER_ERROR
    for name, data in task.blobs.items():  # one image, mostly; up to nine (bls)
        yield run("INSERT INTO task_blobs (task_id, name, data) VALUES (?, ?, ?)", task_id, name, data)
    if task.pool is not Pool.SANDBOX and dialect.row_locks:
        yield from notify_queued(task.method)
    return task_id


def submit_many(dialect: Dialect, account: Account, tasks: Sequence[tuple[NewTask, float]], max_pending: int,
                thread_cap_code: str) -> Script[list[int | str]]:
    """Submits of one account, each ``(task, now)``, in one transaction: each new task's id or the
    code that refuses it, decided in order exactly as one :func:`submit` after another would.

    PostgreSQL's group commit: the account's row is locked once and each statement carries the whole
    batch, so a burst of one account's submits costs a handful of round trips under its lock, not a
    handful per submit (the lock made them one after the other, whatever the connections)."""
    assert dialect.row_locks, "SQLite's single writer batches transactions itself"
    now = min(at for _, at in tasks)
    yield run("{async_commit}")
    locked = yield one("SELECT id FROM accounts WHERE id = ?{lock}", account.id)
    if locked is None:
        raise LookupError(f"no account {account.id}")
    row = yield load_statement(dialect, account.id, "", now)  # no task has an empty fingerprint
    prints = sorted({task.fingerprint for task, _ in tasks})
    found = yield rows("SELECT DISTINCT fingerprint FROM tasks WHERE account_id = ? AND state = 'pending'"
                       f" AND deadline_at > ? AND fingerprint IN ({marks(len(prints))})", account.id, now, *prints)
    pending = {r["fingerprint"] for r in found}
    load = Load.from_row(row, account.threads)  # its duplicate flag is each task's own, below
    results: list[int | str] = []
    admitted: list[int] = []  # indexes into tasks
    for index, (task, _) in enumerate(tasks):
        refused = lifecycle.admit(load._replace(duplicate=task.fingerprint in pending), task.price, max_pending,
                                  thread_cap_code)
        if refused is not None:
            results.append(refused)
            continue
        pending.add(task.fingerprint)
        load = load._replace(working=load.working + 1, reserved=load.reserved + task.price, queued=load.queued + 1)
        results.append(0)
        admitted.append(index)
    ids: dict[int, int] = {}
    for _ in range(ID_TRIES):
        wanted = {new_task_id(): index for index in admitted if index not in ids.values()}
        if not wanted:
            break
        values: list[Any] = []
        for task_id, index in wanted.items():
            task, at = tasks[index]
            values += [task_id, account.id, task.method, json.dumps(task.params, ensure_ascii=False), task.fingerprint,
                       task.pool.value, task.price, at, at + task.deadline_s, task.not_before or at, task.pingback]
        inserted = yield rows(
            "INSERT INTO tasks (id, account_id, method, params, fingerprint, state, pool, price,"
            " created_at, deadline_at, not_before, attempts, pingback) VALUES "
            + ", ".join(["(?, ?, ?, ?, ?, 'pending', ?, ?, ?, ?, ?, 0, ?)"] * len(wanted))
            + " ON CONFLICT (id) DO NOTHING RETURNING id", *values)
        for got in inserted:
            ids[int(got["id"])] = wanted[int(got["id"])]
    blobs = [(task_id, name, data) for task_id, index in ids.items() for name, data in tasks[index][0].blobs.items()]
    if blobs:
        yield many("INSERT INTO task_blobs (task_id, name, data) VALUES (?, ?, ?)", blobs)
    for task_id, index in ids.items():
        results[index] = task_id
    for index in admitted:
        if not results[index]:  # pragma: no cover - ID_TRIES collisions in a 9e10 space
            results[index] = C.SERVER_ERROR
    queued = {tasks[index][0].method for index in ids.values() if tasks[index][0].pool is not Pool.SANDBOX}
    for method in sorted(queued):
        yield from notify_queued(method)
    return results


def task_of(account_id: int, task_id: int) -> Stmt:
    return one("SELECT * FROM tasks WHERE id = ? AND account_id = ?", task_id, account_id)


def outcomes(account_id: int, task_ids: Sequence[int]) -> Stmt:
    return rows(f"SELECT {OUTCOME} FROM tasks WHERE account_id = ? AND id IN ({marks(len(task_ids))})",
                account_id, *task_ids)


def working_threads(account_id: int, now: float) -> Stmt:
    return one("SELECT COUNT(*) AS n FROM tasks WHERE account_id = ? AND state = 'pending' AND deadline_at > ?",
               account_id, now)


def report(account_id: int, task_id: int, good: bool, ctx: Context, budget_share: float,
           budget_window_s: float) -> Script[str | None]:
    """``None`` when recorded, else the code to answer. With ``budget_share``, refunds of the last
    ``budget_window_s`` may come to at most that share of the account's charges over it."""
    row = yield one(f"SELECT {VIEW} FROM tasks WHERE id = ? AND account_id = ?{{lock}}", task_id, account_id)
    if row is None:
        return C.WRONG_CAPTCHA_ID
    task = TaskView.from_row(row)
    if not good and ctx.refund_bad and budget_share > 0:
        books = yield one("SELECT CAST(COALESCE(SUM(CASE WHEN kind = 'charge' THEN -amount ELSE 0 END), 0) AS BIGINT)"
                          " AS charged, CAST(COALESCE(SUM(CASE WHEN kind = 'refund' THEN amount ELSE 0 END), 0)"
                          " AS BIGINT) AS refunded FROM ledger WHERE account_id = ? AND created_at > ?",
                          account_id, ctx.now - budget_window_s)
        room = int(int(books["charged"]) * budget_share) - int(books["refunded"])
        ctx = ctx._replace(refund_room=max(room, 0))
    decision = lifecycle.decide(task, Event.REPORT_GOOD if good else Event.REPORT_BAD, ctx)
    if isinstance(decision, Refused):
        return decision.code or C.REPORT_NOT_RECORDED
    yield from _apply(decision, ctx.now)
    return None


# ------------------------------------------------------------------------------------ worker side


def _apply(decision: Decision, now: float, *, returning: bool = False) -> Script[Any]:
    """Write what the lifecycle decided: the changed columns, then the money, in this transaction."""
    changes = decision.changed
    row = None
    if changes or returning:
        values = [value.value if isinstance(value, Enum) else value for value in changes.values()]
        statement = one if returning else run
        row = yield statement(_update_sql(tuple(changes), returning), *values, decision.task.id)
    money = _money(decision)
    if money:
        yield from ledger_entries(decision.task.account_id, money, now)
    return row


def _money(decision: Decision) -> list[Entry]:
    """The ledger rows a decision writes: its charge, its refund."""
    money = []
    if decision.charge:
        money.append(Entry(decision.task.id, LedgerKind.CHARGE, -decision.charge, "solved"))
    if decision.refund:
        money.append(Entry(decision.task.id, LedgerKind.REFUND, decision.refund, "reportbad"))
    return money


@functools.cache
def _update_sql(columns: tuple[str, ...], returning: bool) -> str:
    """The UPDATE for one set of changed columns (a handful of sets recur: made once each)."""
    assignments = ", ".join(f"{name} = ?" for name in columns) or "id = id"
    return f"UPDATE tasks SET {assignments} WHERE id = ?" + (" RETURNING *" if returning else "")


def _queue_filter(pools: Sequence[str], methods: Sequence[str] | None, now: float,
                  max_attempts: int) -> tuple[str, list[Any]]:
    """Tasks a claim may take: the SQL twin of the claim's guards in ``lifecycle``."""
    where = (f"state = 'pending' AND pool IN ({marks(len(pools))}) AND not_before <= ?"
             " AND (lease_until IS NULL OR lease_until < ?) AND deadline_at > ? AND attempts < ?")
    args: list[Any] = [*pools, now, now, now, max_attempts]
    if methods is not None:
        where += f" AND method IN ({marks(len(methods))})"
        args.extend(methods)
    return where, args


def has_claimable(pools: Sequence[str], methods: Sequence[str] | None, now: float, max_attempts: int) -> Stmt:
    where, args = _queue_filter(pools, methods, now, max_attempts)
    return one(f"SELECT 1 AS found FROM tasks WHERE {where} LIMIT 1", *args)


def claim(pools: Sequence[str], methods: Sequence[str] | None, ctx: Context) -> Script[Task | None]:
    where, args = _queue_filter(pools, methods, ctx.now, ctx.max_attempts)
    # SKIP LOCKED: a task another claimer is taking right now is passed over, not waited for.
    row = yield one(f"SELECT {VIEW} FROM tasks WHERE {where} ORDER BY not_before, created_at LIMIT 1"
                    "{skip_locked}", *args)
    if row is None:
        return None
    task = TaskView.from_row(row)
    decision = lifecycle.decide(task, Event.CLAIM, ctx)
    if isinstance(decision, Refused):  # pragma: no cover - the filter is the guard's twin
        return None
    claimed = yield from _apply(decision, ctx.now, returning=True)
    return Task.from_row(claimed)


def leased_task(task_id: int, lease: str) -> Stmt | None:
    if _NUL in lease:
        return None
    return one("SELECT * FROM tasks WHERE id = ? AND state = 'pending' AND lease_owner = ?", task_id, lease)


def act(task_id: int, event: Event, ctx: Context) -> Script[bool]:
    """A worker's event on a task it holds (heartbeat, answer, give back, fail): whether it took."""
    if ctx.lease is None or _NUL in ctx.lease:
        return False
    row = yield one(f"SELECT {VIEW} FROM tasks WHERE id = ?{{lock}}", task_id)
    if row is None:
        return False
    task = TaskView.from_row(row)
    decision = lifecycle.decide(task, event, ctx)
    if isinstance(decision, Refused):
        return False
    yield from _apply(decision, ctx.now)
    if decision.task.state is not TaskState.PENDING:
        yield from notify_settled([task_id])
    elif event in (Event.GIVE_BACK, Event.TO_HUMAN):
        yield from notify_queued("")
    return True


def settle_due(pool: str, now: float, limit: int, solve: Any, lease: str) -> Script[list[int]]:
    """Claim and settle at once up to ``limit`` due tasks of ``pool`` (a pure, fast solver)."""
    found = yield rows(
        f"SELECT {VIEW}, method, params, created_at, fingerprint FROM tasks WHERE state = 'pending' AND pool = ?"
        " AND not_before <= ? AND (lease_until IS NULL OR lease_until < ?) AND deadline_at > ?"
        " ORDER BY not_before, created_at LIMIT ?{skip_locked}", pool, now, now, now, limit)
    settled: list[Decision] = []
    for row in found:
        task = TaskView.from_row(row)
        answer, error = solve(Puzzle.from_row(row))
        last = task.attempts + 1  # this one attempt settles it, whatever the service's limit
        if answer is not None:
            ctx = Context(now, last, lease=lease, answer=json.dumps(answer, ensure_ascii=False), confidence=1.0)
            decision = lifecycle.decide(task, Event.ANSWER_AT_ONCE, ctx)
        else:
            decision = lifecycle.decide(task, Event.FAIL_AT_ONCE, Context(now, last, lease=lease, error=error))
        if isinstance(decision, Refused):  # pragma: no cover - the query is the guard's twin
            continue
        settled.append(decision)
    # Task rows first, in one statement per set of changed columns (a batch is mostly one set: this
    # is the sandbox's hot path), then money with accounts in id order: two batches charging the same
    # accounts never wait on each other in a circle.
    by_columns: dict[tuple[str, ...], list[list[Any]]] = {}
    for decision in settled:
        values = [value.value if isinstance(value, Enum) else value for value in decision.changed.values()]
        by_columns.setdefault(tuple(decision.changed), []).append([*values, decision.task.id])
    for columns, args in by_columns.items():
        yield many(_update_sql(columns, False), args)
    money: dict[int, list[Entry]] = {}
    for decision in settled:
        if entries := _money(decision):
            money.setdefault(decision.task.account_id, []).extend(entries)
    for account_id in sorted(money):
        yield from ledger_entries(account_id, money[account_id], now)
    done = [decision.task.id for decision in settled]
    yield from notify_settled(done)
    return done


def blobs(task_id: int) -> Stmt:
    return rows("SELECT name, data FROM task_blobs WHERE task_id = ?", task_id)


def sweep(now: float, retention_s: float, max_attempts: int) -> Script[list[int]]:
    """Settle overdue tasks (deadline passed; last attempt's lease lost); expire old ones."""
    mine = yield one("{sweep_lock}")
    if not mine["mine"]:
        return []  # another process is sweeping this very moment
    due = yield rows(f"SELECT {VIEW} FROM tasks WHERE state = 'pending' AND (deadline_at <= ?"
                     " OR (attempts >= ? AND (lease_until IS NULL OR lease_until < ?))){lock}",
                     now, max_attempts, now)
    ctx = Context(now, max_attempts)
    settled = []
    for row in due:
        task = TaskView.from_row(row)
        decision = lifecycle.decide(task, Event.DEADLINE if now >= task.deadline_at else Event.LEASE_LOST, ctx)
        if isinstance(decision, Decision) and decision.task.state is not TaskState.PENDING:
            yield from _apply(decision, now)
            settled.append(task.id)
    # Expiry acts on many rows at once: the same change as EXPIRE in lifecycle.TABLE, as one statement.
    cutoff = now - retention_s
    yield run(f"DELETE FROM task_blobs WHERE task_id IN (SELECT id FROM tasks WHERE state IN {_SETTLED}"
              " AND settled_at < ?)", cutoff)
    # Expired rows stay (ledger rows point at them) but lose their parameters and answer.
    yield run(f"UPDATE tasks SET state = 'expired', params = '{{}}', answer = NULL WHERE state IN {_SETTLED}"
              " AND settled_at < ?", cutoff)
    yield run("DELETE FROM ip_strikes WHERE at < ?", now - STRIKES_KEPT_S)
    yield run("DELETE FROM ip_bans WHERE until < ?", now)
    yield from notify_settled(settled)
    return settled


def due_pingbacks(now: float, hold_s: float, limit: int) -> Script[list[Task]]:
    # SKIP LOCKED: a task another sender is taking right now is left to it.
    found = yield rows(
        f"UPDATE tasks SET pingback_next = ? WHERE id IN (SELECT id FROM tasks WHERE pingback IS NOT NULL"
        f" AND pingback_done = 0 AND state IN {_SETTLED} AND COALESCE(pingback_next, 0) <= ? LIMIT ?"
        "{skip_locked}) RETURNING *", now + hold_s, now, limit)
    return [Task.from_row(r) for r in found]


def pingback_done(task_id: int, delivered: bool, next_at: float | None) -> Script[None]:
    if delivered or next_at is None:
        yield run("UPDATE tasks SET pingback_done = ?, pingback_attempts = pingback_attempts + 1 WHERE id = ?",
                  1 if delivered else -1, task_id)
    else:
        yield run("UPDATE tasks SET pingback_next = ?, pingback_attempts = pingback_attempts + 1 WHERE id = ?",
                  next_at, task_id)


# ------------------------------------------------------------------------------------ addresses


def ip_banned(ip: str, now: float) -> Stmt:
    return one("SELECT 1 AS banned FROM ip_bans WHERE ip = ? AND until > ?", ip, now)


def bans(now: float) -> Stmt:
    return rows("SELECT ip, until FROM ip_bans WHERE until > ? ORDER BY until DESC", now)


def lift_ban(ip: str) -> Script[bool]:
    lifted = yield count("DELETE FROM ip_bans WHERE ip = ?", ip)
    yield run("DELETE FROM ip_strikes WHERE ip = ?", ip)
    return bool(lifted)


def strike(ip: str, now: float, window_s: float, threshold: int, ban_s: float) -> Script[bool]:
    yield one("{strike_lock}", ip)  # one address's strikes count one at a time, whichever process took them
    yield run("INSERT INTO ip_strikes (ip, at) VALUES (?, ?)", ip, now)
    row = yield one("SELECT COUNT(*) AS n FROM ip_strikes WHERE ip = ? AND at > ?", ip, now - window_s)
    if int(row["n"]) < threshold:
        return False
    yield run("INSERT INTO ip_bans (ip, until) VALUES (?, ?) ON CONFLICT (ip) DO UPDATE SET until = excluded.until",
              ip, now + ban_s)
    yield run("DELETE FROM ip_strikes WHERE ip = ?", ip)
    return True


# ------------------------------------------------------------------------------------ pingback hosts


def pingback_hosts(account_id: int) -> Stmt:
    return rows("SELECT host FROM pingback_hosts WHERE account_id = ? ORDER BY host", account_id)


def add_pingback_host(account_id: int, host: str, limit: int) -> Script[int | None]:
    """``None`` when ``host`` is registered (now or already), else how many the account has: the
    count and the insert under the account's row lock, so concurrent adds cannot pass ``limit``."""
    if _NUL in host:
        raise ValueError("a host name cannot hold NUL")
    yield one("SELECT id FROM accounts WHERE id = ?{lock}", account_id)
    row = yield one("SELECT COUNT(*) AS n, COALESCE(MAX(CASE WHEN host = ? THEN 1 ELSE 0 END), 0) AS known"
                    " FROM pingback_hosts WHERE account_id = ?", host, account_id)
    if not row["known"] and int(row["n"]) >= limit:
        return int(row["n"])
    yield run("INSERT INTO pingback_hosts (account_id, host) VALUES (?, ?) ON CONFLICT DO NOTHING", account_id, host)
    return None


def del_pingback_host(account_id: int, host: str | None) -> Script[None]:
    if host is None:
        yield run("DELETE FROM pingback_hosts WHERE account_id = ?", account_id)
    elif _NUL not in host:  # no such host can be stored
        yield run("DELETE FROM pingback_hosts WHERE account_id = ? AND host = ?", account_id, host)


# ------------------------------------------------------------------------------------ workers


def create_worker(name: str, token_hash: str, token_prefix: str, methods: Sequence[str],
                  human: bool) -> Script[WorkerToken]:
    row = yield one("INSERT INTO workers (name, token_hash, token_prefix, methods, human, disabled, created_at)"
                    " VALUES (?, ?, ?, ?, ?, FALSE, ?) RETURNING *",
                    name, token_hash, token_prefix, json.dumps(list(methods)), human, time.time())
    return WorkerToken.from_row(row)


def worker_by_token_hash(token_hash: str) -> Stmt:
    return one("SELECT * FROM workers WHERE token_hash = ?", token_hash)


def all_workers() -> Stmt:
    return rows("SELECT * FROM workers ORDER BY id")


def set_worker_disabled(worker_id: int, disabled: bool) -> Script[WorkerToken | None]:
    row = yield one("UPDATE workers SET disabled = ? WHERE id = ? RETURNING *", disabled, worker_id)
    return WorkerToken.from_row(row) if row is not None else None


def delete_worker(worker_id: int) -> Script[bool]:
    deleted = yield count("DELETE FROM workers WHERE id = ?", worker_id)
    return bool(deleted)


def worker_seen(worker_id: int, methods: Sequence[str], now: float) -> Script[None]:
    """Every method a worker claims stays served until it is not asked for within the window."""
    row = yield one("SELECT serving FROM workers WHERE id = ?{lock}", worker_id)
    if row is None:
        return
    serving = merge_serving(row["serving"], methods, now)
    yield run("UPDATE workers SET last_seen = ?, serving = ? WHERE id = ?", now, serving, worker_id)


def serving_workers(since: float) -> Stmt:
    return rows("SELECT serving FROM workers WHERE NOT disabled AND last_seen >= ?", since)


# ------------------------------------------------------------------------------------ admin tokens and sessions


def create_admin_token(name: str, token_hash: str, token_prefix: str, now: float) -> Script[AdminToken]:
    row = yield one("INSERT INTO admin_tokens (name, token_hash, token_prefix, disabled, created_at)"
                    " VALUES (?, ?, ?, FALSE, ?) RETURNING *", name, token_hash, token_prefix, now)
    return AdminToken.from_row(row)


def admin_token_by_hash(token_hash: str) -> Stmt:
    return one("SELECT * FROM admin_tokens WHERE token_hash = ?", token_hash)


def all_admin_tokens() -> Stmt:
    return rows("SELECT * FROM admin_tokens ORDER BY id")


def set_admin_token_disabled(token_id: int, disabled: bool) -> Script[AdminToken | None]:
    row = yield one("UPDATE admin_tokens SET disabled = ? WHERE id = ? RETURNING *", disabled, token_id)
    if row is not None and disabled:
        yield run("DELETE FROM admin_sessions WHERE token_id = ?", token_id)  # signed out everywhere
    return AdminToken.from_row(row) if row is not None else None


def create_admin_session(session_hash: str, token_id: int, now: float, expires_at: float) -> Script[None]:
    yield run("DELETE FROM admin_sessions WHERE expires_at < ?", now)
    yield run("INSERT INTO admin_sessions (session_hash, token_id, created_at, expires_at) VALUES (?, ?, ?, ?)",
              session_hash, token_id, now, expires_at)


def admin_session(session_hash: str, now: float) -> Stmt:
    """The enabled token a live session belongs to."""
    return one("SELECT t.* FROM admin_sessions s JOIN admin_tokens t ON t.id = s.token_id"
               " WHERE s.session_hash = ? AND s.expires_at > ? AND NOT t.disabled", session_hash, now)


def end_admin_session(session_hash: str) -> Script[None]:
    yield run("DELETE FROM admin_sessions WHERE session_hash = ?", session_hash)


# ------------------------------------------------------------------------------------ the admin's reads


def task_by_id(task_id: int) -> Stmt:
    return one("SELECT * FROM tasks WHERE id = ?", task_id)


def task_ledger(task_id: int) -> Stmt:
    return rows("SELECT * FROM ledger WHERE task_id = ? ORDER BY id", task_id)


def search_tasks(search: TaskSearch) -> Stmt:
    where, args = ["TRUE"], []
    for clause, value in (("account_id = ?", search.account_id), ("state = ?", search.state),
                          ("method = ?", search.method), ("created_at >= ?", search.since),
                          ("created_at < ?", search.until)):
        if value is not None:
            where.append(clause)
            args.append(value.value if isinstance(value, Enum) else value)
    return rows(f"SELECT * FROM tasks WHERE {' AND '.join(where)} ORDER BY created_at DESC, id DESC LIMIT ?",
                *args, search.limit)


def queue_depth() -> Stmt:
    """Pending tasks by method and pool (the queue's partial index holds exactly these rows)."""
    return rows("SELECT method, pool, COUNT(*) AS n FROM tasks WHERE state = 'pending' GROUP BY method, pool")


def pending_by_account(now: float) -> Stmt:
    return rows("SELECT account_id, COUNT(*) AS n FROM tasks WHERE state = 'pending' AND deadline_at > ?"
                " GROUP BY account_id", now)


def settled_since(since: float, limit: int) -> Stmt:
    """Tasks settled after ``since``, newest first (the settled index holds solved and unsolvable)."""
    return rows("SELECT id, account_id, method, state, created_at, settled_at, error FROM tasks"
                " WHERE state IN ('solved', 'unsolvable') AND settled_at > ? ORDER BY settled_at DESC LIMIT ?",
                since, limit)


def settled_of(task_ids: Sequence[int]) -> Stmt:
    return rows("SELECT id, account_id, method, state, created_at, settled_at, error FROM tasks"
                f" WHERE id IN ({marks(len(task_ids))}) AND state IN ('solved', 'unsolvable')", *task_ids)


def ledger_totals(after_id: int) -> Stmt:
    """Entries, sums and the last id by kind, of the entries after ``after_id`` (0: all of them)."""
    return rows("SELECT kind, COUNT(*) AS n, CAST(COALESCE(SUM(amount), 0) AS BIGINT) AS total, MAX(id) AS last"
                " FROM ledger WHERE id > ? GROUP BY kind", after_id)


def workers_seen() -> Stmt:
    return rows("SELECT * FROM workers ORDER BY id")


def reports_of(methods: Sequence[str]) -> Stmt:
    """Reported tasks of ``methods`` with what names their profile: the task's own ``profile`` (gone
    once the task expires) and its account's default."""
    return rows("SELECT t.params, t.report, a.settings FROM tasks t JOIN accounts a ON a.id = t.account_id"
                f" WHERE t.report IS NOT NULL AND t.method IN ({marks(len(methods))})", *methods)
