"""The blocking client: the engine's effects performed with ``httpx.Client`` and ``time.sleep``.

Solves run one at a time; each polls alone (``id=`` with ``wait=N`` where the service honours it).
"""

from __future__ import annotations

import random
import ssl
import time
from collections.abc import Callable
from decimal import Decimal
from types import TracebackType
from typing import Any, TypeVar

import httpx

from capgate.client._engine import (
    Engine,
    Failure,
    Flow,
    Options,
    Poller,
    Reply,
    Request,
    Sleep,
    Solution,
    Threads,
    expect,
    method_row,
)
from capgate.client._methods import Methods
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
USER_AGENT = "capgate-client/0.1 (+httpx)"


def http_timeout(request: Request) -> httpx.Timeout:
    # pool=None: with many concurrent solves a request may queue for a connection while long-polls
    # hold theirs; the solve's own deadline bounds the wait.
    return httpx.Timeout(request.timeout, connect=min(10.0, request.timeout), pool=None)


class Client(Methods[Solution[TextAnswer], Solution[TokenAnswer], Solution[GeeTestAnswer],
                     Solution[ClearanceAnswer], Solution[CellsAnswer], Solution[ObjectAnswer],
                     Solution[Answer], Solution[CoordinatesAnswer], Solution[AngleAnswer]]):
    """Blocking client for capgate, CaptchaAI, 2captcha or any compatible service.

    ``server`` is the base URL that ``in.php`` and ``res.php`` hang off (a path prefix is fine); a bare
    host means ``http://`` for ``localhost``/``127.x``/``::1`` and ``https://`` for any other host.
    ``timeout`` is the default overall deadline of one solve (each method also takes ``timeout=``):
    submit, retries and polls included, ``ERROR_NO_SLOT_AVAILABLE``'s retries too, after which
    :class:`~capgate.client.errors.CapacityError` is raised. ``None``, the default: the type's
    server-side deadline plus 30 s, that is 120 s for image types (``normal``, ``grid``, ``bls``) and
    330 s for token types (``turnstile``, ``recaptcha_v2``...).
    ``api="tasks"`` speaks 2captcha's JSON task API (``createTask``, ``getTaskResult``, ...) at the same
    base URL instead of in.php / res.php, with the same answers and exceptions (``threads()`` has no call
    there: :class:`~capgate.client.errors.ProtocolError`).
    ``clock``, ``sleep`` and ``rng`` exist for tests.
    """

    def __init__(self, server: str, key: str, *, timeout: float | None = None, long_poll: float = 20.0,
                 network_retries: int = 4, http: httpx.Client | None = None,
                 transport: httpx.BaseTransport | None = None, verify: ssl.SSLContext | bool = True,
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep,
                 rng: random.Random | None = None, api: str = "in.php") -> None:
        options = Options(server, key, timeout=timeout, long_poll=long_poll, network_retries=network_retries,
                          api=api)
        self._engine = Engine(options, clock, rng)
        self._clock = clock
        self._sleep = sleep
        self._own_http = http is None
        self._http = http or httpx.Client(transport=transport, verify=verify, headers={"User-Agent": USER_AGENT})
        self._poller = Poller(self._engine)
        self._engine.pending = lambda: len(self._poller.tasks)

    def __repr__(self) -> str:
        return f"Client({self._engine.base!r})"

    def __enter__(self) -> Client:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        if self._own_http:
            self._http.close()

    # ------------------------------------------------------------------------------------------ driver

    def _send(self, request: Request) -> Reply | Failure:
        try:
            if request.method == "GET":
                response = self._http.get(request.url, params=dict(request.params), timeout=http_timeout(request))
            elif request.json is not None:
                response = self._http.post(request.url, json=dict(request.json), timeout=http_timeout(request))
            else:
                response = self._http.post(request.url, data=dict(request.params), timeout=http_timeout(request))
        except httpx.TransportError as exc:
            return Failure(f"{request.url}: {type(exc).__name__}: {exc}")
        return Reply(response.status_code, response.content)

    def _drive(self, flow: Flow[T]) -> T:
        try:
            effect = next(flow)
            while True:
                if isinstance(effect, Sleep):
                    self._sleep(effect.seconds)
                    effect = flow.send(None)
                else:
                    effect = flow.send(self._send(effect))
        except StopIteration as stop:
            result: T = stop.value
            return result

    def _wait(self, task_id: str, row: Method, deadline: float) -> Solution[Answer]:
        self._poller.add(task_id, row, deadline, self._clock())
        try:
            while True:
                polls = self._poller.plan(self._clock())
                for poll in polls:
                    self._poller.feed(poll, self._send(poll.request), self._clock())
                for settled in self._poller.drain():
                    if settled.task_id == task_id:
                        return expect(settled)
                if polls:
                    continue
                wake = self._poller.next_wake()
                if wake is None:
                    raise RuntimeError(f"task {task_id} left the poller unsettled")
                self._sleep(max(0.0, wake - self._clock()))
        finally:
            self._poller.discard(task_id)

    def _call(self, method: str, timeout: float | None, params: dict[str, Any]) -> Solution[Answer]:
        row = method_row(method)
        deadline = self._engine.deadline(row, timeout)
        task_id = self._drive(self._engine.submit(method, params, deadline))
        return self._wait(task_id, row, deadline)

    # ------------------------------------------------------------------------------------------ API

    def submit(self, method: str, *, pingback: str | None = None, timeout: float | None = None,
               **params: object) -> str:
        """Submit without waiting; the task id. With ``pingback`` the service posts the answer there."""
        deadline = self._engine.deadline(method_row(method), timeout)
        return self._drive(self._engine.submit(method, params, deadline, pingback))

    def result(self, task_id: str, method: str = "normal", *, timeout: float | None = None) -> Solution[Answer]:
        """Poll a submitted task until it settles; ``method`` tells how to read its answer."""
        row = method_row(method)
        return self._wait(str(task_id), row, self._engine.deadline(row, timeout))

    def balance(self) -> Decimal:
        return self._drive(self._engine.balance())

    def report(self, task_id: str, good: bool) -> bool:
        """Report an answer as good or bad; False when the service declined to record it."""
        return self._drive(self._engine.report(str(task_id), good))

    def threads(self) -> Threads:
        return self._drive(self._engine.threads())
