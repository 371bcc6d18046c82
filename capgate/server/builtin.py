"""Workers that run inside the server process unless the operator turns them off."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

from capgate.paths import profiles_dir
from capgate.server.app import Extension
from capgate.server.metrics import metrics
from capgate.server.service import Service
from capgate.settings import Settings
from capgate.store.models import Pool

T = TypeVar("T")


def timed_recognize(recognize: Callable[..., Awaitable[T]]) -> Callable[..., Awaitable[T]]:
    """``recognize`` observed into the OCR-latency histogram, by profile."""
    histogram = metrics().ocr_seconds

    async def timed(image: bytes, constraints: Any, profile: str | None = None) -> T:
        start = time.perf_counter()
        try:
            return await recognize(image, constraints, profile)
        finally:
            histogram.labels(profile or "(generic)").observe(time.perf_counter() - start)
    return timed


def builtin_extensions(settings: Settings) -> tuple[Extension, ...]:
    return (ocr_worker,) if settings.ocr else ()


async def ocr_worker(service: Service) -> AsyncIterator[None]:
    """The built-in OCR worker, one claimer per pool process so every core stays busy."""
    from capgate.solvers.ocr.pool import OcrPool
    from capgate.workers.ocr import OCR_METHODS, OcrWorker
    from capgate.workers.source import LocalSource

    settings = service.settings
    processes = settings.ocr_processes or os.cpu_count() or 1
    folder = profiles_dir(settings.db)
    pool = OcrPool(processes, folder)
    pool.recognize = timed_recognize(pool.recognize)  # type: ignore[method-assign,assignment]
    source = LocalSource(service.dispatcher, [Pool.MAIN.value], settings.lease)
    worker = OcrWorker(source, pool, folder, concurrency=processes)
    service.builtin_methods.update(OCR_METHODS)
    running = asyncio.create_task(worker.run())
    try:
        yield
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
        pool.close()
