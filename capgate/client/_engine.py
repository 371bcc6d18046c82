"""The client's logic without I/O: what to send, how to read it, when to retry, when to poll.

Two shapes, both driven by :mod:`capgate.client.sync` and :mod:`capgate.client.aio`, which only move
bytes and sleep:

* *flows* (submit, balance, report, threads) are generators that yield :class:`Request` or
  :class:`Sleep` effects and get back a :class:`Reply` or :class:`Failure` (``None`` after a sleep);
  their return value is the result;
* the :class:`Poller` is a state machine holding every pending task of a client: ``plan(now)`` says
  which polls to send, ``feed(poll, received, now)`` reads their replies, ``drain()`` hands out the
  settled tasks. One poller serves any number of concurrent solves, so they share their polls.

Everything about the wire (codes, registry rows, answer formats) comes from :mod:`capgate.protocol`;
this module only decides. Retry rules are PROTOCOL.md §6, keyed on the code table's ``Advice``.
"""

from __future__ import annotations

import base64
import binascii
import functools
import os
import random
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Generic, TypeVar

from capgate.client.errors import (
    CapgateError,
    NetworkError,
    ProtocolError,
    ServiceError,
    SolveTimeout,
    error_for,
    local_error,
)
from capgate.protocol import answers, tasks, wire
from capgate.protocol.answers import Answer, AnswerFormatError, AnswerKind
from capgate.protocol.codes import OK_REPORT_RECORDED, Advice, C, Code, Family, lookup
from capgate.protocol.methods import BY_NAME, Method, canonical_params

T = TypeVar("T")
A = TypeVar("A", bound=Answer)

# Past the server's own deadline for the type, so its ERROR_CAPTCHA_UNSOLVABLE arrives before we give up.
DEADLINE_GRACE = 30.0
MAX_BACKOFF = 60.0
NETWORK_DELAY = 1.0
UNRECOGNISED_DELAY = 5.0  # the docs' rule for an HTML 500/502 page or anything else unrecognised
THREAD_DELAY = 2.0  # a thread frees up as soon as any task of the account settles
# Answer kinds whose plain form is the whole answer and has no "|" of its own, so a batch slot can be
# read as is. Token-with-UA loses its user agent in plain form; GeeTest seccodes and JSON objects can
# hold "|": those are polled one by one, in json mode.
BATCHABLE = frozenset({AnswerKind.TEXT, AnswerKind.TOKEN, AnswerKind.CELLS, AnswerKind.CLEARANCE})
APIS = ("in.php", "tasks")
# res.php actions and their JSON task API calls (threadsinfo has none).
TASK_CALLS = {"getbalance": "getBalance", "reportgood": "reportCorrect", "reportbad": "reportIncorrect"}


# ---------------------------------------------------------------------------------------------- effects


@dataclass(frozen=True)
class Request:
    """Send one HTTP request: GET with ``params`` in the query, POST with them as a form, or POST
    with ``json`` as its body when there is one (the JSON task API)."""

    method: str
    url: str
    params: Mapping[str, str]
    timeout: float  # seconds for the whole exchange, long-poll included
    json: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class Sleep:
    seconds: float


@dataclass(frozen=True)
class Reply:
    status: int
    body: bytes


@dataclass(frozen=True)
class Failure:
    """The transport failed: no reply at all."""

    reason: str


Effect = Request | Sleep
Received = Reply | Failure | None
Flow = Generator[Effect, Received, T]


# ---------------------------------------------------------------------------------------------- results


@dataclass(frozen=True)
class Solution(Generic[A]):
    """A solved task: the typed answer, the task id and the body (or batch slot) it was read from."""

    task_id: str
    method: str
    answer: A
    raw: str

    @property
    def value(self) -> str:
        """The answer spelled as the plain protocol spells it (text, token, ``[1,4,7]``, ...)."""
        return answers.encode_plain(self.answer)

    @property
    def user_agent(self) -> str | None:
        agent = getattr(self.answer, "user_agent", None)
        return agent if isinstance(agent, str) else None


