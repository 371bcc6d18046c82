"""The built-in OCR worker: reads image captchas through the worker contract.

The recognition itself runs in a process pool (``capgate.solvers.ocr.pool``), never on the event
loop; this loop only claims, hands over and answers. Answers below an account's
``human_threshold`` confidence are given back to the human workers' queue instead.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from pathlib import Path

from capgate.protocol.answers import TextAnswer
from capgate.protocol.codes import C
from capgate.solvers.ocr.constraints import OcrConstraints
from capgate.solvers.ocr.engine import UnknownProfile, UnreadableImage
from capgate.solvers.ocr.pool import OcrPool
from capgate.solvers.ocr.profile import Profile, list_profiles
from capgate.solvers.ocr.select import choose_profile
from capgate.workers.source import Job, TaskSource

log = logging.getLogger("capgate.ocr")
OCR_METHODS = ("normal",)
CLAIM_WAIT_S = 20.0
PROFILES_REFRESH_S = 5.0
ERROR_BACKOFF_S = 1.0


class ProfileCatalog:
    """The trained profiles on disk, re-read every few seconds so a new ``capgate train`` is used
    without a restart."""

    def __init__(self, folder: Path | None) -> None:
        self.folder = folder
        self._loaded_at = 0.0
        self._profiles: list[Profile] = []

    def profiles(self) -> list[Profile]:
        now = time.monotonic()
        if self.folder is not None and now - self._loaded_at > PROFILES_REFRESH_S:
            self._profiles = list_profiles(self.folder)
            self._loaded_at = now
        return self._profiles

    def pick(self, job: Job, image: bytes) -> str | None:
        """The task's ``profile``, else the account's default, else a profile whose family the
        image clearly belongs to, else the generic model (``None``)."""
        profiles = self.profiles()
        if not profiles:
            return None
        names = {p.name for p in profiles}
        for wanted in (job.params.get("profile"), job.account_settings.get("profile")):
            if isinstance(wanted, str) and wanted in names:
                return wanted
        return choose_profile(image, profiles)


class OcrWorker:
    def __init__(self, source: TaskSource, pool: OcrPool, profiles_dir: Path | None, concurrency: int,
                 methods: Sequence[str] = OCR_METHODS) -> None:
        self.source = source
        self.pool = pool
        self.catalog = ProfileCatalog(profiles_dir)
        self.concurrency = max(1, concurrency)
        self.methods = list(methods)

    async def run(self) -> None:
        await asyncio.gather(*(self._loop() for _ in range(self.concurrency)))

    async def _loop(self) -> None:
        while True:
            try:
                job = await self.source.claim(self.methods, CLAIM_WAIT_S)
                if job is not None:
                    await self.handle(job)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("OCR worker step failed")
                await asyncio.sleep(ERROR_BACKOFF_S)

    async def handle(self, job: Job) -> None:
        image = job.images.get("body")
        try:
            constraints = OcrConstraints.from_params(job.params)
        except ValueError:
            constraints = None
        if image is None or constraints is None:
            await self.source.fail(job, C.CAPTCHA_UNSOLVABLE, final=True)
            return
        profile = self.catalog.pick(job, image)
        try:
            result = await self.pool.recognize(image, constraints, profile)
        except UnknownProfile:
            result = await self.pool.recognize(image, constraints, None)
        except UnreadableImage:
            await self.source.fail(job, C.CAPTCHA_UNSOLVABLE, final=True)
            return
        threshold = job.account_settings.get("human_threshold")
        if isinstance(threshold, (int, float)) and (threshold >= 1 or result.confidence < threshold):
            await self.source.fail(job, None, to_human=True)
            return
        if not result.text:
            await self.source.fail(job, C.CAPTCHA_UNSOLVABLE, final=True)
            return
        await self.source.answer(job, TextAnswer(result.text), result.confidence)
