"""Which methods a worker serves: the time each was last claimed, kept per worker as JSON.

A worker that claims different methods in turn (``lemin`` now, ``friendly_captcha`` next) serves
all of them, each until it has not been asked for within the presence window.
"""

from __future__ import annotations

import json
from collections.abc import Sequence


def _decode(raw: str | None) -> dict[str, float]:
    try:
        value = json.loads(raw or "{}")
    except json.JSONDecodeError:
        return {}
    if isinstance(value, list):  # the first schema stored a plain list of names
        return {}
    return {str(k): float(v) for k, v in value.items()} if isinstance(value, dict) else {}


def merge_serving(raw: str | None, methods: Sequence[str], now: float) -> str:
    serving = _decode(raw)
    serving.update({method: now for method in methods})
    return json.dumps(serving, sort_keys=True)


def served_since(raw: str | None, since: float) -> set[str]:
    return {method for method, seen in _decode(raw).items() if seen >= since}
