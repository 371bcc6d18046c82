"""JSON bodies at in.php and res.php, as 2captcha's own JS clients send them: ``application/json``, a JSON
object under ``text/plain`` (fetch's type for a string), or under ``multipart/form-data`` with no
boundary. Exact bytes on the wire; the parsing rules on their own below."""

from __future__ import annotations

import json

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from capgate.protocol.codes import C
from capgate.server.params import BadParameters, BadUpload, params_in_head, parse_body
from tests.appkit import AppHost
from tests.fixtures import b64, dumps, error_body, png, task_id_of

SITEKEY = "6Le-wvkSAAAAAPBMRTvw0Q4Muexq9bi0DJwx_mJ-"


@pytest.fixture()
def http(app: AppHost) -> httpx.Client:
    return app.http


@pytest.fixture()
def key(app: AppHost) -> str:
    return app.make_key()


def post(http: httpx.Client, path: str, body: bytes, content_type: str | None,
         params: dict[str, str] | None = None) -> httpx.Response:
    headers = {"content-type": content_type} if content_type else {}
    response = http.post(path, params=params, content=body, headers=headers)
    assert response.status_code == 200
    return response


def test_the_official_js_client_body(app: AppHost, http: httpx.Client, key: str) -> None:
    """@2captcha/captcha-solver's imageCaptcha: everything, json=1 and header_acao=1 too, in the body."""
    body = dumps({"key": key, "json": 1, "header_acao": 1, "soft_id": 4587, "method": "base64",
                  "body": b64(png(seed=11)), "textinstructions": "sandbox-answer-JSON"})
    made = post(http, "/in.php", body, "application/json")
    assert made.headers["content-type"] == "application/json"
    assert made.headers["access-control-allow-origin"] == "*"
    task_id = task_id_of(made, "json")
    poll = dumps({"key": key, "action": "get", "id": int(task_id), "json": 1, "wait": 5})
    answer = post(http, "/res.php", poll, "application/json")
    assert answer.content == b'{"status":1,"request":"JSON"}'
    assert "access-control-allow-origin" not in answer.headers


def test_a_json_object_under_text_plain_with_the_rest_in_the_query(http: httpx.Client, key: str) -> None:
    """The ``2captcha`` package: key and method in the query, ``{"body": ...}`` sent by fetch as text."""
    body = json.dumps({"body": b64(png(seed=12))}).encode()
    made = post(http, "/in.php", body, "text/plain;charset=UTF-8", {"key": key, "method": "base64"})
    task_id_of(made)  # OK|<id>, plain: json=1 was asked nowhere


def test_a_json_object_under_multipart_without_a_boundary(http: httpx.Client, key: str) -> None:
    body = dumps({"key": key, "method": "base64", "body": b64(png(seed=13)), "json": True})
    assert task_id_of(post(http, "/in.php", body, "multipart/form-data"), "json")


def test_numbers_and_booleans_become_protocol_strings(app: AppHost, http: httpx.Client, key: str) -> None:
    body = dumps({"key": key, "method": "userrecaptcha", "version": "v3", "googlekey": SITEKEY,
                  "pageurl": "https://site.test/json", "min_score": 0.3, "enterprise": False, "invisible": True,
                  "soft_id": 4587, "proxy": None})
    task_id = task_id_of(post(http, "/in.php", body, "application/json"))
    stored = app.run(app.store.get_task(app.account_id(key), int(task_id)))
    assert stored is not None and stored.method == "recaptcha_v3"
    assert stored.params["min_score"] == "0.3" and stored.params["enterprise"] == "0"
    assert "proxy" not in stored.params  # null: left out
    assert "invisible" not in stored.params  # a v2 option: reCAPTCHA v3's row does not store it


