"""The registry of captcha types: one row per type, shared by the server and the client.

A row says how the type is spelled on the wire (``method`` plus whatever tells variants apart),
which parameters it needs, their aliases, what its answer looks like, and the waits and prices that
go with it. A new captcha type is a new row here; nothing else needs a branch for it.
Facts: ``PROTOCOL.md`` §2–§3, §7.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from enum import Enum

from capgate.protocol.answers import AnswerKind
from capgate.protocol.codes import C


class Category(Enum):
    IMAGE = "image"  # an image to read (the built-in OCR worker serves these)
    IMAGE_TASK = "image_task"  # images to judge (grid, BLS): external or human workers
    TOKEN = "token"  # a third-party challenge solved by an external worker
    CHALLENGE = "challenge"  # a whole-page challenge through a proxy


Params = Mapping[str, str]


@dataclass(frozen=True)
class Method:
    name: str
    wire: tuple[str, ...]  # in.php ``method`` values; the first is what clients send
    required: tuple[str, ...]
    answer: AnswerKind
    category: Category
    optional: tuple[str, ...] = ()
    selects: Callable[[Params], bool] | None = None  # tells variants sharing a wire name apart
    sets: Mapping[str, str] = field(default_factory=dict)  # what a client adds to select this row
    aliases: Mapping[str, str] = field(default_factory=dict)  # type-specific spelling -> canonical
    missing_codes: Mapping[str, str] = field(default_factory=dict)  # param -> code when absent
    image_params: tuple[str, ...] = ()  # parameters that carry images (validated, stored as bytes)
    initial_wait: float = 5.0  # seconds a client waits before its first poll
    poll_interval: float = 5.0
    deadline: float = 300.0  # seconds before the server gives up: ERROR_CAPTCHA_UNSOLVABLE
    price: Decimal = Decimal(0)  # USD per solved task unless the operator sets another
    http_verb: str = "POST"  # what CaptchaAI's SDK uses; documentation only
    # Parameters that carry other media (audio): base64 or a multipart file like images, stored as
    # bytes, checked for size only.
    media_params: tuple[str, ...] = ()

    @functools.cached_property
    def known_params(self) -> frozenset[str]:
        """The parameters this type has: a task stores these and nothing else."""
        return frozenset((*self.required, *self.optional, *self.sets, *self.task_fields.values()))
    # The JSON task API (2captcha API v2): the ``type`` names that select this row (a name without
    # ``Proxyless`` takes the task's proxy fields), and its task fields -> this row's parameters. A
    # nested field is named by its path (``enterprisePayload.s``).
    task_types: tuple[str, ...] = ()
    task_fields: Mapping[str, str] = field(default_factory=dict)

    def missing_code(self, param: str) -> str:
        return self.missing_codes.get(param, C.BAD_PARAMETERS)

    def malformed_site_key(self, params: Params) -> bool:
        """A site key (the parameters whose absence is ``ERROR_GOOGLEKEY``) that no vendor issues:
        ``ERROR_WRONG_GOOGLEKEY``. Placeholders such as ``test`` pass; a pasted URL or snippet does not."""
        return any(name in params and _SITE_KEY.fullmatch(params[name].strip()) is None
                   for name, code in self.missing_codes.items() if code == C.GOOGLEKEY)


# Spellings used by the official clients and older APIs for the same parameter (§3, §7.3).
GLOBAL_ALIASES: dict[str, str] = {
    "caseSensitive": "regsense",
    "minLen": "min_len",
    "minLength": "min_len",
    "maxLen": "max_len",
    "maxLength": "max_len",
    "apiServer": "api_server",
    "user_agent": "userAgent",
    "useragent": "userAgent",
    "callback": "pingback",
    "url": "pageurl",
    "hintText": "textinstructions",
    "data-s": "data_s",
    "captchaId": "captcha_id",
    "divId": "div_id",
    "minClicks": "min_clicks",
    "maxClicks": "max_clicks",
}

_IMAGE_OPTIONS = ("phrase", "regsense", "numeric", "calc", "min_len", "max_len", "language", "lang",
                  "textinstructions", "question", "profile")
_TOKEN_OPTIONS = ("userAgent", "cookies", "proxy", "proxytype", "action", "domain", "data", "pagedata")
_SITEKEY_CODES = {"googlekey": C.GOOGLEKEY, "sitekey": C.GOOGLEKEY, "pageurl": C.PAGEURL}
# Every vendor's site keys are letters, digits, '_' and '-': reCAPTCHA's 40 characters, hCaptcha's
# UUIDs, Turnstile's 0x…, GeeTest's hex ids, Lemin's CROPPED_…, FunCaptcha's public keys.
_SITE_KEY = re.compile(r"[A-Za-z0-9_-]{1,128}")
_IMAGE_DEADLINE = 90.0


def _task_fields(site_key: str | None, **fields: str) -> dict[str, str]:
    """Task fields of a token type: the page, its site key under this row's name, the user agent."""
    common = {"websiteURL": "pageurl", "userAgent": "userAgent", "cookies": "cookies"}
    return {**common, **({"websiteKey": site_key} if site_key else {}), **fields}


