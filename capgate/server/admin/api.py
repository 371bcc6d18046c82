"""The admin API, ``/admin/api/v1``: JSON over HTTP for operators and ``capgate`` commands run with
``--server`` (docs/admin-api.md).

:data:`OPERATIONS` is the one table of the API: the routes are made from it, and so is the OpenAPI
description served at ``/admin/api/v1/openapi.json`` (:mod:`capgate.server.admin.openapi`), so the two
cannot drift apart. Every call but that description needs an admin token (:mod:`.auth`).

HTTP statuses are the API's own (unlike in.php/res.php): 400 for a malformed request, 401 without a
valid admin token, 403 for a cookie call without its CSRF header, 404 for what does not exist.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import math
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from capgate.keys import PREFIX_LENGTH, TOKEN_PREFIX, hash_secret, new_key
from capgate.money import micros_to_usd, usd_to_micros
from capgate.protocol.methods import BY_NAME
from capgate.server.admin.auth import (
    CSRF_HEADER,
    SESSION_COOKIE,
    SESSION_S,
    ApiError,
    admin_of,
    csrf_of,
    start_session,
)
from capgate.server.admin.figures import OVERVIEW_MEMO_S, ProfileFigures, account_json, overview, worker_json
from capgate.server.params import BodyTooLarge, ClientGone, read_request_body
from capgate.server.service import Service
from capgate.settings import Settings
from capgate.solvers.ocr.profile import list_profiles, valid_profile_name
from capgate.store.lifecycle import state_as_of
from capgate.store.models import Account, LedgerEntry, Task, TaskSearch, TaskState, WorkerSeen

PREFIX = "/admin/api/v1"
MAX_USD = Decimal(1_000_000_000)  # as the CLI's limits
MAX_THREADS = 1_000_000
MAX_LIMIT = 1000
BODY_LIMIT = 64 * 1024
TOKEN_SHOWN = 8


@dataclass(frozen=True)
class Param:
    """A query parameter, as the OpenAPI description shows it."""

    name: str
    type: str  # "string" | "integer" | "number" | "boolean"
    description: str


@dataclass
class Call:
    """One call's inputs: path parameters, query and JSON body."""

    request: Request
    path: Mapping[str, str]
    body: dict[str, Any] = field(default_factory=dict)

    def query(self, name: str) -> str | None:
        value = self.request.query_params.get(name)
        return value if value not in (None, "") else None


Handler = Callable[["AdminApi", Call], Awaitable[Any]]


@dataclass(frozen=True)
class Operation:
    method: str
    path: str  # below PREFIX, with {name} for path parameters
    name: str  # the handler's name on AdminApi; the OpenAPI operationId
    summary: str
    query: tuple[Param, ...] = ()
    body: dict[str, Any] | None = None  # JSON schema of the request body
    status: int = 200
    returns: str = "object"  # what the answer holds, in words


def _obj(required: tuple[str, ...] = (), **props: dict[str, Any]) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": props, "additionalProperties": False}
    if required:
        schema["required"] = list(required)
    return schema


USD = {"type": "string", "description": "USD as a decimal string, e.g. \"1.50\" (a number is taken too)"}
SETTINGS = _obj(human_threshold={"type": ["number", "null"], "minimum": 0, "maximum": 1,
                                 "description": "OCR answers below this confidence go to human workers; null: off"},
                keep_labels={"type": "boolean", "description": "keep confirmed and human answers as labels"},
                profile={"type": ["string", "null"], "description": "a trained OCR profile; null: none"})
LIMIT = Param("limit", "integer", f"most rows to return (1 to {MAX_LIMIT}; default 100)")

