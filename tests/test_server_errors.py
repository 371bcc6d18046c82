"""Every §6 code a single node returns, at the right moment, exact bytes in both modes (the shared
in-process app, tests/appkit.py).

Codes that need special settings (IP ban, deadlines, retention, prices, the thread-cap code) are in
test_server_limits.py, on apps of their own. Requests with wrong keys come from their own
loopback addresses so that the shared 127.0.0.1 is never banned.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from capgate.server.service import AUTH_MEMO_S
from tests.appkit import AppHost
from tests.fixtures import (
    MODES,
    PAGEURL,
    TRANSPORTS,
    Api,
    Mode,
    Transport,
    b64,
    error_body,
    expect,
    expect_error,
    image_bytes,
    nonce,
    png,
    png_bomb,
    task_id_of,
)

_addresses = itertools.count(10)


def fresh_address() -> str:
    """A loopback address no other test uses (strikes count per address)."""
    return f"127.0.1.{next(_addresses)}"


@pytest.fixture(scope="module")
def http(app: AppHost) -> Iterator[httpx.Client]:
    with app.client() as client:
        yield client


@pytest.fixture(scope="module")
def api(app: AppHost, http: httpx.Client) -> Api:
    return Api(http, app.base_url, app.make_key(threads=200, balance="10"))


TOKEN = {"method": "turnstile", "sitekey": "0x4AAAA", "pageurl": PAGEURL}


# ------------------------------------------------------------------------------------------ keys


@pytest.mark.parametrize("key", ["", "short", "x" * 31, "x" * 33, "é" * 32, "0123456789abcdef0123456789abcde!"])
@pytest.mark.parametrize("mode", MODES)
def test_wrong_user_key(app: AppHost, mode: Mode, key: str) -> None:
    with app.client(fresh_address()) as client:
        api = Api(client, app.base_url, key)
        expect_error(api.submit(TOKEN, mode), "ERROR_WRONG_USER_KEY", mode)
        expect_error(api.res({"action": "getbalance"}, mode), "ERROR_WRONG_USER_KEY", mode)


@pytest.mark.parametrize("mode", MODES)
def test_missing_key(app: AppHost, mode: Mode) -> None:
    with app.client(fresh_address()) as client:
        query = {"json": "1"} if mode == "json" else {}
        expect_error(client.get(app.url("in.php"), params={**query, **TOKEN}), "ERROR_WRONG_USER_KEY", mode)
        expect_error(client.get(app.url("res.php"), params={**query, "action": "get", "id": "12345678"}),
                     "ERROR_WRONG_USER_KEY", mode)


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("mode", MODES)
def test_unknown_key(app: AppHost, mode: Mode, transport: Transport) -> None:
    with app.client(fresh_address()) as client:
        api = Api(client, app.base_url, "0123456789abcdef0123456789abcdef")
        expect_error(api.submit(TOKEN, mode, transport), "ERROR_KEY_DOES_NOT_EXIST", mode)
        expect_error(api.res({"action": "getbalance"}, mode, transport), "ERROR_KEY_DOES_NOT_EXIST", mode)


def test_disabled_key(app: AppHost, http: httpx.Client) -> None:
    key = app.make_key()
    api = Api(http, app.base_url, key)
    task_id = api.submit_id({**TOKEN, "n": nonce()})
    account = app.account_id(key)
    app.run(app.store.update_account(account, disabled=True))  # what `capgate keys disable` does
    time.sleep(AUTH_MEMO_S + 0.05)  # the service remembers a key's account this long
    for mode in MODES:
        expect_error(api.submit({**TOKEN, "n": nonce()}, mode), "ERROR_KEY_DOES_NOT_EXIST", mode)
        expect_error(api.res({"action": "getbalance"}, mode), "ERROR_KEY_DOES_NOT_EXIST", mode)
        expect_error(api.get(task_id, mode), "ERROR_KEY_DOES_NOT_EXIST", mode)
    app.run(app.store.update_account(account, disabled=False))
    time.sleep(AUTH_MEMO_S + 0.05)
    expect(api.res({"action": "getbalance"}), b"0.00", "plain")


# ------------------------------------------------------------------------------------------ capacity


@pytest.mark.parametrize("mode", MODES)
def test_thread_cap_reached(app: AppHost, http: httpx.Client, mode: Mode) -> None:
    """§0: the account's own cap → ERROR_ZERO_BALANCE, and threadsinfo shows working >= threads."""
    api = Api(http, app.base_url, app.make_key(threads=2))
    for _ in range(2):
        api.submit_id({**TOKEN, "sandbox": "sandbox-slow-60", "n": nonce()})
    expect_error(api.submit({**TOKEN, "n": nonce()}, mode), "ERROR_ZERO_BALANCE", mode)
    expect(api.res({"action": "threadsinfo"}, "json"),
           b'{"status":1,"request":"OK","threads":2,"working_threads":2}', "json")
    # other keys are not affected
    other = Api(http, app.base_url, app.make_key(threads=1))
    task_id_of(other.submit({**TOKEN, "n": nonce()}))


