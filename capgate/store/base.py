"""The store: capgate's one interface to its database, the same on every backend.

Every method here is written once, from the statements and transactions in ``scripts.py``; a
backend supplies only how to run them (:meth:`Store._transact` for a transaction, :meth:`Store._read`
for a single read), how to connect, and how to migrate. Each method that changes money changes it in
the same transaction as the task change that causes it, and returns only after commit. Reads may come
from a separate connection: they see every write that returned before them.
"""

from __future__ import annotations

import abc
import json
import math
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar

from capgate.store import scripts
from capgate.store.lifecycle import Context, Event
from capgate.store.models import (
    Account,
    AdminToken,
    LedgerEntry,
    NewTask,
    Puzzle,
    Settled,
    Task,
    TaskOutcome,
    TaskSearch,
    WorkerSeen,
    WorkerToken,
)
from capgate.store.presence import served_since
from capgate.store.sql import Dialect, Script, Stmt

T = TypeVar("T")
P = ParamSpec("P")

# A task -> (answer's json fields, None) or (None, error code). No images: a solver this fast and
# pure (the sandbox) answers from the task's fingerprint, and reading every image would be most of
# the cost of settling.
Solve = Callable[[Puzzle], tuple[dict[str, object] | None, str | None]]
SETTLED_AMONG_CHUNK = 500  # ids per look-up when re-reading the waited-for tasks
SANDBOX_LEASE = "sandbox"  # the lease of tasks the store settles at once for a pure solver


@dataclass(frozen=True)
class SubmitLimits:
    thread_cap_code: str  # what in.php answers when the account's threads are all busy
    max_pending: int  # service-wide queue cap: beyond it ERROR_NO_SLOT_AVAILABLE


@dataclass(frozen=True)
class SubmitOutcome:
    task_id: int | None = None
    code: str | None = None


@dataclass(frozen=True)
class ReportPolicy:
    window_s: float  # reports accepted this long after the task settled
    refund_bad: bool  # reportbad gives the charge back
    retention_s: float = math.inf  # results kept this long: no report once a task's result is gone
    budget_share: float = 0.0  # refunds capped at this share of the account's charges; 0: no cap
    budget_window_s: float = 86_400.0  # ... over this many seconds back


@dataclass(frozen=True)
class Notice:
    """What another process changed, as the store's change feed reports it (:meth:`Store.notices`)."""

    settled: tuple[int, ...] = ()  # these tasks settled
    queued: bool = False  # a task was queued, or given back to the queue
    ready: bool = False  # the feed is (again) connected: changes from now on are reported


