"""``capgate worker``: run a worker on another machine, against a capgate server's worker API.

Worker tokens (``capgate workers create|list``) are made where the database is, by ``capgate.cli``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from typing import Any

from capgate.cliargs import CliError

# A stop's budget (2 s in all, pool included): the work's cancel, then the connection's close. A task
# that outlives its cancel is left behind (os._exit); the pool ends its processes within about 1 s.
STOP_GRACE_S = 0.5


def cmd_worker(args: argparse.Namespace) -> int:
    if not args.ocr:
        raise CliError("say which worker to run: --ocr")
    if not args.server or not args.token:
        raise CliError("--server URL and --token T (or CAPGATE_SERVER / CAPGATE_WORKER_TOKEN) are required")
    from capgate.protocol.wire import base_url

    try:
        server = base_url(args.server)
    except ValueError as exc:
        raise CliError(f"--server: {exc}") from None
    asyncio.run(_run_remote_ocr(server, args.token, args.processes or os.cpu_count() or 1))
    return 0


async def _run_remote_ocr(server: str, token: str, processes: int) -> None:
    """Serve until Ctrl-C or SIGTERM (what systemd, docker stop and kill send), then close the pool
    and the connection, within 2 s whatever the tasks do, printing one line."""
    from capgate.paths import profiles_dir
    from capgate.solvers.ocr.pool import OcrPool
    from capgate.waiting import run_until, stop_notice
    from capgate.workers.ocr import OcrWorker
    from capgate.workers.source import RemoteSource

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal(signum: int) -> None:
        if not stop.is_set():
            stop_notice("capgate worker", signum)  # the one line a stop prints
            stop.set()

    # Before the pool starts: from then on a stop must close it, or its processes outlive this one.
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, on_signal, signum)
    folder = profiles_dir()
    pool = OcrPool(processes, folder)
    source = RemoteSource(server, token)
    work = asyncio.create_task(OcrWorker(source, pool, folder, concurrency=processes).run())
    try:
        stopped = await run_until(stop, work, STOP_GRACE_S)
    finally:
        # Neither closing step waits on a task that might not end.
        closing = asyncio.ensure_future(source.close())
        await asyncio.wait({closing}, timeout=STOP_GRACE_S)
        if closing.done() and not closing.cancelled() and closing.exception() is not None:
            print(f"capgate worker: closing the connection failed: {closing.exception()!r}", file=sys.stderr)
        pool.close()
    if not stopped:
        # asyncio.run would wait for that task for ever on its way out; the pool and the connection
        # are closed, so nothing is lost by leaving now.
        print(f"capgate worker: a task did not stop within {STOP_GRACE_S:g} s; leaving anyway",
              file=sys.stderr, flush=True)
        sys.stdout.flush()
        os._exit(0)
    error = work.exception() if not work.cancelled() else None
    if error is not None:
        raise error


def register(sub: Any) -> None:
    worker = sub.add_parser("worker", help="run a worker against a capgate server")
    worker.add_argument("--ocr", action="store_true", help="the OCR worker (image captchas)")
    worker.add_argument("--server", default=os.environ.get("CAPGATE_SERVER", ""),
                        help="the capgate server's URL (default $CAPGATE_SERVER); a bare host means http:// for "
                             "localhost, https:// otherwise")
    worker.add_argument("--token", default=os.environ.get("CAPGATE_WORKER_TOKEN", ""))
    worker.add_argument("--processes", type=int, default=0, help="OCR processes (default: one per core)")
    worker.set_defaults(func=cmd_worker)
