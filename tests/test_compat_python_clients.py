"""Python clients beside the official SDKs, unmodified, against running capgate processes:
``python-rucaptcha`` in its default mode (2captcha's JSON task API at ``https://api.2captcha.com``, sync
and async) and ``captchatools`` 1.5.0 in 2captcha mode (in.php with a JSON body at
``http://2captcha.com``, balance over https). Their vendor hosts resolve to capgate here
(``tests.vendorkit``)."""

from __future__ import annotations

import base64
import socket
import time
import uuid
from collections.abc import Iterator
from typing import Any

import captchatools
import httpx
import pytest
from python_rucaptcha.control import Control
from python_rucaptcha.hcaptcha import HCaptcha
from python_rucaptcha.image_captcha import ImageCaptcha
from python_rucaptcha.re_captcha import ReCaptcha
from python_rucaptcha.turnstile import Turnstile

from capgate.solvers.sandbox import FAKE_USER_AGENT
from tests.fixtures import png
from tests.vendorkit import VendorServers, mapped_hosts, vendor_servers

SITEKEY = "6Le-wvkSAAAAAPBMRTvw0Q4Muexq9bi0DJwx_mJ-"


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VendorServers]:
    with vendor_servers(tmp_path_factory.mktemp("python-clients")) as found, mapped_hosts(found):
        yield found


@pytest.fixture()
def key(servers: VendorServers) -> str:
    return servers.tls.create_key(sandbox=True, threads=20, balance="3")


def _ready(result: dict[str, Any]) -> dict[str, Any]:
    assert result["errorId"] == 0 and result["status"] == "ready", result
    solution: dict[str, Any] = result["solution"]
    return solution


# ------------------------------------------------------------------------------------ python-rucaptcha


def test_rucaptcha_image_to_text(servers: VendorServers, key: str) -> None:
    tag = uuid.uuid4().hex[:10]
    result = ImageCaptcha(rucaptcha_key=key, sleep_time=1, comment=f"sandbox-answer-{tag}").captcha_handler(
        captcha_base64=png(seed=21))
    assert _ready(result) == {"text": tag}
    assert result["cost"] == "0.00" and result["ip"] == "127.0.0.1" and result["solveCount"] == 1
    task_id = result["taskId"]
    answer = httpx.get(servers.tls.url("res.php"), params={"key": key, "action": "get", "id": str(task_id)},
                       verify=True)  # SSL_CERT_FILE: the test CA
    assert answer.text == f"OK|{tag}"
    control = Control(rucaptcha_key=key)
    assert control.reportCorrect(id=task_id)["status"] == "success"
    assert control.getBalance()["balance"] == 3.0


def test_rucaptcha_tokens(key: str) -> None:
    recaptcha = ReCaptcha(rucaptcha_key=key, sleep_time=1, websiteURL="https://site.test/rc", websiteKey=SITEKEY,
                          method="RecaptchaV2TaskProxyless").captcha_handler()
    solution = _ready(recaptcha)
    assert solution["gRecaptchaResponse"].startswith("SANDBOX-FAKE-TOKEN-")
    turnstile = Turnstile(rucaptcha_key=key, sleep_time=1, websiteURL="https://site.test/ts",
                          websiteKey="0x4AAAAAAAC3DHQFLr1GavRN", userAgent=FAKE_USER_AGENT).captcha_handler()
    assert _ready(turnstile)["token"].startswith("SANDBOX-FAKE-TOKEN-")


async def test_rucaptcha_async(key: str) -> None:
    result = await HCaptcha(rucaptcha_key=key, sleep_time=1, websiteURL="https://site.test/hc",
                            websiteKey="a5f74b19-9e45-40e0-b45d-47ff91b7a6c2",
                            method="HCaptchaTaskProxyless").aio_captcha_handler()
    assert _ready(result)["token"].startswith("SANDBOX-FAKE-TOKEN-")
    assert (await Control(rucaptcha_key=key).aio_getBalance())["balance"] == 3.0


def test_rucaptcha_errors(key: str) -> None:
    unsolvable = ReCaptcha(rucaptcha_key=key, sleep_time=1, websiteURL="https://site.test/sandbox-unsolvable",
                           websiteKey=SITEKEY).captcha_handler()
    assert (unsolvable["errorId"], unsolvable["errorCode"]) == (12, "ERROR_CAPTCHA_UNSOLVABLE")
    wrong = ImageCaptcha(rucaptcha_key="0" * 32, sleep_time=1).captcha_handler(captcha_base64=png(seed=22))
    assert (wrong["errorId"], wrong["errorCode"]) == (1, "ERROR_KEY_DOES_NOT_EXIST")


# ------------------------------------------------------------------------------------------ captchatools


def test_captchatools_in_2captcha_mode(servers: VendorServers) -> None:
    key = servers.plain.create_key(sandbox=True, threads=20, balance="3")
    tls_key = servers.tls.create_key(sandbox=True, threads=20, balance="4")
    image = base64.b64encode(png(seed=23)).decode()
    harvester = captchatools.new_harvester(solving_site="2captcha", api_key=key, captcha_type="image")
    text = harvester.get_token(b64_img=image)  # POST http://2captcha.com/in.php, a JSON body with json=1
    assert isinstance(text, str) and text
    v2 = captchatools.new_harvester(solving_site="2captcha", api_key=key, captcha_type="v2", sitekey=SITEKEY,
                                    captcha_url="https://site.test/ct")
    assert v2.get_token().startswith("SANDBOX-FAKE-TOKEN-")
    # Its balance call alone goes to https://2captcha.com: the TLS process, with its own accounts.
    assert captchatools.new_harvester(solving_site="2captcha", api_key=tls_key).get_balance() == 4.0


def _response(conn: socket.socket) -> bytes:
    """One whole HTTP response from ``conn``: head, then the body its Content-Length gives."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(4096)
        assert chunk, f"closed after {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length:"))
    while len(body) < length:
        chunk = conn.recv(4096)
        assert chunk, f"closed after {data!r}"
        body += chunk
    return head + b"\r\n\r\n" + body


def test_a_kept_alive_connection_outlives_a_5_s_poll_interval(servers: VendorServers) -> None:
    """Clients poll every 5 s on one kept-alive connection (rucaptcha-2captcha waits exactly 5 s): the
    server must not close it at the moment the next poll is sent."""
    with socket.create_connection(("127.0.0.1", servers.plain.port), timeout=10) as conn:
        request = b"GET /healthz HTTP/1.1\r\nHost: 2captcha.com\r\n\r\n"
        conn.sendall(request)
        assert _response(conn).startswith(b"HTTP/1.1 200")
        time.sleep(6)  # past uvicorn's own 5 s keep-alive
        conn.sendall(request)
        assert _response(conn).startswith(b"HTTP/1.1 200")