def test_thread_freed_when_task_settles(app: AppHost, http: httpx.Client) -> None:
    api = Api(http, app.base_url, app.make_key(threads=1))
    first = api.submit_id({**TOKEN, "n": nonce()})
    api.settle(first)
    api.settle(api.submit_id({**TOKEN, "n": nonce(), "sandbox": "sandbox-unsolvable"}))
    task_id_of(api.submit({**TOKEN, "n": nonce()}))


@pytest.mark.parametrize("mode", MODES)
def test_sandbox_noslot(api: Api, mode: Mode) -> None:
    expect_error(api.submit({**TOKEN, "sandbox": "sandbox-noslot"}, mode), "ERROR_NO_SLOT_AVAILABLE", mode)
    expect_error(api.submit({"method": "base64", "body": b64(png()), "textinstructions": "sandbox-noslot"}, mode),
                 "ERROR_NO_SLOT_AVAILABLE", mode)


@pytest.mark.parametrize("code", ["ERROR_ZERO_BALANCE", "ERROR_CAPTCHAIMAGE_BLOCKED", "ERROR_BAD_PROXY"])
@pytest.mark.parametrize("mode", MODES)
def test_sandbox_submit_errors(api: Api, mode: Mode, code: str) -> None:
    expect_error(api.submit({**TOKEN, "sandbox": f"sandbox-error-{code}"}, mode), code, mode)


# ------------------------------------------------------------------------------------------ parameters


