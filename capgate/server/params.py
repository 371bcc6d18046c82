"""Reading a request's parameters: query string, urlencoded, multipart or JSON body, merged (body wins).

Bodies are read against a size limit and refused, without being read whole, once they pass it.
Text must be UTF-8: anything else is refused rather than guessed (a latin-1 fallback would store a
different answer than the one sent).
"""

from __future__ import annotations

import codecs
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote_to_bytes

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect, Request

# python-multipart logs a warning for each malformed body it meets: a client could flood the log. The
# endpoint logs one debug line per refused upload instead.
logging.getLogger("python_multipart.multipart").setLevel(logging.CRITICAL)

MAX_FIELDS = 256
MAX_FILES = 16
MAX_BOUNDARY = 200  # RFC 2046 allows 70 characters; python-multipart refuses more than 256 with a ValueError


class BodyTooLarge(Exception):
    """A body over the limit. ``head`` is what had been read of it when that was known: enough, most of
    the time, to see the ``json=1`` its refusal must be answered in (:func:`params_in_head`)."""

    def __init__(self, head: bytes = b"") -> None:
        super().__init__("request body too large")
        self.head = head


class BadParameters(Exception):
    """Text that is not UTF-8, or a query string that cannot be read."""


class BadUpload(Exception):
    """A multipart body that cannot be parsed."""


class ClientGone(Exception):
    """The client went away before sending the whole body it declared: an aborted request, of which
    nothing is processed."""


@dataclass(frozen=True)
class Upload:
    filename: str
    data: bytes


@dataclass
class RequestParams:
    values: dict[str, str] = field(default_factory=dict)
    files: dict[str, Upload] = field(default_factory=dict)

    def get(self, name: str, default: str = "") -> str:
        return self.values.get(name, default)

    def flag(self, name: str) -> bool:
        return self.values.get(name, "0").strip().lower() in ("1", "true")


def parse_query(raw: bytes) -> dict[str, str]:
    """A query string or urlencoded body. Percent-escapes and raw bytes alike must be UTF-8 (``curl -d``
    sends ``é`` as raw UTF-8 bytes, browsers and the official clients percent-encode it)."""
    # Worked on bytes, piece by piece: this is on the path of every request, and a submit's body
    # is kilobytes of percent-encoded base64. The last of repeated names wins.
    values: dict[str, str] = {}
    if raw.count(b"&") >= MAX_FIELDS:  # counted in C: a body of a million empty fields costs nothing
        raise BadParameters(f"more than {MAX_FIELDS} fields")
    try:
        for piece in raw.split(b"&"):
            if piece:
                name, _, value = piece.partition(b"=")
                values[_unquote(name).decode("utf-8")] = _unquote(value).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadParameters("parameter is not UTF-8") from exc
    return values


def _unquote(raw: bytes) -> bytes:
    if b"+" in raw:
        raw = raw.replace(b"+", b" ")
    if b"%" not in raw:
        return raw
    if b"\\" not in raw:
        # A submit's body is kilobytes of percent-encoded base64, too slow to decode escape by
        # escape in Python. Rewritten as "\xHH" escapes, the whole piece decodes in one C pass;
        # with no backslash of its own in the piece, that decoding is exactly percent-decoding.
        # A '%' not followed by two hex digits makes it fail: the general decoder keeps those.
        with contextlib.suppress(ValueError):
            decoded: bytes = codecs.escape_decode(raw.replace(b"%", b"\\x"))[0]
            return decoded
    return unquote_to_bytes(raw)


async def read_body(stream: AsyncIterator[bytes], declared: int | None, limit: int) -> bytes:
    if declared is not None and declared > limit:
        raise BodyTooLarge
    chunks: list[bytes] = []
    size = 0
    async for chunk in stream:
        size += len(chunk)
        chunks.append(chunk)
        if size > limit:
            raise BodyTooLarge(b"".join(chunks))
    return b"".join(chunks)


async def read_request_body(request: Request, limit: int) -> bytes:
    """A Starlette request's whole body: :class:`BodyTooLarge` once it (or the length it declares)
    passes ``limit``, :class:`ClientGone` when the client leaves before its end."""
    declared = request.headers.get("content-length")
    try:
        return await read_body(request.stream(), int(declared) if declared and declared.isdigit() else None, limit)
    except ClientDisconnect:
        raise ClientGone from None


def params_in_head(content_type: str, head: bytes) -> dict[str, str]:
    """The fields that ``head``, the start of a body that was not read to its end, holds whole (the last
    one may be cut short, so it is left out). Never raises: it serves only to answer a refused body in
    the mode the body asked for."""
    if not head:
        return {}
    mime, options = parse_options_header(content_type)
    if _json_body(mime, options, head):
        return _json_head(head)
    try:
        if mime == b"multipart/form-data":
            boundary = options.get(b"boundary")
            return _parse_multipart(boundary, head, complete=False).values if boundary else {}
        if mime in (b"application/x-www-form-urlencoded", b"", b"text/plain"):
            return parse_query(head.rpartition(b"&")[0])
    except (BadParameters, BadUpload):
        pass
    return {}


def parse_body(content_type: str, body: bytes) -> RequestParams:
    if not body:
        return RequestParams()
    mime, options = parse_options_header(content_type)
    if _json_body(mime, options, body):
        try:
            return RequestParams(values=parse_json(body))
        except BadParameters as exc:
            if mime == b"multipart/form-data":
                raise BadUpload(str(exc)) from exc  # what a multipart body that cannot be read gets
            raise
    if mime == b"multipart/form-data":
        boundary = options.get(b"boundary")
        if not boundary:
            raise BadUpload("multipart body without a boundary")
        return _parse_multipart(boundary, body)
    if mime in (b"application/x-www-form-urlencoded", b"", b"text/plain"):
        return RequestParams(values=parse_query(body))
    raise BadParameters(f"unsupported content type {content_type!r}")


