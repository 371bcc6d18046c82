"""API keys and worker tokens: random secrets shown once, stored only as hashes.

A fast hash is enough: keys are 128 random bits, so there is nothing to brute-force from a leaked
hash, and a slow hash would cost every request a few milliseconds.
"""

from __future__ import annotations

import hashlib
import secrets

KEY_LENGTH = 32
PREFIX_LENGTH = 6


def new_key() -> str:
    return secrets.token_hex(KEY_LENGTH // 2)


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def well_formed(key: str) -> bool:
    return len(key) == KEY_LENGTH and key.isascii() and key.isalnum()
