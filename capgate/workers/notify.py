"""Waking long-polls when a task settles.

A task settled in this process wakes its waiters at once; one settled by another process sharing
the database is seen on the next re-check, a fraction of a second later. A server that stops releases
every long-poll at once (:meth:`SettleHub.stop`): each answers what it has, and no request is cut.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable

from capgate.waiting import wait_event

RECHECK_S = 0.25


class SettleHub:
    def __init__(self) -> None:
        self._waiters: dict[int, set[asyncio.Event]] = {}
        self._queue_waiters: set[asyncio.Event] = set()
        self.on_settle: list[Callable[[int], None]] = []  # e.g. the pingback sender's wake-up
        self.stopping = False

    def stop(self) -> None:
        """The server is stopping: every long-poll (:meth:`wait`) returns now, and later ones at once;
        claims waiting for a task wake once (the dispatcher sends a worker waiting over HTTP away)."""
        self.stopping = True
        for event in self._queue_waiters:
            event.set()
        for waiters in self._waiters.values():
            for event in waiters:
                event.set()

    def queued(self) -> None:
        """A task was submitted here: wake workers long-polling for one."""
        for event in self._queue_waiters:
            event.set()

    async def wait_queued(self, timeout: float) -> None:
        """Sleep until a task is submitted through this process, or ``timeout`` (tasks submitted
        through other processes are found by the caller's next look at the store)."""
        event = asyncio.Event()
        self._queue_waiters.add(event)
        try:
            await wait_event(event, timeout)
        finally:
            self._queue_waiters.discard(event)

    def settled(self, task_id: int) -> None:
        for event in self._waiters.get(task_id, ()):
            event.set()
        for callback in self.on_settle:
            callback(task_id)

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
                if remaining <= 0 or self.stopping:
                    return
                await wait_event(event, min(RECHECK_S, remaining))
                event.clear()
        finally:
            for task_id in ids:
                waiters = self._waiters.get(task_id)
                if waiters is not None:
                    waiters.discard(event)
                    if not waiters:
                        del self._waiters[task_id]
