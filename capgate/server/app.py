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
from capgate.protocol.codes import CODES, C
from capgate.server.admission import Admission
from capgate.server.bodies import NO_ROOM, TOO_SLOW, BodyTimeout, NoRoom, header, receive_body, refuse, respond
from capgate.server.observe import CODE, REQUEST_ID, Observer
from capgate.server.operators import ObservedTasks, operator_routes
from capgate.server.params import (
    BadParameters,
    BadUpload,
    BodyTooLarge,
    ClientGone,
    RequestParams,
    params_in_head,
    parse_body,
    parse_query,
)
from capgate.server.pingback import PingbackSender
from capgate.server.security import SecurityHeaders, forwarded_client, page_policy
from capgate.server.service import Service
from capgate.server.tasks_api import task_endpoints
from capgate.server.workers import WorkerApi
from capgate.settings import Settings, parse_networks
from capgate.store.base import Store
from capgate.store.factory import settings_store
from capgate.workers.sandbox import SandboxWorker

log = logging.getLogger("capgate.server")
SWEEP_EVERY_S = 1.0
HUMAN_PAGE = Path(__file__).parent / "static" / "human.html"

Handler = Callable[[str, RequestParams], Awaitable[wire.Reply]]
Extension = Callable[[Service], AsyncIterator[None]]


def _protocol_endpoint(service: Service, admission: Admission, name: str, too_big: str) -> ASGIApp:
    """in.php / res.php / solve.php as plain ASGI: the hot path of every client, kept free of
    per-request framework objects (it is most of what a poll costs beside the store read)."""
    handler: Handler = {"in": service.submit, "res": service.result, "solve": service.solve_now}[name]
    settings = service.settings
    limit = settings.res_body_limit if name == "res" else settings.body_limit
    body_timeout = settings.body_timeout

    async def endpoint(scope: Scope, receive: Receive, send: Send) -> None:
        raw_query: bytes = scope.get("query_string", b"")
        client = scope.get("client")
        address = client[0] if client else "unknown"
        # Read leniently first, so that even a query that fails to parse is answered in its mode.
        pieces = raw_query.split(b"&")
        json_mode, cors = b"json=1" in pieces, b"header_acao=1" in pieces
        try:
            params = RequestParams(values=parse_query(raw_query))
            json_mode, cors = params.get("json").strip() == "1", params.flag("header_acao")
            if scope["method"] == "POST":
                body = await receive_body(scope, receive, admission, address, limit, body_timeout)
                from_body = parse_body(header(scope, b"content-type"), body)
                params.values.update(from_body.values)  # the body wins, as form posts expect
                params.files.update(from_body.files)
                json_mode, cors = params.get("json").strip() == "1", params.flag("header_acao")
            reply = await handler(address, params)
        except NoRoom:
            await refuse(send, 503, NO_ROOM)
            return
        except ClientGone:
            log.debug("%s.php: the client left before its body ended; nothing done", name)
            return
        except BodyTimeout:
            log.debug("%s.php: the body took over %s s; dropped", name, body_timeout)
            await refuse(send, 408, TOO_SLOW)
            return
        except BodyTooLarge as exc:
            # Answered in the mode asked for, in the query or in what was read of the body (body wins).
            seen = params_in_head(header(scope, b"content-type"), exc.head)
            if "json" in seen:
                json_mode = seen["json"].strip() == "1"
            if "header_acao" in seen:
                cors = seen["header_acao"].strip().lower() in ("1", "true")
            reply = wire.code(too_big)
        except BadUpload as exc:
            log.debug("%s.php: upload refused: %s", name, exc)
            reply = wire.code(C.UPLOAD)
        except BadParameters:
            reply = wire.code(C.BAD_PARAMETERS)
        except Exception:
            log.exception("unexpected error in %s.php", name)
            reply = wire.code(C.SERVER_ERROR)
        content, media_type = reply.render(json_mode)
        headers = [(b"content-type", media_type.encode())]
        if cors:
            headers.append((b"access-control-allow-origin", b"*"))
        # For the request's log line and count: the protocol's code (a worker's own error text counts as OTHER).
        scope[CODE] = "OK" if reply.status else reply.plain if reply.plain in CODES else "OTHER"
        request_id = scope.get(REQUEST_ID)
        if request_id is not None:
            headers.append((b"x-request-id", request_id))
        await respond(send, 200, content, headers)

    return endpoint


class ProtocolApp:
    """The ASGI app: the protocol endpoints (GET and POST) served directly, the rest by Starlette
    (worker API, human page, health, lifespan)."""

    def __init__(self, service: Service, app: Starlette) -> None:
        self.service = service
        self.app = app
        self.state = app.state
        self.router = app.router
        self.admission = admission = Admission(service.settings)
        self._endpoints: dict[str, ASGIApp] = {
            "/res.php": _protocol_endpoint(service, admission, "res", C.BAD_PARAMETERS),
            "/in.php": _protocol_endpoint(service, admission, "in", C.TOO_BIG_CAPTCHA_FILESIZE),
            "/solve.php": _protocol_endpoint(service, admission, "solve", C.TOO_BIG_CAPTCHA_FILESIZE),
            **task_endpoints(service, admission),  # the JSON task API: /createTask, /getTaskResult, ...
        }
        self._trusted_proxies = parse_networks(service.settings.trusted_proxies, "trusted_proxies")
        # Request ids, log lines and counts (None: none of them, as a benchmark's baseline).
        self.observer: Observer | None = getattr(app.state, "observer", None)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self._trusted_proxies:
            forwarded_client(scope, self._trusted_proxies)  # X-Forwarded-For from these proxies only
        client = scope.get("client")
        address = client[0] if client else "unknown"
        if not self.admission.enter(address):
            await refuse(send, 503, b"too many requests open from this address; retry\n")
            return
        try:
            observer = self.observer
            endpoint = self._endpoints.get(scope["path"]) if scope["method"] in ("GET", "POST") else None
            if observer is None:
                await (endpoint or self.app)(scope, receive, send)
            elif endpoint is not None:
                await observer.protocol(endpoint, scope, receive, send)
            else:
                await observer.other(self.app, scope, receive, send)
        finally:
            self.admission.leave(address)


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
               extensions: tuple[Extension, ...] = (), release_on_signal: bool = False) -> ProtocolApp:
    """The ASGI app. ``extensions`` are async context managers run for the app's life (workers
    that live in the server process, such as the OCR worker). ``release_on_signal``: long-polls are
    answered as soon as the process gets SIGINT or SIGTERM (``capgate serve``)."""
    service = Service(settings, store or settings_store(settings))
    observer = Observer()
    observed = ObservedTasks(service, observer)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await service.store.open()
        if release_on_signal:
            from capgate.server.running import release_on_signal as release
            release(service.hub.stop)
        service.sandbox = SandboxWorker(service.store, service.hub.settled)
        pingbacks = PingbackSender(service.settings, service.store)
        service.hub.on_settle.append(pingbacks.wake)
        service.hub.on_settle.append(observed.settled)
        background = [asyncio.create_task(service.sandbox.run()), asyncio.create_task(_sweeper(service)),
                      asyncio.create_task(pingbacks.run()), asyncio.create_task(observed.run()),
                      asyncio.create_task(service.hub.watch(service.store))]
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
        *operator_routes(service, observed),
    ]
    app = Starlette(routes=routes, lifespan=lifespan, middleware=[Middleware(SecurityHeaders)])
    app.state.service = service
    app.state.observer = observer
    return ProtocolApp(service, app)
