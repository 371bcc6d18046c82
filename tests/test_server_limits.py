"""Codes and money that need special settings, each on an in-process app of its own (tests/appkit.py).

* ``strict``: IP ban after 3 wrong keys for 2 s, 2 s token deadline, 2 s retention, 64 KiB body limit,
  thread cap answered with ERROR_NO_SLOT_AVAILABLE.
* ``priced``: normal=0.5 USD, turnstile=0.25 USD: charges, refunds, the ledger.
* ``turns``: MAX_USER_TURN after 3 submits by one key within 30 s, blocked for 1 s.
* ``strict_wire``: a real server process with the 64 KiB body limit, for the tests of HTTP framing
  (declared and chunked bodies over the limit, sent over a socket).
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from capgate.store.base import Store
from capgate.store.models import LedgerEntry, LedgerKind
from tests.appkit import AppHost, app_host
from tests.fixtures import (
    MODES,
    PAGEURL,
    Api,
    Mode,
    b64,
    bare_body,
    error_body,
    expect,
    expect_error,
    nonce,
    ok_body,
    png,
    raw_request,
    split_response,
    task_id_of,
)
from tests.serverproc import REPO, ServerProcess, start_server
from tests.storekit import sqlite_backend

BODY_LIMIT = 64 * 1024
TOKEN = {"method": "turnstile", "sitekey": "0x4AAAA", "pageurl": PAGEURL}


# ban_exempt="": the test clients' addresses are loopback ones (127.0.2.x), which are exempt by default.
STRICT = {"ban_exempt": "", "ban_threshold": 3, "token_deadline": 2.0, "retention": 2.0, "body_limit": BODY_LIMIT,
          "thread_cap_code": "ERROR_NO_SLOT_AVAILABLE", "worker_presence": 3600.0, "ban_duration": 2.0}


@pytest.fixture(scope="module")
def strict(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppHost]:
    with app_host(sqlite_backend(tmp_path_factory.mktemp("strict")), **STRICT) as host:
        host.register_worker(["turnstile"])  # live turnstile tasks are accepted, and never answered
        yield host


@pytest.fixture(scope="module")
def strict_wire(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    env = {"CAPGATE_OCR": "0", "CAPGATE_BODY_LIMIT": str(BODY_LIMIT)}
    with start_server(tmp_path_factory.mktemp("strict-wire"), env=env) as proc:
        yield proc


@pytest.fixture(scope="module")
def priced(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppHost]:
    with app_host(sqlite_backend(tmp_path_factory.mktemp("priced")),
                  prices="normal=0.5,turnstile=0.25") as host:
        yield host


@pytest.fixture(scope="module")
def turns(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppHost]:
    with app_host(sqlite_backend(tmp_path_factory.mktemp("turns")),
                  submit_turns=3, turn_window=30.0, turn_block=1.0) as host:
        yield host


_addresses = iter(range(10, 250))


def fresh_address() -> str:
    return f"127.0.2.{next(_addresses)}"


# ------------------------------------------------------------------------------------------ deadlines


def test_deadline_passes_on_a_live_key(strict: AppHost) -> None:
    api = strict.api(strict.make_key(sandbox=False, threads=3))
    task_id = api.submit_id({**TOKEN, "n": nonce()})
    for mode in MODES:
        expect_error(api.get(task_id, mode), "CAPCHA_NOT_READY", mode)
    expect_error(api.get(task_id, "json", wait=10), "ERROR_CAPTCHA_UNSOLVABLE", "json")
    for mode in MODES:
        expect_error(api.get(task_id, mode), "ERROR_CAPTCHA_UNSOLVABLE", mode)
        expect_error(api.get(task_id, mode, action="get2"), "ERROR_CAPTCHA_UNSOLVABLE", mode)
        expect(api.res({"action": "get", "ids": task_id}, mode), bare_body("ERROR_CAPTCHA_UNSOLVABLE", mode), mode)
        expect_error(api.res({"action": "reportbad", "id": task_id}, mode), "REPORT_NOT_RECORDED", mode)
    # the thread is free again, and nothing was charged
    expect(api.res({"action": "threadsinfo"}, "json"),
           b'{"status":1,"request":"OK","threads":3,"working_threads":0}', "json")
    expect(api.res({"action": "getbalance"}), b"0.00", "plain")


@pytest.mark.parametrize("params", [
    {"method": "hcaptcha", "sitekey": "k", "pageurl": PAGEURL},
    {"method": "userrecaptcha", "googlekey": "k", "pageurl": PAGEURL},
    {"method": "base64", "body": b64(png())},
], ids=["hcaptcha", "recaptcha", "normal-without-ocr"])
@pytest.mark.parametrize("mode", MODES)
def test_no_worker_for_the_type(strict: AppHost, mode: Mode,
                                params: dict[str, str]) -> None:
    """§0 service-wide capacity: a live key asking for a type no worker serves → ERROR_NO_SLOT_AVAILABLE."""
    api = strict.api(strict.make_key(sandbox=False))
    expect_error(api.submit(params, mode, "form"), "ERROR_NO_SLOT_AVAILABLE", mode)
    # validation still comes first
    expect_error(api.submit({"method": "hcaptcha", "sitekey": "k"}, mode), "ERROR_PAGEURL", mode)


@pytest.mark.parametrize("mode", MODES)
def test_thread_cap_code_is_configurable(strict: AppHost, mode: Mode) -> None:
    api = strict.api(strict.make_key(threads=1))
    api.submit_id({"method": "base64", "body": b64(png(seed=int(nonce()[:5], 16))),
                   "textinstructions": "sandbox-slow-60"})
    expect_error(api.submit({**TOKEN, "n": nonce()}, mode), "ERROR_NO_SLOT_AVAILABLE", mode)
    expect(api.res({"action": "threadsinfo"}, mode),
           b"OK|threads:1,working_threads:1" if mode == "plain"
           else b'{"status":1,"request":"OK","threads":1,"working_threads":1}', mode)


def test_results_expire_after_retention(strict: AppHost) -> None:
    api = strict.api(strict.make_key())
    solved = api.submit_id({"method": "base64", "body": b64(png(seed=1)), "n": nonce(),
                            "textinstructions": "sandbox-answer-kept"})
    unsolvable = api.submit_id({"method": "base64", "body": b64(png(seed=2)), "n": nonce(),
                                "textinstructions": "sandbox-unsolvable"})
    for mode in MODES:
        expect(api.get(solved, mode, wait=10), ok_body("kept", mode), mode)
        expect_error(api.get(unsolvable, mode, wait=10), "ERROR_CAPTCHA_UNSOLVABLE", mode)
    time.sleep(2.6)  # past the 2 s retention
    for mode in MODES:
        for task_id in (solved, unsolvable):
            expect_error(api.get(task_id, mode), "ERROR_WRONG_CAPTCHA_ID", mode)
            expect_error(api.get(task_id, mode, action="get2"), "ERROR_WRONG_CAPTCHA_ID", mode)
        expect(api.res({"action": "get", "ids": f"{solved},{unsolvable}"}, mode),
               bare_body("ERROR_WRONG_CAPTCHA_ID|ERROR_WRONG_CAPTCHA_ID", mode), mode)


# ------------------------------------------------------------------------------------------ MAX_USER_TURN


@pytest.mark.parametrize("mode", MODES)
def test_too_many_submits_block_the_key_for_a_while(turns: AppHost, mode: Mode) -> None:
    api = turns.api(turns.make_key(sandbox=True))
    for _ in range(3):
        api.submit_id({**TOKEN, "n": nonce()})
    expect_error(api.submit({**TOKEN, "n": nonce()}, mode), "MAX_USER_TURN", mode)
    expect_error(api.submit({**TOKEN, "n": nonce()}, mode), "MAX_USER_TURN", mode)  # blocked, not counted
    expect(api.res({"action": "getbalance"}, mode), bare_body("0.00", mode), mode)  # res.php is not limited
    other = turns.api(turns.make_key(sandbox=True))  # the limit is per key
    other.submit_id({**TOKEN, "n": nonce()})
    time.sleep(1.2)  # turn_block=1
    api.submit_id({**TOKEN, "n": nonce()})


# ------------------------------------------------------------------------------------------ IP ban


@pytest.mark.parametrize("mode", MODES)
def test_ip_banned_after_wrong_keys(strict: AppHost, mode: Mode) -> None:
    good = strict.make_key()
    address = fresh_address()
    with strict.client(address) as client:
        expect_error(Api(client, strict.base_url, "bad").submit(TOKEN, mode), "ERROR_WRONG_USER_KEY", mode)
        expect_error(Api(client, strict.base_url, "f" * 32).res({"action": "getbalance"}, mode),
                     "ERROR_KEY_DOES_NOT_EXIST", mode)
        third = Api(client, strict.base_url, "e" * 32).submit(TOKEN, mode)  # the third strike bans
        assert third.content in (error_body("IP_BANNED", mode), error_body("ERROR_KEY_DOES_NOT_EXIST", mode))
        # from now on every request from this address, good key or not, gets IP_BANNED
        banned = Api(client, strict.base_url, good)
        expect_error(banned.submit({**TOKEN, "n": nonce()}, mode), "IP_BANNED", mode)
        expect_error(banned.res({"action": "getbalance"}, mode), "IP_BANNED", mode)
        expect_error(banned.get("12345678", mode), "IP_BANNED", mode)
        expect_error(Api(client, strict.base_url, "bad").submit(TOKEN, mode), "IP_BANNED", mode)
    # other addresses are not affected
    expect(strict.api(good).res({"action": "getbalance"}, mode), bare_body("0.00", mode), mode)
    with strict.client(fresh_address()) as client:
        expect(Api(client, strict.base_url, good).res({"action": "getbalance"}, mode), bare_body("0.00", mode), mode)


def test_ban_is_lifted(strict: AppHost) -> None:
    good = strict.make_key()
    with strict.client(fresh_address()) as client:
        for _ in range(3):
            Api(client, strict.base_url, "bad").res({"action": "getbalance"})
        api = Api(client, strict.base_url, good)
        expect_error(api.res({"action": "getbalance"}), "IP_BANNED", "plain")
        time.sleep(2.2)  # ban_duration=2
        expect(api.res({"action": "getbalance"}), b"0.00", "plain")


def test_good_requests_do_not_count_towards_a_ban(strict: AppHost) -> None:
    good = strict.make_key()
    with strict.client(fresh_address()) as client:
        api = Api(client, strict.base_url, good)
        for _ in range(2):
            expect_error(Api(client, strict.base_url, "bad").res({"action": "getbalance"}), "ERROR_WRONG_USER_KEY",
                         "plain")
        for _ in range(5):
            expect(api.res({"action": "getbalance"}), b"0.00", "plain")
            expect_error(api.res({"action": "nope"}), "ERROR_EMPTY_ACTION", "plain")
            expect_error(api.get("x"), "ERROR_WRONG_ID_FORMAT", "plain")
            expect_error(api.submit({"method": "nope"}), "ERROR_BAD_PARAMETERS", "plain")


def test_disabled_key_is_not_a_strike(strict: AppHost) -> None:
    key = strict.make_key()
    strict.run(strict.store.update_account(strict.account_id(key), disabled=True))  # `capgate keys disable`
    with strict.client(fresh_address()) as client:
        api = Api(client, strict.base_url, key)
        for _ in range(5):
            expect_error(api.res({"action": "getbalance"}), "ERROR_KEY_DOES_NOT_EXIST", "plain")


# ------------------------------------------------------------------------------------------ body limit


def _head(server: ServerProcess, path: str, headers: dict[str, str]) -> bytes:
    host = server.base_url.removeprefix("http://")
    lines = [f"POST {path} HTTP/1.1", f"Host: {host}", *(f"{k}: {v}" for k, v in headers.items()), "", ""]
    return "\r\n".join(lines).encode()


@pytest.mark.parametrize(("path", "code", "mode"), [
    ("/in.php", "ERROR_TOO_BIG_CAPTCHA_FILESIZE", "plain"),
    ("/in.php?json=1", "ERROR_TOO_BIG_CAPTCHA_FILESIZE", "json"),
    ("/res.php", "ERROR_BAD_PARAMETERS", "plain"),
    ("/res.php?json=1", "ERROR_BAD_PARAMETERS", "json"),
])
def test_declared_length_over_the_limit_is_refused_unread(strict_wire: ServerProcess, path: str, code: str,
                                                          mode: Mode) -> None:
    """Content-Length says 100 MB; we send 20 bytes and wait: the answer comes without the body."""
    head = _head(strict_wire, path, {"Content-Type": "application/x-www-form-urlencoded",
                                "Content-Length": str(100 * 1024 * 1024)})
    status, headers, body = split_response(raw_request(strict_wire.base_url, head, [b"key=x&method=base64&"]))
    assert status == 200
    assert body == error_body(code, mode)
    assert headers["content-type"] == ("text/plain; charset=utf-8" if mode == "plain" else "application/json")


@pytest.mark.parametrize(("path", "code"), [("/in.php", "ERROR_TOO_BIG_CAPTCHA_FILESIZE"),
                                            ("/res.php", "ERROR_BAD_PARAMETERS")])
def test_chunked_body_over_the_limit_is_refused_unread(strict_wire: ServerProcess, path: str, code: str) -> None:
    """A chunked body that never ends: the server answers once the limit is passed."""
    head = _head(strict_wire, path, {"Content-Type": "application/x-www-form-urlencoded",
                                "Transfer-Encoding": "chunked"})
    chunk = b"%x\r\n%s\r\n" % (16 * 1024, b"a" * 16 * 1024)
    status, _, body = split_response(raw_request(strict_wire.base_url, head, [chunk] * 6))  # 96 KiB, no last chunk
    assert status == 200
    assert body == code.encode()


def test_chunked_body_over_the_limit_with_httpx(strict_wire: ServerProcess) -> None:
    def chunks() -> Iterator[bytes]:
        yield b"key=" + b"k" * 32 + b"&method=base64&body="
        for _ in range(40):
            yield b"A" * 8192

    with httpx.Client(timeout=30.0) as http:
        response = http.post(strict_wire.url("in.php"), content=chunks(),
                             headers={"content-type": "application/x-www-form-urlencoded"})
    expect_error(response, "ERROR_TOO_BIG_CAPTCHA_FILESIZE", "plain")


def test_body_under_the_limit_is_read(strict: AppHost) -> None:
    api = strict.api(strict.make_key())
    padding = "p" * (BODY_LIMIT - 2048)
    task_id_of(api.submit({**TOKEN, "padding": padding}, transport="form"))
    # and the server is still up after all of the above
    expect(api.res({"action": "getbalance"}), b"0.00", "plain")


# ------------------------------------------------------------------------------------------ money


def ledger(app: AppHost, key: str) -> list[LedgerEntry]:
    return list(reversed(app.run(app.store.ledger(app.account_id(key), 1000))))


def balance_micros(app: AppHost, key: str) -> int:
    account = app.run(app.store.get_account(app.account_id(key)))
    assert account is not None
    return account.balance


def assert_ledger_matches_balance(app: AppHost, key: str) -> list[LedgerEntry]:
    entries = ledger(app, key)
    balance = balance_micros(app, key)
    assert sum(e.amount for e in entries) == balance
    running = 0
    for entry in entries:
        running += entry.amount
        assert entry.balance_after == running
    return entries


@pytest.mark.parametrize("mode", MODES)
def test_charged_when_solved(priced: AppHost, mode: Mode) -> None:
    key = priced.make_key(balance="1")
    api = priced.api(key)
    task_id = api.submit_id({"method": "base64", "body": b64(png(seed=4)), "n": nonce(),
                             "textinstructions": "sandbox-answer-paid"})
    expect(api.get(task_id, mode, wait=10), ok_body("paid", mode), mode)
    expect(api.get(task_id, mode, action="get2"),
           b"OK|paid|0.50" if mode == "plain" else b'{"status":1,"request":"paid","price":"0.50"}', mode)
    expect(api.res({"action": "getbalance"}, mode), bare_body("0.50", mode), mode)
    entries = assert_ledger_matches_balance(priced, key)
    assert [(e.kind, e.amount, e.task_id) for e in entries] == [
        (LedgerKind.TOPUP, 1_000_000, None), (LedgerKind.CHARGE, -500_000, int(task_id))]
    # polling again does not charge again
    api.get(task_id)
    api.get(task_id, action="get2")
    assert len(ledger(priced, key)) == 2


@pytest.mark.parametrize("mode", MODES)
def test_not_enough_balance(priced: AppHost, mode: Mode) -> None:
    """§0: the price cannot be paid → ERROR_ZERO_BALANCE while threadsinfo shows free threads."""
    api = priced.api(priced.make_key(balance="0.6", threads=5))
    api.submit_id({"method": "base64", "body": b64(png(seed=int(nonce()[:5], 16))),
                   "textinstructions": "sandbox-slow-60"})
    # 0.60 - 0.50 reserved by the pending task leaves 0.10: not enough for 0.50 nor 0.25
    expect_error(api.submit({"method": "base64", "body": b64(png(seed=6)), "n": nonce()}, mode, "form"),
                 "ERROR_ZERO_BALANCE", mode)
    expect_error(api.submit({**TOKEN, "n": nonce()}, mode), "ERROR_ZERO_BALANCE", mode)
    expect(api.res({"action": "threadsinfo"}, "json"),
           b'{"status":1,"request":"OK","threads":5,"working_threads":1}', "json")
    # methods without a price still work (thread plan)
    task_id_of(api.submit({"method": "hcaptcha", "sitekey": "k", "pageurl": PAGEURL, "n": nonce()}, mode), mode)


@pytest.mark.parametrize("mode", MODES)
def test_zero_balance(priced: AppHost, mode: Mode) -> None:
    api = priced.api(priced.make_key(balance="0", threads=5))
    expect_error(api.submit({**TOKEN, "n": nonce()}, mode), "ERROR_ZERO_BALANCE", mode)
    expect(api.res({"action": "threadsinfo"}, mode),
           b"OK|threads:5,working_threads:0" if mode == "plain"
           else b'{"status":1,"request":"OK","threads":5,"working_threads":0}', mode)


def test_balance_after_charges(priced: AppHost) -> None:
    key = priced.make_key(balance="0.75")
    api = priced.api(key)
    first = api.submit_id({"method": "base64", "body": b64(png(seed=21)), "n": nonce()})
    api.settle(first)
    expect(api.res({"action": "getbalance"}), b"0.25", "plain")
    second = api.submit_id({**TOKEN, "n": nonce()})
    api.settle(second)
    expect(api.res({"action": "getbalance"}), b"0.00", "plain")
    expect_error(api.submit({**TOKEN, "n": nonce()}), "ERROR_ZERO_BALANCE", "plain")
    entries = assert_ledger_matches_balance(priced, key)
    assert [e.amount for e in entries] == [750_000, -500_000, -250_000]


@pytest.mark.parametrize("how", ["sandbox-unsolvable", "sandbox-error-ERROR_PROXY_CONNECTION_FAILED"])
def test_not_charged_when_unsolvable(priced: AppHost, how: str) -> None:
    key = priced.make_key(balance="1")
    api = priced.api(key)
    task_id = api.submit_id({**TOKEN, "sandbox": how, "n": nonce()})
    assert api.settle(task_id).content.startswith(b"ERROR_")
    expect(api.res({"action": "getbalance"}), b"1.00", "plain")
    expect_error(api.get(task_id, action="get2"), api.get(task_id).content.decode(), "plain")
    entries = assert_ledger_matches_balance(priced, key)
    assert [e.kind for e in entries] == [LedgerKind.TOPUP]
    expect_error(api.res({"action": "reportbad", "id": task_id}), "REPORT_NOT_RECORDED", "plain")


@pytest.mark.parametrize("mode", MODES)
def test_refund_on_reportbad(priced: AppHost, mode: Mode) -> None:
    key = priced.make_key(balance="1")
    api = priced.api(key)
    bad = api.submit_id({"method": "base64", "body": b64(png(seed=31)), "n": nonce()})
    good = api.submit_id({**TOKEN, "n": nonce()})
    api.settle(bad)
    api.settle(good)
    expect(api.res({"action": "getbalance"}), b"0.25", "plain")
    expect(api.res({"action": "reportbad", "id": bad}, mode), bare_body("OK_REPORT_RECORDED", mode), mode)
    expect(api.res({"action": "getbalance"}, mode), bare_body("0.75", mode), mode)
    expect(api.res({"action": "reportbad", "id": bad}, mode), error_body("ERROR_DUPLICATE_REPORT", mode), mode)
    expect(api.res({"action": "reportgood", "id": good}, mode), bare_body("OK_REPORT_RECORDED", mode), mode)
    expect(api.res({"action": "reportbad", "id": good}, mode), error_body("ERROR_DUPLICATE_REPORT", mode), mode)
    expect(api.res({"action": "getbalance"}, mode), bare_body("0.75", mode), mode)  # one refund only
    entries = assert_ledger_matches_balance(priced, key)
    assert [(e.kind, e.amount) for e in entries] == [
        (LedgerKind.TOPUP, 1_000_000), (LedgerKind.CHARGE, -500_000), (LedgerKind.CHARGE, -250_000),
        (LedgerKind.REFUND, 500_000)]
    assert entries[3].task_id == int(bad)


def test_topup_through_the_cli_is_a_ledger_row(priced: AppHost) -> None:
    key = priced.make_key(balance="0")
    cli(priced, "keys", "topup", key, "2.5")
    expect(priced.api(key).res({"action": "getbalance"}), b"2.50", "plain")
    entries = assert_ledger_matches_balance(priced, key)
    assert [(e.kind, e.amount) for e in entries] == [(LedgerKind.TOPUP, 2_500_000)]


def test_every_balance_has_its_ledger(priced: AppHost) -> None:
    """Across every account on the server (all the tests above): sum(ledger) == balance."""
    priced.make_key(balance="0.3")

    async def check(store: Store) -> int:
        accounts = await store.list_accounts()
        for account in accounts:
            entries = await store.ledger(account.id, 100_000)
            assert sum(e.amount for e in entries) == account.balance, account
            assert account.balance >= 0
        return len(accounts)
    assert priced.run(check(priced.store)) >= 1


def test_task_ids(priced: AppHost) -> None:
    api = priced.api(priced.make_key(threads=50))
    ids = [int(api.submit_id({"method": "hcaptcha", "sitekey": "k", "pageurl": PAGEURL, "n": nonce()}))
           for _ in range(20)]
    assert len(set(ids)) == 20
    assert all(10_000_000 <= i < 2**53 for i in ids)  # 8+ digits, exact in every JSON client
    steps = {b - a for a, b in itertools.pairwise(ids)}
    assert steps != {1}, "ids must not be sequential"


def test_keys_are_stored_hashed(priced: AppHost) -> None:
    key = priced.make_key()
    cli_key = cli(priced, "keys", "create", "--sandbox").stdout.strip().splitlines()[-1]
    db = Path(priced.settings.db)
    files = [p for p in db.parent.iterdir() if p.name.startswith(db.name)]
    assert files
    for path in files:
        data = path.read_bytes()
        for k in (key, cli_key):
            assert k.encode() not in data, path
            assert k.upper().encode() not in data
    assert len(cli_key) == 32


def cli(app: AppHost, *args: str) -> subprocess.CompletedProcess[str]:
    """``capgate ARGS`` on the app's database (SQLite in WAL mode: safe beside the running app)."""
    return subprocess.run([sys.executable, "-m", "capgate", *args], env={**os.environ, "CAPGATE_DB": app.settings.db},
                          capture_output=True, text=True, check=True, cwd=REPO, timeout=120)
