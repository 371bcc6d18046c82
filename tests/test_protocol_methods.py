"""The method registry and the code table, without I/O (PROTOCOL.md §2, §3, §6, §7)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from capgate.protocol import codes, methods
from capgate.protocol.answers import AnswerKind
from capgate.protocol.codes import CODES, Advice, C, Endpoint, Family
from capgate.protocol.methods import BY_NAME, METHODS, canonical_params, resolve


@pytest.mark.parametrize(("params", "name"), [
    # images
    ({"method": "post"}, "normal"),
    ({"method": "base64"}, "normal"),
    ({"method": "base64", "grid_size": "3x3", "instructions": "cars"}, "grid"),
    ({"method": "base64", "grid_size": "4x4", "img_type": "recaptcha"}, "grid"),
    ({"method": "base64", "recaptcha": "1"}, "grid"),
    ({"method": "post", "recaptcha": "1", "recaptcharows": "3", "recaptchacols": "3"}, "grid"),
    ({"method": "base64", "img_type": "recaptcha"}, "grid"),
    ({"method": "base64", "recaptcha": "0"}, "normal"),
    ({"method": "bls"}, "bls"),
    # reCAPTCHA family, told apart by version / enterprise
    ({"method": "userrecaptcha"}, "recaptcha_v2"),
    ({"method": "userrecaptcha", "version": "v2", "enterprise": "0"}, "recaptcha_v2"),  # 2cp always adds these
    ({"method": "userrecaptcha", "invisible": "1"}, "recaptcha_v2"),
    ({"method": "userrecaptcha", "enterprise": "1"}, "recaptcha_v2_enterprise"),
    ({"method": "userrecaptcha", "version": "v2", "enterprise": "true"}, "recaptcha_v2_enterprise"),
    ({"method": "userrecaptcha", "version": "v3"}, "recaptcha_v3"),
    ({"method": "userrecaptcha", "version": "V3", "enterprise": "0"}, "recaptcha_v3"),
    ({"method": "userrecaptcha", "version": "v3", "enterprise": "1"}, "recaptcha_v3_enterprise"),
    # the rest
    ({"method": "turnstile"}, "turnstile"),
    ({"method": "cloudflare_challenge"}, "cloudflare_challenge"),
    ({"method": "geetest"}, "geetest"),
    ({"method": "geetest", "version": "4"}, "geetest_v4"),
    ({"method": "geetest", "version": "v4"}, "geetest_v4"),
    ({"method": "geetest_v4"}, "geetest_v4"),
    ({"method": "captchafox"}, "captchafox"),
    ({"method": "friendly_captcha"}, "friendly_captcha"),
    ({"method": "friendly_captcha", "version": "v2"}, "friendly_captcha"),
    ({"method": "lemin"}, "lemin"),
    ({"method": "hcaptcha"}, "hcaptcha"),
    ({"method": "funcaptcha"}, "funcaptcha"),
])
def test_every_wire_spelling_resolves(params: dict[str, str], name: str) -> None:
    method = resolve(params)
    assert method is not None
    assert method.name == name


@pytest.mark.parametrize("params", [{}, {"method": ""}, {"method": "nope"}, {"method": "POST"},
                                    {"method": "userrecaptcha_v3"}, {"method": "normal"}])
def test_unknown_methods_resolve_to_none(params: dict[str, str]) -> None:
    assert resolve(params) is None


@pytest.mark.parametrize("method", METHODS, ids=lambda m: m.name)
def test_each_row_is_selected_by_what_a_client_sends(method: methods.Method) -> None:
    params = {"method": method.wire[0], **{name: "x" for name in method.required}, **method.sets}
    assert resolve(params) is method


def test_rows_and_wire_names() -> None:
    assert len(BY_NAME) == len(METHODS)
    wanted = {"post", "base64", "bls", "userrecaptcha", "turnstile", "cloudflare_challenge", "geetest", "geetest_v4",
              "captchafox", "friendly_captcha", "lemin", "hcaptcha"}
    assert wanted <= methods.WIRE_NAMES
    for method in METHODS:
        assert method.required, method.name
        assert set(method.image_params) <= set(method.required) | set(method.optional) | {"body"}
        for param, code in method.missing_codes.items():
            assert code in CODES, (method.name, param)
        assert method.price == Decimal(0)  # §0: thread plans by default


@pytest.mark.parametrize(("name", "answer", "required", "initial_wait", "deadline", "verb"), [
    ("normal", AnswerKind.TEXT, {"body"}, 1.0, 90.0, "POST"),
    ("grid", AnswerKind.CELLS, {"body"}, 1.0, 90.0, "POST"),
    ("bls", AnswerKind.CELLS, {"instructions", *(f"image_base64_{i}" for i in range(1, 10))}, 1.0, 90.0, "POST"),
    ("recaptcha_v2", AnswerKind.TOKEN, {"googlekey", "pageurl"}, 15.0, 300.0, "GET"),
    ("recaptcha_v2_enterprise", AnswerKind.TOKEN_UA, {"googlekey", "pageurl"}, 15.0, 300.0, "POST"),
    ("recaptcha_v3", AnswerKind.TOKEN, {"googlekey", "pageurl"}, 10.0, 300.0, "GET"),
    ("recaptcha_v3_enterprise", AnswerKind.TOKEN_UA, {"googlekey", "pageurl"}, 10.0, 300.0, "POST"),
    ("turnstile", AnswerKind.TOKEN, {"sitekey", "pageurl"}, 10.0, 300.0, "GET"),
    ("cloudflare_challenge", AnswerKind.CLEARANCE, {"pageurl", "proxy", "proxytype"}, 15.0, 300.0, "POST"),
    ("geetest", AnswerKind.GEETEST, {"gt", "challenge", "pageurl"}, 15.0, 300.0, "GET"),
    ("geetest_v4", AnswerKind.OBJECT, {"captcha_id", "pageurl"}, 15.0, 300.0, "GET"),
    ("captchafox", AnswerKind.TOKEN_UA, {"sitekey", "pageurl", "proxy", "proxytype"}, 10.0, 300.0, "GET"),
    ("friendly_captcha", AnswerKind.TOKEN, {"sitekey", "pageurl"}, 10.0, 300.0, "GET"),
    ("lemin", AnswerKind.OBJECT, {"captcha_id", "div_id", "pageurl"}, 10.0, 300.0, "GET"),
    ("hcaptcha", AnswerKind.TOKEN, {"sitekey", "pageurl"}, 15.0, 300.0, "POST"),
])
def test_registry_rows(name: str, answer: AnswerKind, required: set[str], initial_wait: float, deadline: float,
                       verb: str) -> None:
    """Answer type, required parameters, SDK initial waits and verbs (§7.1), §0 deadlines."""
    method = BY_NAME[name]
    assert method.answer is answer
    assert set(method.required) == required
    assert method.initial_wait == initial_wait
    assert method.deadline == deadline
    assert method.http_verb == verb


@pytest.mark.parametrize(("name", "param", "code"), [
    ("recaptcha_v2", "googlekey", "ERROR_GOOGLEKEY"),
    ("recaptcha_v2", "pageurl", "ERROR_PAGEURL"),
    ("turnstile", "sitekey", "ERROR_GOOGLEKEY"),
    ("turnstile", "pageurl", "ERROR_PAGEURL"),
    ("cloudflare_challenge", "pageurl", "ERROR_PAGEURL"),
    ("cloudflare_challenge", "proxy", "ERROR_BAD_PARAMETERS"),
    ("normal", "body", "ERROR_UPLOAD"),
    ("bls", "image_base64_9", "ERROR_UPLOAD"),
    ("bls", "instructions", "ERROR_BAD_PARAMETERS"),
    ("geetest", "gt", "ERROR_GOOGLEKEY"),
])
def test_missing_codes(name: str, param: str, code: str) -> None:
    assert BY_NAME[name].missing_code(param) == code


@pytest.mark.parametrize(("sent", "canonical"), [
    ({"caseSensitive": "1"}, {"regsense": "1"}),
    ({"minLen": "3", "maxLen": "8"}, {"min_len": "3", "max_len": "8"}),
    ({"minLength": "3", "maxLength": "8"}, {"min_len": "3", "max_len": "8"}),
    ({"apiServer": "api.geetest.com"}, {"api_server": "api.geetest.com"}),
    ({"user_agent": "UA"}, {"userAgent": "UA"}),
    ({"useragent": "UA"}, {"userAgent": "UA"}),
    ({"userAgent": "UA"}, {"userAgent": "UA"}),
    ({"callback": "http://h/"}, {"pingback": "http://h/"}),
    ({"url": "http://p/"}, {"pageurl": "http://p/"}),
    ({"hintText": "click cars"}, {"textinstructions": "click cars"}),
    ({"data-s": "x"}, {"data_s": "x"}),
    # an explicit canonical name wins over an alias
    ({"regsense": "0", "caseSensitive": "1"}, {"regsense": "0"}),
    ({"caseSensitive": "1", "regsense": "0"}, {"regsense": "0"}),
    ({"pageurl": "a", "url": "b"}, {"pageurl": "a"}),
    # unknown parameters pass through untouched
    ({"soft_id": "4580", "x": "y"}, {"soft_id": "4580", "x": "y"}),
])
def test_global_aliases(sent: dict[str, str], canonical: dict[str, str]) -> None:
    assert canonical_params(sent) == canonical


def test_method_specific_aliases() -> None:
    assert canonical_params({"sitekey": "k"}, BY_NAME["recaptcha_v2"]) == {"googlekey": "k"}
    assert canonical_params({"googlekey": "k"}, BY_NAME["turnstile"]) == {"sitekey": "k"}
    assert canonical_params({"gt": "id"}, BY_NAME["geetest_v4"]) == {"captcha_id": "id"}
    assert canonical_params({"gt": "g"}, BY_NAME["geetest"]) == {"gt": "g"}
    assert canonical_params({"apiServer": "s"}, BY_NAME["lemin"]) == {"api_server": "s"}


def test_actions() -> None:
    assert {"get", "get2", "getbalance", "reportgood", "reportbad", "threadsinfo"} <= methods.ACTIONS


# ------------------------------------------------------------------------------------------ codes

SECTION_6 = {
    "ERROR_WRONG_USER_KEY": Endpoint.BOTH, "ERROR_KEY_DOES_NOT_EXIST": Endpoint.BOTH,
    "ERROR_ZERO_BALANCE": Endpoint.IN, "ERROR_NO_SLOT_AVAILABLE": Endpoint.IN, "ERROR_PAGEURL": Endpoint.IN,
    "ERROR_GOOGLEKEY": Endpoint.IN, "ERROR_WRONG_GOOGLEKEY": Endpoint.IN, "ERROR_BAD_TOKEN_OR_PAGEURL": Endpoint.IN,
    "ERROR_BAD_PARAMETERS": Endpoint.IN, "ERROR_ZERO_CAPTCHA_FILESIZE": Endpoint.IN,
    "ERROR_TOO_BIG_CAPTCHA_FILESIZE": Endpoint.IN, "ERROR_IMAGE_DIMENSIONS_TOO_LARGE": Endpoint.IN,
    "ERROR_WRONG_FILE_EXTENSION": Endpoint.IN, "ERROR_IMAGE_TYPE_NOT_SUPPORTED": Endpoint.IN,
    "ERROR_UPLOAD": Endpoint.IN, "ERROR_CAPTCHAIMAGE_BLOCKED": Endpoint.IN, "IP_BANNED": Endpoint.BOTH,
    "ERROR_IP_NOT_ALLOWED": Endpoint.BOTH, "MAX_USER_TURN": Endpoint.IN, "ERROR_BAD_PROXY": Endpoint.IN,
    "ERROR_PROXY_CONNECTION_FAILED": Endpoint.RES, "ERROR_SERVER_ERROR": Endpoint.IN,
    "ERROR_INTERNAL_SERVER_ERROR": Endpoint.IN, "ERROR_TOKEN_EXPIRED": Endpoint.RES,
    "ERROR_BAD_DUPLICATES": Endpoint.RES, "CAPCHA_NOT_READY": Endpoint.RES,
    "ERROR_CAPTCHA_UNSOLVABLE": Endpoint.RES, "ERROR_WRONG_ID_FORMAT": Endpoint.RES,
    "ERROR_WRONG_CAPTCHA_ID": Endpoint.RES, "ERROR_EMPTY_ACTION": Endpoint.RES,
    "REPORT_NOT_RECORDED": Endpoint.RES, "ERROR_DUPLICATE_REPORT": Endpoint.RES, "ERROR_IP_ADDRES": Endpoint.RES,
    "ERROR_NO_SUCH_METHOD": Endpoint.IN, "ERROR_METHOD_NOT_SUPPORTED": Endpoint.IN,
}


@pytest.mark.parametrize(("name", "endpoint"), sorted(SECTION_6.items()))
def test_every_section_6_code_is_in_the_table(name: str, endpoint: Endpoint) -> None:
    code = CODES[name]
    assert code.name == name
    assert code.meaning
    assert code.endpoints & endpoint, "the table must at least cover the endpoint §6 names"
    assert codes.lookup(name) is code


def test_code_table_consistency() -> None:
    assert set(CODES) == set(SECTION_6), "a code the protocol does not know, or one missing"
    for attr, value in vars(C).items():
        if attr.isupper():
            assert value in CODES, attr
    assert CODES[codes.NOT_READY].family is Family.PENDING
    assert CODES[codes.NOT_READY].advice is Advice.POLL_AGAIN
    assert CODES["ERROR_ZERO_BALANCE"].advice is Advice.WAIT_THREADS
    assert CODES["ERROR_NO_SLOT_AVAILABLE"].advice is Advice.RETRY_LATER
    assert CODES["ERROR_CAPTCHA_UNSOLVABLE"].advice is Advice.RESUBMIT
    for name in ("ERROR_WRONG_USER_KEY", "ERROR_KEY_DOES_NOT_EXIST", "IP_BANNED"):
        assert CODES[name].family is Family.AUTH and CODES[name].advice is Advice.STOP
    for name in ("REPORT_NOT_RECORDED", "ERROR_DUPLICATE_REPORT"):
        assert CODES[name].advice is Advice.IGNORE
    assert codes.NOT_READY == "CAPCHA_NOT_READY"  # the misspelling is canonical
    assert codes.OK_REPORT_RECORDED == "OK_REPORT_RECORDED"
    assert codes.lookup("OK_REPORT_RECORDED") is None
    assert codes.lookup("OK|123") is None


def test_request_limit_blocks() -> None:
    block = codes.lookup("ERROR: 1001")
    assert block is not None
    assert block.advice is Advice.RETRY_LATER
    assert codes.lookup("ERROR: 2001") is None


# What the vendors issue, and placeholders that integration tests send: none is malformed.
GOOD_SITE_KEYS = ("6Le-wvkSAAAAAPBMRTvw0Q4Muexq9bi0DJwx_mJ-", "a5f74b19-9e45-40e0-b45d-47ff91b7a6c2",
                  "0x4AAAAAAABkMYinukE8nzY", "1x00000000000000000000AA", "81388ea1fc187e0c335c0a8907ff2625",
                  "CROPPED_3dfdd5c_d1872b526b794d83ba3b365eb15a200b", "FCMGEMUD2KTDSQ5H", "k", " test ")
BAD_SITE_KEYS = ("", "https://example.com/?k=6Le", "6Le 6Le", '"6Le"', "6Le.x", "ключ", "k" * 129)


@pytest.mark.parametrize("method", [m for m in METHODS if C.GOOGLEKEY in m.missing_codes.values()],
                         ids=lambda m: m.name)
def test_malformed_site_keys(method: methods.Method) -> None:
    names = [name for name, code in method.missing_codes.items() if code == C.GOOGLEKEY]
    for key in GOOD_SITE_KEYS:
        assert not method.malformed_site_key({name: key for name in names}), key
    for key in BAD_SITE_KEYS:
        assert method.malformed_site_key({name: key for name in names}), key
    assert not method.malformed_site_key({"pageurl": "https://example.com/"})  # absent: ERROR_GOOGLEKEY's case
