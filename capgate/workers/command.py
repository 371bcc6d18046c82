"""``capgate workers create|list`` (worker tokens) and ``capgate worker`` (run a worker elsewhere)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import signal
import sys
from typing import Any

from capgate.protocol.methods import BY_NAME
from capgate.server.keys import hash_secret
from capgate.server.workers import TOKEN_PREFIX
from capgate.store.models import WorkerToken

TOKEN_SHOWN = 8


def _methods(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in BY_NAME]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown method(s) {', '.join(unknown)}; known: {', '.join(BY_NAME)}")
    return names


def _describe(worker: WorkerToken) -> str:
    methods = ",".join(worker.methods) or "any"
    kind = "human" if worker.human else "program"
    state = "disabled" if worker.disabled else "active"
    return f"{worker.id:>5}  {worker.token_prefix}…  {worker.name:<20} {kind:<8} methods={methods}  {state}"


def cmd_create(args: argparse.Namespace) -> int:
    from capgate.cli import settings_from, with_store

    token = TOKEN_PREFIX + secrets.token_hex(20)
    worker = with_store(settings_from(args), lambda store: store.create_worker(
        args.name, hash_secret(token), token[:TOKEN_SHOWN], args.methods, args.human))
    print(f"created worker {worker.id} ({worker.name}); the token is shown only now", file=sys.stderr)
    print(token)
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from capgate.cli import settings_from, with_store

    for worker in with_store(settings_from(args), lambda store: store.list_workers()):
        print(_describe(worker))
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    from capgate.cli import CliError

    if not args.ocr:
        raise CliError("say which worker to run: --ocr")
    if not args.server or not args.token:
        raise CliError("--server URL and --token T (or CAPGATE_SERVER / CAPGATE_WORKER_TOKEN) are required")
    with contextlib.suppress(asyncio.CancelledError):  # SIGTERM: the pool was closed on the way out
        asyncio.run(_run_remote_ocr(args.server, args.token, args.processes or os.cpu_count() or 1))
    return 0


async def _run_remote_ocr(server: str, token: str, processes: int) -> None:
    from capgate.paths import profiles_dir
    from capgate.solvers.ocr.pool import OcrPool
    from capgate.workers.ocr import OcrWorker
    from capgate.workers.source import RemoteSource

    folder = profiles_dir()
    pool = OcrPool(processes, folder)
    source = RemoteSource(server, token)
    main = asyncio.current_task()
    if main is not None:
        # systemd, docker stop and kill send SIGTERM: stop like Ctrl-C so the pool's processes end too.
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main.cancel)
    try:
        await OcrWorker(source, pool, folder, concurrency=processes).run()
    finally:
        await source.close()
        pool.close()


def register(sub: Any) -> None:
    from capgate.cli import add_db_option

    workers = sub.add_parser("workers", help="worker tokens for the worker API").add_subparsers(
        dest="workers_command", required=True)
    create = workers.add_parser("create", help="create a worker token; prints it alone on the last line")
    add_db_option(create)
    create.add_argument("name")
    create.add_argument("--methods", type=_methods, default=[], help="comma-separated; default: any method")
    create.add_argument("--human", action="store_true", help="a person (human-solver page): also gets "
                                                             "low-confidence OCR tasks")
    create.set_defaults(func=cmd_create)
    listing = workers.add_parser("list", help="list worker tokens")
    add_db_option(listing)
    listing.set_defaults(func=cmd_list)

    worker = sub.add_parser("worker", help="run a worker against a capgate server")
    worker.add_argument("--ocr", action="store_true", help="the OCR worker (image captchas)")
    worker.add_argument("--server", default=os.environ.get("CAPGATE_SERVER", ""))
    worker.add_argument("--token", default=os.environ.get("CAPGATE_WORKER_TOKEN", ""))
    worker.add_argument("--processes", type=int, default=0, help="OCR processes (default: one per core)")
    worker.set_defaults(func=cmd_worker)
