"""What the people who run capgate see: ``/`` (the landing page), ``/metrics``, and the admin API and
dashboard under ``/admin`` (:mod:`capgate.server.admin`).

:class:`ObservedTasks` feeds the metrics: tasks this process settled (the settle hub names them) are
read back once a second, in one query, for their method, outcome and time to answer; each settle is
heard by exactly one process, so every task is counted once across processes.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from capgate.server.admin.api import admin_routes
from capgate.server.admin.pages import landing_routes
from capgate.server.metrics import CONTENT_TYPE_LATEST, metrics
from capgate.server.observe import Observer
from capgate.server.service import Service
from capgate.settings import Network, parse_networks

log = logging.getLogger("capgate.server")
FLUSH_EVERY_S = 1.0
READ_AT_ONCE = 500  # settled ids read back per query


class ObservedTasks:
    """Moves this process's counts to the metrics once a second: requests (from the
    :class:`Observer`) and tasks settled here."""

    def __init__(self, service: Service, observer: Observer) -> None:
        self.service = service
        self.observer = observer
        self._settled: list[int] = []
        self._ledger: dict[str, tuple[int, int]] = {}
        self._ledger_last = 0
        self._ledger_lock = asyncio.Lock()  # two scrapes at once must not both add the same entries

    def settled(self, task_id: int) -> None:
        self._settled.append(task_id)  # on the settle path: nothing more

    async def flush(self) -> None:
        registry = metrics()
        counts, seconds, in_flight = self.observer.take()
        registry.count_requests(counts, seconds)
        registry.set_in_flight(in_flight)
        ids, self._settled = self._settled, []
        for start in range(0, len(ids), READ_AT_ONCE):
            registry.count_settled(await self.service.store.settled_of(ids[start:start + READ_AT_ONCE]))

    async def ledger(self) -> dict[str, tuple[int, int]]:
        """Ledger totals by kind, kept running: each scrape reads only the entries added since the last
        (the ledger grows by an entry per charge; summing all of it on every scrape would not last)."""
        async with self._ledger_lock:
            added, last = await self.service.store.ledger_totals(self._ledger_last)
            for kind, (n, total) in added.items():
                seen, summed = self._ledger.get(kind, (0, 0))
                self._ledger[kind] = (seen + n, summed + total)
            self._ledger_last = last
            return dict(self._ledger)

    async def run(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_EVERY_S)
            try:
                await self.flush()
            except Exception:
                log.exception("metrics flush failed")


def client_in(request: Request, networks: tuple[Network, ...]) -> bool:
    """The client (after trusted proxies) is in one of ``networks`` (an IPv4-mapped address as its IPv4)."""
    try:
        address = ipaddress.ip_address(request.client.host if request.client else "")
    except ValueError:
        return False
    mapped = address.ipv4_mapped if isinstance(address, ipaddress.IPv6Address) else None
    return any(a.version == net.version and a in net for a in (address, mapped) if a is not None for net in networks)


def operator_routes(service: Service, observed: ObservedTasks) -> list[BaseRoute]:
    allowed = parse_networks(service.settings.metrics_allow, "metrics_allow")

    async def metrics_endpoint(request: Request) -> Response:
        if not client_in(request, allowed):
            return PlainTextResponse("metrics are open to the addresses of CAPGATE_METRICS_ALLOW only\n",
                                     status_code=403)
        await observed.flush()
        body = await metrics().render(service.store, service.settings.worker_presence, await observed.ledger())
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    return [Route("/metrics", metrics_endpoint), *landing_routes(), *admin_routes(service)]
