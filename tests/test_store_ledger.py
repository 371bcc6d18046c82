"""The store on both backends: accounts, the ledger, charges and refunds, id scoping, submit limits.

The money rule under test: every change of balance is a ledger row written in the same transaction,
so at any moment sum(ledger amounts) == balance, and each row's balance_after is the running total.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from capgate.keys import hash_secret, new_key
from capgate.protocol.codes import C
from capgate.store.base import ReportPolicy, Store, SubmitLimits
from capgate.store.lifecycle import state_as_of
from capgate.store.models import Account, LedgerKind, NewTask, Pool, Task, TaskState
from capgate.store.sql import rows
from capgate.workers.sandbox import SandboxWorker
from tests.storekit import BACKENDS, new_backend

LIMITS = SubmitLimits(C.ZERO_BALANCE, 100_000)
POLICY = ReportPolicy(900.0, True)
NOW = time.time()  # the sandbox worker used to settle tasks runs on the real clock


async def account(store: Store, *, threads: int = 5, balance: int = 0, sandbox: bool = True) -> Account:
    key = new_key()
    return await store.create_account(hash_secret(key), key[:6], threads, balance, sandbox)


def new_task(price: int = 0, fingerprint: str = "", params: dict[str, str] | None = None,
             deadline_s: float = 300.0) -> NewTask:
    return NewTask(method="turnstile", params=params or {"sitekey": "k", "pageurl": "https://x/"}, blobs={},
                   fingerprint=fingerprint or new_key(), price=price, deadline_s=deadline_s, pool=Pool.SANDBOX,
                   not_before=1.0)


async def submit(store: Store, owner: Account, task: NewTask, now: float = NOW,
                 limits: SubmitLimits = LIMITS) -> int:
    outcome = await store.submit(owner, task, now, limits)
    assert outcome.code is None and outcome.task_id is not None, outcome
    return outcome.task_id


async def refreshed(store: Store, owner: Account) -> Account:
    for found in await store.list_accounts():
        if found.id == owner.id:
            return found
    raise AssertionError("account vanished")


async def assert_books_balance(store: Store, owner: Account) -> list[tuple[LedgerKind, int, int | None]]:
    current = await refreshed(store, owner)
    entries = list(reversed(await store.ledger(owner.id, 100_000)))
    assert sum(e.amount for e in entries) == current.balance
    running = 0
    for entry in entries:
        running += entry.amount
        assert entry.balance_after == running
        assert entry.account_id == owner.id
    return [(e.kind, e.amount, e.task_id) for e in entries]


async def solve_all(store: Store) -> int:
    """Let the sandbox worker settle every due sandbox task; the number of tasks it settled."""
    settled: list[int] = []
    worker = SandboxWorker(store, settled.append)
    while await worker.step():
        pass
    return len(settled)


def state_at(task: Task, now: float) -> TaskState:
    return state_as_of(task.state, task.created_at, task.deadline_at, task.settled_at, now, 900.0)


# ------------------------------------------------------------------------------------------ accounts


async def test_initial_balance_is_a_topup_row(store: Store) -> None:
    owner = await account(store, balance=1_500_000)
    assert owner.balance == 1_500_000
    assert await assert_books_balance(store, owner) == [(LedgerKind.TOPUP, 1_500_000, None)]
    empty = await account(store)
    assert await assert_books_balance(store, empty) == []


async def test_topup(store: Store) -> None:
    owner = await account(store, balance=100)
    after = await store.topup(owner.id, 250, "manual")
    assert after.balance == 350
    books = await assert_books_balance(store, owner)
    assert books == [(LedgerKind.TOPUP, 100, None), (LedgerKind.TOPUP, 250, None)]
    assert (await store.ledger(owner.id))[0].note == "manual"


async def test_keys_are_found_by_hash_only(store: Store) -> None:
    key = new_key()
    created = await store.create_account(hash_secret(key), key[:6], 5, 0, False)
    assert (await store.account_by_key_hash(hash_secret(key))) == created
    assert await store.account_by_key_hash(key) is None
    assert await store.account_by_key_hash(hash_secret(key.upper())) is None
    stored = await store._read(rows("SELECT key_hash, key_prefix FROM accounts"))
    assert [tuple(row[name] for name in ("key_hash", "key_prefix")) for row in stored] == [(hash_secret(key), key[:6])]


async def test_disable(store: Store) -> None:
    owner = await account(store)
    assert (await store.update_account(owner.id, disabled=True)).disabled
    assert (await store.update_account(owner.id, disabled=False)).disabled is False
    assert (await store.update_account(owner.id, threads=9)).threads == 9


# ------------------------------------------------------------------------------------------ submit


async def test_ids_are_random_numbers_scoped_to_their_account(store: Store) -> None:
    owner, other = await account(store, threads=100), await account(store)
    ids = [await submit(store, owner, new_task()) for _ in range(30)]
    assert len(set(ids)) == 30
    assert all(len(str(i)) >= 8 and i < 2**53 for i in ids)
    assert sorted(ids) != ids or {b - a for a, b in itertools.pairwise(ids)} != {1}
    for task_id in ids[:5]:
        found = await store.get_task(owner.id, task_id)
        assert found is not None and found.account_id == owner.id and found.state is TaskState.PENDING
        assert await store.get_task(other.id, task_id) is None
    assert set(await store.outcomes(owner.id, ids)) == set(ids)
    assert await store.outcomes(other.id, ids) == {}
    assert await store.report(other.id, ids[0], False, NOW, POLICY) == C.WRONG_CAPTCHA_ID


@pytest.mark.parametrize("code", [C.ZERO_BALANCE, C.NO_SLOT_AVAILABLE])
async def test_thread_cap(store: Store, code: str) -> None:
    owner = await account(store, threads=2)
    limits = SubmitLimits(code, 100_000)
    await submit(store, owner, new_task(), limits=limits)
    await submit(store, owner, new_task(), limits=limits)
    assert (await store.submit(owner, new_task(), NOW, limits)).code == code
    assert await store.working_threads(owner.id, NOW) == 2
    # a task past its deadline no longer holds a thread
    assert await store.working_threads(owner.id, NOW + 301) == 0
    await submit(store, owner, new_task(), now=NOW + 301, limits=limits)


async def test_balance_is_reserved_by_pending_tasks(store: Store) -> None:
    owner = await account(store, balance=600_000)
    await submit(store, owner, new_task(price=500_000))
    assert (await store.submit(owner, new_task(price=500_000), NOW, LIMITS)).code == C.ZERO_BALANCE
    assert (await store.submit(owner, new_task(price=100_001), NOW, LIMITS)).code == C.ZERO_BALANCE
    await submit(store, owner, new_task(price=100_000))
    await submit(store, owner, new_task(price=0))  # free methods never need a balance
    poor = await account(store)
    assert (await store.submit(poor, new_task(price=1), NOW, LIMITS)).code == C.ZERO_BALANCE
    await assert_books_balance(store, owner)


async def test_duplicates(store: Store) -> None:
    owner, other = await account(store), await account(store)
    await submit(store, owner, new_task(fingerprint="same"))
    assert (await store.submit(owner, new_task(fingerprint="same"), NOW, LIMITS)).code == C.BAD_DUPLICATES
    await submit(store, other, new_task(fingerprint="same"))  # duplicates are per account
    assert await solve_all(store) == 2
    await submit(store, owner, new_task(fingerprint="same"))  # settled: no longer a duplicate


async def test_service_wide_queue_cap(store: Store) -> None:
    owner, other = await account(store), await account(store)
    limits = SubmitLimits(C.ZERO_BALANCE, 2)
    await submit(store, owner, new_task(), limits=limits)
    await submit(store, other, new_task(), limits=limits)
    assert (await store.submit(owner, new_task(), NOW, limits)).code == C.NO_SLOT_AVAILABLE


# ------------------------------------------------------------------------------------------ money


async def test_charge_on_solve(store: Store) -> None:
    owner = await account(store, balance=1_000_000)
    task_id = await submit(store, owner, new_task(price=250_000))
    assert (await refreshed(store, owner)).balance == 1_000_000  # nothing moves at submit
    assert await solve_all(store) == 1
    solved = await store.get_task(owner.id, task_id)
    assert solved is not None and solved.state is TaskState.SOLVED and solved.answer is not None
    assert (await refreshed(store, owner)).balance == 750_000
    assert await assert_books_balance(store, owner) == [
        (LedgerKind.TOPUP, 1_000_000, None), (LedgerKind.CHARGE, -250_000, task_id)]


async def test_one_batch_charges_many_tasks_of_many_accounts_row_by_row(store: Store) -> None:
    """The sandbox settles a batch in one transaction with one balance update per account: the rows
    still read as if written one at a time (running balance_after, one charge per task)."""
    first = await account(store, threads=10, balance=1_000_000)
    second = await account(store, threads=10, balance=500_000)
    charges: dict[int, list[tuple[LedgerKind, int, int | None]]] = {first.id: [], second.id: []}
    for owner in (first, second, first):
        for price in (100_000, 20_000, 3_000):
            charges[owner.id].append((LedgerKind.CHARGE, -price, await submit(store, owner, new_task(price=price))))
    assert await solve_all(store) == 9
    for owner, start in ((first, 1_000_000), (second, 500_000)):
        books = await assert_books_balance(store, owner)
        assert books[0] == (LedgerKind.TOPUP, start, None)
        assert sorted(books[1:], key=str) == sorted(charges[owner.id], key=str)


async def test_an_answer_is_charged_once(store: Store) -> None:
    owner = await account(store, balance=1_000_000)
    task_id = await submit(store, owner, new_task(price=100_000))
    claimed = await store.claim([Pool.SANDBOX.value], None, "lease-1", 30.0, NOW, 3)
    assert claimed is not None and claimed.id == task_id
    assert await store.complete(task_id, "lease-1", {"request": "a"}, 1.0, NOW + 1)
    assert not await store.complete(task_id, "lease-1", {"request": "b"}, 1.0, NOW + 2)
    assert not await store.complete(task_id, "someone-else", {"request": "c"}, 1.0, NOW + 2)
    assert [k for k, _, _ in await assert_books_balance(store, owner)] == [LedgerKind.TOPUP, LedgerKind.CHARGE]


async def test_no_charge_when_unsolvable(store: Store) -> None:
    owner = await account(store, balance=1_000_000)
    failed = await submit(store, owner, new_task(price=300_000, params={"sitekey": "sandbox-unsolvable"}))
    proxy = await submit(store, owner, new_task(price=300_000, params={
        "sitekey": "sandbox-error-ERROR_PROXY_CONNECTION_FAILED"}))
    assert await solve_all(store) == 2
    for task_id, code in ((failed, C.CAPTCHA_UNSOLVABLE), (proxy, C.PROXY_CONNECTION_FAILED)):
        found = await store.get_task(owner.id, task_id)
        assert found is not None and found.state is TaskState.UNSOLVABLE and found.error == code
    assert await assert_books_balance(store, owner) == [(LedgerKind.TOPUP, 1_000_000, None)]


async def test_no_charge_when_the_deadline_passes(store: Store) -> None:
    owner = await account(store, balance=1_000_000)
    task_id = await submit(store, owner, new_task(price=300_000, deadline_s=10))
    await store.sweep(NOW + 11, 900.0, 3)
    swept = await store.get_task(owner.id, task_id)
    assert swept is not None and swept.state is TaskState.UNSOLVABLE and swept.error == C.CAPTCHA_UNSOLVABLE
    assert await solve_all(store) == 0  # nothing left to answer, nothing to charge
    assert await assert_books_balance(store, owner) == [(LedgerKind.TOPUP, 1_000_000, None)]
    assert await store.report(owner.id, task_id, False, NOW + 12, POLICY) == C.REPORT_NOT_RECORDED


async def test_refund_on_reportbad(store: Store) -> None:
    owner = await account(store, balance=1_000_000)
    bad = await submit(store, owner, new_task(price=400_000))
    good = await submit(store, owner, new_task(price=100_000), now=NOW + 1)  # solved second
    await solve_all(store)
    now = (await store.get_task(owner.id, bad)).settled_at  # type: ignore[union-attr]
    assert now is not None
    assert await store.report(owner.id, bad, False, now + 1, POLICY) is None
    assert await store.report(owner.id, bad, False, now + 2, POLICY) == C.DUPLICATE_REPORT
    assert await store.report(owner.id, bad, True, now + 2, POLICY) == C.DUPLICATE_REPORT
    assert await store.report(owner.id, good, True, now + 2, POLICY) is None
    assert (await refreshed(store, owner)).balance == 900_000
    assert await assert_books_balance(store, owner) == [
        (LedgerKind.TOPUP, 1_000_000, None), (LedgerKind.CHARGE, -400_000, bad),
        (LedgerKind.CHARGE, -100_000, good), (LedgerKind.REFUND, 400_000, bad)]
    reported = await store.get_task(owner.id, bad)
    assert reported is not None and reported.report == "bad"


async def test_report_rules(store: Store) -> None:
    owner = await account(store, balance=1_000_000)
    late = await submit(store, owner, new_task(price=100_000))
    no_refund = await submit(store, owner, new_task(price=100_000))
    await solve_all(store)
    pending = await submit(store, owner, new_task(price=100_000), now=NOW)
    settled = (await store.get_task(owner.id, late)).settled_at  # type: ignore[union-attr]
    assert settled is not None
    assert await store.report(owner.id, late, False, settled + 901, POLICY) == C.REPORT_NOT_RECORDED
    assert await store.report(owner.id, pending, False, settled, POLICY) == C.REPORT_NOT_RECORDED
    assert await store.report(owner.id, 12345678901, False, settled, POLICY) == C.WRONG_CAPTCHA_ID
    assert await store.report(owner.id, no_refund, False, settled + 1, ReportPolicy(900.0, False)) is None
    assert [k for k, _, _ in await assert_books_balance(store, owner)] == [
        LedgerKind.TOPUP, LedgerKind.CHARGE, LedgerKind.CHARGE]


async def test_free_tasks_write_no_ledger_rows(store: Store) -> None:
    owner = await account(store, balance=5)
    task_id = await submit(store, owner, new_task(price=0))
    await solve_all(store)
    settled = (await store.get_task(owner.id, task_id)).settled_at  # type: ignore[union-attr]
    assert settled is not None
    assert await store.report(owner.id, task_id, False, settled + 1, POLICY) is None
    assert await assert_books_balance(store, owner) == [(LedgerKind.TOPUP, 5, None)]


async def test_expiry(store: Store) -> None:
    owner = await account(store)
    task_id = await submit(store, owner, new_task())
    await solve_all(store)
    solved = await store.get_task(owner.id, task_id)
    assert solved is not None and solved.settled_at is not None
    assert state_at(solved, solved.settled_at + 899) is TaskState.SOLVED
    assert state_at(solved, solved.settled_at + 901) is TaskState.EXPIRED
    await store.sweep(solved.settled_at + 901, 900.0, 3)
    expired = await store.get_task(owner.id, task_id)
    assert expired is not None and expired.state is TaskState.EXPIRED and expired.answer is None
    assert expired.params == {}
    assert await store.blobs(task_id) == {}
    pending = await submit(store, owner, new_task(deadline_s=10), now=NOW)
    found = await store.get_task(owner.id, pending)
    assert found is not None
    assert state_at(found, NOW + 9) is TaskState.PENDING
    assert state_at(found, NOW + 11) is TaskState.UNSOLVABLE
    assert state_at(found, NOW + 10 + 901) is TaskState.EXPIRED


# ------------------------------------------------------------------------------------------ invariant

operations = st.lists(st.tuples(st.sampled_from(["topup", "submit", "unsolvable", "solve", "reportbad",
                                                 "reportgood", "sweep"]),
                                st.integers(0, 700_000)), min_size=1, max_size=25)


@pytest.mark.parametrize("backend_name", BACKENDS)
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(operations)
def test_ledger_always_matches_balance(tmp_path: Path, request: pytest.FixtureRequest, backend_name: str,
                                       ops: list[tuple[str, int]]) -> None:
    """Whatever happens, in any order: sum(ledger) == balance, the balance never goes negative,
    and a task is charged at most once and refunded at most once."""
    async def run() -> None:
        backend = new_backend(backend_name, tmp_path, lambda: request.getfixturevalue("pg_database"))
        store = await backend.open()
        try:
            owner = await account(store, threads=1000, balance=500_000)
            ids: list[int] = []
            clock = NOW
            for op, amount in ops:
                clock += 1
                if op == "topup":
                    await store.topup(owner.id, amount, "t")
                elif op in ("submit", "unsolvable"):
                    params = {"sitekey": "sandbox-unsolvable" if op == "unsolvable" else str(amount)}
                    outcome = await store.submit(owner, new_task(price=amount, params=params), clock, LIMITS)
                    if outcome.task_id is not None:
                        ids.append(outcome.task_id)
                    else:
                        assert outcome.code in (C.ZERO_BALANCE, C.BAD_DUPLICATES)
                elif op == "solve":
                    await solve_all(store)
                elif op == "sweep":
                    await store.sweep(clock + 400, 900.0, 3)
                elif ids:
                    await store.report(owner.id, ids[amount % len(ids)], op == "reportgood", clock, POLICY)
                current = await refreshed(store, owner)
                assert current.balance >= 0
                books = await assert_books_balance(store, owner)
                for task_id in ids:
                    kinds = [k for k, _, t in books if t == task_id]
                    assert kinds.count(LedgerKind.CHARGE) <= 1 and kinds.count(LedgerKind.REFUND) <= 1
                    if LedgerKind.REFUND in kinds:
                        assert LedgerKind.CHARGE in kinds
        finally:
            await backend.close()
    asyncio.run(run())
