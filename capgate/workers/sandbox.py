"""The sandbox worker: settles every due task of a sandbox account with its fake answer.

It works through the same store contract as every other worker; the answers themselves come from
``capgate.solvers.sandbox``, which is fast and pure enough to run inside the store's transaction.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import time
from collections.abc import Callable

from capgate.solvers.sandbox import solve
from capgate.store.base import Store
from capgate.store.models import Pool
from capgate.waiting import wait_event

log = logging.getLogger("capgate.sandbox")

BATCH = 256


class SandboxWorker:
    """Claims due sandbox tasks through the same store contract as every other worker."""

    def __init__(self, store: Store, on_settled: Callable[[int], None]) -> None:
        self.store = store
        self.on_settled = on_settled
        self._wake = asyncio.Event()
        self._due: list[float] = []  # heap of due times of tasks submitted through this process

    def due_at(self, when: float) -> None:
        """A sandbox task was submitted here: wake up when it is due, not on the next tick."""
        heapq.heappush(self._due, when)
        self._wake.set()

    async def run(self, idle_s: float = 0.5) -> None:
        while True:
            try:
                worked = await self.step()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("sandbox worker step failed")
                worked = False
            if worked:
                continue
            now = time.time()
            if self._due and self._due[0] <= now:
                while self._due and self._due[0] <= now:
                    heapq.heappop(self._due)
                continue  # something fell due since the claim: claim again before sleeping
            wait = idle_s if not self._due else min(idle_s, self._due[0] - now)
            self._wake.clear()
            await wait_event(self._wake, wait)

    async def step(self) -> bool:
        """Settle every due sandbox task in one transaction: a burst of submits can't starve it."""
        settled = await self.store.settle_due(Pool.SANDBOX.value, time.time(), BATCH, solve)
        for task_id in settled:
            self.on_settled(task_id)
        return bool(settled)
