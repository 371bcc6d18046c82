"""The task lifecycle: every phase a task can be in, every event, and what each event does.

Pure: no I/O and no clock (``now`` is always an argument). Both store backends read a task, ask
:func:`decide` what an event does to it, and write what it returns; neither decides on its own.
Admission of a new task (the submit event) is :func:`admit`.

``TABLE`` is the whole state machine, read as "in this phase, this event leads there". A rule's
guards (who holds the lease and with which worker token, the deadline, the attempts left, the report
window and the account's refund budget) are checked in
:func:`decide`, the one place that applies the table::

    QUEUED --claim--> LEASED --answer--> SOLVED --report good/bad--> SOLVED --expire--> EXPIRED
      |                 |  \\--give back / to a person--> QUEUED (UNSOLVABLE when attempts are used up)
      |                 |  \\--fail--> UNSOLVABLE --expire--> EXPIRED
      \\--deadline------\\--deadline--> UNSOLVABLE   (and --cancel--> when the account is disabled)
    QUEUED --answer at once--> SOLVED,  QUEUED --fail at once--> UNSOLVABLE   (claimed and settled in one step)

A lease that runs out is lost without a write: a pending task whose lease has lapsed is QUEUED
again (any worker may claim it). The sweep writes ``lease_lost`` only for such a task whose last
attempt it was, which settles it unsolvable.

Money: an answer charges the task's price once; a refund (``reportbad``) gives back at most what
that answer charged. Nothing else moves money.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Literal, NamedTuple

from capgate.protocol.codes import C
from capgate.store.models import STATES, Pool, TaskState


class Phase(StrEnum):
    QUEUED = "queued"  # pending, no live lease: a worker may claim it
    LEASED = "leased"  # pending, a worker holds a live lease
    SOLVED = "solved"
    UNSOLVABLE = "unsolvable"  # never charged
    EXPIRED = "expired"  # settled longer ago than the retention: parameters, images and answer gone


class Event(StrEnum):
    CLAIM = "claim"
    # Claimed and settled in one step, by a pure solver inside the store's transaction (the
    # sandbox): one decision where a claim and an answer would be two, on the sandbox's hot path.
    ANSWER_AT_ONCE = "answer_at_once"
    FAIL_AT_ONCE = "fail_at_once"
    HEARTBEAT = "heartbeat"
    ANSWER = "answer"
    GIVE_BACK = "give_back"  # the worker could not solve it; another attempt may
    TO_HUMAN = "to_human"  # give back into the human workers' queue
    FAIL = "fail"  # the worker says no attempt can solve it
    LEASE_LOST = "lease_lost"  # the lease lapsed (written by the sweep when no attempt is left)
    DEADLINE = "deadline"  # the task's deadline passed while it was pending
    CANCEL = "cancel"  # the account was disabled: its pending work settles, uncharged
    REPORT_GOOD = "report_good"
    REPORT_BAD = "report_bad"
    EXPIRE = "expire"  # the retention passed since it settled


LeaseEffect = Literal["take", "extend", "drop", "clear", "record", "keep"]


Check = Literal["deadline", "lease_lost", "report", "retention"]


@dataclass(frozen=True)
class Rule:
    to: Phase
    exhausted: Phase | None = None  # where it goes instead once its attempts are used up
    # take: a new lease; drop: end it, keep who held it; clear: forget it; record: who held it, ended
    lease: LeaseEffect = "keep"
    attempt: bool = False  # counts as an attempt
    holder_only: bool = False  # only the worker holding the live lease may cause it
    claims: bool = False  # a claim's guards: a lease to give, due, an attempt left
    answers: bool = False  # it brings the answer's fields
    check: Check | None = None  # the event's own guard (``_guard``)
    charge: bool = False
    refund: bool = False
    pool: Pool | None = None  # moves the task to this pool
    report: str | None = None


_GIVE_BACK = Rule(Phase.QUEUED, exhausted=Phase.UNSOLVABLE, lease="clear", holder_only=True)
_DEADLINE = Rule(Phase.UNSOLVABLE, lease="drop", check="deadline")
_CANCEL = Rule(Phase.UNSOLVABLE, lease="drop")
_EXPIRE = Rule(Phase.EXPIRED, check="retention")

TABLE: Mapping[Phase, Mapping[Event, Rule]] = {
    Phase.QUEUED: {
        Event.CLAIM: Rule(Phase.LEASED, lease="take", attempt=True, claims=True),
        Event.ANSWER_AT_ONCE: Rule(Phase.SOLVED, lease="record", attempt=True, claims=True, answers=True,
                                   charge=True),
        Event.FAIL_AT_ONCE: Rule(Phase.UNSOLVABLE, lease="record", attempt=True, claims=True),
        Event.LEASE_LOST: Rule(Phase.QUEUED, exhausted=Phase.UNSOLVABLE, lease="clear", check="lease_lost"),
        Event.DEADLINE: _DEADLINE,
        Event.CANCEL: _CANCEL,
    },
    Phase.LEASED: {
        Event.HEARTBEAT: Rule(Phase.LEASED, lease="extend", holder_only=True),
        Event.ANSWER: Rule(Phase.SOLVED, lease="drop", holder_only=True, answers=True, charge=True),
        Event.GIVE_BACK: _GIVE_BACK,
        Event.TO_HUMAN: dataclasses.replace(_GIVE_BACK, pool=Pool.HUMAN),
        Event.FAIL: Rule(Phase.UNSOLVABLE, lease="drop", holder_only=True),
        Event.DEADLINE: _DEADLINE,
        Event.CANCEL: _CANCEL,
    },
    Phase.SOLVED: {
        Event.REPORT_GOOD: Rule(Phase.SOLVED, report="good", check="report"),
        Event.REPORT_BAD: Rule(Phase.SOLVED, report="bad", refund=True, check="report"),
        Event.EXPIRE: _EXPIRE,
    },
    Phase.UNSOLVABLE: {
        Event.EXPIRE: _EXPIRE,
    },
    Phase.EXPIRED: {},
}

_QUEUED, _LEASED = Phase.QUEUED, Phase.LEASED  # named once: an enum member is a Python-level look-up
_PHASE_OF: dict[TaskState, Phase] = {state: Phase(state.value) for state in TaskState if state is not TaskState.PENDING}
_STATE_OF = {Phase.QUEUED: TaskState.PENDING, Phase.LEASED: TaskState.PENDING, Phase.SOLVED: TaskState.SOLVED,
             Phase.UNSOLVABLE: TaskState.UNSOLVABLE, Phase.EXPIRED: TaskState.EXPIRED}


def states_that_allow(event: Event) -> tuple[TaskState, ...]:
    """The stored states in which ``event`` may happen, for statements that act on many rows."""
    return tuple(dict.fromkeys(_STATE_OF[phase] for phase, rules in TABLE.items() if event in rules))


_EXPIRES = frozenset(states_that_allow(Event.EXPIRE))


def state_as_of(state: TaskState, created_at: float, deadline_at: float, settled_at: float | None, now: float,
                retention_s: float) -> TaskState:
    """The state at ``now`` as the sweep will write it: the deadline and expiry events happen when
    their time comes, but the sweeper writes them about once a second, and a poll must not answer
    ``CAPCHA_NOT_READY`` for a task whose deadline has passed."""
    if state is TaskState.PENDING:
        if now < deadline_at:
            return state
        state, settled_at = _STATE_OF[TABLE[Phase.QUEUED][Event.DEADLINE].to], deadline_at
    if state in _EXPIRES and now - (settled_at if settled_at is not None else created_at) > retention_s:
        return _STATE_OF[TABLE[Phase(state.value)][Event.EXPIRE].to]
    return state


class TaskView(NamedTuple):
    """The columns of a task that its lifecycle reads and writes (``_fields``, in this order).

