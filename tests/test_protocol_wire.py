"""Bodies on the wire without I/O: every shape wire.parse meets, and the replies the server renders."""

from __future__ import annotations

import json

import pytest

from capgate.protocol import answers, wire
from capgate.protocol.answers import (
    Answer,
    AnswerKind,
    CellsAnswer,
    ClearanceAnswer,
    GeeTestAnswer,
    ObjectAnswer,
    TextAnswer,
    TokenAnswer,
)
from capgate.protocol.wire import Outcome


@pytest.mark.parametrize(("body", "outcome", "text"), [
    # plain
    (b"OK|73548291", Outcome.OK, "73548291"),
    (b"OK|abc123", Outcome.OK, "abc123"),
    (b"OK|03AGdBq24|PBCbw|x", Outcome.OK, "03AGdBq24|PBCbw|x"),  # first "|" only
    (b"OK|", Outcome.OK, ""),
    ("OK|éß中".encode(), Outcome.OK, "éß中"),
    (b"CAPCHA_NOT_READY", Outcome.NOT_READY, "CAPCHA_NOT_READY"),
    (b"CAPTCHA_NOT_READY", Outcome.NOT_READY, "CAPCHA_NOT_READY"),  # tolerated spelling
    (b"ERROR_WRONG_USER_KEY", Outcome.ERROR, "ERROR_WRONG_USER_KEY"),
    (b"ERROR_ZERO_BALANCE", Outcome.ERROR, "ERROR_ZERO_BALANCE"),
    (b"IP_BANNED", Outcome.ERROR, "IP_BANNED"),
    (b"REPORT_NOT_RECORDED", Outcome.ERROR, "REPORT_NOT_RECORDED"),
    (b"ERROR_SOMETHING_NEW", Outcome.ERROR, "ERROR_SOMETHING_NEW"),  # unknown but code-shaped
    (b"ERROR: 1001", Outcome.ERROR, "ERROR: 1001"),
    # json
    (b'{"status":1,"request":"73548291"}', Outcome.OK, "73548291"),
    (b'{"status":1,"request":73548291}', Outcome.OK, "73548291"),  # integer id (production userrecaptcha)
    (b'{"status":"1","request":"x"}', Outcome.OK, "x"),
    (b'{"status":1,"request":{"challenge":"c","validate":"v","seccode":"s|jordan"}}', Outcome.OK,
     '{"challenge":"c","validate":"v","seccode":"s|jordan"}'),
    (b'{"status":1,"request":[1,4,7]}', Outcome.OK, "[1,4,7]"),
    (b'{"status":0,"request":"CAPCHA_NOT_READY"}', Outcome.NOT_READY, "CAPCHA_NOT_READY"),
    (b'{"status":0,"request":"CAPTCHA_NOT_READY"}', Outcome.NOT_READY, "CAPCHA_NOT_READY"),
    (b'{"status":0,"request":"ERROR_CAPTCHA_UNSOLVABLE"}', Outcome.ERROR, "ERROR_CAPTCHA_UNSOLVABLE"),
    (b'{"status":0,"request":"ERROR_KEY_DOES_NOT_EXIST","error_text":"x"}', Outcome.ERROR,
     "ERROR_KEY_DOES_NOT_EXIST"),
    # neither: wait and retry (the docs' generic rule), never an exception
    (b"<html><body><h1>502 Bad Gateway</h1></body></html>", Outcome.UNRECOGNISED,
     "<html><body><h1>502 Bad Gateway</h1></body></html>"),
    (b"", Outcome.UNRECOGNISED, ""),
    (b"   ", Outcome.UNRECOGNISED, "   "),
    (b"{not json", Outcome.UNRECOGNISED, "{not json"),
    (b"[1,2]", Outcome.UNRECOGNISED, "[1,2]"),
    (b'{"status":"x","request":"y"}', Outcome.UNRECOGNISED, '{"status":"x","request":"y"}'),
    (b'{"status":0,"request":5}', Outcome.UNRECOGNISED, '{"status":0,"request":5}'),
    (b"Internal Server Error", Outcome.UNRECOGNISED, "Internal Server Error"),
    (b"\xff\xfe garbage", Outcome.UNRECOGNISED, "\ufffd\ufffd garbage"),
])
def test_parse(body: bytes, outcome: Outcome, text: str) -> None:
    parsed = wire.parse(body)
    assert parsed.outcome is outcome
    assert parsed.text == text
    assert wire.parse(body.decode("utf-8", errors="replace")).outcome is outcome


def test_parse_keeps_the_json_body() -> None:
    parsed = wire.parse(b'{"status":1,"request":"t","result":"t","user_agent":"UA; x"}')
    assert parsed.body == {"status": 1, "request": "t", "result": "t", "user_agent": "UA; x"}
    assert parsed.answer(AnswerKind.TOKEN_UA) == TokenAnswer("t", "UA; x")


