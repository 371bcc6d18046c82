"""Which methods some worker serves now, as ``in.php`` asks before it takes a task no one would solve.

The store holds the truth for every process (each token's claimed methods, by when it last claimed).
Reading it on every submit would cost a query each, so this process keeps the answer for a second; and
a claim made through this process is counted at once, so a worker that has just started is not turned
away for that second (``ERROR_NO_SLOT_AVAILABLE``) by the process it claimed from.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from capgate.store.base import Store

CACHE_S = 1.0  # how long the store's answer stands in this process
RECORD_EVERY_S = 5.0  # a worker that keeps claiming the same methods is written down this often
RECORDED_MAX = 4096  # (token, methods) pairs remembered for that, before the stale ones are dropped


class Presence:
    def __init__(self, store: Store, window_s: float) -> None:
        self._store = store
        self._window_s = window_s  # a worker seen this recently serves what it claimed
        self._cached: tuple[float, set[str]] = (float("-inf"), set())
        self._recorded: dict[tuple[int, tuple[str, ...]], float] = {}
        # Method -> when a worker last claimed it through this process: the note stands until any
        # answer cached before the store had the claim has expired.
        self._noted: dict[str, float] = {}

    async def seen(self, worker_id: int, methods: Sequence[str] | None, now: float) -> None:
        """Worker token ``worker_id`` asked for ``methods`` (``None``: any) just now."""
        served = tuple(sorted(methods or ["*"]))
        if now - self._recorded.get((worker_id, served), float("-inf")) > RECORD_EVERY_S:
            if len(self._recorded) >= RECORDED_MAX:
                # Tokens that come and go, or vary their lists: only the throttle's live entries matter.
                self._recorded = {k: at for k, at in self._recorded.items() if now - at <= RECORD_EVERY_S}
            self._recorded[(worker_id, served)] = now
            await self._store.worker_seen(worker_id, served, now)
        # Stamped once the store has it: a cached answer whose read began before that expires first.
        noted_at = time.time()
        for method in served:
            self._noted[method] = noted_at

    async def serves(self, method: str, now: float) -> bool:
        cached_at, served = self._cached
        if now - cached_at > CACHE_S:
            served = await self._store.active_worker_methods(now - self._window_s)
            self._cached = (now, served)
        return any(name in served or now - self._noted.get(name, float("-inf")) <= CACHE_S
                   for name in (method, "*"))
