"""What ``capgate keys``, ``workers`` and ``bans`` do, on a local database or on a remote server.

:class:`Manager` is the one code path of those commands: each is written once against it, and the
command line chooses the implementation: :class:`LocalManager` on the store itself (``--db``), or
:class:`RemoteManager` through a server's admin API (``--server URL --admin-token T``). Finding an
account or worker token from what a person typed (an id, a key, a key prefix, a name, a token) is
written once here, on top of the few look-ups each implementation supplies.
"""

from __future__ import annotations

import abc
import secrets
import time
from collections.abc import Sequence
from typing import Any

import httpx

from capgate.cliargs import CliError
from capgate.keys import KEY_LENGTH, PREFIX_LENGTH, TOKEN_PREFIX, hash_secret, new_key
from capgate.settings import Settings
from capgate.store.base import Store
from capgate.store.models import Account, WorkerToken

TOKEN_SHOWN = 8  # characters of a worker token kept beside its hash, to tell tokens apart in a list
ADMIN_PREFIX = "/admin/api/v1"
REMOTE_TIMEOUT_S = 30.0


class Manager(abc.ABC):
    """Accounts, worker tokens and bans, wherever they are kept."""

    # ---- what an implementation supplies
    @abc.abstractmethod
    async def create_account(self, threads: int, balance: int, sandbox: bool) -> tuple[Account, str]:
        """The new account and its key (shown once)."""

    @abc.abstractmethod
    async def list_accounts(self) -> list[Account]: ...

    @abc.abstractmethod
    async def account_by_key_hash(self, key_hash: str) -> Account | None: ...

    @abc.abstractmethod
    async def accounts_by_prefix(self, prefix: str) -> list[Account]: ...

    @abc.abstractmethod
    async def topup(self, account_id: int, amount: int, note: str) -> Account: ...

    @abc.abstractmethod
    async def update_account(self, account_id: int, *, disabled: bool | None = None, threads: int | None = None,
                             settings: dict[str, object] | None = None) -> Account: ...

    @abc.abstractmethod
    async def check_profile(self, name: str) -> None:
        """Refuse a profile the OCR cannot load (checked where the profiles are: here, or by the server)."""

    @abc.abstractmethod
    async def create_worker(self, name: str, methods: Sequence[str], human: bool) -> tuple[WorkerToken, str]: ...

    @abc.abstractmethod
    async def list_workers(self) -> list[WorkerToken]: ...

    @abc.abstractmethod
    async def worker_by_token_hash(self, token_hash: str) -> WorkerToken | None: ...

    @abc.abstractmethod
    async def set_worker_disabled(self, worker_id: int, disabled: bool) -> WorkerToken | None: ...

    @abc.abstractmethod
    async def delete_worker(self, worker_id: int) -> bool: ...

    @abc.abstractmethod
    async def bans(self) -> list[tuple[str, float]]: ...

    @abc.abstractmethod
    async def lift_ban(self, address: str) -> bool: ...

    # ---- written once
    async def find_account(self, ident: str) -> Account:
        """An account by id, by its full key, or by a unique key prefix (as ``keys list`` shows it).

        A full key never falls back to its prefix: a mistyped key must not reach another account."""
        if len(ident) == KEY_LENGTH:
            account = await self.account_by_key_hash(hash_secret(ident))
            if account is not None:
                return account
            raise CliError("no single account matches that key")
        if ident.isdigit() and len(ident) < PREFIX_LENGTH:
            for account in await self.list_accounts():
                if account.id == int(ident):
                    return account
        prefix = ident.rstrip("…")
        matches = await self.accounts_by_prefix(prefix) if 4 <= len(prefix) <= PREFIX_LENGTH else []
        if len(matches) == 1:
            return matches[0]
        raise CliError(f"no single account matches {ident!r} (use the id from 'capgate keys list' or the key)")

    async def find_worker(self, ident: str) -> WorkerToken:
        """A worker token by id, by name (if only one has it), or by the token itself."""
        if ident.startswith(TOKEN_PREFIX) and len(ident) > TOKEN_SHOWN:
            worker = await self.worker_by_token_hash(hash_secret(ident))
            if worker is not None:
                return worker
            raise CliError("no worker token matches that token")
        workers = await self.list_workers()
        if ident.isdigit():
            for worker in workers:
                if worker.id == int(ident):
                    return worker
        named = [worker for worker in workers if worker.name == ident]
        if len(named) == 1:
            return named[0]
        if named:
            ids = ", ".join(str(worker.id) for worker in named)
            raise CliError(f"{len(named)} worker tokens are named {ident!r} (ids {ids}); give the id")
        raise CliError(f"no worker token {ident!r} (see 'capgate workers list')")