def test_first_pipe_split_for_tokens_with_pipes() -> None:
    token = "03AGdBq24PBCbw|with|pipes"
    assert wire.parse(f"OK|{token}").answer(AnswerKind.TOKEN) == TokenAnswer(token)


def test_split_batch() -> None:
    assert wire.split_batch("abc12|CAPCHA_NOT_READY|ERROR_CAPTCHA_UNSOLVABLE", 3) == [
        "abc12", "CAPCHA_NOT_READY", "ERROR_CAPTCHA_UNSOLVABLE"]
    assert wire.split_batch("only", 1) == ["only"]
    # an answer with "|" inside makes the count wrong: the caller asks one by one
    assert wire.split_batch("challenge:c,validate:v,seccode:s|jordan|CAPCHA_NOT_READY", 2) is None


# ------------------------------------------------------------------------------------------ rendering


def test_render_ok_and_codes() -> None:
    assert wire.ok("73548291").render(False) == (b"OK|73548291", "text/plain; charset=utf-8")
    assert wire.ok("73548291").render(True) == (b'{"status":1,"request":"73548291"}', "application/json")
    assert wire.code("CAPCHA_NOT_READY").render(False) == (b"CAPCHA_NOT_READY", "text/plain; charset=utf-8")
    assert wire.code("CAPCHA_NOT_READY").render(True) == (
        b'{"status":0,"request":"CAPCHA_NOT_READY"}', "application/json")
    body, _ = wire.code("ERROR_ZERO_BALANCE").render(True)
    assert body.startswith(b'{"status":0,"request":"ERROR_ZERO_BALANCE"')
    assert wire.code("ERROR_ZERO_BALANCE").render(False)[0] == b"ERROR_ZERO_BALANCE"
    assert wire.bare("1.234").render(False)[0] == b"1.234"
    assert wire.bare("1.234").render(True)[0] == b'{"status":1,"request":"1.234"}'


@pytest.mark.parametrize(("answer", "kind", "plain", "json_body"), [
    (TextAnswer("abc123"), AnswerKind.TEXT, b"OK|abc123", b'{"status":1,"request":"abc123"}'),
    (TextAnswer("é|x"), AnswerKind.TEXT, "OK|é|x".encode(), '{"status":1,"request":"é|x"}'.encode()),
    (TokenAnswer("T"), AnswerKind.TOKEN, b"OK|T", b'{"status":1,"request":"T"}'),
    (TokenAnswer("T", "U; A"), AnswerKind.TOKEN_UA, b"OK|T",
     b'{"status":1,"request":"T","result":"T","user_agent":"U; A"}'),
    (GeeTestAnswer("c", "v", "s|jordan"), AnswerKind.GEETEST, b"OK|challenge:c,validate:v,seccode:s|jordan",
     b'{"status":1,"request":{"challenge":"c","validate":"v","seccode":"s|jordan"}}'),
    (ClearanceAnswer("cf", "U; A"), AnswerKind.CLEARANCE, b"OK|cf_clearance=cf;user_agent=U; A",
     b'{"status":1,"request":"cf","result":"cf","user_agent":"U; A"}'),
    (CellsAnswer((1, 4, 7)), AnswerKind.CELLS, b"OK|[1,4,7]", b'{"status":1,"request":"[1,4,7]"}'),
    (ObjectAnswer({"answer": "a", "challenge_id": "b"}), AnswerKind.OBJECT,
     b'OK|{"answer":"a","challenge_id":"b"}', b'{"status":1,"request":{"answer":"a","challenge_id":"b"}}'),
])
def test_render_answers(answer: Answer, kind: AnswerKind, plain: bytes, json_body: bytes) -> None:
    # stored as the store writes it: the json=1 fields, with json.dumps's default spacing
    reply = wire.solved(kind, json.dumps(answers.encode_json(answer, kind), ensure_ascii=False))
    assert reply.render(False) == (plain, wire.PLAIN_TYPE)
    assert reply.render(True) == (json_body, wire.JSON_TYPE)


def test_render_get2_and_batch() -> None:
    reply = wire.solved(AnswerKind.TEXT, '{"request": "abc"}', "0.001")
    assert reply.render(False)[0] == b"OK|abc|0.001"
    assert reply.render(True)[0] == b'{"status":1,"request":"abc","price":"0.001"}'
    batch = wire.batch(["abc", "CAPCHA_NOT_READY", "ERROR_CAPTCHA_UNSOLVABLE"])
    assert batch.render(False)[0] == b"abc|CAPCHA_NOT_READY|ERROR_CAPTCHA_UNSOLVABLE"
    assert batch.render(True)[0] == b'{"status":1,"request":"abc|CAPCHA_NOT_READY|ERROR_CAPTCHA_UNSOLVABLE"}'
