"""The Store contract, run against both backends: SQLite on a temporary file and PostgreSQL.

PostgreSQL gets a database of its own for the test session and a fresh schema per test
(``tests/pgdb.py``). Without a reachable server the PostgreSQL cases are skipped.

The ``*_concurrent`` tests open several stores on one database, as several processes would, and
check that the guarantees hold when their writes race.
"""

from __future__ import annotations

import asyncio
import itertools
import secrets
import sqlite3
from collections.abc import Awaitable

import pytest
from psycopg import errors as pg_errors

from capgate.protocol.codes import C
from capgate.store.base import ReportPolicy, Store, SubmitLimits, SubmitOutcome
from capgate.store.models import Account, LedgerKind, NewTask, Pool, Puzzle, Task, TaskState
from tests.storekit import Backend

T0 = 2_000_000_000.0  # "now" in these tests: the store takes every task time from its caller
LIMITS = SubmitLimits(thread_cap_code=C.ZERO_BALANCE, max_pending=1000)
POLICY = ReportPolicy(window_s=900.0, refund_bad=True)
MAX_ATTEMPTS = 3

# ------------------------------------------------------------------------------------------ fixtures


def new_task(fingerprint: str = "fp", *, price: int = 0, method: str = "normal", pool: Pool = Pool.MAIN,
             deadline_s: float = 90.0, not_before: float = 0.0, pingback: str | None = None,
             params: dict[str, str] | None = None, blobs: dict[str, bytes] | None = None) -> NewTask:
    return NewTask(method=method, params=params if params is not None else {"fp": fingerprint},
                   blobs=blobs if blobs is not None else {}, fingerprint=fingerprint, price=price,
                   deadline_s=deadline_s, pool=pool, not_before=not_before, pingback=pingback)


async def account(store: Store, *, threads: int = 10, balance: int = 0, sandbox: bool = False) -> Account:
    key = secrets.token_hex(16)
    return await store.create_account(f"hash-{key}", key[:8], threads, balance, sandbox)


async def submit_ok(store: Store, acc: Account, task: NewTask, now: float = T0,
                    limits: SubmitLimits = LIMITS) -> int:
    outcome = await store.submit(acc, task, now, limits)
    assert outcome.code is None, outcome
    assert outcome.task_id is not None
    return outcome.task_id


async def claim(store: Store, lease: str, now: float = T0, *, pools: tuple[str, ...] = ("main",),
                methods: list[str] | None = None, lease_s: float = 30.0) -> int | None:
    task = await store.claim(pools, methods, lease, lease_s, now, MAX_ATTEMPTS)
    return task.id if task is not None else None


async def solved_task(store: Store, acc: Account, fingerprint: str = "fp", *, price: int = 0,
                      now: float = T0) -> int:
    task_id = await submit_ok(store, acc, new_task(fingerprint, price=price), now)
    assert await claim(store, "L", now) == task_id
    assert await store.complete(task_id, "L", {"text": "abc"}, 0.9, now + 1)
    return task_id


async def tasks_of(store: Store, account_id: int, task_ids: list[int]) -> dict[int, Task]:
    found = {task_id: await store.get_task(account_id, task_id) for task_id in task_ids}
    return {task_id: task for task_id, task in found.items() if task is not None}


async def balance_of(store: Store, account_id: int) -> int:
    acc = await store.get_account(account_id)
    assert acc is not None
    return acc.balance


# ------------------------------------------------------------------------------------------ accounts


async def test_create_and_find_accounts(store: Store) -> None:
    first = await store.create_account("hash-1", "abcd1234", 5, 1_500_000, True)
    second = await store.create_account("hash-2", "abce9999", 2, 0, False)
    assert (first.threads, first.balance, first.sandbox, first.disabled, first.settings) == (5, 1_500_000, True,
                                                                                              False, {})
    assert (second.balance, second.sandbox) == (0, False)
    assert await store.account_by_key_hash("hash-1") == first
    assert await store.account_by_key_hash("nope") is None
    assert await store.get_account(second.id) == second
    assert await store.get_account(second.id + 1000) is None
    assert [a.id for a in await store.list_accounts()] == [first.id, second.id]
    assert [a.id for a in await store.account_by_prefix("abc")] == [first.id, second.id]
    assert [a.id for a in await store.account_by_prefix("abcd")] == [first.id]
    assert [a.id for a in await store.account_by_prefix("ab%c_e")] == [second.id]  # wildcards are dropped
    assert await store.account_by_prefix("zz") == []
    entries = await store.ledger(first.id)
    assert [(e.kind, e.amount, e.balance_after, e.task_id, e.note) for e in entries] == [
        (LedgerKind.TOPUP, 1_500_000, 1_500_000, None, "initial balance")]
    assert await store.ledger(second.id) == []  # no zero-amount row


async def test_duplicate_key_hash_is_refused(store: Store) -> None:
    await store.create_account("same", "aaaa", 1, 0, False)
    with pytest.raises((sqlite3.IntegrityError, pg_errors.UniqueViolation)):
        await store.create_account("same", "aaaa", 1, 0, False)


async def test_topup_and_ledger_sums(store: Store) -> None:
    acc = await account(store, balance=100)
    for amount in (250, 1, 999_999):
        acc = await store.topup(acc.id, amount, f"top {amount}")
    assert acc.balance == 100 + 250 + 1 + 999_999
    entries = await store.ledger(acc.id)
    assert [e.amount for e in entries] == [999_999, 1, 250, 100]  # newest first
    assert sum(e.amount for e in entries) == acc.balance
    assert entries[0].balance_after == acc.balance
    for newer, older in itertools.pairwise(entries):
        assert newer.balance_after == older.balance_after + newer.amount
    assert [e.note for e in await store.ledger(acc.id, limit=2)] == ["top 999999", "top 1"]


async def test_update_account(store: Store) -> None:
    acc = await account(store, threads=3)
    acc = await store.update_account(acc.id, disabled=True)
    assert acc.disabled and acc.threads == 3
    acc = await store.update_account(acc.id, disabled=False, threads=7)
    assert not acc.disabled and acc.threads == 7
    acc = await store.update_account(acc.id, settings={"human_threshold": 0.8, "keep_labels": True})
    acc = await store.update_account(acc.id, settings={"human_threshold": None, "profile": "p1"})
    assert acc.settings == {"human_threshold": None, "keep_labels": True, "profile": "p1"}
    assert await store.get_account(acc.id) == acc


# ------------------------------------------------------------------------------------------ submit


