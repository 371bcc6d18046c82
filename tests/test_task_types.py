"""2captcha's other task types (issue 15): text questions, click coordinates, rotate, audio, KeyCaptcha,
Capy, Amazon WAF, MTCaptcha, DataDome, CutCaptcha, Tencent, atbCAPTCHA, Yandex SmartCaptcha, Prosopo.

Each registry row through in.php's validation, the sandbox and the worker API, on both backends, with
what res.php then sends read byte for byte in plain and json=1 mode. The answer formats themselves
(coordinates, angles) are tested without I/O at the end.
"""

from __future__ import annotations

import base64
import json
import os
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from capgate.paths import labelled_dir
from capgate.protocol import answers
from capgate.protocol.answers import (
    AngleAnswer,
    AnswerFormatError,
    AnswerKind,
    CoordinatesAnswer,
)
from capgate.protocol.codes import C
from capgate.protocol.methods import BY_NAME, METHODS, Category, Method, resolve
from capgate.workers.dispatch import AnswerRejected, answer_from_fields
from tests.appkit import AppHost, app_host
from tests.fixtures import MODES, Mode, dumps, expect, expect_error, png
from tests.storekit import backend_of, sqlite_backend
from tests.workerkit import act, call, claim, claim_id, get, png_b64, submit

ISSUE_15 = ("text", "coordinates", "rotate", "audio", "keycaptcha", "capy", "amazon_waf", "mtcaptcha", "datadome",
            "cutcaptcha", "tencent", "atb_captcha", "yandex_smart", "prosopo")
ROWS = [BY_NAME[name] for name in ISSUE_15]
BACKENDS = ["sqlite", "postgres"]

# What a worker sends for each answer kind, and the bytes res.php then sends (plain, json=1).
WORKER_ANSWERS: dict[AnswerKind, tuple[dict[str, Any], bytes, bytes]] = {
    AnswerKind.TEXT: ({"text": "Sunday, 4"}, b"OK|Sunday, 4", b'{"status":1,"request":"Sunday, 4"}'),
    AnswerKind.TOKEN: ({"token": "tok|en-123"}, b"OK|tok|en-123", b'{"status":1,"request":"tok|en-123"}'),
    AnswerKind.COORDINATES: (
        {"points": [{"x": 39, "y": 59}, {"x": 252, "y": 72}]}, b"OK|coordinates:x=39,y=59;x=252,y=72",
        b'{"status":1,"request":[{"x":"39","y":"59"},{"x":"252","y":"72"}]}'),
    AnswerKind.ANGLE: ({"angle": 120}, b"OK|120", b'{"status":1,"request":"120"}'),
}
# Object answers: the fields each vendor's answer has (2captcha's API documentation).
OBJECT_FIELDS: dict[str, dict[str, Any]] = {
    "capy": {"captchakey": "PUZZLE_Abc1dEF", "challengekey": "qHAPtn68KT", "answer": "0xax8ex0x"},
    "amazon_waf": {"captcha_voucher": "eyJ0eXAiOi", "existing_token": "f8ab5749-f916"},
    "tencent": {"appid": "190014885", "ret": 0, "ticket": "tr034XXX", "randstr": "@KVN"},
}
# A malformed answer for each kind: 400, and the lease stays the worker's.
BAD_ANSWERS: dict[AnswerKind, dict[str, Any]] = {
    AnswerKind.TEXT: {"text": ""},
    AnswerKind.TOKEN: {"token": 12},
    AnswerKind.OBJECT: {"fields": "captcha_voucher=x"},
    AnswerKind.COORDINATES: {"points": [{"x": "39", "y": "59"}]},
    AnswerKind.ANGLE: {"angle": "120"},
}


def mp3() -> bytes:
    """Not a real recording: audio is stored as it comes, checked for size only."""
    return b"ID3\x04\x00\x00\x00\x00\x00\x00" + os.urandom(300)


