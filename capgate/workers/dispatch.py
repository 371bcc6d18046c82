"""The worker contract: claim a task, hold its lease, answer it or give it back.

One contract for every worker. The built-in OCR worker calls it in-process; external workers call it
through the worker API (``capgate.server.workers``), which is a thin JSON layer over this module.
"""

from __future__ import annotations

import asyncio
import dataclasses
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import MISSING, dataclass, fields
from typing import Any

from capgate.protocol import answers
from capgate.protocol.answers import (
    AngleAnswer,
    Answer,
    AnswerKind,
    CellsAnswer,
    ClearanceAnswer,
    CoordinatesAnswer,
    GeeTestAnswer,
    ObjectAnswer,
    TextAnswer,
    TokenAnswer,
)
from capgate.protocol.codes import CODES, C, Family
from capgate.protocol.methods import BY_NAME
from capgate.settings import Settings
from capgate.store.base import Store
from capgate.store.models import Task
from capgate.workers.labels import keep_task_label
from capgate.workers.notify import SettleHub
from capgate.workers.presence import Presence

CLAIM_RECHECK_S = 0.5
MAX_CLAIM_WAIT_S = 30.0
MAX_LEASE_S = 600.0


class AnswerRejected(ValueError):
    """A worker's answer does not fit the task's answer type."""


@dataclass(frozen=True)
class Claimed:
    """A leased task, as a worker sees it."""

    task: Task
    lease: str
    lease_until: float
    images: dict[str, bytes]
    account_settings: dict[str, Any]

    @property
    def answer_kind(self) -> AnswerKind:
        return BY_NAME[self.task.method].answer


_ANSWER_TYPES: dict[AnswerKind, type[Any]] = {
    AnswerKind.TEXT: TextAnswer, AnswerKind.TOKEN: TokenAnswer, AnswerKind.TOKEN_UA: TokenAnswer,
    AnswerKind.GEETEST: GeeTestAnswer, AnswerKind.CLEARANCE: ClearanceAnswer,
    AnswerKind.CELLS: CellsAnswer, AnswerKind.OBJECT: ObjectAnswer,
    AnswerKind.COORDINATES: CoordinatesAnswer, AnswerKind.ANGLE: AngleAnswer,
}
_MAX_PIXEL = 100_000  # far past any image capgate accepts: a coordinate beyond it is a bug, not a click


def answer_from_fields(kind: AnswerKind, data: Mapping[str, Any]) -> Answer:
    """Build a typed answer from the fields a worker sent (the answer dataclass's field names)."""
    cls = _ANSWER_TYPES[kind]
    names = {f.name for f in fields(cls)}
    required = {f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING}
    if kind is AnswerKind.OBJECT:
        required.add("fields")
    if not set(data) <= names or not required <= set(data):
        raise AnswerRejected(f"a {kind.value} answer has the fields {sorted(names)}; got {sorted(data)}")
    values = dict(data)
    for name, value in values.items():
        if name == "cells":
            if not isinstance(value, list) or not all(type(x) is int and x >= 1 for x in value):
                raise AnswerRejected("cells must be a list of cell numbers")
            values[name] = tuple(value)
        elif name == "fields":
            if not isinstance(value, dict):
                raise AnswerRejected("fields must be an object")
        elif name == "points":
            values[name] = _points(value)
        elif name == "angle":
            if type(value) is not int or not -360 < value < 360:
                raise AnswerRejected("angle must be a whole number of degrees, -359 to 359")
        elif name == "user_agent" and value is None and name not in required:
            continue
        elif not isinstance(value, str) or not value:
            raise AnswerRejected(f"{name} must be a non-empty string")
    return cls(**values)  # type: ignore[no-any-return]


def _points(value: Any) -> tuple[tuple[int, int], ...]:
    """``[{"x": 39, "y": 59}, ...]``: whole pixels from the image's top left corner."""
    if not isinstance(value, list) or not all(
            isinstance(point, dict) and set(point) == {"x", "y"}
            and all(type(point[axis]) is int and 0 <= point[axis] <= _MAX_PIXEL for axis in ("x", "y"))
            for point in value):
        raise AnswerRejected('points must be a list of {"x": int, "y": int}, whole pixels from the top left')
    return tuple((point["x"], point["y"]) for point in value)


