"""The rows capgate keeps: accounts, tasks, ledger entries, worker tokens."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, NamedTuple

from capgate.money import micros_to_usd


class TaskState(StrEnum):
    PENDING = "pending"  # queued or leased to a worker
    SOLVED = "solved"
    UNSOLVABLE = "unsolvable"  # deadline passed or workers gave up; never charged
    EXPIRED = "expired"  # settled longer ago than the retention: forgotten


# A stored state to its member by a dict look-up: ``TaskState(value)`` is a Python-level call, made for
# every task a poll or the sandbox reads.
STATES = {state.value: state for state in TaskState}


class Pool(StrEnum):
    """Which workers may claim a task."""

    MAIN = "main"  # built-in OCR and external workers
    SANDBOX = "sandbox"  # the deterministic sandbox worker only
    HUMAN = "human"  # human workers (low-confidence OCR answers routed there)


class LedgerKind(StrEnum):
    TOPUP = "topup"
    CHARGE = "charge"
    REFUND = "refund"


@dataclass(frozen=True)
class Account:
    id: int
    key_prefix: str
    threads: int
    balance: int  # micro-dollars
    disabled: bool
    sandbox: bool
    created_at: float
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def balance_usd(self) -> str:
        return micros_to_usd(self.balance)

    @staticmethod
    def from_row(row: Any) -> Account:
        """From a row read by column name (either backend's row type)."""
        return Account(id=row["id"], key_prefix=row["key_prefix"], threads=row["threads"],
                       balance=row["balance"], disabled=bool(row["disabled"]), sandbox=bool(row["sandbox"]),
                       created_at=row["created_at"], settings=json.loads(row["settings"]))


@dataclass(frozen=True)
class TaskOutcome:
    """What a poll needs of a task, read without its parameters or images."""

    id: int
    method: str
    state: TaskState
    price: int
    created_at: float
    deadline_at: float
    settled_at: float | None
    answer_json: str | None
    error: str | None

    NAMES = ("id", "method", "state", "price", "created_at", "deadline_at", "settled_at", "answer", "error")

    @staticmethod
    def from_row(row: Any) -> TaskOutcome:
        return TaskOutcome(int(row["id"]), row["method"], STATES[row["state"]], int(row["price"]),
                           float(row["created_at"]), float(row["deadline_at"]), row["settled_at"], row["answer"],
                           row["error"])


class Puzzle(NamedTuple):
    """What a pure solver inside the store reads of a task (the sandbox's): read straight from the
    row, where a whole :class:`Task` would decode everything else too, on the sandbox's hot path."""

    id: int
    method: str
    params: dict[str, str]
    created_at: float
    fingerprint: str

    @staticmethod
    def from_row(row: Any) -> Puzzle:
        return Puzzle(row["id"], row["method"], json.loads(row["params"]), row["created_at"], row["fingerprint"])


@dataclass(frozen=True)
class Task:
    id: int
    account_id: int
    method: str
    params: dict[str, str]
    state: TaskState
    pool: Pool
    price: int
    created_at: float
    deadline_at: float
    not_before: float
    answer: dict[str, Any] | None  # the answer's json fields (protocol.answers.encode_json)
    error: str | None
    settled_at: float | None
    report: str | None
    attempts: int
    lease_owner: str | None
    lease_until: float | None
    confidence: float | None
    pingback: str | None
    pingback_attempts: int = 0
    fingerprint: str = ""  # as NewTask.fingerprint: the identity of what was submitted
    lease_worker: int | None = None  # the worker token holding (or last holding) the lease

    @staticmethod
    def from_row(row: Any) -> Task:
        return Task(
            id=int(row["id"]), account_id=int(row["account_id"]), method=row["method"],
            params=json.loads(row["params"]), state=STATES[row["state"]], pool=Pool(row["pool"]),
            price=int(row["price"]), created_at=float(row["created_at"]),
            deadline_at=float(row["deadline_at"]), not_before=float(row["not_before"]),
            answer=json.loads(row["answer"]) if row["answer"] is not None else None,
            error=row["error"], settled_at=row["settled_at"], report=row["report"],
            attempts=int(row["attempts"]), lease_owner=row["lease_owner"], lease_until=row["lease_until"],
            confidence=row["confidence"], pingback=row["pingback"],
            pingback_attempts=int(row["pingback_attempts"]), fingerprint=row["fingerprint"],
            lease_worker=row["lease_worker"],
        )


@dataclass(frozen=True)
class NewTask:
    """A validated submit, ready to be stored."""

    method: str
    params: dict[str, str]
    blobs: dict[str, bytes]
    fingerprint: str  # hash of method + params + blobs: equal fingerprints are duplicates
    price: int
    deadline_s: float
    pool: Pool
    not_before: float = 0.0
    pingback: str | None = None


@dataclass(frozen=True)
class LedgerEntry:
    id: int
    account_id: int
    task_id: int | None
    kind: LedgerKind
    amount: int
    balance_after: int
    created_at: float
    note: str

    @staticmethod
    def from_row(row: Any) -> LedgerEntry:
        return LedgerEntry(id=row["id"], account_id=row["account_id"], task_id=row["task_id"],
                           kind=LedgerKind(row["kind"]), amount=row["amount"], balance_after=row["balance_after"],
                           created_at=row["created_at"], note=row["note"])


@dataclass(frozen=True)
class WorkerToken:
    id: int
    name: str
    token_prefix: str
    methods: tuple[str, ...]
    human: bool
    disabled: bool
    created_at: float

    @staticmethod
    def from_row(row: Any) -> WorkerToken:
        return WorkerToken(id=row["id"], name=row["name"], token_prefix=row["token_prefix"],
                           methods=tuple(json.loads(row["methods"])), human=bool(row["human"]),
                           disabled=bool(row["disabled"]), created_at=row["created_at"])


@dataclass(frozen=True)
class AdminToken:
    """A token for the admin API and dashboard (``capgate admin-tokens create``); stored hashed."""

    id: int
    name: str
    token_prefix: str
    disabled: bool
    created_at: float

    @staticmethod
    def from_row(row: Any) -> AdminToken:
        return AdminToken(id=int(row["id"]), name=row["name"], token_prefix=row["token_prefix"],
                          disabled=bool(row["disabled"]), created_at=float(row["created_at"]))


@dataclass(frozen=True)
class WorkerSeen:
    """A worker token with when it last claimed and the methods it has served since ``since``."""

    worker: WorkerToken
    last_seen: float | None
    serving: tuple[str, ...]


@dataclass(frozen=True)
class Settled:
    """One settled task as the dashboard's figures read it: no parameters, answer or images."""

    id: int
    account_id: int
    method: str
    state: TaskState
    created_at: float
    settled_at: float
    error: str | None

    @property
    def took(self) -> float:
        return self.settled_at - self.created_at

    @staticmethod
    def from_row(row: Any) -> Settled:
        return Settled(int(row["id"]), int(row["account_id"]), row["method"], STATES[row["state"]],
                       float(row["created_at"]), float(row["settled_at"]), row["error"])


@dataclass(frozen=True)
class TaskSearch:
    """What the admin's task search filters on; ``None`` is no filter. Newest first."""

    account_id: int | None = None
    state: TaskState | None = None
    method: str | None = None
    since: float | None = None  # created at or after
    until: float | None = None  # created before
    limit: int = 100
