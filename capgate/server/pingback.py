"""Pingback: tell the customer's URL when a task settles, off the request path.

Delivery is a form POST ``id=<id>&code=<answer or error code>`` (PROTOCOL.md §0), retried with
exponential backoff. Where it may go is doubly fenced: the host must be one the account registered
(``res.php?action=add_pingback``: a host name of valid syntax, or an address the fence lets through,
at most ``pingback_hosts_max`` of them), and every address it resolves to must be globally routable
(:class:`Fence`) unless the operator allows a range, so the service can't be aimed at its own
network (docs/security.md).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import random
import re
import socket
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx

from capgate.protocol import answers
from capgate.protocol.codes import C
from capgate.protocol.methods import BY_NAME
from capgate.settings import Network, Settings, parse_networks
from capgate.store.base import Store
from capgate.store.models import Task, TaskState
from capgate.waiting import wait_event

log = logging.getLogger("capgate.pingback")
HOLD_S = 60.0  # a claimed delivery is not taken by another sender for this long
BATCH = 32
IDLE_S = 0.5
TIMEOUT_S = 10.0
MAX_BACKOFF_S = 300.0


class Refused(Exception):
    pass


def pingback_code(task: Task) -> str:
    if task.state is TaskState.SOLVED and task.answer is not None:
        kind = BY_NAME[task.method].answer
        return answers.plain_from_json(kind, task.answer)
    return task.error or C.CAPTCHA_UNSOLVABLE


def backoff(attempt: int) -> float:
    return min(MAX_BACKOFF_S, 2.0 ** attempt) * (0.75 + random.random() / 2)


IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")  # RFC 6052's well-known prefix: IPv4 in the last 32 bits
_GLOBAL_UNICAST = ipaddress.IPv6Network("2000::/3")
# Not globally reachable (IANA's special-purpose registries) although Python 3.11's ``is_global``
# says they are, or not a unicast destination at all.
_REFUSED_V4 = tuple(ipaddress.IPv4Network(n) for n in (
    "192.0.0.0/24",  # IETF protocol assignments
    "192.88.99.0/24",  # the deprecated 6to4 relay anycast
    "224.0.0.0/4", "240.0.0.0/4",  # multicast, reserved and broadcast
))
_REFUSED_V6 = tuple(ipaddress.IPv6Network(n) for n in (
    "2001::/23",  # IETF protocol assignments (Teredo among them)
    "2001:db8::/32", "3fff::/20",  # documentation
    "2002::/16",  # 6to4: only ever checked by the IPv4 address inside
))


def embedded_ipv4(ip: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries (mapped ``::ffff:a.b.c.d``, NAT64 ``64:ff9b::/96``,
    6to4 ``2002::/16``): a packet to it reaches that IPv4 address, so it is checked as that."""
    if not isinstance(ip, ipaddress.IPv6Address):
        return None
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return ip.sixtofour


def globally_routable(ip: IPAddress) -> bool:
    """Unicast and globally reachable; an IPv6 address that carries an IPv4 one is judged by that."""
    inner = embedded_ipv4(ip)
    if inner is not None:
        ip = inner
    if isinstance(ip, ipaddress.IPv4Address):
        return ip.is_global and not any(ip in net for net in _REFUSED_V4)
    return ip in _GLOBAL_UNICAST and ip.is_global and not any(ip in net for net in _REFUSED_V6)


@dataclass(frozen=True)
class Fence:
    """Which addresses a pingback may go to: globally routable ones, those in ``allowed``
    (``pingback_allow``), or any at all (``pingback_allow_private``)."""

    allow_all: bool = False
    allowed: tuple[Network, ...] = ()

    @staticmethod
    def of(settings: Settings) -> Fence:
        return Fence(settings.pingback_allow_private, parse_networks(settings.pingback_allow, "pingback_allow"))

    def refuses(self, address: str) -> str | None:
        """Why a pingback may not go to ``address`` (an IP address as text), or ``None``."""
        try:
            ip = ipaddress.ip_address(address.split("%", 1)[0])
        except ValueError:
            return f"{address!r} is not an IP address"
        if self.allow_all:
            return None
        inner = embedded_ipv4(ip)
        if any(candidate in net for candidate in (ip, inner) if candidate is not None for net in self.allowed
               if candidate.version == net.version):
            return None
        if globally_routable(ip):
            return None
        carried = f" (it carries {inner})" if inner is not None else ""
        return (f"{address} is not a globally routable address{carried}; "
                "an operator may allow it (pingback_allow, pingback_allow_private)")


_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")