@dataclass(frozen=True)
class Threads:
    threads: int
    working_threads: int

    @property
    def free(self) -> int:
        return max(0, self.threads - self.working_threads)


@dataclass(frozen=True)
class Options:
    server: str
    key: str
    timeout: float | None = None  # per solve; None: the type's server-side deadline plus DEADLINE_GRACE
    long_poll: float = 20.0  # wait=N sent to services that honour it (capgate caps it at 30 s)
    batch_window: float = 0.5  # pause between batch polls, so that more tasks settle per poll
    max_batch: int = 100  # ids per batch poll (capgate's limit)
    network_retries: int = 4
    call_timeout: float = 60.0  # deadline of balance/report/threads calls, retries included
    request_timeout: float = 30.0  # one HTTP exchange, on top of any long-poll wait
    api: str = "in.php"  # "in.php": in.php / res.php; "tasks": the JSON task API (createTask, ...)


ImageInput = str | bytes | bytearray | memoryview | os.PathLike[str]
ParamValue = str | int | float | Decimal | bool | None


def base_url(server: str) -> str:
    """``wire.base_url``: a bare host is ``http://`` on this machine, ``https://`` elsewhere."""
    text = wire.base_url(server)
    if text.endswith((".php", "/in", "/res")):
        raise ValueError(f"give the base URL, not an endpoint: {server!r}")
    return text


def method_row(name: str) -> Method:
    row = BY_NAME.get(name)
    if row is None:
        raise local_error(C.BAD_PARAMETERS, f"unknown method {name!r}; known: {', '.join(sorted(BY_NAME))}")
    return row


# ---------------------------------------------------------------------------------------------- reading


@dataclass(frozen=True)
class Verdict:
    """How a reply reads: an answer or a code to act on, something to retry, or a failure."""

    parsed: wire.Parsed | None = None
    code: Code | None = None
    retry: float | None = None  # first delay, when the same request is worth sending again
    error: CapgateError | None = None  # raised when not retried, or when the retries run out
    network: bool = False


def _first_delay(code: Code) -> float:
    # The code table's advice: "retry after 5 s" for capacity, "about 10 s" for server errors,
    # "back off for 10 s" after too many submits.
    if code.family is Family.SERVER or code.name == "MAX_USER_TURN" or code.name.startswith("ERROR: 10"):
        return 10.0
    return 5.0


def _with_task(error: CapgateError, task_id: str) -> CapgateError:
    copy = type(error)(str(error), code=error.code, task_id=task_id, raw=error.raw)
    return copy