Named tuples, this and the other values here: every sandbox task is decided on the store's writer
thread, so building them must cost little."""

    id: int
    account_id: int
    state: TaskState
    pool: str
    price: int
    deadline_at: float
    not_before: float
    attempts: int
    lease_owner: str | None
    lease_until: float | None
    lease_worker: int | None  # the worker token that holds (or last held) the lease; None: in-process
    settled_at: float | None
    error: str | None
    report: str | None
    answer: str | None  # the answer's json fields, as stored
    confidence: float | None

    @staticmethod
    def from_row(row: Any) -> TaskView:
        """From a row read by column name (either backend's row type). The columns' types are the
        fields' on both backends (INTEGER/BIGINT, REAL/DOUBLE PRECISION): nothing to convert, on the
        writer's hot path."""
        return TaskView(row["id"], row["account_id"], STATES[row["state"]], row["pool"], row["price"],
                        row["deadline_at"], row["not_before"], row["attempts"], row["lease_owner"],
                        row["lease_until"], row["lease_worker"], row["settled_at"], row["error"], row["report"],
                        row["answer"], row["confidence"])

    def phase(self, now: float) -> Phase:
        if self.state == "pending":
            live = self.lease_owner is not None and self.lease_until is not None and self.lease_until >= now
            return _LEASED if live else _QUEUED
        return _PHASE_OF[self.state]


class Context(NamedTuple):
    """What an event brings with it, and the service's rules that apply."""

    now: float
    max_attempts: int
    lease: str | None = None  # the worker's lease: the new one (claim) or the one it holds
    lease_s: float = 0.0
    worker: int | None = None  # the worker token acting (None: a worker inside this service)
    answer: str | None = None
    confidence: float | None = None
    error: str | None = None  # the code the customer will read if the task settles unsolvable
    report_window_s: float = 0.0
    refund_bad: bool = True
    refund_room: int | None = None  # what the account's refund budget still allows (None: no budget)
    retention_s: float = 0.0


class Decision(NamedTuple):
    """What an event does: the task as it is afterwards, the columns it sets, the money it moves."""

    task: TaskView
    changed: Mapping[str, Any]  # column -> new value: what the store writes
    charge: int = 0  # micro-dollars taken from the account
    refund: int = 0  # micro-dollars given back


FORBIDDEN = "forbidden"  # Refused.code for an act on a lease another worker token holds


@dataclass(frozen=True)
class Refused:
    """The event may not happen; ``code`` says why in the protocol's words, where it has one."""

    reason: str
    code: str | None = None


def decide(task: TaskView, event: Event, ctx: Context) -> Decision | Refused:
    phase = task.phase(ctx.now)
    rule = TABLE[phase].get(event)
    if rule is None:
        return _refused_report(task, event) if event in _REPORTS \
            else Refused(f"{event.value} is not possible when {phase.value}")
    refused = _guard(task, rule, ctx)
    if refused is not None:
        return refused
    exhausted = rule.exhausted is not None and task.attempts >= ctx.max_attempts
    to = rule.exhausted if exhausted and rule.exhausted is not None else rule.to
    changed: dict[str, Any] = {}
    lease = rule.lease
    if lease == "take":
        changed.update(lease_owner=ctx.lease, lease_until=ctx.now + ctx.lease_s, lease_worker=ctx.worker)
    elif lease == "record":
        changed.update(lease_owner=ctx.lease, lease_until=None, lease_worker=ctx.worker)
    elif lease == "extend":
        changed["lease_until"] = ctx.now + ctx.lease_s
    elif lease == "drop" or (lease == "clear" and to == "unsolvable"):
        changed["lease_until"] = None  # settled or past saving: who held it last stays on record
    elif lease == "clear":
        changed.update(lease_owner=None, lease_until=None, lease_worker=None)
    if rule.attempt:
        changed["attempts"] = task.attempts + 1
    if rule.pool is not None:
        changed["pool"] = rule.pool.value
    if rule.report is not None:
        changed["report"] = rule.report
    charge = refund = 0
    if to is not phase:
        changed["state"] = _STATE_OF[to]
        # Phases compared as the strings they are: naming an enum member is a Python-level look-up on
        # 3.11, and a sandbox task is decided on the writer thread's hot path.
        if to == "solved":
            changed.update(answer=ctx.answer, confidence=ctx.confidence, settled_at=ctx.now)
            charge = task.price if rule.charge else 0
        elif to == "unsolvable":
            # A task whose deadline passed settled at its deadline, whenever the sweep saw it.
            settled = task.deadline_at if rule.check == "deadline" else ctx.now
            changed.update(error=ctx.error or C.CAPTCHA_UNSOLVABLE, settled_at=settled)
        elif to == "expired":
            changed["answer"] = None
    if rule.refund and ctx.refund_bad:
        refund = task.price  # what the answer charged: a solved task was charged its price once
    # The task afterwards: each field its new value where it changed (map calls changed.get(name, old)).
    after = _new_view(TaskView, map(changed.get, TaskView._fields, task))
    return Decision(after, changed, charge, refund)


_new_view = tuple.__new__
_REPORTS = frozenset((Event.REPORT_GOOD, Event.REPORT_BAD))


def _guard(task: TaskView, rule: Rule, ctx: Context) -> Refused | None:
    now = ctx.now
    if rule.holder_only:
        if ctx.lease is None or ctx.lease != task.lease_owner:
            return Refused("the lease is not this worker's")
        if task.lease_worker is not None and ctx.worker != task.lease_worker:
            return Refused("the lease is another worker token's", FORBIDDEN)
    if rule.claims:
        if ctx.lease is None:
            return Refused("a claim needs a lease")
        if task.not_before > now:
            return Refused("not due yet")
        if task.attempts >= ctx.max_attempts:
            return Refused("no attempt left")
    check = rule.check
    if check == "deadline":
        return None if now >= task.deadline_at else Refused("the deadline has not passed")
    if task.state == "pending" and now >= task.deadline_at:
        return Refused("the deadline has passed")
    if check == "lease_lost" and task.lease_owner is None and task.attempts < ctx.max_attempts:
        return Refused("no lease to lose")
    if rule.answers and ctx.answer is None:
        return Refused("an answer needs its fields")
    if check == "report":
        if task.report is not None:
            return Refused("reported already", C.DUPLICATE_REPORT)
        if task.settled_at is None or now - task.settled_at > ctx.report_window_s:
            return Refused("too late to report", C.REPORT_NOT_RECORDED)
        if rule.refund and ctx.refund_bad and ctx.refund_room is not None and task.price > ctx.refund_room:
            return Refused("the account's refund budget is used up", C.REPORT_NOT_RECORDED)
    if check == "retention" and (task.settled_at is None or now - task.settled_at <= ctx.retention_s):
        return Refused("still within the retention")
    return None


def _refused_report(task: TaskView, event: Event) -> Refused:
    if task.report is not None:
        return Refused("reported already", C.DUPLICATE_REPORT)
    return Refused(f"{event.value} needs a solved task", C.REPORT_NOT_RECORDED)


class Load(NamedTuple):
    """An account's and the service's pending work, as a submit sees it."""

    threads: int  # the account's cap
    working: int  # its pending tasks
    balance: int
    reserved: int  # the prices of its pending tasks: money already promised
    duplicate: bool  # the same task is pending for it already
    queued: int  # pending tasks service-wide
    disabled: bool = False  # the account was disabled since the caller read it

    @staticmethod
    def from_row(row: Any, threads: int) -> Load:
        """From the load statement's row (``capgate.store.sql.load_statement``). Its counts are
        integers and its flags truthy on both backends already: nothing to convert, on every submit."""
        return Load(threads, row["working"], row["balance"], row["reserved"], row["duplicate"], row["queued"],
                    row["disabled"])


def admit(load: Load, price: int, max_pending: int, thread_cap_code: str) -> str | None:
    """The submit event: ``None`` when a new task may be queued, else the code that refuses it.
    Checked in this order, as 2captcha answers them."""
    if load.disabled:
        return C.KEY_DOES_NOT_EXIST
    if load.working >= load.threads:
        return thread_cap_code
    if price > 0 and load.balance - load.reserved < price:
        return C.ZERO_BALANCE
    if load.duplicate:
        return C.BAD_DUPLICATES
    if load.queued >= max_pending:
        return C.NO_SLOT_AVAILABLE
    return None
