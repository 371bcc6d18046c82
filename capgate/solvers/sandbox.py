"""The sandbox's answers: fake, deterministic answers for every task of a sandbox account.

Integrations test against it without real solving. Answers depend only on the task's parameters and
images, so the same submit always gets the same answer; tokens say they are fake. Pure code: the loop
that settles sandbox tasks in the store is ``capgate.workers.sandbox``.

Magic inputs (put them in any parameter: ``pageurl``, ``sitekey``, ``textinstructions``, or a
``sandbox`` parameter that other services ignore):

==========================  ===============================================================
``sandbox-unsolvable``      settles as ``ERROR_CAPTCHA_UNSOLVABLE`` (not charged)
``sandbox-slow-N``          answers after N seconds instead of the default delay
``sandbox-noslot``          in.php answers ``ERROR_NO_SLOT_AVAILABLE``
``sandbox-error-CODE``      in.php answers CODE if it is an in.php code (``ERROR_ZERO_BALANCE``,
                            ``ERROR_CAPTCHAIMAGE_BLOCKED``, ...); otherwise the task settles
                            with CODE (``ERROR_PROXY_CONNECTION_FAILED``, ``ERROR_TOKEN_EXPIRED``)
``sandbox-answer-TEXT``     the answer of an image task is TEXT
==========================  ===============================================================
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from capgate.protocol import answers
from capgate.protocol.answers import (
    AngleAnswer,
    Answer,
    AnswerKind,
    CellsAnswer,
    ClearanceAnswer,
    CoordinatesAnswer,
    GeeTestAnswer,
    ObjectAnswer,
    TextAnswer,
    TokenAnswer,
)
from capgate.protocol.codes import CODES, C, Endpoint
from capgate.protocol.methods import BY_NAME, IMAGE_PARAMS

FAKE_USER_AGENT = ("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
                   "capgate-sandbox/1.0 FAKE")
_DIRECTIVE = re.compile(r"sandbox-(unsolvable|noslot|slow-(\d+(?:\.\d+)?)|error-([A-Z_]+)|answer-([^\s&]+))")


class Task(Protocol):
    """What an answer is made from: the store's task has these, and nothing here needs more."""

    @property
    def method(self) -> str: ...

    @property
    def params(self) -> Mapping[str, str]: ...

    @property
    def created_at(self) -> float: ...

    @property
    def fingerprint(self) -> str: ...


@dataclass(frozen=True)
class Directives:
    unsolvable: bool = False
    noslot: bool = False
    delay: float | None = None
    submit_error: str | None = None
    settle_error: str | None = None
    answer: str | None = None


def directives(params: Mapping[str, str]) -> Directives:
    found: dict[str, object] = {}
    # Images never carry directives, and the substring test comes first: a regex scan is slow on
    # long values, and in.php reads the directives of every sandbox submit.
    for name, value in params.items():
        if name in IMAGE_PARAMS or "sandbox-" not in value:
            continue
        for match in _DIRECTIVE.finditer(value):
            word, slow, error, answer = match.groups()
            if word == "unsolvable":
                found["unsolvable"] = True
            elif word == "noslot":
                found["noslot"] = True
            elif slow is not None:
                found["delay"] = float(slow)
            elif error is not None and error in CODES:
                key = "submit_error" if CODES[error].endpoints & Endpoint.IN and error != C.PROXY_CONNECTION_FAILED \
                    else "settle_error"
                found[key] = error
            elif answer is not None:
                found["answer"] = answer
    return Directives(**found)  # type: ignore[arg-type]


def _option(params: Mapping[str, str], name: str) -> int:
    """A numeric option as in.php accepts it (``" 4"``, ``"true"``); anything else counts as unset, so
    an odd value never stops the sandbox from answering."""
    raw = params.get(name, "").strip().lower()
    if raw in ("true", "false"):
        return int(raw == "true")
    return int(raw) if raw.isascii() and raw.isdigit() else 0


def _text_answer(task: Task, digest: str) -> str:
    p = task.params
    numeric = _option(p, "numeric")
    if _option(p, "calc"):
        return str(int(digest[:4], 16) % 100)
    alphabet = {1: "0123456789", 2: "abcdefghjkmnpqrstuvwxyz", 4: "abcdefghjkmnpqrstuvwxyz"}.get(
        numeric, "23456789abcdefghjkmnpqrstuvwxyz")
    if _option(p, "regsense") and numeric != 1:
        alphabet += alphabet.upper()
    low = _option(p, "min_len")
    high = _option(p, "max_len")
    length = max(low, min(high, 6)) if high else max(low, 6)
    value = int(digest, 16)
    chars = []
    for _ in range(length):
        value, index = divmod(value, len(alphabet))
        chars.append(alphabet[index])
    return "".join(chars)


