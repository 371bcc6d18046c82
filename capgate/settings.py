"""Operator settings: defaults from PROTOCOL.md §0, overridden by ``CAPGATE_*`` variables and flags.

Every field can be set from the environment as ``CAPGATE_<FIELD NAME IN UPPER CASE>``; the
command line (``capgate serve --help``) overrides the environment.
"""

from __future__ import annotations

import dataclasses
import functools
import ipaddress
import os
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from capgate.money import usd_to_micros
from capgate.paths import database_url
from capgate.protocol.codes import C
from capgate.protocol.methods import BY_NAME

POOLED_NEEDS_LISTEN = ("CAPGATE_DB_POOLED needs CAPGATE_DB_LISTEN, PostgreSQL's own address: a transaction pooler "
                       "carries no LISTEN, and every wake-up from other processes would be lost")


@dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 8000
    db: str = field(default_factory=database_url)
    # PostgreSQL behind a transaction pooler (PgBouncer, pool_mode = transaction): db_pooled turns off
    # server-side prepared statements (a pooled connection may be another server session in the next
    # transaction), and db_listen names PostgreSQL directly for the LISTEN connection (a session of
    # its own, which a transaction pooler cannot keep). docs/deploy.md "Sizing".
    db_pooled: bool = False
    db_listen: str = ""  # default: db
    ssl_certfile: str = ""
    ssl_keyfile: str = ""
    # On SIGTERM or Ctrl-C, requests still running after this many seconds are cut off: a claim or
    # res.php long-poll may otherwise hold the stop for its whole wait (up to 30 s).
    shutdown_grace: int = 1

    # The HTTP server (Granian; docs/security.md "The front door"). processes: worker processes serving
    # the port, each running the app and its built-in workers.
    processes: int = 1
    event_loop: str = "auto"  # auto (uvloop when installed), asyncio or uvloop
    backlog: int = 2048  # connections the kernel queues before they are accepted
    max_connections: int = 4096  # requests served at once, per process; more wait in the backlog
    header_limit: int = 64 * 1024  # bytes of request line and headers (refused above, 431)
    header_timeout: float = 10.0  # seconds to send them: a slower head is dropped
    body_timeout: float = 30.0  # seconds to send a whole body: a slower one is dropped, nothing of it used
    per_address: int = 256  # requests one client address may have open at once (0: no limit)
    # Bytes of request bodies being received at once, by one address and by all (capgate/server/admission.py).
    address_body_memory: int = 64 * 1024 * 1024
    body_memory: int = 512 * 1024 * 1024

    # Request and image limits (§0 "Image limits").
    body_limit: int = 8 * 1024 * 1024
    res_body_limit: int = 64 * 1024  # res.php: its parameters are short
    field_limit: int = 64 * 1024  # bytes of one text parameter (images and their like excepted)
    image_min_bytes: int = 100
    image_max_bytes: int = 1024 * 1024
    image_max_side: int = 1000

    # Task life (§0 "Deadlines").
    image_deadline: float = 90.0
    token_deadline: float = 300.0
    retention: float = 900.0
    report_window: float = 900.0
    refund_bad: bool = True
    max_pending: int = 100_000

    # §0 "Account's own thread cap reached": ERROR_ZERO_BALANCE unless set to ERROR_NO_SLOT_AVAILABLE.
    thread_cap_code: str = C.ZERO_BALANCE

    # §0 "IP ban".
    ban_threshold: int = 20
    ban_window: float = 60.0
    ban_duration: float = 300.0
    # Addresses (comma-separated addresses or networks) never struck or banned, whatever they send.
    ban_exempt: str = "127.0.0.0/8,::1"
    # Proxies (comma-separated addresses or networks) whose X-Forwarded-For names the client. None by
    # default: the client is the address that connected, whatever a header says (docs/security.md).
    trusted_proxies: str = ""

    # §6 MAX_USER_TURN: a key making more than submit_turns in.php calls within turn_window seconds
    # is refused for turn_block seconds (2captcha: 60 in 3 s, 10 s). 0 turns it off, the default:
    # a self-hosted service's clients are its owner's.
    submit_turns: int = 0
    turn_window: float = 3.0
    turn_block: float = 10.0

    # Sandbox worker.
    sandbox_delay: float = 1.0

    # Workers.
    lease: float = 30.0
    max_attempts: int = 3
    worker_presence: float = 60.0  # a worker seen this recently counts as serving its methods
    ocr: bool = True  # the built-in OCR worker
    ocr_processes: int = 0  # 0: one per core
    max_wait: float = 30.0  # longest res.php long-poll (wait=N)
    solve_wait: float = 120.0  # longest solve.php call
    # Long-polls (res.php wait=N, solve.php) one account may hold at once, per API process; one more
    # is answered at once, as the same call without a wait would be. 0: none may wait.
    long_polls_per_account: int = 100

    # Labels kept from use (opt-in per account), per family folder.
    label_limit: int = 10_000

    # Pingback. Only globally routable addresses get one, unless allowed: every address
    # (pingback_allow_private) or these networks (pingback_allow, comma-separated).
    pingback_allow_private: bool = False
    pingback_allow: str = ""
    pingback_attempts: int = 5
    pingback_hosts_max: int = 10  # hosts one account may register (add_pingback)

    # reportbad refunds, per account, at most this share of what it was charged over the last 24 h
    # (0: no limit, the default; an operator who sells may set e.g. 0.1).
    refund_budget: float = 0.0

    # Who may read /metrics (comma-separated addresses or networks): this machine only by default;
    # "0.0.0.0/0,::/0" opens it to every address.
    metrics_allow: str = "127.0.0.0/8,::1"

    # Per-method prices in USD, "normal=0.001,recaptcha_v2=0.002"; unset methods use the registry's.
    prices: str = ""

    def price_of(self, method: str) -> Decimal:
        overrides = parse_prices(self.prices)
        return overrides.get(method, BY_NAME[method].price if method in BY_NAME else Decimal(0))

    def price_micros(self, method: str) -> int:
        """:meth:`price_of` in micro-dollars, worked out once per settings (asked on every submit)."""
        return self._price_micros.get(method, 0)

    @functools.cached_property
    def _price_micros(self) -> dict[str, int]:
        return {name: usd_to_micros(self.price_of(name)) for name in BY_NAME}


