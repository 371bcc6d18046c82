"""Who gets in: requests one client address may have open at once, and the memory that bodies being
received may hold, per address and in all.

A body is received whole before it is parsed (the body limit is 8 MiB), so a hundred clients that
declare 8 MiB and send it slowly would otherwise hold 800 MB. Each body's declared length is reserved
before its first byte is read and released once it has been parsed; a request that would pass either
budget is refused at once (HTTP 503, ``Retry-After``), before its body is read.
"""

from __future__ import annotations

import functools
import ipaddress

from capgate.server.counts import HeldCounts
from capgate.settings import Network, Settings, parse_networks


class Admission:
    def __init__(self, settings: Settings) -> None:
        self.per_address = settings.per_address
        self.body_memory = settings.body_memory
        self.address_body_memory = settings.address_body_memory
        self._exempt_networks = parse_networks(settings.ban_exempt, "ban_exempt")
        self._open: HeldCounts[str] = HeldCounts()
        self._bodies: dict[str, int] = {}
        self.body_bytes = 0

    @functools.lru_cache(maxsize=4096)  # noqa: B019 - one Admission per app, for the app's life
    def exempt(self, address: str) -> bool:
        """Addresses never capped: those never banned (loopback by default: the operator's own)."""
        return _within(address, self._exempt_networks)

    def enter(self, address: str) -> bool:
        """A request from ``address`` begins; False when the address has ``per_address`` open already."""
        if self._open.take(address, self.per_address or None):  # per_address 0: no limit
            return True
        return self.exempt(address) and self._open.take(address, None)  # asked only past the cap

    def leave(self, address: str) -> None:
        self._open.give(address)

    def reserve(self, address: str, size: int) -> bool:
        """Room for a body of ``size`` bytes from ``address``; False when it would pass a budget."""
        held = self._bodies.get(address, 0)
        if not self.exempt(address) and (held + size > self.address_body_memory
                                         or self.body_bytes + size > self.body_memory):
            return False
        self._bodies[address] = held + size
        self.body_bytes += size
        return True

    def release(self, address: str, size: int) -> None:
        held = self._bodies.pop(address, size) - size
        if held > 0:
            self._bodies[address] = held
        self.body_bytes -= size


def _within(address: str, networks: tuple[Network, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in networks)
