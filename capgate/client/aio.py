"""The asyncio client: the engine's effects performed with ``httpx.AsyncClient``.

Every solve in flight on one client shares one poller coroutine, which polls their tasks together
(``ids=`` batches of up to 100, long-polled with ``wait=N`` on capgate).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import ssl
import time
from collections.abc import Awaitable, Callable, Coroutine
from decimal import Decimal
from types import TracebackType
from typing import Any, TypeVar

import httpx

from capgate.client._engine import (
    Engine,
    Failure,
    Flow,
    Options,
    Poll,
    Poller,
    Reply,
    Request,
    Sleep,
    Solution,
    Threads,
    method_row,
)
from capgate.client._methods import Methods
from capgate.client.errors import CapgateError
from capgate.client.sync import USER_AGENT, http_timeout
from capgate.protocol.answers import (
    AngleAnswer,
    Answer,
    CellsAnswer,
    ClearanceAnswer,
    CoordinatesAnswer,
    GeeTestAnswer,
    ObjectAnswer,
    TextAnswer,
    TokenAnswer,
)
from capgate.protocol.methods import Method

T = TypeVar("T")


class AsyncClient(Methods[Coroutine[Any, Any, Solution[TextAnswer]], Coroutine[Any, Any, Solution[TokenAnswer]],
                          Coroutine[Any, Any, Solution[GeeTestAnswer]],
                          Coroutine[Any, Any, Solution[ClearanceAnswer]],
                          Coroutine[Any, Any, Solution[CellsAnswer]], Coroutine[Any, Any, Solution[ObjectAnswer]],
                          Coroutine[Any, Any, Solution[Answer]], Coroutine[Any, Any, Solution[CoordinatesAnswer]],
                          Coroutine[Any, Any, Solution[AngleAnswer]]]):
    """Async client; the same methods as :class:`capgate.client.Client`, awaited.

    Run as many solves at once as you like (``asyncio.gather``): their polls are shared.
    ``max_connections`` caps the HTTP connections to the service. ``timeout`` is as the sync client's:
    one solve's deadline, retries included (``ERROR_NO_SLOT_AVAILABLE``'s too, then
    :class:`~capgate.client.errors.CapacityError`); by default 120 s for image types, 330 s for token
    types (the type's server-side deadline plus 30 s). ``api`` is as the sync client's.
    """

    def __init__(self, server: str, key: str, *, timeout: float | None = None, long_poll: float = 20.0,
                 batch_window: float = 0.5, max_batch: int = 100, network_retries: int = 4,
                 max_connections: int = 100, http: httpx.AsyncClient | None = None,
                 transport: httpx.AsyncBaseTransport | None = None, verify: ssl.SSLContext | bool = True,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                 rng: random.Random | None = None, api: str = "in.php") -> None:
        options = Options(server, key, timeout=timeout, long_poll=long_poll, batch_window=batch_window,
                          max_batch=max_batch, network_retries=network_retries, api=api)
        self._engine = Engine(options, clock, rng)
        self._clock = clock
        self._sleep = sleep
        self._own_http = http is None
        limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
        self._http = http or httpx.AsyncClient(transport=transport, verify=verify, limits=limits,
                                               headers={"User-Agent": USER_AGENT})
        # Requests wait here rather than in httpx's pool, which slows down badly with hundreds of
        # queued requests (seconds before the first reply); polls get at most half the connections
        # so that long-polls never starve submits.
        self._slots = asyncio.Semaphore(max_connections)
        self._poll_slots = asyncio.Semaphore(max(1, max_connections // 2))
        self._poller = Poller(self._engine)
        self._engine.pending = lambda: len(self._poller.tasks)
        self._waiters: dict[str, asyncio.Future[Solution[Answer]]] = {}
        self._changed = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None
        self._polls: set[asyncio.Task[None]] = set()

    def __repr__(self) -> str:
        return f"AsyncClient({self._engine.base!r})"

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, kind: type[BaseException] | None, value: BaseException | None,
                        traceback: TracebackType | None) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        tasks = [*self._polls] + ([self._loop_task] if self._loop_task is not None else [])
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._fail_all(CapgateError("the client was closed"))
        if self._own_http:
            await self._http.aclose()

    # ------------------------------------------------------------------------------------------ driver

    async def _send(self, request: Request) -> Reply | Failure:
        async with self._slots:
            return await self._exchange(request)

    async def _exchange(self, request: Request) -> Reply | Failure:
        try:
            if request.method == "GET":
                response = await self._http.get(request.url, params=dict(request.params),
                                                timeout=http_timeout(request))
            elif request.json is not None:
                response = await self._http.post(request.url, json=dict(request.json), timeout=http_timeout(request))
            else:
                response = await self._http.post(request.url, data=dict(request.params),
                                                 timeout=http_timeout(request))
        except httpx.TransportError as exc:
            return Failure(f"{request.url}: {type(exc).__name__}: {exc}")
        return Reply(response.status_code, response.content)

    async def _drive(self, flow: Flow[T]) -> T:
        try:
            effect = next(flow)
            while True:
                if isinstance(effect, Sleep):
                    await self._sleep(effect.seconds)
                    effect = flow.send(None)
                else:
                    effect = flow.send(await self._send(effect))
        except StopIteration as stop:
            result: T = stop.value
            return result

    async def _wait(self, task_id: str, row: Method, deadline: float) -> Solution[Answer]:
        future: asyncio.Future[Solution[Answer]] = asyncio.get_running_loop().create_future()
        self._waiters[task_id] = future
        self._poller.add(task_id, row, deadline, self._clock())
        self._changed.set()
        if self._loop_task is None or self._loop_task.done():
            self._loop_task = asyncio.create_task(self._poll_loop())
        try:
            return await future
        finally:
            self._waiters.pop(task_id, None)
            self._poller.discard(task_id)

    def _deliver(self) -> None:
        for settled in self._poller.drain():
            future = self._waiters.get(settled.task_id)
            if future is None or future.done():
                continue
            if settled.error is not None:
                future.set_exception(settled.error)
            elif settled.solution is not None:
                future.set_result(settled.solution)

    def _fail_all(self, error: BaseException) -> None:
        for future in self._waiters.values():
            if not future.done():
                future.set_exception(error)

    async def _poll_loop(self) -> None:
        try:
            while self._poller:
                self._changed.clear()
                for poll in self._poller.plan(self._clock()):
                    task = asyncio.create_task(self._run_poll(poll))
                    self._polls.add(task)
                    task.add_done_callback(self._polls.discard)
                self._deliver()
                if not self._poller:
                    break
                await self._pause(self._poller.next_wake())
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug must not leave solves waiting forever
            self._fail_all(exc)
            raise

    async def _pause(self, wake: float | None) -> None:
        """Until ``wake`` (the poller's next due time) or until something changes, whichever first."""
        waiter = asyncio.ensure_future(self._changed.wait())
        sleeper = asyncio.ensure_future(self._sleep(max(0.0, wake - self._clock()))) if wake is not None else None
        try:
            await asyncio.wait([f for f in (waiter, sleeper) if f is not None],
                               return_when=asyncio.FIRST_COMPLETED)
        finally:
            for future in (waiter, sleeper):
                if future is not None:
                    future.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await future

    async def _run_poll(self, poll: Poll) -> None:
        try:
            async with self._poll_slots:
                received = await self._send(poll.request)
            self._poller.feed(poll, received, self._clock())
        except Exception as exc:
            for task_id in poll.task_ids:
                future = self._waiters.get(task_id)
                if future is not None and not future.done():
                    future.set_exception(exc)
            raise
        finally:
            self._deliver()
            self._changed.set()

    async def _solve(self, method: str, timeout: float | None, params: dict[str, Any]) -> Solution[Answer]:
        row = method_row(method)
        deadline = self._engine.deadline(row, timeout)
        task_id = await self._drive(self._engine.submit(method, params, deadline))
        return await self._wait(task_id, row, deadline)

    def _call(self, method: str, timeout: float | None,
              params: dict[str, Any]) -> Coroutine[Any, Any, Solution[Answer]]:
        return self._solve(method, timeout, params)

    # ------------------------------------------------------------------------------------------ API

    async def submit(self, method: str, *, pingback: str | None = None, timeout: float | None = None,
                     **params: object) -> str:
        """Submit without waiting; the task id. With ``pingback`` the service posts the answer there."""
        deadline = self._engine.deadline(method_row(method), timeout)
        return await self._drive(self._engine.submit(method, params, deadline, pingback))

    async def result(self, task_id: str, method: str = "normal", *,
                     timeout: float | None = None) -> Solution[Answer]:
        """Poll a submitted task until it settles; ``method`` tells how to read its answer."""
        row = method_row(method)
        return await self._wait(str(task_id), row, self._engine.deadline(row, timeout))

    async def balance(self) -> Decimal:
        return await self._drive(self._engine.balance())

    async def report(self, task_id: str, good: bool) -> bool:
        """Report an answer as good or bad; False when the service declined to record it."""
        return await self._drive(self._engine.report(str(task_id), good))

    async def threads(self) -> Threads:
        return await self._drive(self._engine.threads())
