"""capgate.client against a fake compatible service on ``httpx.MockTransport``, on a fake clock.

The fake renders its bodies with the protocol core's own encoders (``capgate.protocol.wire``), in json
mode when asked (or always plain, as some services answer); nothing here sleeps for real.
"""

from __future__ import annotations

import asyncio
import base64
import inspect
import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import httpx
import pytest

from capgate.client import (
    AsyncClient,
    AuthError,
    BadInputError,
    CapgateError,
    Client,
    FundsError,
    NetworkError,
    ProtocolError,
    ReportError,
    ServerError,
    ServiceError,
    Solution,
    SolveTimeout,
    UnsolvableError,
    errors,
)
from capgate.client._engine import BATCHABLE, Engine, Options, Reply, Sleep
from capgate.client._methods import Methods
from capgate.protocol import answers, wire
from capgate.protocol.answers import (
    AngleAnswer,
    Answer,
    AnswerKind,
    CellsAnswer,
    ClearanceAnswer,
    CoordinatesAnswer,
    GeeTestAnswer,
    ObjectAnswer,
    TextAnswer,
    TokenAnswer,
)
from capgate.protocol.codes import CODES, NOT_READY, OK_REPORT_RECORDED, Advice, Endpoint, Family
from capgate.protocol.methods import BY_NAME, METHODS, Method

KEY = "0123456789abcdef0123456789abcdef"
BASE = "http://capgate.test/api"
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 2

SAMPLES: dict[AnswerKind, Answer] = {
    AnswerKind.TEXT: TextAnswer("ab|c 12"),
    AnswerKind.TOKEN: TokenAnswer("03AGdBq24PBCbw-_x.y"),
    AnswerKind.TOKEN_UA: TokenAnswer("03AFcWeA6", "Mozilla/5.0 (X11; Linux x86_64) Gecko; rv:1"),
    AnswerKind.GEETEST: GeeTestAnswer("c0ffee", "v4l1d", "s3cc0de|jordan"),
    AnswerKind.CLEARANCE: ClearanceAnswer("cf.abc-123", "Mozilla/5.0 (Windows NT 10.0; Win64; x64) Chrome"),
    AnswerKind.CELLS: CellsAnswer((1, 4, 7)),
    AnswerKind.OBJECT: ObjectAnswer({"answer": "0xabc", "challenge_id": "a-b|c"}),
    AnswerKind.COORDINATES: CoordinatesAnswer(((39, 59), (252, 72))),
    AnswerKind.ANGLE: AngleAnswer(120),
}


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += max(0.0, seconds)

    async def asleep(self, seconds: float) -> None:
        # Let everything runnable run first, and only move time if the sleep wasn't cancelled.
        for _ in range(3):
            await asyncio.sleep(0)
        self.sleep(seconds)


@dataclass
class FakeTask:
    task_id: str
    method: Method
    params: dict[str, str]
    ready_at: float
    answer: Answer | None
    error: str | None = None