OPERATIONS: tuple[Operation, ...] = (
    Operation("GET", "/overview", "get_overview", "The dashboard's figures: queue, throughput, time to answer, "
              "workers, busiest accounts, recent failures, bans, OCR accuracy"),
    Operation("GET", "/accounts", "list_accounts", "Accounts, with their threads in use",
              query=(Param("prefix", "string", "only accounts whose key starts so (4 to 6 characters)"),
                     Param("key_hash", "string", "only the account of this key's SHA-256 (hex)")),
              returns="{accounts: [account]}"),
    Operation("POST", "/accounts", "create_account", "Create an account; its key is in the answer, and only there",
              body=_obj(threads={"type": "integer", "minimum": 1, "maximum": MAX_THREADS, "default": 5},
                        balance=USD, sandbox={"type": "boolean", "default": False}),
              status=201, returns="{account, key}"),
    Operation("GET", "/accounts/{account_id}", "get_account", "One account", returns="{account}"),
    Operation("PATCH", "/accounts/{account_id}", "update_account", "Set an account's threads, settings, or disable "
              "it (its pending tasks settle at once, uncharged)",
              body=_obj(threads={"type": "integer", "minimum": 1, "maximum": MAX_THREADS},
                        disabled={"type": "boolean"}, settings=SETTINGS), returns="{account}"),
    Operation("POST", "/accounts/{account_id}/topup", "topup", "Add USD to an account's balance (a ledger entry)",
              body=_obj(("amount",), amount=USD, note={"type": "string", "maxLength": 200, "default": "topup"}),
              returns="{account}"),
    Operation("GET", "/accounts/{account_id}/ledger", "get_ledger", "An account's ledger, newest first",
              query=(LIMIT,), returns="{entries: [ledger entry]}"),
    Operation("GET", "/workers", "list_workers", "Worker tokens, with what each served lately",
              query=(Param("token_hash", "string", "only the token of this SHA-256 (hex)"),),
              returns="{workers: [worker]}"),
    Operation("POST", "/workers", "create_worker", "Create a worker token; the token is in the answer, and only there",
              body=_obj(("name",), name={"type": "string", "minLength": 1, "maxLength": 100},
                        methods={"type": "array", "items": {"type": "string"}, "description": "empty: any method"},
                        human={"type": "boolean", "default": False}),
              status=201, returns="{worker, token}"),
    Operation("PATCH", "/workers/{worker_id}", "update_worker", "Disable or enable a worker token (from its next call)",
              body=_obj(("disabled",), disabled={"type": "boolean"}), returns="{worker}"),
    Operation("DELETE", "/workers/{worker_id}", "delete_worker", "Delete a worker token", returns="{deleted: true}"),
    Operation("GET", "/tasks", "search_tasks", "Tasks, newest first",
              query=(Param("account", "integer", "the account's id"),
                     Param("state", "string", "pending, solved, unsolvable or expired"),
                     Param("method", "string", "the protocol's method, e.g. normal"),
                     Param("since", "number", "created at or after (Unix seconds)"),
                     Param("until", "number", "created before (Unix seconds)"), LIMIT),
              returns="{tasks: [task]}"),
    Operation("GET", "/tasks/{task_id}", "get_task", "One task and its history (submitted, leased, settled, "
              "reported, money)", returns="{task, history: [event], ledger: [ledger entry]}"),
    Operation("GET", "/bans", "list_bans", "Addresses banned for wrong keys", returns="{bans: [{address, until}]}"),
    Operation("DELETE", "/bans/{address}", "lift_ban", "Lift an address's ban", returns="{lifted: address}"),
    Operation("GET", "/profiles", "list_profiles", "OCR profiles: trained ones, the accounts that use each, and "
              "their accuracy from customers' reports", returns="{profiles: [profile]}"),
)


def ledger_json(entry: LedgerEntry) -> dict[str, Any]:
    return {"id": entry.id, "account_id": entry.account_id, "task_id": str(entry.task_id) if entry.task_id else None,
            "kind": entry.kind.value, "amount": micros_to_usd(entry.amount), "amount_micros": entry.amount,
            "balance_after": micros_to_usd(entry.balance_after), "created_at": entry.created_at, "note": entry.note}


def task_json(task: Task, settings: Settings, now: float) -> dict[str, Any]:
    state = state_as_of(task.state, task.created_at, task.deadline_at, task.settled_at, now, settings.retention)
    return {"id": str(task.id), "account_id": task.account_id, "method": task.method, "state": state.value,
            "pool": task.pool.value, "price_micros": task.price, "created_at": task.created_at,
            "deadline_at": task.deadline_at, "not_before": task.not_before, "settled_at": task.settled_at,
            "attempts": task.attempts, "lease_worker": task.lease_worker, "lease_until": task.lease_until,
            "answer": task.answer, "error": task.error, "confidence": task.confidence, "report": task.report,
            "params": {k: v for k, v in task.params.items() if k not in ("key", "body", "file")},
            "pingback": task.pingback is not None}


