"""The capgate ASGI app in the test's own process: its lifespan run, its store at hand.

:class:`AppHost` runs ``create_app(settings, store)`` on an event loop in a thread of its own (the
sandbox worker, the sweeper and the pingback sender live there for the host's life), and hands out
httpx clients whose requests go to the app through httpx's ASGI transport: sync ``httpx.Client``\\ s for
the sync tests, ``httpx.AsyncClient``\\ s for the async ones, each from any loop. The bytes a test reads
are the app's bytes; what it cannot see is HTTP framing (tests of that keep a real server,
:mod:`tests.serverproc`).

Accounts and worker tokens are made through the host's own store (:meth:`AppHost.make_key`,
:meth:`AppHost.worker_token`), on the app's loop, as ``capgate keys create`` and ``capgate workers
create`` do.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import threading
import time
from collections.abc import AsyncIterator, Coroutine, Iterator, MutableMapping, Sequence
from decimal import Decimal
from typing import Any, TypeVar

import httpx

from capgate.keys import PREFIX_LENGTH, TOKEN_PREFIX, hash_secret, new_key
from capgate.money import usd_to_micros
from capgate.server.app import create_app
from capgate.settings import Settings
from capgate.store.base import Store
from tests.fixtures import Api
from tests.storekit import Backend

T = TypeVar("T")
BASE_URL = "http://capgate.test"
# In process the sandbox answers at once (a real server's suite default is 0.2 s) and no OCR runs.
FAST = {"sandbox_delay": 0.0, "ocr": False}

__all__ = ["BASE_URL", "AppHost", "app_host", "asgi_lifespan"]


# ------------------------------------------------------------------------------------------ lifespan


@contextlib.asynccontextmanager
async def asgi_lifespan(app: Any) -> AsyncIterator[None]:
    """Run an ASGI app's lifespan protocol (startup on enter, shutdown on exit), as a server does."""
    to_app: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    from_app: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    async def send(message: dict[str, Any]) -> None:
        await from_app.put(message)

    running = asyncio.create_task(app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}},
                                      to_app.get, send))

    async def answer(expected: str) -> None:
        getting = asyncio.create_task(from_app.get())
        await asyncio.wait({getting, running}, return_when=asyncio.FIRST_COMPLETED)
        if not getting.done():
            getting.cancel()
            running.result()  # raises what the app raised
            raise RuntimeError(f"the app ended its lifespan without {expected}")
        message = getting.result()
        if message["type"] != expected:
            raise RuntimeError(f"lifespan: {message}")

    await to_app.put({"type": "lifespan.startup"})
    try:
        await answer("lifespan.startup.complete")
    except BaseException:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
        raise
    try:
        yield
    finally:
        await to_app.put({"type": "lifespan.shutdown"})
        await answer("lifespan.shutdown.complete")
        await running


# ------------------------------------------------------------------------------------------ the host


async def _forward(inner: httpx.ASGITransport, request: httpx.Request, body: bytes,
                   ) -> tuple[int, httpx.Headers, bytes]:
    """``request`` through the ASGI transport, on the app's loop. The client's read timeout applies
    to the whole exchange (as a socket's would to a reply that does not come): a test that relies on a
    short timeout to show that a poll is not held still fails when it is."""
    sent = httpx.Request(request.method, request.url, headers=request.headers, content=body)

    async def exchange() -> tuple[int, httpx.Headers, bytes]:
        response = await inner.handle_async_request(sent)
        return response.status_code, response.headers, await response.aread()

    timeout = request.extensions.get("timeout", {}).get("read")
    try:
        return await asyncio.wait_for(exchange(), timeout)
    except TimeoutError:
        raise httpx.ReadTimeout(f"no reply within {timeout} s", request=request) from None


class _Bridge(httpx.BaseTransport):
    """A sync transport: each request goes through an ASGI transport on the host's loop."""

    def __init__(self, host: AppHost, address: str) -> None:
        self.host = host
        self.inner = httpx.ASGITransport(host.app, client=(address, 50000))

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        body = request.read()

        status, headers, content = self.host.run(_forward(self.inner, request, body))
        return httpx.Response(status, headers=headers, content=content, request=request)


class _AsyncBridge(httpx.AsyncBaseTransport):
    """An async transport for clients on another loop (the test's): requests run on the host's loop."""

    def __init__(self, host: AppHost, address: str) -> None:
        self.host = host
        self.inner = httpx.ASGITransport(host.app, client=(address, 50000))

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        body = await request.aread()

        status, headers, content = await self.host.arun(_forward(self.inner, request, body))
        return httpx.Response(status, headers=headers, content=content, request=request)