class Engine:
    """Shared by every solve of one client, so what it learns about the service is learnt once."""

    def __init__(self, options: Options, clock: Callable[[], float], rng: random.Random | None = None) -> None:
        self.options = options
        self.clock = clock
        self.rng = rng or random.Random()
        self.base = base_url(options.server)
        # What the service supports, found out from replies (None: not known yet). Both are capgate
        # extensions: ``ids=`` batch polls and ``wait=N`` long-polls. Services that lack them either
        # answer a batch with an error (we then poll one by one) or ignore ``wait`` (we then poll at
        # the type's interval).
        self.batch: bool | None = None
        self.wait: bool | None = None
        if options.api not in APIS:
            raise ValueError(f"api is one of {', '.join(APIS)}, not {options.api!r}")
        self.tasks_api = options.api == "tasks"
        if self.tasks_api:
            self.batch = self.wait = False  # getTaskResult polls one task and answers at once
        # How many tasks of this client are still unsettled (set by the driver to its poller's count).
        self.pending: Callable[[], int] = lambda: 0

    def url(self, endpoint: str) -> str:
        return f"{self.base}/{endpoint}"

    def deadline(self, row: Method, timeout: float | None) -> float:
        span = timeout if timeout is not None else self.options.timeout
        return self.clock() + (span if span is not None else row.deadline + DEADLINE_GRACE)

    def delay(self, attempt: int, first: float) -> float:
        base = min(MAX_BACKOFF, first * 2.0 ** min(attempt, 16))
        # Never sooner than the service advised; spread so that many clients don't retry in step.
        return base * (1.0 + 0.25 * self.rng.random())

    def read(self, received: Received, bare: Callable[[str], bool] | None = None) -> Verdict:
        """``bare`` accepts success bodies that have no ``OK|`` in plain mode (getbalance, reports)."""
        if isinstance(received, Failure):
            reason = wire.tls_hint(self.base, received.reason)
            return Verdict(retry=NETWORK_DELAY, error=NetworkError(reason), network=True)
        if received is None:
            raise RuntimeError("a request effect was answered with nothing")
        parsed = tasks.parse(received.body) if self.tasks_api else wire.parse(received.body)
        if parsed.outcome is wire.Outcome.UNRECOGNISED and bare is not None and bare(parsed.raw.strip()):
            return Verdict(wire.Parsed(wire.Outcome.OK, parsed.raw.strip(), raw=parsed.raw))
        if parsed.outcome is wire.Outcome.UNRECOGNISED:
            snippet = " ".join(parsed.raw.split())[:120]
            error = ProtocolError(f"unrecognised reply (HTTP {received.status}): {snippet!r}", raw=parsed.raw)
            # A 4xx page means a wrong URL or a proxy refusing us: waiting will not fix it.
            if 400 <= received.status < 500 and received.status not in (408, 429):
                return Verdict(parsed, error=error)
            return Verdict(parsed, retry=UNRECOGNISED_DELAY, error=error)
        if parsed.outcome is wire.Outcome.ERROR:
            code = lookup(parsed.text)
            if code is None:
                return Verdict(parsed, error=error_for(parsed.text, raw=parsed.raw))
            if code.advice is Advice.RETRY_LATER:
                return Verdict(parsed, code, retry=_first_delay(code), error=error_for(code.name, raw=parsed.raw))
            return Verdict(parsed, code)
        return Verdict(parsed)

    # ------------------------------------------------------------------------------------------ flows

    def _pause(self, attempt: int, first: float, deadline: float, error: CapgateError) -> Flow[None]:
        wait = self.delay(attempt, first)
        if self.clock() + wait > deadline:
            raise error
        yield Sleep(wait)

    def exchange(self, request: Request, deadline: float,
                 bare: Callable[[str], bool] | None = None) -> Flow[Verdict]:
        """Send until the reply is an answer, ``CAPCHA_NOT_READY`` or a code that retrying won't
        change. Network failures, unrecognised bodies and retry-later codes are retried with backoff
        inside the deadline."""
        attempt = failures = 0
        while True:
            verdict = self.read((yield request), bare)
            if verdict.retry is None:
                if verdict.error is not None:
                    raise verdict.error
                return verdict
            assert verdict.error is not None
            if verdict.network:
                failures += 1
                if failures > self.options.network_retries:
                    raise verdict.error
            yield from self._pause(attempt, verdict.retry, deadline, verdict.error)
            attempt += 1

    def call(self, action: str, deadline: float | None = None, bare: Callable[[str], bool] | None = None,
             **params: str) -> Flow[Verdict]:
        """One res.php action, in json mode (or the JSON task API's call for it)."""
        when = deadline if deadline is not None else self.clock() + self.options.call_timeout
        if self.tasks_api:
            path = TASK_CALLS.get(action)
            if path is None:
                raise ProtocolError(f"the JSON task API has no call for {action}")
            return (yield from self.exchange(self.task_request(path, **params), when, bare))
        query = {"key": self.options.key, "action": action, "json": "1", **params}
        request = Request("GET", self.url("res.php"), query, self.options.request_timeout)
        return (yield from self.exchange(request, when, bare))

    def task_request(self, path: str, **fields: Any) -> Request:
        """A POST to the JSON task API: ``clientKey`` and ``fields``; an ``id`` is sent as ``taskId``."""
        body: dict[str, Any] = {"clientKey": self.options.key}
        for name, value in fields.items():
            if name == "id":
                body["taskId"] = int(value) if str(value).isdigit() else value
            else:
                body[name] = value
        return Request("POST", self.url(path), {}, self.options.request_timeout, json=body)

    def submit(self, method: str, params: Mapping[str, object], deadline: float,
               pingback: str | None = None) -> Flow[str]:
        """Build, send and retry an in.php submit; the task id."""
        row = method_row(method)
        form = yield from self.build(row, params, deadline)
        if self.tasks_api:
            try:
                task = tasks.task_object(row, form)
            except tasks.TaskRejected as exc:
                raise local_error(C.BAD_PARAMETERS, str(exc)) from None
            request = self.task_request("createTask", task=task, **({"callbackUrl": pingback} if pingback else {}))
        else:
            if pingback:
                form["pingback"] = pingback
            form.update(key=self.options.key, json="1")
            request = Request("POST", self.url("in.php"), form, self.options.request_timeout)
        attempt = free = 0
        while True:
            verdict = yield from self.exchange(request, deadline)
            parsed = verdict.parsed
            assert parsed is not None
            if parsed.outcome is wire.Outcome.OK and parsed.text.strip():
                return parsed.text.strip()
            code = verdict.code
            if code is None:
                raise ProtocolError(f"in.php answered {parsed.raw[:120]!r}", raw=parsed.raw)
            error = error_for(code.name, raw=parsed.raw)
            first = _first_delay(code)
            if code.advice is Advice.WAIT_THREADS:
                # ERROR_ZERO_BALANCE means either "no money" or "every thread busy" (PROTOCOL.md §0):
                # only threadsinfo tells them apart, and only busy threads are worth waiting for.
                busy = yield from self._threads_busy(deadline)
                if busy is None:
                    raise error  # no threadsinfo (2captcha): the code means what it says
                if not busy:
                    # A thread may have freed up between the two calls, all the more when this
                    # client's own tasks hold threads: only a repeated answer means no money.
                    free += 1
                    if free > 2 and not self.pending():
                        raise error
                first = THREAD_DELAY
            elif code.advice is not Advice.RESUBMIT:
                raise error
            yield from self._pause(attempt, first, deadline, error)
            attempt += 1

    def _threads_busy(self, deadline: float) -> Flow[bool | None]:
        try:
            # Its own short deadline: a service that answers threadsinfo with a page has none.
            info = yield from self.threads(min(deadline, self.clock() + 2 * UNRECOGNISED_DELAY))
        except (ServiceError, ProtocolError):
            return None
        return info.working_threads >= info.threads

    def threads(self, deadline: float | None = None) -> Flow[Threads]:
        verdict = yield from self.call("threadsinfo", deadline)
        parsed = verdict.parsed
        assert parsed is not None
        if verdict.code is not None:
            raise error_for(verdict.code.name, raw=parsed.raw)
        body = parsed.body or {}
        try:
            return Threads(int(body["threads"]), int(body["working_threads"]))
        except (KeyError, TypeError, ValueError):
            raise ProtocolError(f"threadsinfo without thread counts: {parsed.raw[:120]!r}",
                                raw=parsed.raw) from None

    def balance(self) -> Flow[Decimal]:
        verdict = yield from self.call("getbalance", bare=_is_decimal)
        parsed = verdict.parsed
        assert parsed is not None
        if verdict.code is not None or parsed.outcome is not wire.Outcome.OK:
            raise error_for(parsed.text, raw=parsed.raw)
        try:
            return Decimal(parsed.text.strip())
        except InvalidOperation:
            raise ProtocolError(f"getbalance answered {parsed.raw[:120]!r}", raw=parsed.raw) from None

    def report(self, task_id: str, good: bool) -> Flow[bool]:
        """True when recorded; False when the service declined (a report-family code)."""
        verdict = yield from self.call("reportgood" if good else "reportbad", bare=_is_recorded, id=task_id)
        parsed = verdict.parsed
        assert parsed is not None
        if parsed.outcome is wire.Outcome.OK:
            return True
        if verdict.code is not None and verdict.code.advice is Advice.IGNORE:
            return False
        raise error_for(parsed.text, task_id=task_id, raw=parsed.raw)

    # ------------------------------------------------------------------------------------------ params

    def build(self, row: Method, params: Mapping[str, object], deadline: float) -> Flow[dict[str, str]]:
        """The in.php form for a registry row: the row's wire name and selecting params, the caller's
        params under their canonical names, images as base64, required params checked before any
        request (raising what the service would answer)."""
        given = dict(params)
        image = given.pop("image", None)
        images = given.pop("images", None)
        form: dict[str, str] = {}
        for name, value in given.items():
            text = _wire_value(name, value)
            if text is not None:
                form[name] = text
        if image is not None:
            if "body" not in row.image_params and "body" not in row.media_params:  # media: audio's
                raise local_error(C.BAD_PARAMETERS, f"{row.name} takes no image")
            form["body"] = yield from self.image(image)
        if images is not None:
            slots = [name for name in row.image_params if name != "body"]
            if isinstance(images, (str, bytes)) or not isinstance(images, Sequence):
                raise local_error(C.BAD_PARAMETERS, f"{row.name}: images must be a list")
            if not slots or len(images) != len(slots):
                raise local_error(C.BAD_PARAMETERS, f"{row.name} takes {len(slots)} images, got {len(images)}")
            for name, source in zip(slots, images, strict=True):
                form[name] = _data_uri((yield from self.image(source)))
        form = canonical_params(form, row)
        form.update(row.sets)
        form["method"] = row.wire[0]
        for name in row.required:
            if not form.get(name, "").strip():
                raise local_error(row.missing_code(name), f"{row.name} needs {name!r}")
        return form

    def image(self, source: object) -> Flow[str]:
        """Base64 text (no line breaks) of an image given as bytes, a path, a data URI, a URL or
        base64 text."""
        if isinstance(source, (bytes, bytearray, memoryview)):
            return _b64(bytes(source))
        if isinstance(source, os.PathLike):
            return _b64(_read(Path(os.fspath(source))))
        if not isinstance(source, str):
            raise local_error(C.UPLOAD, f"not an image: a {type(source).__name__}")
        text = source.strip()
        if text[:5].lower() == "data:":
            header, sep, payload = text.partition(",")
            cleaned = _clean_b64(payload) if sep and header.lower().endswith(";base64") else None
            if cleaned is None:
                raise local_error(C.UPLOAD, "a data URI without base64 content")
            return cleaned
        if text.startswith(("http://", "https://")):
            received = yield Request("GET", text, {}, self.options.request_timeout)
            if not isinstance(received, Reply) or received.status != 200:
                why = received.reason if isinstance(received, Failure) else \
                    f"HTTP {received.status}" if isinstance(received, Reply) else "no reply"
                raise local_error(C.UPLOAD, f"could not download {text}: {why}")
            return _b64(received.body)
        if _is_file(text):
            return _b64(_read(Path(text)))
        cleaned = _clean_b64(text)
        if cleaned is None:
            raise local_error(C.UPLOAD, f"no such file, and not base64, a data URI or a URL: {text[:60]!r}")
        return cleaned


