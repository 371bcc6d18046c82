"""The task lifecycle without a database: every cell of the table, and random event sequences.

The state machine at the end drives many tasks of one account through random events and clock
steps, applying each decision the way the stores do, and checks after every step that no task is
answered twice, none is charged more than once, refunds never exceed charges, every task has
settled once its deadline is past and the sweep has run, and the balance equals the ledger's sum.
"""

from __future__ import annotations

import itertools

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from capgate.protocol.codes import C
from capgate.store.lifecycle import (
    FORBIDDEN,
    TABLE,
    Context,
    Decision,
    Event,
    Load,
    Phase,
    Refused,
    TaskView,
    admit,
    decide,
    states_that_allow,
)
from capgate.store.models import Pool, TaskState

T0 = 1_000.0
MAX = 3


def queued(**changes: object) -> TaskView:
    task = TaskView(id=1, account_id=7, state=TaskState.PENDING, pool=Pool.MAIN.value, price=50, deadline_at=T0 + 100,
                    not_before=T0, attempts=0, lease_owner=None, lease_until=None, lease_worker=None,
                    settled_at=None, error=None, report=None, answer=None, confidence=None)
    return task._replace(**changes)  # type: ignore[arg-type]


def ctx(now: float = T0, **kw: object) -> Context:
    return Context(now, MAX, **kw)  # type: ignore[arg-type]


def ok(result: Decision | Refused) -> Decision:
    assert isinstance(result, Decision), result
    return result


def leased(lease: str = "L", now: float = T0) -> TaskView:
    return ok(decide(queued(), Event.CLAIM, ctx(now, lease=lease, lease_s=30))).task


def solved(now: float = T0 + 1) -> TaskView:
    return ok(decide(leased(), Event.ANSWER, ctx(now, lease="L", answer='{"text":"x"}'))).task


# ------------------------------------------------------------------------------------------ the table


def test_every_phase_has_a_row_and_settled_phases_end_in_expiry() -> None:
    assert set(TABLE) == set(Phase)
    assert TABLE[Phase.EXPIRED] == {}
    for phase in (Phase.SOLVED, Phase.UNSOLVABLE):
        assert TABLE[phase][Event.EXPIRE].to is Phase.EXPIRED
    assert states_that_allow(Event.EXPIRE) == (TaskState.SOLVED, TaskState.UNSOLVABLE)
    assert states_that_allow(Event.CLAIM) == (TaskState.PENDING,)


def test_only_an_answer_charges_and_only_a_bad_report_refunds() -> None:
    for phase, rules in TABLE.items():
        for event, cell in rules.items():
            assert cell.charge == (event in (Event.ANSWER, Event.ANSWER_AT_ONCE)), (phase, event)
            assert cell.refund == (event is Event.REPORT_BAD), (phase, event)


def test_every_rule_carries_its_events_guards() -> None:
    """The guards read the rule's flags, not the event: each event's rows must carry its own, or a
    new row would skip a guard without a word."""
    claims = {Event.CLAIM, Event.ANSWER_AT_ONCE, Event.FAIL_AT_ONCE}
    answers = {Event.ANSWER, Event.ANSWER_AT_ONCE}
    checks = {Event.DEADLINE: "deadline", Event.LEASE_LOST: "lease_lost", Event.REPORT_GOOD: "report",
              Event.REPORT_BAD: "report", Event.EXPIRE: "retention"}
    holders = {Event.HEARTBEAT, Event.ANSWER, Event.GIVE_BACK, Event.TO_HUMAN, Event.FAIL}
    for phase, rules in TABLE.items():
        for event, cell in rules.items():
            assert cell.claims == (event in claims), (phase, event)
            assert cell.answers == (event in answers), (phase, event)
            assert cell.check == checks.get(event), (phase, event)
            assert cell.holder_only == (event in holders), (phase, event)


@pytest.mark.parametrize(("phase", "event"), [
    (phase, event) for phase, event in itertools.product(Phase, Event) if event not in TABLE[phase]])
def test_events_outside_the_table_are_refused(phase: Phase, event: Event) -> None:
    task = {Phase.QUEUED: queued(), Phase.LEASED: leased(), Phase.SOLVED: solved(),
            Phase.UNSOLVABLE: queued(state=TaskState.UNSOLVABLE, settled_at=T0),
            Phase.EXPIRED: queued(state=TaskState.EXPIRED, settled_at=T0)}[phase]
    assert task.phase(T0 + 2) is phase
    result = decide(task, event, ctx(T0 + 2, lease="L", lease_s=30, answer="{}", report_window_s=900,
                                     retention_s=0))
    assert isinstance(result, Refused), (phase, event, result)


