"""One log line and a count per request, and the id that ties them to the client's response.

Every request gets an id made here (``<process>-<n>``, sent back as ``X-Request-Id``); an id a client
or proxy sends is never used, so a log line's id is always one this process made and unique in it.

The line holds the request id, method, endpoint (the path, never the query: keys travel there), the
code (the protocol's code for in.php/res.php/solve.php, such as ``OK``, ``CAPCHA_NOT_READY`` or
``ERROR_WRONG_USER_KEY``; the HTTP status's text otherwise), the HTTP status, the duration and the
account id where one was authenticated. Never a key, token or image.

The protocol endpoints are the hot path (tens of thousands of polls a second), so what is done per
request there is small: a counter for the id, two dict updates, and one logger call whose text is
made only if a handler takes it. ``prometheus_client`` is updated from these counts once a second
(:meth:`Observer.flush`), not per request.
"""

from __future__ import annotations

import contextvars
import itertools
import json
import logging
import secrets
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from json.encoder import encode_basestring as _quote
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

# The account a protocol request authenticated as (set by Service.authenticate), for its log line.
ACCOUNT: contextvars.ContextVar[int | None] = contextvars.ContextVar("capgate_account", default=None)
REQUEST_ID = "capgate.request_id"  # scope keys: the request's id (bytes), and its protocol code
CODE = "capgate.code"
ACCESS = logging.getLogger("capgate.access")
FIELDS = ("request_id", "method", "endpoint", "status", "code", "ms", "account")
# The id is passed as its two parts (process, number) and joined only if the line is written.
TEXT_FORMAT = "%s-%x %s %s %d %s %.1fms account=%s"
STATIC_ENDPOINTS = frozenset({"/", "/admin", "/admin/", "/admin/session", "/healthz", "/human", "/metrics",
                              "/worker/v1/claim", "/in.php", "/res.php", "/solve.php"})


def endpoint_of(path: str) -> str:
    """A path as a metric label: the route, with ids and addresses as ``{id}``, so labels stay few."""
    if path in STATIC_ENDPOINTS:
        return path
    if path.startswith("/worker/v1/tasks/"):
        return "/worker/v1/tasks/{id}/" + path.rpartition("/")[2][:16]
    if path.startswith("/admin/api/v1/"):
        parts = path[len("/admin/api/v1/"):].split("/")
        named = [parts[0][:24]] + ["{id}" if i % 2 == 1 else p[:24] for i, p in enumerate(parts[1:], 1)]
        return "/admin/api/v1/" + "/".join(named)
    if path.startswith("/admin/static/"):
        return "/admin/static"
    return "other"


class Observer:
    """Request ids, counts and log lines for one app."""

    def __init__(self) -> None:
        self._prefix = secrets.token_hex(3)
        self._prefix_bytes = self._prefix.encode()
        self._next: Callable[[], int] = itertools.count(1).__next__
        self.counts: defaultdict[tuple[str, str], int] = defaultdict(int)
        self.seconds: defaultdict[str, float] = defaultdict(float)
        self.in_flight: defaultdict[str, int] = defaultdict(int)
        self.refresh()

    def refresh(self) -> None:
        """Read again whether request lines are written (the logger's level), as :meth:`take` does each
        second: asking the logger on every request would cost more than the rest of the bookkeeping."""
        self.logging = ACCESS.isEnabledFor(logging.INFO)

    def new_id(self) -> str:
        return f"{self._prefix}-{self._next():x}"

    async def protocol(self, endpoint: ASGIApp, scope: Scope, receive: Receive, send: Send) -> None:
        """in.php / res.php / solve.php: the endpoint adds the id header and leaves its code in ``scope``.

        ``ACCOUNT`` is not reset here: each request runs in a task of its own (the HTTP server's, or a test
        transport's), whose context starts without it."""
        start = time.perf_counter()
        number = self._next()
        scope[REQUEST_ID] = b"%s-%x" % (self._prefix_bytes, number)
        path: str = scope["path"]
        in_flight = self.in_flight
        in_flight[path] += 1
        try:
            await endpoint(scope, receive, send)
        finally:
            in_flight[path] -= 1
            took = time.perf_counter() - start
            code = scope.get(CODE, "-")
            self.counts[(path, code)] += 1
            self.seconds[path] += took
            if self.logging:
                _log_request((self._prefix, number, scope["method"], path, 200, code, took * 1000, ACCOUNT.get()))

    async def other(self, app: ASGIApp, scope: Scope, receive: Receive, send: Send) -> None:
        """Every other HTTP request (Starlette's): the id header added, the status read as it goes out."""
        start = time.perf_counter()
        number = self._next()
        header = (b"x-request-id", b"%s-%x" % (self._prefix_bytes, number))
        status = 500  # if the app fails before it answers, the server answers 500
        endpoint = endpoint_of(scope["path"])

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                message["headers"] = [*message.get("headers", ()), header]
            await send(message)

        self.in_flight[endpoint] += 1
        try:
            await app(scope, receive, sending)
        finally:
            self.in_flight[endpoint] -= 1
            took = time.perf_counter() - start
            code = str(status)
            self.counts[(endpoint, code)] += 1
            self.seconds[endpoint] += took
            if self.logging:
                _log_request((self._prefix, number, scope["method"], endpoint, status, code, took * 1000, None))

    def take(self) -> tuple[dict[tuple[str, str], int], dict[str, float], dict[str, int]]:
        """The counts since the last take (and the in-flight numbers now)."""
        self.refresh()
        counts, seconds = dict(self.counts), dict(self.seconds)
        self.counts.clear()
        self.seconds.clear()
        return counts, seconds, dict(self.in_flight)