@pytest.mark.parametrize(("params", "code"), [
    ({"method": "userrecaptcha", "googlekey": "6Le"}, "ERROR_PAGEURL"),
    ({"method": "userrecaptcha", "googlekey": "6Le", "pageurl": "  "}, "ERROR_PAGEURL"),
    ({"method": "turnstile", "sitekey": "k"}, "ERROR_PAGEURL"),
    ({"method": "cloudflare_challenge", "proxy": "1.2.3.4:80", "proxytype": "HTTP"}, "ERROR_PAGEURL"),
    ({"method": "geetest", "gt": "g", "challenge": "c"}, "ERROR_PAGEURL"),
    ({"method": "userrecaptcha", "pageurl": PAGEURL}, "ERROR_GOOGLEKEY"),
    ({"method": "userrecaptcha", "googlekey": "", "pageurl": PAGEURL}, "ERROR_GOOGLEKEY"),
    ({"method": "userrecaptcha", "googlekey": " ", "pageurl": PAGEURL, "version": "v3"}, "ERROR_GOOGLEKEY"),
    ({"method": "turnstile", "pageurl": PAGEURL}, "ERROR_GOOGLEKEY"),
    ({"method": "hcaptcha", "pageurl": PAGEURL}, "ERROR_GOOGLEKEY"),
    ({"method": "geetest", "challenge": "c", "pageurl": PAGEURL}, "ERROR_GOOGLEKEY"),
    ({"method": "userrecaptcha", "googlekey": PAGEURL, "pageurl": PAGEURL}, "ERROR_WRONG_GOOGLEKEY"),
    ({"method": "userrecaptcha", "googlekey": "6Le 6Le", "pageurl": PAGEURL, "version": "v3"},
     "ERROR_WRONG_GOOGLEKEY"),
    ({"method": "turnstile", "googlekey": '<div data-sitekey="0x4AAA">', "pageurl": PAGEURL},
     "ERROR_WRONG_GOOGLEKEY"),
    ({"method": "hcaptcha", "sitekey": "é" * 8, "pageurl": PAGEURL}, "ERROR_WRONG_GOOGLEKEY"),
    ({"method": "geetest", "gt": "g" * 129, "challenge": "c", "pageurl": PAGEURL}, "ERROR_WRONG_GOOGLEKEY"),
    ({"method": "funcaptcha", "publickey": "69A21A01.CC7B", "pageurl": PAGEURL}, "ERROR_WRONG_GOOGLEKEY"),
    ({"method": "nope"}, "ERROR_BAD_PARAMETERS"),
    ({"method": ""}, "ERROR_BAD_PARAMETERS"),
    ({}, "ERROR_BAD_PARAMETERS"),
    ({"method": "cloudflare_challenge", "pageurl": PAGEURL}, "ERROR_BAD_PARAMETERS"),  # proxy is mandatory
    ({"method": "captchafox", "sitekey": "k", "pageurl": PAGEURL}, "ERROR_BAD_PARAMETERS"),
    ({"method": "geetest", "gt": "g", "pageurl": PAGEURL}, "ERROR_BAD_PARAMETERS"),  # no challenge
    ({"method": "lemin", "captcha_id": "c", "pageurl": PAGEURL}, "ERROR_BAD_PARAMETERS"),  # no div_id
    ({"method": "bls", **{f"image_base64_{i}": b64(png(seed=i)) for i in range(1, 10)}}, "ERROR_BAD_PARAMETERS"),
    ({"method": "base64", "body": b64(png()), "numeric": "9"}, "ERROR_BAD_PARAMETERS"),
    ({"method": "base64", "body": b64(png()), "min_len": "abc"}, "ERROR_BAD_PARAMETERS"),
    ({"method": "base64", "body": b64(png()), "min_len": "8", "max_len": "4"}, "ERROR_BAD_PARAMETERS"),
    ({"method": "base64", "body": b64(png()), "phrase": "2"}, "ERROR_BAD_PARAMETERS"),
], ids=lambda v: v if isinstance(v, str) else None)
@pytest.mark.parametrize("mode", MODES)
def test_bad_parameters(api: Api, mode: Mode, params: dict[str, str], code: str) -> None:
    expect_error(api.submit(params, mode, "form"), code, mode)


# ------------------------------------------------------------------------------------------ images


@pytest.mark.parametrize(("how", "data", "code"), [
    ("base64", b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, "ERROR_ZERO_CAPTCHA_FILESIZE"),
    ("file", b"", "ERROR_ZERO_CAPTCHA_FILESIZE"),
    ("file", b"GIF89a" + b"\x00" * 50, "ERROR_ZERO_CAPTCHA_FILESIZE"),
    ("base64", b"\x89PNG\r\n\x1a\n" + bytes(1024 * 1024 + 1), "ERROR_TOO_BIG_CAPTCHA_FILESIZE"),
    ("file", b"\x89PNG\r\n\x1a\n" + bytes(1024 * 1024 + 1), "ERROR_TOO_BIG_CAPTCHA_FILESIZE"),
    ("base64", image_bytes("PNG", 1001, 10), "ERROR_IMAGE_DIMENSIONS_TOO_LARGE"),
    ("file", image_bytes("GIF", 10, 1200), "ERROR_IMAGE_DIMENSIONS_TOO_LARGE"),
    ("base64", image_bytes("JPEG", 1500, 20), "ERROR_IMAGE_DIMENSIONS_TOO_LARGE"),
    ("base64", png_bomb(), "ERROR_IMAGE_DIMENSIONS_TOO_LARGE"),
    ("base64", b"this is plain text, not an image at all" * 5, "ERROR_IMAGE_TYPE_NOT_SUPPORTED"),
    ("file", b"%PDF-1.4\n" + b"0" * 200, "ERROR_IMAGE_TYPE_NOT_SUPPORTED"),
    ("base64", image_bytes("TIFF"), "ERROR_IMAGE_TYPE_NOT_SUPPORTED"),
    ("base64", b"\x89PNG\r\n\x1a\n" + b"\x00" * 200, "ERROR_IMAGE_TYPE_NOT_SUPPORTED"),  # corrupt PNG
    ("base64", b"BM" + b"\x00" * 200, "ERROR_IMAGE_TYPE_NOT_SUPPORTED"),
], ids=lambda v: v if isinstance(v, str) else None)
@pytest.mark.parametrize("mode", MODES)
def test_image_codes(api: Api, mode: Mode, how: str, data: bytes, code: str) -> None:
    if how == "file":
        response = api.submit({"method": "post"}, mode, files={"file": ("captcha.png", data)})
    else:
        response = api.submit({"method": "base64", "body": b64(data)}, mode, "form")
    expect_error(response, code, mode)