def wire_params(row: Method, unique: str) -> dict[str, str]:
    """The in.php form a client sends for ``row``: its wire name, selectors and required parameters."""
    params = {"method": row.wire[0], **row.sets}
    for name in row.required:
        if name == "body":
            params[name] = base64.b64encode(mp3()).decode() if name in row.media_params else png_b64()
        elif name == "pageurl":
            params[name] = f"https://site.test/{unique}"
        elif name == "proxy":
            params[name] = "user:pass@1.2.3.4:8080"
        elif name == "proxytype":
            params[name] = "HTTP"
        elif name == "lang":
            params[name] = "en"
        elif name == "textcaptcha":
            params[name] = f"If tomorrow is Saturday, what day is today? ({unique})"
        else:
            params[name] = f"{name}-{unique}"
    return params


def json_from_plain(row: Method, payload: str) -> bytes:
    """The json=1 body that carries the same answer as ``OK|payload``, worked out here from the plain
    form alone (2captcha's spellings), so the two replies are checked against each other."""
    request: Any = payload
    if row.answer is AnswerKind.OBJECT:
        request = json.loads(payload)
    elif row.answer is AnswerKind.COORDINATES:
        points = payload.removeprefix("coordinates:").split(";")
        request = [dict(zip(("x", "y"), (part.split("=")[1] for part in point.split(",")), strict=True))
                   for point in points]
    return dumps({"status": 1, "request": request})


# ------------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module", params=BACKENDS)
def host(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppHost]:
    backend = backend_of(request, request.param, tmp_path_factory.mktemp(f"task-types-{request.param}"))
    with app_host(backend) as started:
        yield started


@pytest.fixture(scope="module")
def keys(host: AppHost) -> dict[str, str]:
    return {"sandbox": host.make_key(sandbox=True, threads=200),
            "live": host.make_key(sandbox=False, threads=200, balance="10")}


def test_the_issue_types_are_registry_rows() -> None:
    assert [row.name for row in ROWS] == list(ISSUE_15)
    for row in ROWS:
        form = wire_params(row, "u")
        assert resolve(form) is row, row.name  # what a client sends selects the row, and no other
    assert resolve({"method": "post", "body": "x"}) is BY_NAME["normal"]
    assert resolve({"method": "base64", "body": "x", "coordinatescaptcha": "0"}) is BY_NAME["normal"]
    assert resolve({"method": "base64", "body": "x", "coordinatescaptcha": "true"}) is BY_NAME["coordinates"]
    assert resolve({"method": "post", "textcaptcha": "2+2?"}) is BY_NAME["text"]


# ------------------------------------------------------------------------------------------ in.php


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("row", ROWS, ids=lambda m: m.name)
def test_a_missing_parameter_gets_its_code(app: AppHost, row: Method, mode: Mode) -> None:
    key = app.make_key(sandbox=True)
    full = wire_params(row, uuid.uuid4().hex)
    for name in row.required:
        form = {k: v for k, v in full.items() if k != name}
        reply = app.http.post("/in.php", data={"key": key, **form, **({"json": "1"} if mode == "json" else {})})
        if resolve(form) is row:  # (without its question, a text task is a normal one without its image)
            expect_error(reply, row.missing_code(name), mode)
        blank = {**full, name: "   "} if name not in (*row.image_params, *row.media_params) else form
        reply = app.http.post("/in.php", data={"key": key, **blank, **({"json": "1"} if mode == "json" else {})})
        expect_error(reply, row.missing_code(name), mode)