@dataclass
class FakeService:
    """A CaptchaAI/2captcha-compatible service; ``batch`` and ``wait`` switch capgate's extensions."""

    clock: FakeClock
    batch: bool = True
    wait: bool = True
    plain: bool = False  # answer plain text even when json=1 is asked
    solve_time: float = 3.0
    threads: tuple[int, int] | None = (5, 0)  # None: no threadsinfo action
    in_script: deque[str | tuple[int, str] | Exception] = field(default_factory=deque)
    res_script: deque[str | tuple[int, str] | Exception] = field(default_factory=deque)
    answers: dict[str, Answer] = field(default_factory=dict)  # method name -> answer
    requests: list[httpx.Request] = field(default_factory=list)
    tasks: dict[str, FakeTask] = field(default_factory=dict)
    next_id: int = 73548291

    def params(self, request: httpx.Request) -> dict[str, str]:
        values = dict(parse_qsl(request.url.query.decode(), keep_blank_values=True))
        if request.method == "POST":
            values.update(parse_qsl(request.content.decode(), keep_blank_values=True))
        return values

    @property
    def polls(self) -> list[dict[str, str]]:
        return [p for p in (self.params(r) for r in self.requests) if p.get("action") == "get"]

    @property
    def submits(self) -> list[dict[str, str]]:
        return [self.params(r) for r in self.requests if r.url.path.endswith("/in.php")]

    def render(self, reply: wire.Reply, params: dict[str, str]) -> httpx.Response:
        body, media = reply.render(params.get("json") == "1" and not self.plain)
        return httpx.Response(200, content=body, headers={"content-type": media})

    def scripted(self, item: str | tuple[int, str] | Exception, params: dict[str, str]) -> httpx.Response:
        if isinstance(item, Exception):
            raise item
        if isinstance(item, tuple):
            return httpx.Response(item[0], text=item[1])
        if item.startswith(("<", "{")):
            return httpx.Response(200, text=item)
        if item.startswith("OK|"):
            return self.render(wire.ok(item[3:]), params)
        return self.render(wire.code(item), params)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        params = self.params(request)
        if not request.url.path.startswith("/api/"):
            return httpx.Response(200, content=PNG)  # an image download
        if request.url.path.endswith("/in.php"):
            if self.in_script:
                return self.scripted(self.in_script.popleft(), params)
            return self.submit(params)
        if self.res_script and params.get("action") == "get":
            return self.scripted(self.res_script.popleft(), params)
        return self.result(params)

    def submit(self, params: dict[str, str]) -> httpx.Response:
        from capgate.protocol.methods import canonical_params, resolve

        row = resolve(canonical_params(params))
        if row is None:
            return self.render(wire.code("ERROR_BAD_PARAMETERS"), params)
        task_id = str(self.next_id)
        self.next_id += 7919
        answer = self.answers.get(row.name, SAMPLES[row.answer])
        self.tasks[task_id] = FakeTask(task_id, row, params, self.clock.now + self.solve_time, answer)
        return self.render(wire.ok(task_id), params)

    def settled(self, task: FakeTask | None) -> bool:
        return task is None or self.clock.now >= task.ready_at

    def reply_for(self, task: FakeTask | None) -> wire.Reply:
        if task is None:
            return wire.code("ERROR_WRONG_CAPTCHA_ID")
        if not self.settled(task):
            return wire.code(NOT_READY)
        if task.error:
            return wire.code(task.error)
        assert task.answer is not None
        kind = task.method.answer  # the answer as a server stores it, then renders it
        return wire.solved(kind, answers.dumps(answers.encode_json(task.answer, kind)))

    def hold(self, tasks: list[FakeTask | None], params: dict[str, str], any_of: bool) -> None:
        wait = float(params.get("wait") or 0)
        if not self.wait or wait <= 0:
            return
        pending = [t.ready_at for t in tasks if t is not None and not self.settled(t)]
        if not pending or (any_of and len(pending) < len(tasks)):
            return
        until = min(pending) if any_of else max(pending)
        self.clock.now = min(until, self.clock.now + wait)

    def result(self, params: dict[str, str]) -> httpx.Response:
        action = params.get("action")
        if action == "get" and params.get("ids"):
            if not self.batch:
                return self.render(wire.code("ERROR_WRONG_CAPTCHA_ID"), params)
            tasks = [self.tasks.get(i) for i in params["ids"].split(",")]
            self.hold(tasks, params, any_of=True)
            slots = []
            for task in tasks:
                reply = self.reply_for(task)
                slots.append(reply.plain[3:] if reply.status == 1 else reply.plain)
            return self.render(wire.batch(slots), params)
        if action == "get":
            task = self.tasks.get(params.get("id", ""))
            self.hold([task], params, any_of=False)
            return self.render(self.reply_for(task), params)
        if action == "getbalance":
            return self.render(wire.bare("12.345"), params)
        if action == "threadsinfo" and self.threads is not None:
            threads, working = self.threads
            return self.render(wire.Reply(1, "OK", {"request": "OK", "threads": threads,
                                                    "working_threads": working}), params)
        if action in ("reportgood", "reportbad"):
            return self.render(wire.bare(OK_REPORT_RECORDED), params)
        return self.render(wire.code("ERROR_EMPTY_ACTION"), params)


@pytest.fixture()
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture()
def service(clock: FakeClock) -> FakeService:
    return FakeService(clock)


def sync_client(service: FakeService, **kwargs: Any) -> Client:
    return Client(BASE, KEY, transport=httpx.MockTransport(service), clock=service.clock,
                  sleep=service.clock.sleep, rng=random.Random(4), **kwargs)


def async_client(service: FakeService, **kwargs: Any) -> AsyncClient:
    return AsyncClient(BASE, KEY, transport=httpx.MockTransport(service), clock=service.clock,
                       sleep=service.clock.asleep, rng=random.Random(4), **kwargs)


def required(row: Method) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for name in row.required:
        if name == "body":
            params["image"] = PNG
        elif name.startswith("image_base64_"):
            params["images"] = [PNG] * 9
        else:
            params[name] = f"x-{name}"
    return params


def expected(kind: AnswerKind, plain: bool) -> Answer:
    answer = SAMPLES[kind]
    if plain and isinstance(answer, TokenAnswer):
        return TokenAnswer(answer.token)  # plain mode carries no user agent (answers.py)
    return answer


