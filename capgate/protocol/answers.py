"""The answer of a solved task, and its two spellings on the wire.

Plain mode sends ``OK|<payload>``; json mode sends ``{"status":1,"request":..., ...extras}``.
``encode_*`` and ``decode_*`` are inverses (property-tested), with two documented limits of the plain
format itself: plain reCAPTCHA Enterprise / CaptchaFox carry no user agent, and a GeeTest or
Cloudflare value that contains the literal next marker (``,validate:``, ``,seccode:``,
``;user_agent=``) cannot be told apart. json mode has neither limit.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any


class AnswerKind(Enum):
    TEXT = "text"  # OCR text
    TOKEN = "token"  # reCAPTCHA, Turnstile, hCaptcha, Friendly Captcha
    TOKEN_UA = "token_ua"  # token plus the user agent it is bound to (Enterprise, CaptchaFox)
    GEETEST = "geetest"  # challenge, validate, seccode
    CLEARANCE = "clearance"  # Cloudflare cf_clearance cookie plus user agent
    CELLS = "cells"  # grid / BLS: 1-based cell numbers
    OBJECT = "object"  # a flat JSON object (Lemin, GeeTest v4)
    COORDINATES = "coordinates"  # points clicked on an image (2captcha's coordinatescaptcha)
    ANGLE = "angle"  # degrees to turn an image by (2captcha's rotatecaptcha)


class AnswerFormatError(ValueError):
    """A payload does not have the shape its answer kind demands."""


@dataclass(frozen=True)
class TextAnswer:
    text: str


@dataclass(frozen=True)
class TokenAnswer:
    token: str
    user_agent: str | None = None


@dataclass(frozen=True)
class GeeTestAnswer:
    challenge: str
    validate: str
    seccode: str


@dataclass(frozen=True)
class ClearanceAnswer:
    cf_clearance: str
    user_agent: str


@dataclass(frozen=True)
class CellsAnswer:
    cells: tuple[int, ...]


@dataclass(frozen=True)
class ObjectAnswer:
    fields: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class CoordinatesAnswer:
    points: tuple[tuple[int, int], ...]  # (x, y) in the image's pixels, from its top left corner


@dataclass(frozen=True)
class AngleAnswer:
    angle: int


Answer = (TextAnswer | TokenAnswer | GeeTestAnswer | ClearanceAnswer | CellsAnswer | ObjectAnswer
          | CoordinatesAnswer | AngleAnswer)

_GEETEST_KEYS = ("challenge", "validate", "seccode")
_UA_MARKER = ";user_agent="
_CF_PREFIX = "cf_clearance="
_COORDINATES_PREFIX = "coordinates:"
_POINT = re.compile(r"x=(?P<x>-?[0-9]{1,9}),y=(?P<y>-?[0-9]{1,9})")


def dumps(value: Any) -> str:
    """Compact JSON, UTF-8 kept as is: the byte shape every client of the protocol expects."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


# ---------------------------------------------------------------------------------------------- encode


def encode_plain(answer: Answer) -> str:
    """The payload after ``OK|``."""
    if isinstance(answer, TextAnswer):
        return answer.text
    if isinstance(answer, TokenAnswer):
        return answer.token
    if isinstance(answer, GeeTestAnswer):
        return f"challenge:{answer.challenge},validate:{answer.validate},seccode:{answer.seccode}"
    if isinstance(answer, ClearanceAnswer):
        return f"{_CF_PREFIX}{answer.cf_clearance}{_UA_MARKER}{answer.user_agent}"
    if isinstance(answer, CellsAnswer):
        return dumps(list(answer.cells))
    if isinstance(answer, CoordinatesAnswer):
        return _COORDINATES_PREFIX + ";".join(f"x={x},y={y}" for x, y in answer.points)
    if isinstance(answer, AngleAnswer):
        return str(answer.angle)
    return dumps(answer.fields)