def test_claim_takes_a_lease_and_an_attempt() -> None:
    task = leased(now=T0 + 5)
    assert (task.state, task.lease_owner, task.lease_until, task.attempts) == (TaskState.PENDING, "L", T0 + 35, 1)
    assert task.phase(T0 + 35) is Phase.LEASED
    assert task.phase(T0 + 35.1) is Phase.QUEUED  # the lease lapsed: lost, claimable again
    assert isinstance(decide(queued(not_before=T0 + 1), Event.CLAIM, ctx(lease="L")), Refused)
    assert isinstance(decide(queued(attempts=MAX), Event.CLAIM, ctx(lease="L")), Refused)
    assert isinstance(decide(queued(), Event.CLAIM, ctx(T0 + 100, lease="L")), Refused)  # past its deadline
    assert isinstance(decide(queued(), Event.CLAIM, ctx()), Refused)  # no lease to give


def test_only_the_holder_acts_and_only_while_the_lease_lives() -> None:
    task = leased()
    for event in (Event.HEARTBEAT, Event.ANSWER, Event.GIVE_BACK, Event.TO_HUMAN, Event.FAIL):
        assert isinstance(decide(task, event, ctx(T0 + 1, lease="other", answer="{}")), Refused), event
        assert isinstance(decide(task, event, ctx(T0 + 31, lease="L", answer="{}")), Refused), event
    assert ok(decide(task, Event.HEARTBEAT, ctx(T0 + 20, lease="L", lease_s=30))).task.lease_until == T0 + 50


def test_only_the_worker_token_that_claimed_acts_on_the_lease() -> None:
    task = ok(decide(queued(), Event.CLAIM, ctx(lease="L", lease_s=30, worker=4))).task
    assert task.lease_worker == 4
    for event in (Event.HEARTBEAT, Event.ANSWER, Event.GIVE_BACK, Event.FAIL):
        for other in (5, None):
            refused = decide(task, event, ctx(T0 + 1, lease="L", lease_s=30, answer="{}", worker=other))
            assert refused == Refused("the lease is another worker token's", FORBIDDEN), (event, other)
        assert isinstance(decide(task, event, ctx(T0 + 1, lease="L", lease_s=30, answer="{}", worker=4)), Decision)
    back = ok(decide(task, Event.GIVE_BACK, ctx(T0 + 1, lease="L", worker=4))).task
    assert back.lease_worker is None  # queued again: the next claim's token holds it


def test_cancel_settles_pending_work_uncharged() -> None:
    for task in (queued(), leased()):
        decision = ok(decide(task, Event.CANCEL, ctx(T0 + 1)))
        assert (decision.task.state, decision.task.error, decision.charge) == (
            TaskState.UNSOLVABLE, C.CAPTCHA_UNSOLVABLE, 0)
    assert isinstance(decide(solved(), Event.CANCEL, ctx(T0 + 2)), Refused)  # what was delivered stays


def test_answer_settles_and_charges_the_price() -> None:
    decision = ok(decide(leased(), Event.ANSWER, ctx(T0 + 1, lease="L", answer='{"text":"x"}', confidence=0.9)))
    assert decision.charge == 50 and decision.refund == 0
    after = decision.task
    assert (after.state, after.answer, after.confidence, after.settled_at, after.lease_until) == (
        TaskState.SOLVED, '{"text":"x"}', 0.9, T0 + 1, None)
    assert after.lease_owner == "L"  # who answered stays on record
    assert set(decision.changed) == {"state", "answer", "confidence", "settled_at", "lease_until"}
    assert isinstance(decide(after, Event.ANSWER, ctx(T0 + 2, lease="L", answer="{}")), Refused)


def test_give_back_requeues_until_the_attempts_are_used_up() -> None:
    back = ok(decide(leased(), Event.GIVE_BACK, ctx(T0 + 1, lease="L"))).task
    assert (back.state, back.lease_owner, back.lease_until, back.attempts) == (TaskState.PENDING, None, None, 1)
    human = ok(decide(leased(), Event.TO_HUMAN, ctx(T0 + 1, lease="L"))).task
    assert human.pool == Pool.HUMAN.value and human.phase(T0 + 1) is Phase.QUEUED
    last = leased()._replace(attempts=MAX)
    for event in (Event.GIVE_BACK, Event.TO_HUMAN):
        decision = ok(decide(last, event, ctx(T0 + 2, lease="L")))
        assert (decision.task.state, decision.task.error, decision.task.settled_at, decision.charge) == (
            TaskState.UNSOLVABLE, C.CAPTCHA_UNSOLVABLE, T0 + 2, 0)
    with_code = ok(decide(last, Event.GIVE_BACK, ctx(T0 + 2, lease="L", error=C.PROXY_CONNECTION_FAILED))).task
    assert with_code.error == C.PROXY_CONNECTION_FAILED