@pytest.mark.parametrize("filename", ["captcha.txt", "captcha.exe", "captcha.svg", "captcha.png.php"])
@pytest.mark.parametrize("mode", MODES)
def test_wrong_file_extension(api: Api, mode: Mode, filename: str) -> None:
    response = api.submit({"method": "post"}, mode, files={"file": (filename, png())})
    expect_error(response, "ERROR_WRONG_FILE_EXTENSION", mode)


@pytest.mark.parametrize("filename", ["c.PNG", "c.jpeg", "c.JPG", "c.gif", "c.webp", "c.bmp", "captcha"])
def test_accepted_file_names(api: Api, filename: str) -> None:
    task_id_of(api.submit({"method": "post", "n": nonce()}, files={"file": (filename, png(seed=5))}))


@pytest.mark.parametrize(("params", "files"), [
    ({"method": "post"}, None),  # no file at all
    ({"method": "base64"}, None),  # no body
    ({"method": "base64", "body": ""}, None),
    ({"method": "base64", "body": "!!!!not base64!!!!"}, None),
    ({"method": "base64", "body": "iVBORw0KGgo=A"}, None),  # bad length
    ({"method": "base64", "body": "data:image/png;base64,"}, None),
    ({"method": "post"}, {"other": ("c.png", png())}),  # file under the wrong part name
    ({"method": "bls", "instructions": "664", **{f"image_base64_{i}": b64(png(seed=i)) for i in range(1, 9)}},
     None),  # 8 of the 9 images
], ids=["no-file", "no-body", "empty-body", "bad-base64", "bad-length", "empty-data-uri", "wrong-part",
        "bls-8-images"])
@pytest.mark.parametrize("mode", MODES)
def test_upload(api: Api, mode: Mode, params: dict[str, str], files: dict[str, tuple[str, bytes]] | None) -> None:
    expect_error(api.submit(params, mode, "form", files), "ERROR_UPLOAD", mode)


# ------------------------------------------------------------------------------------------ duplicates


@pytest.mark.parametrize("mode", MODES)
def test_bad_duplicates(app: AppHost, api: Api, mode: Mode) -> None:
    params = {**TOKEN, "sandbox": "sandbox-slow-60", "n": nonce()}
    task_id_of(api.submit(params))
    expect_error(api.submit(params, mode), "ERROR_BAD_DUPLICATES", mode)
    # the same bytes by another transport are the same task
    expect_error(api.submit(params, mode, "multipart"), "ERROR_BAD_DUPLICATES", mode)
    # a different task, or the same task by another account, is not a duplicate
    task_id_of(api.submit({**params, "sitekey": "other"}))
    other = Api(api.client, api.base_url, app.make_key())
    task_id_of(other.submit(params))