# ---------------------------------------------------------------------------------------------- formats


@pytest.mark.parametrize("plain", [False, True], ids=["json", "plain"])
@pytest.mark.parametrize("row", METHODS, ids=lambda m: m.name)
def test_every_answer_format_is_read_typed(service: FakeService, row: Method, plain: bool) -> None:
    service.plain = plain
    with sync_client(service) as client:
        solution = client.solve(row.name, **required(row))
    assert solution.answer == expected(row.answer, plain)
    assert solution.method == row.name
    assert solution.task_id in service.tasks
    assert solution.raw.startswith("OK|" if plain else "{")  # the body it was read from
    submit = service.submits[0]
    assert submit["method"] == row.wire[0]
    assert submit["json"] == "1" and submit["key"] == KEY
    for name, value in row.sets.items():
        assert submit[name] == value


@pytest.mark.parametrize("row", METHODS, ids=lambda m: m.name)
async def test_every_answer_format_async_batched(service: FakeService, row: Method) -> None:
    service.answers[row.name] = SAMPLES[row.answer]
    async with async_client(service) as client:
        solutions = await asyncio.gather(*(client.solve(row.name, **required(row), tag=str(i))
                                           for i in range(3)))
    assert [s.answer for s in solutions] == [SAMPLES[row.answer]] * 3


def test_first_bar_splits_plain_and_user_agent_marker_not_semicolons(service: FakeService) -> None:
    service.plain = True
    service.answers["cloudflare_challenge"] = ClearanceAnswer("a;b=c", "UA; with;semicolons")
    service.answers["normal"] = TextAnswer("x|y|z")
    with sync_client(service) as client:
        clearance = client.cloudflare_challenge("https://a.test/", "1.2.3.4:8080", "HTTP")
        text = client.normal(PNG)
    assert clearance.answer == ClearanceAnswer("a;b=c", "UA; with;semicolons")
    assert clearance.user_agent == "UA; with;semicolons"
    assert text.answer.text == "x|y|z"
    assert text.value == "x|y|z"


def test_task_id_as_json_integer(service: FakeService) -> None:
    service.in_script.append('{"status":1,"request":73548291}')
    service.res_script.append('{"status":1,"request":"abc"}')
    with sync_client(service) as client:
        assert client.normal(PNG).task_id == "73548291"


def test_solution_value_and_user_agent() -> None:
    cells = Solution("1", "grid", CellsAnswer((2, 3)), "")
    assert cells.value == "[2,3]" and cells.user_agent is None
    token = Solution("1", "captchafox", TokenAnswer("t", "UA"), "")
    assert token.value == "t" and token.user_agent == "UA"


# ---------------------------------------------------------------------------------------------- codes

SUBMIT_CODES = [c for c in CODES.values() if c.endpoints & Endpoint.IN]
POLL_CODES = [c for c in CODES.values() if c.endpoints & Endpoint.RES and c.family is not Family.PENDING]


def test_every_family_but_pending_has_an_exception_class() -> None:
    assert set(errors.BY_FAMILY) == set(Family) - {Family.PENDING}
    doc = errors.__doc__ or ""
    for cls in (*errors.BY_FAMILY.values(), ServiceError, NetworkError, ProtocolError, SolveTimeout):
        assert cls.__name__ in doc
        assert issubclass(cls, CapgateError)
    assert issubclass(SolveTimeout, TimeoutError)


@pytest.mark.parametrize("plain", [False, True], ids=["json", "plain"])
@pytest.mark.parametrize("code", SUBMIT_CODES, ids=lambda c: c.name)
def test_every_submit_code_raises_its_family(service: FakeService, code: Any, plain: bool) -> None:
    service.plain = plain
    service.threads = (5, 0)  # free threads: ERROR_ZERO_BALANCE means no money
    service.in_script.extend([code.name] * 50)
    with sync_client(service, timeout=60) as client, pytest.raises(errors.BY_FAMILY[code.family]) as caught:
        client.turnstile("sk", "https://a.test/")
    assert caught.value.code == code.name
    # Free threads (json threadsinfo) make ERROR_ZERO_BALANCE worth asking twice more; a service
    # without a readable threadsinfo (plain here) means no money at once.
    retried = code.advice in (Advice.RETRY_LATER, Advice.RESUBMIT) or \
        (code.advice is Advice.WAIT_THREADS and not plain)
    submits = len(service.submits)
    assert submits > 1 if retried else submits == 1
    assert service.polls == []