@pytest.mark.parametrize(("name", "param", "code"), [
    ("text", "textcaptcha", C.BAD_PARAMETERS),
    ("coordinates", "body", C.UPLOAD),
    ("rotate", "body", C.UPLOAD),
    ("audio", "body", C.UPLOAD),
    ("audio", "lang", C.BAD_PARAMETERS),
    ("keycaptcha", "s_s_c_web_server_sign2", C.BAD_PARAMETERS),
    ("keycaptcha", "pageurl", C.PAGEURL),
    ("capy", "captchakey", C.GOOGLEKEY),
    ("amazon_waf", "sitekey", C.BAD_PARAMETERS),
    ("amazon_waf", "iv", C.BAD_PARAMETERS),
    ("amazon_waf", "context", C.BAD_PARAMETERS),
    ("mtcaptcha", "sitekey", C.GOOGLEKEY),
    ("datadome", "captcha_url", C.BAD_PARAMETERS),
    ("datadome", "proxy", C.BAD_PARAMETERS),
    ("datadome", "pageurl", C.PAGEURL),
    ("cutcaptcha", "misery_key", C.GOOGLEKEY),
    ("cutcaptcha", "api_key", C.BAD_PARAMETERS),
    ("tencent", "app_id", C.GOOGLEKEY),
    ("atb_captcha", "api_server", C.BAD_PARAMETERS),
    ("yandex_smart", "sitekey", C.GOOGLEKEY),
    ("prosopo", "pageurl", C.PAGEURL),
])
def test_missing_codes(name: str, param: str, code: str) -> None:
    assert param in BY_NAME[name].required
    assert BY_NAME[name].missing_code(param) == code


def test_odd_inputs_get_the_protocols_codes(app: AppHost) -> None:
    key = app.make_key(sandbox=True)
    http = app.http

    def send(**params: str) -> bytes:
        return http.post("/in.php", data={"key": key, **params}).content

    audio = wire_params(BY_NAME["audio"], uuid.uuid4().hex)
    assert send(**{**audio, "body": "not base64!"}) == C.UPLOAD.encode()
    assert send(**{**audio, "body": base64.b64encode(b"ID3 short").decode()}) == C.ZERO_CAPTCHA_FILESIZE.encode()
    big = base64.b64encode(b"ID3" + b"\0" * (1024 * 1024 + 1)).decode()
    assert send(**{**audio, "body": big}) == C.TOO_BIG_CAPTCHA_FILESIZE.encode()
    # An audio task's body is no image: a PNG is taken as it comes, an mp3 for coordinates is refused.
    assert send(**{**audio, "body": base64.b64encode(png()).decode()}).startswith(b"OK|")
    coordinates = wire_params(BY_NAME["coordinates"], uuid.uuid4().hex)
    assert send(**{**coordinates, "body": base64.b64encode(mp3()).decode()}) == C.IMAGE_TYPE_NOT_SUPPORTED.encode()
    # Amazon's keys are base64: not "malformed site keys".
    amazon = wire_params(BY_NAME["amazon_waf"], uuid.uuid4().hex)
    assert send(**{**amazon, "sitekey": "AQIDAHjcYu/GjX+QlghicBgQ/7bFaQZ+m5FKCMDnO+vTbNg96A=="}).startswith(b"OK|")
    # Other site keys are checked as every vendor's are.
    assert send(**{**wire_params(BY_NAME["prosopo"], "u"), "sitekey": "https://x.test/?k=1"}) \
        == C.WRONG_GOOGLEKEY.encode()
    # Files come as multipart parts too: the image of a rotate task, the recording of an audio one.
    rotate = {"key": key, "method": "rotatecaptcha", "angle": "30"}
    assert http.post("/in.php", data=rotate, files={"file": ("c.png", png(seed=7))}).text.startswith("OK|")
    voice = {"key": key, "method": "audio", "lang": "en"}
    assert http.post("/in.php", data=voice, files={"file": ("c.mp3", mp3())}).text.startswith("OK|")


# ------------------------------------------------------------------------------------------ sandbox


