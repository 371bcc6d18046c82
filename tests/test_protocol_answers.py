"""Answer formats without I/O: decode(encode(x)) == x for every answer type, plain and json=1.

Plain-format limits are those answers.py documents (a GeeTest/Cloudflare value holding the literal
next marker; no user agent in plain reCAPTCHA Enterprise / CaptchaFox): only those are filtered out.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from capgate.protocol import answers, wire
from capgate.protocol.answers import (
    Answer,
    AnswerFormatError,
    AnswerKind,
    CellsAnswer,
    ClearanceAnswer,
    GeeTestAnswer,
    ObjectAnswer,
    TextAnswer,
    TokenAnswer,
)

# Text with the characters the formats use as separators, plus non-ASCII, weighted so that examples
# hit them often.
SEPARATORS = "|;:,={}[]\"\\ \n\t\r"
tricky = st.text(alphabet=st.sampled_from(SEPARATORS) | st.characters(codec="utf-8"), max_size=12)
markers = st.sampled_from(["challenge:", ",validate:", ",seccode:", "cf_clearance=", ";user_agent=",
                           "|jordan", "OK|", "CAPCHA_NOT_READY", "ERROR_ZERO_BALANCE"])
text = st.lists(tricky | markers | st.sampled_from(SEPARATORS), max_size=6).map("".join)

json_scalars = (st.none() | st.booleans() | st.integers(-(2**60), 2**60)
                | st.floats(allow_nan=False, allow_infinity=False) | text)
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(text, inner, max_size=3), max_leaves=8)

text_answers = st.builds(TextAnswer, text)
token_answers = st.builds(TokenAnswer, text)
token_ua_answers = st.builds(TokenAnswer, text, text)
geetest_answers = st.builds(GeeTestAnswer, text, text, text)
clearance_answers = st.builds(ClearanceAnswer, text, text)
cells_answers = st.builds(CellsAnswer, st.lists(st.integers(-5, 10**12), max_size=20).map(tuple))
object_answers = st.builds(ObjectAnswer, st.dictionaries(text, json_values, max_size=5))
any_answer = (text_answers | token_answers | token_ua_answers | geetest_answers | clearance_answers
              | cells_answers | object_answers)


def kind_of(answer: Answer) -> AnswerKind:
    """The kind a task must have for this answer to be its own (a token with a user agent: TOKEN_UA)."""
    if isinstance(answer, TokenAnswer):
        return AnswerKind.TOKEN if answer.user_agent is None else AnswerKind.TOKEN_UA
    return {TextAnswer: AnswerKind.TEXT, GeeTestAnswer: AnswerKind.GEETEST, ClearanceAnswer: AnswerKind.CLEARANCE,
            CellsAnswer: AnswerKind.CELLS, ObjectAnswer: AnswerKind.OBJECT}[type(answer)]


def stored(answer: Answer, kind: AnswerKind) -> str:
    """An answer as the store keeps it: its json=1 fields, as JSON text the way the store writes it."""
    return json.dumps(answers.encode_json(answer, kind), ensure_ascii=False)


def plain_representable(answer: Answer) -> bool:
    """The documented limits of the plain format, and nothing else."""
    if isinstance(answer, TokenAnswer):
        return answer.user_agent is None
    if isinstance(answer, GeeTestAnswer):
        return ",validate:" not in answer.challenge and ",seccode:" not in answer.seccode
    if isinstance(answer, ClearanceAnswer):
        return ";user_agent=" not in answer.cf_clearance
    return True


# ----------------------------------------------------------------------------------- answers module


@settings(max_examples=300)
@given(any_answer)
@example(GeeTestAnswer("abc123", "def456", "ghi789|jordan"))
@example(ClearanceAnswer("abc123", "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36"))
@example(TextAnswer("a|b;c:d,e ÄÖÜ 中文 🙂"))
@example(TokenAnswer("03AGdBq24|PBCbw;x:y,z", "UA; with; semicolons"))
@example(ClearanceAnswer("cf_clearance=x;user_agent=y", "UA"))
def test_json_round_trip(answer: Answer) -> None:
    kind = kind_of(answer)
    fields = answers.encode_json(answer, kind)
    # through real JSON text, as a client receives it
    body = json.loads(answers.dumps({"status": 1, **fields}))
    assert answers.decode_json(kind, body) == answer


@settings(max_examples=300)
@given(any_answer.filter(plain_representable))
@example(GeeTestAnswer("abc123", "def456", "ghi789|jordan"))
@example(GeeTestAnswer("a,seccode:b", "v,seccode:w", "s,validate:t"))
@example(ClearanceAnswer("abc123", "Mozilla/5.0 (X11; Linux x86_64;user_agent=x) Gecko"))
@example(TextAnswer("OK|CAPCHA_NOT_READY|ERROR_ZERO_BALANCE"))
def test_plain_round_trip(answer: Answer) -> None:
    kind = kind_of(answer)
    assert answers.decode_plain(kind, answers.encode_plain(answer)) == answer


@given(token_ua_answers)
def test_plain_token_ua_keeps_the_token(answer: TokenAnswer) -> None:
    """The documented plain limit: the user agent does not travel, the token does."""
    decoded = answers.decode_plain(AnswerKind.TOKEN_UA, answers.encode_plain(answer))
    assert decoded == TokenAnswer(answer.token)


@settings(max_examples=300)
@given(any_answer, st.sampled_from(["plain", "json"]))
@example(GeeTestAnswer("c", "v", "s|jordan"), "plain")
@example(TextAnswer("x|y"), "plain")
@example(TextAnswer(" two words "), "plain")  # phrase=1 answers: spaces are part of the answer
@example(TextAnswer("\n"), "plain")
@example(ClearanceAnswer("cf_clearance=x;user_agent=y", "UA"), "json")  # json has no marker limit
def test_wire_round_trip(answer: Answer, mode: str) -> None:
    """From the stored answer through the server's reply and the client's body parser: the whole path."""
    kind = kind_of(answer)
    if mode == "plain" and not plain_representable(answer):
        return
    body, content_type = wire.solved(kind, stored(answer, kind)).render(mode == "json")
    assert content_type == (wire.JSON_TYPE if mode == "json" else wire.PLAIN_TYPE)
    parsed = wire.parse(body)
    assert parsed.outcome is wire.Outcome.OK
    assert parsed.answer(kind) == answer


@settings(max_examples=300)
@given(any_answer, st.sampled_from(list(AnswerKind)))
@example(TokenAnswer("t"), AnswerKind.TOKEN_UA)  # a UA-bound token sent without its user agent
@example(TokenAnswer("t", "UA"), AnswerKind.TOKEN)
@example(ObjectAnswer({"x": 1.0, "y": [1e300, -0.0]}), AnswerKind.OBJECT)
def test_stored_answer_renders_as_the_typed_answer(answer: Answer, kind: AnswerKind) -> None:
    """A poll renders the stored fields straight to bytes: exactly the bytes the typed answer gives."""
    if kind is not kind_of(answer) and not (isinstance(answer, TokenAnswer) and kind in (AnswerKind.TOKEN,
                                                                                          AnswerKind.TOKEN_UA)):
        return
    fields = answers.encode_json(answer, kind)
    plain = "OK|" + answers.encode_plain(answer)
    assert wire.solved(kind, stored(answer, kind)).render(False)[0] == plain.encode()
    assert wire.solved(kind, stored(answer, kind)).render(True)[0] == answers.dumps({"status": 1, **fields}).encode()
    priced = wire.solved(kind, stored(answer, kind), "0.001")
    assert priced.render(False)[0] == f"{plain}|0.001".encode()
    assert priced.render(True)[0] == answers.dumps({"status": 1, **fields, "price": "0.001"}).encode()


# ----------------------------------------------------------------------------------- exact shapes


def test_plain_shapes_match_the_source_document() -> None:
    assert answers.encode_plain(TextAnswer("abc123")) == "abc123"
    assert (answers.encode_plain(GeeTestAnswer("abc123", "def456", "ghi789"))
            == "challenge:abc123,validate:def456,seccode:ghi789")
    assert (answers.encode_plain(ClearanceAnswer("abc123", "Mozilla/5.0 (X; Y)"))
            == "cf_clearance=abc123;user_agent=Mozilla/5.0 (X; Y)")
    assert answers.encode_plain(CellsAnswer((1, 4, 7))) == "[1,4,7]"
    assert answers.encode_plain(ObjectAnswer({"answer": "a", "challenge_id": "b"})) == \
        '{"answer":"a","challenge_id":"b"}'


def test_json_shapes() -> None:
    assert answers.encode_json(TextAnswer("é")) == {"request": "é"}
    assert answers.encode_json(TokenAnswer("t")) == {"request": "t"}
    assert answers.encode_json(TokenAnswer("t", "UA")) == {"request": "t", "result": "t", "user_agent": "UA"}
    # Enterprise without a known UA still carries `result` (the SDK reads it)
    assert answers.encode_json(TokenAnswer("t"), AnswerKind.TOKEN_UA) == {"request": "t", "result": "t"}
    assert answers.encode_json(GeeTestAnswer("c", "v", "s|jordan")) == {
        "request": {"challenge": "c", "validate": "v", "seccode": "s|jordan"}}
    assert answers.encode_json(ClearanceAnswer("cf", "UA; x")) == {
        "request": "cf", "result": "cf", "user_agent": "UA; x"}
    assert answers.encode_json(CellsAnswer((1, 4, 7))) == {"request": "[1,4,7]"}
    assert answers.encode_json(ObjectAnswer({"a": 1})) == {"request": {"a": 1}}
    assert answers.dumps({"a": "é", "b": [1, 2]}) == '{"a":"é","b":[1,2]}'


def test_geetest_seccode_with_pipe_jordan() -> None:
    payload = "challenge:abc123,validate:def456,seccode:ghi789|jordan"
    assert answers.decode_plain(AnswerKind.GEETEST, payload) == GeeTestAnswer("abc123", "def456", "ghi789|jordan")
    parsed = wire.parse(b"OK|" + payload.encode())
    assert parsed.answer(AnswerKind.GEETEST).seccode == "ghi789|jordan"  # type: ignore[union-attr]


def test_cloudflare_user_agent_with_semicolons() -> None:
    ua = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120"
    parsed = wire.parse(f"OK|cf_clearance=abc123;user_agent={ua}")
    assert parsed.answer(AnswerKind.CLEARANCE) == ClearanceAnswer("abc123", ua)


def test_decode_json_tolerates_other_services_spellings() -> None:
    assert answers.decode_json(AnswerKind.TEXT, {"status": 1, "request": 12345}) == TextAnswer("12345")
    assert answers.decode_json(AnswerKind.GEETEST, {"status": 1, "request": {
        "geetest_challenge": "c", "geetest_validate": "v", "geetest_seccode": "s"}}) == GeeTestAnswer("c", "v", "s")
    assert answers.decode_json(AnswerKind.GEETEST, {"status": 1, "request": '{"challenge":"c","validate":"v",'
                                                    '"seccode":"s"}'}) == GeeTestAnswer("c", "v", "s")
    assert answers.decode_json(AnswerKind.GEETEST, {
        "status": 1, "request": "challenge:c,validate:v,seccode:s|jordan"}) == GeeTestAnswer("c", "v", "s|jordan")
    assert answers.decode_json(AnswerKind.CELLS, {"status": 1, "request": [1, 4, 7]}) == CellsAnswer((1, 4, 7))
    assert answers.decode_json(AnswerKind.OBJECT, {"status": 1, "request": '{"a":"b"}'}) == ObjectAnswer({"a": "b"})
    assert answers.decode_json(AnswerKind.TOKEN_UA, {"status": 1, "request": "t", "useragent": "U"}) == \
        TokenAnswer("t", "U")
    assert answers.decode_json(AnswerKind.CLEARANCE, {
        "status": 1, "request": "cf_clearance=a;user_agent=U; x"}) == ClearanceAnswer("a", "U; x")


@pytest.mark.parametrize(("kind", "payload"), [
    (AnswerKind.GEETEST, "abc"),
    (AnswerKind.GEETEST, "challenge:a,seccode:b"),
    (AnswerKind.CLEARANCE, "abc123"),
    (AnswerKind.CLEARANCE, "cookie=a;user_agent=b"),
    (AnswerKind.CELLS, "click:3/6/8"),
    (AnswerKind.CELLS, '["1"]'),
    (AnswerKind.CELLS, "{}"),
    (AnswerKind.OBJECT, "[1]"),
    (AnswerKind.OBJECT, "not json"),
])
def test_malformed_plain_payloads_raise(kind: AnswerKind, payload: str) -> None:
    with pytest.raises(AnswerFormatError):
        answers.decode_plain(kind, payload)


@pytest.mark.parametrize(("kind", "body"), [
    (AnswerKind.TEXT, {"status": 1, "request": None}),
    (AnswerKind.TEXT, {"status": 1, "request": {"a": 1}}),
    (AnswerKind.TOKEN, {"status": 1, "request": True}),
    (AnswerKind.GEETEST, {"status": 1, "request": {"challenge": "c"}}),
    (AnswerKind.CLEARANCE, {"status": 1, "request": "cf"}),  # no user agent anywhere
    (AnswerKind.CELLS, {"status": 1, "request": "[1.5]"}),
    (AnswerKind.OBJECT, {"status": 1, "request": "x"}),
])
def test_malformed_json_bodies_raise(kind: AnswerKind, body: dict[str, Any]) -> None:
    with pytest.raises(AnswerFormatError):
        answers.decode_json(kind, body)
