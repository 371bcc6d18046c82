"""A small per-process memo whose entries live a fraction of a second."""

from __future__ import annotations

from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")
MAX_ENTRIES = 50_000


class Memo(Generic[K, V]):
    def __init__(self, ttl_s: float) -> None:
        self.ttl_s = ttl_s
        self._entries: dict[K, tuple[float, V]] = {}

    def get(self, key: K, now: float) -> V | None:
        entry = self._entries.get(key)
        if entry is None or now - entry[0] > self.ttl_s:
            return None
        return entry[1]

    def put(self, key: K, value: V, now: float) -> None:
        if len(self._entries) >= MAX_ENTRIES:
            self._entries.clear()  # bounded memory; the next look-ups simply go to the store
        self._entries[key] = (now, value)

    def drop(self, key: K) -> None:
        self._entries.pop(key, None)