def history(task: Task, ledger: list[LedgerEntry], now: float) -> list[dict[str, Any]]:
    """A task's events, from what its row and ledger keep, oldest first."""
    events: list[dict[str, Any]] = [{"at": task.created_at, "event": "submitted", "detail": task.pool.value}]
    if task.not_before > task.created_at:
        events.append({"at": task.not_before, "event": "due", "detail": ""})
    if task.attempts:
        holder = f" (worker token {task.lease_worker})" if task.lease_worker is not None else ""
        events.append({"at": task.lease_until, "event": "leased", "detail": f"{task.attempts} attempt(s){holder}; "
                       "the last lease ran to this time" if task.lease_until else f"{task.attempts} attempt(s)"})
    if task.settled_at is not None:
        detail = task.error or ("answered" + (f", confidence {task.confidence:.2f}" if task.confidence else ""))
        events.append({"at": task.settled_at, "event": task.state.value if task.state is not TaskState.EXPIRED
                       else "settled", "detail": detail})
    elif now >= task.deadline_at:
        events.append({"at": task.deadline_at, "event": "deadline", "detail": "passed"})
    for entry in ledger:
        events.append({"at": entry.created_at, "event": entry.kind.value, "detail": ledger_json(entry)["amount"]})
    if task.report is not None:
        events.append({"at": None, "event": f"reported {task.report}", "detail": ""})
    return sorted(events, key=lambda e: (e["at"] is None, e["at"] or 0.0))


# ------------------------------------------------------------------------------------------ input checks


