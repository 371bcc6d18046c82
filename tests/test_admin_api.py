"""The admin API (/admin/api/v1) in process, on both backends: every operation, who may call it, what
it refuses, and the OpenAPI description made from the same table."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from capgate.keys import PREFIX_LENGTH, hash_secret, new_admin_token
from capgate.server.admin.api import OPERATIONS, PREFIX
from capgate.server.admin.auth import CSRF_HEADER, SESSION_COOKIE
from tests.appkit import AppHost, app_host
from tests.storekit import BACKENDS, backend_of


@pytest.fixture(scope="module", params=BACKENDS)
def host(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppHost]:
    backend = backend_of(request, request.param, tmp_path_factory.mktemp(f"admin-{request.param}"))
    with app_host(backend, sandbox_delay=30.0) as made:
        yield made


def admin_token(host: AppHost, name: str = "ops") -> str:
    token = new_admin_token()
    host.run(host.store.create_admin_token(name, hash_secret(token), token[:8], time.time()))
    return token


@pytest.fixture()
def admin(host: AppHost) -> Iterator[httpx.Client]:
    token = admin_token(host)
    with host.client() as client:
        client.headers["Authorization"] = f"Bearer {token}"
        yield client


def ok(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    return response.json()


def error(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, response.text
    message = response.json()["error"]
    assert isinstance(message, str) and message
    return message


# ------------------------------------------------------------------------------------------ who may call


def test_only_admin_tokens_are_accepted(host: AppHost) -> None:
    key = host.make_key()
    worker = host.worker_token("w")
    disabled = admin_token(host, "gone")
    found = host.run(host.store.admin_token_by_hash(hash_secret(disabled)))
    assert found is not None
    host.run(host.store.set_admin_token_disabled(found.id, True))
    with host.client() as client:
        assert "admin-tokens create" in error(client.get(f"{PREFIX}/accounts"), 401)
        for refused in (key, worker, disabled, "cga_" + "0" * 40, "", "cga_\x00"):
            reply = client.get(f"{PREFIX}/accounts", headers={"Authorization": f"Bearer {refused}"})
            error(reply, 401)
        error(client.get(f"{PREFIX}/accounts", headers={"Authorization": f"Basic {admin_token(host)}"}), 401)
        # Every operation, not only one: the table's routes all check.
        for op in OPERATIONS:
            path = op.path.replace("{account_id}", "1").replace("{worker_id}", "1").replace("{task_id}", "1")
            path = path.replace("{address}", "192.0.2.1")
            reply = client.request(op.method, PREFIX + path, headers={"Authorization": f"Bearer {key}"}, json={})
            error(reply, 401)
        # The description is public: it holds no data.
        assert client.get(f"{PREFIX}/openapi.json").status_code == 200


def test_openapi_lists_every_route(host: AppHost) -> None:
    with host.client() as client:
        document = ok(client.get(f"{PREFIX}/openapi.json"))
    assert document["openapi"].startswith("3.1")
    described = {(method.upper(), path) for path, ops in document["paths"].items() for method in ops}
    routed: set[tuple[str, str]] = set()
    for route in host.app.app.routes:
        path = getattr(route, "path", "")
        if path.startswith(PREFIX):
            routed.update((method, path) for method in (getattr(route, "methods", None) or ()) if method != "HEAD")
    assert routed and routed == described
    assert len({op["operationId"] for ops in document["paths"].values() for op in ops.values()}) == len(described)


# ------------------------------------------------------------------------------------------ accounts and money


def test_accounts(host: AppHost, admin: httpx.Client) -> None:
    made = ok(admin.post(f"{PREFIX}/accounts", json={"threads": 3, "balance": "2.50", "sandbox": True}), 201)
    key, account = made["key"], made["account"]
    assert len(key) == 32 and account["key_prefix"] == key[:PREFIX_LENGTH]
    assert (account["threads"], account["balance"], account["sandbox"], account["disabled"]) == (3, "2.50", True, False)
    account_id = account["id"]
    assert host.account_id(key) == account_id  # the key works: it is the account's

    listed = ok(admin.get(f"{PREFIX}/accounts"))["accounts"]
    assert account_id in [a["id"] for a in listed]
    assert [a["id"] for a in ok(admin.get(f"{PREFIX}/accounts", params={"key_hash": hash_secret(key)}))["accounts"]] \
        == [account_id]
    assert ok(admin.get(f"{PREFIX}/accounts", params={"key_hash": "0" * 64}))["accounts"] == []
    by_prefix = ok(admin.get(f"{PREFIX}/accounts", params={"prefix": key[:6]}))["accounts"]
    assert account_id in [a["id"] for a in by_prefix]
    error(admin.get(f"{PREFIX}/accounts", params={"prefix": "ab"}), 400)

    topped = ok(admin.post(f"{PREFIX}/accounts/{account_id}/topup", json={"amount": "1.25", "note": "invoice 7"}))
    assert topped["account"]["balance"] == "3.75"
    assert ok(admin.post(f"{PREFIX}/accounts/{account_id}/topup", json={"amount": 1}))["account"]["balance"] == "4.75"
    entries = ok(admin.get(f"{PREFIX}/accounts/{account_id}/ledger", params={"limit": 2}))["entries"]
    assert [(e["kind"], e["amount"], e["note"]) for e in entries] == [("topup", "1.00", "topup"),
                                                                      ("topup", "1.25", "invoice 7")]
    assert ok(admin.get(f"{PREFIX}/accounts/{account_id}"))["account"]["balance"] == "4.75"

    changed = ok(admin.patch(f"{PREFIX}/accounts/{account_id}",
                             json={"threads": 9, "settings": {"human_threshold": 0.5, "keep_labels": True}}))
    assert changed["account"]["threads"] == 9
    assert changed["account"]["settings"] == {"human_threshold": 0.5, "keep_labels": True}
    off = ok(admin.patch(f"{PREFIX}/accounts/{account_id}", json={"settings": {"human_threshold": None}}))
    assert off["account"]["settings"]["human_threshold"] is None
    assert ok(admin.patch(f"{PREFIX}/accounts/{account_id}", json={"disabled": True}))["account"]["disabled"]
    assert host.api(key).submit({"method": "turnstile", "sitekey": "s", "pageurl": "https://example.com/"}).text \
        == "ERROR_KEY_DOES_NOT_EXIST"
    assert not ok(admin.patch(f"{PREFIX}/accounts/{account_id}", json={"disabled": False}))["account"]["disabled"]


@pytest.mark.parametrize(("method", "path", "body", "status"), [
    ("POST", "/accounts", {"threads": 0}, 400),
    ("POST", "/accounts", {"threads": True}, 400),
    ("POST", "/accounts", {"balance": "-1"}, 400),
    ("POST", "/accounts", {"balance": "NaN"}, 400),
    ("POST", "/accounts", {"balance": "ten"}, 400),
    ("POST", "/accounts", {"sandbox": "yes"}, 400),
    ("POST", "/accounts", {"key": "mine"}, 400),
    ("POST", "/accounts", [1, 2], 400),
    ("PATCH", "/accounts/{id}", {}, 400),
    ("PATCH", "/accounts/{id}", {"settings": {"human_threshold": 2}}, 400),
    ("PATCH", "/accounts/{id}", {"settings": {"profile": "no-such-profile"}}, 400),
    ("PATCH", "/accounts/{id}", {"settings": {"profile": "../etc"}}, 400),
    ("PATCH", "/accounts/{id}", {"settings": {"colour": "red"}}, 400),
    ("PATCH", "/accounts/{id}", {"settings": "x"}, 400),
    ("POST", "/accounts/{id}/topup", {}, 400),
    ("POST", "/accounts/{id}/topup", {"amount": "1", "note": 5}, 400),
    ("POST", "/accounts/999999999/topup", {"amount": "1"}, 404),
    ("GET", "/accounts/999999999", None, 404),
    ("GET", "/accounts/abc", None, 404),
    ("GET", "/accounts/{id}/ledger?limit=0", None, 400),
    ("GET", "/accounts/{id}/ledger?limit=x", None, 400),
    ("POST", "/workers", {"name": ""}, 400),
    ("POST", "/workers", {"name": "w", "methods": ["nope"]}, 400),
    ("POST", "/workers", {"name": "w", "human": 1}, 400),
    ("PATCH", "/workers/999999999", {"disabled": True}, 404),
    ("PATCH", "/workers/1", {"disabled": "no"}, 400),
    ("DELETE", "/workers/999999999", None, 404),
    ("GET", "/tasks?state=done", None, 400),
    ("GET", "/tasks?method=nope", None, 400),
    ("GET", "/tasks?since=yesterday", None, 400),
    ("GET", "/tasks?since=inf", None, 400),
    ("GET", "/tasks?account=-1", None, 400),
    ("GET", "/tasks?limit=100000", None, 400),
    ("GET", "/tasks/123", None, 404),
    ("GET", "/tasks/99999999999999999999999", None, 404),
    ("DELETE", "/bans/192.0.2.99", None, 404),
])
def test_bad_requests_are_refused_clearly(host: AppHost, admin: httpx.Client, method: str, path: str,
                                          body: Any, status: int) -> None:
    account_id = host.account_id(host.make_key())
    reply = admin.request(method, PREFIX + path.replace("{id}", str(account_id)),
                          content=None if body is None else json.dumps(body))
    error(reply, status)


def test_bodies_that_are_not_json(admin: httpx.Client) -> None:
    assert "JSON object" in error(admin.post(f"{PREFIX}/accounts", content=b"threads=5"), 400)
    assert "JSON object" in error(admin.post(f"{PREFIX}/accounts", content=b"\xff\xfe"), 400)
    error(admin.post(f"{PREFIX}/accounts", content=b"{" * 70_000), 413)
    assert admin.put(f"{PREFIX}/accounts").status_code == 405


def test_a_body_cut_short_gets_no_server_error(host: AppHost) -> None:
    """The connection ends partway through a body: a 400 that reaches no one, not a 500, nothing made."""
    headers = {"Authorization": f"Bearer {admin_token(host)}", "Content-Type": "application/json"}
    before = len(host.run(host.store.list_workers()))
    sent = host.run(host.cut_short("POST", f"{PREFIX}/workers", headers, b'{"name": "half-made"}', 8))
    assert sent[0]["type"] == "http.response.start" and sent[0]["status"] == 400, sent
    assert len(host.run(host.store.list_workers())) == before


# ------------------------------------------------------------------------------------------ workers, tasks, bans


def test_worker_tokens(host: AppHost, admin: httpx.Client) -> None:
    made = ok(admin.post(f"{PREFIX}/workers", json={"name": "turnstile-farm", "methods": ["turnstile"]}), 201)
    token, worker = made["token"], made["worker"]
    assert token.startswith("cgw_") and worker["token_prefix"] == token[:8]
    assert (worker["name"], worker["methods"], worker["human"], worker["online"]) == (
        "turnstile-farm", ["turnstile"], False, False)
    with host.client() as client:
        claim = client.post("/worker/v1/claim", json={}, headers={"Authorization": f"Bearer {token}"})
        assert claim.status_code == 200  # the token works, and its claim counts as presence
    listed = ok(admin.get(f"{PREFIX}/workers", params={"token_hash": hash_secret(token)}))["workers"]
    assert [(w["id"], w["online"], w["serving"]) for w in listed] == [(worker["id"], True, ["turnstile"])]
    assert ok(admin.get(f"{PREFIX}/workers", params={"token_hash": "0" * 64}))["workers"] == []

    assert ok(admin.patch(f"{PREFIX}/workers/{worker['id']}", json={"disabled": True}))["worker"]["disabled"]
    with host.client() as client:
        assert client.post("/worker/v1/claim", json={}, headers={"Authorization": f"Bearer {token}"}).status_code == 401
    assert not ok(admin.patch(f"{PREFIX}/workers/{worker['id']}", json={"disabled": False}))["worker"]["disabled"]
    assert ok(admin.delete(f"{PREFIX}/workers/{worker['id']}")) == {"deleted": True}
    assert worker["id"] not in [w["id"] for w in ok(admin.get(f"{PREFIX}/workers"))["workers"]]


def test_task_search_and_history(host: AppHost, admin: httpx.Client) -> None:
    key = host.make_key(sandbox=True, balance="1")
    account_id = host.account_id(key)
    api = host.api(key)
    first = api.submit({"method": "userrecaptcha", "googlekey": "g" * 40, "pageurl": "https://example.com/a"}).text
    second = api.submit({"method": "turnstile", "sitekey": "0x4AAAAAAA", "pageurl": "https://example.com/b"}).text
    assert first.startswith("OK|") and second.startswith("OK|")
    first_id, second_id = first[3:], second[3:]
    found = ok(admin.get(f"{PREFIX}/tasks", params={"account": account_id}))["tasks"]
    assert [t["id"] for t in found] == [second_id, first_id]
    assert found[0]["method"] == "turnstile" and found[0]["state"] == "pending"
    assert "key" not in found[0]["params"] and found[0]["params"]["sitekey"] == "0x4AAAAAAA"
    only = ok(admin.get(f"{PREFIX}/tasks", params={"account": account_id, "method": found[1]["method"],
                                                   "state": "pending"}))["tasks"]
    assert [t["id"] for t in only] == [first_id]
    later = ok(admin.get(f"{PREFIX}/tasks", params={"account": account_id, "since": time.time() + 60}))["tasks"]
    assert later == []
    assert len(ok(admin.get(f"{PREFIX}/tasks", params={"limit": 1}))["tasks"]) == 1

    detail = ok(admin.get(f"{PREFIX}/tasks/{first_id}"))
    assert detail["task"]["id"] == first_id and detail["task"]["account_id"] == account_id
    assert [e["event"] for e in detail["history"]][:2] == ["submitted", "due"]
    assert detail["ledger"] == []


def test_bans(host: AppHost, admin: httpx.Client) -> None:
    address = f"192.0.2.{secrets.randbelow(200) + 1}"
    host.run(host.store.strike(address, time.time(), 60.0, 1, 300.0))
    assert address in [b["address"] for b in ok(admin.get(f"{PREFIX}/bans"))["bans"]]
    assert ok(admin.delete(f"{PREFIX}/bans/{address}")) == {"lifted": address}
    assert address not in [b["address"] for b in ok(admin.get(f"{PREFIX}/bans"))["bans"]]


def test_profiles_and_overview(host: AppHost, admin: httpx.Client) -> None:
    profiles = ok(admin.get(f"{PREFIX}/profiles"))["profiles"]
    assert all({"name", "accounts", "reports_good", "reports_bad", "accuracy"} <= set(p) for p in profiles)
    figures = ok(admin.get(f"{PREFIX}/overview"))
    for name in ("queue", "pending", "methods", "series", "workers", "accounts", "failures", "bans", "profiles"):
        assert name in figures
    assert len(figures["series"]["solved"]) == 15


# ------------------------------------------------------------------------------------------ the dashboard's session


def test_session_cookie_and_csrf(host: AppHost) -> None:
    token = admin_token(host, "browser")
    with host.client() as client:
        assert ok(client.get("/admin/session")) == {"signed_in": False}
        error(client.post("/admin/session", json={"token": host.make_key()}), 401)
        error(client.post("/admin/session", content=f'{{"token": "{token}"}}'), 415)  # not sent as JSON
        signed = client.post("/admin/session", json={"token": token})
        session = ok(signed)
        assert session["signed_in"] and session["name"] == "browser" and len(session["csrf"]) == 32
        cookie = signed.headers["set-cookie"]
        assert cookie.startswith(f"{SESSION_COOKIE}=") and token not in cookie
        for attribute in ("HttpOnly", "SameSite=strict", "Path=/admin"):
            assert attribute.lower() in cookie.lower()
        assert ok(client.get("/admin/session"))["csrf"] == session["csrf"]
        account_id = host.account_id(host.make_key())
        assert ok(client.get(f"{PREFIX}/accounts/{account_id}"))["account"]["id"] == account_id  # reads: cookie alone
        topup = f"{PREFIX}/accounts/{account_id}/topup"
        assert CSRF_HEADER in error(client.post(topup, json={"amount": "1"}), 403)
        error(client.post(topup, json={"amount": "1"}, headers={CSRF_HEADER: "0" * 32}), 403)
        assert ok(client.post(topup, json={"amount": "1"}, headers={CSRF_HEADER: session["csrf"]}))
        ok(client.delete("/admin/session", headers={CSRF_HEADER: session["csrf"]}))
        error(client.get(f"{PREFIX}/accounts/{account_id}"), 401)


def test_disabling_a_token_ends_its_sessions(host: AppHost) -> None:
    token = admin_token(host, "leaving")
    with host.client() as client:
        ok(client.post("/admin/session", json={"token": token}))
        ok(client.get(f"{PREFIX}/bans"))
        found = host.run(host.store.admin_token_by_hash(hash_secret(token)))
        assert found is not None
        host.run(host.store.set_admin_token_disabled(found.id, True))
        error(client.get(f"{PREFIX}/bans"), 401)
        error(client.get(f"{PREFIX}/bans", headers={"Authorization": f"Bearer {token}"}), 401)


def test_the_document_describes_every_operation() -> None:
    text = (Path(__file__).resolve().parent.parent / "docs" / "admin-api.md").read_text(encoding="utf-8")
    missing = [f"{op.method} {op.path}" for op in OPERATIONS if f"| {op.method} | `{op.path}` |" not in text]
    assert not missing, f"docs/admin-api.md lacks: {missing}"
