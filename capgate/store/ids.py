"""Task ids: random 11-digit numbers, so ids say nothing about volume and cannot be guessed in order.

Kept below 2**53 so that every JSON client reads them exactly.
"""

from __future__ import annotations

import secrets

_LOW = 10_000_000_000
_SPAN = 90_000_000_000


def new_task_id() -> int:
    return _LOW + secrets.randbelow(_SPAN)