@pytest.mark.parametrize("plain", [False, True], ids=["json", "plain"])
@pytest.mark.parametrize("code", POLL_CODES, ids=lambda c: c.name)
def test_every_poll_code_raises_its_family(service: FakeService, code: Any, plain: bool) -> None:
    service.plain = plain
    service.res_script.extend([NOT_READY, code.name] + [code.name] * 50)
    with sync_client(service, timeout=60) as client, pytest.raises(errors.BY_FAMILY[code.family]) as caught:
        client.turnstile("sk", "https://a.test/")
    assert caught.value.code == code.name
    assert caught.value.task_id in service.tasks
    polls = len(service.polls)
    assert polls > 2 if code.advice is Advice.RETRY_LATER else polls == 2


@pytest.mark.parametrize("body", ["ERROR_SOMETHING_NEW", '{"status":0,"request":"ERROR_SOMETHING_NEW"}'])
def test_unknown_code_is_a_service_error(service: FakeService, body: str) -> None:
    service.in_script.append(body)
    with sync_client(service) as client, pytest.raises(ServiceError) as caught:
        client.turnstile("sk", "https://a.test/")
    assert type(caught.value) is ServiceError
    assert caught.value.code == "ERROR_SOMETHING_NEW"


def test_not_ready_is_never_an_exception(service: FakeService) -> None:
    service.wait = False
    service.solve_time = 170.0
    with sync_client(service) as client:
        solution = client.turnstile("sk", "https://a.test/")
    assert solution.answer == SAMPLES[AnswerKind.TOKEN]
    assert len(service.polls) > 10


# ---------------------------------------------------------------------------------------------- retries


def test_no_slot_retried_with_growing_jittered_backoff(service: FakeService, clock: FakeClock) -> None:
    service.in_script.extend(["ERROR_NO_SLOT_AVAILABLE"] * 3)
    with sync_client(service) as client:
        client.turnstile("sk", "https://a.test/")
    backoff = clock.sleeps[:3]
    assert len(service.submits) == 4
    assert 5.0 <= backoff[0] <= 6.25 and 10.0 <= backoff[1] <= 12.5 and 20.0 <= backoff[2] <= 25.0
    assert len(set(backoff)) == 3


def test_retries_stop_at_the_deadline(service: FakeService, clock: FakeClock) -> None:
    service.in_script.extend(["ERROR_NO_SLOT_AVAILABLE"] * 100)
    start = clock.now
    with sync_client(service, timeout=40) as client, pytest.raises(errors.CapacityError) as caught:
        client.turnstile("sk", "https://a.test/")
    assert clock.now - start <= 40
    assert caught.value.code == "ERROR_NO_SLOT_AVAILABLE" and not isinstance(caught.value, FundsError)


def test_busy_threads_are_waited_for(service: FakeService) -> None:
    service.threads = (5, 5)
    service.in_script.extend(["ERROR_ZERO_BALANCE"] * 2)
    with sync_client(service) as client:
        client.turnstile("sk", "https://a.test/")
    actions = [service.params(r).get("action") for r in service.requests]
    assert actions.count("threadsinfo") == 2
    assert len(service.submits) == 3


@pytest.mark.parametrize(("threads", "submits"), [((5, 1), 3), (None, 1)], ids=["free-threads", "no-threadsinfo"])
def test_zero_balance_without_busy_threads_stops(service: FakeService, threads: tuple[int, int] | None,
                                                 submits: int) -> None:
    service.threads = threads
    service.in_script.extend(["ERROR_ZERO_BALANCE"] * 5)
    with sync_client(service) as client, pytest.raises(FundsError):
        client.turnstile("sk", "https://a.test/")
    # Free threads right after the refusal may be a thread freed in between: asked again, twice.
    assert len(service.submits) == submits


def drive(flow: Any, service: FakeService) -> Any:
    """Run an engine flow by hand: requests to the fake service, sleeps on its clock."""
    try:
        effect = next(flow)
        while True:
            if isinstance(effect, Sleep):
                service.clock.sleep(effect.seconds)
                effect = flow.send(None)
            else:
                request = httpx.Request(effect.method, effect.url, params=effect.params) \
                    if effect.method == "GET" else httpx.Request(effect.method, effect.url, data=effect.params)
                response = service(request)
                effect = flow.send(Reply(response.status_code, response.read()))
    except StopIteration as stop:
        return stop.value