async def test_submit_stores_the_task(store: Store) -> None:
    acc = await account(store)
    task_id = await submit_ok(store, acc, new_task(
        "f1", price=0, method="normal", pool=Pool.SANDBOX, deadline_s=60, not_before=T0 + 5,
        pingback="https://hooks.example/cb", params={"regsense": "1", "text": "ünïcode ✓"},
        blobs={"body": b"\x00\x89PNG\xff" * 10}))
    assert 10_000_000_000 <= task_id < 100_000_000_000
    task = await store.get_task(acc.id, task_id)
    assert task is not None
    assert (task.method, task.params, task.state, task.pool, task.price) == (
        "normal", {"regsense": "1", "text": "ünïcode ✓"}, TaskState.PENDING, Pool.SANDBOX, 0)
    assert (task.created_at, task.deadline_at, task.not_before) == (T0, T0 + 60, T0 + 5)
    assert (task.answer, task.error, task.settled_at, task.report, task.attempts) == (None, None, None, None, 0)
    assert (task.lease_owner, task.lease_until, task.pingback, task.pingback_attempts) == (
        None, None, "https://hooks.example/cb", 0)
    assert await store.blobs(task_id) == {"body": b"\x00\x89PNG\xff" * 10}
    other = await account(store)
    assert await store.get_task(other.id, task_id) is None
    second = await submit_ok(store, acc, new_task("f2", method="turnstile"))
    assert (await store.get_task(acc.id, second)).not_before == T0  # type: ignore[union-attr]
    assert set(await store.outcomes(acc.id, [task_id, second, 12345678901])) == {task_id, second}
    assert await store.outcomes(other.id, [task_id]) == {}
    assert await store.outcomes(acc.id, []) == {}
    assert await store.working_threads(acc.id, T0) == 2
    assert await store.working_threads(acc.id, T0 + 60) == 1  # the first is past its deadline


@pytest.mark.parametrize("cap_code", [C.ZERO_BALANCE, C.NO_SLOT_AVAILABLE])
async def test_submit_thread_cap(store: Store, cap_code: str) -> None:
    limits = SubmitLimits(cap_code, 1000)
    acc = await account(store, threads=2)
    first = await submit_ok(store, acc, new_task("a"), limits=limits)
    await submit_ok(store, acc, new_task("b", deadline_s=9.9), T0 + 0.1, limits=limits)
    assert await store.submit(acc, new_task("c"), T0, limits) == SubmitOutcome(code=cap_code)
    # Another account has threads of its own.
    await submit_ok(store, await account(store, threads=1), new_task("c"), T0 + 0.2, limits=limits)
    # A thread frees up when its task settles, or passes its deadline.
    assert await claim(store, "L") == first
    assert await store.complete(first, "L", {"text": "x"}, None, T0 + 1)
    await submit_ok(store, acc, new_task("c"), T0 + 1, limits=limits)
    assert await store.submit(acc, new_task("d"), T0 + 2, limits) == SubmitOutcome(code=cap_code)
    await submit_ok(store, acc, new_task("d"), T0 + 10, limits=limits)


async def test_submit_balance_counts_reserved_prices(store: Store) -> None:
    acc = await account(store, balance=250)
    first = await submit_ok(store, acc, new_task("a", price=100))
    await submit_ok(store, acc, new_task("b", price=100), T0 + 0.1)
    assert await store.submit(acc, new_task("c", price=100), T0, LIMITS) == SubmitOutcome(code=C.ZERO_BALANCE)
    await submit_ok(store, acc, new_task("c", price=50), T0 + 0.2)  # 250 - 200 >= 50
    await submit_ok(store, acc, new_task("free", price=0), T0 + 0.3)  # free tasks need no balance
    assert await claim(store, "L") == first
    assert await store.complete(first, "L", {"text": "x"}, None, T0 + 1)
    assert await balance_of(store, acc.id) == 150
    # 150 left, 150 reserved by the two pending priced tasks.
    assert await store.submit(acc, new_task("d", price=1), T0 + 1, LIMITS) == SubmitOutcome(code=C.ZERO_BALANCE)
    await store.topup(acc.id, 1, "one more")
    await submit_ok(store, acc, new_task("d", price=1), T0 + 1)
    broke = await account(store, balance=0)
    assert await store.submit(broke, new_task("x", price=1), T0, LIMITS) == SubmitOutcome(code=C.ZERO_BALANCE)


async def test_submit_duplicates(store: Store) -> None:
    acc = await account(store)
    first = await submit_ok(store, acc, new_task("same", deadline_s=30))
    assert await store.submit(acc, new_task("same"), T0, LIMITS) == SubmitOutcome(code=C.BAD_DUPLICATES)
    await submit_ok(store, acc, new_task("other"), T0 + 0.1)
    await submit_ok(store, await account(store), new_task("same"), T0 + 0.2)  # another account's: no duplicate
    assert await claim(store, "L") == first
    assert await store.complete(first, "L", {"text": "x"}, None, T0 + 1)
    second = await submit_ok(store, acc, new_task("same", deadline_s=30), T0 + 1)  # settled: no longer
    assert second != first
    await submit_ok(store, acc, new_task("same"), T0 + 31)  # past its deadline: no longer pending


async def test_submit_max_pending_is_service_wide(store: Store) -> None:
    limits = SubmitLimits(C.ZERO_BALANCE, 2)
    await submit_ok(store, await account(store), new_task("a"), limits=limits)
    await submit_ok(store, await account(store), new_task("b", deadline_s=5), limits=limits)
    assert await store.submit(await account(store), new_task("c"), T0, limits) == SubmitOutcome(
        code=C.NO_SLOT_AVAILABLE)
    await submit_ok(store, await account(store), new_task("c"), T0 + 5, limits=limits)


async def test_submit_check_order(store: Store) -> None:
    """Thread cap, then balance less reserved prices, then duplicates, then the service-wide cap."""
    cap = SubmitLimits(C.NO_SLOT_AVAILABLE, 1000)
    acc = await account(store, threads=1, balance=0)
    await submit_ok(store, acc, new_task("a"), limits=cap)
    # Threads full, no balance, a duplicate, queue full: the thread cap answers.
    assert await store.submit(acc, new_task("a", price=5), T0, SubmitLimits(C.ZERO_BALANCE, 1)) == SubmitOutcome(
        code=C.ZERO_BALANCE)
    await store.update_account(acc.id, threads=5)
    acc = await store.update_account(acc.id, threads=5)
    # No balance, a duplicate, queue full: the balance answers.
    assert await store.submit(acc, new_task("a", price=5), T0, SubmitLimits(C.ZERO_BALANCE, 1)) == SubmitOutcome(
        code=C.ZERO_BALANCE)
    # A duplicate, queue full: the duplicate answers.
    assert await store.submit(acc, new_task("a"), T0, SubmitLimits(C.ZERO_BALANCE, 1)) == SubmitOutcome(
        code=C.BAD_DUPLICATES)
    assert await store.submit(acc, new_task("b"), T0, SubmitLimits(C.ZERO_BALANCE, 1)) == SubmitOutcome(
        code=C.NO_SLOT_AVAILABLE)


async def test_submit_uses_threads_of_the_account_passed(store: Store) -> None:
    acc = await account(store, threads=1)
    await submit_ok(store, acc, new_task("a"))
    wider = await store.update_account(acc.id, threads=2)
    await submit_ok(store, wider, new_task("b"))