def parse_prices(text: str) -> dict[str, Decimal]:
    prices: dict[str, Decimal] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, value = item.partition("=")
        if not sep or name.strip() not in BY_NAME:
            raise ValueError(f"bad price {item!r}: expected METHOD=USD with a known method")
        try:
            prices[name.strip()] = Decimal(value.strip())
        except InvalidOperation:
            raise ValueError(f"bad price {item!r}: {value!r} is not a number") from None
    return prices


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(text: str, name: str = "networks") -> tuple[Network, ...]:
    """``"10.0.0.0/8, 192.0.2.7, ::1"`` -> networks (an address is a network of one)."""
    networks: list[Network] = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ValueError(f"{name}: not an address or network: {item!r}") from None
    return tuple(networks)


def _coerce(kind: Any, raw: str, name: str) -> Any:
    if kind in (bool, "bool"):
        lowered = raw.strip().lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off", ""):
            return False
        raise ValueError(f"CAPGATE_{name.upper()}: expected true/false, got {raw!r}")
    try:
        if kind in (int, "int"):
            return int(raw)
        if kind in (float, "float"):
            return float(raw)
    except ValueError:
        raise ValueError(f"CAPGATE_{name.upper()}: expected a number, got {raw!r}") from None
    return raw


def from_env(environ: dict[str, str] | None = None, **overrides: Any) -> Settings:
    """Settings from ``CAPGATE_*`` variables, then ``overrides`` (flags) where not ``None``."""
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for f in dataclasses.fields(Settings):
        raw = env.get(f"CAPGATE_{f.name.upper()}")
        if raw is not None and (raw != "" or f.type in ("str", str)):
            values[f.name] = _coerce(f.type, raw, f.name)
    values.update({k: v for k, v in overrides.items() if v is not None})
    settings = Settings(**values)
    parse_prices(settings.prices)
    if settings.thread_cap_code not in (C.ZERO_BALANCE, C.NO_SLOT_AVAILABLE):
        raise ValueError("CAPGATE_THREAD_CAP_CODE: ERROR_ZERO_BALANCE or ERROR_NO_SLOT_AVAILABLE")
    for name in ("ban_exempt", "trusted_proxies", "pingback_allow"):
        parse_networks(getattr(settings, name), f"CAPGATE_{name.upper()}")
    parse_networks(settings.metrics_allow, "CAPGATE_METRICS_ALLOW")
    if not 0 <= settings.refund_budget <= 1:
        raise ValueError("CAPGATE_REFUND_BUDGET: a share from 0 (no limit) to 1")
    if settings.pingback_hosts_max < 0:
        raise ValueError("CAPGATE_PINGBACK_HOSTS_MAX: 0 or more")
    if settings.db_pooled and not settings.db_listen:
        raise ValueError(POOLED_NEEDS_LISTEN)
    return settings