def _flag(params: Params, name: str) -> bool:
    return params.get(name, "0").strip().lower() in ("1", "true")


def _is_grid(params: Params) -> bool:
    if _flag(params, "canvas") or _flag(params, "coordinatescaptcha"):
        return False  # 2captcha's canvas and click-coordinates modes: other answers, not served
    return "grid_size" in params or _flag(params, "recaptcha") or params.get("img_type") == "recaptcha"


def _is_plain_image(params: Params) -> bool:
    # 2captcha's text captcha and coordinates modes share method=post/base64 but want other answers.
    return not (_flag(params, "coordinatescaptcha") or "textcaptcha" in params or _flag(params, "canvas"))


def _is_v3(params: Params) -> bool:
    return params.get("version", "").lower() == "v3"


def _geetest_v4(params: Params) -> bool:
    return params.get("version", "") in ("4", "v4")


def _text_question(params: Params) -> bool:
    return "textcaptcha" in params


def _coordinates(params: Params) -> bool:
    return _flag(params, "coordinatescaptcha")


def _bls_images() -> tuple[str, ...]:
    return tuple(f"image_base64_{i}" for i in range(1, 10))


METHODS: tuple[Method, ...] = (
    Method("grid", ("base64", "post"), ("body",), AnswerKind.CELLS, Category.IMAGE_TASK,
           optional=("instructions", "textinstructions", "grid_size", "img_type", "recaptcha",
                     "recaptcharows", "recaptchacols", "can_no_answer", "previousID", "lang"),
           selects=_is_grid, sets={"img_type": "recaptcha"}, missing_codes={"body": C.UPLOAD},
           image_params=("body",), initial_wait=1.0, deadline=_IMAGE_DEADLINE, task_types=("GridTask",),
           task_fields={"body": "body", "rows": "recaptcharows", "columns": "recaptchacols",
                        "comment": "textinstructions"}),
    Method("normal", ("base64", "post"), ("body",), AnswerKind.TEXT, Category.IMAGE,
           optional=_IMAGE_OPTIONS, selects=_is_plain_image, missing_codes={"body": C.UPLOAD}, image_params=("body",),
           initial_wait=1.0, deadline=_IMAGE_DEADLINE, task_types=("ImageToTextTask",),
           task_fields={"body": "body", "phrase": "phrase", "case": "regsense", "numeric": "numeric",
                        "math": "calc", "minLength": "min_len", "maxLength": "max_len",
                        "comment": "textinstructions"}),
    Method("bls", ("bls",), ("instructions", *_bls_images()), AnswerKind.CELLS, Category.IMAGE_TASK,
           missing_codes={name: C.UPLOAD for name in _bls_images()}, image_params=_bls_images(),
           initial_wait=1.0, deadline=_IMAGE_DEADLINE),
    Method("recaptcha_v3_enterprise", ("userrecaptcha",), ("googlekey", "pageurl"), AnswerKind.TOKEN_UA,
           Category.TOKEN, optional=("action", "min_score", *_TOKEN_OPTIONS),
           selects=lambda p: _is_v3(p) and _flag(p, "enterprise"),
           sets={"version": "v3", "enterprise": "1"}, aliases={"sitekey": "googlekey"},
           missing_codes=_SITEKEY_CODES, initial_wait=10.0, http_verb="POST"),
    Method("recaptcha_v3", ("userrecaptcha",), ("googlekey", "pageurl"), AnswerKind.TOKEN, Category.TOKEN,
           optional=("action", "min_score", *_TOKEN_OPTIONS), selects=_is_v3, sets={"version": "v3"},
           aliases={"sitekey": "googlekey"}, missing_codes=_SITEKEY_CODES, initial_wait=10.0,
           http_verb="GET", task_types=("RecaptchaV3TaskProxyless",),
           task_fields=_task_fields("googlekey", minScore="min_score", pageAction="action",
                                    isEnterprise="enterprise", apiDomain="domain")),
    Method("recaptcha_v2_enterprise", ("userrecaptcha",), ("googlekey", "pageurl"), AnswerKind.TOKEN_UA,
           Category.TOKEN, optional=("invisible", "data_s", "action", *_TOKEN_OPTIONS),
           selects=lambda p: _flag(p, "enterprise"), sets={"enterprise": "1"},
           aliases={"sitekey": "googlekey"}, missing_codes=_SITEKEY_CODES, initial_wait=15.0,
           task_types=("RecaptchaV2EnterpriseTaskProxyless", "RecaptchaV2EnterpriseTask"),
           task_fields=_task_fields("googlekey", isInvisible="invisible", pageAction="action",
                                    apiDomain="domain", **{"enterprisePayload.s": "data_s"})),
    Method("recaptcha_v2", ("userrecaptcha",), ("googlekey", "pageurl"), AnswerKind.TOKEN, Category.TOKEN,
           optional=("invisible", "data_s", "version", "enterprise", *_TOKEN_OPTIONS),
           aliases={"sitekey": "googlekey"}, missing_codes=_SITEKEY_CODES, initial_wait=15.0,
           http_verb="GET", task_types=("RecaptchaV2TaskProxyless", "RecaptchaV2Task"),
           task_fields=_task_fields("googlekey", isInvisible="invisible", recaptchaDataSValue="data_s",
                                    apiDomain="domain")),
    Method("turnstile", ("turnstile",), ("sitekey", "pageurl"), AnswerKind.TOKEN, Category.TOKEN,
           optional=_TOKEN_OPTIONS, aliases={"googlekey": "sitekey"}, missing_codes=_SITEKEY_CODES,
           initial_wait=10.0, http_verb="GET", task_types=("TurnstileTaskProxyless", "TurnstileTask"),
           task_fields=_task_fields("sitekey", action="action", data="data", pagedata="pagedata")),
    Method("cloudflare_challenge", ("cloudflare_challenge",), ("pageurl", "proxy", "proxytype"),
           AnswerKind.CLEARANCE, Category.CHALLENGE, optional=("userAgent", "cookies", "sitekey"),
           missing_codes={"pageurl": C.PAGEURL}, initial_wait=15.0),
    Method("geetest_v4", ("geetest_v4", "geetest"), ("captcha_id", "pageurl"), AnswerKind.OBJECT,
           Category.TOKEN, optional=("risk_type", "api_server", "userAgent", "proxy", "proxytype"),
           selects=lambda p: p.get("method") == "geetest_v4" or _geetest_v4(p),
           aliases={"gt": "captcha_id"}, missing_codes={"captcha_id": C.GOOGLEKEY, "pageurl": C.PAGEURL},
           initial_wait=15.0, http_verb="GET"),
    Method("geetest", ("geetest",), ("gt", "challenge", "pageurl"), AnswerKind.GEETEST, Category.TOKEN,
           optional=("api_server", "offline", "new_captcha", "userAgent", "proxy", "proxytype"),
           missing_codes={"gt": C.GOOGLEKEY, "pageurl": C.PAGEURL}, initial_wait=15.0, http_verb="GET",
           # GeeTest v4 is the same task type with ``version: 4``: the geetest_v4 row's selector takes it.
           task_types=("GeeTestTaskProxyless", "GeeTestTask"),
           task_fields=_task_fields(None, gt="gt", challenge="challenge", version="version",
                                    geetestApiServerSubdomain="api_server",
                                    **{"initParameters.captcha_id": "captcha_id",
                                       "initParameters.riskType": "risk_type"})),
    Method("hcaptcha", ("hcaptcha",), ("sitekey", "pageurl"), AnswerKind.TOKEN, Category.TOKEN,
           optional=("invisible", *_TOKEN_OPTIONS), aliases={"googlekey": "sitekey"},
           missing_codes=_SITEKEY_CODES, initial_wait=15.0, task_types=("HCaptchaTaskProxyless", "HCaptchaTask"),
           task_fields=_task_fields("sitekey", isInvisible="invisible", **{"enterprisePayload.rqdata": "data"})),
    Method("captchafox", ("captchafox",), ("sitekey", "pageurl", "proxy", "proxytype"), AnswerKind.TOKEN_UA,
           Category.TOKEN, optional=("userAgent", "cookies"), missing_codes=_SITEKEY_CODES,
           initial_wait=10.0, http_verb="GET", task_types=("CaptchaFoxTask",), task_fields=_task_fields("sitekey")),
    Method("friendly_captcha", ("friendly_captcha",), ("sitekey", "pageurl"), AnswerKind.TOKEN,
           Category.TOKEN, optional=("version", *_TOKEN_OPTIONS), missing_codes=_SITEKEY_CODES,
           initial_wait=10.0, http_verb="GET",
           task_types=("FriendlyCaptchaTaskProxyless", "FriendlyCaptchaTask"), task_fields=_task_fields("sitekey")),
    Method("lemin", ("lemin",), ("captcha_id", "div_id", "pageurl"), AnswerKind.OBJECT, Category.TOKEN,
           optional=("api_server", "userAgent", "proxy", "proxytype"),
           missing_codes={"captcha_id": C.GOOGLEKEY, "pageurl": C.PAGEURL}, initial_wait=10.0,
           http_verb="GET", task_types=("LeminTaskProxyless", "LeminTask"),
           task_fields=_task_fields(None, captchaId="captcha_id", divId="div_id",
                                    leminApiServerSubdomain="api_server")),
    Method("funcaptcha", ("funcaptcha",), ("publickey", "pageurl"), AnswerKind.TOKEN, Category.TOKEN,
           optional=("surl", "data", "userAgent", "proxy", "proxytype"),
           missing_codes={"publickey": C.GOOGLEKEY, "pageurl": C.PAGEURL}, initial_wait=15.0,
           task_types=("FunCaptchaTaskProxyless", "FunCaptchaTask"),
           task_fields=_task_fields(None, websitePublicKey="publickey", funcaptchaApiJSSubdomain="surl",
                                    data="data")),
    # 2captcha's other task types (issue 15). None is solved by capgate itself: people on the human page
    # and registered external workers serve them, the sandbox answers them for sandbox keys.
    #
    # A question in words, no image (API v2: TextCaptchaTask).
    Method("text", ("post",), ("textcaptcha",), AnswerKind.TEXT, Category.IMAGE_TASK,
           optional=("lang", "language"), selects=_text_question,
           initial_wait=1.0, deadline=_IMAGE_DEADLINE, task_types=("TextCaptchaTask",),
           task_fields={"comment": "textcaptcha"}),
    # Points to click on an image; answer coordinates:x=..,y=..;... (API v2: CoordinatesTask).
    Method("coordinates", ("post", "base64"), ("body",), AnswerKind.COORDINATES, Category.IMAGE_TASK,
           optional=("textinstructions", "imginstructions", "min_clicks", "max_clicks", "lang"),
           selects=_coordinates, sets={"coordinatescaptcha": "1"}, missing_codes={"body": C.UPLOAD},
           image_params=("body",), initial_wait=1.0, deadline=_IMAGE_DEADLINE, task_types=("CoordinatesTask",),
           task_fields={"body": "body", "comment": "textinstructions", "imgInstructions": "imginstructions",
                        "minClicks": "min_clicks", "maxClicks": "max_clicks"}),
    # An image to turn upright; answer the angle in degrees, in steps of ``angle`` (API v2: RotateTask).
    Method("rotate", ("rotatecaptcha",), ("body",), AnswerKind.ANGLE, Category.IMAGE_TASK,
           optional=("angle", "textinstructions", "imginstructions", "lang"), missing_codes={"body": C.UPLOAD},
           image_params=("body",), initial_wait=1.0, deadline=_IMAGE_DEADLINE, task_types=("RotateTask",),
           task_fields={"body": "body", "angle": "angle", "comment": "textinstructions",
                        "imgInstructions": "imginstructions"}),
    # A recording (mp3, base64) to write down (API v2: AudioTask).
    Method("audio", ("audio",), ("body", "lang"), AnswerKind.TEXT, Category.IMAGE_TASK,
           missing_codes={"body": C.UPLOAD}, media_params=("body",), initial_wait=1.0,
           deadline=_IMAGE_DEADLINE, task_types=("AudioTask",), task_fields={"body": "body", "lang": "lang"}),
    # API v2: KeyCaptchaTaskProxyless, KeyCaptchaTask; the answer is a token.
    Method("keycaptcha", ("keycaptcha",),
           ("s_s_c_user_id", "s_s_c_session_id", "s_s_c_web_server_sign", "s_s_c_web_server_sign2", "pageurl"),
           AnswerKind.TOKEN, Category.TOKEN, optional=("proxy", "proxytype"), missing_codes={"pageurl": C.PAGEURL},
           initial_wait=15.0, task_types=("KeyCaptchaTaskProxyless", "KeyCaptchaTask"),
           task_fields=_task_fields(None, s_s_c_user_id="s_s_c_user_id", s_s_c_session_id="s_s_c_session_id",
                                    s_s_c_web_server_sign="s_s_c_web_server_sign",
                                    s_s_c_web_server_sign2="s_s_c_web_server_sign2")),
    # API v2: CapyTaskProxyless, CapyTask; answer {captchakey, challengekey, answer}.
    Method("capy", ("capy",), ("captchakey", "pageurl"), AnswerKind.OBJECT, Category.TOKEN,
           optional=("api_server", "version", "userAgent", "proxy", "proxytype"), aliases={"sitekey": "captchakey"},
           missing_codes={"captchakey": C.GOOGLEKEY, "pageurl": C.PAGEURL}, initial_wait=15.0,
           task_types=("CapyTaskProxyless", "CapyTask"),
           task_fields=_task_fields("captchakey", apiServer="api_server")),
    # API v2: AmazonTaskProxyless, AmazonTask; answer {captcha_voucher, existing_token}. Its keys are
    # base64 (``+``, ``/``, ``=``), so a missing one is ERROR_BAD_PARAMETERS and its shape is not checked.
    Method("amazon_waf", ("amazon_waf",), ("sitekey", "iv", "context", "pageurl"), AnswerKind.OBJECT,
           Category.TOKEN, optional=("challenge_script", "captcha_script", "userAgent", "proxy", "proxytype"),
           missing_codes={"pageurl": C.PAGEURL}, initial_wait=15.0, task_types=("AmazonTaskProxyless", "AmazonTask"),
           task_fields=_task_fields("sitekey", iv="iv", context="context", challengeScript="challenge_script",
                                    captchaScript="captcha_script")),
    # API v2: MtCaptchaTaskProxyless, MtCaptchaTask; the answer is a token.
    Method("mtcaptcha", ("mt_captcha",), ("sitekey", "pageurl"), AnswerKind.TOKEN, Category.TOKEN,
           optional=_TOKEN_OPTIONS, missing_codes=_SITEKEY_CODES, initial_wait=10.0,
           task_types=("MtCaptchaTaskProxyless", "MtCaptchaTask"), task_fields=_task_fields("sitekey")),
    # API v2: DataDomeSliderTask (proxy required); the answer is the datadome cookie.
    Method("datadome", ("datadome",), ("captcha_url", "pageurl", "userAgent", "proxy", "proxytype"),
           AnswerKind.TOKEN, Category.CHALLENGE, optional=("cookies",), missing_codes={"pageurl": C.PAGEURL},
           initial_wait=15.0, task_types=("DataDomeSliderTask",),
           task_fields=_task_fields(None, captchaUrl="captcha_url")),
    # API v2: CutCaptchaTaskProxyless, CutCaptchaTask; the answer is a token.
    Method("cutcaptcha", ("cutcaptcha",), ("misery_key", "api_key", "pageurl"), AnswerKind.TOKEN, Category.TOKEN,
           optional=("userAgent", "proxy", "proxytype"),
           missing_codes={"misery_key": C.GOOGLEKEY, "pageurl": C.PAGEURL}, initial_wait=10.0,
           task_types=("CutCaptchaTaskProxyless", "CutCaptchaTask"),
           task_fields=_task_fields(None, miseryKey="misery_key", apiKey="api_key")),
    # API v2: TencentTaskProxyless, TencentTask; answer {appid, ret, ticket, randstr}.
    Method("tencent", ("tencent",), ("app_id", "pageurl"), AnswerKind.OBJECT, Category.TOKEN,
           optional=("userAgent", "proxy", "proxytype"), missing_codes={"app_id": C.GOOGLEKEY, "pageurl": C.PAGEURL},
           initial_wait=10.0, task_types=("TencentTaskProxyless", "TencentTask"),
           task_fields=_task_fields(None, appId="app_id")),
    # API v2: AtbCaptchaTaskProxyless, AtbCaptchaTask; the answer is a token.
    Method("atb_captcha", ("atb_captcha",), ("app_id", "api_server", "pageurl"), AnswerKind.TOKEN, Category.TOKEN,
           optional=("userAgent", "proxy", "proxytype"), missing_codes={"app_id": C.GOOGLEKEY, "pageurl": C.PAGEURL},
           initial_wait=10.0, task_types=("AtbCaptchaTaskProxyless", "AtbCaptchaTask"),
           task_fields=_task_fields(None, appId="app_id", apiServer="api_server")),
    # Yandex SmartCaptcha. API v2: YandexSmartCaptchaTaskProxyless, YandexSmartCaptchaTask; a token.
    Method("yandex_smart", ("yandex",), ("sitekey", "pageurl"), AnswerKind.TOKEN, Category.TOKEN,
           optional=_TOKEN_OPTIONS, missing_codes=_SITEKEY_CODES, initial_wait=10.0,
           task_types=("YandexSmartCaptchaTaskProxyless", "YandexSmartCaptchaTask"),
           task_fields=_task_fields("sitekey")),
    # API v2: ProsopoTaskProxyless, ProsopoTask; the answer is a token.
    Method("prosopo", ("prosopo",), ("sitekey", "pageurl"), AnswerKind.TOKEN, Category.TOKEN,
           optional=_TOKEN_OPTIONS, missing_codes=_SITEKEY_CODES, initial_wait=10.0,
           task_types=("ProsopoTaskProxyless", "ProsopoTask"), task_fields=_task_fields("sitekey")),
)

