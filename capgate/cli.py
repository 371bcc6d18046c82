"""The ``capgate`` command: serve, manage keys and worker tokens, solve, train.

Settings come from flags and ``CAPGATE_*`` variables; ``CAPGATE_DB`` names the database for every
command. Errors are one line on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import faulthandler
import io
import ipaddress
import os
import signal
import sqlite3
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, TypeVar

from capgate.cliargs import CliError, add_db_option, whole_number
from capgate.keys import hash_secret
from capgate.money import micros_to_usd, usd_to_micros
from capgate.paths import database_url, missing_folder
from capgate.protocol.methods import BY_NAME
from capgate.settings import Settings, from_env
from capgate.store.base import Store

if TYPE_CHECKING:
    from capgate.manage import Manager
from capgate.store.models import Account, AdminToken, WorkerToken
from capgate.store.schema import SchemaMode

T = TypeVar("T")
Command = Callable[[argparse.Namespace], int]
_EXTRA_REGISTRARS = ("capgate.workers.command", "capgate.client.command", "capgate.training.command")


# Far beyond any real account, well inside SQLite's 64-bit integers (balances are micro-dollars).
MAX_USD = Decimal(1_000_000_000)
MAX_THREADS = 1_000_000
TOKEN_SHOWN = 8  # characters of a token kept beside its hash, to tell tokens apart in a list


def _usd(text: str) -> Decimal:
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise argparse.ArgumentTypeError(f"not an amount in USD: {text!r}") from None
    if not value.is_finite() or value < 0 or value > MAX_USD:
        raise argparse.ArgumentTypeError(f"not an amount in USD from 0 to {MAX_USD}: {text!r}")
    return value


def with_store(settings: Settings, fn: Callable[[Store], Awaitable[T]], schema: SchemaMode = "check") -> T:
    from capgate.store.factory import settings_store
    from capgate.store.schema import SchemaMismatch

    async def run() -> T:
        store = settings_store(settings, schema=schema)
        try:
            await store.open()
        except SchemaMismatch as exc:
            raise CliError(str(exc)) from None
        try:
            return await fn(store)
        finally:
            await store.close()

    return asyncio.run(run())


def settings_from(args: argparse.Namespace) -> Settings:
    names = {f.name for f in dataclasses.fields(Settings)}
    overrides = {name: value for name, value in vars(args).items() if name in names}
    try:
        settings = from_env(**overrides)
    except (ValueError, TypeError) as exc:
        raise CliError(str(exc)) from None
    folder = missing_folder(settings.db)
    if folder is not None:
        raise CliError(f"the database {settings.db} is in a folder that does not exist ({folder}): "
                       "fix --db or CAPGATE_DB, or create the folder first")
    return settings


# ------------------------------------------------------------------------------------------ serve



def cmd_serve(args: argparse.Namespace) -> int:
    from capgate.server import running
    settings = settings_from(args)
    check_schema(settings)  # once, before the worker processes start: a fresh SQLite file is made here
    # Granian serves (capgate/server/running.py); X-Forwarded-For is read by the app itself, from the
    # trusted_proxies setting only. Ctrl-C or SIGTERM: one line, and every process ends with it.
    running.run(settings, log_level=args.log_level, log_format=getattr(args, "log_format", "text"))
    return 0


# ------------------------------------------------------------------------------------------ db


def check_schema(settings: Settings) -> None:
    """Refuse to start on a database whose schema is behind (or ahead of) this capgate, naming the
    command that upgrades it; a new, empty database gets its schema here (``make run`` just works)."""
    async def nothing(store: Store) -> None:
        return None

    with_store(settings, nothing)


def _schema_versions(store: Store) -> tuple[int, int]:
    from capgate.store.schema import VERSION

    return store.schema_found, VERSION


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    from capgate.store.schema import VERSION

    async def found(store: Store) -> int:
        return _schema_versions(store)[0]

    before = with_store(settings_from(args), found, schema="upgrade")
    if before == VERSION:
        print(f"the schema is up to date (version {VERSION})")
    elif before == 0:
        print(f"created the schema (version {VERSION})")
    else:
        print(f"upgraded the schema from version {before} to {VERSION}")
    return 0


def cmd_db_status(args: argparse.Namespace) -> int:
    """Exit 0 when the schema is this capgate's, 1 when ``capgate db upgrade`` has work to do."""
    from capgate.paths import sqlite_path

    settings = settings_from(args)
    path = sqlite_path(settings.db)
    if path is not None and not path.exists():
        print(f"no database at {path} yet: 'capgate db upgrade' (or the first 'capgate serve') creates it")
        return 1

    async def versions(store: Store) -> tuple[int, int]:
        return _schema_versions(store)

    found, wanted = with_store(settings, versions, schema="inspect")
    if found == wanted:
        print(f"the schema is up to date (version {found})")
        return 0
    if found == 0:
        print(f"the database has no capgate schema yet: 'capgate db upgrade' creates it (version {wanted})")
    elif found < wanted:
        print(f"the schema is at version {found}, this capgate needs {wanted}: run 'capgate db upgrade'")
    else:
        print(f"the schema is at version {found}, newer than this capgate knows ({wanted})")
    return 1


