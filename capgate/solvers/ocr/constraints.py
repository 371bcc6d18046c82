"""What a client told us about the answer of a normal (image) captcha.

Parsed from the in.php parameters after the protocol layer has mapped their aliases
(``caseSensitive`` -> ``regsense``, ``minLen`` -> ``min_len``, ...) to the canonical names.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

MAX_LEN_LIMIT = 20

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


@dataclass(frozen=True)
class OcrConstraints:
    numeric: int = 0  # 0 any, 1 digits only, 2 letters only, 3 digits and letters (either), 4 no digits
    min_len: int = 0  # 0 = not set
    max_len: int = 0  # 0 = not set
    case_sensitive: bool = False
    phrase: bool = False  # answer may contain spaces (several words)
    calc: bool = False  # image shows arithmetic; the answer is the result
    language: int = 0  # 0 not set, 1 Cyrillic only, 2 Latin only
    # ``lang``: the ISO 639-1 code of the text's language ("zh", "ru", "pt-BR" is read as "pt"),
    # lower case; "" when not given. The generic model answers in Latin letters and digits unless
    # ``language`` or ``lang`` asks for another script (see the engine's ``letter_scripts``).
    lang: str = ""

    def __post_init__(self) -> None:
        _check_range("numeric", self.numeric, 0, 4)
        _check_range("min_len", self.min_len, 0, MAX_LEN_LIMIT)
        _check_range("max_len", self.max_len, 0, MAX_LEN_LIMIT)
        _check_range("language", self.language, 0, 2)
        if self.min_len and self.max_len and self.min_len > self.max_len:
            raise ValueError(f"min_len {self.min_len} is greater than max_len {self.max_len}")

    @classmethod
    def from_params(cls, params: Mapping[str, str]) -> OcrConstraints:
        """Read the canonical parameter names; absent or empty means "not set", anything else
        that is not a valid value raises ValueError. Other keys are ignored: callers pass the
        whole request."""
        return cls(
            numeric=_int(params, "numeric"),
            min_len=_int(params, "min_len"),
            max_len=_int(params, "max_len"),
            case_sensitive=_bool(params, "regsense"),
            phrase=_bool(params, "phrase"),
            calc=_bool(params, "calc"),
            language=_int(params, "language"),
            lang=_lang(params),
        )

    @property
    def length_range(self) -> tuple[int, int]:
        """``(min, max)`` with 0 meaning unbounded on that side."""
        return self.min_len, self.max_len


def _check_range(name: str, value: int, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"{name} must be an integer from {low} to {high}, got {value!r}")


def _int(params: Mapping[str, str], name: str) -> int:
    raw = str(params.get(name, "")).strip()
    if raw == "":
        return 0
    try:
        return int(raw, 10)
    except ValueError:
        raise ValueError(f"{name} must be an integer, got {raw!r}") from None


def _lang(params: Mapping[str, str]) -> str:
    """The primary subtag of ``lang``, lower case. Never an error: a code the engine does not know
    leaves the script unrestricted, and other services accept any value."""
    raw = str(params.get("lang", "")).strip().lower().replace("_", "-")
    return raw.split("-", 1)[0][:8]


def _bool(params: Mapping[str, str], name: str) -> bool:
    raw = str(params.get(name, "")).strip().lower()
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    raise ValueError(f"{name} must be 0 or 1, got {raw!r}")