@pytest.mark.parametrize(("body", "content_type", "code"), [
    (b'[{"key": "x"}]', "application/json", C.BAD_PARAMETERS),
    (b'{"key": {"nested": 1}}', "application/json", C.BAD_PARAMETERS),
    (b'{"key": [1, 2]}', "text/plain", C.BAD_PARAMETERS),
    (b'{"key": "x", ', "application/json", C.BAD_PARAMETERS),
    (b'{"key": NaN}', "application/json", C.BAD_PARAMETERS),
    (b'{"key": "\xff"}', "application/json", C.BAD_PARAMETERS),
    (b'{"key": ["x"]}', "multipart/form-data", C.UPLOAD),
])
def test_a_body_that_is_not_a_flat_object_is_a_malformed_form(http: httpx.Client, body: bytes, content_type: str,
                                                              code: str) -> None:
    response = post(http, "/in.php", body, content_type, {"json": "1"})
    assert response.content == error_body(code, "json")
    if content_type != "multipart/form-data":  # res.php answers an unreadable multipart body alike
        assert post(http, "/res.php", body, content_type).content == error_body(code, "plain")


def test_a_refused_body_is_answered_in_the_mode_its_json_asked_for(app: AppHost, http: httpx.Client,
                                                                   key: str) -> None:
    over = "A" * (app.settings.body_limit + 10)
    body = b'{"key": "' + key.encode() + b'", "json": true, "header_acao": 1, "method": "base64", "body": "' \
        + over.encode() + b'"}'
    response = post(http, "/in.php", body, "application/json")
    assert response.content == error_body(C.TOO_BIG_CAPTCHA_FILESIZE, "json")
    assert response.headers["access-control-allow-origin"] == "*"


# ------------------------------------------------------------------------------------------ the rules


def test_json_scalars() -> None:
    params = parse_body("application/json", b'{"a": true, "b": false, "c": 12, "d": 2.0, "e": 0.25, "f": null,'
                                            b' "g": "text", "h": -3}')
    assert params.values == {"a": "1", "b": "0", "c": "12", "d": "2", "e": "0.25", "g": "text", "h": "-3"}


def test_urlencoded_text_plain_stays_a_form() -> None:
    assert parse_body("text/plain", b"a=1&b=%7B").values == {"a": "1", "b": "{"}
    assert parse_body("application/x-www-form-urlencoded", b'{"a":1}').values == {'{"a":1}': ""}


def test_errors_by_type() -> None:
    with pytest.raises(BadParameters):
        parse_body("application/json", b"1")
    with pytest.raises(BadUpload):
        parse_body("multipart/form-data", b'{"a": {}}')
    with pytest.raises(BadUpload):
        parse_body("multipart/form-data", b"a=1")  # no boundary and not JSON: as before


@pytest.mark.parametrize(("head", "seen"), [
    (b'{"json": 1, "header_acao": true, "body": "iVBOR', {"json": "1", "header_acao": "1"}),
    (b'{"json": 1', {}),  # the value may go on (10, 100): not read
    (b'{"json": 10, "key"', {"json": "10"}),
    (b'{"a": {"b": 1}, "json": 1}', {"json": "1"}),  # a nested value is skipped, not the rest
    (b'{"json": "1"}', {"json": "1"}),
    (b"[1, 2", {}),
    (b"", {}),
])
def test_params_in_a_cut_json_head(head: bytes, seen: dict[str, str]) -> None:
    assert params_in_head("application/json", head) == seen
    assert params_in_head("text/plain; charset=utf-8", head) == (seen if head.startswith(b"{") else {})


def test_a_body_nested_too_deep_is_a_malformed_form() -> None:
    with pytest.raises(BadParameters):
        parse_body("application/json", b'{"a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}")
    assert params_in_head("application/json", b'{"json": 1, "a": ' + b"[" * 100_000) == {"json": "1"}


_SCALARS = st.one_of(st.text(max_size=20), st.integers(-10**6, 10**6), st.booleans(), st.none(),
                     st.floats(allow_nan=False, allow_infinity=False))


@given(st.dictionaries(st.text(max_size=8), _SCALARS, max_size=8), st.integers(0, 400))
def test_a_cut_head_reads_a_subset_of_the_whole(members: dict[str, object], cut: int) -> None:
    raw = json.dumps(members).encode()
    whole = parse_body("application/json", raw).values
    assert params_in_head("application/json", raw) == whole
    head = params_in_head("application/json", raw[:cut])
    assert head.items() <= whole.items()