# ------------------------------------------------------------------------------------------ keys


def _describe(account: Account) -> str:
    kind = "sandbox" if account.sandbox else "live"
    state = "disabled" if account.disabled else "active"
    return (f"{account.id:>5}  {account.key_prefix}…  {kind:<7}  threads={account.threads:<4}  "
            f"balance={micros_to_usd(account.balance):<10}  {state}")


def with_manager(args: argparse.Namespace, fn: Callable[[Manager], Awaitable[T]]) -> T:
    """Run ``fn`` on the database (``--db``) or, with ``--server`` and an admin token, on a remote
    server through its admin API: the management commands are written once, against :class:`Manager`."""
    from capgate.manage import LocalManager, RemoteManager

    explicit = getattr(args, "server", None) or ""
    token = getattr(args, "admin_token", None) or os.environ.get("CAPGATE_ADMIN_TOKEN", "")
    server = explicit or (os.environ.get("CAPGATE_SERVER", "") if token and not getattr(args, "db", None) else "")
    if server:
        if not token:
            raise CliError("--server needs an admin token: --admin-token T or CAPGATE_ADMIN_TOKEN "
                           "(made on the server with: capgate admin-tokens create NAME)")
        if explicit and getattr(args, "db", None):
            raise CliError("give --db (this machine's database) or --server (a remote one), not both")

        async def remote() -> T:
            async with RemoteManager.connect(server, token.strip()) as client:
                return await fn(RemoteManager(client))
        return asyncio.run(remote())
    settings = settings_from(args)
    return with_store(settings, lambda store: fn(LocalManager(store, settings)))


def cmd_keys_create(args: argparse.Namespace) -> int:
    account, key = with_manager(args, lambda m: m.create_account(args.threads, usd_to_micros(args.balance),
                                                                 args.sandbox))
    print(f"created account {account.id} ({'sandbox' if account.sandbox else 'live'}, "
          f"threads={account.threads}, balance={micros_to_usd(account.balance)} USD)", file=sys.stderr)
    print("the key is shown only now; capgate stores only its hash", file=sys.stderr)
    print(key)
    return 0


def cmd_keys_list(args: argparse.Namespace) -> int:
    accounts = with_manager(args, lambda m: m.list_accounts())
    for account in accounts:
        print(_describe(account))
    if not accounts:
        print("no accounts yet: capgate keys create", file=sys.stderr)
    return 0


def cmd_keys_topup(args: argparse.Namespace) -> int:
    async def run(m: Manager) -> Account:
        account = await m.find_account(args.account)
        return await m.topup(account.id, usd_to_micros(args.amount), args.note)

    print(_describe(with_manager(args, run)))
    return 0


def cmd_keys_disable(args: argparse.Namespace) -> int:
    async def run(m: Manager) -> Account:
        account = await m.find_account(args.account)
        return await m.update_account(account.id, disabled=not args.enable)

    print(_describe(with_manager(args, run)))
    return 0