# ------------------------------------------------------------------------------------------ claim


async def test_claim_order_and_filters(store: Store) -> None:
    acc = await account(store, threads=50)
    late = await submit_ok(store, acc, new_task("late", not_before=T0 + 10), T0)
    second = await submit_ok(store, acc, new_task("second"), T0 + 2)
    first = await submit_ok(store, acc, new_task("first"), T0 + 1)
    token = await submit_ok(store, acc, new_task("tok", method="turnstile"), T0 + 3)
    human = await submit_ok(store, acc, new_task("human", pool=Pool.HUMAN), T0 + 0.5)
    sandbox = await submit_ok(store, acc, new_task("sbx", pool=Pool.SANDBOX), T0 + 0.5)
    now = T0 + 5
    assert not await store.has_claimable(["main"], [], now, MAX_ATTEMPTS)
    assert await store.claim(["main"], [], "L", 30, now, MAX_ATTEMPTS) is None
    assert await store.has_claimable(["main"], ["turnstile"], now, MAX_ATTEMPTS)
    assert not await store.has_claimable(["main"], ["grid"], now, MAX_ATTEMPTS)
    assert await claim(store, "L1", now, methods=["grid"]) is None
    assert await claim(store, "L1", now, methods=["turnstile"]) == token
    assert await claim(store, "L2", now) == first  # oldest not_before first
    assert await claim(store, "L3", now) == second
    assert await claim(store, "L4", now) is None  # "late" is not due yet
    assert await claim(store, "L4", T0 + 10) == late
    assert await claim(store, "L5", now, pools=("sandbox",)) == sandbox
    assert await claim(store, "L6", now, pools=("human", "main")) == human
    assert not await store.has_claimable(["main", "human", "sandbox"], None, now, MAX_ATTEMPTS)
    task = await store.leased_task(first, "L2")
    assert task is not None and task.attempts == 1 and task.lease_owner == "L2" and task.lease_until == now + 30
    assert await store.leased_task(first, "L3") is None


async def test_claim_skips_tasks_past_deadline(store: Store) -> None:
    acc = await account(store)
    await submit_ok(store, acc, new_task("a", deadline_s=10))
    assert not await store.has_claimable(["main"], None, T0 + 10, MAX_ATTEMPTS)
    assert await claim(store, "L", T0 + 10) is None


async def test_lease_expiry_attempts_and_heartbeat(store: Store) -> None:
    acc = await account(store)
    task_id = await submit_ok(store, acc, new_task("a", deadline_s=300))
    assert await claim(store, "L1", T0, lease_s=10) == task_id
    assert await claim(store, "L2", T0 + 5) is None  # leased
    assert await store.heartbeat(task_id, "L1", 10, T0 + 8)  # lease now until T0 + 18
    assert not await store.heartbeat(task_id, "other", 10, T0 + 8)
    assert await claim(store, "L2", T0 + 15) is None
    assert not await store.heartbeat(task_id, "L1", 10, T0 + 19)  # ran out
    assert await claim(store, "L2", T0 + 19, lease_s=10) == task_id  # re-issued
    task = await store.leased_task(task_id, "L2")
    assert task is not None and task.attempts == 2
    assert await store.leased_task(task_id, "L1") is None
    assert not await store.complete(task_id, "L1", {"text": "late"}, None, T0 + 20)  # the old lease
    assert await claim(store, "L3", T0 + 30, lease_s=10) == task_id
    assert not await store.has_claimable(["main"], None, T0 + 41, MAX_ATTEMPTS)  # attempts used up
    assert await claim(store, "L4", T0 + 41) is None
    assert await store.claim(["main"], None, "L4", 10, T0 + 41, MAX_ATTEMPTS + 1) is not None


async def test_heartbeat_refused_past_deadline(store: Store) -> None:
    acc = await account(store)
    task_id = await submit_ok(store, acc, new_task("a", deadline_s=20))
    assert await claim(store, "L", T0, lease_s=60) == task_id
    assert not await store.heartbeat(task_id, "L", 60, T0 + 20)
    assert not await store.complete(task_id, "L", {"text": "x"}, None, T0 + 20)


async def test_complete_charges_once_and_never_answers_twice(store: Store) -> None:
    acc = await account(store, balance=1000)
    task_id = await submit_ok(store, acc, new_task("a", price=300))
    assert await claim(store, "L") == task_id
    assert await store.complete(task_id, "L", {"text": "ÄBC"}, 0.75, T0 + 2)
    assert not await store.complete(task_id, "L", {"text": "again"}, 0.75, T0 + 3)
    assert not await store.heartbeat(task_id, "L", 30, T0 + 3)
    assert not await store.fail(task_id, "L", None, MAX_ATTEMPTS, T0 + 3)
    assert await store.leased_task(task_id, "L") is None
    task = await store.get_task(acc.id, task_id)
    assert task is not None
    assert (task.state, task.answer, task.confidence, task.settled_at, task.lease_until) == (
        TaskState.SOLVED, {"text": "ÄBC"}, 0.75, T0 + 2, None)
    assert await balance_of(store, acc.id) == 700
    charges = [e for e in await store.ledger(acc.id) if e.kind is LedgerKind.CHARGE]
    assert [(e.amount, e.task_id, e.balance_after, e.note) for e in charges] == [(-300, task_id, 700, "solved")]
    assert await claim(store, "L2", T0 + 5) is None
    free = await submit_ok(store, acc, new_task("free"))
    assert await claim(store, "L3") == free
    assert await store.complete(free, "L3", {"text": "x"}, None, T0 + 1)
    assert len(await store.ledger(acc.id)) == 2  # a free task writes no ledger row


async def test_fail_gives_back_or_settles(store: Store) -> None:
    acc = await account(store, balance=1000)
    task_id = await submit_ok(store, acc, new_task("a", price=100, deadline_s=300))
    assert await claim(store, "L1") == task_id
    assert not await store.fail(task_id, "other", None, MAX_ATTEMPTS, T0 + 1)
    assert await store.fail(task_id, "L1", None, MAX_ATTEMPTS, T0 + 1, to_human=True)
    assert await store.leased_task(task_id, "L1") is None
    assert await claim(store, "L2", T0 + 2) is None  # moved to the human pool
    assert await claim(store, "L2", T0 + 2, pools=("human",)) == task_id
    # An error before the attempts are used up still gives the task back.
    assert await store.fail(task_id, "L2", C.CAPTCHA_UNSOLVABLE, MAX_ATTEMPTS, T0 + 3)
    task = await store.get_task(acc.id, task_id)
    assert task is not None and task.state is TaskState.PENDING and task.pool is Pool.HUMAN
    assert task.lease_owner is None and task.lease_until is None and task.attempts == 2
    assert await claim(store, "L3", T0 + 4, pools=("human",)) == task_id
    assert await store.fail(task_id, "L3", C.PROXY_CONNECTION_FAILED, MAX_ATTEMPTS, T0 + 5)
    task = await store.get_task(acc.id, task_id)
    assert task is not None
    assert (task.state, task.error, task.settled_at, task.attempts) == (
        TaskState.UNSOLVABLE, C.PROXY_CONNECTION_FAILED, T0 + 5, 3)
    assert await balance_of(store, acc.id) == 1000  # never charged
    assert not await store.fail(task_id, "L3", None, MAX_ATTEMPTS, T0 + 6)
    # max_attempts=1 settles at once (a "final" failure).
    other = await submit_ok(store, acc, new_task("b"))
    assert await claim(store, "L4", T0, pools=("main",)) == other
    assert not await store.fail(other, "L4", C.CAPTCHA_UNSOLVABLE, 1, T0 + 31)  # the lease ran out
    assert await store.heartbeat(other, "L4", 30, T0 + 30)
    assert await store.fail(other, "L4", C.CAPTCHA_UNSOLVABLE, 1, T0 + 31)
    task = await store.get_task(acc.id, other)
    assert task is not None and task.state is TaskState.UNSOLVABLE


