"""A background loop that sleeps on an event can always be cancelled (server shutdown)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from capgate.waiting import run_until, wait_event


def _sleeper(wait: Callable[[asyncio.Event, float], Awaitable[object]], event: asyncio.Event) -> asyncio.Task[None]:
    async def loop_forever() -> None:
        while True:
            await wait(event, 10.0)
            event.clear()
    return asyncio.create_task(loop_forever())


async def test_a_cancel_that_meets_the_event_still_cancels() -> None:
    event = asyncio.Event()
    task = _sleeper(wait_event, event)
    await asyncio.sleep(0)  # the loop is now waiting
    event.set()  # woken and cancelled in the same turn, as at shutdown while the sandbox settles
    task.cancel()
    done, _ = await asyncio.wait([task], timeout=2)
    assert done and task.cancelled()


async def test_timeout_and_event() -> None:
    event = asyncio.Event()
    assert not await wait_event(event, 0.01)
    assert not await wait_event(event, -1)
    event.set()
    assert await wait_event(event, 5)


async def test_run_until_stop_cancels_the_work() -> None:
    stop = asyncio.Event()
    work = asyncio.create_task(asyncio.sleep(3600))
    asyncio.get_running_loop().call_later(0.01, stop.set)
    assert await run_until(stop, work, grace_s=5)
    assert work.cancelled()


async def test_run_until_returns_when_the_work_ends_first() -> None:
    async def fails() -> None:
        raise ValueError("boom")

    work = asyncio.create_task(fails())
    assert await run_until(asyncio.Event(), work, grace_s=5)
    assert isinstance(work.exception(), ValueError)


async def test_run_until_gives_up_on_work_that_swallows_its_cancel() -> None:
    """What a library that swallows a cancel does to a worker's Ctrl-C: the caller goes on anyway."""
    release = asyncio.Event()

    async def stubborn() -> None:
        while not release.is_set():
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                continue
    stop = asyncio.Event()
    stop.set()
    work = asyncio.create_task(stubborn())
    await asyncio.sleep(0)
    assert not await run_until(stop, work, grace_s=0.05)
    assert not work.done()
    release.set()
    work.cancel()  # lets the test's loop close: the loop checks `release` after this cancel
    await asyncio.wait([work], timeout=5)
    assert work.done()
