"""A real ``capgate serve`` driven as an operator would: admin tokens from the command line, the
management commands against the server (``--server --admin-token``), customers and workers using it,
the dashboard's sign-in, /metrics; then its log, one JSON line per request, read whole for secrets."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.serverproc import ServerProcess, start_server

pytestmark = pytest.mark.slow
TURNSTILE = {"method": "turnstile", "sitekey": "0x4AAAAAAA", "pageurl": "https://example.com/"}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    env = {"CAPGATE_OCR": "0", "CAPGATE_BAN_EXEMPT": "", "CAPGATE_BAN_THRESHOLD": "3"}
    with start_server(tmp_path_factory.mktemp("operators"), env=env,
                      args=["--log-level", "info", "--log-format", "json"]) as proc:
        yield proc


def last_line(done: subprocess.CompletedProcess[str]) -> str:
    return done.stdout.strip().splitlines()[-1]


def remote(server: ServerProcess, token: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """A management command against the server through its admin API (no database given)."""
    env = {"CAPGATE_DB": str(server.db.parent / "not-this-one" / "x.db")}
    return server.cli(*args, "--server", server.base_url, "--admin-token", token, check=check, env=env)


def test_an_operator_runs_the_service_without_its_database(served: ServerProcess, tmp_path: Path) -> None:
    secrets: list[str] = []
    made = served.cli("admin-tokens", "create", "ops")
    admin = last_line(made)
    assert re.fullmatch(r"cga_[0-9a-f]{40}", admin), made.stdout
    secrets.append(admin)
    assert "ops" in served.cli("admin-tokens", "list").stdout and admin not in served.cli("admin-tokens", "list").stdout

    # Accounts, through the server.
    key = last_line(remote(served, admin, "keys", "create", "--sandbox", "--threads", "3", "--balance", "2"))
    assert re.fullmatch(r"[0-9a-f]{32}", key)
    secrets.append(key)
    listed = remote(served, admin, "keys", "list").stdout
    assert f"{key[:6]}…" in listed and "balance=2.00" in listed
    assert "balance=3.50" in remote(served, admin, "keys", "topup", key[:6], "1.5").stdout
    assert "threads=7" in remote(served, admin, "keys", "threads", key, "7").stdout
    assert "disabled" in remote(served, admin, "keys", "disable", key).stdout
    assert "active" in remote(served, admin, "keys", "disable", key, "--enable").stdout
    assert "keep_labels=True" in remote(served, admin, "keys", "set", key, "--keep-labels", "on").stdout
    refused = remote(served, admin, "keys", "set", key, "--profile", "nosuch", check=False)
    assert refused.returncode == 2 and "no trained profile 'nosuch'" in refused.stderr, refused.stderr
    wrong = remote(served, admin, "keys", "topup", "0" * 32, "1", check=False)
    assert wrong.returncode == 2 and "no single account matches that key" in wrong.stderr
    # The same commands on the database itself agree.
    assert f"{key[:6]}…" in served.cli("keys", "list").stdout

    # Worker tokens, through the server.
    worker = last_line(remote(served, admin, "workers", "create", "farm", "--methods", "turnstile"))
    assert worker.startswith("cgw_")
    secrets.append(worker)
    assert "farm" in remote(served, admin, "workers", "list").stdout
    assert "disabled" in remote(served, admin, "workers", "disable", "farm").stdout
    assert "active" in remote(served, admin, "workers", "enable", worker).stdout

    with httpx.Client(base_url=served.base_url, timeout=30) as http:
        # Customers and workers at work.
        answer = http.post("/in.php", data={"key": key, **TURNSTILE, "json": "1"})
        assert answer.json()["status"] == 1
        task_id = answer.json()["request"]
        request_id = answer.headers["x-request-id"]
        assert http.get("/res.php", params={"key": key, "action": "get", "id": task_id, "wait": "5"}).text \
            .startswith("OK|")
        assert http.post("/worker/v1/claim", json={}, headers={"Authorization": f"Bearer {worker}"}).status_code == 200
        assert http.get("/res.php", params={"key": key, "action": "getbalance"}).status_code == 200

        # The dashboard's session and the metrics.
        session = http.post("/admin/session", json={"token": admin})
        assert session.status_code == 200
        secrets.extend([http.cookies["capgate_admin"], session.json()["csrf"]])
        assert http.get("/admin/api/v1/overview").status_code == 200
        assert "capgate_requests_total" in http.get("/metrics").text
        assert http.get("/").status_code == 200 and "capgate" in http.get("/").text

        # Wrong keys from this address: banned, then lifted through the server.
        for _ in range(3):
            http.get("/res.php", params={"key": "f" * 32, "action": "getbalance"})
        assert http.get("/res.php", params={"key": key, "action": "getbalance"}).text == "IP_BANNED"
        assert "127.0.0.1" in remote(served, admin, "bans", "list").stdout
        assert "lifted" in remote(served, admin, "bans", "lift", "127.0.0.1").stdout
        assert http.get("/res.php", params={"key": key, "action": "getbalance"}).text != "IP_BANNED"

    assert "deleted worker token" in remote(served, admin, "workers", "delete", "farm").stdout
    # A disabled admin token is refused from its next call.
    assert "disabled" in served.cli("admin-tokens", "disable", "ops").stdout
    gone = remote(served, admin, "keys", "list", check=False)
    assert gone.returncode == 2 and "refused the admin token" in gone.stderr

    # The log: every line a JSON object; one per request with its id, code and account; no secret anywhere.
    log = served.log.read_text()
    lines = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    requests = [line for line in lines if line["logger"] == "capgate.access"]
    assert requests, log[-2000:]
    mine = [line for line in requests if line["request_id"] == request_id]
    assert len(mine) == 1 and mine[0]["endpoint"] == "/in.php" and mine[0]["code"] == "OK"
    assert mine[0]["status"] == 200 and mine[0]["method"] == "POST" and isinstance(mine[0]["account"], int)
    assert isinstance(mine[0]["ms"], float)
    assert any(line["code"] == "ERROR_KEY_DOES_NOT_EXIST" for line in requests)
    assert any(line["endpoint"] == "/admin/api/v1/accounts/{id}/topup" for line in requests)
    for secret in secrets:
        assert secret not in log
        assert secret[:12] not in log  # nor a recognisable part of one


def test_remote_mode_needs_a_token_and_one_target(served: ServerProcess) -> None:
    no_token = served.cli("keys", "list", "--server", served.base_url, check=False,
                          env={"CAPGATE_ADMIN_TOKEN": ""})
    assert no_token.returncode == 2 and "admin-tokens create" in no_token.stderr
    both = served.cli("keys", "list", "--server", served.base_url, "--admin-token", "cga_x", "--db",
                      str(served.db), check=False)
    assert both.returncode == 2 and "not both" in both.stderr
    nobody = served.cli("keys", "list", "--server", "http://127.0.0.1:9", "--admin-token", "cga_x", check=False)
    assert nobody.returncode == 2 and "cannot reach the server" in nobody.stderr and "Traceback" not in nobody.stderr
    assert "Traceback" not in no_token.stderr + both.stderr


def test_the_secret_pattern_finds_keys_and_tokens() -> None:
    """The check every suite server's log goes through (tests/serverproc.py) would see one."""
    from tests.serverproc import SECRET

    for leaked in ("key=3f6c0e6d2b8a4f1e9c7d5b3a1f0e2d4c", "Bearer cgw_" + "a1" * 20, "token cga_" + "0f" * 20):
        assert SECRET.search(leaked), leaked
    for fine in ("a15adc-4 GET /res.php 200 CAPCHA_NOT_READY 0.3ms account=1", "sha256 " + "ab" * 32,
                 "task 48213377120"):
        assert not SECRET.search(fine), fine