class LocalManager(Manager):
    """On the database itself."""

    def __init__(self, store: Store, settings: Settings) -> None:
        self.store = store
        self.settings = settings

    async def create_account(self, threads: int, balance: int, sandbox: bool) -> tuple[Account, str]:
        key = new_key()
        return await self.store.create_account(hash_secret(key), key[:PREFIX_LENGTH], threads, balance, sandbox), key

    async def list_accounts(self) -> list[Account]:
        return await self.store.list_accounts()

    async def account_by_key_hash(self, key_hash: str) -> Account | None:
        return await self.store.account_by_key_hash(key_hash)

    async def accounts_by_prefix(self, prefix: str) -> list[Account]:
        return await self.store.account_by_prefix(prefix)

    async def topup(self, account_id: int, amount: int, note: str) -> Account:
        return await self.store.topup(account_id, amount, note)

    async def update_account(self, account_id: int, *, disabled: bool | None = None, threads: int | None = None,
                             settings: dict[str, object] | None = None) -> Account:
        return await self.store.update_account(account_id, disabled=disabled, threads=threads, settings=settings)

    async def check_profile(self, name: str) -> None:
        from capgate.paths import profiles_dir
        from capgate.solvers.ocr.profile import list_profiles

        root = profiles_dir(self.settings.db)
        known = [profile.name for profile in list_profiles(root)]
        if name not in known:
            raise CliError(f"--profile: no trained profile {name!r} in {root} (there: {', '.join(known) or 'none'}); "
                           f"train it first: capgate train DATA_DIR --profile {name}")

    async def create_worker(self, name: str, methods: Sequence[str], human: bool) -> tuple[WorkerToken, str]:
        token = TOKEN_PREFIX + secrets.token_hex(20)
        worker = await self.store.create_worker(name, hash_secret(token), token[:TOKEN_SHOWN], methods, human)
        return worker, token

    async def list_workers(self) -> list[WorkerToken]:
        return await self.store.list_workers()

    async def worker_by_token_hash(self, token_hash: str) -> WorkerToken | None:
        return await self.store.worker_by_token_hash(token_hash)

    async def set_worker_disabled(self, worker_id: int, disabled: bool) -> WorkerToken | None:
        return await self.store.set_worker_disabled(worker_id, disabled)

    async def delete_worker(self, worker_id: int) -> bool:
        return await self.store.delete_worker(worker_id)

    async def bans(self) -> list[tuple[str, float]]:
        return await self.store.bans(time.time())

    async def lift_ban(self, address: str) -> bool:
        return await self.store.lift_ban(address)


def _account(data: dict[str, Any]) -> Account:
    return Account(id=int(data["id"]), key_prefix=str(data["key_prefix"]), threads=int(data["threads"]),
                   balance=int(data["balance_micros"]), disabled=bool(data["disabled"]), sandbox=bool(data["sandbox"]),
                   created_at=float(data["created_at"]), settings=dict(data["settings"]))


def _worker(data: dict[str, Any]) -> WorkerToken:
    return WorkerToken(id=int(data["id"]), name=str(data["name"]), token_prefix=str(data["token_prefix"]),
                       methods=tuple(data["methods"]), human=bool(data["human"]), disabled=bool(data["disabled"]),
                       created_at=float(data["created_at"]))