def test_zero_balance_while_own_tasks_hold_threads_waits(service: FakeService, clock: FakeClock) -> None:
    service.threads = (2, 1)  # threadsinfo lags behind: it shows a free thread
    service.in_script.extend(["ERROR_ZERO_BALANCE"] * 6)
    engine = Engine(Options(BASE, KEY), clock, random.Random(1))
    engine.pending = lambda: 1  # one task of this client still holds a thread
    params = {"sitekey": "sk", "pageurl": "https://a.test/"}
    task_id = drive(engine.submit("turnstile", params, clock.now + 300), service)
    assert task_id in service.tasks
    assert len(service.submits) == 7


def test_ip_banned_stops_at_once(service: FakeService) -> None:
    service.in_script.extend(["IP_BANNED"] * 5)
    with sync_client(service) as client, pytest.raises(AuthError) as caught:
        client.turnstile("sk", "https://a.test/")
    assert caught.value.code == "IP_BANNED"
    assert len(service.requests) == 1


async def test_ip_banned_on_a_poll_fails_its_tasks(service: FakeService) -> None:
    async with async_client(service) as client:
        assert await client.turnstile("sk", "https://a.test/0")
        service.res_script.extend(["IP_BANNED"] * 3)
        outcomes = await asyncio.gather(*(client.turnstile("sk", f"https://a.test/{i}") for i in range(1, 4)),
                                        return_exceptions=True)
    assert all(isinstance(o, AuthError) and o.code == "IP_BANNED" for o in outcomes)


def test_network_errors_are_retried(service: FakeService) -> None:
    service.in_script.extend([httpx.ConnectError("refused"), httpx.ReadTimeout("slow")])
    service.res_script.extend([httpx.RemoteProtocolError("reset")])
    with sync_client(service) as client:
        assert client.turnstile("sk", "https://a.test/").answer == SAMPLES[AnswerKind.TOKEN]
    assert len(service.submits) == 3


def test_network_errors_give_up_after_the_retries(service: FakeService) -> None:
    service.in_script.extend([httpx.ConnectError("refused")] * 10)
    with sync_client(service, network_retries=2) as client, pytest.raises(NetworkError) as caught:
        client.turnstile("sk", "https://a.test/")
    assert len(service.submits) == 3
    assert "capgate.test" in str(caught.value) and KEY not in str(caught.value)


def test_unrecognised_bodies_wait_and_retry(service: FakeService, clock: FakeClock) -> None:
    page = "<html><body><h1>502 Bad Gateway</h1></body></html>"
    service.in_script.extend([(502, page), (200, "")])
    service.res_script.extend([(502, page)])
    with sync_client(service) as client:
        assert client.turnstile("sk", "https://a.test/")
    assert clock.sleeps[0] >= 5.0
    assert len(service.submits) == 3


def test_client_error_page_is_a_protocol_error_at_once(service: FakeService) -> None:
    service.in_script.extend([(404, "<html>Not Found</html>")] * 3)
    with sync_client(service) as client, pytest.raises(ProtocolError) as caught:
        client.turnstile("sk", "https://a.test/")
    assert "404" in str(caught.value)
    assert len(service.requests) == 1


def test_server_error_code_on_poll_is_retried(service: FakeService) -> None:
    service.res_script.extend(["ERROR_SERVER_ERROR", "ERROR_INTERNAL_SERVER_ERROR"])
    with sync_client(service) as client:
        assert client.turnstile("sk", "https://a.test/")


def test_malformed_answer_is_a_protocol_error(service: FakeService) -> None:
    service.res_script.append('{"status":1,"request":"not a list"}')
    with sync_client(service) as client, pytest.raises(ProtocolError) as caught:
        client.grid(PNG, "cars")
    assert caught.value.task_id is not None


def test_overall_deadline(service: FakeService, clock: FakeClock) -> None:
    service.solve_time = 10_000.0
    start = clock.now
    with sync_client(service) as client, pytest.raises(SolveTimeout) as caught:
        client.turnstile("sk", "https://a.test/", timeout=100)
    assert 100 <= clock.now - start <= 101
    assert caught.value.task_id in service.tasks


def test_default_deadline_is_the_types_server_deadline_plus_grace(clock: FakeClock) -> None:
    engine = Engine(Options(BASE, KEY), clock)
    assert engine.deadline(BY_NAME["normal"], None) - clock.now == BY_NAME["normal"].deadline + 30
    assert engine.deadline(BY_NAME["turnstile"], 5) - clock.now == 5


# ---------------------------------------------------------------------------------------------- polling


def test_long_poll_solves_with_one_poll(service: FakeService) -> None:
    with sync_client(service) as client:
        client.turnstile("sk", "https://a.test/")
        client.turnstile("sk", "https://a.test/2")
    assert len(service.polls) == 2
    assert all(p.get("wait") == "20" and "id" in p for p in service.polls)


