"""Bad input (issue item 7): each gets its documented code with HTTP 200, never a 500 or a traceback,
and the service keeps answering afterwards.

Against the shared in-process app (tests/appkit.py), but for the one test of HTTP framing (a declared
body over the limit, sent over a socket), which needs the shared real server."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.appkit import AppHost
from tests.fixtures import (
    MODES,
    PAGEURL,
    Api,
    Mode,
    b64,
    error_body,
    expect,
    expect_error,
    multipart,
    nonce,
    png,
    png_bomb,
    raw_request,
    split_response,
    task_id_of,
)
from tests.serverproc import ServerProcess

TOKEN = {"method": "turnstile", "sitekey": "0x4AAAA", "pageurl": PAGEURL}


@pytest.fixture(scope="module")
def http(app: AppHost) -> Iterator[httpx.Client]:
    with app.client() as client:
        yield client


@pytest.fixture(scope="module")
def key(app: AppHost) -> str:
    return app.make_key(threads=100, balance="3")


@pytest.fixture()
def api(app: AppHost, http: httpx.Client, key: str) -> Iterator[Api]:
    api = Api(http, app.base_url, key)
    yield api
    # whatever the test sent, the server is still there and still right
    expect(api.res({"action": "getbalance"}), b"3.00", "plain")


_server_keys: dict[str, str] = {}


def server_key(server: ServerProcess) -> str:
    """A sandbox key on the shared real server, made once through its CLI."""
    if server.base_url not in _server_keys:
        _server_keys[server.base_url] = server.create_key(threads=100, balance="3")
    return _server_keys[server.base_url]


def query(key: str, mode: Mode, **extra: str) -> dict[str, str]:
    params = {"key": key, **extra}
    if mode == "json":
        params["json"] = "1"
    return params


# ------------------------------------------------------------------------------------------ multipart

BOUNDARY = "xYzZY"
MALFORMED_MULTIPART = {
    "garbage": (f"multipart/form-data; boundary={BOUNDARY}", b"this is not multipart at all"),
    "no-boundary-param": ("multipart/form-data", b"--xYzZY\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\n1\r\n"
                                                 b"--xYzZY--\r\n"),
    "ends-early": (f"multipart/form-data; boundary={BOUNDARY}",
                   b"--xYzZY\r\nContent-Disposition: form-data; name=\"method\"\r\n\r\nbase64\r\n--xYzZY\r\n"
                   b"Content-Disposition: form-data; name=\"body\"\r\n\r\niVBORw0KGgo"),
    "no-closing-boundary": (f"multipart/form-data; boundary={BOUNDARY}",
                            b"--xYzZY\r\nContent-Disposition: form-data; name=\"method\"\r\n\r\nbase64\r\n"),
    "part-without-name": (f"multipart/form-data; boundary={BOUNDARY}",
                          b"--xYzZY\r\nContent-Disposition: form-data\r\n\r\nvalue\r\n--xYzZY--\r\n"),
    "part-without-disposition": (f"multipart/form-data; boundary={BOUNDARY}",
                                 b"--xYzZY\r\nContent-Type: text/plain\r\n\r\nvalue\r\n--xYzZY--\r\n"),
    "wrong-boundary": (f"multipart/form-data; boundary={BOUNDARY}",
                       b"--other\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\n1\r\n--other--\r\n"),
    "bad-header-line": (f"multipart/form-data; boundary={BOUNDARY}",
                        b"--xYzZY\r\nno colon here\r\n\r\n1\r\n--xYzZY--\r\n"),
    "too-many-parts": (f"multipart/form-data; boundary={BOUNDARY}",
                       b"".join(b"--xYzZY\r\nContent-Disposition: form-data; name=\"p%d\"\r\n\r\nv\r\n" % i
                                for i in range(400)) + b"--xYzZY--\r\n"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED_MULTIPART))
@pytest.mark.parametrize("mode", MODES)
def test_malformed_multipart(api: Api, mode: Mode, case: str) -> None:
    content_type, body = MALFORMED_MULTIPART[case]
    response = api.client.post(api.base_url + "/in.php", params=query(api.key, mode), content=body,
                               headers={"content-type": content_type})
    expect_error(response, "ERROR_UPLOAD", mode)


@pytest.mark.parametrize("mode", MODES)
def test_malformed_multipart_on_res_php(api: Api, mode: Mode) -> None:
    content_type, body = MALFORMED_MULTIPART["garbage"]
    response = api.client.post(api.base_url + "/res.php", params=query(api.key, mode, action="getbalance"),
                               content=body, headers={"content-type": content_type})
    assert response.status_code == 200
    assert response.content == error_body("ERROR_UPLOAD", mode)


def test_multipart_with_every_field_works(api: Api) -> None:
    """The control: a well-formed multipart body built the same way is accepted."""
    body, headers = multipart({"key": api.key, "method": "base64", "body": b64(png(seed=77)), "n": nonce()})
    task_id_of(api.client.post(api.base_url + "/in.php", content=body, headers=headers))


# ------------------------------------------------------------------------------------------ base64


@pytest.mark.parametrize("body", ["@@@@", "not base64 at all!", "iVBORw0KGgo=A", "data:image/png;base64,%%%",
                                  "data:image/png;base64,", "====", "\u00e9\u00e9\u00e9\u00e9"])
@pytest.mark.parametrize("mode", MODES)
def test_invalid_base64(api: Api, mode: Mode, body: str) -> None:
    expect_error(api.submit({"method": "base64", "body": body}, mode, "form"), "ERROR_UPLOAD", mode)


def test_base64_as_clients_really_send_it(api: Api) -> None:
    """Line breaks, '+' turned into ' ' by a careless form encoder, missing padding: all accepted."""
    encoded = b64(png(seed=123))
    variants = ["\n".join(encoded[i:i + 76] for i in range(0, len(encoded), 76)),
                encoded.replace("+", " "), encoded.rstrip("="), "data:image/png;base64," + encoded]
    for i, variant in enumerate(variants):
        task_id_of(api.submit({"method": "base64", "body": variant, "n": str(i) + nonce()}, transport="form"))


# ------------------------------------------------------------------------------------------ encodings


@pytest.mark.parametrize("mode", MODES)
def test_non_utf8_in_the_query(api: Api, mode: Mode) -> None:
    for endpoint, extra in (("in.php", "&method=turnstile&sitekey=%ff%fe&pageurl=x"),
                            ("res.php", "&action=get&id=%c3%28"), ("in.php", "&%ff=1&method=turnstile")):
        url = f"{api.base_url}/{endpoint}?key={api.key}{'&json=1' if mode == 'json' else ''}{extra}"
        expect_error(api.client.get(url), "ERROR_BAD_PARAMETERS", mode)


@pytest.mark.parametrize("mode", MODES)
def test_non_utf8_in_the_body(api: Api, mode: Mode) -> None:
    url = f"{api.base_url}/in.php" + ("?json=1" if mode == "json" else "")
    form = {"content-type": "application/x-www-form-urlencoded"}
    for body in (f"key={api.key}&method=turnstile&sitekey=%ff&pageurl=x".encode(),
                 f"key={api.key}&method=turnstile&pageurl=x&sitekey=".encode() + b"\xff\xfe",
                 f"key={api.key}&method=turnstile&pageurl=x&sitekey=".encode() + b"\xc0\xaf"):
        expect_error(api.client.post(url, content=body, headers=form), "ERROR_BAD_PARAMETERS", mode)
    # multipart: a field value, a field name and a file name that are not UTF-8
    value_body, headers = multipart({"key": api.key, "method": "turnstile", "sitekey": b"\xff\xfe"})
    name_body, _ = multipart({"key": api.key, "method": "turnstile", "X": "1"})
    file_body, _ = multipart({"key": api.key, "method": "post"}, {"file": ("X.png", png())})
    for body in (value_body, name_body.replace(b'name="X"', b'name="\xff"'),
                 file_body.replace(b'filename="X.png"', b'filename="\xff.png"')):
        expect_error(api.client.post(url, content=body, headers=headers), "ERROR_BAD_PARAMETERS", mode)


def test_utf8_text_is_kept(api: Api) -> None:
    """Percent-encoded UTF-8, raw UTF-8 in a urlencoded body (curl -d) and UTF-8 multipart all work."""
    answer = "Ünïcødé|中文"
    percent = api.submit({"method": "base64", "body": b64(png(seed=40)),
                          "textinstructions": f"sandbox-answer-{answer}"}, transport="form")
    raw_body = (f"key={api.key}&method=turnstile&sitekey=k&action=é中&pageurl={PAGEURL}&n={nonce()}").encode()
    raw = api.client.post(api.base_url + "/in.php", content=raw_body,
                          headers={"content-type": "application/x-www-form-urlencoded"})
    parts = api.submit({"method": "base64", "body": b64(png(seed=41)),
                        "textinstructions": f"sandbox-answer-{answer}"}, transport="multipart")
    for response in (percent, parts):
        assert api.get(task_id_of(response), wait=10).content == f"OK|{answer}".encode()
    task_id_of(raw)


@pytest.mark.parametrize("mode", MODES)
def test_unsupported_content_type(api: Api, mode: Mode) -> None:
    response = api.client.post(api.base_url + "/in.php", params=query(api.key, mode),
                               content=b"<method>turnstile</method>", headers={"content-type": "application/xml"})
    expect_error(response, "ERROR_BAD_PARAMETERS", mode)


# ------------------------------------------------------------------------------------------ missing pieces


@pytest.mark.parametrize("mode", MODES)
def test_missing_key(app: AppHost, mode: Mode) -> None:
    with app.client("127.0.3.1") as client:
        extra = {"json": "1"} if mode == "json" else {}
        expect_error(client.post(app.url("in.php"), data={**TOKEN, **extra}), "ERROR_WRONG_USER_KEY", mode)
        expect_error(client.get(app.url("res.php"), params={"action": "getbalance", **extra}),
                     "ERROR_WRONG_USER_KEY", mode)
        expect_error(client.post(app.url("res.php"), content=b"", params=extra), "ERROR_WRONG_USER_KEY", mode)


@pytest.mark.parametrize("mode", MODES)
def test_missing_action(api: Api, mode: Mode) -> None:
    expect_error(api.res({}, mode), "ERROR_EMPTY_ACTION", mode)
    expect_error(api.res({"id": "12345678"}, mode, "form"), "ERROR_EMPTY_ACTION", mode)


@pytest.mark.parametrize("method", ["nope", "BASE64", "userrecaptcha2", "../etc/passwd", "é", " "])
@pytest.mark.parametrize("mode", MODES)
def test_unknown_method(api: Api, mode: Mode, method: str) -> None:
    expect_error(api.submit({"method": method, "body": b64(png()), "pageurl": PAGEURL}, mode, "form"),
                 "ERROR_BAD_PARAMETERS", mode)


@pytest.mark.parametrize(("data", "code"), [
    (b"<html><body>hello</body></html>" * 10, "ERROR_IMAGE_TYPE_NOT_SUPPORTED"),
    (bytes(range(256)), "ERROR_IMAGE_TYPE_NOT_SUPPORTED"),
    (b"\xff\xd8\xff" + b"\x00" * 300, "ERROR_IMAGE_TYPE_NOT_SUPPORTED"),  # JPEG magic, no JPEG
    (b"GIF89a" + b"\xff" * 300, "ERROR_IMAGE_TYPE_NOT_SUPPORTED"),
    (b"RIFF\x00\x00\x00\x00WEBP" + b"\x00" * 300, "ERROR_IMAGE_TYPE_NOT_SUPPORTED"),
    (png()[:120], "ERROR_IMAGE_TYPE_NOT_SUPPORTED"),  # truncated PNG
], ids=["html", "bytes", "fake-jpeg", "fake-gif", "fake-webp", "truncated-png"])
@pytest.mark.parametrize("mode", MODES)
def test_bytes_that_are_not_an_image(api: Api, mode: Mode, data: bytes, code: str) -> None:
    expect_error(api.submit({"method": "base64", "body": b64(data)}, mode, "form"), code, mode)
    expect_error(api.submit({"method": "post"}, mode, files={"file": ("c.png", data)}), code, mode)


@pytest.mark.parametrize(("width", "height"), [(20000, 20000), (50000, 50000), (1001, 1), (1, 65535)])
@pytest.mark.parametrize("mode", MODES)
def test_decompression_bomb(api: Api, mode: Mode, width: int, height: int) -> None:
    bomb = png_bomb(width, height)
    assert len(bomb) < 2000
    expect_error(api.submit({"method": "base64", "body": b64(bomb)}, mode, "form"),
                 "ERROR_IMAGE_DIMENSIONS_TOO_LARGE", mode)
    expect_error(api.submit({"method": "post"}, mode, files={"file": ("bomb.png", bomb)}),
                 "ERROR_IMAGE_DIMENSIONS_TOO_LARGE", mode)
    grid = {"method": "base64", "grid_size": "3x3", "body": b64(bomb)}
    expect_error(api.submit(grid, mode, "form"), "ERROR_IMAGE_DIMENSIONS_TOO_LARGE", mode)


def test_bomb_among_bls_images(api: Api) -> None:
    params = {"method": "bls", "instructions": "664"}
    for i in range(1, 10):
        params[f"image_base64_{i}"] = "data:image/png;base64," + b64(png(width=40, height=40, seed=i))
    params["image_base64_5"] = "data:image/png;base64," + b64(png_bomb())
    expect_error(api.submit(params, transport="form"), "ERROR_IMAGE_DIMENSIONS_TOO_LARGE", "plain")


# ------------------------------------------------------------------------------------------ size


@pytest.mark.parametrize("mode", MODES)
def test_declared_body_over_the_default_limit(server: ServerProcess, mode: Mode) -> None:
    """HTTP framing: a real server process, answering before the declared body is all there."""
    key = server_key(server)
    host = server.base_url.removeprefix("http://")
    path = "/in.php" + ("?json=1" if mode == "json" else "")
    head = (f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/x-www-form-urlencoded\r\n"
            f"Content-Length: {64 * 1024 * 1024}\r\n\r\n").encode()
    status, _, body = split_response(raw_request(server.base_url, head, [b"key=" + key.encode()]))
    assert status == 200
    assert body == error_body("ERROR_TOO_BIG_CAPTCHA_FILESIZE", mode)


@pytest.mark.parametrize("mode", MODES)
def test_parameter_too_long(api: Api, mode: Mode) -> None:
    expect_error(api.submit({**TOKEN, "data": "k" * (64 * 1024 + 1)}, mode, "form"), "ERROR_BAD_PARAMETERS", mode)


@pytest.mark.parametrize("mode", MODES)
def test_bad_res_php_arguments(api: Api, mode: Mode) -> None:
    expect_error(api.res({"action": "get", "id": "12345678", "wait": "soon"}, mode), "ERROR_BAD_PARAMETERS", mode)
    too_many = ",".join(str(10_000_000_000 + i) for i in range(101))
    expect_error(api.res({"action": "get", "ids": too_many}, mode, "form"), "ERROR_BAD_PARAMETERS", mode)
    expect_error(api.res({"action": "get", "ids": ",,,"}, mode), "ERROR_BAD_PARAMETERS", mode)


def test_control_characters_are_just_text(api: Api) -> None:
    task_id = task_id_of(api.submit({**TOKEN, "data": "a\x00b\r\nc\t", "n": nonce()}, transport="form"))
    assert api.get(task_id, wait=10).content.startswith(b"OK|SANDBOX-FAKE-TOKEN-")


@pytest.mark.parametrize("mode", MODES)
def test_magic_words_in_odd_places(api: Api, mode: Mode) -> None:
    """Values that look like protocol bodies are stored as text, never echoed as replies."""
    task_id = task_id_of(api.submit({**TOKEN, "pageurl": "OK|123", "action": "CAPCHA_NOT_READY", "n": nonce()},
                                    mode, "form"), mode)
    assert api.get(task_id, wait=10).content.startswith(b"OK|SANDBOX-FAKE-TOKEN-")


@pytest.mark.parametrize("ids", [False, True], ids=["id", "ids"])
def test_wait_nan_is_refused(api: Api, ids: bool) -> None:
    task_id = api.submit_id({**TOKEN, "sandbox": "sandbox-slow-3", "n": nonce()})
    params = {"action": "get", "ids" if ids else "id": task_id, "wait": "nan"}
    response = api.client.get("/res.php", params={"key": api.key, **params})  # at once, not after 3 s
    expect_error(response, "ERROR_BAD_PARAMETERS", "plain")


def test_batch_long_poll_returns_when_one_settles(api: Api) -> None:
    slow = api.submit_id({**TOKEN, "sandbox": "sandbox-slow-60", "n": nonce()})
    quick = api.submit_id({**TOKEN, "sandbox": "sandbox-answer-x", "n": nonce()})
    response = api.res({"action": "get", "ids": f"{slow},{quick}", "wait": "10"})
    first, second = response.content.split(b"|")
    assert first == b"CAPCHA_NOT_READY"
    assert second.startswith(b"SANDBOX-FAKE-TOKEN-")