class RemoteManager(Manager):
    """Through a capgate server's admin API (docs/admin-api.md)."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client

    @staticmethod
    def connect(server: str, admin_token: str) -> httpx.AsyncClient:
        from capgate.protocol.wire import base_url

        try:
            url = base_url(server)
        except ValueError as exc:
            raise CliError(f"--server: {exc}") from None
        return httpx.AsyncClient(base_url=url, timeout=REMOTE_TIMEOUT_S,
                                 headers={"Authorization": f"Bearer {admin_token}", "Accept": "application/json"})

    async def _call(self, method: str, path: str, body: dict[str, Any] | None = None,
                    params: dict[str, str] | None = None, missing_ok: bool = False) -> dict[str, Any] | None:
        try:
            reply = await self.client.request(method, ADMIN_PREFIX + path, json=body, params=params)
        except httpx.HTTPError as exc:
            raise CliError(f"cannot reach the server at {self.client.base_url}: {exc or type(exc).__name__}") from None
        try:
            data = reply.json()
        except ValueError:
            data = None
        if reply.status_code == 404 and missing_ok:
            return None
        if not reply.is_success:
            message = data.get("error") if isinstance(data, dict) else None
            if reply.status_code == 401:
                raise CliError(f"the server refused the admin token: {message or 'HTTP 401'}")
            if message is None and reply.status_code == 404:
                message = "no admin API there (is it a capgate server, and of this version?)"
            raise CliError(f"the server answered {reply.status_code}: {message or reply.reason_phrase}")
        if not isinstance(data, dict):
            raise CliError(f"the server's answer is not the admin API's JSON (HTTP {reply.status_code})")
        return data

    async def _must(self, method: str, path: str, body: dict[str, Any] | None = None,
                    params: dict[str, str] | None = None) -> dict[str, Any]:
        data = await self._call(method, path, body, params)
        assert data is not None
        return data

    async def create_account(self, threads: int, balance: int, sandbox: bool) -> tuple[Account, str]:
        from capgate.money import micros_to_usd

        data = await self._must("POST", "/accounts", {"threads": threads, "balance": micros_to_usd(balance),
                                                      "sandbox": sandbox})
        return _account(data["account"]), str(data["key"])

    async def list_accounts(self) -> list[Account]:
        return [_account(a) for a in (await self._must("GET", "/accounts"))["accounts"]]

    async def account_by_key_hash(self, key_hash: str) -> Account | None:
        found = (await self._must("GET", "/accounts", params={"key_hash": key_hash}))["accounts"]
        return _account(found[0]) if found else None

    async def accounts_by_prefix(self, prefix: str) -> list[Account]:
        return [_account(a) for a in (await self._must("GET", "/accounts", params={"prefix": prefix}))["accounts"]]

    async def topup(self, account_id: int, amount: int, note: str) -> Account:
        from capgate.money import micros_to_usd

        data = await self._must("POST", f"/accounts/{account_id}/topup",
                                {"amount": micros_to_usd(amount), "note": note})
        return _account(data["account"])

    async def update_account(self, account_id: int, *, disabled: bool | None = None, threads: int | None = None,
                             settings: dict[str, object] | None = None) -> Account:
        body: dict[str, Any] = {}
        if disabled is not None:
            body["disabled"] = disabled
        if threads is not None:
            body["threads"] = threads
        if settings is not None:
            body["settings"] = settings
        return _account((await self._must("PATCH", f"/accounts/{account_id}", body))["account"])

    async def check_profile(self, name: str) -> None:
        pass  # the server checks it against its own profiles when the setting arrives

    async def create_worker(self, name: str, methods: Sequence[str], human: bool) -> tuple[WorkerToken, str]:
        data = await self._must("POST", "/workers", {"name": name, "methods": list(methods), "human": human})
        return _worker(data["worker"]), str(data["token"])

    async def list_workers(self) -> list[WorkerToken]:
        return [_worker(w) for w in (await self._must("GET", "/workers"))["workers"]]

    async def worker_by_token_hash(self, token_hash: str) -> WorkerToken | None:
        found = (await self._must("GET", "/workers", params={"token_hash": token_hash}))["workers"]
        return _worker(found[0]) if found else None

    async def set_worker_disabled(self, worker_id: int, disabled: bool) -> WorkerToken | None:
        data = await self._call("PATCH", f"/workers/{worker_id}", {"disabled": disabled}, missing_ok=True)
        return _worker(data["worker"]) if data is not None else None

    async def delete_worker(self, worker_id: int) -> bool:
        return await self._call("DELETE", f"/workers/{worker_id}", missing_ok=True) is not None

    async def bans(self) -> list[tuple[str, float]]:
        return [(b["address"], float(b["until"])) for b in (await self._must("GET", "/bans"))["bans"]]

    async def lift_ban(self, address: str) -> bool:
        from urllib.parse import quote

        return await self._call("DELETE", f"/bans/{quote(address, safe='')}", missing_ok=True) is not None