@pytest.mark.parametrize("row", ROWS, ids=lambda m: m.name)
async def test_the_sandbox_answers_each_type(host: AppHost, keys: dict[str, str], row: Method) -> None:
    key = keys["sandbox"]
    form = wire_params(row, uuid.uuid4().hex)
    async with host.aclient() as http:
        task_id = await submit(http, key, **form)
        plain = (await http.get("/res.php", params={"key": key, "action": "get", "id": task_id, "wait": 10}))
        assert plain.headers["content-type"] == "text/plain; charset=utf-8"
        payload = plain.text.removeprefix("OK|")
        assert plain.text == f"OK|{payload}"
        shapes = {AnswerKind.TEXT: r"[0-9a-z]{6}", AnswerKind.TOKEN: r"SANDBOX-FAKE-TOKEN-[0-9a-f]{64}",
                  AnswerKind.COORDINATES: r"coordinates:x=\d{1,2},y=\d{1,2};x=\d{1,2},y=\d{1,2}",
                  AnswerKind.ANGLE: r"(0|40|80|120|160|200|240|280|320)", AnswerKind.OBJECT: r"\{.*\}"}
        assert re.fullmatch(shapes[row.answer], payload), payload
        if row.answer is AnswerKind.OBJECT:
            assert set(json.loads(payload)) == set(OBJECT_FIELDS[row.name])
        reply = await http.get("/res.php", params={"key": key, "action": "get", "id": task_id, "json": 1})
        expect(reply, json_from_plain(row, payload), "json")
        # The same task again: the same answer (sandbox answers depend on the task alone).
        again = await submit(http, key, **form)
        assert await get(http, key, again, wait=10) == plain.text


async def test_the_sandbox_follows_the_tasks_options(host: AppHost, keys: dict[str, str]) -> None:
    key = keys["sandbox"]
    async with host.aclient() as http:
        rotate = {**wire_params(BY_NAME["rotate"], uuid.uuid4().hex), "angle": "90"}
        angle = await get(http, key, await submit(http, key, **rotate), wait=10)
        assert angle in ("OK|0", "OK|90", "OK|180", "OK|270")
        clicks = {**wire_params(BY_NAME["coordinates"], uuid.uuid4().hex), "min_clicks": "3", "max_clicks": "4"}
        points = await get(http, key, await submit(http, key, **clicks), wait=10)
        assert re.fullmatch(r"OK\|coordinates:(x=\d+,y=\d+;){2}x=\d+,y=\d+", points), points
        question = {**wire_params(BY_NAME["text"], uuid.uuid4().hex), "sandbox": "sandbox-answer-Sunday"}
        assert await get(http, key, await submit(http, key, **question), wait=10) == "OK|Sunday"
        unsolvable = {**wire_params(BY_NAME["tencent"], "sandbox-unsolvable")}
        assert await get(http, key, await submit(http, key, **unsolvable), wait=10) == C.CAPTCHA_UNSOLVABLE


# ------------------------------------------------------------------------------------------ worker API


def worker_answer(row: Method) -> tuple[dict[str, Any], bytes, bytes]:
    if row.answer is AnswerKind.OBJECT:
        fields = OBJECT_FIELDS[row.name]
        return {"fields": fields}, b"OK|" + dumps(fields), dumps({"status": 1, "request": fields})
    return WORKER_ANSWERS[row.answer]


