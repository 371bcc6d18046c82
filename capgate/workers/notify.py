"""Waking long-polls when a task settles, and claiming workers when a task is queued.

A waiting long-poll or claim costs nothing until it is woken: there is no timer re-reading the store.

* A task settled in this process wakes its waiters at once (:meth:`SettleHub.settled`).
* One settled by another process sharing the database is heard of by :meth:`SettleHub.watch`, one
  task per process, from the store's change feed:

  - PostgreSQL: ``LISTEN``. The store's scripts send ``pg_notify`` in the same transaction as the
    change (settled task ids on ``capgate_settled``, queued methods on ``capgate_queued``), so a
    notice arrives only after the change is committed and visible. The listener reconnects when its
    connection drops; while it is down, and once after each (re)connect, the ids being waited for
    are re-read every :data:`FALLBACK_S` seconds instead (nothing is missed, only heard late).
  - SQLite: ``PRAGMA data_version`` of the file, read every :data:`DATA_VERSION_S` seconds while
    anything waits (a few microseconds; nothing at all while nobody waits). It changes when another
    connection commits; then one read finds which of the waited-for ids have settled, and claiming
    workers look at the queue again. A local socket between processes would save the ticks but
    needs an address every process agrees on and a peer that may have died; the file already is one.

A server that stops releases every long-poll at once (:meth:`SettleHub.stop`): each answers what it
has, and no request is cut.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable

from capgate.store.base import Notice, Store
from capgate.waiting import wait_event

FALLBACK_S = 2.0  # re-read of waited-for tasks while the PostgreSQL listener is down
DATA_VERSION_S = 0.02  # SQLite: how often the file's version is read while something waits
RECONNECT_S = (0.2, 5.0)  # the listener's first and longest pause between reconnects
log = logging.getLogger("capgate.notify")


class SettleHub:
    def __init__(self) -> None:
        self._waiters: dict[int, set[asyncio.Event]] = {}
        self._queue_waiters: set[asyncio.Event] = set()
        self._anyone = asyncio.Event()  # set while something waits: the SQLite watcher sleeps otherwise
        self.on_settle: list[Callable[[int], None]] = []  # settles in this process (the pingback sender)
        self.on_any_settle: list[Callable[[int], None]] = []  # ... and in other processes (memos)
        self.stopping = False
        self.listening = False  # the PostgreSQL listener is connected: cross-process notices arrive

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
        """A task was queued (here or, through :meth:`watch`, elsewhere): wake workers waiting for one."""
        for event in self._queue_waiters:
            event.set()

    async def wait_queued(self, timeout: float) -> None:
        """Sleep until a task is queued, here or in another process sharing the database, or ``timeout``."""
        event = asyncio.Event()
        self._queue_waiters.add(event)
        self._anyone.set()
        try:
            await wait_event(event, timeout)
        finally:
            self._queue_waiters.discard(event)
            self._idle_check()

    def settled(self, task_id: int) -> None:
        """A task settled in this process."""
        self._wake(task_id)
        for callback in self.on_settle:
            callback(task_id)

    def settled_elsewhere(self, task_ids: Iterable[int]) -> None:
        """Tasks another process settled (or that may have settled: waking a waiter costs one read)."""
        for task_id in task_ids:
            self._wake(task_id)

    def _wake(self, task_id: int) -> None:
        for event in self._waiters.get(task_id, ()):
            event.set()
        for callback in self.on_any_settle:
            callback(task_id)

    def waited_ids(self) -> list[int]:
        return list(self._waiters)

    def _idle_check(self) -> None:
        if not self._waiters and not self._queue_waiters:
            self._anyone.clear()

    async def wait(self, task_ids: Iterable[int], timeout: float,
                   done: Callable[[], Awaitable[bool]]) -> None:
        """Return once ``done()`` is true or ``timeout`` seconds have passed. ``done()`` is asked
        first and then only when one of ``task_ids`` is reported settled."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        ids = list(task_ids)
        event = asyncio.Event()
        for task_id in ids:
            self._waiters.setdefault(task_id, set()).add(event)
        self._anyone.set()
        try:
            # Registered before the first look: a settle between the look and the sleep still wakes it.
            while not await done():
                remaining = deadline - loop.time()
                if remaining <= 0 or self.stopping:
                    return
                if not await wait_event(event, remaining):
                    return
                event.clear()
        finally:
            for task_id in ids:
                waiters = self._waiters.get(task_id)
                if waiters is not None:
                    waiters.discard(event)
                    if not waiters:
                        del self._waiters[task_id]
            self._idle_check()

    # ------------------------------------------------------------------ other processes' changes

    async def watch(self, store: Store) -> None:
        """Hear of changes other processes make to the store, until cancelled (one per process)."""
        if store.has_notices:
            await self._listen(store)
        else:
            await self._watch_version(store)

    async def _recheck(self, store: Store) -> None:
        """Look again at everything waited for: settled ids wake their waiters, claims look at the queue."""
        ids = self.waited_ids()
        if ids:
            self.settled_elsewhere(await store.settled_among(ids))
        self.queued()

    async def _watch_version(self, store: Store) -> None:
        last: int | None = None
        while last is None:
            try:
                last = await store.data_version()
            except Exception:
                log.exception("reading the database's version failed")
                await asyncio.sleep(FALLBACK_S)
        while True:
            await self._anyone.wait()
            await asyncio.sleep(DATA_VERSION_S)
            try:
                version = await store.data_version()
                if version != last:
                    last = version
                    await self._recheck(store)
            except Exception:
                log.exception("reading the database's version failed")
                await asyncio.sleep(FALLBACK_S)

    async def _listen(self, store: Store) -> None:
        pause = RECONNECT_S[0]
        fallback: asyncio.Task[None] | None = None
        try:
            while True:
                if fallback is None:
                    fallback = asyncio.create_task(self._fallback(store))
                try:
                    async for notice in store.notices():
                        if notice.ready:  # connected, and LISTEN is in place
                            self.listening = True
                            if fallback is not None:
                                fallback.cancel()
                                fallback = None
                            pause = RECONNECT_S[0]
                            await self._recheck(store)  # what settled while nobody listened
                        self._deliver(notice)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    log.warning("the database's change feed is down (%s); re-reading every %.0f s until it "
                                "is back", " ".join(str(exc).split()) or type(exc).__name__, FALLBACK_S)
                self.listening = False
                await asyncio.sleep(pause)
                pause = min(pause * 2, RECONNECT_S[1])
        finally:
            self.listening = False
            if fallback is not None:
                fallback.cancel()

    def _deliver(self, notice: Notice) -> None:
        if notice.settled:
            self.settled_elsewhere(notice.settled)
        if notice.queued:
            self.queued()

    async def _fallback(self, store: Store) -> None:
        while True:
            with contextlib.suppress(Exception):  # the database itself is away: the next round tries again
                await self._recheck(store)
            await asyncio.sleep(FALLBACK_S)
