"""The HTTP face of capgate: in.php, res.php and solve.php as plain ASGI (the hot path), the worker
API, human page and health check on Starlette, and the background workers for the app's life.

Every protocol answer is HTTP 200, whatever went wrong: clients (2captcha-python above all) treat
any other status as a network failure and would retry a request that can never succeed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from capgate.protocol import wire
from capgate.protocol.codes import C
from capgate.server.params import (
    BadParameters,
    BadUpload,
    BodyTooLarge,
    RequestParams,
    params_in_head,
    parse_body,
    parse_query,
    read_body,
)
from capgate.server.pingback import PingbackSender
from capgate.server.security import SecurityHeaders, forwarded_client, page_policy
from capgate.server.service import Service
from capgate.server.tasks_api import task_endpoints
from capgate.server.workers import WorkerApi
from capgate.settings import Settings, parse_networks
from capgate.store.base import Store
from capgate.store.factory import open_store
from capgate.workers.sandbox import SandboxWorker

log = logging.getLogger("capgate.server")
SWEEP_EVERY_S = 1.0
PEEK_S = 0.5  # how long a body declared over the limit is waited for, to read its first fields
HUMAN_PAGE = Path(__file__).parent / "static" / "human.html"

Handler = Callable[[str, RequestParams], Awaitable[wire.Reply]]
Extension = Callable[[Service], AsyncIterator[None]]


async def _peek(receive: Receive) -> bytes:
    """What of a body declared over the limit has arrived already (one message, waited for briefly): the
    first fields, where the official clients put ``json=1``, without reading the rest."""
    try:
        message = await asyncio.wait_for(receive(), PEEK_S)
    except TimeoutError:
        return b""
    return bytes(message.get("body", b"")) if message["type"] == "http.request" else b""


async def _receive_body(receive: Receive, declared: int | None, limit: int) -> bytes:
    if declared is not None and declared > limit:
        raise BodyTooLarge(await _peek(receive))

    async def chunks() -> AsyncIterator[bytes]:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            yield message.get("body", b"")
            if not message.get("more_body", False):
                return
    return await read_body(chunks(), declared, limit)


def _header(scope: Scope, name: bytes) -> str:
    for key, value in scope["headers"]:
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return ""


def _protocol_endpoint(service: Service, name: str, too_big: str) -> ASGIApp:
    """in.php / res.php / solve.php as plain ASGI: the hot path of every client, kept free of
    per-request framework objects (it is most of what a poll costs beside the store read)."""
    handler: Handler = {"in": service.submit, "res": service.result, "solve": service.solve_now}[name]
    limit = service.settings.body_limit

    async def endpoint(scope: Scope, receive: Receive, send: Send) -> None:
        raw_query: bytes = scope.get("query_string", b"")
        # Read leniently first, so that even a query that fails to parse is answered in its mode.
        pieces = raw_query.split(b"&")
        json_mode, cors = b"json=1" in pieces, b"header_acao=1" in pieces
        try:
            params = RequestParams(values=parse_query(raw_query))
            json_mode, cors = params.get("json").strip() == "1", params.flag("header_acao")
            if scope["method"] == "POST":
                declared = _header(scope, b"content-length")
                body = await _receive_body(receive, int(declared) if declared.isdigit() else None, limit)
                from_body = parse_body(_header(scope, b"content-type"), body)
                params.values.update(from_body.values)  # the body wins, as form posts expect
                params.files.update(from_body.files)
                json_mode, cors = params.get("json").strip() == "1", params.flag("header_acao")
            client = scope.get("client")
            reply = await handler(client[0] if client else "unknown", params)
        except BodyTooLarge as exc:
            # Answered in the mode asked for, in the query or in what was read of the body (body wins).
            seen = params_in_head(_header(scope, b"content-type"), exc.head)
            if "json" in seen:
                json_mode = seen["json"].strip() == "1"
            if "header_acao" in seen:
                cors = seen["header_acao"].strip().lower() in ("1", "true")
            reply = wire.code(too_big)
        except BadUpload:
            reply = wire.code(C.UPLOAD)
        except BadParameters:
            reply = wire.code(C.BAD_PARAMETERS)
        except Exception:
            log.exception("unexpected error in %s.php", name)
            reply = wire.code(C.SERVER_ERROR)
        content, media_type = reply.render(json_mode)
        headers = [(b"content-type", media_type.encode()), (b"content-length", str(len(content)).encode())]
        if cors:
            headers.append((b"access-control-allow-origin", b"*"))
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": content})

    return endpoint


class ProtocolApp:
    """The ASGI app: the protocol endpoints (GET and POST) served directly, the rest by Starlette
    (worker API, human page, health, lifespan)."""

    def __init__(self, service: Service, app: Starlette) -> None:
        self.service = service
        self.app = app
        self.state = app.state
        self.router = app.router
        self._endpoints: dict[str, ASGIApp] = {
            "/res.php": _protocol_endpoint(service, "res", C.BAD_PARAMETERS),
            "/in.php": _protocol_endpoint(service, "in", C.TOO_BIG_CAPTCHA_FILESIZE),
            "/solve.php": _protocol_endpoint(service, "solve", C.TOO_BIG_CAPTCHA_FILESIZE),
            **task_endpoints(service),  # the JSON task API: /createTask, /getTaskResult, ...
        }
        self._trusted_proxies = parse_networks(service.settings.trusted_proxies, "trusted_proxies")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._trusted_proxies and scope["type"] == "http":
            forwarded_client(scope, self._trusted_proxies)  # X-Forwarded-For from these proxies only
        if scope["type"] == "http" and scope["method"] in ("GET", "POST"):
            endpoint = self._endpoints.get(scope["path"])
            if endpoint is not None:
                await endpoint(scope, receive, send)
                return
        await self.app(scope, receive, send)


async def _sweeper(service: Service) -> None:
    while True:
        try:
            settled = await service.store.sweep(time.time(), service.settings.retention,
                                                service.settings.max_attempts)
            for task_id in settled:
                service.hub.settled(task_id)
        except Exception:
            log.exception("sweep failed")
        await asyncio.sleep(SWEEP_EVERY_S)


def create_app(settings: Settings, store: Store | None = None,
               extensions: tuple[Extension, ...] = ()) -> ProtocolApp:
    """The ASGI app. ``extensions`` are async context managers run for the app's life (workers
    that live in the server process, such as the OCR worker)."""
    service = Service(settings, store or open_store(settings.db))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await service.store.open()
        service.sandbox = SandboxWorker(service.store, service.hub.settled)
        pingbacks = PingbackSender(service.settings, service.store)
        service.hub.on_settle.append(pingbacks.wake)
        background = [asyncio.create_task(service.sandbox.run()), asyncio.create_task(_sweeper(service)),
                      asyncio.create_task(pingbacks.run())]
        async with contextlib.AsyncExitStack() as stack:
            for extension in extensions:
                await stack.enter_async_context(contextlib.asynccontextmanager(extension)(service))
            try:
                yield
            finally:
                for task in background:
                    task.cancel()
                await asyncio.gather(*background, return_exceptions=True)
        await service.store.close()

    async def health(request: Request) -> Response:
        return PlainTextResponse("OK")

    async def human(request: Request) -> Response:
        page = HUMAN_PAGE.read_bytes()
        return HTMLResponse(page, headers={"Cache-Control": "no-store", "Content-Security-Policy": page_policy(page)})

    routes = [
        Route("/healthz", health),
        Route("/human", human),
        *WorkerApi(service.dispatcher).routes(),
    ]
    app = Starlette(routes=routes, lifespan=lifespan, middleware=[Middleware(SecurityHeaders)])
    app.state.service = service
    return ProtocolApp(service, app)