BY_NAME: dict[str, Method] = {method.name: method for method in METHODS}
IMAGE_PARAMS = frozenset(name for method in METHODS for name in (*method.image_params, *method.media_params))
_BY_WIRE: dict[str, tuple[Method, ...]] = {}
for _method in METHODS:
    for _wire in _method.wire:
        _BY_WIRE[_wire] = (*_BY_WIRE.get(_wire, ()), _method)

WIRE_NAMES: frozenset[str] = frozenset(_BY_WIRE)
BY_TASK_TYPE: dict[str, Method] = {name: method for method in METHODS for name in method.task_types}


def resolve(params: Params) -> Method | None:
    """The row a submit's parameters name: the first row for its ``method`` whose selector agrees
    (rows are ordered most specific first), or ``None`` for an unknown method."""
    candidates = _BY_WIRE.get(params.get("method", ""), ())
    for method in candidates:
        if method.selects is None or method.selects(params):
            return method
    return None


def canonical_params(params: Mapping[str, str], method: Method | None = None) -> dict[str, str]:
    """Rename aliases to the canonical spelling. An explicit canonical name wins over an alias."""
    out: dict[str, str] = {}
    renames = {**GLOBAL_ALIASES, **(method.aliases if method else {})}
    for name, value in params.items():
        target = renames.get(name, name)
        if target != name and target in params:
            continue
        out[target] = value
    return out


# res.php actions (PROTOCOL.md §4).
ACTIONS: frozenset[str] = frozenset({
    "get", "get2", "getbalance", "reportgood", "reportbad", "threadsinfo",
    "add_pingback", "get_pingback", "del_pingback",
})