def _log_request(args: tuple[Any, ...]) -> None:
    """One request line: a record made and handed to the handlers directly. ``Logger.info`` would also
    look up the caller's file and line in the stack, most of what a line costs, for nothing: a
    request line's place in the code is always this one."""
    ACCESS.handle(ACCESS.makeRecord(ACCESS.name, logging.INFO, "", 0, TEXT_FORMAT, args, None))


class JsonFormatter(logging.Formatter):
    """One JSON object per line: a request line's fields by name, any other record as its message."""

    def format(self, record: logging.LogRecord) -> str:
        args = record.args
        if record.name == ACCESS.name and isinstance(args, tuple) and len(args) == len(FIELDS) + 1:
            # Written out by hand: json.dumps of a dict costs several times more, on every request.
            fields: tuple[Any, ...] = args
            prefix, number, method, endpoint, status, code, ms, account = fields
            return (f'{{"time":{record.created:.3f},"level":"info","logger":"{ACCESS.name}",'
                    f'"request_id":"{prefix}-{number:x}","method":{_quote(str(method))},'
                    f'"endpoint":{_quote(str(endpoint))},"status":{int(status)},"code":{_quote(str(code))},'
                    f'"ms":{float(ms):.1f},"account":{"null" if account is None else int(account)}}}')
        entry: dict[str, Any] = {"time": round(record.created, 3), "level": record.levelname.lower(),
                                 "logger": record.name, "message": record.getMessage()}
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """``2026-12-02T11:39:00.123Z INFO capgate.access: <line>``; the date made once per second."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")
        self._second = -1
        self._stamp = ""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        second = int(record.created)
        if second != self._second:
            self._second, self._stamp = second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._stamp}.{int(record.msecs):03d}Z"

    def format(self, record: logging.LogRecord) -> str:
        if record.name == ACCESS.name and not record.exc_info:  # the request line, without the general machinery
            return f"{self.formatTime(record)} INFO {ACCESS.name}: {record.msg % record.args}"
        return super().format(record)


def configure_logging(log_format: str, level: str = "info", quiet: logging.Filter | None = None) -> None:
    """capgate's log lines as ``text`` or ``json``, from ``level`` up: request lines on stdout (where
    an HTTP server puts its access log), every other line on stderr. With ``json``, Granian's own lines
    too (those that ``quiet`` lets through)."""
    formatter: logging.Formatter = JsonFormatter() if log_format == "json" else TextFormatter()

    def attach(logger: logging.Logger, stream: Any, only: logging.Filter | None = None) -> None:
        for old in list(logger.handlers):
            logger.removeHandler(old)
        handler = logging.StreamHandler(stream)
        handler.setFormatter(formatter)
        if only is not None:
            handler.addFilter(only)
        logger.addHandler(handler)
        logger.propagate = False

    # Records skip the thread, process and multiprocessing names no formatter here shows: looking them up
    # is most of what making a record costs (half a request line's cost, measured).
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    capgate = logging.getLogger("capgate")
    attach(capgate, sys.stderr)
    attach(ACCESS, sys.stdout)
    capgate.setLevel(level.upper())
    if log_format == "json":
        attach(logging.getLogger("_granian"), sys.stderr, quiet)  # the HTTP server's own lines
