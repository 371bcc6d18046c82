"""Waking long-polls when a task settles.

A task settled in this process wakes its waiters at once; one settled by another process sharing
the database is seen on the next re-check, a fraction of a second later.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable

RECHECK_S = 0.25


class SettleHub:
    def __init__(self) -> None:
        self._waiters: dict[int, set[asyncio.Event]] = {}

    def settled(self, task_id: int) -> None:
        for event in self._waiters.get(task_id, ()):
            event.set()

    async def wait(self, task_ids: Iterable[int], timeout: float,
                   done: Callable[[], Awaitable[bool]]) -> None:
        """Return once ``done()`` is true or ``timeout`` seconds have passed."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        ids = list(task_ids)
        event = asyncio.Event()
        for task_id in ids:
            self._waiters.setdefault(task_id, set()).add(event)
        try:
            while not await done():
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return
                try:
                    await asyncio.wait_for(event.wait(), min(RECHECK_S, remaining))
                except TimeoutError:
                    pass
                event.clear()
        finally:
            for task_id in ids:
                waiters = self._waiters.get(task_id)
                if waiters is not None:
                    waiters.discard(event)
                    if not waiters:
                        del self._waiters[task_id]
