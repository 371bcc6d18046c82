"""Bodies on the wire: building them (server) and reading them (client), in plain and json=1 mode.

Plain: ``OK|<payload>``, ``CAPCHA_NOT_READY`` or ``<CODE>``, no trailing newline.
json=1: ``{"status":1,"request":<payload>,...}`` or ``{"status":0,"request":"<CODE>"}``.
Every protocol answer, errors included, is HTTP 200 (2captcha-python treats any other status as a
network failure).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any
from urllib.parse import urlsplit

from capgate.protocol import answers
from capgate.protocol.answers import Answer, AnswerKind
from capgate.protocol.codes import CODES, NOT_READY, lookup

PLAIN_TYPE = "text/plain; charset=utf-8"
JSON_TYPE = "application/json"


@dataclass(frozen=True)
class Reply:
    """One protocol answer, renderable in either mode."""

    status: int
    plain: str
    fields: Mapping[str, Any] = field(default_factory=dict)  # json body besides "status"

    def render(self, json_mode: bool) -> tuple[bytes, str]:
        if json_mode:
            return answers.dumps({"status": self.status, **self.fields}).encode("utf-8"), JSON_TYPE
        return self.plain.encode("utf-8"), PLAIN_TYPE


def ok(payload: str, **extra: Any) -> Reply:
    """``OK|payload``; json ``request`` is the payload as text."""
    return Reply(1, f"OK|{payload}", {"request": payload, **extra})


def bare(payload: str, **extra: Any) -> Reply:
    """A success whose plain body has no ``OK|`` (getbalance, report answers, batch ``ids=``)."""
    return Reply(1, payload, {"request": payload, **extra})


def code(name: str) -> Reply:
    """An error or ``CAPCHA_NOT_READY``. Errors carry ``error_text`` in json mode, as 2captcha does."""
    if name == NOT_READY:
        return Reply(0, name, {"request": name})
    known = CODES.get(name)
    extra = {"error_text": known.meaning} if known else {}
    return Reply(0, name, {"request": name, **extra})


def solved(kind: AnswerKind, stored: str, price: str | None = None) -> Reply:
    """A solved task's reply from its answer as the store keeps it: the json=1 fields as JSON text
    (``answers.encode_json``). One parse and no typed answer in between: the fields are the json body,
    and the plain payload is read off them. With ``price`` (``get2``), plain is
    ``OK|<answer>|<price>`` and json adds ``"price"``."""
    fields: dict[str, Any] = json.loads(stored)
    payload = answers.plain_from_json(kind, fields)
    if price is None:
        return Reply(1, "OK|" + payload, fields)
    return Reply(1, f"OK|{payload}|{price}", {**fields, "price": price})


def batch(items: Sequence[str]) -> Reply:
    """``get`` with ``ids=``: each slot an answer payload, ``CAPCHA_NOT_READY`` or a code, in order."""
    return bare("|".join(items))


# ---------------------------------------------------------------------------------------- reading


def base_url(server: str) -> str:
    """The URL ``in.php`` and ``res.php`` (and capgate's worker API) hang off, from what a person typed.

    A URL without a scheme names a bare host: ``http://`` when that host is this machine (``localhost``,
    ``127.x.x.x``, ``::1``), where ``capgate serve`` speaks plain HTTP unless given a certificate;
    ``https://`` for any other host, as 2captcha-python assumes (``api.2captcha.com``)."""
    text = server.strip().rstrip("/")
    if not text:
        raise ValueError("no server URL")
    if "://" not in text:
        host = urlsplit("//" + text).hostname or ""
        local = host == "localhost" or host == "::1" or host.startswith("127.")
        text = ("http://" if local else "https://") + text
    if text.partition("://")[0].lower() not in ("http", "https"):
        raise ValueError(f"a server URL starts with http:// or https://, not {server!r}")
    return text


def tls_hint(url: str, reason: str) -> str:
    """A failed exchange's reason, with what to do when an ``https://`` URL met a plain-HTTP server
    (the TLS handshake then fails with an error such as ``WRONG_VERSION_NUMBER``)."""
    if url.lower().startswith("https://") and "[SSL" in reason and "CERTIFICATE" not in reason:
        return (f"{reason} (the server does not speak HTTPS there: capgate serve uses plain HTTP unless given "
                "--ssl-certfile; write the URL with http://)")
    return reason


class Outcome(Enum):
    OK = "ok"
    NOT_READY = "not_ready"
    ERROR = "error"
    UNRECOGNISED = "unrecognised"  # e.g. an HTML 502 page: wait and retry (docs' generic rule)


@dataclass(frozen=True)
class Parsed:
    """A body read without knowing the answer's type yet."""

    outcome: Outcome
    text: str  # plain payload after "OK|", or the code, or the raw body
    body: Mapping[str, Any] | None = None  # the json object, when the body was json
    raw: str = ""

    def answer(self, kind: AnswerKind) -> Answer:
        if self.body is not None:
            return answers.decode_json(kind, self.body)
        return answers.decode_plain(kind, self.text)


def parse(raw: bytes | str) -> Parsed:
    """Read any in.php/res.php body, plain or json. Bodies that are neither (an HTML error page,
    an empty body) are ``UNRECOGNISED``, never an exception. A json request for a plain body is
    tolerated both ways: CaptchaAI sends ``ERROR_UPLOAD`` as plain text even with json=1."""
    text = raw.decode("utf-8", errors="replace") if isinstance(raw, bytes) else raw
    stripped = text.strip()
    if stripped.startswith("{"):
        try:
            body = json.loads(stripped)
        except json.JSONDecodeError:
            return Parsed(Outcome.UNRECOGNISED, text, raw=text)
        if isinstance(body, dict):
            return _parse_json(body, text)
        return Parsed(Outcome.UNRECOGNISED, text, raw=text)
    if stripped.startswith("OK|"):
        # The payload is everything after the first "OK|", untouched: an answer may end in spaces
        # (phrase=1 OCR) and clients such as 2captcha-python slice ``body[3:]`` without stripping.
        return Parsed(Outcome.OK, text.lstrip()[3:], raw=text)
    if stripped in (NOT_READY, "CAPTCHA_NOT_READY"):
        return Parsed(Outcome.NOT_READY, NOT_READY, raw=text)
    if lookup(stripped) is not None or (stripped.startswith("ERROR_") and stripped.isupper()):
        return Parsed(Outcome.ERROR, stripped, raw=text)
    return Parsed(Outcome.UNRECOGNISED, text, raw=text)


def _parse_json(body: dict[str, Any], text: str) -> Parsed:
    status = body.get("status")
    request = body.get("request")
    try:
        status_value = int(status) if status is not None else None
    except (TypeError, ValueError):
        status_value = None
    if status_value == 1:
        payload = request if isinstance(request, str) else answers.dumps(request)
        return Parsed(Outcome.OK, payload, body, raw=text)
    if status_value == 0 and isinstance(request, str):
        if request in (NOT_READY, "CAPTCHA_NOT_READY"):
            return Parsed(Outcome.NOT_READY, NOT_READY, body, raw=text)
        return Parsed(Outcome.ERROR, request, body, raw=text)
    return Parsed(Outcome.UNRECOGNISED, text, body, raw=text)


def split_batch(payload: str, count: int) -> list[str] | None:
    """Slots of a batch answer, or ``None`` when an answer held a ``|`` and the count is off
    (the caller then asks for those tasks one by one)."""
    items = payload.split("|")
    return items if len(items) == count else None
