"""Who may do what (docs/security.md, issue 12): where pingbacks may go, which address a request comes
from, bans and their exemptions, worker tokens (disabled, deleted, lease holders, method limits), and
the headers of capgate's HTML pages.

Against the app in process (tests/appkit.py) on both store backends, one app per backend for the
module (3 wrong keys ban, at most 3 pingback hosts per account, 192.0.2.0/28 a trusted proxy), plus
fresh apps where a test needs other settings or a service no worker has claimed from; the ``capgate``
commands run in process on the same database, as another process would. One real ``capgate serve``
shows that the server itself no longer takes ``X-Forwarded-For`` from 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import ipaddress
import re
import sqlite3
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from capgate import cli
from capgate.server.pingback import Fence, Refused, check_destination, globally_routable, refused_host
from capgate.server.security import forwarded_client
from capgate.settings import from_env, parse_networks
from tests.appkit import AppHost, app_host
from tests.serverproc import start_server
from tests.storekit import BACKENDS, backend_of
from tests.workerkit import PAGEURL, act, call, claim, claim_id, drain, get, res, submit, turnstile

THRESHOLD = 3
HOSTS_MAX = 3
PROXIES = "192.0.2.0/28"


def run_cli(capsys: pytest.CaptureFixture[str], db: str, *args: str) -> tuple[int, str, str]:
    """``capgate ARGS --db DB`` in this process (its own store on the database); (status, out, err)."""
    capsys.readouterr()
    status = cli.main([*args, "--db", db])
    out, err = capsys.readouterr()
    return status, out, err


async def arun_cli(capsys: pytest.CaptureFixture[str], db: str, *args: str) -> tuple[int, str, str]:
    """:func:`run_cli` from an async test (the command runs its own event loop)."""
    return await asyncio.to_thread(run_cli, capsys, db, *args)


@pytest.fixture(scope="module", params=BACKENDS)
def host(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppHost]:
    backend = backend_of(request, request.param, tmp_path_factory.mktemp(f"security-{request.param}"))
    with app_host(backend, ban_threshold=THRESHOLD, pingback_hosts_max=HOSTS_MAX, trusted_proxies=PROXIES) as app:
        yield app


@pytest.fixture(scope="module")
def presence(host: AppHost) -> str:
    """A token that drains the queue before each worker test and keeps every method served."""
    return host.worker_token("presence")


@pytest.fixture()
async def client(host: AppHost, presence: str) -> AsyncIterator[httpx.AsyncClient]:
    async with host.aclient() as http:
        await drain(http, presence)
        yield http


_counter = iter(range(1, 10_000))


def address(prefix: str = "198.51.100") -> str:
    """An address no other test of the module uses (strikes and bans are per address)."""
    return f"{prefix}.{next(_counter) % 250 + 1}"


def banned(host: AppHost) -> set[str]:
    return {ip for ip, _ in host.run(host.store.bans(time.time()))}


def strike_out(host: AppHost, client: httpx.Client, times: int = THRESHOLD + 2) -> None:
    for _ in range(times):
        client.get("/res.php", params={"key": "0" * 32, "action": "getbalance"})


def balance_reply(client: httpx.Client, key: str, headers: dict[str, str] | None = None) -> str:
    return client.get("/res.php", params={"key": key, "action": "getbalance"}, headers=headers).text


# ------------------------------------------------------------------------------------------ pingback: the fence

REFUSED = [
    "127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254", "0.0.0.0", "255.255.255.255",
    "100.100.100.200",  # shared address space (100.64.0.0/10): a cloud metadata address lives there
    "100.64.0.1", "192.0.0.192", "192.0.0.9", "192.88.99.1", "198.18.0.1", "192.0.2.1", "203.0.113.7",
    "224.0.0.1", "240.0.0.1",
    "::1", "::", "fe80::1", "fe80::1%eth0", "fc00::1", "fd12:3456::1", "ff02::1", "2001:db8::1", "3fff::1",
    "2001::1",  # Teredo
    "::ffff:127.0.0.1", "::ffff:10.0.0.1", "::ffff:169.254.169.254",  # IPv4-mapped
    # NAT64 of 127.0.0.1, 169.254.169.254, 100.100.100.200
    "64:ff9b::7f00:1", "64:ff9b::a9fe:a9fe", "64:ff9b::6464:64c8",
    "64:ff9b:1::1",  # local-use NAT64
    "2002:7f00:1::1", "2002:a9fe:a9fe::", "2002:c0a8:101::1",  # 6to4 of 127.0.0.1, 169.254.169.254, 192.168.1.1
    "::7f00:1",  # IPv4-compatible (deprecated)
]
ROUTABLE = ["8.8.8.8", "1.1.1.1", "93.184.215.14", "2606:4700:4700::1111", "2a00:1450:4001:800::200e",
            "::ffff:8.8.8.8", "64:ff9b::808:808", "2002:808:808::1"]


@pytest.mark.parametrize("addr", REFUSED)
def test_the_fence_refuses_what_is_not_globally_routable(addr: str) -> None:
    why = Fence().refuses(addr)
    assert why is not None and "not a globally routable address" in why, addr
    assert not globally_routable(ipaddress.ip_address(addr.split("%")[0]))


@pytest.mark.parametrize("addr", ROUTABLE)
def test_the_fence_lets_globally_routable_addresses_through(addr: str) -> None:
    assert Fence().refuses(addr) is None


def test_an_operator_allows_a_range_or_everything() -> None:
    allowed = from_env({}, pingback_allow="10.0.0.0/8, 100.100.100.200")
    fence = Fence.of(allowed)
    for addr in ("10.1.2.3", "::ffff:10.1.2.3", "64:ff9b::a01:203", "100.100.100.200", "8.8.8.8"):
        assert fence.refuses(addr) is None, addr
    for addr in ("192.168.1.1", "127.0.0.1", "100.100.100.201"):
        assert fence.refuses(addr) is not None, addr
    assert Fence.of(from_env({}, pingback_allow_private=True)).refuses("127.0.0.1") is None
    with pytest.raises(ValueError, match="PINGBACK_ALLOW"):
        from_env({"CAPGATE_PINGBACK_ALLOW": "10.0.0.0/8,intranet"})


@pytest.mark.parametrize("url", ["http://100.100.100.200/latest/meta-data", "http://[64:ff9b::a9fe:a9fe]/x",
                                 "https://[::ffff:127.0.0.1]:8443/x", "http://192.0.0.192/"])
async def test_a_delivery_to_a_refused_address_is_not_sent(url: str) -> None:
    registered = [httpx.URL(url).host]
    with pytest.raises(Refused, match="not a globally routable address"):
        await check_destination(url, registered, Fence())
    target = await check_destination(url, registered, Fence(allow_all=True))
    assert target.url == url


async def test_a_delivery_goes_to_the_address_that_was_checked() -> None:
    target = await check_destination("http://8.8.8.8:8080/hook?x=1", ["8.8.8.8"], Fence())
    assert target.url == "http://8.8.8.8:8080/hook?x=1"
    allowed = Fence(allowed=(ipaddress.ip_network("100.64.0.0/10"),))
    assert (await check_destination("http://100.100.100.200/m", ["100.100.100.200"], allowed)).url \
        == "http://100.100.100.200/m"


@pytest.mark.parametrize(("host_text", "reason"), [
    ("127.1", "non-canonical"), ("0x7f.1", "non-canonical"), ("017700000001", "non-canonical"),
    ("2130706433", "non-canonical"), ("0x7f000001", "non-canonical"), ("127.000.000.001", "non-canonical"),
    ("1.2.3.4.5", "last label is a number"), ("example.123", "last label is a number"),
    ("exa_mple.com", "not a host name"), ("-bad.example.com", "not a host name"),
    ("bad-.example.com", "not a host name"), ("a..b.com", "not a host name"), ("a" * 64 + ".com", "not a host name"),
    (".".join(["abcdefghi"] * 26) + ".com", "1 to 253"), ("bücher.de", "not a host name"),
    ("127.0.0.1", "not a globally routable"), ("::ffff:127.0.0.1", "not a globally routable"),
])
def test_refused_host_names_and_addresses(host_text: str, reason: str) -> None:
    why = refused_host(host_text, Fence())
    assert why is not None and reason in why, (host_text, why)


@pytest.mark.parametrize("host_text", ["example.com", "hooks.example.com.", "xn--bcher-kva.de", "8.8.8.8",
                                       "a-b.c0.example", "localhost", "2606:4700:4700::1111"])
def test_accepted_host_names_and_addresses(host_text: str) -> None:
    assert refused_host(host_text, Fence()) is None


# ------------------------------------------------------------------------------------------ pingback: add_pingback


async def test_add_pingback_refuses_what_pingbacks_may_not_reach_and_says_why(host: AppHost) -> None:
    key = host.make_key()
    refused = {
        "1' and sleep(5)--": "not a host name", "127.0.0.1": "not a globally routable",
        "http://127.1/cb": "non-canonical", "0x7f.1": "non-canonical", "017700000001": "non-canonical",
        "https://100.100.100.200/latest": "not a globally routable", "http://[::ffff:127.0.0.1]/x": "carries 127.0.0.1",
        "http://[2002:7f00:1::]:80/x": "carries 127.0.0.1", "http://[64:ff9b::a9fe:a9fe]/": "carries 169.254.169.254",
        "192.0.0.192": "not a globally routable", "exa_mple.com": "not a host name",
        "ftp://example.com/": "not an http",
    }
    async with host.aclient() as http:
        for addr, reason in refused.items():
            assert (await res(http, key, action="add_pingback", addr=addr)).text == "ERROR_IP_ADDRES", addr
            body = (await res(http, key, action="add_pingback", addr=addr, json=1)).json()
            assert (body["status"], body["request"]) == (0, "ERROR_IP_ADDRES")
            assert reason in body["error_text"], (addr, body)
        assert (await res(http, key, action="get_pingback")).text == "OK|"
        for addr in ("https://Hooks.Example.com:8443/cb", "8.8.8.8", "http://[2606:4700:4700::1111]/cb"):
            assert (await res(http, key, action="add_pingback", addr=addr)).text == "OK", addr
        assert (await res(http, key, action="get_pingback")).text \
            == "OK|2606:4700:4700::1111,8.8.8.8,hooks.example.com"


async def test_add_pingback_is_bounded_per_account(host: AppHost) -> None:
    key, other = host.make_key(), host.make_key()
    async with host.aclient() as http:
        for n in range(HOSTS_MAX):
            assert (await res(http, key, action="add_pingback", addr=f"h{n}.example.com")).text == "OK"
        assert (await res(http, key, action="add_pingback", addr="h0.example.com")).text == "OK"  # already there
        body = (await res(http, key, action="add_pingback", addr="one-more.example.com", json=1)).json()
        assert body["request"] == "ERROR_IP_ADDRES"
        assert f"the most allowed ({HOSTS_MAX})" in body["error_text"]
        assert (await res(http, other, action="add_pingback", addr="one-more.example.com")).text == "OK"
        assert (await res(http, key, action="del_pingback", addr="h1.example.com")).text == "OK"
        assert (await res(http, key, action="add_pingback", addr="one-more.example.com")).text == "OK"
        assert (await res(http, key, action="get_pingback")).text \
            == "OK|h0.example.com,h2.example.com,one-more.example.com"


async def test_a_host_registered_before_the_rules_gets_no_new_task(host: AppHost) -> None:
    key = host.make_key()
    for legacy in ("127.0.0.1", "1' and sleep(5)--"):  # rows a database of an older release may hold
        await host.arun(host.store.add_pingback_host(host.account_id(key), legacy))
    async with host.aclient() as http:
        reply = await http.post("/in.php", data={"key": key, **turnstile(), "pingback": "http://127.0.0.1/cb"})
        assert reply.text == "ERROR_BAD_PARAMETERS"
        assert (await res(http, key, action="add_pingback", addr="hooks.example.com")).text == "OK"
        assert (await submit(http, key, **turnstile(), pingback="https://hooks.example.com/cb")).isdigit()


# ------------------------------------------------------------------------------------------ client address


def test_x_forwarded_for_counts_only_from_a_trusted_proxy(host: AppHost) -> None:
    good = host.make_key()
    proxy, client_address, spoofed = "192.0.2.5", address(), address()
    with host.client(proxy) as through_proxy:
        # The proxy appends the address it saw; what the client wrote left of it is ignored.
        headers = {"X-Forwarded-For": f"127.0.0.1, {spoofed}, {client_address}"}
        for _ in range(THRESHOLD + 1):
            through_proxy.get("/res.php", params={"key": "0" * 32, "action": "getbalance"}, headers=headers)
        assert client_address in banned(host)
        assert spoofed not in banned(host) and proxy not in banned(host)
        assert balance_reply(through_proxy, good, headers) == "IP_BANNED"
        other = {"X-Forwarded-For": address()}  # another customer behind the same proxy
        assert balance_reply(through_proxy, good, other) == "0.00"
        # A chain of trusted proxies: the first untrusted address from the right.
        assert balance_reply(through_proxy, good, {"X-Forwarded-For": f"{client_address}, 192.0.2.7"}) == "IP_BANNED"
    outsider, named = address("203.0.113"), address()
    with host.client(outsider) as direct:  # not a trusted proxy: its header means nothing
        for _ in range(THRESHOLD + 1):
            direct.get("/res.php", params={"key": "0" * 32, "action": "getbalance"},
                       headers={"X-Forwarded-For": named})
        assert outsider in banned(host) and named not in banned(host)
        assert balance_reply(direct, good, {"X-Forwarded-For": address()}) == "IP_BANNED"


@pytest.mark.parametrize(("peer", "header", "seen"), [
    ("10.0.0.2", "203.0.113.9", "203.0.113.9"),
    ("10.0.0.2", "203.0.113.9:5123", "203.0.113.9"),
    ("10.0.0.2", "[2001:4860::8888]:443", "2001:4860::8888"),
    ("10.0.0.2", "198.51.100.1, 203.0.113.9, 10.0.0.3", "203.0.113.9"),  # the nearest untrusted hop
    ("10.0.0.2", "10.0.0.4, 10.0.0.3", "10.0.0.4"),  # every hop a proxy of ours: the first
    ("10.0.0.2", "203.0.113.9, unknown", "10.0.0.2"),  # not an address: the header is not ours
    ("10.0.0.2", None, "10.0.0.2"),
    ("::ffff:10.0.0.2", "203.0.113.9", "203.0.113.9"),  # a dual-stack socket's view of an IPv4 proxy
    ("192.0.2.1", "203.0.113.9", "192.0.2.1"),  # not a trusted proxy
])
def test_forwarded_client(peer: str, header: str | None, seen: str) -> None:
    headers = [(b"x-forwarded-for", header.encode())] if header is not None else []
    scope: dict[str, Any] = {"type": "http", "client": (peer, 40000), "headers": headers}
    forwarded_client(scope, parse_networks("10.0.0.0/24"))
    assert scope["client"][0] == seen


def test_trusted_proxies_must_be_addresses() -> None:
    with pytest.raises(ValueError, match="TRUSTED_PROXIES"):
        from_env({"CAPGATE_TRUSTED_PROXIES": "proxy.internal"})


def test_a_local_client_cannot_ban_an_address_it_names(tmp_path: Path) -> None:
    """A real ``capgate serve``: X-Forwarded-For from 127.0.0.1 is not the client's address."""
    env = {"CAPGATE_OCR": "0", "CAPGATE_BAN_THRESHOLD": "2", "CAPGATE_BAN_EXEMPT": ""}
    with start_server(tmp_path, env=env) as server, httpx.Client(base_url=server.base_url, timeout=30) as http:
        for _ in range(3):
            http.get("/res.php", params={"key": "0" * 32, "action": "getbalance"},
                     headers={"X-Forwarded-For": "198.51.100.77"})
        with sqlite3.connect(f"file:{server.db}?mode=ro", uri=True) as conn:
            ips = {row[0] for row in conn.execute("SELECT ip FROM ip_bans")}
    assert ips == {"127.0.0.1"}