def _is_decimal(text: str) -> bool:
    try:
        return Decimal(text).is_finite()
    except InvalidOperation:
        return False


def _is_recorded(text: str) -> bool:
    return text == OK_REPORT_RECORDED


def _wire_value(name: str, value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, (str, int, float, Decimal)):
        return str(value)
    raise local_error(C.BAD_PARAMETERS, f"{name}: cannot send a {type(value).__name__}")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _clean_b64(text: str) -> str | None:
    cleaned = "".join(text.split())
    if not cleaned:
        return None
    try:
        base64.b64decode(cleaned, validate=True)
    except (binascii.Error, ValueError):
        return None
    return cleaned


def _is_file(text: str) -> bool:
    # Long base64 strings are not paths; asking the OS about them can fail with "name too long".
    if len(text) > 4096:
        return False
    try:
        return Path(text).is_file()
    except (OSError, ValueError):
        return False


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise local_error(C.UPLOAD, f"cannot read {path}: {exc.strerror or exc}") from None


_MAGIC = ((b"\x89PNG", "image/png"), (b"GIF8", "image/gif"), (b"\xff\xd8", "image/jpeg"), (b"BM", "image/bmp"))


def _data_uri(b64: str) -> str:
    """BLS cells travel as data URIs (PROTOCOL.md §2)."""
    head = base64.b64decode(b64[:24] + "=" * (-len(b64[:24]) % 4), validate=False)
    mime = next((kind for magic, kind in _MAGIC if head.startswith(magic)), "image/png")
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        mime = "image/webp"
    return f"data:{mime};base64,{b64}"


