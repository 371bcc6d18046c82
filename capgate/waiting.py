"""Waiting for an asyncio.Event with a time limit, in a way a cancel always ends; stopping a task
within a time limit even when it does not end on its cancel.

``asyncio.wait_for(event.wait(), t)`` on Python 3.11 swallows a cancel that arrives as the event is
set (the inner wait finishes, so ``wait_for`` returns its result): a background loop that sleeps
this way can then never be stopped, and the server hung on shutdown once the sandbox worker woke
the pingback sender at the wrong moment. ``asyncio.timeout`` tells the two apart.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys


async def wait_event(event: asyncio.Event, timeout: float) -> bool:
    """True once ``event`` is set, False after ``timeout`` seconds."""
    try:
        async with asyncio.timeout(max(timeout, 0.0)):
            await event.wait()
    except TimeoutError:
        return False
    return True


async def run_until(stop: asyncio.Event, work: asyncio.Task[None], grace_s: float) -> bool:
    """Wait until ``work`` ends or ``stop`` is set, then cancel ``work`` and give it ``grace_s``
    seconds to end. True when it ended. A task whose cancel a library swallows must not keep a
    process from stopping: past the grace the caller goes on without it."""
    stopping = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({work, stopping}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopping.cancel()
        work.cancel()
        await asyncio.wait({work}, timeout=grace_s)
    return work.done()


def stop_notice(command: str, signum: int) -> None:
    """The one line a capgate process prints when a signal stops it (``capgate serve: stopping
    (Ctrl-C)``). Written straight to the file descriptor, as it is called from signal handlers,
    where ``print`` could meet the stream's own lock."""
    name = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
    with contextlib.suppress(OSError):  # no stderr to tell
        os.write(2, f"{command}: stopping ({name})\n".encode())


PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def die_with_parent(parent: int) -> bool:
    """End this process when process ``parent`` ends, however it ends (``kill -9`` included): Linux's
    parent-death signal. Without it a server's worker process outlives a killed main process and goes on
    serving its port, unsupervised, and an OCR process outlives its server. ``False`` where the system
    has no such signal (nothing is done). Linux sends it when the *thread* that started this process
    ends: start processes from threads that live as long as their process (the main thread, or a
    pool's threads, which live until the pool shuts down)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes  # here: a Python built without ctypes still runs capgate, without this

        if ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL) != 0:
            return False
    except Exception:  # no C library to load, no prctl in it: nothing is done
        return False
    if os.getppid() != parent:  # it ended before the call above: the signal will never come
        os.kill(os.getpid(), signal.SIGKILL)
    return True