async def test_a_task_given_back_on_its_last_attempt_settles_at_once(store: Store) -> None:
    """A worker that gives a task back with no error on its last attempt: no worker may claim it
    again, so it settles unsolvable now rather than waiting, unseen, for its deadline."""
    acc = await account(store, balance=1000)
    task_id = await submit_ok(store, acc, new_task("a", price=100, deadline_s=300))
    for attempt in range(1, MAX_ATTEMPTS + 1):
        lease = f"L{attempt}"
        assert await claim(store, lease, T0 + attempt) == task_id
        assert await store.fail(task_id, lease, None, MAX_ATTEMPTS, T0 + attempt)
    task = await store.get_task(acc.id, task_id)
    assert task is not None
    assert (task.state, task.error, task.settled_at, task.attempts) == (
        TaskState.UNSOLVABLE, C.CAPTCHA_UNSOLVABLE, T0 + MAX_ATTEMPTS, MAX_ATTEMPTS)
    assert (await store.outcomes(acc.id, [task_id]))[task_id].state is TaskState.UNSOLVABLE
    assert await balance_of(store, acc.id) == 1000


async def test_final_failure_settles_at_once(store: Store) -> None:
    acc = await account(store)
    task_id = await submit_ok(store, acc, new_task("a"))
    assert await claim(store, "L") == task_id
    assert not await store.fail(task_id, "other", C.UPLOAD, MAX_ATTEMPTS, T0 + 1, final=True)
    assert await store.fail(task_id, "L", C.UPLOAD, MAX_ATTEMPTS, T0 + 1, final=True)
    task = await store.get_task(acc.id, task_id)
    assert task is not None and (task.state, task.error, task.attempts) == (TaskState.UNSOLVABLE, C.UPLOAD, 1)


def fake_solve(task: Puzzle) -> tuple[dict[str, object] | None, str | None]:
    """A pure solver, as the sandbox's: its answer shows what it was given."""
    fingerprint = task.params.get("fp", "")
    if fingerprint.startswith("bad"):
        return None, C.PROXY_CONNECTION_FAILED
    if fingerprint.startswith("nocode"):
        return None, None
    return {"text": f"{fingerprint}:{task.fingerprint}"}, None


async def test_settle_due(store: Store) -> None:
    acc = await account(store, threads=20, balance=1000)
    sbx = Pool.SANDBOX
    good = await submit_ok(store, acc, new_task("good", price=100, pool=sbx, blobs={"body": b"x" * 123}), T0)
    bad = await submit_ok(store, acc, new_task("bad", price=100, pool=sbx), T0 + 0.1)
    nocode = await submit_ok(store, acc, new_task("nocode", pool=sbx), T0 + 0.2)
    later = await submit_ok(store, acc, new_task("later", pool=sbx, not_before=T0 + 50), T0)
    leased = await submit_ok(store, acc, new_task("leased", pool=sbx), T0 - 1)
    main = await submit_ok(store, acc, new_task("main", pool=Pool.MAIN), T0)
    overdue = await submit_ok(store, acc, new_task("overdue", pool=sbx, deadline_s=2), T0)
    assert await claim(store, "L", T0, pools=("sandbox",), lease_s=10) == leased
    now = T0 + 5
    assert sorted(await store.settle_due(Pool.SANDBOX.value, now, 10, fake_solve)) == sorted([good, bad, nocode])
    tasks = await tasks_of(store, acc.id, [good, bad, nocode, later, leased, main, overdue])
    assert (tasks[good].state, tasks[good].answer, tasks[good].confidence, tasks[good].settled_at,
            tasks[good].attempts) == (TaskState.SOLVED, {"text": "good:good"}, 1.0, now, 1)
    assert (tasks[bad].state, tasks[bad].error, tasks[bad].settled_at) == (
        TaskState.UNSOLVABLE, C.PROXY_CONNECTION_FAILED, now)
    assert (tasks[nocode].state, tasks[nocode].error) == (TaskState.UNSOLVABLE, C.CAPTCHA_UNSOLVABLE)
    for waiting in (later, leased, main, overdue):
        assert tasks[waiting].state is TaskState.PENDING
    assert await balance_of(store, acc.id) == 900  # only the answered one is charged
    charges = [e for e in await store.ledger(acc.id) if e.kind is LedgerKind.CHARGE]
    assert [(e.task_id, e.amount, e.note) for e in charges] == [(good, -100, "solved")]
    assert await store.settle_due(Pool.SANDBOX.value, now, 10, fake_solve) == []
    # The lease ran out (T0 + 10) and "later" fell due.
    assert sorted(await store.settle_due(Pool.SANDBOX.value, T0 + 50, 10, fake_solve)) == sorted([leased, later])
    assert (await store.get_task(acc.id, leased)).attempts == 2  # type: ignore[union-attr]


async def test_settle_due_limit_takes_the_oldest(store: Store) -> None:
    acc = await account(store, threads=20)
    ids = [await submit_ok(store, acc, new_task(f"t{i}", pool=Pool.SANDBOX), T0 + i) for i in range(5)]
    assert await store.settle_due(Pool.SANDBOX.value, T0 + 10, 2, fake_solve) == ids[:2]
    assert await store.settle_due(Pool.SANDBOX.value, T0 + 10, 10, fake_solve) == ids[2:]


async def test_lease_with_nul_matches_nothing(store: Store) -> None:
    """A worker may send any string as its lease; one with a NUL (which PostgreSQL text cannot hold)
    is simply not the lease, on both backends."""
    acc = await account(store)
    task_id = await submit_ok(store, acc, new_task("a"))
    assert await claim(store, "L") == task_id
    assert await store.leased_task(task_id, "L\x00") is None
    assert not await store.heartbeat(task_id, "L\x00", 30, T0 + 1)
    assert not await store.complete(task_id, "L\x00", {"text": "x"}, None, T0 + 1)
    assert not await store.fail(task_id, "L\x00", None, MAX_ATTEMPTS, T0 + 1)
    await store.add_pingback_host(acc.id, "a.example")
    await store.del_pingback_host(acc.id, "a.example\x00")
    assert await store.pingback_hosts(acc.id) == ["a.example"]
    assert await store.complete(task_id, "L", {"text": "x"}, None, T0 + 1)