def test_without_long_poll_polls_follow_initial_wait_and_interval(service: FakeService,
                                                                   clock: FakeClock) -> None:
    service.wait = False
    service.solve_time = 22.0
    row = BY_NAME["turnstile"]
    with sync_client(service) as client:
        client.turnstile("sk", "https://a.test/")
        assert client._engine.wait is False
        before = len(service.polls)
        client.turnstile("sk", "https://a.test/2")
    # Learnt from the first poll (sent at once); later solves wait initial_wait, then poll_interval.
    assert len(service.polls) - before == 1 + int((22.0 - row.initial_wait) // row.poll_interval) + 1
    assert clock.sleeps[-2:] == [row.poll_interval, row.poll_interval]


async def test_concurrent_solves_share_batch_polls(service: FakeService) -> None:
    service.answers["normal"] = TextAnswer("abc")
    async with async_client(service) as client:
        solutions = await asyncio.gather(*(client.normal(PNG, instructions=str(i)) for i in range(250)))
        assert client._engine.batch is True
    assert len({s.task_id for s in solutions}) == 250
    polls = service.polls
    assert len(polls) <= 10
    assert max(len(p.get("ids", "x").split(",")) for p in polls) == 100


async def test_batch_fallback_when_ids_is_not_supported(service: FakeService) -> None:
    service.batch = False
    service.answers["normal"] = TextAnswer("abc")
    async with async_client(service) as client:
        solutions = await asyncio.gather(*(client.normal(PNG, instructions=str(i)) for i in range(20)))
        assert client._engine.batch is False
        again = await asyncio.gather(*(client.normal(PNG, instructions=f"b{i}") for i in range(20)))
    assert {s.answer.text for s in [*solutions, *again]} == {"abc"}
    batches = [p for p in service.polls if "ids" in p]
    assert len(batches) == 1  # found out once per client


async def test_batch_slot_with_a_bar_falls_back_for_that_poll(service: FakeService) -> None:
    service.answers["normal"] = TextAnswer("a|b")
    async with async_client(service) as client:
        first = await asyncio.gather(*(client.normal(PNG, instructions=str(i)) for i in range(5)))
        service.answers["normal"] = TextAnswer("plain")
        second = await asyncio.gather(*(client.normal(PNG, instructions=f"x{i}") for i in range(5)))
    assert {s.answer.text for s in first} == {"a|b"}
    assert {s.answer.text for s in second} == {"plain"}


@pytest.mark.parametrize("method", ["geetest", "lemin", "captchafox", "recaptcha_v2_enterprise"])
async def test_lossy_kinds_are_polled_alone_in_json(service: FakeService, method: str) -> None:
    row = BY_NAME[method]
    assert row.answer not in BATCHABLE
    async with async_client(service) as client:
        solutions = await asyncio.gather(*(client.solve(method, **required(row), tag=str(i)) for i in range(4)))
    assert all(s.answer == SAMPLES[row.answer] for s in solutions)
    assert all("ids" not in p and p["json"] == "1" for p in service.polls)


async def test_cancelled_solve_leaves_the_poller(service: FakeService) -> None:
    service.solve_time = 1000.0
    async with async_client(service) as client:
        job = asyncio.create_task(client.turnstile("sk", "https://a.test/"))
        for _ in range(50):
            await asyncio.sleep(0)
        job.cancel()
        with pytest.raises(asyncio.CancelledError):
            await job
        assert not client._poller


async def test_closing_fails_waiting_solves(service: FakeService) -> None:
    service.solve_time = 1000.0
    client = async_client(service)
    job = asyncio.create_task(client.turnstile("sk", "https://a.test/"))
    for _ in range(50):
        await asyncio.sleep(0)
    await client.aclose()
    with pytest.raises(CapgateError):
        await job


# ---------------------------------------------------------------------------------------------- params


def test_wrapper_params_use_wire_names(service: FakeService) -> None:
    with sync_client(service) as client:
        client.normal(PNG, numeric=1, min_len=4, max_len=6, case_sensitive=True, phrase=False,
                      instructions="red only")
        client.recaptcha_v3("gk", "https://a.test/", action="login", min_score=0.7, user_agent="UA")
        client.geetest("gt", "ch", "https://a.test/", api_server="api.geetest.com")
    normal, v3, geetest = service.submits
    assert (normal["numeric"], normal["min_len"], normal["max_len"], normal["regsense"], normal["phrase"],
            normal["textinstructions"]) == ("1", "4", "6", "1", "0", "red only")
    assert base64.b64decode(normal["body"]) == PNG
    assert (v3["googlekey"], v3["version"], v3["action"], v3["min_score"], v3["userAgent"]) == \
        ("gk", "v3", "login", "0.7", "UA")
    assert geetest["api_server"] == "api.geetest.com"


def test_solve_accepts_aliases(service: FakeService) -> None:
    with sync_client(service) as client:
        client.solve("recaptcha_v2", sitekey="gk", url="https://a.test/", user_agent="UA")
    submit = service.submits[0]
    assert (submit["googlekey"], submit["pageurl"], submit["userAgent"]) == ("gk", "https://a.test/", "UA")


@pytest.mark.parametrize(("method", "params", "code"), [
    ("turnstile", {"pageurl": "https://a.test/"}, "ERROR_GOOGLEKEY"),
    ("turnstile", {"sitekey": "sk"}, "ERROR_PAGEURL"),
    ("normal", {}, "ERROR_UPLOAD"),
    ("cloudflare_challenge", {"pageurl": "https://a.test/"}, "ERROR_BAD_PARAMETERS"),
    ("no_such_method", {}, "ERROR_BAD_PARAMETERS"),
    ("bls", {"instructions": "664", "images": [PNG] * 8}, "ERROR_BAD_PARAMETERS"),
    ("turnstile", {"sitekey": "sk", "pageurl": "https://a.test/", "image": PNG}, "ERROR_BAD_PARAMETERS"),
    ("turnstile", {"sitekey": ["a"], "pageurl": "https://a.test/"}, "ERROR_BAD_PARAMETERS"),
])
def test_bad_input_is_refused_before_any_request(service: FakeService, method: str, params: dict[str, Any],
                                                 code: str) -> None:
    with sync_client(service) as client, pytest.raises(BadInputError) as caught:
        client.solve(method, **params)
    assert caught.value.code == code
    assert service.requests == []


@pytest.fixture()
def image_file(tmp_path: Path) -> Path:
    path = tmp_path / "captcha.png"
    path.write_bytes(PNG)
    return path


@pytest.mark.parametrize("form", ["bytes", "path", "path-str", "base64", "base64-lines", "data-uri", "url"])
def test_image_inputs(service: FakeService, image_file: Path, form: str) -> None:
    encoded = base64.b64encode(PNG).decode()
    source: Any = {
        "bytes": PNG, "path": image_file, "path-str": str(image_file), "base64": encoded,
        "base64-lines": "\n".join(encoded[i:i + 76] for i in range(0, len(encoded), 76)),
        "data-uri": f"data:image/png;base64,{encoded}", "url": "http://images.test/c.png",
    }[form]
    with sync_client(service) as client:
        client.normal(source)
    assert service.submits[0]["body"] == encoded


@pytest.mark.parametrize("source", ["missing.png", "/no/such/dir/x.png", "data:image/png,notbase64",
                                    "http://images.test/404.png"])
def test_unreadable_images(service: FakeService, source: str) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == "images.test":
            return httpx.Response(404)
        return service(request)

    client = Client(BASE, KEY, transport=httpx.MockTransport(handler), clock=service.clock,
                    sleep=service.clock.sleep)
    with client, pytest.raises(BadInputError) as caught:
        client.normal(source)
    assert caught.value.code == "ERROR_UPLOAD"
    assert not service.submits


def test_bls_sends_nine_data_uris(service: FakeService, image_file: Path) -> None:
    gif = b"GIF89a" + bytes(200)
    with sync_client(service) as client:
        solution = client.bls([image_file, gif, *[PNG] * 7], "664")
    submit = service.submits[0]
    assert submit["method"] == "bls" and submit["instructions"] == "664"
    assert submit["image_base64_1"].startswith("data:image/png;base64,")
    assert submit["image_base64_2"] == "data:image/gif;base64," + base64.b64encode(gif).decode()
    assert "image_base64_9" in submit
    assert solution.answer == CellsAnswer((1, 4, 7))


def test_base_url_with_path_prefix_and_bare_host(service: FakeService) -> None:
    with sync_client(service) as client:
        client.balance()
    assert str(service.requests[0].url).startswith("http://capgate.test/api/res.php?")
    bare = Client("captcha.example:8443", KEY)
    assert repr(bare) == "Client('https://captcha.example:8443')"
    bare.close()
    with pytest.raises(ValueError):
        Client("https://captcha.example/in.php", KEY)


def test_pingback_mode_returns_the_task_id(service: FakeService) -> None:
    with sync_client(service) as client:
        task_id = client.submit("turnstile", pingback="https://me.test/hook", sitekey="sk",
                                pageurl="https://a.test/")
        assert service.polls == []
        assert service.submits[0]["pingback"] == "https://me.test/hook"
        assert client.result(task_id, "turnstile").answer == SAMPLES[AnswerKind.TOKEN]


# ---------------------------------------------------------------------------------------------- account


@pytest.mark.parametrize("plain", [False, True], ids=["json", "plain"])
def test_balance_report_threads(service: FakeService, plain: bool) -> None:
    service.plain = plain
    with sync_client(service) as client:
        assert str(client.balance()) == "12.345"
        assert client.report("73548291", True) is True
        assert client.report("73548291", False) is True
        if not plain:
            threads = client.threads()
            assert (threads.threads, threads.working_threads, threads.free) == (5, 0, 5)
    actions = [service.params(r)["action"] for r in service.requests]
    assert actions[:3] == ["getbalance", "reportgood", "reportbad"]


@pytest.mark.parametrize("code", [c.name for c in CODES.values() if c.family is Family.REPORT])
def test_refused_report_is_false(clock: FakeClock, code: str) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, text=code)

    with Client(BASE, KEY, transport=httpx.MockTransport(handler), clock=clock, sleep=clock.sleep) as client:
        assert client.report("1", False) is False
    assert ReportError.family is Family.REPORT


