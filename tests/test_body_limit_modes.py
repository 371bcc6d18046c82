"""A body over the limit is answered in the mode it asked for (issue 16, item 7): ``json=1`` (and
``header_acao=1``) count from the query *or* from what was read of the body, as for any other
request. The official clients send ``json`` in the body, before the image.

In process (tests/appkit.py) for the bytes; one real server for the socket path, where the body is
declared far over the limit and only its first fields are ever sent.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from capgate.server.params import params_in_head
from tests.appkit import AppHost, app_host
from tests.fixtures import b64, error_body, expect_error, multipart, raw_request, split_response
from tests.serverproc import ServerProcess, start_server
from tests.storekit import sqlite_backend

LIMIT = 64 * 1024
BIG = b"\x89PNG\r\n\x1a\n" + bytes(LIMIT)  # over the limit whatever the encoding
KEY = "k" * 32


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppHost]:
    with app_host(sqlite_backend(tmp_path_factory.mktemp("body-modes")), body_limit=LIMIT) as app:
        yield app


@pytest.fixture(scope="module")
def wire(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    env = {"CAPGATE_OCR": "0", "CAPGATE_BODY_LIMIT": str(LIMIT)}
    with start_server(tmp_path_factory.mktemp("body-modes-wire"), env=env) as proc:
        yield proc


# ------------------------------------------------------------------------------------------ in process


@pytest.mark.parametrize("path", ["/in.php", "/solve.php"])
def test_json_in_a_form_body(host: AppHost, path: str) -> None:
    with host.client() as http:
        reply = http.post(path, data={"key": KEY, "json": "1", "method": "base64", "body": b64(BIG)})
    expect_error(reply, "ERROR_TOO_BIG_CAPTCHA_FILESIZE", "json")


def test_json_in_a_multipart_body_before_the_file(host: AppHost) -> None:
    body, headers = multipart({"key": KEY, "method": "post", "json": "1"}, {"file": ("big.png", BIG)})
    with host.client() as http:
        reply = http.post("/in.php", content=body, headers=headers)
    expect_error(reply, "ERROR_TOO_BIG_CAPTCHA_FILESIZE", "json")


def test_res_php_too(host: AppHost) -> None:
    with host.client() as http:
        reply = http.post("/res.php", data={"key": KEY, "json": "1", "action": "get", "padding": "p" * LIMIT})
    expect_error(reply, "ERROR_BAD_PARAMETERS", "json")


def test_the_body_wins_over_the_query(host: AppHost) -> None:
    with host.client() as http:
        reply = http.post("/in.php?json=1", data={"key": KEY, "json": "0", "method": "base64", "body": b64(BIG)})
    expect_error(reply, "ERROR_TOO_BIG_CAPTCHA_FILESIZE", "plain")


def test_header_acao_in_the_body(host: AppHost) -> None:
    with host.client() as http:
        reply = http.post("/in.php", data={"key": KEY, "header_acao": "1", "method": "base64", "body": b64(BIG)})
    expect_error(reply, "ERROR_TOO_BIG_CAPTCHA_FILESIZE", "plain")
    assert reply.headers["access-control-allow-origin"] == "*"


def test_without_json_it_stays_plain(host: AppHost) -> None:
    with host.client() as http:
        reply = http.post("/in.php", data={"key": KEY, "method": "base64", "body": b64(BIG)})
    expect_error(reply, "ERROR_TOO_BIG_CAPTCHA_FILESIZE", "plain")


# ------------------------------------------------------------------------------------------ the head of a body


@pytest.mark.parametrize(("content_type", "head", "expected"), [
    ("application/x-www-form-urlencoded", b"key=a&json=1&body=AAAA", {"key": "a", "json": "1"}),
    ("application/x-www-form-urlencoded", b"key=a&json=1", {"key": "a"}),  # the last field may be cut short
    ("", b"json=1&", {"json": "1"}),
    ("application/x-www-form-urlencoded", b"", {}),
    ("application/x-www-form-urlencoded", b"\xff=\xfe&json=1&x", {}),  # not UTF-8: nothing, no exception
    ("application/json", b'{"json": 1}', {"json": "1"}),  # a JSON head: its whole members (#15)
    ("multipart/form-data", b"--b\r\n", {}),  # no boundary parameter
])
def test_params_in_head(content_type: str, head: bytes, expected: dict[str, str]) -> None:
    assert params_in_head(content_type, head) == expected


def test_params_in_a_multipart_head() -> None:
    body, headers = multipart({"json": "1", "key": "abc"}, {"file": ("a.png", BIG)})
    cut = body[:body.index(b"filename") + 200]  # inside the file part
    assert params_in_head(headers["content-type"], cut) == {"json": "1", "key": "abc"}
    assert params_in_head(headers["content-type"], body[:20]) == {}
    assert params_in_head(headers["content-type"], b"garbage\r\n--nonsense") == {}


# ------------------------------------------------------------------------------------------ over a socket


def _head(server: ServerProcess, path: str, content_type: str) -> bytes:
    host = server.base_url.removeprefix("http://")
    return (f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {100 * 1024 * 1024}\r\n\r\n").encode()


def test_declared_over_the_limit_with_json_in_the_first_fields(wire: ServerProcess) -> None:
    """100 MB declared, the first fields sent, the rest never: the answer comes, in json."""
    head = _head(wire, "/in.php", "application/x-www-form-urlencoded")
    status, headers, body = split_response(raw_request(wire.base_url, head, [b"key=x&json=1&method=base64&body=AAAA"]))
    assert status == 200
    assert body == error_body("ERROR_TOO_BIG_CAPTCHA_FILESIZE", "json")
    assert headers["content-type"] == "application/json"


def test_declared_over_the_limit_multipart(wire: ServerProcess) -> None:
    start, headers = multipart({"key": "x", "json": "1", "method": "post"}, {"file": ("big.png", BIG)})
    head = _head(wire, "/in.php", headers["content-type"])
    status, _, body = split_response(raw_request(wire.base_url, head, [start[:start.index(b"filename") + 100]]))
    assert status == 200
    assert body == error_body("ERROR_TOO_BIG_CAPTCHA_FILESIZE", "json")
