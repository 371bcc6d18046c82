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
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

# The account a protocol request authenticated as (set by Service.authenticate), for its log line.
ACCOUNT: contextvars.ContextVar[int | None] = contextvars.ContextVar("capgate_account", default=None)
REQUEST_ID = "capgate.request_id"  # scope keys: the request's id (bytes), and its protocol code
CODE = "capgate.code"
ACCESS = logging.getLogger("capgate.access")
FIELDS = ("request_id", "method", "endpoint", "status", "code", "ms", "account")
TEXT_FORMAT = "%s %s %s %d %s %.1fms account=%s"
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
        self._next: Callable[[], int] = itertools.count(1).__next__
        self.counts: defaultdict[tuple[str, str], int] = defaultdict(int)
        self.seconds: defaultdict[str, float] = defaultdict(float)
        self.in_flight: defaultdict[str, int] = defaultdict(int)

    def new_id(self) -> str:
        return f"{self._prefix}-{self._next():x}"

    async def protocol(self, endpoint: ASGIApp, scope: Scope, receive: Receive, send: Send) -> None:
        """in.php / res.php / solve.php: the endpoint adds the id header and leaves its code in ``scope``."""
        start = time.perf_counter()
        rid = self.new_id()
        scope[REQUEST_ID] = rid.encode()
        path: str = scope["path"]
        ACCOUNT.set(None)
        self.in_flight[path] += 1
        try:
            await endpoint(scope, receive, send)
        finally:
            self.in_flight[path] -= 1
            took = time.perf_counter() - start
            code = scope.get(CODE, "-")
            self.counts[(path, code)] += 1
            self.seconds[path] += took
            ACCESS.info(TEXT_FORMAT, rid, scope["method"], path, 200, code, took * 1000, ACCOUNT.get())

    async def other(self, app: ASGIApp, scope: Scope, receive: Receive, send: Send) -> None:
        """Every other HTTP request (Starlette's): the id header added, the status read as it goes out."""
        start = time.perf_counter()
        rid = self.new_id()
        header = (b"x-request-id", rid.encode())
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
            ACCESS.info(TEXT_FORMAT, rid, scope["method"], endpoint, status, code, took * 1000, None)

    def take(self) -> tuple[dict[tuple[str, str], int], dict[str, float], dict[str, int]]:
        """The counts since the last take (and the in-flight numbers now)."""
        counts, seconds = dict(self.counts), dict(self.seconds)
        self.counts.clear()
        self.seconds.clear()
        return counts, seconds, dict(self.in_flight)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: a request line's fields by name, any other record as its message."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {"time": round(record.created, 3), "level": record.levelname.lower(),
                                 "logger": record.name}
        if record.name == ACCESS.name and isinstance(record.args, tuple) and len(record.args) == len(FIELDS):
            entry.update(zip(FIELDS, record.args, strict=True))
            entry["ms"] = round(float(entry["ms"]), 1)
        else:
            entry["message"] = record.getMessage()
            if record.exc_info:
                entry["error"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def configure_logging(log_format: str, level: str = "info") -> None:
    """capgate's own log lines (request lines, errors) on stderr, as ``text`` or ``json``, at ``level``."""
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("capgate")
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    root.propagate = False