# ------------------------------------------------------------------------------------------ sweep


async def test_sweep_deadline_and_lost_leases(store: Store) -> None:
    acc = await account(store, balance=1000)
    overdue = await submit_ok(store, acc, new_task("overdue", price=100, deadline_s=30), T0)
    exhausted = await submit_ok(store, acc, new_task("exhausted", method="turnstile", deadline_s=300), T0 + 1)
    fine = await submit_ok(store, acc, new_task("fine", deadline_s=300), T0 + 2)
    for attempt, at in enumerate((T0 + 2, T0 + 20, T0 + 40)):  # three leases of 10 s, each lost
        assert await claim(store, f"L{attempt}", at, methods=["turnstile"], lease_s=10) == exhausted
        if attempt == 1:
            assert await store.sweep(T0 + 29, 900, MAX_ATTEMPTS) == []  # nothing due yet
    assert await store.sweep(T0 + 45, 900, MAX_ATTEMPTS) == [overdue]  # the third lease still runs
    now = T0 + 60
    assert await store.sweep(now, 900, MAX_ATTEMPTS) == [exhausted]
    tasks = await tasks_of(store, acc.id, [overdue, exhausted, fine])
    assert (tasks[overdue].state, tasks[overdue].error, tasks[overdue].settled_at) == (
        TaskState.UNSOLVABLE, C.CAPTCHA_UNSOLVABLE, T0 + 30)  # settled at its deadline
    assert (tasks[exhausted].state, tasks[exhausted].error, tasks[exhausted].settled_at) == (
        TaskState.UNSOLVABLE, C.CAPTCHA_UNSOLVABLE, now)
    assert tasks[exhausted].lease_until is None
    assert tasks[fine].state is TaskState.PENDING
    assert await store.sweep(now, 900, MAX_ATTEMPTS) == []
    assert await balance_of(store, acc.id) == 1000


async def test_sweep_lease_still_held_is_not_settled(store: Store) -> None:
    acc = await account(store)
    task_id = await submit_ok(store, acc, new_task("a", deadline_s=300))
    for attempt in range(MAX_ATTEMPTS):
        assert await claim(store, f"L{attempt}", T0 + attempt * 20, lease_s=10) == task_id
    now = T0 + 2 * 20 + 5  # the third lease still runs
    assert await store.sweep(now, 900, MAX_ATTEMPTS) == []
    assert await store.complete(task_id, "L2", {"text": "x"}, None, now)


async def test_sweep_retention_expires_and_forgets(store: Store) -> None:
    acc = await account(store, balance=1000)
    solved = await submit_ok(store, acc, new_task("s", price=100, blobs={"body": b"img" * 50}))
    assert await claim(store, "L") == solved
    assert await store.complete(solved, "L", {"text": "x"}, None, T0 + 1)
    unsolvable = await submit_ok(store, acc, new_task("u", deadline_s=10, blobs={"body": b"img2" * 50}))
    pending = await submit_ok(store, acc, new_task("p", deadline_s=2000, blobs={"body": b"img3" * 50}))
    assert await store.sweep(T0 + 10, 900, MAX_ATTEMPTS) == [unsolvable]
    assert await store.sweep(T0 + 900, 900, MAX_ATTEMPTS) == []  # not yet past the retention
    assert (await store.get_task(acc.id, solved)).state is TaskState.SOLVED  # type: ignore[union-attr]
    await store.sweep(T0 + 911, 900, MAX_ATTEMPTS)
    tasks = await tasks_of(store, acc.id, [solved, unsolvable, pending])
    for task_id in (solved, unsolvable):
        assert tasks[task_id].state is TaskState.EXPIRED
        assert tasks[task_id].params == {} and tasks[task_id].answer is None
        assert await store.blobs(task_id) == {}
    assert tasks[pending].state is TaskState.PENDING
    assert await store.blobs(pending) == {"body": b"img3" * 50}
    # Expired rows stay: the ledger still points at them.
    assert [e.task_id for e in await store.ledger(acc.id) if e.kind is LedgerKind.CHARGE] == [solved]


# ------------------------------------------------------------------------------------------ reports


async def test_reports(store: Store) -> None:
    acc = await account(store, balance=1000)
    good = await solved_task(store, acc, "good", price=100)
    assert await store.report(acc.id, good, True, T0 + 5, POLICY) is None
    assert await store.report(acc.id, good, False, T0 + 6, POLICY) == C.DUPLICATE_REPORT
    assert (await store.get_task(acc.id, good)).report == "good"  # type: ignore[union-attr]
    bad = await solved_task(store, acc, "bad", price=100)
    assert await balance_of(store, acc.id) == 800
    assert await store.report(acc.id, bad, False, T0 + 5, POLICY) is None
    assert await balance_of(store, acc.id) == 900
    refund = (await store.ledger(acc.id))[0]
    assert (refund.kind, refund.amount, refund.task_id, refund.note, refund.balance_after) == (
        LedgerKind.REFUND, 100, bad, "reportbad", 900)
    assert await store.report(acc.id, bad, False, T0 + 6, POLICY) == C.DUPLICATE_REPORT
    assert await balance_of(store, acc.id) == 900  # refunded once
    no_refund = await solved_task(store, acc, "norefund", price=100)
    assert await store.report(acc.id, no_refund, False, T0 + 5, ReportPolicy(900, refund_bad=False)) is None
    assert await balance_of(store, acc.id) == 800
    free = await solved_task(store, acc, "free", price=0)
    entries = len(await store.ledger(acc.id))
    assert await store.report(acc.id, free, False, T0 + 5, POLICY) is None
    assert len(await store.ledger(acc.id)) == entries


async def test_report_refusals(store: Store) -> None:
    acc = await account(store, balance=1000)
    other = await account(store)
    solved = await solved_task(store, acc, "s", price=100)  # settled at T0 + 1
    assert await store.report(other.id, solved, False, T0 + 5, POLICY) == C.WRONG_CAPTCHA_ID
    assert await store.report(acc.id, 12345678901, False, T0 + 5, POLICY) == C.WRONG_CAPTCHA_ID
    assert await store.report(acc.id, solved, False, T0 + 1 + 901, POLICY) == C.REPORT_NOT_RECORDED
    assert await store.report(acc.id, solved, False, T0 + 1 + 900, POLICY) is None  # the window's edge
    pending = await submit_ok(store, acc, new_task("p", price=100))
    assert await store.report(acc.id, pending, False, T0 + 5, POLICY) == C.REPORT_NOT_RECORDED
    unsolvable = await submit_ok(store, acc, new_task("u", deadline_s=1), T0 + 10)
    await store.sweep(T0 + 11, 900, MAX_ATTEMPTS)
    assert await store.report(acc.id, unsolvable, True, T0 + 12, POLICY) == C.REPORT_NOT_RECORDED
    assert await balance_of(store, acc.id) == 1000