# ------------------------------------------------------------------------------------------- JSON

def _json_body(mime: bytes, options: dict[bytes, bytes], body: bytes) -> bool:
    """A body that is JSON: declared so, or an object sent under ``text/plain`` (fetch's type for a
    string body), no type, or a multipart type with no boundary, as 2captcha's own JS clients send it."""
    if mime == b"application/json":
        return True
    if mime in (b"text/plain", b"") or (mime == b"multipart/form-data" and not options.get(b"boundary")):
        return body.lstrip()[:1] == b"{"
    return False


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number")  # NaN and Infinity are not JSON


_DECODER = json.JSONDecoder(parse_constant=_no_constant)


def json_value(value: Any) -> str | None:
    """A JSON scalar as the protocol's text: true/false as 1/0 (the protocol's flags), whole numbers as
    digits (``1.0`` too), other numbers as Python writes them, ``null`` as absent (``None``). Anything
    else (an object, a list) is not a parameter: :class:`BadParameters`."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, str):
        return value
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    raise BadParameters("a JSON parameter is not a string, number or boolean")


def parse_json(body: bytes) -> dict[str, str]:
    """A JSON body: one flat object, its scalars as :func:`json_value` spells them."""
    try:
        value = _DECODER.decode(body.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise BadParameters("parameter is not UTF-8") from exc
    except (ValueError, RecursionError) as exc:  # malformed, NaN, a number too long, nested too deep
        raise BadParameters("body is not JSON") from exc
    if not isinstance(value, dict):
        raise BadParameters("JSON body is not an object")
    if len(value) > MAX_FIELDS:
        raise BadParameters("too many fields")
    values: dict[str, str] = {}
    for name, item in value.items():
        text = json_value(item)
        if text is not None:
            values[name] = text
    return values


def _json_head(head: bytes) -> dict[str, str]:
    """The members of a cut JSON object that ``head`` holds whole: each followed by its ``,`` or ``}``
    (a number cut short would read as another number)."""
    values: dict[str, str] = {}
    text = head.decode("utf-8", errors="ignore")  # the cut may fall inside a character
    at = text.find("{") + 1
    if at == 0:
        return values
    ws = " \t\r\n"
    try:
        while True:
            while at < len(text) and text[at] in ws:
                at += 1
            name, at = _DECODER.raw_decode(text, at)
            while at < len(text) and text[at] in ws:
                at += 1
            if not isinstance(name, str) or text[at:at + 1] != ":":
                return values
            at += 1
            while at < len(text) and text[at] in ws:
                at += 1
            item, at = _DECODER.raw_decode(text, at)
            while at < len(text) and text[at] in ws:
                at += 1
            if text[at:at + 1] not in (",", "}"):
                return values
            with contextlib.suppress(BadParameters):
                scalar = json_value(item)
                if scalar is not None:
                    values[name] = scalar
            if text[at] == "}":
                return values
            at += 1
    except (ValueError, RecursionError):  # cut short (or nested too deep): the members read so far
        return values


# ------------------------------------------------------------------------------------------ decode

def _decode(data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadParameters("parameter is not UTF-8") from exc


def _parse_multipart(boundary: bytes, body: bytes, complete: bool = True) -> RequestParams:
    """``complete=False``: ``body`` is only the start of one; the parts it holds whole, nothing else."""
    params = RequestParams()
    headers: dict[bytes, bytes] = {}
    header_name = bytearray()
    header_value = bytearray()
    data = bytearray()
    counts = {"parts": 0, "ended": 0}

    def on_part_begin() -> None:
        headers.clear()
        data.clear()
        counts["parts"] += 1
        if counts["parts"] > MAX_FIELDS + MAX_FILES:
            raise BadUpload("too many parts")

    def on_header_field(buf: bytes, start: int, end: int) -> None:
        header_name.extend(buf[start:end])

    def on_header_value(buf: bytes, start: int, end: int) -> None:
        header_value.extend(buf[start:end])

    def on_header_end() -> None:
        headers[bytes(header_name).lower()] = bytes(header_value)
        header_name.clear()
        header_value.clear()

    def on_part_data(buf: bytes, start: int, end: int) -> None:
        data.extend(buf[start:end])

    def on_part_end() -> None:
        _, disposition = parse_options_header(headers.get(b"content-disposition", b""))
        raw_name = disposition.get(b"name")
        if raw_name is None:
            raise BadUpload("part without a name")
        name = _decode(raw_name)
        raw_filename = disposition.get(b"filename")
        if raw_filename is not None:
            if len(params.files) >= MAX_FILES:
                raise BadUpload("too many files")
            params.files[name] = Upload(_decode(raw_filename), bytes(data))
        else:
            params.values[name] = _decode(bytes(data))

    def on_end() -> None:
        counts["ended"] = 1

    if len(boundary) > MAX_BOUNDARY:
        raise BadUpload("multipart boundary too long")
    parser = MultipartParser(boundary, {
        "on_part_begin": on_part_begin, "on_part_data": on_part_data, "on_part_end": on_part_end,
        "on_header_field": on_header_field, "on_header_value": on_header_value,
        "on_header_end": on_header_end, "on_end": on_end,
    })
    try:
        parser.write(body)
        if not complete:
            return params
        parser.finalize()
    except (MultipartParseError, BadUpload, BadParameters) as exc:
        if not complete:
            return params
        if isinstance(exc, MultipartParseError):
            raise BadUpload(str(exc)) from exc
        raise
    if not counts["ended"]:
        raise BadUpload("multipart body ends early")
    return params