def test_fail_settles_at_once() -> None:
    after = ok(decide(leased(), Event.FAIL, ctx(T0 + 1, lease="L", error=C.UPLOAD))).task
    assert (after.state, after.error, after.settled_at, after.attempts) == (TaskState.UNSOLVABLE, C.UPLOAD, T0 + 1, 1)


def test_claimed_and_settled_at_once_is_a_claim_then_an_answer_or_a_fail() -> None:
    answered = ok(decide(queued(), Event.ANSWER_AT_ONCE, ctx(T0 + 1, lease="sandbox", answer='{"text":"x"}',
                                                          confidence=1.0)))
    claimed = ok(decide(queued(), Event.CLAIM, ctx(T0 + 1, lease="sandbox")))
    answered_later = ok(decide(claimed.task, Event.ANSWER, ctx(T0 + 1, lease="sandbox", answer='{"text":"x"}',
                                                             confidence=1.0)))
    assert answered.task == answered_later.task
    assert (answered.charge, answered.refund) == (50, 0)
    failed = ok(decide(queued(), Event.FAIL_AT_ONCE, ctx(T0 + 1, lease="sandbox", error=C.UPLOAD)))
    assert failed.task == ok(decide(claimed.task, Event.FAIL, ctx(T0 + 1, lease="sandbox", error=C.UPLOAD))).task
    assert (failed.charge, failed.task.attempts, failed.task.error) == (0, 1, C.UPLOAD)
    # The claim's guards hold: not due, no attempt left, past the deadline, no lease; and an answer
    # needs its fields.
    for event in (Event.ANSWER_AT_ONCE, Event.FAIL_AT_ONCE):
        for task, now in ((queued(not_before=T0 + 5), T0 + 1), (queued(attempts=MAX), T0 + 1), (queued(), T0 + 100)):
            assert isinstance(decide(task, event, ctx(now, lease="sandbox", answer="{}")), Refused), (event, task)
        assert isinstance(decide(queued(), event, ctx(T0 + 1, answer="{}")), Refused)
        assert isinstance(decide(leased(), event, ctx(T0 + 1, lease="L", answer="{}")), Refused)  # held already
    assert isinstance(decide(queued(), Event.ANSWER_AT_ONCE, ctx(T0 + 1, lease="sandbox")), Refused)


def test_deadline_settles_at_the_deadline() -> None:
    for task in (queued(), leased()):
        assert isinstance(decide(task, Event.DEADLINE, ctx(T0 + 99)), Refused)
        after = ok(decide(task, Event.DEADLINE, ctx(T0 + 150))).task
        assert (after.state, after.error, after.settled_at, after.lease_until) == (
            TaskState.UNSOLVABLE, C.CAPTCHA_UNSOLVABLE, T0 + 100, None)


def test_lease_lost_on_the_last_attempt_settles() -> None:
    lapsed = leased()._replace(attempts=MAX)
    assert isinstance(decide(lapsed, Event.LEASE_LOST, ctx(T0 + 10)), Refused)  # still held
    after = ok(decide(lapsed, Event.LEASE_LOST, ctx(T0 + 31))).task
    assert (after.state, after.settled_at) == (TaskState.UNSOLVABLE, T0 + 31)
    requeued = ok(decide(leased(), Event.LEASE_LOST, ctx(T0 + 31))).task
    assert (requeued.state, requeued.lease_owner) == (TaskState.PENDING, None)