# ------------------------------------------------------------------------------------------ addresses


async def test_ip_strikes_and_bans(store: Store) -> None:
    ip = "203.0.113.7"
    assert not await store.ip_banned(ip, T0)
    assert not await store.strike(ip, T0, 60, 3, 300)
    assert not await store.strike(ip, T0 + 1, 60, 3, 300)
    assert not await store.strike("198.51.100.1", T0 + 1, 60, 3, 300)  # another address
    assert await store.strike(ip, T0 + 2, 60, 3, 300)
    assert await store.ip_banned(ip, T0 + 2)
    assert await store.ip_banned(ip, T0 + 301)
    assert not await store.ip_banned(ip, T0 + 302)
    assert not await store.ip_banned("198.51.100.1", T0 + 2)
    # The ban cleared the strikes; strikes older than the window do not count.
    assert not await store.strike(ip, T0 + 400, 60, 3, 300)
    assert not await store.strike(ip, T0 + 430, 60, 3, 300)
    assert not await store.strike(ip, T0 + 470, 60, 3, 300)  # the one at +400 is out of the window
    assert await store.strike(ip, T0 + 471, 60, 3, 300)
    # A new ban replaces the old one's end.
    assert await store.strike(ip, T0 + 480, 60, 1, 10)
    assert not await store.ip_banned(ip, T0 + 491)


async def test_sweep_drops_old_strikes_and_bans(store: Store) -> None:
    ip = "203.0.113.8"
    assert not await store.strike(ip, T0, 10_000, 2, 50)
    await store.sweep(T0 + 3601, 900, MAX_ATTEMPTS)  # the strike is over an hour old: dropped
    assert not await store.strike(ip, T0 + 3602, 10_000, 2, 50)
    assert await store.strike(ip, T0 + 3603, 10_000, 2, 50)
    await store.sweep(T0 + 3603 + 49, 900, MAX_ATTEMPTS)
    assert await store.ip_banned(ip, T0 + 3603 + 49)
    await store.sweep(T0 + 3603 + 51, 900, MAX_ATTEMPTS)
    assert not await store.ip_banned(ip, T0 + 3603 + 40)  # the row is gone, whatever the clock says


# ------------------------------------------------------------------------------------------ pingback


async def test_pingback_hosts(store: Store) -> None:
    acc = await account(store)
    other = await account(store)
    await store.add_pingback_host(acc.id, "b.example")
    await store.add_pingback_host(acc.id, "a.example")
    await store.add_pingback_host(acc.id, "a.example")  # twice is once
    await store.add_pingback_host(other.id, "c.example")
    assert await store.pingback_hosts(acc.id) == ["a.example", "b.example"]
    await store.del_pingback_host(acc.id, "a.example")
    await store.del_pingback_host(acc.id, "missing.example")
    assert await store.pingback_hosts(acc.id) == ["b.example"]
    await store.add_pingback_host(acc.id, "d.example")
    await store.del_pingback_host(acc.id, None)
    assert await store.pingback_hosts(acc.id) == []
    assert await store.pingback_hosts(other.id) == ["c.example"]


async def test_pingback_outbox(store: Store) -> None:
    acc = await account(store, threads=20)
    hook = "https://hooks.example/cb"
    solved = await submit_ok(store, acc, new_task("s", pingback=hook))
    assert await claim(store, "L") == solved
    assert await store.complete(solved, "L", {"text": "x"}, None, T0 + 1)
    unsolvable = await submit_ok(store, acc, new_task("u", deadline_s=5, pingback=hook))
    pending = await submit_ok(store, acc, new_task("p", deadline_s=300, pingback=hook))
    silent = await submit_ok(store, acc, new_task("n", deadline_s=5))
    assert pending and silent
    await store.sweep(T0 + 5, 900, MAX_ATTEMPTS)
    due = await store.due_pingbacks(T0 + 6, 30, 10)
    assert sorted(t.id for t in due) == sorted([solved, unsolvable])
    assert {t.id: t.state for t in due} == {solved: TaskState.SOLVED, unsolvable: TaskState.UNSOLVABLE}
    assert await store.due_pingbacks(T0 + 6, 30, 10) == []  # held for the sender that took them
    assert await store.due_pingbacks(T0 + 35, 30, 10) == []
    await store.pingback_done(solved, True, None)
    await store.pingback_done(unsolvable, False, T0 + 100)
    assert await store.due_pingbacks(T0 + 99, 30, 10) == []
    again = await store.due_pingbacks(T0 + 100, 30, 10)
    assert [t.id for t in again] == [unsolvable]
    assert again[0].pingback_attempts == 1
    await store.pingback_done(unsolvable, False, None)  # give up
    assert await store.due_pingbacks(T0 + 10_000, 30, 10) == []
    tasks = await tasks_of(store, acc.id, [solved, unsolvable])
    assert (tasks[solved].pingback_attempts, tasks[unsolvable].pingback_attempts) == (1, 2)


async def test_pingback_outbox_limit(store: Store) -> None:
    acc = await account(store, threads=20)
    ids = [await submit_ok(store, acc, new_task(f"t{i}", deadline_s=1, pingback="https://h.example/"))
           for i in range(5)]
    await store.sweep(T0 + 1, 900, MAX_ATTEMPTS)
    first = await store.due_pingbacks(T0 + 2, 30, 3)
    second = await store.due_pingbacks(T0 + 2, 30, 3)
    assert len(first) == 3 and len(second) == 2
    assert sorted(t.id for t in first + second) == sorted(ids)


# ------------------------------------------------------------------------------------------ workers


async def test_workers_and_presence(store: Store) -> None:
    bot = await store.create_worker("bot", "wh-1", "cgw_abcd", ["turnstile", "hcaptcha"], False)
    person = await store.create_worker("alice", "wh-2", "cgw_efgh", [], True)
    assert (bot.name, bot.token_prefix, bot.methods, bot.human, bot.disabled) == (
        "bot", "cgw_abcd", ("turnstile", "hcaptcha"), False, False)
    assert person.methods == () and person.human
    assert await store.worker_by_token_hash("wh-2") == person
    assert await store.worker_by_token_hash("nope") is None
    assert [w.id for w in await store.list_workers()] == [bot.id, person.id]
    with pytest.raises((sqlite3.IntegrityError, pg_errors.UniqueViolation)):
        await store.create_worker("dup", "wh-1", "cgw_x", [], False)
    assert await store.active_worker_methods(T0 - 60) == set()
    await store.worker_seen(bot.id, ["turnstile"], T0)
    await store.worker_seen(person.id, ["*"], T0 - 100)
    assert await store.active_worker_methods(T0 - 60) == {"turnstile"}
    assert await store.active_worker_methods(T0 - 200) == {"turnstile", "*"}
    await store.worker_seen(bot.id, ["turnstile", "hcaptcha"], T0 + 5)
    assert await store.active_worker_methods(T0) == {"turnstile", "hcaptcha"}


