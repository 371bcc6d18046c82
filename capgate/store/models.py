"""The rows capgate keeps: accounts, tasks, ledger entries, worker tokens."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum
from typing import Any

MICROS = 1_000_000  # balances are integer micro-dollars: no float ever touches money


def usd_to_micros(value: str | Decimal | float) -> int:
    return int((Decimal(str(value)) * MICROS).to_integral_value())


def micros_to_usd(micros: int) -> str:
    """``1.234``-style text: at least two decimals, no trailing zeros beyond them."""
    text = f"{Decimal(micros) / MICROS:.6f}".rstrip("0")
    whole, _, frac = text.partition(".")
    return f"{whole}.{frac.ljust(2, '0')}"


class TaskState(StrEnum):
    PENDING = "pending"  # queued or leased to a worker
    SOLVED = "solved"
    UNSOLVABLE = "unsolvable"  # deadline passed or workers gave up; never charged
    EXPIRED = "expired"  # settled longer ago than the retention: forgotten


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


def effective_state(state: TaskState, created_at: float, deadline_at: float, settled_at: float | None,
                    now: float, retention_s: float) -> TaskState:
    """The state as of ``now``, before the sweeper has written it: a pending task past its
    deadline is unsolvable, a settled one past the retention is expired."""
    if state is TaskState.PENDING:
        if now < deadline_at:
            return TaskState.PENDING
        settled = deadline_at
    elif state is TaskState.EXPIRED:
        return TaskState.EXPIRED
    else:
        settled = settled_at if settled_at is not None else created_at
    if now - settled > retention_s:
        return TaskState.EXPIRED
    return state if state is not TaskState.PENDING else TaskState.UNSOLVABLE


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

    COLUMNS = "id, method, state, price, created_at, deadline_at, settled_at, answer, error"

    def effective_state(self, now: float, retention_s: float) -> TaskState:
        return effective_state(self.state, self.created_at, self.deadline_at, self.settled_at, now, retention_s)

    @property
    def answer(self) -> dict[str, Any] | None:
        return json.loads(self.answer_json) if self.answer_json is not None else None

    @staticmethod
    def from_row(row: Any) -> TaskOutcome:
        return TaskOutcome(int(row[0]), row[1], TaskState(row[2]), int(row[3]), float(row[4]), float(row[5]),
                           row[6], row[7], row[8])


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

    def effective_state(self, now: float, retention_s: float) -> TaskState:
        return effective_state(self.state, self.created_at, self.deadline_at, self.settled_at, now, retention_s)

    @staticmethod
    def from_row(row: Any) -> Task:
        return Task(
            id=int(row["id"]), account_id=int(row["account_id"]), method=row["method"],
            params=json.loads(row["params"]), state=TaskState(row["state"]), pool=Pool(row["pool"]),
            price=int(row["price"]), created_at=float(row["created_at"]),
            deadline_at=float(row["deadline_at"]), not_before=float(row["not_before"]),
            answer=json.loads(row["answer"]) if row["answer"] is not None else None,
            error=row["error"], settled_at=row["settled_at"], report=row["report"],
            attempts=int(row["attempts"]), lease_owner=row["lease_owner"], lease_until=row["lease_until"],
            confidence=row["confidence"], pingback=row["pingback"],
            pingback_attempts=int(row["pingback_attempts"]), fingerprint=row["fingerprint"],
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