def cmd_keys_threads(args: argparse.Namespace) -> int:
    async def run(m: Manager) -> Account:
        account = await m.find_account(args.account)
        return await m.update_account(account.id, threads=args.threads)

    print(_describe(with_manager(args, run)))
    return 0


def _account_settings(args: argparse.Namespace) -> dict[str, object]:
    """Per-account settings from ``keys set`` flags; ``off`` removes one (stored as null)."""
    changes: dict[str, object] = {}
    if args.human_threshold is not None:
        if args.human_threshold == "off":
            changes["human_threshold"] = None
        else:
            try:
                value = float(args.human_threshold)
            except ValueError:
                raise CliError(f"--human-threshold: 0 to 1, or off; got {args.human_threshold!r}") from None
            if not 0 <= value <= 1:
                raise CliError("--human-threshold: a confidence from 0 to 1, or off")
            changes["human_threshold"] = value
    if args.keep_labels is not None:
        if args.keep_labels not in ("on", "off"):
            raise CliError("--keep-labels: on or off")
        changes["keep_labels"] = args.keep_labels == "on"
    if args.profile is not None:
        from capgate.solvers.ocr.profile import valid_profile_name

        if args.profile != "off" and not valid_profile_name(args.profile):
            raise CliError(f"--profile: not a profile name: {args.profile!r}")
        changes["profile"] = None if args.profile == "off" else args.profile
    if not changes:
        raise CliError("nothing to set: --human-threshold, --keep-labels or --profile")
    return changes


def cmd_keys_set(args: argparse.Namespace) -> int:
    changes = _account_settings(args)

    async def run(m: Manager) -> Account:
        # keys set --profile names a profile the OCR can load (trained, beside the database), not a typo
        # that would quietly leave the account on the generic model.
        if isinstance(changes.get("profile"), str):
            await m.check_profile(str(changes["profile"]))
        account = await m.find_account(args.account)
        return await m.update_account(account.id, settings=changes)

    account = with_manager(args, run)
    print(_describe(account))
    shown = {name: value for name, value in account.settings.items() if value is not None}
    print("settings: " + (", ".join(f"{k}={v}" for k, v in sorted(shown.items())) or "none"))
    return 0


# ------------------------------------------------------------------------------------------ worker tokens


def _methods(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in BY_NAME]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown method(s) {', '.join(unknown)}; known: {', '.join(BY_NAME)}")
    return names


def _describe_worker(worker: WorkerToken) -> str:
    methods = ",".join(worker.methods) or "any"
    kind = "human" if worker.human else "program"
    state = "disabled" if worker.disabled else "active"
    return f"{worker.id:>5}  {worker.token_prefix}…  {worker.name:<20} {kind:<8} methods={methods}  {state}"


def cmd_workers_create(args: argparse.Namespace) -> int:
    worker, token = with_manager(args, lambda m: m.create_worker(args.name, args.methods, args.human))
    print(f"created worker {worker.id} ({worker.name}); the token is shown only now", file=sys.stderr)
    print(token)
    return 0


def cmd_workers_list(args: argparse.Namespace) -> int:
    for worker in with_manager(args, lambda m: m.list_workers()):
        print(_describe_worker(worker))
    return 0


def cmd_workers_disable(args: argparse.Namespace) -> int:
    """Disable or enable a token: every capgate process reads the token on each worker API call, so
    a disabled one is refused (401) from its next call, and its methods stop counting as served."""
    async def run(m: Manager) -> WorkerToken:
        worker = await m.find_worker(args.worker)
        changed = await m.set_worker_disabled(worker.id, args.disable)
        if changed is None:
            raise CliError(f"worker token {worker.id} is gone")
        return changed

    print(_describe_worker(with_manager(args, run)))
    return 0


def cmd_workers_delete(args: argparse.Namespace) -> int:
    async def run(m: Manager) -> WorkerToken:
        worker = await m.find_worker(args.worker)
        if not await m.delete_worker(worker.id):
            raise CliError(f"worker token {worker.id} is gone")
        return worker

    worker = with_manager(args, run)
    print(f"deleted worker token {worker.id} ({worker.name}); a task it held goes back to the queue when "
          "its lease runs out")
    return 0


# ------------------------------------------------------------------------------------------ bans


