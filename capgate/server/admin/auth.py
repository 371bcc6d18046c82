"""Who may use the admin API: an admin token (``capgate admin-tokens create``), sent as
``Authorization: Bearer cga_…``, or the dashboard's session cookie made from one.

* A customer key or a worker token is never an admin token: the token's shape is checked before any
  look-up, and only the admin tokens' table is asked.
* Tokens and sessions are read from the store on every call (never cached): a token disabled by
  ``capgate admin-tokens disable`` in any process is refused from its next call, and its sessions end.
* The session cookie is ``HttpOnly`` (no script reads it), ``SameSite=Strict`` (no other site's page
  sends it) and scoped to ``/admin``. A call that changes anything with the cookie must also carry
  ``X-Capgate-CSRF``, a value derived from the session that only the dashboard's own page learns
  (from ``GET /admin/session``): a form on another site can neither send that header nor read it.
"""

from __future__ import annotations

import hmac
import secrets
import time

from starlette.requests import Request

from capgate.keys import ADMIN_TOKEN_PREFIX, hash_secret
from capgate.store.base import Store
from capgate.store.models import AdminToken

SESSION_COOKIE = "capgate_admin"
CSRF_HEADER = "x-capgate-csrf"
SESSION_S = 12 * 3600.0
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class ApiError(Exception):
    """Ends an admin API call with ``{"error": message}`` and ``status``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def csrf_of(session: str) -> str:
    return hash_secret("csrf:" + session)[:32]


def well_formed_token(token: str) -> bool:
    return token.startswith(ADMIN_TOKEN_PREFIX) and 8 < len(token) <= 100 and token.isascii()


async def admin_of(request: Request, store: Store) -> AdminToken:
    """The admin token behind this request (bearer or session), or :class:`ApiError` 401/403."""
    header = request.headers.get("authorization", "")
    if header:
        scheme, _, token = header.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not well_formed_token(token):
            raise ApiError(401, "send 'Authorization: Bearer cga_...' with an admin token "
                                "(capgate admin-tokens create NAME)")
        found = await store.admin_token_by_hash(hash_secret(token))
        if found is None or found.disabled:
            raise ApiError(401, "unknown or disabled admin token")
        return found
    session = request.cookies.get(SESSION_COOKIE, "")
    if not session:
        raise ApiError(401, "send an admin token as 'Authorization: Bearer cga_...' (capgate admin-tokens create "
                                "NAME), or sign in to the dashboard at /admin")
    found = await store.admin_session(hash_secret(session), time.time())
    if found is None:
        raise ApiError(401, "the session has ended: sign in again")
    if request.method not in SAFE_METHODS and not hmac.compare_digest(request.headers.get(CSRF_HEADER, ""),
                                                                      csrf_of(session)):
        raise ApiError(403, f"a change made with the session cookie needs the {CSRF_HEADER} header")
    return found


async def start_session(store: Store, token: str) -> tuple[AdminToken, str]:
    """Sign in with an admin token: the token and a new session's secret (the cookie's value)."""
    token = token.strip()
    found = await store.admin_token_by_hash(hash_secret(token)) if well_formed_token(token) else None
    if found is None or found.disabled:
        raise ApiError(401, "unknown or disabled admin token")
    session = secrets.token_urlsafe(32)
    now = time.time()
    await store.create_admin_session(hash_secret(session), found.id, now, now + SESSION_S)
    return found, session
