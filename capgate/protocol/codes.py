"""Every code the protocol speaks: what it means, where it comes from, and what a client does next.

One table for the server (which code to send) and the client (which exception to raise, whether to
retry). Sources and conflicts are in ``PROTOCOL.md`` §6; capgate's decisions in its §0.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum, Flag, auto


class Endpoint(Flag):
    IN = auto()
    RES = auto()
    BOTH = IN | RES


class Family(Enum):
    """Families of codes; the client raises one exception class per family."""

    AUTH = "auth"  # the key or the caller's address is refused
    FUNDS = "funds"  # no balance, no free thread, too many submits
    CAPACITY = "capacity"  # the service has no slot (no worker) for the task type now: nothing wrong with the key
    BAD_INPUT = "bad_input"  # the request itself is wrong
    UNSOLVABLE = "unsolvable"  # the task settled without an answer
    PENDING = "pending"  # not an error: poll again
    REPORT = "report"  # a report was refused; nothing to do
    SERVER = "server"  # the service failed transiently


class Advice(Enum):
    """What a client should do on receiving the code."""

    STOP = "stop"  # fatal: fix the request or the key
    RETRY_LATER = "retry_later"  # retry the same call after a pause (capacity)
    WAIT_THREADS = "wait_threads"  # wait for a thread of the account to free up
    POLL_AGAIN = "poll_again"
    RESUBMIT = "resubmit"  # submit a fresh captcha
    IGNORE = "ignore"


@dataclass(frozen=True)
class Code:
    name: str
    meaning: str
    endpoints: Endpoint
    family: Family
    advice: Advice


def _code(name: str, meaning: str, endpoints: Endpoint, family: Family, advice: Advice) -> Code:
    return Code(name, meaning, endpoints, family, advice)


_IN, _RES, _BOTH = Endpoint.IN, Endpoint.RES, Endpoint.BOTH
_TABLE: tuple[Code, ...] = (
    _code("ERROR_WRONG_USER_KEY", "The key is missing or not 32 characters long.", _BOTH, Family.AUTH,
          Advice.STOP),
    _code("ERROR_KEY_DOES_NOT_EXIST", "The key is not registered, or the account is disabled.", _BOTH,
          Family.AUTH, Advice.STOP),
    _code("ERROR_ZERO_BALANCE", "Not enough balance, or every thread of the account is busy.", _IN,
          Family.FUNDS, Advice.WAIT_THREADS),
    _code("ERROR_NO_SLOT_AVAILABLE", "The service is at capacity for this task type, or no worker serves it; "
          "retry after 5 s.", _IN, Family.CAPACITY, Advice.RETRY_LATER),
    _code("ERROR_PAGEURL", "The pageurl parameter is missing.", _IN, Family.BAD_INPUT, Advice.STOP),
    _code("ERROR_GOOGLEKEY", "The sitekey (googlekey) parameter is missing or blank.", _IN,
          Family.BAD_INPUT, Advice.STOP),
    _code("ERROR_WRONG_GOOGLEKEY", "The sitekey (googlekey) is malformed.", _IN, Family.BAD_INPUT,
          Advice.STOP),
    _code("ERROR_BAD_TOKEN_OR_PAGEURL", "The sitekey and pageurl do not belong together.", _IN,
          Family.BAD_INPUT, Advice.STOP),
    _code("ERROR_BAD_PARAMETERS", "A required parameter is missing or malformed, or the method is unknown.",
          _BOTH, Family.BAD_INPUT, Advice.STOP),
    _code("ERROR_ZERO_CAPTCHA_FILESIZE", "The image is smaller than 100 bytes.", _IN, Family.BAD_INPUT,
          Advice.STOP),
    _code("ERROR_TOO_BIG_CAPTCHA_FILESIZE", "The image (or the request body) is too large.", _IN,
          Family.BAD_INPUT, Advice.STOP),
    _code("ERROR_IMAGE_DIMENSIONS_TOO_LARGE", "The image is larger than 1000 pixels on a side.", _IN,
          Family.BAD_INPUT, Advice.STOP),
    _code("ERROR_WRONG_FILE_EXTENSION", "The uploaded file's extension is not jpg, jpeg, gif, png, webp or bmp.",
          _IN, Family.BAD_INPUT, Advice.STOP),
    _code("ERROR_IMAGE_TYPE_NOT_SUPPORTED", "The bytes are not a png, jpeg, gif, webp or bmp image.", _IN,
          Family.BAD_INPUT, Advice.STOP),
    _code("ERROR_UPLOAD", "No file, invalid base64 or a malformed multipart body.", _IN, Family.BAD_INPUT,
          Advice.STOP),
    _code("ERROR_CAPTCHAIMAGE_BLOCKED", "The image is blacklisted.", _IN, Family.BAD_INPUT, Advice.STOP),
    _code("IP_BANNED", "Too many requests with a wrong key from this address; lifted after 5 minutes.",
          _BOTH, Family.AUTH, Advice.STOP),
    _code("ERROR_IP_NOT_ALLOWED", "The address is not in the account's allow-list.", _BOTH, Family.AUTH,
          Advice.STOP),
    _code("MAX_USER_TURN", "Too many submits in a short time; back off for 10 s.", _IN, Family.FUNDS,
          Advice.RETRY_LATER),
    _code("ERROR_BAD_PROXY", "The proxy is marked bad.", _IN, Family.BAD_INPUT, Advice.STOP),
    _code("ERROR_PROXY_CONNECTION_FAILED", "The captcha could not be loaded through the proxy.", _BOTH,
          Family.UNSOLVABLE, Advice.RESUBMIT),
    _code("ERROR_SERVER_ERROR", "A transient server error; retry after about 10 s.", _BOTH, Family.SERVER,
          Advice.RETRY_LATER),
    _code("ERROR_INTERNAL_SERVER_ERROR", "A transient server error; retry after about 10 s.", _BOTH,
          Family.SERVER, Advice.RETRY_LATER),
    _code("ERROR_TOKEN_EXPIRED", "The GeeTest challenge expired.", _RES, Family.UNSOLVABLE, Advice.RESUBMIT),
    _code("ERROR_BAD_DUPLICATES", "An identical task of this account is still pending.", _BOTH,
          Family.BAD_INPUT, Advice.RETRY_LATER),
    _code("CAPCHA_NOT_READY", "The task is not solved yet; poll again.", _RES, Family.PENDING,
          Advice.POLL_AGAIN),
    _code("ERROR_CAPTCHA_UNSOLVABLE", "The task could not be solved in time; it is not charged.", _RES,
          Family.UNSOLVABLE, Advice.RESUBMIT),
    _code("ERROR_WRONG_ID_FORMAT", "The task id is not a number.", _RES, Family.BAD_INPUT, Advice.STOP),
    _code("ERROR_WRONG_CAPTCHA_ID", "The task id is unknown, belongs to another key, or has expired.", _RES,
          Family.BAD_INPUT, Advice.STOP),
    _code("ERROR_EMPTY_ACTION", "The action parameter is missing or not recognised.", _RES,
          Family.BAD_INPUT, Advice.STOP),
    _code("REPORT_NOT_RECORDED", "The report was refused (too late, or the task has no answer).", _RES,
          Family.REPORT, Advice.IGNORE),
    _code("ERROR_DUPLICATE_REPORT", "This task was reported already.", _RES, Family.REPORT, Advice.IGNORE),
    _code("ERROR_IP_ADDRES", "The pingback address is not acceptable.", _RES, Family.BAD_INPUT, Advice.STOP),
    _code("ERROR_NO_SUCH_METHOD", "Unknown method (2captcha's newer spelling).", _IN, Family.BAD_INPUT,
          Advice.STOP),
    _code("ERROR_METHOD_NOT_SUPPORTED", "Unknown method (a self-hosted clone's spelling).", _IN,
          Family.BAD_INPUT, Advice.STOP),
)

CODES: dict[str, Code] = {code.name: code for code in _TABLE}

NOT_READY = "CAPCHA_NOT_READY"
OK_REPORT_RECORDED = "OK_REPORT_RECORDED"


def lookup(body: str) -> Code | None:
    """The code a body is, if it is one. 2captcha's ``ERROR: 1001``-style blocks map to a generic code."""
    code = CODES.get(body)
    if code is None and body.startswith("ERROR: 10"):
        return Code(body, "Request limit block; back off.", Endpoint.BOTH, Family.FUNDS, Advice.RETRY_LATER)
    return code