def cmd_bans_list(args: argparse.Namespace) -> int:
    bans = with_manager(args, lambda m: m.bans())
    now = time.time()
    for address, until in bans:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(until))
        print(f"{address:<39}  until {stamp} UTC  ({max(0, round(until - now))} s left)")
    if not bans:
        print("no address is banned", file=sys.stderr)
    return 0


def cmd_bans_lift(args: argparse.Namespace) -> int:
    address = args.address.strip()
    with contextlib.suppress(ValueError):
        address = str(ipaddress.ip_address(address))  # as the server records it
    if not with_manager(args, lambda m: m.lift_ban(address)):
        raise CliError(f"{address} is not banned (see 'capgate bans list')")
    print(f"lifted the ban on {address}")
    return 0


# ------------------------------------------------------------------------------------------ admin tokens


def _describe_admin(token: AdminToken) -> str:
    state = "disabled" if token.disabled else "active"
    made = time.strftime("%Y-%m-%d %H:%M", time.gmtime(token.created_at))
    return f"{token.id:>5}  {token.token_prefix}…  {token.name:<20} created {made} UTC  {state}"


def cmd_admin_tokens_create(args: argparse.Namespace) -> int:
    from capgate.keys import new_admin_token

    name = args.name.strip()
    if not name or len(name) > 100:
        raise CliError("an admin token's name: 1 to 100 characters")
    token = new_admin_token()
    made = with_store(settings_from(args), lambda store: store.create_admin_token(
        name, hash_secret(token), token[:TOKEN_SHOWN], time.time()))
    print(f"created admin token {made.id} ({made.name}) for the admin API and the dashboard (/admin); "
          "the token is shown only now", file=sys.stderr)
    print(token)
    return 0


def cmd_admin_tokens_list(args: argparse.Namespace) -> int:
    tokens = with_store(settings_from(args), lambda store: store.list_admin_tokens())
    for token in tokens:
        print(_describe_admin(token))
    if not tokens:
        print("no admin tokens yet: capgate admin-tokens create NAME", file=sys.stderr)
    return 0


def cmd_admin_tokens_disable(args: argparse.Namespace) -> int:
    """Disable (or enable) an admin token: refused from its next call, its dashboard sessions ended."""
    async def run(store: Store) -> AdminToken:
        tokens = await store.list_admin_tokens()
        found = [t for t in tokens if (args.token.isdigit() and t.id == int(args.token)) or t.name == args.token]
        if args.token.startswith("cga_"):
            match = await store.admin_token_by_hash(hash_secret(args.token))
            found = [match] if match is not None else []
        if len(found) != 1:
            which = "no admin token" if not found else f"{len(found)} admin tokens are named"
            raise CliError(f"{which} {args.token!r} (see 'capgate admin-tokens list'; give the id)")
        changed = await store.set_admin_token_disabled(found[0].id, not args.enable)
        if changed is None:
            raise CliError(f"admin token {found[0].id} is gone")
        return changed

    print(_describe_admin(with_store(settings_from(args), run)))
    return 0


def add_remote_options(parser: argparse.ArgumentParser) -> None:
    """``--db`` for this machine's database, or ``--server`` and ``--admin-token`` for a remote one."""
    add_db_option(parser)
    parser.add_argument("--server", default=None, help="manage a remote capgate through its admin API instead of a "
                        "database (default: $CAPGATE_SERVER when an admin token is set)")
    parser.add_argument("--admin-token", dest="admin_token", default=None,
                        help="the remote server's admin token (default $CAPGATE_ADMIN_TOKEN; made there with "
                             "capgate admin-tokens create NAME)")