class Dispatcher:
    def __init__(self, settings: Settings, store: Store, hub: SettleHub) -> None:
        self.settings = settings
        self.store = store
        self.hub = hub
        self.presence = Presence(store, settings.worker_presence)

    def _settled(self, task_id: int) -> None:
        self.hub.settled(task_id)

    async def claim(self, pools: Sequence[str], methods: Sequence[str] | None, wait: float,
                    lease_s: float, gone: Callable[[], Awaitable[bool]] | None = None,
                    worker_id: int | None = None) -> Claimed | None:
        """The oldest due task for ``methods`` (``None``: any), waiting up to ``wait`` seconds;
        ``None`` at once if ``gone()`` says the worker stopped waiting meanwhile. ``worker_id``: the
        worker token claiming (``None`` for a worker in this process); only it may act on the task."""
        lease_s = max(1.0, min(lease_s, MAX_LEASE_S))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(0.0, min(wait, MAX_CLAIM_WAIT_S))
        waited = False
        while True:
            now = time.time()
            if await self.store.has_claimable(pools, methods, now, self.settings.max_attempts):
                if waited and gone is not None and await gone():
                    return None
                lease = secrets.token_hex(12)
                task = await self.store.claim(pools, methods, lease, lease_s, now, self.settings.max_attempts,
                                              worker_id)
                if task is not None:
                    account = await self.store.get_account(task.account_id)
                    return Claimed(task, lease, now + lease_s, await self.store.blobs(task.id),
                                   dict(account.settings) if account else {})
            remaining = deadline - loop.time()
            # A worker waiting over HTTP (``gone``) is sent away when the server stops, rather than
            # cut; one in this process goes on sleeping until it is cancelled.
            if remaining <= 0 or (self.hub.stopping and gone is not None):
                return None
            await self.hub.wait_queued(min(CLAIM_RECHECK_S, remaining))
            waited = True

    async def heartbeat(self, task_id: int, lease: str, lease_s: float, worker_id: int | None = None,
                        ) -> float | None:
        lease_s = max(1.0, min(lease_s, MAX_LEASE_S))
        now = time.time()
        if await self.store.heartbeat(task_id, lease, lease_s, now, worker_id):
            return now + lease_s
        return None

    async def answer(self, task_id: int, lease: str, kind: AnswerKind, answer: Answer,
                     confidence: float | None, by_person: Task | None = None, worker_id: int | None = None,
                     ) -> bool:
        """Settle as solved (and charge). ``False`` if the lease is no longer this worker's: a task is
        never answered twice. A person's answer (``by_person``: the leased task as the caller read
        it) is kept as a label where the account opted in.

        ``kind`` is the task's answer kind (its method's), which the stored fields follow: a poll
        sends them as they are (``wire.solved``), so they must be what res.php sends for that kind."""
        stored = answers.encode_json(answer, kind)
        done = await self.store.complete(task_id, lease, stored, confidence, time.time(), worker_id)
        if done:
            self._settled(task_id)
            if by_person is not None:
                await keep_task_label(self.store, self.settings, dataclasses.replace(by_person, answer=stored))
        return done

    async def fail(self, task_id: int, lease: str, error: str | None, to_human: bool = False,
                   final: bool = False, worker_id: int | None = None) -> bool:
        """Give the task back for another attempt; with ``error`` (a code the customer will see),
        settle it unsolvable once it has used up its attempts, or at once if ``final`` (retrying
        cannot help: the image does not decode). ``to_human`` moves it to the human workers'
        queue (a low-confidence OCR answer)."""
        if error is not None:
            code = CODES.get(error)
            if code is None or code.family is not Family.UNSOLVABLE:
                error = C.CAPTCHA_UNSOLVABLE
        # Without a code there is nothing to settle with, so even a "final" failure is only given back.
        done = await self.store.fail(task_id, lease, error, self.settings.max_attempts, time.time(), to_human,
                                     final=final and error is not None, worker_id=worker_id)
        if done:
            self._settled(task_id)
            self.hub.queued()
        return done