class AppHost:
    """``create_app(settings, store)`` with its lifespan, on a loop of its own (a context manager)."""

    def __init__(self, settings: Settings, store: Store, *, base_url: str = BASE_URL) -> None:
        self.settings = settings
        self.store = store
        self.base_url = base_url
        self.app = create_app(settings, store)
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="capgate-app", daemon=True)
        self._stack = contextlib.AsyncExitStack()

    def __enter__(self) -> AppHost:
        self._thread.start()
        try:
            self.run(self._stack.enter_async_context(asgi_lifespan(self.app)))
        except BaseException:
            self._stop()
            raise
        self.http = self.client()
        return self

    def __exit__(self, *exc: object) -> None:
        self.http.close()
        try:
            self.run(self._stack.aclose())
        finally:
            self._stop()

    def _stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        if not self._thread.is_alive():
            self.loop.close()

    # ---- running things on the app's loop

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the app's loop and wait for it (from a sync test or any other thread)."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    async def arun(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the app's loop and await it from another loop (an async test's)."""
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self.loop))

    async def cut_short(self, method: str, path: str, headers: dict[str, str], body: bytes,
                        arrives: int) -> list[MutableMapping[str, Any]]:
        """A request whose connection ends after ``arrives`` bytes of ``body``, straight into the ASGI
        app (no HTTP client can send one): what the app sent back."""
        arriving: list[dict[str, Any]] = [{"type": "http.request", "body": body[:arrives], "more_body": True},
                                          {"type": "http.disconnect"}]
        messages = iter(arriving)
        sent: list[MutableMapping[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return next(messages)

        async def send(message: MutableMapping[str, Any]) -> None:
            sent.append(message)

        head = [(name.lower().encode(), value.encode()) for name, value in headers.items()]
        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method,
                 "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
                 "headers": [*head, (b"content-length", str(len(body)).encode())],
                 "client": ("127.0.0.1", 50000), "server": ("testserver", 80)}
        await self.arun(self.app(scope, receive, send))
        return sent

    # ---- clients

    def url(self, path: str) -> str:
        return f"{self.base_url}/{path.lstrip('/')}"

    def client(self, address: str = "127.0.0.1", timeout: float = 30.0) -> httpx.Client:
        """A sync client whose requests come from ``address`` (strikes and bans are per address)."""
        return httpx.Client(transport=_Bridge(self, address), base_url=self.base_url, timeout=timeout)

    def api(self, key: str) -> Api:
        """in.php / res.php for ``key`` through the host's shared client (from 127.0.0.1)."""
        return Api(self.http, self.base_url, key)

    def aclient(self, address: str = "127.0.0.1", timeout: float = 30.0) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=_AsyncBridge(self, address), base_url=self.base_url, timeout=timeout)

    # ---- accounts and workers, through the store

    def make_key(self, *, sandbox: bool = True, threads: int = 50, balance: str | Decimal = "0") -> str:
        """A new account, as ``capgate keys create`` makes it (the CLI path has its own tests)."""
        key = new_key()
        self.run(self.store.create_account(hash_secret(key), key[:PREFIX_LENGTH], threads,
                                           usd_to_micros(Decimal(balance)), sandbox))
        return key

    def worker_token(self, name: str, methods: Sequence[str] = (), *, human: bool = False) -> str:
        """A new worker token, as ``capgate workers create`` makes it (empty ``methods``: any)."""
        token = TOKEN_PREFIX + secrets.token_hex(20)
        self.run(self.store.create_worker(name, hash_secret(token), token[:8], list(methods), human))
        return token

    def register_worker(self, methods: Sequence[str]) -> None:
        """A worker that was just seen serving ``methods``: live keys may then submit those methods."""
        async def seen() -> None:
            worker = await self.store.create_worker("test-worker", hash_secret(secrets.token_hex(20)), "cgw_te",
                                                    list(methods), False)
            await self.store.worker_seen(worker.id, list(methods), time.time())
        self.run(seen())

    def account_id(self, key: str) -> int:
        account = self.run(self.store.account_by_key_hash(hash_secret(key)))
        assert account is not None
        return account.id

    def ledger(self, key: str, task_id: str | int | None = None) -> list[tuple[str, int]]:
        """The account's ledger rows (kind, amount in micro-USD), oldest first; only those that name
        ``task_id`` when given."""
        entries = self.run(self.store.ledger(self.account_id(key), 10_000))
        rows = sorted(entries, key=lambda e: e.id)
        return [(e.kind.value, e.amount) for e in rows if task_id is None or e.task_id == int(task_id)]


# ------------------------------------------------------------------------------------------ backends


@contextlib.contextmanager
def app_host(backend: Backend, **settings: Any) -> Iterator[AppHost]:
    """An :class:`AppHost` on ``backend`` with :data:`FAST` defaults and ``settings`` over them."""
    values = {**FAST, **settings, "db": backend.db}
    with AppHost(Settings(**values), backend.make()) as host:
        yield host
