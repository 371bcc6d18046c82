"""Where a worker gets its tasks: the dispatcher in this process, or a capgate server over HTTP.

Both give the same :class:`Job`, so a worker's loop is written once and runs either way
(``capgate serve`` in-process, ``capgate worker --server URL`` elsewhere).
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import httpx

from capgate.protocol import wire
from capgate.protocol.answers import Answer
from capgate.protocol.methods import BY_NAME
from capgate.workers.dispatch import Claimed, Dispatcher


@dataclass(frozen=True)
class Job:
    id: int
    method: str
    params: dict[str, str]
    images: dict[str, bytes]
    lease: str
    account_settings: dict[str, Any] = field(default_factory=dict)


class TaskSource(Protocol):
    async def claim(self, methods: Sequence[str], wait: float) -> Job | None: ...

    async def heartbeat(self, job: Job) -> bool: ...

    async def answer(self, job: Job, answer: Answer, confidence: float | None) -> bool: ...

    async def fail(self, job: Job, error: str | None, to_human: bool = False, final: bool = False,
                   ) -> bool: ...

    async def close(self) -> None: ...


# Account settings a worker may act on; nothing else about the account leaves the server.
WORKER_VISIBLE_SETTINGS = ("profile", "human_threshold")


def visible_settings(settings: dict[str, Any]) -> dict[str, Any]:
    return {name: settings[name] for name in WORKER_VISIBLE_SETTINGS if name in settings}


def job_from_claimed(claimed: Claimed) -> Job:
    return Job(claimed.task.id, claimed.task.method, claimed.task.params, claimed.images, claimed.lease,
               visible_settings(claimed.account_settings))


class LocalSource:
    def __init__(self, dispatcher: Dispatcher, pools: Sequence[str], lease_s: float) -> None:
        self.dispatcher = dispatcher
        self.pools = list(pools)
        self.lease_s = lease_s

    async def claim(self, methods: Sequence[str], wait: float) -> Job | None:
        claimed = await self.dispatcher.claim(self.pools, list(methods), wait, self.lease_s)
        return job_from_claimed(claimed) if claimed else None

    async def heartbeat(self, job: Job) -> bool:
        return await self.dispatcher.heartbeat(job.id, job.lease, self.lease_s) is not None

    async def answer(self, job: Job, answer: Answer, confidence: float | None) -> bool:
        return await self.dispatcher.answer(job.id, job.lease, BY_NAME[job.method].answer, answer, confidence)

    async def fail(self, job: Job, error: str | None, to_human: bool = False, final: bool = False,
                   ) -> bool:
        return await self.dispatcher.fail(job.id, job.lease, error, to_human, final)

    async def close(self) -> None:
        return None


class WorkerApiError(Exception):
    pass


class RemoteSource:
    """The worker API (docs/worker-api.md) over HTTP."""

    def __init__(self, server: str, token: str, lease_s: float = 30.0, verify: bool | str = True) -> None:
        self.http = httpx.AsyncClient(base_url=wire.base_url(server) + "/worker/v1", verify=verify,
                                      headers={"Authorization": f"Bearer {token}"},
                                      timeout=httpx.Timeout(10.0, read=60.0))
        self.lease_s = lease_s

    async def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any] | None:
        response = await self.http.post(path, json=body)
        if response.status_code == 409:
            return None
        if response.status_code != 200:
            raise WorkerApiError(f"{path}: HTTP {response.status_code}: {response.text[:200]}")
        data: dict[str, Any] = response.json()
        return data

    async def claim(self, methods: Sequence[str], wait: float) -> Job | None:
        data = await self._post("/claim", {"methods": list(methods), "wait": wait, "lease_seconds": self.lease_s})
        task = (data or {}).get("task")
        if not task:
            return None
        images = {name: base64.b64decode(value) for name, value in task["images"].items()}
        return Job(int(task["id"]), task["method"], task["params"], images, task["lease"],
                   task.get("account_settings", {}))

    async def heartbeat(self, job: Job) -> bool:
        return await self._post(f"/tasks/{job.id}/heartbeat",
                                {"lease": job.lease, "lease_seconds": self.lease_s}) is not None

    async def answer(self, job: Job, answer: Answer, confidence: float | None) -> bool:
        fields = {name: list(value) if isinstance(value, tuple) else value
                  for name, value in asdict(answer).items() if value is not None}
        return await self._post(f"/tasks/{job.id}/answer",
                                {"lease": job.lease, "answer": fields, "confidence": confidence}) is not None

    async def fail(self, job: Job, error: str | None, to_human: bool = False, final: bool = False,
                   ) -> bool:
        body = {"lease": job.lease, "error": error, "to_human": to_human, "final": final}
        return await self._post(f"/tasks/{job.id}/fail", body) is not None

    async def close(self) -> None:
        await self.http.aclose()
