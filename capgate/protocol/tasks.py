"""The JSON task API (2captcha's API v2: ``createTask``, ``getTaskResult``, ``getBalance``,
``reportCorrect``, ``reportIncorrect``): its spellings, shared by the server and the client.

The task types and their fields are the registry's (``Method.task_types``, ``Method.task_fields``);
this module turns a task object into the in.php parameters of its row and back, an answer into the
``solution`` object of its kind and back, and a protocol code into the API's ``errorId`` / ``errorCode``.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from capgate.protocol import answers, wire
from capgate.protocol.answers import Answer, AnswerKind
from capgate.protocol.codes import CODES, NOT_READY, OK_REPORT_RECORDED, Family
from capgate.protocol.methods import BY_TASK_TYPE, METHODS, Method, canonical_params, resolve

PATHS = ("/createTask", "/getTaskResult", "/getBalance", "/reportCorrect", "/reportIncorrect")
PROXYLESS = "Proxyless"

# The API's own codes: errorId and errorCode as 2captcha documents them.
TASK_ABSENT = "ERROR_TASK_ABSENT"
TASK_NOT_SUPPORTED = "ERROR_TASK_NOT_SUPPORTED"
BAD_PARAMETERS = "ERROR_BAD_PARAMETERS"
ERROR_IDS: dict[str, int] = {
    "ERROR_KEY_DOES_NOT_EXIST": 1, "ERROR_NO_SLOT_AVAILABLE": 2, "ERROR_ZERO_CAPTCHA_FILESIZE": 3,
    "ERROR_TOO_BIG_CAPTCHA_FILESIZE": 4, "ERROR_ZERO_BALANCE": 10, "ERROR_IP_NOT_ALLOWED": 11,
    "ERROR_CAPTCHA_UNSOLVABLE": 12, "ERROR_BAD_DUPLICATES": 13, "ERROR_NO_SUCH_METHOD": 14,
    "ERROR_IMAGE_TYPE_NOT_SUPPORTED": 15, "ERROR_NO_SUCH_CAPCHA_ID": 16, "ERROR_IP_BLOCKED": 21,
    TASK_ABSENT: 22, TASK_NOT_SUPPORTED: 23, "ERROR_RECAPTCHA_INVALID_SITEKEY": 31,
    BAD_PARAMETERS: 110, "ERROR_BAD_PROXY": 130,
}
# in.php / res.php codes the API spells otherwise.
RENAMED: dict[str, str] = {
    "ERROR_WRONG_USER_KEY": "ERROR_KEY_DOES_NOT_EXIST",
    "IP_BANNED": "ERROR_IP_BLOCKED",
    "ERROR_WRONG_CAPTCHA_ID": "ERROR_NO_SUCH_CAPCHA_ID",
    "ERROR_WRONG_ID_FORMAT": "ERROR_NO_SUCH_CAPCHA_ID",
    "ERROR_WRONG_GOOGLEKEY": "ERROR_RECAPTCHA_INVALID_SITEKEY",
    "ERROR_METHOD_NOT_SUPPORTED": "ERROR_NO_SUCH_METHOD",
}
# A capgate code the API has no number for keeps its name, numbered by what kind of failure it is.
_FAMILY_IDS = {Family.AUTH: 1, Family.FUNDS: 10, Family.CAPACITY: 2, Family.BAD_INPUT: 110,
               Family.UNSOLVABLE: 12, Family.REPORT: 16, Family.SERVER: 2, Family.PENDING: 0}
_API_MEANINGS = {
    TASK_ABSENT: "The task object is missing, or the body is not a JSON object.",
    TASK_NOT_SUPPORTED: "The task type is not one this service knows.",
    "ERROR_NO_SUCH_CAPCHA_ID": "The task id is unknown, belongs to another key, or has expired.",
}


def error(code: str) -> dict[str, Any]:
    """The error body for a protocol code: ``errorId`` (never 0), ``errorCode``, ``errorDescription``."""
    name = RENAMED.get(code, code)
    known = CODES.get(code) or CODES.get(name)
    number = ERROR_IDS.get(name) or (_FAMILY_IDS[known.family] if known else 0) or 1
    meaning = _API_MEANINGS.get(name) or (known.meaning if known else name)
    return {"errorId": number, "errorCode": name, "errorDescription": meaning}


def code_of(body: Mapping[str, Any]) -> str:
    """The protocol code an error body names (the client raises by it): the API's own spellings
    mapped back to capgate's where capgate has one."""
    name = str(body.get("errorCode") or "")
    back = {"ERROR_NO_SUCH_CAPCHA_ID": "ERROR_WRONG_CAPTCHA_ID", "ERROR_IP_BLOCKED": "IP_BANNED",
            "ERROR_RECAPTCHA_INVALID_SITEKEY": "ERROR_WRONG_GOOGLEKEY", TASK_NOT_SUPPORTED: "ERROR_BAD_PARAMETERS",
            TASK_ABSENT: "ERROR_BAD_PARAMETERS"}
    return back.get(name, name or "ERROR_BAD_PARAMETERS")