def refused_host(host: str, fence: Fence) -> str | None:
    """Why ``host`` (lower case, as ``urlsplit`` gives it) may not be registered for pingbacks, or
    ``None``. A host name of valid syntax (RFC 1123 labels, a top-level label that is not a number)
    is checked again, by its addresses, at each delivery; an address literal is checked now, and only
    in its canonical spelling (``127.1``, ``0x7f.1`` or ``2130706433`` are addresses to a resolver)."""
    shown = repr(host if len(host) <= 100 else host[:100] + "…")
    if ":" in host:
        return fence.refuses(host) if "%" not in host else f"{shown}: a zone index is not allowed"
    try:
        ipaddress.IPv4Address(host)
    except ValueError:
        pass
    else:
        return fence.refuses(host)
    name = host[:-1] if host.endswith(".") else host
    if not name or len(name) > 253:
        return f"{shown} is not a host name (1 to 253 characters)"
    labels = name.split(".")
    bad = next((label for label in labels if not _LABEL.fullmatch(label)), None)
    if bad is not None:
        return (f"{shown} is not a host name: label {bad[:70]!r} is not 1 to 63 letters, digits or inner "
                "hyphens (international names in their xn-- form)")
    try:
        socket.inet_aton(name)
    except OSError:
        pass
    else:
        return f"{shown} is a non-canonical spelling of an IPv4 address; write it as a.b.c.d"
    if labels[-1].isdigit():
        return f"{shown} is not a host name: its last label is a number"
    return None


@dataclass(frozen=True)
class Destination:
    """Where to send: the URL to connect to and what to tell the server it is talking to."""

    url: str
    headers: dict[str, str]
    extensions: dict[str, str]


async def check_destination(url: str, allowed_hosts: list[str], fence: Fence) -> Destination:
    """Refuse unregistered hosts and addresses the fence refuses. The request then goes to the
    very address that was checked (Host header and TLS name kept), so a DNS answer that changes
    between the check and the request cannot point it inside the network."""
    try:
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
        port = parts.port
    except ValueError:
        raise Refused(f"not a URL: {url!r}") from None
    if parts.scheme not in ("http", "https") or not host:
        raise Refused(f"not an http(s) URL: {url!r}")
    if host not in allowed_hosts:
        raise Refused(f"host {host!r} is not registered for this account")
    if fence.allow_all:
        return Destination(url, {}, {})
    default_port = 443 if parts.scheme == "https" else 80
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port or default_port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise Refused(f"cannot resolve {host!r}: {exc}") from None
    addresses = [str(info[4][0]) for info in infos]
    if not addresses:
        raise Refused(f"{host!r} resolves to no address")
    for address in addresses:
        why = fence.refuses(address)
        if why is not None:
            raise Refused(f"{host!r} resolves to {address}: {why}; not sent")
    address = addresses[0]
    literal = f"[{address}]" if ":" in address else address
    netloc = f"{literal}:{port}" if port else literal
    host_header = f"{host}:{port}" if port else host
    return Destination(parts._replace(netloc=netloc).geturl(), {"Host": host_header}, {"sni_hostname": host})


class PingbackSender:
    def __init__(self, settings: Settings, store: Store) -> None:
        self.settings = settings
        self.store = store
        self.fence = Fence.of(settings)
        self._wake = asyncio.Event()
        self._slots = asyncio.Semaphore(BATCH)

    def wake(self, task_id: int = 0) -> None:
        self._wake.set()

    async def run(self, transport: httpx.AsyncBaseTransport | None = None) -> None:
        async with httpx.AsyncClient(timeout=TIMEOUT_S, transport=transport, follow_redirects=False) as http:
            running: set[asyncio.Task[None]] = set()
            while True:
                # Cleared before the read, not after it: a settle that wakes the sender while it reads
                # is looked at on the next round at once, not after IDLE_S.
                self._wake.clear()
                try:
                    due = await self.store.due_pingbacks(time.time(), HOLD_S, BATCH)
                except Exception:
                    log.exception("reading due pingbacks failed")
                    due = []
                for task in due:
                    await self._slots.acquire()
                    job = asyncio.create_task(self._deliver(http, task))
                    running.add(job)
                    job.add_done_callback(running.discard)
                if len(due) == BATCH:
                    continue
                await wait_event(self._wake, IDLE_S)

    async def _deliver(self, http: httpx.AsyncClient, task: Task) -> None:
        try:
            url = task.pingback or ""
            hosts = await self.store.pingback_hosts(task.account_id)
            target = await check_destination(url, hosts, self.fence)
            response = await http.post(target.url, data={"id": str(task.id), "code": pingback_code(task)},
                                       headers=target.headers, extensions=target.extensions)
            delivered = 200 <= response.status_code < 300
            if not delivered:
                log.info("pingback for %s: HTTP %s", task.id, response.status_code)
        except Refused as exc:
            log.warning("pingback for %s refused: %s", task.id, exc)
            await self.store.pingback_done(task.id, False, None)
            return
        except httpx.HTTPError as exc:
            log.info("pingback for %s failed: %s", task.id, exc)
            delivered = False
        finally:
            self._slots.release()
        attempt = task.pingback_attempts + 1
        if delivered or attempt >= self.settings.pingback_attempts:
            await self.store.pingback_done(task.id, delivered, None)
        else:
            await self.store.pingback_done(task.id, False, time.time() + backoff(attempt))
