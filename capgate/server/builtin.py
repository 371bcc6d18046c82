"""Workers that run inside the server process unless the operator turns them off."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator

from capgate.paths import profiles_dir
from capgate.server.app import Extension
from capgate.server.service import Service
from capgate.settings import Settings
from capgate.store.models import Pool


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
