"""Reading a request's parameters: query string, urlencoded or multipart body, merged (body wins).

Bodies are read against a size limit and refused, without being read whole, once they pass it.
Text must be UTF-8: anything else is refused rather than guessed (a latin-1 fallback would store a
different answer than the one sent).
"""

from __future__ import annotations

import codecs
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from urllib.parse import unquote_to_bytes

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

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


def params_in_head(content_type: str, head: bytes) -> dict[str, str]:
    """The fields that ``head``, the start of a body that was not read to its end, holds whole (the last
    one may be cut short, so it is left out). Never raises: it serves only to answer a refused body in
    the mode the body asked for."""
    if not head:
        return {}
    mime, options = parse_options_header(content_type)
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
    if mime == b"multipart/form-data":
        boundary = options.get(b"boundary")
        if not boundary:
            raise BadUpload("multipart body without a boundary")
        return _parse_multipart(boundary, body)
    if mime in (b"application/x-www-form-urlencoded", b"", b"text/plain"):
        return RequestParams(values=parse_query(body))
    raise BadParameters(f"unsupported content type {content_type!r}")


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