# ------------------------------------------------------------------------------------------ bans


def test_loopback_is_exempt_from_bans_by_default(host: AppHost) -> None:
    good = host.make_key()
    for loopback in ("127.0.0.1", "::1", "127.8.8.8"):
        with host.client(loopback) as local:
            strike_out(host, local)
            assert balance_reply(local, good) == "0.00", loopback
            assert loopback not in banned(host)


@pytest.mark.parametrize("backend_name", BACKENDS)
def test_ban_exempt_ranges_are_the_operators(request: pytest.FixtureRequest, tmp_path: Path,
                                             backend_name: str) -> None:
    backend = backend_of(request, backend_name, tmp_path)
    with app_host(backend, ban_threshold=2, ban_exempt="198.51.100.128/25") as app:
        good = app.make_key()
        for addr, exempt in (("198.51.100.200", True), ("198.51.100.20", False), ("127.0.0.1", False)):
            with app.client(addr) as client:
                strike_out(app, client, 3)
                assert balance_reply(client, good) == ("0.00" if exempt else "IP_BANNED"), addr
        assert banned(app) == {"198.51.100.20", "127.0.0.1"}


def test_bans_list_and_lift(host: AppHost, capsys: pytest.CaptureFixture[str]) -> None:
    good, db = host.make_key(), host.settings.db
    victim = address()
    with host.client(victim) as client:
        strike_out(host, client)
        assert balance_reply(client, good) == "IP_BANNED"
        status, out, _ = run_cli(capsys, db, "bans", "list")
        assert status == 0
        line = next(line for line in out.splitlines() if line.split()[0] == victim)
        assert re.search(r"until \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC +\(\d+ s left\)", line), line
        status, out, _ = run_cli(capsys, db, "bans", "lift", victim)
        assert (status, out.strip()) == (0, f"lifted the ban on {victim}")
        assert balance_reply(client, good) == "0.00"  # at once: a ban is never memoised
        assert victim not in run_cli(capsys, db, "bans", "list")[1]
        status, _, err = run_cli(capsys, db, "bans", "lift", victim)
        assert status == 2 and "is not banned" in err
        # Lifted, the address starts from no strikes: the usual threshold bans it again.
        strike_out(host, client)
        assert balance_reply(client, good) == "IP_BANNED"