async def test_a_worker_serves_every_method_it_claims_in_turn(store: Store) -> None:
    """Claims of one method and then another: both stay served (within the presence window)."""
    bot = await store.create_worker("bot", "wh-1", "cgw_abcd", [], False)
    await store.worker_seen(bot.id, ["turnstile"], T0)
    await store.worker_seen(bot.id, ["hcaptcha"], T0 + 1)
    assert await store.active_worker_methods(T0 - 10) == {"turnstile", "hcaptcha"}
    await store.worker_seen(bot.id, ["hcaptcha"], T0 + 30)
    assert await store.active_worker_methods(T0 + 20) == {"hcaptcha"}  # turnstile not asked for since
    await store.worker_seen(bot.id, ["turnstile"], T0 + 31)
    assert await store.active_worker_methods(T0 + 20) == {"turnstile", "hcaptcha"}


# ------------------------------------------------------------------------------------------ several stores at once


async def gather_all(*calls: Awaitable[object]) -> list[object]:
    return list(await asyncio.gather(*calls))


async def test_writes_are_seen_by_other_stores(backend: Backend) -> None:
    one, two = await backend.open_many(2)
    acc = await account(one, balance=500)
    task_id = await submit_ok(one, acc, new_task("a", price=100))
    assert await two.get_task(acc.id, task_id) is not None
    assert await claim(two, "L") == task_id
    assert await one.complete(task_id, "L", {"text": "x"}, None, T0 + 1)
    assert await balance_of(two, acc.id) == 400


async def test_claims_concurrent_never_hand_out_a_task_twice(backend: Backend) -> None:
    stores = await backend.open_many(4)
    acc = await account(stores[0], threads=500)
    ids = {await submit_ok(stores[0], acc, new_task(f"t{i}"), T0 + i * 0.001) for i in range(60)}
    now = T0 + 1

    async def drain(store: Store, worker: int) -> list[int]:
        got: list[int] = []
        n = 0
        while True:
            n += 1
            task_id = await claim(store, f"w{worker}-{n}", now)
            if task_id is None:
                return got
            got.append(task_id)

    results = await asyncio.gather(*(drain(stores[i % 4], i) for i in range(12)))
    claimed = [task_id for got in results for task_id in got]
    assert len(claimed) == len(set(claimed)) == len(ids)
    assert set(claimed) == ids


async def test_complete_concurrent_settles_once(backend: Backend) -> None:
    stores = await backend.open_many(4)
    acc = await account(stores[0], balance=1000)
    task_id = await submit_ok(stores[0], acc, new_task("a", price=100))
    assert await claim(stores[0], "L") == task_id
    done = await asyncio.gather(*(s.complete(task_id, "L", {"text": str(i)}, None, T0 + 1)
                                  for i, s in enumerate(stores * 2)))
    assert sorted(done) == [False] * 7 + [True]
    assert await balance_of(stores[1], acc.id) == 900
    assert len([e for e in await stores[2].ledger(acc.id) if e.kind is LedgerKind.CHARGE]) == 1


async def test_submit_concurrent_thread_cap(backend: Backend) -> None:
    stores = await backend.open_many(4)
    acc = await account(stores[0], threads=5)
    outcomes = await asyncio.gather(*(stores[i % 4].submit(acc, new_task(f"t{i}"), T0, LIMITS) for i in range(24)))
    assert len([o for o in outcomes if o.task_id is not None]) == 5
    assert {o.code for o in outcomes if o.task_id is None} == {LIMITS.thread_cap_code}
    assert await stores[3].working_threads(acc.id, T0) == 5


async def test_submit_concurrent_balance(backend: Backend) -> None:
    stores = await backend.open_many(4)
    acc = await account(stores[0], threads=100, balance=350)
    outcomes = await asyncio.gather(*(stores[i % 4].submit(acc, new_task(f"t{i}", price=100), T0, LIMITS)
                                      for i in range(20)))
    assert len([o for o in outcomes if o.task_id is not None]) == 3
    assert {o.code for o in outcomes if o.task_id is None} == {C.ZERO_BALANCE}


async def test_submit_concurrent_duplicates(backend: Backend) -> None:
    stores = await backend.open_many(4)
    acc = await account(stores[0], threads=100)
    outcomes = await asyncio.gather(*(stores[i % 4].submit(acc, new_task("same"), T0, LIMITS) for i in range(16)))
    assert len([o for o in outcomes if o.task_id is not None]) == 1
    assert {o.code for o in outcomes if o.task_id is None} == {C.BAD_DUPLICATES}


async def test_report_concurrent_refunds_once(backend: Backend) -> None:
    stores = await backend.open_many(4)
    acc = await account(stores[0], balance=1000)
    task_id = await solved_task(stores[0], acc, "a", price=100)
    answers = await asyncio.gather(*(s.report(acc.id, task_id, False, T0 + 5, POLICY) for s in stores * 2))
    assert sorted(answers, key=str) == sorted([None] + [C.DUPLICATE_REPORT] * 7, key=str)
    assert await balance_of(stores[0], acc.id) == 1000


async def test_topup_concurrent_sums(backend: Backend) -> None:
    stores = await backend.open_many(4)
    acc = await account(stores[0])
    await asyncio.gather(*(stores[i % 4].topup(acc.id, i + 1, "t") for i in range(40)))
    entries = await stores[1].ledger(acc.id, limit=1000)
    assert await balance_of(stores[2], acc.id) == sum(range(1, 41)) == sum(e.amount for e in entries)
    assert sorted(e.balance_after for e in entries) == sorted({e.balance_after for e in entries})


async def test_strikes_concurrent_ban(backend: Backend) -> None:
    stores = await backend.open_many(4)
    banned = await asyncio.gather(*(stores[i % 4].strike("192.0.2.1", T0 + i * 0.001, 60, 10, 300)
                                    for i in range(10)))
    assert banned.count(True) == 1
    assert await stores[0].ip_banned("192.0.2.1", T0 + 1)


async def test_sweep_concurrent_settles_each_task_once(backend: Backend) -> None:
    stores = await backend.open_many(4)
    acc = await account(stores[0], threads=100)
    ids = {await submit_ok(stores[0], acc, new_task(f"t{i}", deadline_s=1)) for i in range(30)}
    settled: list[int] = []
    for _ in range(3):  # a sweeper that skipped its round (another held the lock) settles later
        rounds = await asyncio.gather(*(s.sweep(T0 + 2, 900, MAX_ATTEMPTS) for s in stores))
        settled.extend(task_id for r in rounds for task_id in r)
    assert sorted(settled) == sorted(ids)


