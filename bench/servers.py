"""Which HTTP server serves capgate best (issue 11): capgate's own app on each candidate, side by side.

Candidates, each one process serving capgate's app (built by :func:`bench._app.app`, settings from the
same ``CAPGATE_*`` variables), on a fresh SQLite database per round:

* ``uvicorn-httptools`` uvicorn with uvloop and httptools (what ``capgate serve`` ran before);
* ``uvicorn-h11``       uvicorn with its pure-Python parser;
* ``granian``           Granian (Rust, hyper) with its ASGI interface, uvloop.

and, for scale, the bare Starlette constant on uvicorn and on Granian. Scenarios as in ``bench server``:
a pending poll and a base64 submit settled at once by the sandbox. Rounds are interleaved and medians
reported. Run: ``python -m bench servers [--runs 3] [--duration 5]``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from bench._server import REPO, Process
from bench.server import BARE, SERVER_ENV, Options, _measure, _png_corpus, _prepare, _wrk_version
from capgate.testing import free_port, run_process

RESULTS = REPO / "bench" / "results"
GRANIAN = [sys.executable, "-m", "granian", "--interface", "asgi", "--workers", "1", "--no-ws",
           "--log-level", "warning", "--http", "1"]
UVICORN = [sys.executable, "-m", "uvicorn", "--workers", "1", "--log-level", "warning", "--no-access-log"]
SERVERS = {
    "uvicorn-httptools": [*UVICORN, "--http", "httptools", "--factory", "bench._app:app"],
    "uvicorn-h11": [*UVICORN, "--http", "h11", "--factory", "bench._app:app"],
    "granian": [*GRANIAN, "--factory", "bench._app:app"],
}
BARES = {
    "bare on uvicorn": [*UVICORN, "--factory", "bench._bare:create_app"],
    "bare on granian": [*GRANIAN, "--factory", "bench._bare:create_app"],
}


@contextlib.contextmanager
def _start(command: list[str], workdir: Path, name: str, ready: str) -> Iterator[Process]:
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    db = workdir / f"{name}.db"
    env = {**os.environ, **SERVER_ENV, "CAPGATE_DB": str(db)}
    server = Process(f"http://127.0.0.1:{port}", env, workdir / f"{name}.log", db, cwd=REPO)
    with run_process([*command, "--port", str(port)], server, ready) as running:
        yield running


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench servers", description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    opts = Options(args.duration, args.connections, 1, 1.0, "wrk")
    images = _png_corpus()
    figures: dict[tuple[str, str], list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="capgate-servers-") as folder:
        workdir = Path(folder)
        for run in range(args.runs):
            for name, command in SERVERS.items():
                with _start(command, workdir / f"{run}-{name}", name, "healthz") as server:
                    scenarios = _prepare(server, images, workdir)
                    for scenario in ("poll_pending", "submit"):
                        load = _measure(server, scenarios[scenario], opts, workdir, run)
                        figures.setdefault((name, scenario), []).append(load.rps)
                        print(f"  run {run + 1}  {name:<18} {scenario:<13} {load.rps:8.0f} req/s  "
                              f"errors {load.errors + load.bad}", flush=True)
            for name, command in BARES.items():
                with _start(command, workdir / f"{run}-{name}", name.replace(" ", "-"), "") as server:
                    load = _measure(server, BARE, opts, workdir, run)
                    figures.setdefault((name, "GET /"), []).append(load.rps)
                    print(f"  run {run + 1}  {name:<18} {'GET /':<13} {load.rps:8.0f} req/s", flush=True)
    print(f"\nreq/s, medians of {args.runs} interleaved rounds ({_wrk_version()}, {args.connections} connections, "
          f"{args.duration:g} s each, one process per server)\n")
    print("| server | scenario | req/s | rounds |")
    print("|---|---|---:|---|")
    for (name, scenario), values in figures.items():
        print(f"| {name} | {scenario} | {statistics.median(values):,.0f} | "
              f"{', '.join(f'{v:,.0f}' for v in values)} |")
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"servers-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps({"command": "python -m bench servers " + " ".join(argv or sys.argv[1:]),
                                "figures": {f"{n} / {s}": v for (n, s), v in figures.items()}}, indent=2) + "\n")
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