def _object_answer(task: Task, digest: str) -> dict[str, object]:
    # The fields each vendor's answer has (2captcha's API docs), fake values.
    if task.method == "capy":
        return {"captchakey": task.params.get("captchakey", ""), "challengekey": f"fake{digest[:28]}",
                "answer": f"FAKE-CAPY-ANSWER-{digest[28:52]}"}
    if task.method == "amazon_waf":
        return {"captcha_voucher": f"FAKE-VOUCHER-{digest[:40]}", "existing_token": f"FAKE-TOKEN-{digest[40:64]}"}
    if task.method == "tencent":
        return {"appid": task.params.get("app_id", ""), "ret": 0, "ticket": f"FAKE-TICKET-{digest[:40]}",
                "randstr": f"@{digest[40:43]}"}
    if task.method == "lemin":
        # CaptchaAI's SDK reads challenge_uuid, 2captcha's docs say challenge_id (PROTOCOL.md §5): both.
        challenge = f"fake-{digest[24:40]}"
        return {"answer": f"FAKE-LEMIN-ANSWER-{digest[:24]}", "challenge_uuid": challenge, "challenge_id": challenge}
    return {"captcha_id": task.params.get("captcha_id", ""), "lot_number": digest[:32],
            "pass_token": f"FAKE-PASS-TOKEN-{digest[32:56]}", "gen_time": str(int(task.created_at)),
            "captcha_output": f"FAKE-OUTPUT-{digest[:40]}"}


def _cells(task: Task, digest: str) -> tuple[int, ...]:
    if task.method == "bls":
        count = 9
    else:
        size = task.params.get("grid_size", "")
        rows = _option(task.params, "recaptcharows")
        cols = _option(task.params, "recaptchacols")
        count = (rows * cols) if rows and cols else (16 if size == "4x4" else 9)
    picked = sorted({int(digest[i:i + 2], 16) % count + 1 for i in range(0, 8, 2)})
    return tuple(picked)


def _points(task: Task, digest: str) -> tuple[tuple[int, int], ...]:
    """Two points, or as many as ``min_clicks`` / ``max_clicks`` ask (eight at most), in the image's
    top left 100 x 50 pixels (fake answers, like the rest: the image is not looked at)."""
    low = max(1, _option(task.params, "min_clicks"))
    high = _option(task.params, "max_clicks") or max(low, 2)
    count = min(8, max(low, min(high, 2)))
    return tuple((int(digest[i:i + 4], 16) % 100, int(digest[i + 4:i + 8], 16) % 50)
                 for i in range(0, 8 * count, 8))


def _angle(task: Task, digest: str) -> int:
    """A whole number of the task's rotation steps (``angle``, 40 degrees unless given)."""
    step = _option(task.params, "angle") or 40
    step = step if 0 < step < 360 else 40
    return (int(digest[:8], 16) % (360 // step)) * step


_BUILDERS: dict[AnswerKind, Callable[[Task, str, Directives], Answer]] = {
    AnswerKind.TEXT: lambda t, d, x: TextAnswer(x.answer if x.answer is not None else _text_answer(t, d)),
    AnswerKind.TOKEN: lambda t, d, x: TokenAnswer(f"SANDBOX-FAKE-TOKEN-{d}"),
    AnswerKind.TOKEN_UA: lambda t, d, x: TokenAnswer(f"SANDBOX-FAKE-TOKEN-{d}",
                                                     t.params.get("userAgent") or FAKE_USER_AGENT),
    AnswerKind.GEETEST: lambda t, d, x: GeeTestAnswer(t.params.get("challenge", d[:32]),
                                                      f"fake{d[:28]}", f"fake{d[:28]}|jordan"),
    AnswerKind.CLEARANCE: lambda t, d, x: ClearanceAnswer(f"FAKE-CF-CLEARANCE-{d}",
                                                          t.params.get("userAgent") or FAKE_USER_AGENT),
    AnswerKind.CELLS: lambda t, d, x: CellsAnswer(_cells(t, d)),
    AnswerKind.OBJECT: lambda t, d, x: ObjectAnswer(_object_answer(t, d)),
    AnswerKind.COORDINATES: lambda t, d, x: CoordinatesAnswer(_points(t, d)),
    AnswerKind.ANGLE: lambda t, d, x: AngleAnswer(_angle(t, d)),
}


def solve(task: Task) -> tuple[dict[str, object] | None, str | None]:
    """``(answer json fields, None)`` or ``(None, error code)``. Answers derive from the task's
    fingerprint (method, parameters and images), so the same task always gets the same answer."""
    found = directives(task.params)
    if found.unsolvable:
        return None, C.CAPTCHA_UNSOLVABLE
    if found.settle_error:
        return None, found.settle_error
    kind = BY_NAME[task.method].answer
    digest = hashlib.sha256(task.fingerprint.encode()).hexdigest()  # hex of a fixed length, whatever was stored
    result = _BUILDERS[kind](task, digest, found)
    return answers.encode_json(result, kind), None