# ------------------------------------------------------------------------------------------ worker tokens


@pytest.mark.parametrize("backend_name", BACKENDS)
async def test_disable_enable_delete_a_worker_token(request: pytest.FixtureRequest, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str], backend_name: str) -> None:
    """In effect from the token's next call on every process (two apps on one database here), and a
    disabled token's methods stop counting as served."""
    backend = backend_of(request, backend_name, tmp_path)
    with app_host(backend) as one, app_host(backend) as two:
        token, key, db = one.worker_token("hbot", ["hcaptcha"]), one.make_key(sandbox=False), one.settings.db
        hcaptcha = {"method": "hcaptcha", "sitekey": "site-1", "pageurl": PAGEURL}
        async with one.aclient() as http1, two.aclient() as http2:
            for http in (http1, http2):
                assert (await call(http, token, "claim", {"methods": ["hcaptcha"]})).status_code == 200
            task_id = await submit(http1, key, **hcaptcha)
            task = await claim_id(http1, token, task_id, ["hcaptcha"])

            status, out, _ = await arun_cli(capsys, db, "workers", "disable", "hbot")
            assert status == 0 and out.split()[-1] == "disabled"
            for http in (http1, http2):
                assert (await call(http, token, "claim", {})).status_code == 401
                assert (await act(http, token, task, "heartbeat")).status_code == 401
                assert (await act(http, token, task, "answer", answer={"token": "t"})).status_code == 401
            reply = ""
            for _ in range(30):  # past the service's one-second cache of who serves what
                reply = (await http2.post("/in.php", data={"key": key, **hcaptcha, "sitekey": "site-2"})).text
                if reply == "ERROR_NO_SLOT_AVAILABLE":
                    break
                await asyncio.sleep(0.1)
            assert reply == "ERROR_NO_SLOT_AVAILABLE"

            worker_id = out.split()[0]
            status, out, _ = await arun_cli(capsys, db, "workers", "enable", worker_id)
            assert status == 0 and out.split()[-1] == "active"
            assert (await act(http2, token, task, "answer", answer={"token": "t-1"})).status_code == 200
            assert await get(http1, key, task_id) == "OK|t-1"

            status, out, _ = await arun_cli(capsys, db, "workers", "delete", token)  # by the token itself
            assert status == 0 and f"deleted worker token {worker_id} (hbot)" in out
            for http in (http1, http2):
                assert (await call(http, token, "claim", {})).status_code == 401
            status, _, err = await arun_cli(capsys, db, "workers", "delete", "hbot")
            assert status == 2 and "no worker token 'hbot'" in err
            status, _, err = await arun_cli(capsys, db, "workers", "disable", "nobody")
            assert status == 2