# ------------------------------------------------------------------------------------------ parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="capgate", description="capgate: a self-hosted CaptchaAI / 2captcha-compatible captcha service. "
        "Serve it, manage its API keys and worker tokens, solve captchas with it, train its OCR.")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the service")
    add_db_option(serve)
    serve.add_argument("--host", default=None, help="address to listen on (default 127.0.0.1; 0.0.0.0 for every "
                                                    "interface)")
    serve.add_argument("--port", type=int, default=None, help="port to listen on (default 8000)")
    serve.add_argument("--ssl-certfile", dest="ssl_certfile", default=None, metavar="FILE",
                       help="serve HTTPS with this certificate (PEM); without it the service speaks plain HTTP")
    serve.add_argument("--ssl-keyfile", dest="ssl_keyfile", default=None, metavar="FILE",
                       help="the certificate's private key (PEM), if not in the certificate file")
    serve.add_argument("--sandbox-delay", dest="sandbox_delay", type=float, default=None, metavar="SECONDS",
                       help="seconds before the sandbox worker answers a sandbox key's task (default 1)")
    serve.add_argument("--prices", default=None, help="USD per solved task by method, e.g. "
                       "normal=0.001,turnstile=0.002 (default: 0 for every method)")
    serve.add_argument("--no-ocr", dest="ocr", action="store_const", const=False, default=None,
                       help="don't run the built-in OCR worker in this process")
    serve.add_argument("--trusted-proxies", dest="trusted_proxies", default=None, metavar="NETWORKS",
                       help="reverse proxies whose X-Forwarded-For names the client, e.g. 127.0.0.1,10.0.0.0/8 "
                            "(default: none; the header is ignored)")
    serve.add_argument("--ban-exempt", dest="ban_exempt", default=None, metavar="NETWORKS",
                       help="addresses never banned for wrong keys (default: 127.0.0.0/8,::1; '' for none)")
    serve.add_argument("--processes", type=whole_number(1, 256), default=None, metavar="N",
                       help="worker processes serving the port (default 1; see docs/deploy.md)")
    serve.add_argument("--log-level", dest="log_level", default=os.environ.get("CAPGATE_LOG_LEVEL", "info"),
                       help="critical, error, warning, info (the default, or $CAPGATE_LOG_LEVEL) or debug")
    serve.add_argument("--log-format", dest="log_format", choices=("text", "json"),
                       default=os.environ.get("CAPGATE_LOG_FORMAT", "text"),
                       help="capgate's log lines, one per request among them: text (the default, or "
                            "$CAPGATE_LOG_FORMAT) or json, one object per line")
    serve.set_defaults(func=cmd_serve)

    keys = sub.add_parser("keys", help="API keys (accounts)").add_subparsers(dest="keys_command", required=True)
    create = keys.add_parser("create", help="create an account; prints its key alone on the last line")
    add_remote_options(create)
    create.add_argument("--sandbox", action="store_true", help="answered by the built-in sandbox worker")
    create.add_argument("--threads", type=whole_number(1, MAX_THREADS), default=5)
    create.add_argument("--balance", type=_usd, default=Decimal(0), help="initial balance in USD")
    create.set_defaults(func=cmd_keys_create)
    listing = keys.add_parser("list", help="list accounts")
    add_remote_options(listing)
    listing.set_defaults(func=cmd_keys_list)
    topup = keys.add_parser("topup", help="add USD to an account's balance")
    add_remote_options(topup)
    topup.add_argument("account", help="account id, key, or key prefix")
    topup.add_argument("amount", type=_usd)
    topup.add_argument("--note", default="topup")
    topup.set_defaults(func=cmd_keys_topup)
    disable = keys.add_parser("disable", help="disable (or --enable) an account")
    add_remote_options(disable)
    disable.add_argument("account")
    disable.add_argument("--enable", action="store_true")
    disable.set_defaults(func=cmd_keys_disable)
    threads = keys.add_parser("threads", help="set an account's thread cap")
    add_remote_options(threads)
    threads.add_argument("account")
    threads.add_argument("threads", type=whole_number(1, MAX_THREADS))
    threads.set_defaults(func=cmd_keys_threads)
    setting = keys.add_parser("set", help="per-account settings")
    add_remote_options(setting)
    setting.add_argument("account")
    setting.add_argument("--human-threshold", dest="human_threshold", default=None,
                         help="OCR answers below this confidence go to human workers (0-1, or off)")
    setting.add_argument("--keep-labels", dest="keep_labels", default=None,
                         help="on: keep confirmed and human answers as training labels")
    setting.add_argument("--profile", default=None, help="default OCR profile for this account: a trained one "
                         "(capgate train), or off")
    setting.set_defaults(func=cmd_keys_set)

    workers = sub.add_parser("workers", help="worker tokens for the worker API").add_subparsers(
        dest="workers_command", required=True)
    create = workers.add_parser("create", help="create a worker token; prints it alone on the last line")
    add_remote_options(create)
    create.add_argument("name")
    create.add_argument("--methods", type=_methods, default=[], help="comma-separated; default: any method")
    create.add_argument("--human", action="store_true", help="a person (human-solver page): also gets "
                                                             "low-confidence OCR tasks")
    create.set_defaults(func=cmd_workers_create)
    listing = workers.add_parser("list", help="list worker tokens")
    add_remote_options(listing)
    listing.set_defaults(func=cmd_workers_list)
    for name, disabling, text in (("disable", True, "refuse a token from its next call, on every process"),
                                  ("enable", False, "accept a disabled token again")):
        toggle = workers.add_parser(name, help=text)
        add_remote_options(toggle)
        toggle.add_argument("worker", help="the token's id or name (capgate workers list), or the token")
        toggle.set_defaults(func=cmd_workers_disable, disable=disabling)
    delete = workers.add_parser("delete", help="delete a worker token")
    add_remote_options(delete)
    delete.add_argument("worker", help="the token's id or name (capgate workers list), or the token")
    delete.set_defaults(func=cmd_workers_delete)

    db = sub.add_parser("db", help="the database's schema").add_subparsers(dest="db_command", required=True)
    upgrade = db.add_parser("upgrade", help="create or upgrade the schema (run it before starting a new release)")
    add_db_option(upgrade)
    upgrade.set_defaults(func=cmd_db_upgrade)
    status = db.add_parser("status", help="the schema's version; exit 1 if 'capgate db upgrade' has work to do")
    add_db_option(status)
    status.set_defaults(func=cmd_db_status)

    bans = sub.add_parser("bans", help="addresses banned for wrong keys").add_subparsers(
        dest="bans_command", required=True)
    listing = bans.add_parser("list", help="list banned addresses and when each ban ends")
    add_remote_options(listing)
    listing.set_defaults(func=cmd_bans_list)
    lift = bans.add_parser("lift", help="lift an address's ban now")
    add_remote_options(lift)
    lift.add_argument("address")
    lift.set_defaults(func=cmd_bans_lift)

    admin = sub.add_parser("admin-tokens", help="admin tokens for the admin API and the dashboard (/admin)") \
        .add_subparsers(dest="admin_command", required=True)
    create = admin.add_parser("create", help="create an admin token; prints it alone on the last line")
    add_db_option(create)
    create.add_argument("name", help="who or what uses it, e.g. alice or grafana")
    create.set_defaults(func=cmd_admin_tokens_create)
    listing = admin.add_parser("list", help="list admin tokens")
    add_db_option(listing)
    listing.set_defaults(func=cmd_admin_tokens_list)
    disable = admin.add_parser("disable", help="refuse an admin token (or --enable it again); ends its sessions")
    add_db_option(disable)
    disable.add_argument("token", help="the token's id or name (capgate admin-tokens list), or the token")
    disable.add_argument("--enable", action="store_true")
    disable.set_defaults(func=cmd_admin_tokens_disable)

    import importlib

    for module_name in _EXTRA_REGISTRARS:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name is None or not module_name.startswith(exc.name):
                raise
            continue
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    if hasattr(signal, "SIGUSR1"):
        # `kill -USR1 PID` prints every thread's stack to stderr: how a hung process tells where it hangs.
        with contextlib.suppress(AttributeError, ValueError, io.UnsupportedOperation):  # stderr has no fd
            faulthandler.register(signal.SIGUSR1, all_threads=True)
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        result: int = args.func(args)
        return result
    except CliError as exc:
        print(f"capgate: {exc}", file=sys.stderr)
        return 2
    except (sqlite3.Error, OSError) as exc:
        # The database this command was given: --db where it takes one, else CAPGATE_DB or the default.
        db = getattr(args, "db", None) or database_url()
        print(f"capgate: the database can't be used ({db}): {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