# --------------------------------------------------------------------------------- task -> parameters


class TaskRejected(ValueError):
    """A task object that names no row, or cannot be spelled as parameters: ``code`` says which."""

    def __init__(self, code: str, why: str) -> None:
        super().__init__(why)
        self.code = code


_NESTING = 3  # task fields are named at most this deep (initParameters.captcha_id); deeper is a value


def _flatten(task: Mapping[str, Any], prefix: str = "", depth: int = 0) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in task.items():
        if isinstance(value, dict) and depth < _NESTING:
            out.update(_flatten(value, f"{prefix}{name}.", depth + 1))
        else:
            out[f"{prefix}{name}"] = value
    return out


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, (int, str)):
        return str(value)
    return answers.dumps(value)  # a list (cookies as pairs, for one): passed on as its JSON text


def _proxy(fields: Mapping[str, Any]) -> dict[str, str]:
    address, port = _text(fields.get("proxyAddress")), _text(fields.get("proxyPort"))
    if not address:
        return {}
    login, password = _text(fields.get("proxyLogin")) or "", _text(fields.get("proxyPassword")) or ""
    credentials = f"{login}:{password}@" if login or password else ""
    return {"proxy": f"{credentials}{address}:{port}" if port else f"{credentials}{address}",
            "proxytype": (_text(fields.get("proxyType")) or "http").upper()}


def task_method(task: Any) -> Method:
    """The registry row a task object's ``type`` names."""
    if not isinstance(task, dict) or not task:
        raise TaskRejected(TASK_ABSENT, "no task object")
    kind = task.get("type")
    method = BY_TASK_TYPE.get(kind) if isinstance(kind, str) else None
    if method is None:
        raise TaskRejected(TASK_NOT_SUPPORTED, f"unknown task type {kind!r}")
    return method


def task_params(task: Any) -> dict[str, str]:
    """A ``createTask`` task object as the in.php parameters of its row (``method`` and the row's
    ``sets`` included): its fields renamed by the row's ``task_fields``, fields already spelled as
    the row's parameters kept, the proxy fields joined into ``proxy``/``proxytype``, anything else
    dropped. A type with a ``Proxyless`` sibling and no proxy lacks a required parameter."""
    method = task_method(task)
    fields = _flatten(task)
    known = {*method.required, *method.optional}
    params: dict[str, str] = {}
    for name, value in fields.items():
        target = method.task_fields.get(name) or (name if name in known else None)
        try:
            text = _text(value) if target is not None else None
        except (ValueError, RecursionError):  # a value nested too deep to write back as JSON
            raise TaskRejected(BAD_PARAMETERS, f"{name} cannot be read") from None
        if target is not None and text is not None:
            params[target] = text
    params.update(_proxy(fields))
    kind = task["type"]
    if not kind.endswith(PROXYLESS) and kind + PROXYLESS in method.task_types and "proxy" not in params:
        raise TaskRejected(BAD_PARAMETERS, f"{kind} needs proxyType, proxyAddress and proxyPort")
    return {**params, **method.sets, "method": method.wire[0]}


def task_object(method: Method, params: Mapping[str, str]) -> dict[str, Any]:
    """The other way (the client): a row's in.php parameters as a task object. ``proxy`` in
    ``login:password@host:port`` form picks the type without ``Proxyless``. A row without task types
    of its own is reached through another row's type whose fields select it (reCAPTCHA v3 Enterprise
    is ``RecaptchaV3TaskProxyless`` with ``isEnterprise``): the first whose task comes back to it."""
    if method.task_types:
        return _task_object(method, params)
    for other in METHODS:
        if other.task_types and set(other.wire) & set(method.wire):
            task = _task_object(other, {**params, "method": other.wire[0]})
            with contextlib.suppress(TaskRejected):
                if resolve(canonical_params(task_params(task))) is method:
                    return task
    raise TaskRejected(TASK_NOT_SUPPORTED, f"{method.name} has no JSON task type")


def _task_object(method: Method, params: Mapping[str, str]) -> dict[str, Any]:
    back = {param: name for name, param in method.task_fields.items()}
    task: dict[str, Any] = {}
    for param, value in params.items():
        if param in ("method", "proxy", "proxytype") or method.sets.get(param) == value:
            continue
        name = back.get(param, param)
        head, _, tail = name.partition(".")
        # The API's flags are booleans (isInvisible, isEnterprise): sent as such.
        typed: Any = value == "1" if name.startswith("is") and value in ("0", "1") else value
        if tail:
            task.setdefault(head, {})[tail] = typed
        else:
            task[name] = typed
    proxied = [kind for kind in method.task_types if not kind.endswith(PROXYLESS)]
    proxyless = [kind for kind in method.task_types if kind.endswith(PROXYLESS)]
    if params.get("proxy") and proxied:
        credentials, _, place = params["proxy"].rpartition("@")
        host, _, port = place.rpartition(":")
        login, _, password = credentials.partition(":")
        task.update({"proxyType": params.get("proxytype", "http").lower(), "proxyAddress": host or place,
                     "proxyPort": int(port) if port.isdigit() else port})
        if credentials:
            task.update({"proxyLogin": login, "proxyPassword": password})
        return {"type": proxied[0], **task}
    return {"type": (proxyless or proxied)[0], **task}