def _int(value: Any, name: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ApiError(400, f"{name} must be a whole number from {low} to {high}")
    return value


def _bool(value: Any, name: str) -> bool:
    if not isinstance(value, bool):
        raise ApiError(400, f"{name} must be true or false")
    return value


def _usd(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ApiError(400, f"{name} must be an amount in USD, e.g. \"1.50\"")
    try:
        amount = Decimal(str(value).strip())
    except InvalidOperation:
        raise ApiError(400, f"{name} must be an amount in USD, e.g. \"1.50\"") from None
    if not amount.is_finite() or not 0 <= amount <= MAX_USD:
        raise ApiError(400, f"{name} must be from 0 to {MAX_USD} USD")
    return usd_to_micros(amount)


def _query_int(call: Call, name: str, low: int, high: int, default: int | None) -> int | None:
    raw = call.query(name)
    if raw is None:
        return default
    if not raw.isascii() or not raw.isdigit() or not low <= int(raw) <= high:
        raise ApiError(400, f"{name} must be a whole number from {low} to {high}")
    return int(raw)


def _query_time(call: Call, name: str) -> float | None:
    raw = call.query(name)
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        raise ApiError(400, f"{name} must be a time in Unix seconds") from None
    if not math.isfinite(value):
        raise ApiError(400, f"{name} must be a time in Unix seconds")
    return value


def _path_id(call: Call, name: str) -> int:
    raw = call.path.get(name, "")
    if not raw.isascii() or not raw.isdigit() or len(raw) > 18:
        raise ApiError(404, f"no such {name.removesuffix('_id')}")
    return int(raw)


def _unknown_fields(body: Mapping[str, Any], op: Operation) -> None:
    allowed = set((op.body or {}).get("properties", {}))
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise ApiError(400, f"unknown field(s): {', '.join(unknown)}; known: {', '.join(sorted(allowed)) or 'none'}")


# ------------------------------------------------------------------------------------------ the API


class AdminApi:
    def __init__(self, service: Service) -> None:
        self.service = service
        self.store = service.store
        self.settings = service.settings
        self.profiles = ProfileFigures(service.settings)
        self._overview: tuple[float, Any] = (0.0, None)

    async def _account(self, account_id: int) -> Account:
        account = await self.store.get_account(account_id)
        if account is None:
            raise ApiError(404, f"no account {account_id}")
        return account

    async def _account_json(self, account: Account) -> dict[str, Any]:
        return account_json(account, await self.store.working_threads(account.id, time.time()))

    async def _worker(self, worker_id: int) -> WorkerSeen:
        for seen in await self.store.workers_seen(time.time() - self.settings.worker_presence):
            if seen.worker.id == worker_id:
                return seen
        raise ApiError(404, f"no worker token {worker_id}")

    def _worker_json(self, seen: WorkerSeen) -> dict[str, Any]:
        return worker_json(seen, time.time(), self.settings.worker_presence)

    # ---- figures
    async def get_overview(self, call: Call) -> Any:
        made_at, figures = self._overview
        if figures is None or time.monotonic() - made_at > OVERVIEW_MEMO_S:
            figures = await overview(self.store, self.settings, self.profiles)
            self._overview = (time.monotonic(), figures)
        return figures

    # ---- accounts
    async def list_accounts(self, call: Call) -> Any:
        prefix, key_hash = call.query("prefix"), call.query("key_hash")
        if key_hash is not None:
            found = await self.store.account_by_key_hash(key_hash.lower())
            accounts = [found] if found is not None else []
        elif prefix is not None:
            if not 4 <= len(prefix) <= PREFIX_LENGTH:
                raise ApiError(400, f"prefix must be 4 to {PREFIX_LENGTH} characters")
            accounts = await self.store.account_by_prefix(prefix)
        else:
            accounts = await self.store.list_accounts()
        working = await self.store.pending_by_account(time.time())
        return {"accounts": [account_json(a, working.get(a.id, 0)) for a in accounts]}

    async def create_account(self, call: Call) -> Any:
        threads = _int(call.body.get("threads", 5), "threads", 1, MAX_THREADS)
        balance = _usd(call.body.get("balance", "0"), "balance")
        sandbox = _bool(call.body.get("sandbox", False), "sandbox")
        key = new_key()
        account = await self.store.create_account(hash_secret(key), key[:PREFIX_LENGTH], threads, balance, sandbox)
        return {"account": account_json(account), "key": key}

    async def get_account(self, call: Call) -> Any:
        return {"account": await self._account_json(await self._account(_path_id(call, "account_id")))}

    async def update_account(self, call: Call) -> Any:
        account = await self._account(_path_id(call, "account_id"))
        body = call.body
        threads = _int(body["threads"], "threads", 1, MAX_THREADS) if "threads" in body else None
        disabled = _bool(body["disabled"], "disabled") if "disabled" in body else None
        changes = self._settings(body["settings"]) if "settings" in body else None
        if threads is None and disabled is None and not changes:
            raise ApiError(400, "nothing to change: threads, disabled or settings")
        updated = await self.store.update_account(account.id, disabled=disabled, threads=threads,
                                                  settings=changes or None)
        return {"account": await self._account_json(updated)}

    def _settings(self, raw: Any) -> dict[str, object]:
        if not isinstance(raw, dict):
            raise ApiError(400, "settings must be an object")
        _unknown_fields(raw, Operation("", "", "", "", body=SETTINGS))
        changes: dict[str, object] = {}
        if "human_threshold" in raw:
            value = raw["human_threshold"]
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                      or not 0 <= value <= 1):
                raise ApiError(400, "settings.human_threshold must be a confidence from 0 to 1, or null")
            changes["human_threshold"] = value
        if "keep_labels" in raw:
            changes["keep_labels"] = _bool(raw["keep_labels"], "settings.keep_labels")
        if "profile" in raw:
            name = raw["profile"]
            if name is not None:
                if not isinstance(name, str) or not valid_profile_name(name):
                    raise ApiError(400, "settings.profile must be a profile name, or null")
                known = [p.name for p in list_profiles(self.profiles.folder())]
                if name not in known:
                    raise ApiError(400, f"no trained profile {name!r} on the server (there: "
                                        f"{', '.join(known) or 'none'}); train it first: capgate train DATA_DIR "
                                        f"--profile {name}")
            changes["profile"] = name
        return changes

    async def topup(self, call: Call) -> Any:
        account = await self._account(_path_id(call, "account_id"))
        amount = _usd(call.body.get("amount"), "amount")
        note = call.body.get("note", "topup")
        if not isinstance(note, str) or len(note) > 200:
            raise ApiError(400, "note must be text of at most 200 characters")
        return {"account": await self._account_json(await self.store.topup(account.id, amount, note))}

    async def get_ledger(self, call: Call) -> Any:
        account = await self._account(_path_id(call, "account_id"))
        limit = _query_int(call, "limit", 1, MAX_LIMIT, 100) or 100
        return {"entries": [ledger_json(e) for e in await self.store.ledger(account.id, limit)]}

    # ---- worker tokens
    async def list_workers(self, call: Call) -> Any:
        seen = await self.store.workers_seen(time.time() - self.settings.worker_presence)
        token_hash = call.query("token_hash")
        if token_hash is not None:
            found = await self.store.worker_by_token_hash(token_hash.lower())
            seen = [w for w in seen if found is not None and w.worker.id == found.id]
        return {"workers": [self._worker_json(w) for w in seen]}

    async def create_worker(self, call: Call) -> Any:
        name = call.body.get("name")
        if not isinstance(name, str) or not name.strip() or len(name) > 100:
            raise ApiError(400, "name must be text of 1 to 100 characters")
        methods = call.body.get("methods", [])
        if not isinstance(methods, list) or not all(isinstance(m, str) and m in BY_NAME for m in methods):
            raise ApiError(400, f"methods must be a list of: {', '.join(sorted(BY_NAME))}")
        human = _bool(call.body.get("human", False), "human")
        token = TOKEN_PREFIX + secrets.token_hex(20)
        worker = await self.store.create_worker(name.strip(), hash_secret(token), token[:TOKEN_SHOWN], methods, human)
        return {"worker": self._worker_json(await self._worker(worker.id)), "token": token}

    async def update_worker(self, call: Call) -> Any:
        worker_id = _path_id(call, "worker_id")
        disabled = _bool(call.body.get("disabled"), "disabled")
        if await self.store.set_worker_disabled(worker_id, disabled) is None:
            raise ApiError(404, f"no worker token {worker_id}")
        return {"worker": self._worker_json(await self._worker(worker_id))}

    async def delete_worker(self, call: Call) -> Any:
        worker_id = _path_id(call, "worker_id")
        if not await self.store.delete_worker(worker_id):
            raise ApiError(404, f"no worker token {worker_id}")
        return {"deleted": True}

    # ---- tasks
    async def search_tasks(self, call: Call) -> Any:
        state = call.query("state")
        if state is not None and state not in {s.value for s in TaskState}:
            raise ApiError(400, f"state must be one of: {', '.join(s.value for s in TaskState)}")
        method = call.query("method")
        if method is not None and method not in BY_NAME:
            raise ApiError(400, f"unknown method {method[:40]!r}")
        search = TaskSearch(account_id=_query_int(call, "account", 1, 2**62, None),
                            state=TaskState(state) if state is not None else None, method=method,
                            since=_query_time(call, "since"), until=_query_time(call, "until"),
                            limit=_query_int(call, "limit", 1, MAX_LIMIT, 100) or 100)
        now = time.time()
        return {"tasks": [task_json(t, self.settings, now) for t in await self.store.search_tasks(search)]}

    async def get_task(self, call: Call) -> Any:
        task_id = _path_id(call, "task_id")
        task = await self.store.find_task(task_id)
        if task is None:
            raise ApiError(404, f"no task {task_id}")
        ledger = await self.store.task_ledger(task_id)
        now = time.time()
        return {"task": task_json(task, self.settings, now), "history": history(task, ledger, now),
                "ledger": [ledger_json(e) for e in ledger]}

    # ---- bans and profiles
    async def list_bans(self, call: Call) -> Any:
        return {"bans": [{"address": ip, "until": until} for ip, until in await self.store.bans(time.time())]}

    async def lift_ban(self, call: Call) -> Any:
        address = call.path.get("address", "").strip()
        with contextlib.suppress(ValueError):
            address = str(ipaddress.ip_address(address))  # as the server records it
        if not await self.store.lift_ban(address):
            raise ApiError(404, f"{address[:60]} is not banned")
        return {"lifted": address}

    async def list_profiles(self, call: Call) -> Any:
        return {"profiles": await self.profiles.read(self.store, fresh=True)}


# ------------------------------------------------------------------------------------------ routes


async def _json_body(request: Request) -> dict[str, Any]:
    try:
        raw = await read_request_body(request, BODY_LIMIT)
    except BodyTooLarge:
        raise ApiError(413, "body too large") from None
    except ClientGone:
        # Gone before its body ended: nothing was done, and the answer reaches no one.
        raise ApiError(400, "the body did not arrive whole") from None
    if not raw.strip():
        return {}
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, "the body must be a JSON object") from None
    if not isinstance(data, dict):
        raise ApiError(400, "the body must be a JSON object")
    return data


