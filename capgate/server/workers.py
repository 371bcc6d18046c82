"""The worker API: JSON over HTTP for any solver, program or person (docs/worker-api.md).

Unlike in.php/res.php this is capgate's own API, so it uses HTTP statuses: 401 for a bad token,
400 for a malformed request, 403 for a task the token may not touch (another token holds its lease,
or its method is not one the token serves), 409 when the lease is no longer the caller's, 422 when a
person's text answer breaks its task's own hints (the lease stays theirs).

The token is read from the store on every call, never cached: a token disabled or deleted by
``capgate workers`` (in any process) is refused from its next call.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive

from capgate.keys import TOKEN_PREFIX, hash_secret
from capgate.protocol.answers import TextAnswer
from capgate.protocol.methods import BY_NAME
from capgate.server.params import BodyTooLarge, ClientGone, read_request_body
from capgate.store.models import Pool, Task, WorkerToken
from capgate.workers.dispatch import AnswerRejected, Claimed, Dispatcher, answer_from_fields
from capgate.workers.source import visible_settings
from capgate.workers.textcheck import answer_problem

PREFIX = "/worker/v1"
BODY_LIMIT = 2 * 1024 * 1024


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def task_json(claimed: Claimed) -> dict[str, Any]:
    task = claimed.task
    return {
        "id": str(task.id), "method": task.method, "answer_kind": claimed.answer_kind.value,
        "params": task.params, "lease": claimed.lease, "lease_until": claimed.lease_until,
        "deadline_at": task.deadline_at, "attempt": task.attempts,
        "images": {name: base64.b64encode(data).decode("ascii") for name, data in claimed.images.items()},
        "account_settings": visible_settings(claimed.account_settings),
    }


def pools_for(worker: WorkerToken) -> list[str]:
    return [Pool.HUMAN.value, Pool.MAIN.value] if worker.human else [Pool.MAIN.value]


class WorkerApi:
    def __init__(self, dispatcher: Dispatcher) -> None:
        self.dispatcher = dispatcher

    async def _worker(self, request: Request) -> WorkerToken:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.startswith(TOKEN_PREFIX):
            raise ApiError(401, "send 'Authorization: Bearer cgw_...' (capgate workers create)")
        worker = await self.dispatcher.store.worker_by_token_hash(hash_secret(token.strip()))
        if worker is None or worker.disabled:
            raise ApiError(401, "unknown or disabled worker token")
        return worker

    async def _body(self, request: Request) -> dict[str, Any]:
        try:
            data = json.loads(await read_request_body(request, BODY_LIMIT) or b"{}")
        except BodyTooLarge:
            raise ApiError(413, "body too large") from None
        except ClientGone:
            # Gone before its body ended: nothing was done, and the answer reaches no one.
            raise ApiError(400, "the body did not arrive whole") from None
        except (ValueError, UnicodeDecodeError):
            raise ApiError(400, "body must be a JSON object") from None
        if not isinstance(data, dict):
            raise ApiError(400, "body must be a JSON object")
        return data

    def _methods(self, worker: WorkerToken, asked: Any) -> list[str] | None:
        allowed = list(worker.methods) or None
        if asked is None:
            return allowed
        if not isinstance(asked, list) or not all(isinstance(m, str) and m in BY_NAME for m in asked):
            raise ApiError(400, f"methods must be a list of: {', '.join(sorted(BY_NAME))}")
        if allowed is not None and not set(asked) <= set(allowed):
            raise ApiError(403, f"this token serves only: {', '.join(allowed)}")
        return list(asked)

    async def _held(self, worker: WorkerToken, task_id: int, lease: str) -> Task:
        """The task leased by ``lease``, if ``worker`` may act on it: 409 when the lease is gone,
        403 when another token holds it or the token may not serve the task's method."""
        task = await self.dispatcher.store.leased_task(task_id, lease)
        if task is None:
            raise ApiError(409, "the lease is no longer yours (expired, answered, or past the deadline)")
        if task.lease_worker is not None and task.lease_worker != worker.id:
            raise ApiError(403, "another worker token holds this task's lease")
        if worker.methods and task.method not in worker.methods:
            raise ApiError(403, f"this token serves only: {', '.join(worker.methods)}")
        return task

    async def claim(self, request: Request) -> Response:
        worker = await self._worker(request)
        body = await self._body(request)
        methods = self._methods(worker, body.get("methods"))
        wait = _number(body, "wait", 0.0)
        lease_s = _number(body, "lease_seconds", self.dispatcher.settings.lease)
        now = time.time()
        await self.dispatcher.presence.seen(worker.id, methods, now)
        # A worker that hung up while it waited (stopped, crashed) must not be leased a task that
        # no one would then work on until the lease ran out.
        hangup = Hangup(request.receive)
        try:
            claimed = await self.dispatcher.claim(pools_for(worker), methods, wait, lease_s,
                                                  gone=hangup.seen, worker_id=worker.id)
        finally:
            hangup.close()
        return JSONResponse({"task": task_json(claimed) if claimed else None})

    async def heartbeat(self, request: Request) -> Response:
        worker = await self._worker(request)
        task_id, body = _task_id(request), await self._body(request)
        lease = _lease(body)
        lease_s = _number(body, "lease_seconds", self.dispatcher.settings.lease)
        await self._held(worker, task_id, lease)
        until = await self.dispatcher.heartbeat(task_id, lease, lease_s, worker_id=worker.id)
        if until is None:
            raise ApiError(409, "the lease is no longer yours (expired, answered, or past the deadline)")
        return JSONResponse({"lease_until": until})

    async def answer(self, request: Request) -> Response:
        worker = await self._worker(request)
        task_id, body = _task_id(request), await self._body(request)
        lease = _lease(body)
        raw_answer = body.get("answer")
        if not isinstance(raw_answer, dict):
            raise ApiError(400, "answer must be an object, e.g. {\"text\": \"abc12\"}")
        confidence = body.get("confidence")
        if confidence is not None and (isinstance(confidence, bool) or not isinstance(confidence, (int, float))
                                       or not 0 <= confidence <= 1):
            raise ApiError(400, "confidence must be a number from 0 to 1")
        task = await self._held(worker, task_id, lease)
        kind = BY_NAME[task.method].answer
        try:
            answer = answer_from_fields(kind, raw_answer)
        except AnswerRejected as exc:
            raise ApiError(400, str(exc)) from None
        if worker.human and isinstance(answer, TextAnswer):
            # A person's typo that breaks the task's own hints (length, digits only...) is refused, and
            # the lease stays theirs to correct it: the customer would get a wrong answer, charged.
            problem = answer_problem(task.params, answer.text)
            if problem is not None:
                raise ApiError(422, f"not accepted: {problem}")
        if not await self.dispatcher.answer(task_id, lease, kind, answer,
                                            float(confidence) if confidence is not None else None,
                                            by_person=task if worker.human else None, worker_id=worker.id):
            raise ApiError(409, "not accepted: the lease is no longer yours or the task is settled")
        return JSONResponse({"ok": True})

    async def fail(self, request: Request) -> Response:
        worker = await self._worker(request)
        task_id, body = _task_id(request), await self._body(request)
        error = body.get("error")
        if error is not None and not isinstance(error, str):
            raise ApiError(400, "error must be a protocol code or null")
        to_human, final = body.get("to_human", False), body.get("final", False)
        if not isinstance(to_human, bool) or not isinstance(final, bool):
            raise ApiError(400, "to_human and final must be true or false")
        lease = _lease(body)
        await self._held(worker, task_id, lease)
        if not await self.dispatcher.fail(task_id, lease, error, to_human, final, worker_id=worker.id):
            raise ApiError(409, "the lease is no longer yours")
        return JSONResponse({"ok": True})

    def routes(self) -> list[Route]:
        def wrap(fn: Callable[[Request], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
            async def endpoint(request: Request) -> Response:
                try:
                    return await fn(request)
                except ApiError as exc:
                    return JSONResponse({"error": exc.message}, status_code=exc.status)
            return endpoint

        return [
            Route(f"{PREFIX}/claim", wrap(self.claim), methods=["POST"]),
            Route(f"{PREFIX}/tasks/{{task_id}}/heartbeat", wrap(self.heartbeat), methods=["POST"]),
            Route(f"{PREFIX}/tasks/{{task_id}}/answer", wrap(self.answer), methods=["POST"]),
            Route(f"{PREFIX}/tasks/{{task_id}}/fail", wrap(self.fail), methods=["POST"]),
        ]


def _number(body: dict[str, Any], name: str, default: float) -> float:
    value = body.get(name, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise ApiError(400, f"{name} must be a non-negative number")
    return float(value)


def _lease(body: dict[str, Any]) -> str:
    lease = body.get("lease")
    if not isinstance(lease, str) or not lease:
        raise ApiError(400, "send the lease you got with the task")
    return lease


class Hangup:
    """Whether the client has hung up, once its body is read. Watched by a task that waits on the
    ASGI ``receive`` for ``http.disconnect``: Starlette's ``is_disconnected`` asks with a zero timeout,
    which Granian's ``receive`` (a future that always suspends) can never answer in."""

    def __init__(self, receive: Receive) -> None:
        self._receive = receive
        self.gone = False
        self._watch = asyncio.create_task(self._wait())

    async def seen(self) -> bool:
        await asyncio.sleep(0)  # a hang-up already known is seen now
        return self.gone

    async def _wait(self) -> None:
        while (await self._receive())["type"] != "http.disconnect":
            pass
        self.gone = True

    def close(self) -> None:
        self._watch.cancel()


def _task_id(request: Request) -> int:
    raw = str(request.path_params.get("task_id", ""))
    if not raw.isascii() or not raw.isdigit() or len(raw) > 18:  # ids fit a signed 64-bit integer
        raise ApiError(400, "task id must be a number")
    return int(raw)