def test_report_on_unknown_task_raises(clock: FakeClock) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"status": 0, "request": "ERROR_WRONG_CAPTCHA_ID"})

    with Client(BASE, KEY, transport=httpx.MockTransport(handler), clock=clock, sleep=clock.sleep) as client, \
            pytest.raises(BadInputError):
        client.report("1", True)


def test_balance_retries_server_errors_then_gives_up(clock: FakeClock) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, text="ERROR_SERVER_ERROR")

    with Client(BASE, KEY, transport=httpx.MockTransport(handler), clock=clock, sleep=clock.sleep) as client, \
            pytest.raises(ServerError):
        client.balance()
    assert sum(clock.sleeps) <= 60


async def test_async_account_calls(service: FakeService) -> None:
    async with async_client(service) as client:
        assert str(await client.balance()) == "12.345"
        assert await client.report("1", True)
        assert (await client.threads()).threads == 5
        task_id = await client.submit("turnstile", sitekey="sk", pageurl="https://a.test/")
        assert (await client.result(task_id, "turnstile")).task_id == task_id


# ---------------------------------------------------------------------------------------------- surface


TYPEVAR_OF_KIND = {AnswerKind.TEXT: "TextR", AnswerKind.TOKEN: "TokenR", AnswerKind.TOKEN_UA: "TokenR",
                   AnswerKind.GEETEST: "GeeTestR", AnswerKind.CLEARANCE: "ClearanceR",
                   AnswerKind.CELLS: "CellsR", AnswerKind.OBJECT: "ObjectR",
                   AnswerKind.COORDINATES: "CoordinatesR", AnswerKind.ANGLE: "AngleR"}


