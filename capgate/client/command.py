"""``capgate solve`` and ``capgate balance``: the client from the command line.

``--server`` and ``--key`` default to ``$CAPGATE_SERVER`` and ``$CAPGATE_KEY``. ``solve`` writes one row
per file to stdout as files finish (CSV with a header, or JSON lines) and a progress bar to stderr;
a file that cannot be read or solved is a row with an error, not a failure of the run. Exit status:
0 all solved, 1 some rows have errors, 2 the run could not start or was refused (one line on stderr).
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from capgate.cliargs import positive_seconds, whole_number
from capgate.client.aio import AsyncClient
from capgate.client.errors import AuthError, CapgateError, NetworkError

FIELDS = ("file", "task_id", "answer", "error")


class _Fatal(Exception):
    pass


def _connection(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--server", default=None,
                        help="base URL of the service (in.php and res.php under it); default $CAPGATE_SERVER")
    parser.add_argument("--key", default=None, help="API key; default $CAPGATE_KEY")


def register(subparsers: Any) -> None:
    solve = subparsers.add_parser("solve", help="solve image captchas with any compatible service",
                                  description=__doc__.splitlines()[0] if __doc__ else None)
    solve.add_argument("files", nargs="+", metavar="FILE", help="captcha images")
    _connection(solve)
    solve.add_argument("--concurrency", type=whole_number(1, 10_000), default=10, help="solves at once (default 10)")
    solve.add_argument("--numeric", type=int, choices=range(5), default=None,
                       help="0 any, 1 digits only, 2 letters only, 3 digits and letters, 4 no digits")
    solve.add_argument("--min-len", dest="min_len", type=whole_number(1, 20), default=None)
    solve.add_argument("--max-len", dest="max_len", type=whole_number(1, 20), default=None)
    solve.add_argument("--case-sensitive", dest="case_sensitive", action="store_true")
    solve.add_argument("--format", choices=("csv", "jsonl"), default="csv")
    solve.add_argument("--timeout", type=positive_seconds, default=None,
                       help="seconds per captcha, retries included (default: the service's deadline + 30)")
    solve.set_defaults(func=cmd_solve)

    balance = subparsers.add_parser("balance", help="the account's balance on a compatible service")
    _connection(balance)
    balance.set_defaults(func=cmd_balance)


def _target(args: argparse.Namespace) -> tuple[str, str]:
    server = args.server or os.environ.get("CAPGATE_SERVER", "")
    key = args.key or os.environ.get("CAPGATE_KEY", "")
    if not server:
        raise _Fatal("no server: give --server or set CAPGATE_SERVER")
    if not key:
        raise _Fatal("no key: give --key or set CAPGATE_KEY")
    return server, key


def _client(server: str, key: str, timeout: float | None = None,
            concurrency: int = 10) -> AsyncClient:
    try:
        # Few network retries: at a terminal, an unreachable server should say so within seconds.
        return AsyncClient(server, key, timeout=timeout, network_retries=2,
                           max_connections=max(4, concurrency + 2))
    except ValueError as exc:
        raise _Fatal(str(exc)) from None


def _fail(message: str) -> int:
    print(f"capgate: {message}", file=sys.stderr)
    return 2


def cmd_balance(args: argparse.Namespace) -> int:
    async def run() -> str:
        server, key = _target(args)
        async with _client(server, key) as client:
            return str(await client.balance())

    try:
        print(asyncio.run(run()))
    except (_Fatal, CapgateError) as exc:
        return _fail(str(exc))
    return 0


class _Rows:
    def __init__(self, out: TextIO, fmt: str) -> None:
        self.out = out
        self.fmt = fmt
        self.errors = 0
        self._csv = csv.DictWriter(out, FIELDS, lineterminator="\n") if fmt == "csv" else None
        self._started = False

    def write(self, row: dict[str, str | None]) -> None:
        if row["error"]:
            self.errors += 1
        if self._csv is not None:
            if not self._started:
                self._csv.writeheader()
                self._started = True
            self._csv.writerow({name: row[name] or "" for name in FIELDS})
        else:
            self.out.write(json.dumps(row, ensure_ascii=False) + "\n")
        self.out.flush()


async def _solve_all(args: argparse.Namespace, files: Sequence[str], rows: _Rows) -> None:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    server, key = _target(args)
    options: dict[str, Any] = {"numeric": args.numeric, "min_len": args.min_len, "max_len": args.max_len,
                               "case_sensitive": True if args.case_sensitive else None}
    async with _client(server, key, args.timeout, args.concurrency) as client:
        try:
            # One cheap call first: a wrong key or an unreachable server is one line, not N rows.
            await client.balance()
        except (AuthError, NetworkError) as exc:
            raise _Fatal(str(exc)) from None
        except CapgateError:
            pass  # a service without getbalance can still solve
        gate = asyncio.Semaphore(args.concurrency)
        progress = Progress(TextColumn("solving"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                            console=Console(stderr=True), transient=True)

        async def one(name: str, task: Any) -> None:
            row: dict[str, str | None] = {"file": name, "task_id": None, "answer": None, "error": None}
            async with gate:
                try:
                    solution = await client.normal(Path(name), **options)
                    row.update(task_id=solution.task_id, answer=solution.value)
                except AuthError as exc:
                    raise _Fatal(str(exc)) from None
                except CapgateError as exc:
                    row.update(task_id=exc.task_id, error=str(exc))
            rows.write(row)
            progress.advance(task)

        with progress:
            task = progress.add_task("solve", total=len(files))
            jobs = [asyncio.create_task(one(name, task)) for name in files]
            try:
                await asyncio.gather(*jobs)
            finally:
                for job in jobs:
                    job.cancel()
                await asyncio.gather(*jobs, return_exceptions=True)


def cmd_solve(args: argparse.Namespace) -> int:
    rows = _Rows(sys.stdout, args.format)
    try:
        asyncio.run(_solve_all(args, args.files, rows))
    except (_Fatal, CapgateError) as exc:
        return _fail(str(exc))
    return 1 if rows.errors else 0