class C:
    """Names of the codes the server emits, checked at import so a typo fails loudly."""

    WRONG_USER_KEY = CODES["ERROR_WRONG_USER_KEY"].name
    KEY_DOES_NOT_EXIST = CODES["ERROR_KEY_DOES_NOT_EXIST"].name
    ZERO_BALANCE = CODES["ERROR_ZERO_BALANCE"].name
    NO_SLOT_AVAILABLE = CODES["ERROR_NO_SLOT_AVAILABLE"].name
    PAGEURL = CODES["ERROR_PAGEURL"].name
    GOOGLEKEY = CODES["ERROR_GOOGLEKEY"].name
    WRONG_GOOGLEKEY = CODES["ERROR_WRONG_GOOGLEKEY"].name
    BAD_PARAMETERS = CODES["ERROR_BAD_PARAMETERS"].name
    ZERO_CAPTCHA_FILESIZE = CODES["ERROR_ZERO_CAPTCHA_FILESIZE"].name
    TOO_BIG_CAPTCHA_FILESIZE = CODES["ERROR_TOO_BIG_CAPTCHA_FILESIZE"].name
    IMAGE_DIMENSIONS_TOO_LARGE = CODES["ERROR_IMAGE_DIMENSIONS_TOO_LARGE"].name
    WRONG_FILE_EXTENSION = CODES["ERROR_WRONG_FILE_EXTENSION"].name
    IMAGE_TYPE_NOT_SUPPORTED = CODES["ERROR_IMAGE_TYPE_NOT_SUPPORTED"].name
    UPLOAD = CODES["ERROR_UPLOAD"].name
    IP_BANNED = CODES["IP_BANNED"].name
    MAX_USER_TURN = CODES["MAX_USER_TURN"].name
    PROXY_CONNECTION_FAILED = CODES["ERROR_PROXY_CONNECTION_FAILED"].name
    BAD_DUPLICATES = CODES["ERROR_BAD_DUPLICATES"].name
    NOT_READY = CODES[NOT_READY].name
    CAPTCHA_UNSOLVABLE = CODES["ERROR_CAPTCHA_UNSOLVABLE"].name
    WRONG_ID_FORMAT = CODES["ERROR_WRONG_ID_FORMAT"].name
    WRONG_CAPTCHA_ID = CODES["ERROR_WRONG_CAPTCHA_ID"].name
    EMPTY_ACTION = CODES["ERROR_EMPTY_ACTION"].name
    REPORT_NOT_RECORDED = CODES["REPORT_NOT_RECORDED"].name
    DUPLICATE_REPORT = CODES["ERROR_DUPLICATE_REPORT"].name
    IP_ADDRES = CODES["ERROR_IP_ADDRES"].name
    SERVER_ERROR = CODES["ERROR_SERVER_ERROR"].name
