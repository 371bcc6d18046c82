"""Receiving a request body, as every plain-ASGI endpoint does (in.php, res.php, solve.php, the JSON task
API): admitted against the memory budgets first, read against the size limit and the body timeout, an
abort told apart from an end; and the few responses that are not protocol answers.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from starlette.types import Receive, Scope, Send

from capgate.server.admission import Admission
from capgate.server.params import BodyTooLarge, ClientGone, read_body

PEEK_S = 0.5  # how long a body declared over the limit is waited for, to read its first fields


class BodyTimeout(Exception):
    """The body did not arrive whole within ``body_timeout``: dropped, nothing of it processed."""


class NoRoom(Exception):
    """The body would pass the address's or the process's budget for bodies being received."""


def header(scope: Scope, name: bytes) -> str:
    for key, value in scope["headers"]:
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return ""


async def _peek(receive: Receive) -> bytes:
    """What of a body declared over the limit has arrived already (one message, waited for briefly): the
    first fields, where the official clients put ``json=1``, without reading the rest."""
    try:
        message = await asyncio.wait_for(receive(), PEEK_S)
    except TimeoutError:
        return b""
    return bytes(message.get("body", b"")) if message["type"] == "http.request" else b""


async def receive_body(scope: Scope, receive: Receive, admission: Admission, address: str, limit: int,
                       timeout: float) -> bytes:
    """The whole body. Raises :class:`NoRoom` (nothing read), :class:`BodyTooLarge` (with what had
    arrived of it), :class:`BodyTimeout`, or :class:`ClientGone` when the client hung up before the
    declared length."""
    raw_length = header(scope, b"content-length")
    declared = int(raw_length) if raw_length.isdigit() else None
    if declared is not None and declared > limit:
        raise BodyTooLarge(await _peek(receive))
    reserved = min(declared if declared is not None else limit, limit)
    if not admission.reserve(address, reserved):
        raise NoRoom

    async def chunks() -> AsyncIterator[bytes]:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise ClientGone
            yield message.get("body", b"")
            if not message.get("more_body", False):
                return
    try:
        async with asyncio.timeout(timeout):
            body = await read_body(chunks(), declared, limit)
    except TimeoutError:
        raise BodyTimeout from None
    finally:
        admission.release(address, reserved)
    if declared is not None and len(body) != declared:
        raise ClientGone  # the server saw the connection end before the declared length
    return body


async def respond(send: Send, status: int, content: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    headers.append((b"content-length", str(len(content)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": content})


async def refuse(send: Send, status: int, why: bytes) -> None:
    """Not a protocol answer: the request was not read (a client over its caps, a body too slow), so
    it gets an HTTP status that every client treats as "try again later", and the connection ends."""
    await respond(send, status, why, [(b"content-type", b"text/plain; charset=utf-8"), (b"connection", b"close"),
                                      (b"retry-after", b"1")])


NO_ROOM = b"too many request bodies at once; retry\n"
TOO_SLOW = b"request body too slow\n"