# ---------------------------------------------------------------------------------------------- poller


@dataclass
class _Task:
    task_id: str
    row: Method
    deadline: float
    due: float
    attempt: int = 0
    failures: int = 0
    in_flight: bool = False
    alone: bool = False  # poll by itself: its answer could not be read from a batch


@dataclass(frozen=True)
class Poll:
    task_ids: tuple[str, ...]
    request: Request
    sent_at: float
    wait: float  # the wait=N sent, 0 for none

    @property
    def batch(self) -> bool:
        return "ids" in self.request.params


@dataclass(frozen=True)
class Settled:
    task_id: str
    solution: Solution[Answer] | None = None
    error: CapgateError | None = None


class Poller:
    """Every pending task of one client and the polls that will settle them.

    A task's first poll is due after its type's ``initial_wait``. Due tasks whose answers survive a
    batch are polled together with ``ids=`` (filled up with not-yet-due ones: a slot costs nothing),
    the others alone with ``id=``; each poll carries ``wait=N``. Without long-poll support a task is
    polled every ``poll_interval``; with it, right after each reply (alone) or after ``batch_window``
    (batched, since a batch long-poll returns as soon as any one of its tasks settles).
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.tasks: dict[str, _Task] = {}
        self._settled: list[Settled] = []
        self._probe: str | None = None  # the task whose poll finds out about wait=N

    def add(self, task_id: str, row: Method, deadline: float, now: float) -> None:
        if self.engine.wait is None and self._probe is None:
            # Whether the service holds a wait=N poll is found out by polling one task right after
            # its submit: held (capgate) it costs nothing; answered at once, it costs one request.
            self._probe, first = task_id, 0.0
        elif self.engine.wait:
            first = self._quick_gap(row)
        else:
            first = row.initial_wait
        self.tasks[task_id] = _Task(task_id, row, deadline, min(now + first, deadline))

    def _quick_gap(self, row: Method) -> float:
        return self.engine.options.batch_window if row.answer in BATCHABLE else 0.0

    def discard(self, task_id: str) -> None:
        self.tasks.pop(task_id, None)
        if self._probe == task_id:
            self._probe = None

    def __bool__(self) -> bool:
        return bool(self.tasks)

    def drain(self) -> list[Settled]:
        settled, self._settled = self._settled, []
        return settled

    def next_wake(self) -> float | None:
        idle = [min(t.due, t.deadline) for t in self.tasks.values() if not t.in_flight]
        return min(idle) if idle else None

    def _settle(self, task: _Task, solution: Solution[Answer] | None = None,
                error: CapgateError | None = None) -> None:
        self.tasks.pop(task.task_id, None)
        self._settled.append(Settled(task.task_id, solution, error))

    def _batchable(self, task: _Task) -> bool:
        return self.engine.batch is not False and not task.alone and task.row.answer in BATCHABLE

    def plan(self, now: float) -> list[Poll]:
        idle = [t for t in self.tasks.values() if not t.in_flight]
        for task in idle:
            if now >= task.deadline:
                self._settle(task, error=SolveTimeout(
                    f"no answer within the deadline [task {task.task_id}]", task_id=task.task_id))
        idle = [t for t in idle if t.task_id in self.tasks]
        due = sorted((t for t in idle if t.due <= now), key=lambda t: t.due)
        if not due:
            return []
        polls = [self._single(t, now) for t in due if not self._batchable(t)]
        group = [t for t in due if self._batchable(t)]
        spare = sorted((t for t in idle if t.due > now and self._batchable(t)), key=lambda t: t.due)
        size = max(1, self.engine.options.max_batch)
        while group:
            chunk, group = group[:size], group[size:]
            if not group and len(chunk) < size:
                room = size - len(chunk)
                chunk, spare = chunk + spare[:room], spare[room:]
            polls.append(self._single(chunk[0], now) if len(chunk) == 1 else self._batch(chunk, now))
        return polls

    def _wait_for(self, tasks: Sequence[_Task], now: float) -> float:
        if self.engine.wait is False:
            return 0.0
        wait = min([self.engine.options.long_poll] + [t.deadline - now for t in tasks])
        return float(int(wait)) if wait >= 1 else 0.0

    def _poll(self, tasks: Sequence[_Task], now: float, **params: str) -> Poll:
        if self.engine.tasks_api:
            for task in tasks:
                task.in_flight = True
            request = self.engine.task_request("getTaskResult", **params)
            return Poll(tuple(t.task_id for t in tasks), request, now, 0.0)
        wait = self._wait_for(tasks, now)
        query = {"key": self.engine.options.key, "action": "get", "json": "1", **params}
        if wait:
            query["wait"] = str(int(wait))
        for task in tasks:
            task.in_flight = True
        request = Request("GET", self.engine.url("res.php"), query, self.engine.options.request_timeout + wait)
        return Poll(tuple(t.task_id for t in tasks), request, now, wait)

    def _single(self, task: _Task, now: float) -> Poll:
        return self._poll([task], now, id=task.task_id)

    def _batch(self, tasks: Sequence[_Task], now: float) -> Poll:
        return self._poll(tasks, now, ids=",".join(t.task_id for t in tasks))

    # ------------------------------------------------------------------------------------------ replies

    def feed(self, poll: Poll, received: Received, now: float) -> None:
        probe = self._probe is not None and self._probe in poll.task_ids
        self._feed(poll, received, now)
        if probe:
            self._probe = None
            answered = isinstance(received, Reply) and self.engine.read(received).retry is None
            if answered and self.engine.wait is not False:
                # Held, or answered with a task settled meanwhile (which a service without wait=N
                # can't do this soon after a submit): stop waiting out initial waits.
                for task in self.tasks.values():
                    if not task.in_flight:
                        task.due = min(task.due, now + self._quick_gap(task.row))

    def _feed(self, poll: Poll, received: Received, now: float) -> None:
        tasks = [self.tasks[i] for i in poll.task_ids if i in self.tasks]
        for task in tasks:
            task.in_flight = False
        verdict = self.engine.read(received)
        parsed = verdict.parsed
        if poll.batch and parsed is not None and parsed.outcome is not wire.Outcome.OK:
            code = verdict.code
            if code is not None and code.family is Family.AUTH:
                for task in tasks:
                    self._settle(task, error=error_for(code.name, task_id=task.task_id, raw=parsed.raw))
                return
            if not (verdict.retry is not None and self.engine.batch):
                # An error, "not ready" or a page in answer to a batch: the service doesn't take
                # ``ids=`` (or not these ids). Ask again one by one, at once. Only a transient failure
                # of a service known to batch is retried as a batch.
                self._unbatch(tasks, now)
                return
        if verdict.retry is not None:
            for task in tasks:
                self._retry(task, verdict, now)
            return
        if verdict.error is not None:
            for task in tasks:
                self._settle(task, error=_with_task(verdict.error, task.task_id))
            return
        assert parsed is not None
        if poll.batch:
            self._feed_batch(poll, parsed, now)
        elif tasks:
            self._feed_one(poll, tasks[0], parsed, now)

    def _unbatch(self, tasks: Sequence[_Task], now: float) -> None:
        if self.engine.batch is None:
            self.engine.batch = False
        for task in tasks:
            task.alone = True
            task.due = now

    def _retry(self, task: _Task, verdict: Verdict, now: float) -> None:
        assert verdict.error is not None and verdict.retry is not None
        if verdict.network:
            task.failures += 1
        wait = self.engine.delay(task.attempt, verdict.retry)
        task.attempt += 1
        if task.failures > self.engine.options.network_retries or now + wait > task.deadline:
            self._settle(task, error=_with_task(verdict.error, task.task_id))
        else:
            task.due = now + wait

    def _held(self, poll: Poll, now: float) -> bool:
        """Whether a reply with every task still pending came after about the wait=N asked for."""
        return bool(poll.wait) and now - poll.sent_at >= poll.wait / 2

    def _again(self, tasks: Sequence[_Task], poll: Poll, now: float, *, all_pending: bool) -> None:
        held = self._held(poll, now)
        if all_pending and poll.wait and self.engine.wait is None:
            self.engine.wait = held
        # Long-polls: ask again at once (alone) or after the batch window (a batch returns as soon
        # as any task settles). A reply that should have been held but wasn't: back to intervals.
        quick = bool(poll.wait) and self.engine.wait is not False and (held or not all_pending)
        for task in tasks:
            task.attempt = 0
            if quick:
                task.due = now + (self.engine.options.batch_window if poll.batch else 0.0)
            else:
                task.due = now + task.row.poll_interval

    def _feed_one(self, poll: Poll, task: _Task, parsed: wire.Parsed, now: float) -> None:
        if parsed.outcome is wire.Outcome.NOT_READY:
            self._again([task], poll, now, all_pending=True)
        elif parsed.outcome is wire.Outcome.OK and self.engine.tasks_api:
            found = (parsed.body or {}).get("solution")
            self._answer(task, functools.partial(tasks.answer_of, task.row.answer, found or {}), parsed.raw)
        elif parsed.outcome is wire.Outcome.OK:
            self._answer(task, functools.partial(parsed.answer, task.row.answer), parsed.raw)
        else:
            self._settle(task, error=error_for(parsed.text, task_id=task.task_id, raw=parsed.raw))

    def _answer(self, task: _Task, decode: Callable[[], Answer], raw: str) -> None:
        try:
            answer = decode()
        except AnswerFormatError as exc:
            self._settle(task, error=ProtocolError(f"{task.row.name} answer: {exc}", task_id=task.task_id,
                                                   raw=raw))
            return
        self._settle(task, Solution(task.task_id, task.row.name, answer, raw))

    def _feed_batch(self, poll: Poll, parsed: wire.Parsed, now: float) -> None:
        slots = wire.split_batch(parsed.text, len(poll.task_ids))
        tasks = [self.tasks[i] for i in poll.task_ids if i in self.tasks]
        if slots is None:
            # An answer held a "|" (more slots than ids: the service did batch), or the service
            # answered something else (fewer). Either way these tasks go alone.
            if self.engine.batch is None:
                self.engine.batch = len(parsed.text.split("|")) > len(poll.task_ids)
            for task in tasks:
                task.alone = True
                task.due = now
            return
        self.engine.batch = True
        pending: list[_Task] = []
        for task_id, slot in zip(poll.task_ids, slots, strict=True):
            found = self.tasks.get(task_id)
            if found is None:
                continue
            task = found
            item = wire.parse(slot)
            if item.outcome is wire.Outcome.NOT_READY:
                pending.append(task)
            elif item.outcome is wire.Outcome.ERROR:
                code = lookup(item.text)
                if code is not None and code.advice is Advice.RETRY_LATER:
                    self._retry(task, Verdict(item, code, _first_delay(code), error_for(code.name)), now)
                else:
                    self._settle(task, error=error_for(item.text, task_id=task_id, raw=slot))
            else:
                self._answer(task, functools.partial(answers.decode_plain, task.row.answer, slot), slot)
        self._again(pending, poll, now, all_pending=len(pending) == len(slots))


def expect(settled: Settled) -> Solution[Answer]:
    if settled.error is not None:
        raise settled.error
    assert settled.solution is not None
    return settled.solution


__all__ = [
    "APIS", "BATCHABLE", "Effect", "Engine", "Failure", "Flow", "ImageInput", "Options",
    "ParamValue", "Poll", "Poller", "Received", "Reply", "Request", "Settled", "Sleep", "Solution",
    "Threads", "expect", "method_row",
]
