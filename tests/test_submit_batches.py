"""Group commit of submits (PostgreSQL: one account's submits that queue while one of its batches is
in flight go in one transaction): every submit is decided as if it ran alone, in its turn. Run on
both backends: SQLite's writer batches transactions its own way, and the answers must be the same."""

from __future__ import annotations

import asyncio

from capgate.protocol.codes import C
from capgate.store.models import Pool, TaskState
from tests.storekit import Backend
from tests.test_store_contract import LIMITS, T0, account, new_task


async def test_one_store_burst_decided_in_turn(backend: Backend) -> None:
    """60 submits of one account at once, through one store: the thread cap, the balance and the
    duplicates each refuse exactly the submits one after the other would refuse."""
    store = await backend.open()
    acc = await account(store, threads=20, balance=1_500)
    tasks = [new_task(f"fp{i % 30}", price=100 if i % 2 else 0, blobs={"body": bytes([i]) * 200})
             for i in range(60)]
    outcomes = await asyncio.gather(*(store.submit(acc, task, T0, LIMITS) for task in tasks))
    ids = [o.task_id for o in outcomes if o.task_id is not None]
    codes = [o.code for o in outcomes if o.task_id is None]
    assert len(ids) == len(set(ids)) == 20  # the cap; never one more
    assert set(codes) <= {C.ZERO_BALANCE, C.BAD_DUPLICATES}
    assert await store.working_threads(acc.id, T0) == 20
    # The money promised to pending tasks never exceeds the balance.
    held = [await store.get_task(acc.id, task_id) for task_id in ids]
    assert sum(t.price for t in held if t is not None) <= 1_500
    prints = [t.fingerprint for t in held if t is not None]
    assert len(prints) == len(set(prints))  # no duplicate pending
    for task_id in ids:
        task = await store.get_task(acc.id, task_id)
        assert task is not None and task.state is TaskState.PENDING
        blobs = await store.blobs(task_id)
        assert len(blobs["body"]) == 200 and blobs["body"] == bytes([blobs["body"][0]]) * 200
        assert task.fingerprint == f"fp{blobs['body'][0] % 30}"


async def test_burst_of_many_accounts(backend: Backend) -> None:
    store = await backend.open()
    accounts = [await account(store, threads=3) for _ in range(5)]
    outcomes = await asyncio.gather(*(store.submit(acc, new_task(f"a{acc.id}-{i}", pool=Pool.SANDBOX), T0, LIMITS)
                                      for acc in accounts for i in range(6)))
    admitted = [o for o in outcomes if o.task_id is not None]
    assert len(admitted) == 15
    for acc in accounts:
        assert await store.working_threads(acc.id, T0) == 3