# ------------------------------------------------------------------------------------------ solutions


def solution(kind: AnswerKind, fields: Mapping[str, Any]) -> dict[str, Any]:
    """A solved task's ``solution`` object from its json=1 fields (``answers.encode_json``'s, as the
    store keeps them). Tokens carry both spellings clients read: ``gRecaptchaResponse`` and ``token``."""
    request = fields["request"]
    if kind is AnswerKind.TEXT:
        return {"text": request}
    if kind in (AnswerKind.TOKEN, AnswerKind.TOKEN_UA):
        token = fields.get("result", request)
        out = {"gRecaptchaResponse": token, "token": token}
        if fields.get("user_agent") is not None:
            out["userAgent"] = fields["user_agent"]
        return out
    if kind is AnswerKind.GEETEST:
        return dict(request)
    if kind is AnswerKind.CLEARANCE:
        return {"cf_clearance": request, "userAgent": fields.get("user_agent")}
    if kind is AnswerKind.CELLS:
        return {"click": json.loads(request) if isinstance(request, str) else request}
    if kind is AnswerKind.COORDINATES:  # API v2's CoordinatesTask: numbers, where in.php's json=1 has strings
        return {"coordinates": [{"x": int(point["x"]), "y": int(point["y"])} for point in request]}
    if kind is AnswerKind.ANGLE:  # RotateTask
        return {"rotate": int(request)}
    return dict(request)


def answer_of(kind: AnswerKind, found: Mapping[str, Any]) -> Answer:
    """The typed answer a ``solution`` object holds (the client); :class:`answers.AnswerFormatError`
    when it lacks what its kind needs."""
    if kind is AnswerKind.TEXT:
        return answers.decode_json(kind, {"request": found.get("text")})
    if kind in (AnswerKind.TOKEN, AnswerKind.TOKEN_UA):
        token = found.get("token", found.get("gRecaptchaResponse"))
        agent = found.get("userAgent")
        return answers.decode_json(kind, {"request": token, "result": token,
                                          **({"user_agent": agent} if agent is not None else {})})
    if kind is AnswerKind.CLEARANCE:
        return answers.decode_json(kind, {"request": found.get("cf_clearance"), "user_agent": found.get("userAgent")})
    if kind is AnswerKind.CELLS:
        return answers.decode_json(kind, {"request": found.get("click")})
    if kind is AnswerKind.COORDINATES:
        points = found.get("coordinates")
        if not isinstance(points, list) or not all(isinstance(p, dict) for p in points):
            raise answers.AnswerFormatError(f"coordinates: {points!r}")
        return answers.decode_json(kind, {"request": [{"x": str(p.get("x")), "y": str(p.get("y"))} for p in points]})
    if kind is AnswerKind.ANGLE:
        return answers.decode_json(kind, {"request": found.get("rotate")})
    return answers.decode_json(kind, {"request": dict(found)})


# ------------------------------------------------------------------------------------------ replies


def parse(raw: bytes | str) -> wire.Parsed:
    """Read any reply of the API as :func:`wire.parse` reads in.php / res.php: an error as its protocol
    code (:func:`code_of`), ``processing`` as not ready, a new task's id, a balance or a recorded report
    as the text ``OK|`` would carry, a ready task with its body (the ``solution`` is read by
    :func:`answer_of`, which needs the type's answer kind)."""
    text = raw.decode("utf-8", errors="replace") if isinstance(raw, bytes) else raw
    try:
        body = json.loads(text, parse_float=Decimal)
    except ValueError:
        return wire.Parsed(wire.Outcome.UNRECOGNISED, text, raw=text)
    if not isinstance(body, dict) or "errorId" not in body:
        return wire.Parsed(wire.Outcome.UNRECOGNISED, text, raw=text)
    if body["errorId"] not in (0, "0"):
        return wire.Parsed(wire.Outcome.ERROR, code_of(body), body, raw=text)
    status = body.get("status")
    if status == "processing":
        return wire.Parsed(wire.Outcome.NOT_READY, NOT_READY, body, raw=text)
    if "taskId" in body:
        return wire.Parsed(wire.Outcome.OK, str(body["taskId"]), body, raw=text)
    if "balance" in body:
        return wire.Parsed(wire.Outcome.OK, str(body["balance"]), body, raw=text)
    if status == "success":
        return wire.Parsed(wire.Outcome.OK, OK_REPORT_RECORDED, body, raw=text)
    if status == "ready" and isinstance(body.get("solution"), dict):
        return wire.Parsed(wire.Outcome.OK, "", body, raw=text)
    return wire.Parsed(wire.Outcome.UNRECOGNISED, text, body, raw=text)