def test_a_name_two_tokens_share_asks_for_the_id(host: AppHost, capsys: pytest.CaptureFixture[str]) -> None:
    host.worker_token("twin")
    host.worker_token("twin")
    status, _, err = run_cli(capsys, host.settings.db, "workers", "disable", "twin")
    assert status == 2 and "2 worker tokens are named 'twin'" in err


async def test_only_the_token_holding_the_lease_may_act(host: AppHost, client: httpx.AsyncClient) -> None:
    w1, w2 = host.worker_token("w1"), host.worker_token("w2")
    key = host.make_key(sandbox=False, threads=50, balance="10")
    task_id = await submit(client, key, **turnstile())
    task = await claim_id(client, w1, task_id, ["turnstile"])
    for verb, body in (("heartbeat", {}), ("answer", {"answer": {"token": "stolen"}}),
                       ("fail", {"error": "ERROR_CAPTCHA_UNSOLVABLE", "final": True})):
        reply = await act(client, w2, task, verb, **body)
        assert reply.status_code == 403, (verb, reply.text)
        assert "another worker token" in reply.json()["error"]
    assert await get(client, key, task_id) == "CAPCHA_NOT_READY"
    assert (await act(client, w1, task, "heartbeat")).status_code == 200
    assert (await act(client, w1, task, "answer", answer={"token": "mine"})).status_code == 200
    assert await get(client, key, task_id) == "OK|mine"
    # Once settled, nobody's lease is alive: 409 as before, whoever asks.
    for token in (w1, w2):
        assert (await act(client, token, task, "answer", answer={"token": "again"})).status_code == 409


