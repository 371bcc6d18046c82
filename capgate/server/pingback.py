"""Pingback: tell the customer's URL when a task settles, off the request path.

Delivery is a form POST ``id=<id>&code=<answer or error code>`` (PROTOCOL.md §0), retried with
exponential backoff. Where it may go is doubly fenced: the host must be one the account registered
(``res.php?action=add_pingback``), and its addresses must be public unless the operator allows
private ones, so the service can't be aimed at its own network.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import random
import socket
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx

from capgate.protocol import answers
from capgate.protocol.codes import C
from capgate.protocol.methods import BY_NAME
from capgate.settings import Settings
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


def _public(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    return not (ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_multicast
                or ip.is_reserved or ip.is_unspecified)


@dataclass(frozen=True)
class Destination:
    """Where to send: the URL to connect to and what to tell the server it is talking to."""

    url: str
    headers: dict[str, str]
    extensions: dict[str, str]


async def check_destination(url: str, allowed_hosts: list[str], allow_private: bool) -> Destination:
    """Refuse unregistered hosts and, unless allowed, private addresses. The request then goes to
    the very address that was checked (Host header and TLS name kept), so a DNS answer that
    changes between the check and the request cannot point it inside the network."""
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
    if allow_private:
        return Destination(url, {}, {})
    default_port = 443 if parts.scheme == "https" else 80
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port or default_port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise Refused(f"cannot resolve {host!r}: {exc}") from None
    addresses = [str(info[4][0]) for info in infos]
    if not addresses or not all(_public(address) for address in addresses):
        raise Refused(f"{host!r} resolves to a private address; not sent (pingback_allow_private)")
    address = addresses[0]
    literal = f"[{address}]" if ":" in address else address
    netloc = f"{literal}:{port}" if port else literal
    host_header = f"{host}:{port}" if port else host
    return Destination(parts._replace(netloc=netloc).geturl(), {"Host": host_header}, {"sni_hostname": host})


class PingbackSender:
    def __init__(self, settings: Settings, store: Store) -> None:
        self.settings = settings
        self.store = store
        self._wake = asyncio.Event()
        self._slots = asyncio.Semaphore(BATCH)

    def wake(self, task_id: int = 0) -> None:
        self._wake.set()

    async def run(self, transport: httpx.AsyncBaseTransport | None = None) -> None:
        async with httpx.AsyncClient(timeout=TIMEOUT_S, transport=transport, follow_redirects=False) as http:
            running: set[asyncio.Task[None]] = set()
            while True:
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
                self._wake.clear()
                await wait_event(self._wake, IDLE_S)

    async def _deliver(self, http: httpx.AsyncClient, task: Task) -> None:
        try:
            url = task.pingback or ""
            hosts = await self.store.pingback_hosts(task.account_id)
            target = await check_destination(url, hosts, self.settings.pingback_allow_private)
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
