"""API keys and worker tokens: random secrets shown once, stored only as hashes.

A fast hash is enough: keys are 128 random bits, so there is nothing to brute-force from a leaked
hash, and a slow hash would cost every request a few milliseconds.

A leaf module: the CLI makes secrets, the server checks them, and the store only ever sees their
hashes, so none of those layers owns hashing.
"""

from __future__ import annotations

import hashlib
import secrets

KEY_LENGTH = 32
PREFIX_LENGTH = 6
TOKEN_PREFIX = "cgw_"  # every worker token starts so: a key sent as a token is refused before a look-up


def new_key() -> str:
    return secrets.token_hex(KEY_LENGTH // 2)


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def well_formed(key: str) -> bool:
    return len(key) == KEY_LENGTH and key.isascii() and key.isalnum()


ADMIN_TOKEN_PREFIX = "cga_"  # admin tokens (the admin API and dashboard): never a key's or a worker token's shape


def new_admin_token() -> str:
    return ADMIN_TOKEN_PREFIX + secrets.token_hex(20)
