"""The JSON task API (2captcha's API v2) as plain ASGI, beside in.php and res.php: the same accounts,
tasks, workers, prices and ledger, through the same :class:`Service` operations. A task made by
``createTask`` is polled on res.php as well, and one made on in.php by ``getTaskResult``.

Every answer is HTTP 200 with a JSON body, ``errorId`` 0 or the error's number (``protocol.tasks``).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

from capgate.money import micros_to_usd
from capgate.protocol import answers, tasks
from capgate.protocol.codes import C
from capgate.protocol.methods import BY_NAME
from capgate.server.admission import Admission
from capgate.server.bodies import NO_ROOM, TOO_SLOW, BodyTimeout, NoRoom, receive_body, refuse, respond
from capgate.server.params import BodyTooLarge, ClientGone, RequestParams
from capgate.server.service import Service
from capgate.server.submit import Rejected
from capgate.store.models import TaskState

log = logging.getLogger("capgate.server")

Body = dict[str, Any]
Operation = Callable[[Service, str, Body], Awaitable[bytes]]


def _encode(body: Body) -> bytes:
    return answers.dumps(body).encode("utf-8")


def _error(code: str) -> bytes:
    return _encode(tasks.error(code))


def _key(body: Body) -> str:
    key = body.get("clientKey")
    return key if isinstance(key, str) else ""


def _task_id(body: Body) -> str:
    raw = body.get("taskId")
    if isinstance(raw, bool) or not isinstance(raw, (int, str)):
        return ""
    return str(raw)


async def _create(service: Service, ip: str, body: Body) -> bytes:
    key = _key(body)
    await service.authenticate(ip, key.strip(), time.time())  # the key is checked before the task
    try:
        params = tasks.task_params(body.get("task"))
    except tasks.TaskRejected as exc:
        return _error(exc.code)
    for name, target in (("callbackUrl", "pingback"), ("softId", "soft_id")):
        value = body.get(name)
        if isinstance(value, (str, int)) and not isinstance(value, bool):
            params[target] = str(value)
    task_id = await service.create(ip, RequestParams(values={**params, "key": key}))
    return _encode({"errorId": 0, "taskId": task_id})


async def _result(service: Service, ip: str, body: Body) -> bytes:
    state, found = await service.task_state(ip, _key(body), _task_id(body))
    if state is TaskState.PENDING:
        return _encode({"errorId": 0, "status": "processing"})
    if state is TaskState.EXPIRED or found is None:
        return _error(C.WRONG_CAPTCHA_ID)
    if state is TaskState.UNSOLVABLE:
        return _error(found.error or C.CAPTCHA_UNSOLVABLE)
    kind = BY_NAME[found.method].answer
    solution = tasks.solution(kind, json.loads(found.answer_json or "{}"))
    settled = found.settled_at if found.settled_at is not None else found.created_at
    return _encode({"errorId": 0, "status": "ready", "solution": solution, "cost": micros_to_usd(found.price),
                    "ip": ip, "createTime": int(found.created_at), "endTime": int(settled), "solveCount": 1})


async def _via_res(service: Service, ip: str, body: Body, action: str, with_id: bool = False) -> tuple[int, str]:
    """A res.php action for the same key (balance, reports): its status and request text, or
    :class:`Rejected` with its code."""
    values = {"key": _key(body), "action": action}
    if with_id:
        values["id"] = _task_id(body)
    reply = await service.result(ip, RequestParams(values=values))
    if reply.status != 1:
        raise Rejected(reply.plain)
    return reply.status, str(reply.fields.get("request", ""))


async def _balance(service: Service, ip: str, body: Body) -> bytes:
    _, balance = await _via_res(service, ip, body, "getbalance")
    # The balance is text to the last digit (no float touches money): written into the JSON as is.
    return b'{"errorId":0,"balance":' + balance.encode("ascii") + b"}"


async def _report(service: Service, ip: str, body: Body, action: str) -> bytes:
    try:
        await _via_res(service, ip, body, action, with_id=True)
    except Rejected as exc:
        # A report made twice stands as made the first time: clients of this API repeat a report until
        # its status is one they wait for (python-rucaptcha polls it as it polls a task).
        if exc.code != C.DUPLICATE_REPORT:
            raise
    return _encode({"errorId": 0, "status": "success"})


async def _report_good(service: Service, ip: str, body: Body) -> bytes:
    return await _report(service, ip, body, "reportgood")


async def _report_bad(service: Service, ip: str, body: Body) -> bytes:
    return await _report(service, ip, body, "reportbad")


OPERATIONS: dict[str, Operation] = {
    "/createTask": _create, "/getTaskResult": _result, "/getBalance": _balance,
    "/reportCorrect": _report_good, "/reportIncorrect": _report_bad,
}


def _parse(raw: bytes) -> Body | None:
    try:
        body = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):  # RecursionError: nested too deep
        return None
    return body if isinstance(body, dict) else None


def task_endpoints(service: Service, admission: Admission) -> dict[str, ASGIApp]:
    """The API's paths, each a plain ASGI endpoint (POST; a GET reads as an empty body). Bodies are
    received as in.php's are (:func:`capgate.server.bodies.receive_body`)."""
    limit = service.settings.body_limit
    timeout = service.settings.body_timeout

    def endpoint(path: str, operation: Operation) -> ASGIApp:
        async def serve(scope: Scope, receive: Receive, send: Send) -> None:
            client = scope.get("client")
            ip = client[0] if client else "unknown"
            try:
                raw = await receive_body(scope, receive, admission, ip, limit, timeout) \
                    if scope["method"] == "POST" else b""
                body = _parse(raw)
                if body is None:
                    content = _error(tasks.TASK_ABSENT if path == "/createTask" else C.BAD_PARAMETERS)
                else:
                    content = await operation(service, ip, body)
            except NoRoom:
                await refuse(send, 503, NO_ROOM)
                return
            except ClientGone:
                return
            except BodyTimeout:
                await refuse(send, 408, TOO_SLOW)
                return
            except BodyTooLarge:
                content = _error(C.TOO_BIG_CAPTCHA_FILESIZE)
            except Rejected as exc:
                content = _error(exc.code)
            except Exception:
                log.exception("unexpected error in %s", path)
                content = _error(C.SERVER_ERROR)
            await respond(send, 200, content, [(b"content-type", b"application/json")])

        return serve

    return {path: endpoint(path, operation) for path, operation in OPERATIONS.items()}
