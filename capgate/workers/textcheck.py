"""Whether a typed answer keeps the hints its own task gave (``numeric``, ``min_len``/``max_len``,
``calc``, ``language``).

An answer that breaks them is certainly wrong. A person's answer (the human-solver page) is checked
before it settles the task, so that the person can correct a typo instead of sending the customer a
wrong answer that would be charged.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping

_WHOLE_NUMBER = re.compile(r"-?[0-9]+")


def _option(params: Mapping[str, str], name: str) -> int:
    """A numeric option as in.php accepts it (``" 4"``, ``"true"``); anything else counts as unset."""
    raw = str(params.get(name, "")).strip().lower()
    if raw in ("true", "false"):
        return int(raw == "true")
    return int(raw) if raw.isascii() and raw.isdigit() else 0


def _script(ch: str) -> str:
    return unicodedata.name(ch, "").partition(" ")[0]


def answer_problem(params: Mapping[str, str], text: str) -> str | None:
    """What is wrong with ``text`` as the answer of a task with these (canonical) parameters, in words
    a person can act on; ``None`` when it keeps every hint."""
    chars = [ch for ch in text if not ch.isspace()]
    low, high = _option(params, "min_len"), _option(params, "max_len")
    if low and len(text) < low:
        return f"the task asks for at least {low} characters; the answer has {len(text)}"
    if high and len(text) > high:
        return f"the task asks for at most {high} characters; the answer has {len(text)}"
    if _option(params, "calc"):
        if not _WHOLE_NUMBER.fullmatch(text.strip()):
            return "the task asks for the result of the sum shown: a whole number"
        return None
    numeric = _option(params, "numeric")
    if numeric == 1 and not all(ch.isdigit() for ch in chars):
        return "the task asks for digits only"
    if numeric == 2 and not all(ch.isalpha() for ch in chars):
        return "the task asks for letters only"
    if numeric == 4 and any(ch.isdigit() for ch in chars):
        return "the task asks for an answer without digits"
    language = _option(params, "language")
    wanted = {1: "CYRILLIC", 2: "LATIN"}.get(language)
    if wanted is not None and any(ch.isalpha() and _script(ch) != wanted for ch in chars):
        return f"the task asks for {wanted.title()} letters only"
    return None
