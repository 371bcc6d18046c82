"""The store's admin additions (schema v6) on both backends: admin tokens and sessions, task search,
and the figures the dashboard and /metrics read."""

from __future__ import annotations

from capgate.store.base import Store
from capgate.store.models import LedgerKind, Pool, Task, TaskSearch, TaskState
from tests.test_store_contract import (
    MAX_ATTEMPTS,
    POLICY,
    T0,
    account,
    claim,
    new_task,
    submit_ok,
)


async def test_admin_tokens_and_sessions(store: Store) -> None:
    first = await store.create_admin_token("ops", "hash-a", "cga_1234", T0)
    second = await store.create_admin_token("ci", "hash-b", "cga_5678", T0 + 1)
    assert (first.name, first.token_prefix, first.disabled) == ("ops", "cga_1234", False)
    assert await store.admin_token_by_hash("hash-a") == first
    assert await store.admin_token_by_hash("nope") is None
    assert [t.id for t in await store.list_admin_tokens()] == [first.id, second.id]

    await store.create_admin_session("s-1", first.id, T0, T0 + 100)
    assert await store.admin_session("s-1", T0 + 50) == first
    assert await store.admin_session("s-1", T0 + 100) is None  # expired
    assert await store.admin_session("s-2", T0) is None
    await store.create_admin_session("s-3", second.id, T0, T0 + 100)
    await store.end_admin_session("s-3")
    assert await store.admin_session("s-3", T0) is None

    disabled = await store.set_admin_token_disabled(first.id, True)
    assert disabled is not None and disabled.disabled
    assert await store.admin_session("s-1", T0 + 1) is None  # its sessions end with it
    enabled = await store.set_admin_token_disabled(first.id, False)
    assert enabled is not None and not enabled.disabled
    assert await store.admin_session("s-1", T0 + 1) is None  # and do not come back
    assert await store.set_admin_token_disabled(999_999, True) is None


async def test_task_search_and_history(store: Store) -> None:
    alice, bob = await account(store, balance=10_000), await account(store)
    a1 = await submit_ok(store, alice, new_task("a1", price=100), T0)
    a2 = await submit_ok(store, alice, new_task("a2", method="turnstile"), T0 + 10)
    b1 = await submit_ok(store, bob, new_task("b1"), T0 + 20)
    assert await claim(store, "L1", T0 + 30, methods=["normal"]) == a1
    assert await store.complete(a1, "L1", {"text": "abc"}, 0.9, T0 + 31)

    def ids(found: list[Task]) -> list[int]:
        return [t.id for t in found]

    assert ids(await store.search_tasks(TaskSearch())) == [b1, a2, a1]  # newest first
    assert ids(await store.search_tasks(TaskSearch(account_id=alice.id))) == [a2, a1]
    assert ids(await store.search_tasks(TaskSearch(state=TaskState.SOLVED))) == [a1]
    assert ids(await store.search_tasks(TaskSearch(method="turnstile"))) == [a2]
    assert ids(await store.search_tasks(TaskSearch(since=T0 + 10, until=T0 + 20))) == [a2]
    assert ids(await store.search_tasks(TaskSearch(limit=1))) == [b1]
    assert ids(await store.search_tasks(TaskSearch(account_id=alice.id, state=TaskState.PENDING))) == [a2]

    task = await store.find_task(a1)
    assert task is not None and task.account_id == alice.id and task.answer == {"text": "abc"}
    assert await store.find_task(12345) is None
    history = await store.task_ledger(a1)
    assert [(e.kind, e.amount) for e in history] == [(LedgerKind.CHARGE, -100)]


async def test_dashboard_figures(store: Store) -> None:
    alice = await account(store, balance=5_000)
    bob = await account(store, sandbox=True)
    solved = await submit_ok(store, alice, new_task("s", price=100), T0)
    failed = await submit_ok(store, alice, new_task("f"), T0 + 1)
    await submit_ok(store, alice, new_task("q1", method="turnstile"), T0 + 2)
    await submit_ok(store, bob, new_task("q2", pool=Pool.SANDBOX), T0 + 3)
    await submit_ok(store, bob, new_task("q3", pool=Pool.SANDBOX), T0 + 4)
    assert await claim(store, "L1", T0 + 5, methods=["normal"]) == solved
    assert await store.complete(solved, "L1", {"text": "x"}, 1.0, T0 + 8)
    assert await claim(store, "L2", T0 + 9, methods=["normal"]) == failed
    assert await store.fail(failed, "L2", "ERROR_CAPTCHA_UNSOLVABLE", MAX_ATTEMPTS, T0 + 10, final=True)

    assert await store.queue_depth() == {("turnstile", "main"): 1, ("normal", "sandbox"): 2}
    assert await store.pending_by_account(T0 + 10) == {alice.id: 1, bob.id: 2}
    recent = await store.settled_since(T0)
    assert [(s.id, s.state, s.took) for s in recent] == [(failed, TaskState.UNSOLVABLE, 9.0),
                                                         (solved, TaskState.SOLVED, 8.0)]
    assert recent[0].error == "ERROR_CAPTCHA_UNSOLVABLE" and recent[1].account_id == alice.id
    assert await store.settled_since(T0 + 9) == recent[:1]
    assert {s.id for s in await store.settled_of([solved, failed, 42])} == {solved, failed}
    assert await store.settled_of([]) == []
    totals, last = await store.ledger_totals()
    assert totals == {"topup": (1, 5_000), "charge": (1, -100)}
    assert await store.ledger_totals(last) == ({}, last)  # nothing after the last entry
    await store.topup(alice.id, 7, "more")
    assert await store.ledger_totals(last) == ({"topup": (1, 7)}, last + 1)

    worker = await store.create_worker("bot", "wh", "cgw_bot0", ["turnstile"], False)
    await store.worker_seen(worker.id, ["turnstile"], T0 + 20)
    idle = await store.create_worker("idle", "wh2", "cgw_idl0", [], True)
    seen = {w.worker.id: w for w in await store.workers_seen(T0)}
    assert (seen[worker.id].last_seen, seen[worker.id].serving) == (T0 + 20, ("turnstile",))
    assert (seen[idle.id].last_seen, seen[idle.id].serving) == (None, ())
    assert (await store.workers_seen(T0 + 30))[0].serving == ()


async def test_reports_name_their_profile(store: Store) -> None:
    alice = await account(store)
    await store.update_account(alice.id, settings={"profile": "shop"})
    good = await submit_ok(store, alice, new_task("g", params={"profile": "bank"}), T0)
    bad = await submit_ok(store, alice, new_task("b"), T0 + 1)
    await submit_ok(store, alice, new_task("n"), T0 + 2)  # never reported
    for lease, task_id in (("L1", good), ("L2", bad)):
        assert await claim(store, lease, T0 + 3, methods=["normal"]) == task_id
        assert await store.complete(task_id, lease, {"text": "x"}, 1.0, T0 + 4)
    assert await store.report(alice.id, good, True, T0 + 5, POLICY) is None
    assert await store.report(alice.id, bad, False, T0 + 5, POLICY) is None
    found = sorted(await store.reports(["normal"]), key=lambda r: r[1])
    assert found == [({"fp": "b"}, "bad", {"profile": "shop"}), ({"profile": "bank"}, "good", {"profile": "shop"})]
    assert await store.reports(["turnstile"]) == []
    assert await store.reports([]) == []
