"""A background loop that sleeps on an event can always be cancelled (server shutdown)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from capgate.waiting import wait_event


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

