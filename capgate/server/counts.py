"""Things held at once per key, up to a cap: requests open per client address, long-polls per account."""

from __future__ import annotations

from collections.abc import Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)


class HeldCounts(Generic[K]):
    """How many of something each key holds now; a key that holds none takes no room."""

    def __init__(self) -> None:
        self._held: dict[K, int] = {}

    def take(self, key: K, cap: int | None) -> bool:
        """One more for ``key``, unless it holds ``cap`` already (``None``: no cap)."""
        held = self._held.get(key, 0)
        if cap is not None and held >= cap:
            return False
        self._held[key] = held + 1
        return True

    def give(self, key: K) -> None:
        held = self._held.pop(key, 1) - 1
        if held > 0:
            self._held[key] = held