def test_reports() -> None:
    task = solved(T0 + 1)
    window = {"report_window_s": 60.0}
    good = ok(decide(task, Event.REPORT_GOOD, ctx(T0 + 2, **window)))
    assert (good.task.report, good.refund) == ("good", 0)
    bad = ok(decide(task, Event.REPORT_BAD, ctx(T0 + 2, **window)))
    assert (bad.task.report, bad.refund) == ("bad", 50)
    assert ok(decide(task, Event.REPORT_BAD, ctx(T0 + 2, refund_bad=False, **window))).refund == 0
    assert decide(bad.task, Event.REPORT_BAD, ctx(T0 + 3, **window)) == Refused("reported already",
                                                                                   C.DUPLICATE_REPORT)
    assert ok(decide(task, Event.REPORT_BAD, ctx(T0 + 2, refund_room=50, **window))).refund == 50
    over = decide(task, Event.REPORT_BAD, ctx(T0 + 2, refund_room=49, **window))
    assert over == Refused("the account's refund budget is used up", C.REPORT_NOT_RECORDED)
    assert isinstance(decide(task, Event.REPORT_GOOD, ctx(T0 + 2, refund_room=0, **window)), Decision)
    late = decide(task, Event.REPORT_BAD, ctx(T0 + 62, **window))
    assert isinstance(late, Refused) and late.code == C.REPORT_NOT_RECORDED
    for unsolved in (queued(), leased(), queued(state=TaskState.UNSOLVABLE, settled_at=T0)):
        refused = decide(unsolved, Event.REPORT_BAD, ctx(T0 + 2, **window))
        assert isinstance(refused, Refused) and refused.code == C.REPORT_NOT_RECORDED


def test_expiry_after_the_retention() -> None:
    task = solved(T0 + 1)
    assert isinstance(decide(task, Event.EXPIRE, ctx(T0 + 50, retention_s=60)), Refused)
    after = ok(decide(task, Event.EXPIRE, ctx(T0 + 62, retention_s=60))).task
    assert (after.state, after.answer) == (TaskState.EXPIRED, None)


def test_admission_order() -> None:
    load = Load(threads=2, working=0, balance=100, reserved=0, duplicate=False, queued=0)
    assert admit(load, 50, 10, C.NO_SLOT_AVAILABLE) is None
    assert admit(load._replace(working=2, balance=0, duplicate=True), 50, 10, "CAP") == "CAP"
    assert admit(load._replace(reserved=60, duplicate=True), 50, 10, "CAP") == C.ZERO_BALANCE
    assert admit(load._replace(balance=0), 0, 10, "CAP") is None  # free tasks need no balance
    assert admit(load._replace(duplicate=True, queued=10), 50, 10, "CAP") == C.BAD_DUPLICATES
    assert admit(load._replace(queued=10), 50, 10, "CAP") == C.NO_SLOT_AVAILABLE
    assert admit(load._replace(disabled=True, working=2), 50, 10, "CAP") == C.KEY_DOES_NOT_EXIST


# ------------------------------------------------------------------------------------------ random sequences