def encode_json(answer: Answer, kind: AnswerKind | None = None) -> dict[str, Any]:
    """Fields of the json=1 body besides ``status``. The SDK reads ``result`` for Enterprise and
    Cloudflare and ``user_agent`` beside it, so both spellings are sent."""
    if isinstance(answer, TextAnswer):
        return {"request": answer.text}
    if isinstance(answer, TokenAnswer):
        if answer.user_agent is None and kind is not AnswerKind.TOKEN_UA:
            return {"request": answer.token}
        fields: dict[str, Any] = {"request": answer.token, "result": answer.token}
        if answer.user_agent is not None:
            fields["user_agent"] = answer.user_agent
        return fields
    if isinstance(answer, GeeTestAnswer):
        return {"request": {key: getattr(answer, key) for key in _GEETEST_KEYS}}
    if isinstance(answer, ClearanceAnswer):
        return {"request": answer.cf_clearance, "result": answer.cf_clearance,
                "user_agent": answer.user_agent}
    if isinstance(answer, CellsAnswer):
        return {"request": dumps(list(answer.cells))}
    if isinstance(answer, CoordinatesAnswer):
        # 2captcha's json=1 spelling: the numbers as strings.
        return {"request": [{"x": str(x), "y": str(y)} for x, y in answer.points]}
    if isinstance(answer, AngleAnswer):
        return {"request": str(answer.angle)}
    return {"request": dict(answer.fields)}


def plain_from_json(kind: AnswerKind, fields: Mapping[str, Any]) -> str:
    """The payload after ``OK|`` read off an answer's json=1 fields (``encode_json``'s, as the store
    keeps them): what ``encode_plain`` gives for the answer they encode, without building it."""
    request = fields["request"]
    if kind is AnswerKind.GEETEST:
        return f"challenge:{request['challenge']},validate:{request['validate']},seccode:{request['seccode']}"
    if kind is AnswerKind.CLEARANCE:
        return f"{_CF_PREFIX}{request}{_UA_MARKER}{fields['user_agent']}"
    if kind is AnswerKind.OBJECT:
        return dumps(request)
    if kind is AnswerKind.COORDINATES:
        return _COORDINATES_PREFIX + ";".join(f"x={point['x']},y={point['y']}" for point in request)
    return str(request)  # text, a token, or cells (already their compact JSON list)


# ---------------------------------------------------------------------------------------------- decode


def decode_plain(kind: AnswerKind, payload: str) -> Answer:
    """Read the payload after ``OK|`` (the caller splits on the first ``|`` only)."""
    if kind is AnswerKind.TEXT:
        return TextAnswer(payload)
    if kind in (AnswerKind.TOKEN, AnswerKind.TOKEN_UA):
        return TokenAnswer(payload)
    if kind is AnswerKind.GEETEST:
        return _geetest_from_plain(payload)
    if kind is AnswerKind.CLEARANCE:
        return _clearance_from_plain(payload)
    if kind is AnswerKind.CELLS:
        return CellsAnswer(_cells(_json_or_raise(payload)))
    if kind is AnswerKind.COORDINATES:
        return _coordinates_from_plain(payload)
    if kind is AnswerKind.ANGLE:
        return AngleAnswer(_whole_number(payload))
    return ObjectAnswer(_object(_json_or_raise(payload)))


def decode_json(kind: AnswerKind, body: Mapping[str, Any]) -> Answer:
    """Read a ``status: 1`` json body. Tolerates what real services send: task ids or answers as
    numbers, structured answers as objects or as JSON-encoded strings, 2captcha's key spellings."""
    request = body.get("request")
    if kind is AnswerKind.TEXT:
        return TextAnswer(_text(request))
    if kind in (AnswerKind.TOKEN, AnswerKind.TOKEN_UA):
        token = body.get("result", request) if kind is AnswerKind.TOKEN_UA else request
        agent = body.get("user_agent", body.get("useragent"))
        return TokenAnswer(_text(token), None if agent is None else _text(agent))
    if kind is AnswerKind.GEETEST:
        if isinstance(request, str) and not request.lstrip().startswith("{"):
            return _geetest_from_plain(request)
        fields = _object(_json_or_raise(request) if isinstance(request, str) else request)
        try:
            values = [fields.get(key, fields.get(f"geetest_{key}")) for key in _GEETEST_KEYS]
            return GeeTestAnswer(*(_text(value) for value in values))
        except AnswerFormatError:
            raise AnswerFormatError(f"GeeTest answer lacks a field: {fields!r}") from None
    if kind is AnswerKind.CLEARANCE:
        value = body.get("result", request)
        agent = body.get("user_agent", body.get("useragent", body.get("userAgent")))
        # Only a body without a user agent field can be a plain answer wrapped in json; with one, the
        # value is the cookie itself, whatever it looks like.
        if agent is None and isinstance(value, str) and value.startswith(_CF_PREFIX) and _UA_MARKER in value:
            return _clearance_from_plain(value)
        return ClearanceAnswer(_text(value), _text(agent))
    if kind is AnswerKind.ANGLE:
        return AngleAnswer(_whole_number(request))
    if kind is AnswerKind.COORDINATES and isinstance(request, str) and request.startswith(_COORDINATES_PREFIX):
        return _coordinates_from_plain(request)
    parsed = _json_or_raise(request) if isinstance(request, str) else request
    if kind is AnswerKind.COORDINATES:
        return CoordinatesAnswer(_points(parsed))
    if kind is AnswerKind.CELLS:
        return CellsAnswer(_cells(parsed))
    return ObjectAnswer(_object(parsed))