def _error(exc: ApiError) -> JSONResponse:
    return JSONResponse({"error": exc.message}, status_code=exc.status, headers={"Cache-Control": "no-store"})


def admin_routes(service: Service) -> list[BaseRoute]:
    """The admin API's routes (from :data:`OPERATIONS`), its OpenAPI description, and the dashboard's
    sign-in (``/admin/session``)."""
    from capgate.server.admin.openapi import openapi

    api = AdminApi(service)
    store = service.store

    def endpoint(op: Operation) -> Callable[[Request], Awaitable[Response]]:
        handler: Callable[[Call], Awaitable[Any]] = getattr(api, op.name)

        async def run(request: Request) -> Response:
            try:
                await admin_of(request, store)
                body = await _json_body(request) if op.body is not None else {}
                _unknown_fields(body, op)
                result = await handler(Call(request, request.path_params, body))
            except ApiError as exc:
                return _error(exc)
            return JSONResponse(result, status_code=op.status, headers={"Cache-Control": "no-store"})
        return run

    # One route per path, answering each of its methods (a path's methods share a route, so a method
    # the path lacks gets 405 rather than the next route's 401).
    by_path: dict[str, dict[str, Operation]] = {}
    for op in OPERATIONS:
        by_path.setdefault(op.path, {})[op.method] = op

    def dispatcher(ops: dict[str, Operation]) -> Callable[[Request], Awaitable[Response]]:
        handlers = {method: endpoint(op) for method, op in ops.items()}

        async def run(request: Request) -> Response:
            return await handlers[request.method](request)
        return run

    routes: list[BaseRoute] = [Route(PREFIX + path, dispatcher(ops), methods=list(ops))
                               for path, ops in by_path.items()]
    document = openapi(OPERATIONS, PREFIX)

    async def openapi_json(request: Request) -> Response:
        return JSONResponse(document)

    async def session(request: Request) -> Response:
        try:
            if request.method == "POST":
                if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
                    raise ApiError(415, "send the token as JSON: {\"token\": \"cga_...\"}")
                token = (await _json_body(request)).get("token")
                found, secret = await start_session(store, token if isinstance(token, str) else "")
                answer = JSONResponse({"signed_in": True, "name": found.name, "csrf": csrf_of(secret)},
                                      headers={"Cache-Control": "no-store"})
                answer.set_cookie(SESSION_COOKIE, secret, max_age=int(SESSION_S), path="/admin", httponly=True,
                                  samesite="strict", secure=request.url.scheme == "https")
                return answer
            secret = request.cookies.get(SESSION_COOKIE, "")
            if request.method == "GET" and not secret:
                return JSONResponse({"signed_in": False}, headers={"Cache-Control": "no-store"})
            found = await admin_of(request, store)
            if request.method == "DELETE":
                if secret:
                    await store.end_admin_session(hash_secret(secret))
                answer = JSONResponse({"signed_out": True})
                answer.delete_cookie(SESSION_COOKIE, path="/admin", httponly=True, samesite="strict")
                return answer
            return JSONResponse({"signed_in": True, "name": found.name, "csrf": csrf_of(secret) if secret else None},
                                headers={"Cache-Control": "no-store"})
        except ApiError as exc:
            return _error(exc)

    return [*routes, Route(PREFIX + "/openapi.json", openapi_json),
            Route("/admin/session", session, methods=["GET", "POST", "DELETE"])]


__all__ = ["CSRF_HEADER", "OPERATIONS", "PREFIX", "AdminApi", "Operation", "admin_routes"]