@pytest.mark.parametrize("row", ROWS, ids=lambda m: m.name)
async def test_a_worker_serves_each_type(host: AppHost, keys: dict[str, str], row: Method) -> None:
    key = keys["live"]
    token = host.worker_token(f"{row.name}-bot", [row.name])
    form = wire_params(row, uuid.uuid4().hex)
    answer, plain, in_json = worker_answer(row)
    async with host.aclient() as http:
        assert await claim(http, token, [row.name]) is None  # says the type is served
        task_id = await submit(http, key, **form)
        task = await claim_id(http, token, task_id, [row.name])
        assert task["method"] == row.name and task["answer_kind"] == row.answer.value
        blobs = (*row.image_params, *row.media_params)
        assert task["params"] == {name: value for name, value in form.items()
                                  if name not in ("method", *blobs)}
        assert task["images"] == {name: form[name] for name in blobs}

        refused = await act(http, token, task, "answer", answer=BAD_ANSWERS[row.answer])
        assert refused.status_code == 400, refused.text
        assert await get(http, key, task_id) == "CAPCHA_NOT_READY"
        done = await act(http, token, task, "answer", answer=answer)
        assert done.status_code == 200 and done.json() == {"ok": True}, done.text

        reply = await http.get("/res.php", params={"key": key, "action": "get", "id": task_id})
        expect(reply, plain, "plain")
        reply = await http.get("/res.php", params={"key": key, "action": "get", "id": task_id, "json": "1"})
        expect(reply, in_json, "json")
        reply = await http.get("/res.php", params={"key": key, "action": "get", "ids": task_id})
        expect(reply, plain.removeprefix(b"OK|"), "plain")  # a batch slot: the plain answer without OK|


async def test_another_types_token_may_not_claim_it(host: AppHost, keys: dict[str, str]) -> None:
    token = host.worker_token("rotate-only", ["rotate"])
    async with host.aclient() as http:
        reply = await call(http, token, "claim", {"methods": ["coordinates"]})
        assert reply.status_code == 403


# ------------------------------------------------------------------------------------------ human page

HUMAN_PAGE = Path(__file__).resolve().parents[1] / "capgate" / "server" / "static" / "human.html"


def page_methods() -> set[str]:
    """The methods the page claims (its ``modes`` table)."""
    table = re.search(r"const modes = \{(.*?)\};", HUMAN_PAGE.read_text(encoding="utf-8"), re.DOTALL)
    assert table is not None
    return set(re.findall(r"(\w+): \"\w+\"", table.group(1)))


def test_the_page_claims_every_type_a_person_can_do_there() -> None:
    """Every row whose task is one image, a question or a recording, answered by text, cells,
    points or an angle: everything but the third-party challenges (and BLS's nine images)."""
    doable = {row.name for row in METHODS
              if row.category in (Category.IMAGE, Category.IMAGE_TASK)
              and set(row.image_params) | set(row.media_params) <= {"body"}
              and row.answer in (AnswerKind.TEXT, AnswerKind.CELLS, AnswerKind.COORDINATES, AnswerKind.ANGLE)}
    assert page_methods() == doable == {"normal", "grid", "coordinates", "rotate", "text", "audio"}
    assert all(name in BY_NAME for name in page_methods())


# ------------------------------------------------------------------------------------------ formats


@pytest.mark.parametrize(("answer", "plain", "value"), [
    (CoordinatesAnswer(((39, 59), (252, 72))), "coordinates:x=39,y=59;x=252,y=72",
     [{"x": "39", "y": "59"}, {"x": "252", "y": "72"}]),
    (CoordinatesAnswer(((0, 0),)), "coordinates:x=0,y=0", [{"x": "0", "y": "0"}]),
    (CoordinatesAnswer(()), "coordinates:", []),
    (AngleAnswer(40), "40", "40"),
    (AngleAnswer(-120), "-120", "-120"),
])
def test_coordinates_and_angles_on_the_wire(answer: Any, plain: str, value: Any) -> None:
    kind = AnswerKind.COORDINATES if isinstance(answer, CoordinatesAnswer) else AnswerKind.ANGLE
    assert answers.encode_plain(answer) == plain
    assert answers.encode_json(answer, kind) == {"request": value}
    assert answers.plain_from_json(kind, {"request": value}) == plain
    assert answers.decode_plain(kind, plain) == answer
    assert answers.decode_json(kind, {"status": 1, "request": value}) == answer


