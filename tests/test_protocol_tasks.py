"""The JSON task API's spellings (capgate.protocol.tasks): task objects to registry rows and back, solution
objects per answer kind, and error bodies; the registry stays the one place a type is described."""

from __future__ import annotations

from typing import Any

import pytest

from capgate.protocol import answers, tasks
from capgate.protocol.answers import AnswerKind
from capgate.protocol.codes import CODES, C
from capgate.protocol.methods import BY_TASK_TYPE, METHODS, Method, canonical_params, resolve


def _sample(method: Method) -> dict[str, str]:
    params = {name: f"v-{name}" for name in method.required}
    if "proxy" in params:
        params.update(proxy="u:p@10.0.0.1:3128", proxytype="HTTP")
    return {**params, **method.sets, "method": method.wire[0]}


def test_every_type_name_is_one_rows_and_fields_map_to_canonical_names() -> None:
    names = [name for method in METHODS for name in method.task_types]
    assert len(names) == len(set(names))
    for method in METHODS:
        for target in method.task_fields.values():
            assert list(canonical_params({target: "x"}, method)) == [target], (method.name, target)


@pytest.mark.parametrize("method", [m for m in METHODS if m.task_types], ids=lambda m: m.name)
def test_a_rows_parameters_go_to_a_task_and_come_back(method: Method) -> None:
    params = _sample(method)
    task = tasks.task_object(method, params)
    assert BY_TASK_TYPE[task["type"]] is method
    back = tasks.task_params(task)
    assert resolve(canonical_params(back)) is method
    assert params.items() <= back.items()


def test_rows_reached_through_another_type() -> None:
    v3e = next(m for m in METHODS if m.name == "recaptcha_v3_enterprise")
    task = tasks.task_object(v3e, {"googlekey": "k", "pageurl": "https://s.test", "version": "v3", "enterprise": "1",
                                   "method": "userrecaptcha"})
    assert task == {"type": "RecaptchaV3TaskProxyless", "websiteKey": "k", "websiteURL": "https://s.test",
                    "isEnterprise": True}
    for name in ("bls", "cloudflare_challenge"):
        with pytest.raises(tasks.TaskRejected):
            tasks.task_object(next(m for m in METHODS if m.name == name), {})


@pytest.mark.parametrize(("task", "code"), [
    (None, tasks.TASK_ABSENT), ({}, tasks.TASK_ABSENT), ([1], tasks.TASK_ABSENT),
    ({"type": "Nope"}, tasks.TASK_NOT_SUPPORTED), ({"type": 5}, tasks.TASK_NOT_SUPPORTED),
    ({"type": "TurnstileTask", "websiteURL": "u", "websiteKey": "k"}, tasks.BAD_PARAMETERS),
])
def test_tasks_that_name_no_row(task: Any, code: str) -> None:
    with pytest.raises(tasks.TaskRejected) as caught:
        tasks.task_params(task)
    assert caught.value.code == code


def test_fields_values_and_what_is_dropped() -> None:
    params = tasks.task_params({"type": "ImageToTextTask", "body": "AAAA", "case": True, "numeric": 2,
                                "minLength": 4.0, "comment": "hi", "method": "evil", "key": "other", "x": None,
                                "unknown": "dropped", "phrase": None})
    assert params == {"body": "AAAA", "regsense": "1", "numeric": "2", "min_len": "4", "textinstructions": "hi",
                      "method": "base64"}
    deep: dict[str, Any] = {"type": "HCaptchaTaskProxyless", "websiteURL": "u", "websiteKey": "k",
                            "enterprisePayload": {"rqdata": "R", "a": {"b": {"c": {"d": 1}}}}}
    assert tasks.task_params(deep)["data"] == "R"


@pytest.mark.parametrize("kind", list(AnswerKind))
def test_solutions_read_back_as_the_same_answer(kind: AnswerKind) -> None:
    samples: dict[AnswerKind, answers.Answer] = {
        AnswerKind.TEXT: answers.TextAnswer("abc"), AnswerKind.TOKEN: answers.TokenAnswer("T"),
        AnswerKind.TOKEN_UA: answers.TokenAnswer("T", "UA/1"),
        AnswerKind.GEETEST: answers.GeeTestAnswer("c", "v", "s|jordan"),
        AnswerKind.CLEARANCE: answers.ClearanceAnswer("cf", "UA/2"), AnswerKind.CELLS: answers.CellsAnswer((1, 5)),
        AnswerKind.OBJECT: answers.ObjectAnswer({"captcha_id": "x", "lot_number": "y"}),
        AnswerKind.COORDINATES: answers.CoordinatesAnswer(((39, 59), (252, 72))),
        AnswerKind.ANGLE: answers.AngleAnswer(120),
    }
    answer = samples[kind]
    solution = tasks.solution(kind, answers.encode_json(answer, kind))
    assert tasks.answer_of(kind, solution) == answer


def test_solution_spellings() -> None:
    assert tasks.solution(AnswerKind.TEXT, {"request": "abc"}) == {"text": "abc"}
    assert tasks.solution(AnswerKind.TOKEN, {"request": "T"}) == {"gRecaptchaResponse": "T", "token": "T"}
    assert tasks.solution(AnswerKind.CELLS, {"request": "[1,5]"}) == {"click": [1, 5]}


def test_error_bodies() -> None:
    assert tasks.error(C.WRONG_USER_KEY) == {"errorId": 1, "errorCode": "ERROR_KEY_DOES_NOT_EXIST",
                                             "errorDescription": CODES[C.WRONG_USER_KEY].meaning}
    assert tasks.error(C.IP_BANNED)["errorCode"] == "ERROR_IP_BLOCKED"
    assert tasks.error(C.PAGEURL)["errorId"] == 110
    assert tasks.error(C.NO_SLOT_AVAILABLE)["errorId"] == 2
    assert tasks.error("ERROR_SOMETHING_NEW") == {"errorId": 1, "errorCode": "ERROR_SOMETHING_NEW",
                                                  "errorDescription": "ERROR_SOMETHING_NEW"}
    for code in CODES:
        if code != C.NOT_READY:
            assert tasks.error(code)["errorId"] > 0
    assert tasks.code_of({"errorCode": "ERROR_NO_SUCH_CAPCHA_ID"}) == C.WRONG_CAPTCHA_ID


@pytest.mark.parametrize(("raw", "outcome", "text"), [
    (b'{"errorId":0,"taskId":12}', "ok", "12"),
    (b'{"errorId":0,"status":"processing"}', "not_ready", "CAPCHA_NOT_READY"),
    (b'{"errorId":0,"balance":1.50}', "ok", "1.50"),
    (b'{"errorId":0,"status":"success"}', "ok", "OK_REPORT_RECORDED"),
    (b'{"errorId":12,"errorCode":"ERROR_CAPTCHA_UNSOLVABLE"}', "error", "ERROR_CAPTCHA_UNSOLVABLE"),
    (b"<html>502</html>", "unrecognised", "<html>502</html>"),
    (b'{"status":1}', "unrecognised", '{"status":1}'),
])
def test_replies_read_as_the_wire_reads_its_own(raw: bytes, outcome: str, text: str) -> None:
    parsed = tasks.parse(raw)
    assert (parsed.outcome.value, parsed.text) == (outcome, text)