@pytest.mark.parametrize("row", METHODS, ids=lambda m: m.name)
def test_one_typed_method_per_registry_row(row: Method) -> None:
    wrapper: Callable[..., Any] = getattr(Methods, row.name)
    assert inspect.signature(wrapper).return_annotation == TYPEVAR_OF_KIND[row.answer]
    assert callable(getattr(Client, row.name)) and callable(getattr(AsyncClient, row.name))


def test_errors_carry_code_and_meaning() -> None:
    error = errors.error_for("ERROR_CAPTCHA_UNSOLVABLE", task_id="42", raw="x")
    assert isinstance(error, UnsolvableError)
    assert (error.code, error.task_id, error.raw) == ("ERROR_CAPTCHA_UNSOLVABLE", "42", "x")
    assert CODES["ERROR_CAPTCHA_UNSOLVABLE"].meaning in str(error) and "42" in str(error)



async def test_async_without_long_poll_batches_at_intervals(service: FakeService) -> None:
    service.wait = False
    service.answers["turnstile"] = TokenAnswer("tok")
    async with async_client(service) as client:
        solutions = await asyncio.gather(*(client.turnstile("sk", f"https://a.test/{i}") for i in range(30)))
        assert client._engine.wait is False and client._engine.batch is True
    assert {s.answer.token for s in solutions} == {"tok"}
    assert "wait" not in service.polls[-1]  # learnt from the first reply, not sent since
    assert len(service.polls) < 30


async def test_first_batch_with_a_bar_still_learns_batching(service: FakeService) -> None:
    service.answers["normal"] = TextAnswer("a|b")
    async with async_client(service) as client:
        await asyncio.gather(*(client.normal(PNG, instructions=str(i)) for i in range(6)))
        assert client._engine.batch is True