async def test_method_limits_hold_on_every_call(host: AppHost, client: httpx.AsyncClient) -> None:
    """A token may touch only tasks of its methods, whatever lease it presents (here one of the
    service's own in-process workers, which hold leases without a token)."""
    geetest_only = host.worker_token("gbot", ["geetest"])
    key = host.make_key(sandbox=False, threads=50, balance="10")
    task_id = await submit(client, key, **turnstile())
    dispatcher = host.app.service.dispatcher
    claimed = await host.arun(dispatcher.claim(["main"], ["turnstile"], 5, 30))
    assert claimed is not None and str(claimed.task.id) == task_id
    task = {"id": task_id, "lease": claimed.lease}
    for verb, body in (("heartbeat", {}), ("answer", {"answer": {"token": "x"}}), ("fail", {"final": True})):
        reply = await act(client, geetest_only, task, verb, **body)
        assert reply.status_code == 403, (verb, reply.text)
        assert "serves only: geetest" in reply.json()["error"]
    assert (await call(client, geetest_only, "claim", {"methods": ["turnstile"]})).status_code == 403
    assert await host.arun(dispatcher.heartbeat(int(task_id), claimed.lease, 30)) is not None  # still leased
    assert await get(client, key, task_id) == "CAPCHA_NOT_READY"
    assert await host.arun(dispatcher.fail(int(task_id), claimed.lease, "ERROR_CAPTCHA_UNSOLVABLE", final=True))