class Store(abc.ABC):
    dialect: Dialect
    schema_found = 0  # the schema version the database had when this store opened it
    has_notices = False  # whether :meth:`notices` reports other processes' changes (else :meth:`data_version`)

    # ---- what a backend supplies
    @abc.abstractmethod
    async def open(self) -> None: ...

    @abc.abstractmethod
    async def close(self) -> None: ...

    @abc.abstractmethod
    def _transact(self, script: Callable[P, Script[T]], *args: P.args, **kwargs: P.kwargs) -> Awaitable[T]:
        """Run ``script(*args, **kwargs)`` in one transaction; resolves after the commit. A backend
        may run it again from the start (a fresh generator) if the database broke a deadlock."""

    @abc.abstractmethod
    async def _read(self, stmt: Stmt) -> Any:
        """One statement outside any transaction: its row (or ``None``) or its rows."""

    # ---- other processes' changes (capgate.workers.notify)
    def notices(self) -> AsyncIterator[Notice]:
        """Other processes' changes as they commit, first a ``ready`` notice once listening; raises
        when the feed breaks (the caller reconnects by calling again)."""
        raise NotImplementedError(f"{type(self).__name__} has no change feed")

    async def data_version(self) -> int:
        """A number that changes when another connection commits to the database."""
        raise NotImplementedError(f"{type(self).__name__} has no data version")

    async def settled_among(self, task_ids: Sequence[int]) -> list[int]:
        """Those of ``task_ids`` that are no longer pending (any account's)."""
        found: list[int] = []
        for start in range(0, len(task_ids), SETTLED_AMONG_CHUNK):
            chunk = task_ids[start:start + SETTLED_AMONG_CHUNK]
            found.extend(int(r["id"]) for r in await self._read(scripts.settled_among(chunk)))
        return found

    # ---- accounts and money
    async def create_account(self, key_hash: str, key_prefix: str, threads: int, balance: int,
                             sandbox: bool) -> Account:
        return await self._transact(scripts.create_account, key_hash, key_prefix, threads, balance, sandbox)

    async def account_by_key_hash(self, key_hash: str) -> Account | None:
        row = await self._read(scripts.account_by_key_hash(key_hash))
        return Account.from_row(row) if row is not None else None

    async def account_by_prefix(self, prefix: str) -> list[Account]:
        return [Account.from_row(r) for r in await self._read(scripts.accounts_by_prefix(prefix))]

    async def list_accounts(self) -> list[Account]:
        return [Account.from_row(r) for r in await self._read(scripts.all_accounts())]

    async def get_account(self, account_id: int) -> Account | None:
        row = await self._read(scripts.account_by_id(account_id))
        return Account.from_row(row) if row is not None else None

    async def topup(self, account_id: int, amount: int, note: str) -> Account:
        return await self._transact(scripts.topup, account_id, amount, note)

    async def update_account(self, account_id: int, *, disabled: bool | None = None,
                             threads: int | None = None, settings: dict[str, object] | None = None,
                             ) -> Account:
        return await self._transact(scripts.update_account, account_id, disabled, threads, settings)

    async def ledger(self, account_id: int, limit: int = 100) -> list[LedgerEntry]:
        return [LedgerEntry.from_row(r) for r in await self._read(scripts.ledger(account_id, limit))]

    # ---- tasks, customer side
    async def submit(self, account: Account, task: NewTask, now: float, limits: SubmitLimits,
                     ) -> SubmitOutcome:
        result = await self._transact(scripts.submit, self.dialect, account, task, now, limits.max_pending,
                                                     limits.thread_cap_code)
        return SubmitOutcome(code=result) if isinstance(result, str) else SubmitOutcome(task_id=result)

    async def get_task(self, account_id: int, task_id: int) -> Task | None:
        row = await self._read(scripts.task_of(account_id, task_id))
        return Task.from_row(row) if row is not None else None

    async def outcomes(self, account_id: int, task_ids: Sequence[int]) -> dict[int, TaskOutcome]:
        """What polls need of these tasks of the account (the hot path: no parameters, no images)."""
        if not task_ids:
            return {}
        return {int(r["id"]): TaskOutcome.from_row(r) for r in await self._read(scripts.outcomes(account_id, task_ids))}

    async def working_threads(self, account_id: int, now: float) -> int:
        row = await self._read(scripts.working_threads(account_id, now))
        return int(row["n"]) if row is not None else 0

    async def report(self, account_id: int, task_id: int, good: bool, now: float,
                     policy: ReportPolicy) -> str | None:
        """``None`` when recorded, else the code to answer."""
        ctx = Context(now, max_attempts=0, report_window_s=min(policy.window_s, policy.retention_s),
                      refund_bad=policy.refund_bad)
        return await self._transact(scripts.report, account_id, task_id, good, ctx, policy.budget_share,
                                    policy.budget_window_s)

    # ---- tasks, worker side
    async def claim(self, pools: Sequence[str], methods: Sequence[str] | None, lease: str,
                    lease_s: float, now: float, max_attempts: int, worker_id: int | None = None) -> Task | None:
        """Lease the oldest due task to ``lease`` (a fresh id per claim, so that an answer from
        a worker whose lease expired and was re-issued is refused), held by the worker token
        ``worker_id`` (``None``: a worker inside the service): only that token may act on it."""
        if not pools or (methods is not None and not methods):
            return None
        ctx = Context(now, max_attempts, lease=lease, lease_s=lease_s, worker=worker_id)
        return await self._transact(scripts.claim, pools, methods, ctx)

    async def has_claimable(self, pools: Sequence[str], methods: Sequence[str] | None, now: float,
                            max_attempts: int) -> bool:
        if not pools or (methods is not None and not methods):
            return False
        return await self._read(scripts.has_claimable(pools, methods, now, max_attempts)) is not None

    async def leased_task(self, task_id: int, lease: str) -> Task | None:
        """The task if it is pending and leased to ``lease``."""
        stmt = scripts.leased_task(task_id, lease)
        row = await self._read(stmt) if stmt is not None else None
        return Task.from_row(row) if row is not None else None

    async def heartbeat(self, task_id: int, worker: str, lease_s: float, now: float,
                        worker_id: int | None = None) -> bool:
        ctx = Context(now, max_attempts=0, lease=worker, lease_s=lease_s, worker=worker_id)
        return await self._transact(scripts.act, task_id, Event.HEARTBEAT, ctx)

    async def complete(self, task_id: int, worker: str, answer: dict[str, object],
                       confidence: float | None, now: float, worker_id: int | None = None) -> bool:
        """Settle as solved and charge, if ``worker`` still holds the lease. ``False`` if not."""
        ctx = Context(now, max_attempts=0, lease=worker, answer=_answer_text(answer), confidence=confidence,
                      worker=worker_id)
        return await self._transact(scripts.act, task_id, Event.ANSWER, ctx)

    async def fail(self, task_id: int, worker: str, error: str | None, max_attempts: int,
                   now: float, to_human: bool = False, *, final: bool = False,
                   worker_id: int | None = None) -> bool:
        """Give the task back (to the human pool with ``to_human``) for another attempt; once its
        attempts are used up, or at once when ``final``, settle it unsolvable with ``error``."""
        event = Event.FAIL if final else Event.TO_HUMAN if to_human else Event.GIVE_BACK
        ctx = Context(now, max_attempts, lease=worker, error=error, worker=worker_id)
        return await self._transact(scripts.act, task_id, event, ctx)

    async def settle_due(self, pool: str, now: float, limit: int, solve: Solve) -> list[int]:
        """Settle up to ``limit`` due, unleased tasks of ``pool`` in one transaction, using a pure
        and fast ``solve`` (the sandbox worker): answered ones solved and charged, the others
        unsolvable with the code ``solve`` gave. Returns their ids."""
        return await self._transact(scripts.settle_due, pool, now, limit, solve, SANDBOX_LEASE)

    async def blobs(self, task_id: int) -> dict[str, bytes]:
        return {r["name"]: bytes(r["data"]) for r in await self._read(scripts.blobs(task_id))}

    async def sweep(self, now: float, retention_s: float, max_attempts: int) -> list[int]:
        """Settle overdue tasks (deadline passed, or the last attempt's lease lost) as unsolvable
        and return their ids; drop images and answers of tasks past the retention."""
        return await self._transact(scripts.sweep, now, retention_s, max_attempts)

    async def due_pingbacks(self, now: float, hold_s: float, limit: int) -> list[Task]:
        """Settled tasks whose pingback is due, held for ``hold_s`` so no other sender takes them."""
        return await self._transact(scripts.due_pingbacks, now, hold_s, limit)

    async def pingback_done(self, task_id: int, delivered: bool, next_at: float | None) -> None:
        """Record an attempt: delivered, retry at ``next_at``, or (``None``) give up."""
        await self._transact(scripts.pingback_done, task_id, delivered, next_at)

    # ---- addresses
    async def ip_banned(self, ip: str, now: float) -> bool:
        return await self._read(scripts.ip_banned(ip, now)) is not None

    async def bans(self, now: float) -> list[tuple[str, float]]:
        """Addresses banned at ``now``, with when each ban ends, latest first."""
        return [(r["ip"], float(r["until"])) for r in await self._read(scripts.bans(now))]

    async def lift_ban(self, ip: str) -> bool:
        """End a ban (and forget the address's strikes); ``False`` if it was not banned."""
        return await self._transact(scripts.lift_ban, ip)

    async def strike(self, ip: str, now: float, window_s: float, threshold: int, ban_s: float) -> bool:
        """Count a wrong-key request; ``True`` if the address is now banned."""
        return await self._transact(scripts.strike, ip, now, window_s, threshold, ban_s)

    # ---- pingback hosts
    async def pingback_hosts(self, account_id: int) -> list[str]:
        return [r["host"] for r in await self._read(scripts.pingback_hosts(account_id))]

    async def add_pingback_host(self, account_id: int, host: str, limit: int = 2**31) -> int | None:
        """Register ``host`` unless the account has ``limit`` hosts already: ``None`` when
        registered (or it was), else how many it has."""
        return await self._transact(scripts.add_pingback_host, account_id, host, limit)

    async def del_pingback_host(self, account_id: int, host: str | None) -> None:
        await self._transact(scripts.del_pingback_host, account_id, host)

    # ---- workers
    async def create_worker(self, name: str, token_hash: str, token_prefix: str, methods: Sequence[str],
                            human: bool) -> WorkerToken:
        return await self._transact(scripts.create_worker, name, token_hash, token_prefix, methods, human)

    async def worker_by_token_hash(self, token_hash: str) -> WorkerToken | None:
        row = await self._read(scripts.worker_by_token_hash(token_hash))
        return WorkerToken.from_row(row) if row is not None else None

    async def list_workers(self) -> list[WorkerToken]:
        return [WorkerToken.from_row(r) for r in await self._read(scripts.all_workers())]

    async def set_worker_disabled(self, worker_id: int, disabled: bool) -> WorkerToken | None:
        return await self._transact(scripts.set_worker_disabled, worker_id, disabled)

    async def delete_worker(self, worker_id: int) -> bool:
        return await self._transact(scripts.delete_worker, worker_id)

    async def worker_seen(self, worker_id: int, methods: Sequence[str], now: float) -> None:
        await self._transact(scripts.worker_seen, worker_id, methods, now)

    async def active_worker_methods(self, since: float) -> set[str]:
        served: set[str] = set()
        for row in await self._read(scripts.serving_workers(since)):
            served.update(served_since(row["serving"], since))
        return served

    # ---- admin tokens and dashboard sessions
    async def create_admin_token(self, name: str, token_hash: str, token_prefix: str, now: float) -> AdminToken:
        return await self._transact(scripts.create_admin_token, name, token_hash, token_prefix, now)

    async def admin_token_by_hash(self, token_hash: str) -> AdminToken | None:
        row = await self._read(scripts.admin_token_by_hash(token_hash))
        return AdminToken.from_row(row) if row is not None else None

    async def list_admin_tokens(self) -> list[AdminToken]:
        return [AdminToken.from_row(r) for r in await self._read(scripts.all_admin_tokens())]

    async def set_admin_token_disabled(self, token_id: int, disabled: bool) -> AdminToken | None:
        """Disabling a token ends its dashboard sessions too."""
        return await self._transact(scripts.set_admin_token_disabled, token_id, disabled)

    async def create_admin_session(self, session_hash: str, token_id: int, now: float, expires_at: float) -> None:
        await self._transact(scripts.create_admin_session, session_hash, token_id, now, expires_at)

    async def admin_session(self, session_hash: str, now: float) -> AdminToken | None:
        """The enabled admin token of a live session, or ``None``."""
        row = await self._read(scripts.admin_session(session_hash, now))
        return AdminToken.from_row(row) if row is not None else None

    async def end_admin_session(self, session_hash: str) -> None:
        await self._transact(scripts.end_admin_session, session_hash)

    # ---- the admin's reads: tasks, queue, figures
    async def find_task(self, task_id: int) -> Task | None:
        """Any account's task (the admin's look-up; customers go through :meth:`get_task`)."""
        row = await self._read(scripts.task_by_id(task_id))
        return Task.from_row(row) if row is not None else None

    async def task_ledger(self, task_id: int) -> list[LedgerEntry]:
        return [LedgerEntry.from_row(r) for r in await self._read(scripts.task_ledger(task_id))]

    async def search_tasks(self, search: TaskSearch) -> list[Task]:
        return [Task.from_row(r) for r in await self._read(scripts.search_tasks(search))]

    async def queue_depth(self) -> dict[tuple[str, str], int]:
        """Pending tasks by (method, pool)."""
        return {(r["method"], r["pool"]): int(r["n"]) for r in await self._read(scripts.queue_depth())}

    async def pending_by_account(self, now: float) -> dict[int, int]:
        """Threads in use (live pending tasks) by account."""
        return {int(r["account_id"]): int(r["n"]) for r in await self._read(scripts.pending_by_account(now))}

    async def settled_since(self, since: float, limit: int = 50_000) -> list[Settled]:
        """Solved and unsolvable tasks settled after ``since``, newest first."""
        return [Settled.from_row(r) for r in await self._read(scripts.settled_since(since, limit))]

    async def settled_of(self, task_ids: Sequence[int]) -> list[Settled]:
        """Those of ``task_ids`` that are settled (solved or unsolvable)."""
        if not task_ids:
            return []
        return [Settled.from_row(r) for r in await self._read(scripts.settled_of(task_ids))]

    async def ledger_totals(self, after_id: int = 0) -> tuple[dict[str, tuple[int, int]], int]:
        """By ledger kind: (entries, sum of amounts in micro-dollars), of the entries after ``after_id``;
        and the last entry's id, from which a caller keeping running totals asks next time."""
        found = await self._read(scripts.ledger_totals(after_id))
        last = max((int(r["last"]) for r in found), default=after_id)
        return {r["kind"]: (int(r["n"]), int(r["total"])) for r in found}, last

    async def workers_seen(self, since: float) -> list[WorkerSeen]:
        """Every worker token, with when it last claimed and what it served after ``since``."""
        return [WorkerSeen(WorkerToken.from_row(r), r["last_seen"], tuple(sorted(served_since(r["serving"], since))))
                for r in await self._read(scripts.workers_seen())]

    async def reports(self, methods: Sequence[str]) -> list[tuple[dict[str, Any], str, dict[str, Any]]]:
        """Reported tasks of ``methods``: (the task's parameters, ``good``/``bad``, its account's settings)."""
        found = await self._read(scripts.reports_of(methods)) if methods else []
        return [(json.loads(r["params"]), r["report"], json.loads(r["settings"])) for r in found]


def _answer_text(answer: dict[str, object]) -> str:
    return json.dumps(answer, ensure_ascii=False)