def _text(value: Any) -> str:
    if isinstance(value, bool) or value is None or isinstance(value, (dict, list)):
        raise AnswerFormatError(f"expected text, got {value!r}")
    return str(value)


def _json_or_raise(payload: Any) -> Any:
    if not isinstance(payload, str):
        return payload
    try:
        return json.loads(payload)
    except json.JSONDecodeError as exc:
        raise AnswerFormatError(f"not JSON: {payload[:80]!r}") from exc


def _cells(value: Any) -> tuple[int, ...]:
    if not isinstance(value, list) or not all(type(x) is int for x in value):
        raise AnswerFormatError(f"expected a list of cell numbers, got {value!r}")
    return tuple(value)


def _whole_number(value: Any) -> int:
    """An integer, or its decimal spelling as 2captcha sends it (``"40"``)."""
    if type(value) is int:
        return value
    if isinstance(value, str) and re.fullmatch(r"-?[0-9]{1,9}", value.strip()):
        return int(value)
    raise AnswerFormatError(f"expected a whole number, got {value!r}")


def _points(value: Any) -> tuple[tuple[int, int], ...]:
    """``[{"x": "39", "y": "59"}, ...]`` (2captcha's json=1 form; numbers as numbers pass too)."""
    if not isinstance(value, list) or not all(isinstance(p, dict) and set(p) >= {"x", "y"} for p in value):
        raise AnswerFormatError(f"expected a list of {{x, y}} points, got {value!r}")
    return tuple((_whole_number(p["x"]), _whole_number(p["y"])) for p in value)


def _coordinates_from_plain(payload: str) -> CoordinatesAnswer:
    # "coordinates:x=39,y=59;x=252,y=72": the only shape 2captcha sends in plain mode.
    if not payload.startswith(_COORDINATES_PREFIX):
        raise AnswerFormatError(f"not a coordinates answer: {payload[:80]!r}")
    rest = payload[len(_COORDINATES_PREFIX):]
    points = []
    for piece in rest.split(";") if rest else []:
        match = _POINT.fullmatch(piece.strip())
        if match is None:
            raise AnswerFormatError(f"not a coordinates answer: {payload[:80]!r}")
        points.append((int(match["x"]), int(match["y"])))
    return CoordinatesAnswer(tuple(points))


def _object(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise AnswerFormatError(f"expected a JSON object, got {value!r}")
    return value


def _geetest_from_plain(payload: str) -> GeeTestAnswer:
    # Split by the field markers rather than on every "," and ":" (the source document's own parser
    # does that, and breaks on real seccodes such as "...|jordan").
    if not payload.startswith("challenge:"):
        raise AnswerFormatError(f"not a GeeTest answer: {payload[:80]!r}")
    rest = payload[len("challenge:"):]
    challenge, sep1, rest = rest.partition(",validate:")
    validate, sep2, seccode = rest.rpartition(",seccode:")
    if not sep1 or not sep2:
        raise AnswerFormatError(f"not a GeeTest answer: {payload[:80]!r}")
    return GeeTestAnswer(challenge, validate, seccode)


def _clearance_from_plain(payload: str) -> ClearanceAnswer:
    # User agents contain ";", cookie values never do: split at the first marker only.
    cookie, sep, agent = payload.partition(_UA_MARKER)
    if not sep or not cookie.startswith(_CF_PREFIX):
        raise AnswerFormatError(f"not a Cloudflare clearance answer: {payload[:80]!r}")
    return ClearanceAnswer(cookie[len(_CF_PREFIX):], agent)