class Lifecycle(RuleBasedStateMachine):
    """One account's tasks under random events, applied as the stores apply them."""

    def __init__(self) -> None:
        super().__init__()
        self.now = T0
        self.tasks: dict[int, TaskView] = {}
        self.leases: dict[int, str] = {}
        self.balance = 0
        self.ledger: list[int] = []
        self.charged: dict[int, int] = {}
        self.refunded: dict[int, int] = {}
        self.answers: dict[int, int] = {}
        self.swept_at = T0
        self.serial = itertools.count(1)

    def apply(self, task_id: int, event: Event, context: Context) -> None:
        before = self.tasks[task_id]
        result = decide(before, event, context)
        if isinstance(result, Refused):
            return
        self.tasks[task_id] = result.task
        if event in (Event.ANSWER, Event.ANSWER_AT_ONCE):
            self.answers[task_id] = self.answers.get(task_id, 0) + 1
        for amount, book in ((-result.charge, self.charged), (result.refund, self.refunded)):
            if amount:
                self.balance += amount
                self.ledger.append(amount)
                book[task_id] = book.get(task_id, 0) + abs(amount)

    @rule(price=st.sampled_from([0, 10, 25]), ttl=st.sampled_from([5.0, 20.0, 60.0]))
    def submit(self, price: int, ttl: float) -> None:
        working = sum(t.state is TaskState.PENDING and t.deadline_at > self.now for t in self.tasks.values())
        reserved = sum(t.price for t in self.tasks.values() if t.state is TaskState.PENDING
                       and t.deadline_at > self.now)
        load = Load(threads=5, working=working, balance=self.balance, reserved=reserved, duplicate=False,
                    queued=working)
        if admit(load, price, 100, C.NO_SLOT_AVAILABLE) is not None:
            return
        task_id = next(self.serial)
        self.tasks[task_id] = queued(price=price, deadline_at=self.now + ttl, not_before=self.now)._replace(
                                                  id=task_id)

    @rule(amount=st.sampled_from([10, 100]))
    def topup(self, amount: int) -> None:
        self.balance += amount
        self.ledger.append(amount)

    def ids(self, state: TaskState | None = None) -> list[int]:
        return sorted(i for i, task in self.tasks.items() if state is None or task.state is state)

    @precondition(lambda self: bool(self.ids(TaskState.PENDING)))
    @rule(data=st.data(), lease_s=st.sampled_from([1.0, 10.0]))
    def claim(self, data: st.DataObject, lease_s: float) -> None:
        task_id = data.draw(st.sampled_from(self.ids(TaskState.PENDING)))
        lease = f"lease-{next(self.serial)}"
        before = self.tasks[task_id]
        self.apply(task_id, Event.CLAIM, Context(self.now, MAX, lease=lease, lease_s=lease_s))
        if self.tasks[task_id] is not before:
            self.leases[task_id] = lease

    @precondition(lambda self: bool(self.ids(TaskState.PENDING)))
    @rule(data=st.data(), answered=st.booleans())
    def settled_at_once(self, data: st.DataObject, answered: bool) -> None:
        task_id = data.draw(st.sampled_from(self.ids(TaskState.PENDING)))
        event = Event.ANSWER_AT_ONCE if answered else Event.FAIL_AT_ONCE
        self.apply(task_id, event, Context(self.now, MAX, lease="sandbox", answer='{"text":"a"}'))

    def held(self) -> list[int]:
        return sorted(i for i in self.leases if self.tasks[i].state is TaskState.PENDING)

    @precondition(lambda self: bool(self.held()))
    @rule(data=st.data(), event=st.sampled_from([Event.ANSWER, Event.HEARTBEAT, Event.GIVE_BACK, Event.TO_HUMAN,
                                                 Event.FAIL]),
          stale=st.booleans())
    def worker_acts(self, data: st.DataObject, event: Event, stale: bool) -> None:
        task_id = data.draw(st.sampled_from(self.held()))
        lease = "someone-else" if stale else self.leases[task_id]
        self.apply(task_id, event, Context(self.now, MAX, lease=lease, lease_s=5.0, answer='{"text":"a"}',
                                           error=None))

    @precondition(lambda self: bool(self.held()))
    @rule(data=st.data())
    def answer(self, data: st.DataObject) -> None:
        task_id = data.draw(st.sampled_from(self.held()))
        self.apply(task_id, Event.ANSWER, Context(self.now, MAX, lease=self.leases[task_id], answer='{"text":"a"}'))

    @precondition(lambda self: bool(self.tasks))
    @rule(data=st.data(), good=st.booleans(), solved=st.booleans())
    def report(self, data: st.DataObject, good: bool, solved: bool) -> None:
        task_id = data.draw(st.sampled_from(self.ids(TaskState.SOLVED) if solved and self.ids(TaskState.SOLVED)
                                            else self.ids()))
        self.apply(task_id, Event.REPORT_GOOD if good else Event.REPORT_BAD,
                   Context(self.now, MAX, report_window_s=100.0))

    @precondition(lambda self: bool(self.tasks))
    @rule()
    def account_disabled(self) -> None:
        for task_id in self.ids(TaskState.PENDING):
            self.apply(task_id, Event.CANCEL, Context(self.now, MAX))

    @rule(step=st.sampled_from([0.25, 1.5, 4.0, 12.0, 45.0]))
    def time_passes(self, step: float) -> None:
        self.now += step

    @rule()
    def sweep(self) -> None:
        for task_id, task in list(self.tasks.items()):
            if task.state is TaskState.PENDING:
                event = Event.DEADLINE if self.now >= task.deadline_at else Event.LEASE_LOST
                if event is Event.DEADLINE or task.attempts >= MAX:
                    self.apply(task_id, event, Context(self.now, MAX))
            else:
                self.apply(task_id, Event.EXPIRE, Context(self.now, MAX, retention_s=120.0))
        self.swept_at = self.now

    @invariant()
    def never_answered_twice(self) -> None:
        assert all(count <= 1 for count in self.answers.values())

    @invariant()
    def charged_at_most_once_and_refunds_within_charges(self) -> None:
        for task_id, amount in self.charged.items():
            assert amount == self.tasks[task_id].price
        for task_id, amount in self.refunded.items():
            assert amount <= self.charged.get(task_id, 0)

    @invariant()
    def settled_by_the_deadline(self) -> None:
        for task in self.tasks.values():
            if task.deadline_at <= self.swept_at:
                assert task.state is not TaskState.PENDING, task
            if task.state is TaskState.UNSOLVABLE:
                assert task.settled_at is not None and task.settled_at <= task.deadline_at
                assert task.id not in self.charged

    @invariant()
    def balance_is_the_ledger(self) -> None:
        assert self.balance == sum(self.ledger)


TestLifecycle = Lifecycle.TestCase
TestLifecycle.settings = settings(max_examples=300, stateful_step_count=50, deadline=None)