def test_what_other_services_send_is_read_too() -> None:
    kind = AnswerKind.COORDINATES
    expected = CoordinatesAnswer(((39, 59), (252, 72)))
    assert answers.decode_json(kind, {"request": [{"x": 39, "y": 59}, {"x": 252, "y": 72}]}) == expected
    assert answers.decode_json(kind, {"request": "coordinates:x=39,y=59;x=252,y=72"}) == expected
    assert answers.decode_json(kind, {"request": '[{"x":"39","y":"59"},{"x":"252","y":"72"}]'}) == expected
    assert answers.decode_json(AnswerKind.ANGLE, {"request": 40}) == AngleAnswer(40)
    for bad in ("x=1,y=2", "coordinates:x=1", "coordinates:x=a,y=2", "coordinates:x=1,y=2;"):
        with pytest.raises(AnswerFormatError):
            answers.decode_plain(kind, bad)
    for request in ([{"x": "1"}], [[1, 2]], {"x": 1, "y": 2}, [{"x": True, "y": 2}]):
        with pytest.raises(AnswerFormatError):
            answers.decode_json(kind, {"request": request})
    for value in ("forty", "4.5", "", True, None):
        with pytest.raises(AnswerFormatError):
            answers.decode_json(AnswerKind.ANGLE, {"request": value})


@pytest.mark.parametrize(("kind", "fields"), [
    (AnswerKind.COORDINATES, {"points": [{"x": -1, "y": 2}]}),
    (AnswerKind.COORDINATES, {"points": [{"x": 1, "y": 2, "z": 3}]}),
    (AnswerKind.COORDINATES, {"points": [[1, 2]]}),
    (AnswerKind.COORDINATES, {"points": [{"x": 1.5, "y": 2}]}),
    (AnswerKind.COORDINATES, {"points": "coordinates:x=1,y=2"}),
    (AnswerKind.COORDINATES, {}),
    (AnswerKind.ANGLE, {"angle": True}),
    (AnswerKind.ANGLE, {"angle": 360}),
    (AnswerKind.ANGLE, {"angle": 40.0}),
    (AnswerKind.ANGLE, {"angle": 40, "text": "40"}),
])
def test_malformed_worker_answers_are_refused(kind: AnswerKind, fields: dict[str, Any]) -> None:
    with pytest.raises(AnswerRejected):
        answer_from_fields(kind, fields)


def test_worker_answers_become_typed_answers() -> None:
    assert answer_from_fields(AnswerKind.COORDINATES, {"points": []}) == CoordinatesAnswer(())
    assert answer_from_fields(AnswerKind.COORDINATES, {"points": [{"y": 5, "x": 4}]}) \
        == CoordinatesAnswer(((4, 5),))
    assert answer_from_fields(AnswerKind.ANGLE, {"angle": -40}) == AngleAnswer(-40)



# ------------------------------------------------------------------------------------------ labels


async def test_only_image_text_answers_become_ocr_labels(tmp_path: Path) -> None:
    """A person's answer is kept as a training label where the account opted in, but only for an image
    read as text: a recording's words or a question's answer label no image."""
    with app_host(sqlite_backend(tmp_path)) as host:
        key = host.make_key(sandbox=False, threads=50)
        host.run(host.store.update_account(host.account_id(key), settings={"keep_labels": True}))
        person = host.worker_token("alice", human=True)
        host.register_worker(["normal", "audio", "text"])
        async with host.aclient() as http:
            for form, answer in ((wire_params(BY_NAME["audio"], "a"), "seven two"),
                                 (wire_params(BY_NAME["text"], "t"), "Friday"),
                                 ({"method": "base64", "body": png_b64()}, "x7k2p")):
                task_id = await submit(http, key, **form)
                task = await claim_id(http, person, task_id, None)
                assert (await act(http, person, task, "answer", answer={"text": answer})).status_code == 200
                assert await get(http, key, task_id) == f"OK|{answer}"
    kept = labelled_dir(host.settings.db)
    lines = [line for path in kept.rglob("labels.csv") for line in path.read_text().splitlines()]
    assert len(lines) == 1 and lines[0].endswith(",x7k2p")