@pytest.mark.parametrize("mode", MODES)
def test_image_duplicates(api: Api, mode: Mode) -> None:
    image = png(seed=int(nonce()[:6], 16))
    params = {"method": "base64", "body": b64(image), "textinstructions": "sandbox-slow-60"}
    task_id_of(api.submit(params, transport="form"))
    expect_error(api.submit(params, mode, "form"), "ERROR_BAD_DUPLICATES", mode)
    expect_error(api.submit({"method": "post", "textinstructions": "sandbox-slow-60"}, mode,
                            files={"file": ("c.png", image)}), "ERROR_BAD_DUPLICATES", mode)


def test_resubmit_after_settling_is_not_a_duplicate(api: Api) -> None:
    params = {**TOKEN, "n": nonce()}
    first = api.submit_id(params)
    api.settle(first)
    assert api.submit_id(params) != first


# ------------------------------------------------------------------------------------------ results


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("mode", MODES)
def test_unsolvable(api: Api, mode: Mode, transport: Transport) -> None:
    task_id = api.submit_id({**TOKEN, "sandbox": "sandbox-unsolvable", "n": nonce()})
    api.settle(task_id)
    expect_error(api.get(task_id, mode, transport=transport), "ERROR_CAPTCHA_UNSOLVABLE", mode)


@pytest.mark.parametrize("mode", MODES)
def test_image_unsolvable(api: Api, mode: Mode) -> None:
    task_id = api.submit_id({"method": "base64", "body": b64(png(seed=99)), "n": nonce(),
                             "textinstructions": "sandbox-unsolvable"})
    expect_error(api.get(task_id, mode, wait=10), "ERROR_CAPTCHA_UNSOLVABLE", mode)


@pytest.mark.parametrize("code", ["ERROR_PROXY_CONNECTION_FAILED", "ERROR_TOKEN_EXPIRED"])
@pytest.mark.parametrize("mode", MODES)
def test_settle_errors(api: Api, mode: Mode, code: str) -> None:
    task_id = api.submit_id({**TOKEN, "sandbox": f"sandbox-error-{code}", "n": nonce()})
    expect_error(api.get(task_id, mode, wait=10), code, mode)
    expect_error(api.get(task_id, mode, action="get2"), code, mode)


@pytest.mark.parametrize("task_id", ["abc", "12a45678", "-12345678", "1.5", "1e9", "٣٤٥٦٧٨٩٠", "0x1234567",
                                     "1" * 19, "12345678 9"])
@pytest.mark.parametrize("mode", MODES)
def test_wrong_id_format(api: Api, mode: Mode, task_id: str) -> None:
    for action in ("get", "get2", "reportgood", "reportbad"):
        expect_error(api.res({"action": action, "id": task_id}, mode), "ERROR_WRONG_ID_FORMAT", mode)
    expect_error(api.res({"action": "get", "ids": f"12345678901,{task_id}"}, mode), "ERROR_WRONG_ID_FORMAT", mode)


@pytest.mark.parametrize("mode", MODES)
def test_wrong_captcha_id(api: Api, mode: Mode) -> None:
    for task_id in ("12345678", "99999999999", "0"):
        expect_error(api.get(task_id, mode), "ERROR_WRONG_CAPTCHA_ID", mode)
        expect_error(api.get(task_id, mode, action="get2"), "ERROR_WRONG_CAPTCHA_ID", mode)
    expect_error(api.res({"action": "get"}, mode), "ERROR_WRONG_CAPTCHA_ID", mode)  # no id at all


@pytest.mark.parametrize("mode", MODES)
def test_ids_are_scoped_to_their_account(app: AppHost, api: Api, mode: Mode) -> None:
    task_id = api.submit_id({**TOKEN, "n": nonce()})
    api.settle(task_id)
    pending = api.submit_id({**TOKEN, "n": nonce(), "sandbox": "sandbox-slow-60"})
    other = Api(api.client, app.base_url, app.make_key())
    for tid in (task_id, pending):
        expect_error(other.get(tid, mode), "ERROR_WRONG_CAPTCHA_ID", mode)
        expect_error(other.get(tid, mode, action="get2"), "ERROR_WRONG_CAPTCHA_ID", mode)
        expect_error(other.res({"action": "reportbad", "id": tid}, mode), "ERROR_WRONG_CAPTCHA_ID", mode)
    expect(other.res({"action": "get", "ids": f"{task_id},{pending}"}, mode),
           b"ERROR_WRONG_CAPTCHA_ID|ERROR_WRONG_CAPTCHA_ID" if mode == "plain"
           else b'{"status":1,"request":"ERROR_WRONG_CAPTCHA_ID|ERROR_WRONG_CAPTCHA_ID"}', mode)
    # the owner still sees it
    assert api.get(task_id).content.startswith(b"OK|")