async def test_a_limited_token_still_serves_its_own_methods(host: AppHost, client: httpx.AsyncClient) -> None:
    tbot = host.worker_token("tbot", ["turnstile"])
    key = host.make_key(sandbox=False, threads=50, balance="10")
    task_id = await submit(client, key, **turnstile())
    task = await claim_id(client, tbot, task_id, ["turnstile"])
    assert (await act(client, tbot, task, "heartbeat")).status_code == 200
    assert (await act(client, tbot, task, "fail")).status_code == 200  # given back
    task = await claim_id(client, tbot, task_id, None)
    assert (await act(client, tbot, task, "answer", answer={"token": "ok"})).status_code == 200
    assert await claim(client, tbot) is None


# ------------------------------------------------------------------------------------------ refunds


@pytest.mark.parametrize("backend_name", BACKENDS)
async def test_the_refund_budget_setting_caps_reportbad(request: pytest.FixtureRequest, tmp_path: Path,
                                                        backend_name: str) -> None:
    """``refund_budget=0.5``: refunds of the last 24 h reach at most half of the charges (the rule
    itself is the store's, tests/test_store_contract.py)."""
    backend = backend_of(request, backend_name, tmp_path)
    with app_host(backend, refund_budget=0.5, prices="turnstile=1") as app:
        key, bot = app.make_key(sandbox=False, balance="10"), app.worker_token("bot")
        async with app.aclient() as http:
            assert await claim(http, bot) is None  # tells the service every method is served
            ids = []
            for n in range(2):
                task_id = await submit(http, key, **turnstile())
                task = await claim_id(http, bot, task_id, None)
                assert (await act(http, bot, task, "answer", answer={"token": f"t{n}"})).status_code == 200
                ids.append(task_id)
            replies = [(await res(http, key, action="reportbad", id=task_id)).text for task_id in ids]
            assert replies == ["OK_REPORT_RECORDED", "REPORT_NOT_RECORDED"]
            assert (await res(http, key, action="getbalance")).text == "9.00"
    with pytest.raises(ValueError, match="REFUND_BUDGET"):
        from_env({"CAPGATE_REFUND_BUDGET": "1.5"})


