"""``capgate solve`` and ``capgate balance``: the client from the command line.

``--server`` and ``--key`` default to ``$CAPGATE_SERVER`` and ``$CAPGATE_KEY``. ``solve`` writes one row
per file to stdout as files finish (CSV with a header, or JSON lines) and, when stderr is a terminal,
a progress bar there: it stays the terminal's last line, rows are printed above it, and it is erased at
the end (into a pipe or a file, nothing of it is written); a file that cannot be read or solved is a
row with an error, not a failure of the run. Exit status:
0 all solved, 1 some rows have errors, 2 the run could not start or was refused (one line on stderr).
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from capgate.cliargs import positive_seconds, whole_number
from capgate.client._engine import APIS
from capgate.client.aio import AsyncClient
from capgate.client.errors import AuthError, CapgateError, NetworkError

FIELDS = ("file", "task_id", "answer", "error")


class _Fatal(Exception):
    pass


def _connection(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--server", default=None,
                        help="base URL of the service (in.php and res.php under it); default $CAPGATE_SERVER. "
                             "A bare host means http:// for localhost, https:// otherwise")
    parser.add_argument("--key", default=None, help="API key; default $CAPGATE_KEY")
    parser.add_argument("--api", choices=APIS, default="in.php",
                        help="in.php: in.php and res.php (default); tasks: 2captcha's JSON task API (createTask, ...)")


def register(subparsers: Any) -> None:
    solve = subparsers.add_parser("solve", help="solve image captchas with any compatible service",
                                  description=__doc__.splitlines()[0].replace("``", "") if __doc__ else None)
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
            concurrency: int = 10, api: str = "in.php") -> AsyncClient:
    try:
        # Few network retries: at a terminal, an unreachable server should say so within seconds.
        return AsyncClient(server, key, timeout=timeout, network_retries=2,
                           max_connections=max(4, concurrency + 2), api=api)
    except ValueError as exc:
        raise _Fatal(str(exc)) from None


def _fail(message: str) -> int:
    print(f"capgate: {message}", file=sys.stderr)
    return 2


def cmd_balance(args: argparse.Namespace) -> int:
    async def run() -> str:
        server, key = _target(args)
        async with _client(server, key, api=args.api) as client:
            return str(await client.balance())

    try:
        print(asyncio.run(run()))
    except (_Fatal, CapgateError) as exc:
        return _fail(str(exc))
    return 0


class _Bar:
    """``solving ━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━ 3/8 0:00:02`` on a terminal's last line.

    Always one line (cut to the terminal's width), drawn after ``\r`` and an erase-line, so erasing it
    before a row is printed leaves nothing behind, whether the rows go to the same terminal or not."""

    WIDTH = 30
    TICK_S = 0.5

    def __init__(self, total: int, stream: TextIO) -> None:
        self.total = total
        self.done = 0
        self.stream = stream
        self.started = time.monotonic()

    @staticmethod
    def wanted(stream: TextIO) -> bool:
        try:
            return stream.isatty()
        except (AttributeError, ValueError):  # a closed or replaced stream
            return False

    def _columns(self) -> int:
        try:
            columns = os.get_terminal_size(self.stream.fileno()).columns
        except (AttributeError, ValueError, OSError):
            columns = 0
        return columns if columns > 0 else 80

    def _text(self) -> str:
        filled = self.WIDTH * self.done // max(1, self.total)
        elapsed = int(time.monotonic() - self.started)
        clock = f"{elapsed // 3600}:{elapsed // 60 % 60:02d}:{elapsed % 60:02d}"
        bar = "━" * filled + "\x1b[2m" + "━" * (self.WIDTH - filled) + "\x1b[0m"
        text = f"solving {bar} {self.done}/{self.total} {clock}"
        plain = len(text) - len("\x1b[2m\x1b[0m")
        if plain >= self._columns():  # a narrow terminal: the count alone, never a wrapped line
            text = f"solving {self.done}/{self.total}"[: self._columns() - 1]
        return text

    def draw(self) -> None:
        self.stream.write("\r\x1b[2K" + self._text())
        self.stream.flush()

    def clear(self) -> None:
        self.stream.write("\r\x1b[2K")
        self.stream.flush()

    async def tick(self) -> None:
        """Redraw for the clock until cancelled."""
        while True:
            self.draw()
            await asyncio.sleep(self.TICK_S)


class _Rows:
    def __init__(self, out: TextIO, fmt: str) -> None:
        self.out = out
        self.fmt = fmt
        self.errors = 0
        self._csv = csv.DictWriter(out, FIELDS, lineterminator="\n") if fmt == "csv" else None
        self._started = False
        self.bar: _Bar | None = None

    def write(self, row: dict[str, str | None]) -> None:
        if self.bar is not None:
            self.bar.clear()  # the row goes where the bar was, the bar below it
        self._write(row)
        if self.bar is not None:
            self.bar.done += 1
            self.bar.draw()

    def _write(self, row: dict[str, str | None]) -> None:
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
    server, key = _target(args)
    options: dict[str, Any] = {"numeric": args.numeric, "min_len": args.min_len, "max_len": args.max_len,
                               "case_sensitive": True if args.case_sensitive else None}
    async with _client(server, key, args.timeout, args.concurrency, args.api) as client:
        try:
            # One cheap call first: a wrong key or an unreachable server is one line, not N rows.
            await client.balance()
        except (AuthError, NetworkError) as exc:
            raise _Fatal(str(exc)) from None
        except CapgateError:
            pass  # a service without getbalance can still solve
        gate = asyncio.Semaphore(args.concurrency)

        async def one(name: str) -> None:
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

        rows.bar = _Bar(len(files), sys.stderr) if _Bar.wanted(sys.stderr) else None
        ticking = asyncio.create_task(rows.bar.tick()) if rows.bar is not None else None
        jobs = [asyncio.create_task(one(name)) for name in files]
        try:
            await asyncio.gather(*jobs)
        finally:
            for job in [*jobs, *([ticking] if ticking is not None else [])]:
                job.cancel()
            await asyncio.gather(*jobs, *([ticking] if ticking is not None else []), return_exceptions=True)
            if rows.bar is not None:
                rows.bar.clear()
                rows.bar = None


def cmd_solve(args: argparse.Namespace) -> int:
    rows = _Rows(sys.stdout, args.format)
    try:
        asyncio.run(_solve_all(args, args.files, rows))
    except (_Fatal, CapgateError) as exc:
        return _fail(str(exc))
    return 1 if rows.errors else 0