@pytest.mark.parametrize("action", [None, "", "  ", "nope", "GET", "get ids"])
@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("mode", MODES)
def test_empty_action(api: Api, mode: Mode, transport: Transport, action: str | None) -> None:
    params = {"id": "12345678"} if action is None else {"action": action, "id": "12345678"}
    expect_error(api.res(params, mode, transport), "ERROR_EMPTY_ACTION", mode)


def test_res_php_errors_are_checked_after_the_key(app: AppHost) -> None:
    """A wrong key wins over a missing action or a bad id (key first, then the call)."""
    with app.client(fresh_address()) as client:
        api = Api(client, app.base_url, "0123456789abcdef0123456789abcdef")
        expect_error(api.res({}), "ERROR_KEY_DOES_NOT_EXIST", "plain")
        expect_error(api.get("abc"), "ERROR_KEY_DOES_NOT_EXIST", "plain")
        expect_error(api.submit({"method": "nope"}), "ERROR_KEY_DOES_NOT_EXIST", "plain")


def test_get_without_wait_on_a_fresh_task(api: Api) -> None:
    """2captcha-python polls right after submitting: the answer is CAPCHA_NOT_READY, not an error."""
    task_id = api.submit_id({**TOKEN, "n": nonce(), "sandbox": "sandbox-slow-5"})
    assert api.get(task_id).content == error_body("CAPCHA_NOT_READY", "plain")


@pytest.mark.parametrize("addr", ["", "ftp://files.example.com/", "javascript:alert(1)"])
@pytest.mark.parametrize("mode", MODES)
def test_ip_addres(api: Api, mode: Mode, addr: str) -> None:
    """Pingback registration refuses what is not an http(s) host (2captcha's code, its spelling)."""
    expect_ip_addres(api.res({"action": "add_pingback", "addr": addr}, mode), mode)


def expect_ip_addres(response: httpx.Response, mode: Mode) -> None:
    """ERROR_IP_ADDRES; in json mode its error_text goes on to say why (tests/test_security.py)."""
    if mode == "plain":
        expect_error(response, "ERROR_IP_ADDRES", mode)
        return
    body = response.json()
    assert (body["status"], body["request"]) == (0, "ERROR_IP_ADDRES")
    assert body["error_text"].startswith("The pingback address is not acceptable. ")


@pytest.mark.parametrize("mode", MODES)
def test_malformed_ipv6_pingback_address(api: Api, mode: Mode) -> None:
    expect_ip_addres(api.res({"action": "add_pingback", "addr": "http://[::1"}, mode), mode)
    expect_error(api.submit({**TOKEN, "pingback": "http://[::1/cb", "n": nonce()}, mode), "ERROR_BAD_PARAMETERS",
                 mode)


def test_thread_cap_holds_under_concurrent_submits(app: AppHost, http: httpx.Client) -> None:
    api = Api(http, app.base_url, app.make_key(threads=3))

    def one(i: int) -> bytes:
        return api.submit({**TOKEN, "sandbox": "sandbox-slow-60", "n": f"{i}-{nonce()}"}).content

    with ThreadPoolExecutor(max_workers=12) as pool:
        bodies = list(pool.map(one, range(12)))
    assert sum(body.startswith(b"OK|") for body in bodies) == 3
    assert sorted(set(bodies) - {b for b in bodies if b.startswith(b"OK|")}) == [b"ERROR_ZERO_BALANCE"]
