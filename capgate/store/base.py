"""The storage contract every backend keeps.

Each method that changes money changes it in the same transaction as the task change that causes it,
and returns only after commit. Reads may come from a separate connection: they see every write that
returned before them.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from capgate.store.models import Account, LedgerEntry, NewTask, Task, TaskOutcome, WorkerToken

# A task -> (answer's json fields, None) or (None, error code). No images: a solver this fast and
# pure (the sandbox) answers from the task's fingerprint, and reading every image would be most of
# the cost of settling.
Solve = Callable[[Task], tuple[dict[str, object] | None, str | None]]


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


class Store(abc.ABC):
    # ---- lifecycle
    @abc.abstractmethod
    async def open(self) -> None: ...

    @abc.abstractmethod
    async def close(self) -> None: ...

    # ---- accounts and money
    @abc.abstractmethod
    async def create_account(self, key_hash: str, key_prefix: str, threads: int, balance: int,
                             sandbox: bool) -> Account: ...

    @abc.abstractmethod
    async def account_by_key_hash(self, key_hash: str) -> Account | None: ...

    @abc.abstractmethod
    async def account_by_prefix(self, prefix: str) -> list[Account]: ...

    @abc.abstractmethod
    async def list_accounts(self) -> list[Account]: ...

    @abc.abstractmethod
    async def topup(self, account_id: int, amount: int, note: str) -> Account: ...

    @abc.abstractmethod
    async def update_account(self, account_id: int, *, disabled: bool | None = None,
                             threads: int | None = None, settings: dict[str, object] | None = None,
                             ) -> Account: ...

    @abc.abstractmethod
    async def ledger(self, account_id: int, limit: int = 100) -> list[LedgerEntry]: ...

    # ---- tasks, customer side
    @abc.abstractmethod
    async def submit(self, account: Account, task: NewTask, now: float, limits: SubmitLimits,
                     ) -> SubmitOutcome: ...

    @abc.abstractmethod
    async def get_task(self, account_id: int, task_id: int) -> Task | None: ...

    @abc.abstractmethod
    async def get_tasks(self, account_id: int, task_ids: Sequence[int]) -> dict[int, Task]: ...

    @abc.abstractmethod
    async def outcomes(self, account_id: int, task_ids: Sequence[int]) -> dict[int, TaskOutcome]:
        """What polls need of these tasks of the account (the hot path: no parameters, no images)."""

    @abc.abstractmethod
    async def working_threads(self, account_id: int, now: float) -> int: ...

    @abc.abstractmethod
    async def report(self, account_id: int, task_id: int, good: bool, now: float,
                     policy: ReportPolicy) -> str | None:
        """``None`` when recorded, else the code to answer."""

    # ---- tasks, worker side
    @abc.abstractmethod
    async def claim(self, pools: Sequence[str], methods: Sequence[str] | None, lease: str,
                    lease_s: float, now: float, max_attempts: int) -> Task | None:
        """Lease the oldest due task to ``lease`` (a fresh id per claim, so that an answer from
        a worker whose lease expired and was re-issued is refused)."""

    @abc.abstractmethod
    async def leased_task(self, task_id: int, lease: str) -> Task | None:
        """The task if it is pending and leased to ``lease``."""

    @abc.abstractmethod
    async def has_claimable(self, pools: Sequence[str], methods: Sequence[str] | None, now: float,
                            max_attempts: int) -> bool: ...

    @abc.abstractmethod
    async def get_account(self, account_id: int) -> Account | None: ...

    @abc.abstractmethod
    async def due_pingbacks(self, now: float, hold_s: float, limit: int) -> list[Task]:
        """Settled tasks whose pingback is due, held for ``hold_s`` so no other sender takes them."""

    @abc.abstractmethod
    async def pingback_done(self, task_id: int, delivered: bool, next_at: float | None) -> None:
        """Record an attempt: delivered, retry at ``next_at``, or (``None``) give up."""

    @abc.abstractmethod
    async def settle_due(self, pool: str, now: float, limit: int, solve: Solve) -> list[int]:
        """Settle up to ``limit`` due, unleased tasks of ``pool`` in one transaction, using a pure
        and fast ``solve`` (the sandbox worker): answered ones solved and charged, the others
        unsolvable with the code ``solve`` gave. Returns their ids."""

    @abc.abstractmethod
    async def blobs(self, task_id: int) -> dict[str, bytes]: ...

    @abc.abstractmethod
    async def heartbeat(self, task_id: int, worker: str, lease_s: float, now: float) -> bool: ...

    @abc.abstractmethod
    async def complete(self, task_id: int, worker: str, answer: dict[str, object],
                       confidence: float | None, now: float) -> bool:
        """Settle as solved and charge, if ``worker`` still holds the lease. ``False`` if not."""

    @abc.abstractmethod
    async def fail(self, task_id: int, worker: str, error: str | None, max_attempts: int,
                   now: float, retry_pool: str | None = None) -> bool:
        """Give the task back (or settle it unsolvable with ``error`` after ``max_attempts``)."""

    @abc.abstractmethod
    async def sweep(self, now: float, retention_s: float, max_attempts: int) -> list[int]:
        """Settle overdue tasks (deadline passed, or leases lost ``max_attempts`` times) as
        unsolvable and return their ids; drop images and answers of tasks past the retention."""

    @abc.abstractmethod
    async def pending_methods(self, now: float) -> dict[str, int]: ...

    # ---- addresses
    @abc.abstractmethod
    async def ip_banned(self, ip: str, now: float) -> bool: ...

    @abc.abstractmethod
    async def strike(self, ip: str, now: float, window_s: float, threshold: int, ban_s: float) -> bool:
        """Count a wrong-key request; ``True`` if the address is now banned."""

    # ---- pingback hosts
    @abc.abstractmethod
    async def pingback_hosts(self, account_id: int) -> list[str]: ...

    @abc.abstractmethod
    async def add_pingback_host(self, account_id: int, host: str) -> None: ...

    @abc.abstractmethod
    async def del_pingback_host(self, account_id: int, host: str | None) -> None: ...

    # ---- workers
    @abc.abstractmethod
    async def create_worker(self, name: str, token_hash: str, token_prefix: str, methods: Sequence[str],
                            human: bool) -> WorkerToken: ...

    @abc.abstractmethod
    async def worker_by_token_hash(self, token_hash: str) -> WorkerToken | None: ...

    @abc.abstractmethod
    async def list_workers(self) -> list[WorkerToken]: ...

    @abc.abstractmethod
    async def worker_seen(self, worker_id: int, methods: Sequence[str], now: float) -> None: ...

    @abc.abstractmethod
    async def active_worker_methods(self, since: float) -> set[str]: ...
