"""2captcha's submit rate limit (PROTOCOL.md §6 ``MAX_USER_TURN``): a key that makes more than
``limit`` in.php calls within ``window_s`` seconds has its submits refused for ``block_s`` seconds.

Counted per process: with several API processes each allows the limit, which is the right side to
err on for a limit that exists to protect the service from a runaway client.
"""

from __future__ import annotations

import collections


class SubmitTurns:
    def __init__(self, limit: int, window_s: float, block_s: float) -> None:
        self.limit = limit
        self.window_s = window_s
        self.block_s = block_s
        self._recent: dict[int, collections.deque[float]] = {}
        self._blocked: dict[int, float] = {}

    def allow(self, account_id: int, now: float) -> bool:
        """Count one submit; False while the account is blocked. Always True when the limit is off."""
        if self.limit <= 0:
            return True
        until = self._blocked.get(account_id)
        if until is not None:
            if now < until:
                return False
            del self._blocked[account_id]
        recent = self._recent.get(account_id)
        if recent is None:
            recent = self._recent[account_id] = collections.deque(maxlen=self.limit)
        if len(recent) == self.limit and now - recent[0] < self.window_s:
            self._blocked[account_id] = now + self.block_s
            recent.clear()
            return False
        recent.append(now)
        return True
