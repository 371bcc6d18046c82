"""Who the client is, and what a browser may do with capgate's pages (docs/security.md).

* :func:`forwarded_client`: the client's address is the one that connected, unless that is one of
  the operator's ``trusted_proxies``; then it is the nearest address in ``X-Forwarded-For`` that is
  not a trusted proxy (each proxy appends the address it saw, so the entries left of it are the
  client's word, and the client may write anything there).
* :class:`SecurityHeaders`: every HTML page carries a Content-Security-Policy (no inline code but
  the page's own, by hash), may not be framed, sends no Referer, and is never sniffed as another type.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import ipaddress
import re

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from capgate.settings import Network

# A page that declares nothing may load nothing, run nothing and be framed by no one.
STRICT_CSP = "default-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
PAGE_HEADERS = {
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}
_INLINE = re.compile(rb"<(script|style)>(.*?)</\1>", re.DOTALL | re.IGNORECASE)


def _in(address: str, networks: tuple[Network, ...]) -> bool:
    """``address`` is in one of ``networks`` (an IPv4-mapped IPv6 address counts as its IPv4 one,
    as a dual-stack socket reports IPv4 clients)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
    return any(a.version == net.version and a in net for a in (ip, mapped) if a is not None for net in networks)


def _hop(entry: str) -> str | None:
    """The address of one ``X-Forwarded-For`` entry (``a.b.c.d``, ``a.b.c.d:port``, ``[v6]:port``,
    ``v6``); ``None`` if it is not an address."""
    entry = entry.strip()
    if entry.startswith("["):
        entry = entry[1:].partition("]")[0]
    elif entry.count(":") == 1:
        entry = entry.partition(":")[0]
    try:
        return str(ipaddress.ip_address(entry))
    except ValueError:
        return None


def forwarded_client(scope: Scope, trusted: tuple[Network, ...]) -> None:
    """Set ``scope["client"]`` to the address the request came from, through trusted proxies."""
    client = scope.get("client")
    if not trusted or not client or not _in(client[0], trusted):
        return
    values = [bytes(value) for name, value in scope["headers"] if name.lower() == b"x-forwarded-for"]
    if not values:
        return
    hops = b",".join(values).decode("latin-1").split(",")
    for entry in reversed(hops):
        address = _hop(entry)
        if address is None:
            return  # a proxy of ours would not write that: keep the address that connected
        if not _in(address, trusted):
            scope["client"] = (address, 0)
            return
    first = _hop(hops[0])
    if first is not None:
        scope["client"] = (first, 0)  # every hop a proxy of ours: the first one asked


def _digest(code: bytes) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(code).digest()).decode("ascii") + "'"


@functools.lru_cache(maxsize=8)
def page_policy(page: bytes) -> str:
    """The Content-Security-Policy for one of capgate's own pages: its inline ``<script>`` and
    ``<style>`` by hash (so no injected code runs), images and audio (the human page's audio tasks) from
    ``data:`` URLs, requests to this origin only, no framing."""
    scripts = [_digest(body) for kind, body in _INLINE.findall(page) if kind.lower() == b"script"]
    styles = [_digest(body) for kind, body in _INLINE.findall(page) if kind.lower() == b"style"]
    parts = ["default-src 'none'", "script-src " + (" ".join(scripts) or "'none'"),
             "style-src " + (" ".join(styles) or "'none'"), "img-src data:", "media-src data:", "connect-src 'self'",
             "base-uri 'none'", "form-action 'none'", "frame-ancestors 'none'"]
    return "; ".join(parts)


class SecurityHeaders:
    """ASGI middleware: ``nosniff`` on every response, and on HTML ones a CSP (:data:`STRICT_CSP`
    unless the page set its own, :func:`page_policy`), ``X-Frame-Options: DENY`` and
    ``Referrer-Policy: no-referrer``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers.setdefault("X-Content-Type-Options", "nosniff")
                if headers.get("content-type", "").lower().startswith("text/html"):
                    headers.setdefault("Content-Security-Policy", STRICT_CSP)
                    for name, value in PAGE_HEADERS.items():
                        headers.setdefault(name, value)
            await send(message)

        await self.app(scope, receive, sending)