# ------------------------------------------------------------------------------------------ HTML pages


def test_the_human_page_sends_security_headers(app: AppHost) -> None:
    page = app.http.get("/human")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert page.headers["x-frame-options"] == "DENY"
    assert page.headers["referrer-policy"] == "no-referrer"
    assert page.headers["x-content-type-options"] == "nosniff"
    policy = dict(part.strip().split(" ", 1) for part in page.headers["content-security-policy"].split(";"))
    assert policy["default-src"] == "'none'"
    assert policy["frame-ancestors"] == "'none'"
    assert policy["connect-src"] == "'self'" and policy["img-src"] == "data:"
    assert "unsafe" not in page.headers["content-security-policy"]
    for kind in ("script", "style"):
        bodies = re.findall(rf"<{kind}>(.*?)</{kind}>".encode(), page.content, re.DOTALL)
        assert bodies, kind
        hashes = {"'sha256-" + base64.b64encode(hashlib.sha256(b).digest()).decode() + "'" for b in bodies}
        assert set(policy[f"{kind}-src"].split()) == hashes
    assert page.headers["cache-control"] == "no-store"


def test_other_responses_are_never_sniffed(app: AppHost) -> None:
    for path in ("/healthz", "/nowhere"):
        assert app.http.get(path).headers["x-content-type-options"] == "nosniff"
    reply = app.http.post("/worker/v1/claim", json={})
    assert reply.status_code == 401 and reply.headers["x-content-type-options"] == "nosniff"