async def test_settle_due_concurrent_settles_and_charges_once(backend: Backend) -> None:
    stores = await backend.open_many(4)
    accounts = [await account(stores[0], threads=100, balance=10_000) for _ in range(3)]
    ids = {await submit_ok(stores[0], accounts[i % 3], new_task(f"t{i}", price=7, pool=Pool.SANDBOX),
                           T0 + i * 0.001) for i in range(60)}
    settled: list[int] = []

    async def drain(store: Store) -> None:
        while batch := await store.settle_due(Pool.SANDBOX.value, T0 + 1, 4, fake_solve):
            settled.extend(batch)

    await asyncio.gather(*(drain(s) for s in stores * 2))
    assert sorted(settled) == sorted(ids)
    for acc in accounts:
        assert await balance_of(stores[1], acc.id) == 10_000 - 20 * 7
        assert len(await stores[2].ledger(acc.id)) == 21


# ------------------------------------------------------------------------------------------ PostgreSQL only


# ------------------------------------------------------------------------------------------ who may do what


async def test_disabling_an_account_settles_its_pending_tasks_uncharged(store: Store) -> None:
    acc = await account(store, balance=1000)
    queued = await submit_ok(store, acc, new_task("q", price=100))
    running = await submit_ok(store, acc, new_task("r", price=100))
    assert await claim(store, "L", T0 + 1) in (queued, running)
    leased = await store.get_task(acc.id, queued)
    held, waiting = (queued, running) if leased is not None and leased.lease_owner == "L" else (running, queued)
    await store.update_account(acc.id, disabled=True)
    for task_id in (held, waiting):
        task = await store.get_task(acc.id, task_id)
        assert task is not None and (task.state, task.error) == (TaskState.UNSOLVABLE, C.CAPTCHA_UNSOLVABLE)
    assert not await store.complete(held, "L", {"text": "late"}, 0.9, T0 + 2)  # the worker's answer is refused
    assert await claim(store, "L2", T0 + 2) is None  # nothing of it is handed out
    assert await balance_of(store, acc.id) == 1000
    await store.update_account(acc.id, disabled=False)  # enabling again revives nothing
    assert (await store.get_task(acc.id, waiting)).state is TaskState.UNSOLVABLE  # type: ignore[union-attr]
    assert await store.working_threads(acc.id, T0 + 3) == 0


async def test_a_submit_read_before_the_account_was_disabled_is_refused(store: Store) -> None:
    acc = await account(store)
    await store.update_account(acc.id, disabled=True)
    assert (await store.submit(acc, new_task("x"), T0, LIMITS)).code == C.KEY_DOES_NOT_EXIST


async def test_only_the_claiming_worker_token_acts_on_its_lease(store: Store) -> None:
    acc = await account(store, balance=1000)
    task_id = await submit_ok(store, acc, new_task("a", price=100))
    claimed = await store.claim(("main",), None, "L", 30.0, T0, MAX_ATTEMPTS, worker_id=7)
    assert claimed is not None and claimed.lease_worker == 7
    assert not await store.heartbeat(task_id, "L", 30, T0 + 1, worker_id=8)
    assert not await store.complete(task_id, "L", {"text": "x"}, 0.9, T0 + 1, worker_id=8)
    assert not await store.complete(task_id, "L", {"text": "x"}, 0.9, T0 + 1)  # nor one inside the service
    assert not await store.fail(task_id, "L", None, MAX_ATTEMPTS, T0 + 1, worker_id=8)
    assert await store.heartbeat(task_id, "L", 30, T0 + 1, worker_id=7)
    assert await store.complete(task_id, "L", {"text": "x"}, 0.9, T0 + 2, worker_id=7)
    assert await balance_of(store, acc.id) == 900


async def test_bans_are_listed_and_lifted(store: Store) -> None:
    for _ in range(3):
        await store.strike("203.0.113.9", T0, 60, 3, 300)
    assert await store.bans(T0 + 1) == [("203.0.113.9", T0 + 300)]
    assert await store.ip_banned("203.0.113.9", T0 + 1)
    assert await store.lift_ban("203.0.113.9")
    assert not await store.lift_ban("203.0.113.9")
    assert not await store.ip_banned("203.0.113.9", T0 + 1) and await store.bans(T0 + 1) == []
    assert not await store.strike("203.0.113.9", T0 + 2, 60, 3, 300)  # its strikes were forgotten too


async def test_worker_tokens_are_disabled_enabled_and_deleted(store: Store) -> None:
    bot = await store.create_worker("bot", "wh-1", "cgw_abcd", [], False)
    await store.worker_seen(bot.id, ["turnstile"], T0)
    disabled = await store.set_worker_disabled(bot.id, True)
    assert disabled is not None and disabled.disabled
    assert (await store.worker_by_token_hash("wh-1")).disabled  # type: ignore[union-attr]
    assert await store.active_worker_methods(T0 - 1) == set()  # a disabled token serves nothing
    assert not (await store.set_worker_disabled(bot.id, False)).disabled  # type: ignore[union-attr]
    assert await store.delete_worker(bot.id)
    assert await store.worker_by_token_hash("wh-1") is None and not await store.delete_worker(bot.id)
    assert await store.set_worker_disabled(bot.id, True) is None


async def test_reportbad_refunds_within_the_budget_and_retention(store: Store) -> None:
    acc = await account(store, balance=10_000)
    first = await solved_task(store, acc, "f1", price=1000)
    second = await solved_task(store, acc, "f2", price=1000)
    budget = ReportPolicy(window_s=900.0, refund_bad=True, budget_share=0.5)
    assert await store.report(acc.id, first, False, T0 + 5, budget) is None  # 1000 of 2000 charged: at the cap
    assert await store.report(acc.id, second, False, T0 + 5, budget) == C.REPORT_NOT_RECORDED
    assert await balance_of(store, acc.id) == 10_000 - 2000 + 1000
    third = await solved_task(store, acc, "f3", price=1000)
    kept = ReportPolicy(window_s=900.0, refund_bad=True, retention_s=60.0)
    assert await store.report(acc.id, third, False, T0 + 62, kept) == C.REPORT_NOT_RECORDED  # result gone
    assert await store.report(acc.id, third, True, T0 + 30, kept) is None


async def test_pingback_hosts_stop_at_the_limit_even_when_added_at_once(backend: Backend) -> None:
    stores = await backend.open_many(3)
    acc = await account(stores[0])
    hosts = [f"h{i}.example.com" for i in range(12)]
    held = await asyncio.gather(*(stores[i % 3].add_pingback_host(acc.id, host, 5) for i, host in enumerate(hosts)))
    assert sum(result is None for result in held) == 5
    assert all(result == 5 for result in held if result is not None)
    assert len(await stores[1].pingback_hosts(acc.id)) == 5
    kept = (await stores[2].pingback_hosts(acc.id))[0]
    assert await stores[0].add_pingback_host(acc.id, kept, 5) is None  # one already there is fine
