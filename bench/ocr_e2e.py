"""OCR end to end (issue 3): the time from in.php to the answer, against the engine and ddddocr alone.

    .venv/bin/python -m bench.ocr_e2e [--limit 200] [--sets kaggle_v2,lzu] [--processes N] [--runs R]
                                      [--concurrency C] [--no-ddddocr] [--no-throughput]
    .venv/bin/python -m bench.ocr_e2e --combine bench/results/ocr_e2e-A.json bench/results/ocr_e2e-B.json

One real ``capgate serve`` (its own SQLite file, a live key, the built-in OCR worker with one pool
process per core unless ``--processes``), and in the same process as this script:

* ``service``  a client that submits an image (``method=base64`` with the set's natural options, as
  :data:`bench.ocr.NATURAL`) and asks ``res.php?action=get&id=..&wait=30`` until the answer: the time
  from sending in.php to having the answer, one image at a time (keep-alive connection);
* ``engine``   capgate's :class:`~capgate.solvers.ocr.engine.Recognizer` called directly in this
  process on the same bytes with the same constraints (one onnxruntime thread, as in the pool);
* ``ddddocr``  ``ddddocr.DdddOcr(show_ad=False).classification(bytes)``: the floor (no constraints,
  onnxruntime's default threads).

The service and the engine are interleaved image by image (service then engine for image 1, then image
2, ...), so a change in the machine's background load hits both alike; ddddocr runs in a pass of its
own after them (onnxruntime's default thread pool, which ddddocr uses, spin-waits after each run and
would slow whatever ran next: interleaved on 2 cores it doubled the service's and the engine's p50).
"adds" is the service's p50 minus the engine's p50; "paired" is the median over images of
(service - engine) for the same image; "server CPU" is the CPU time of the server's main process (HTTP,
store, dispatch; not its OCR pool) per image over the sequential pass, which background load does not
inflate the way it inflates wall time.

With throughput on (the default), each set is then also pushed through the service by ``--concurrency``
clients at once (default: twice the pool), and straight through an :class:`OcrPool` of the same size
in this process, for images/s. Writes ``bench/results/ocr_e2e-<time>.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any

import httpx

from bench._server import Process, start_capgate
from bench.ocr import DATA_DIR, NATURAL, REPO, RESULTS_DIR, Labelled, describe, exact, load_set, through_pool
from capgate.solvers.ocr.constraints import OcrConstraints
from capgate.solvers.ocr.engine import DEFAULT_GENERIC, Recognizer
from capgate.solvers.ocr.pool import OcrPool

WAIT_S = 30
ANSWER_TIMEOUT_S = 120.0
WARM_IMAGES = 4


@dataclass(frozen=True)
class Row:
    set: str
    path: str  # service | engine | ddddocr
    constraints: str
    images: int
    exact_ci: float
    exact_cs: float
    p50_ms: float
    p90_ms: float
    images_per_s: float | None = None  # concurrent: the service with --concurrency clients, the pool


@dataclass(frozen=True)
class SetResult:
    set: str
    rows: list[Row]
    added_p50_ms: float  # service p50 - engine p50
    paired_added_p50_ms: float  # median over images of (service - engine)
    submit_p50_ms: float  # in.php alone (inside the service time)
    server_cpu_ms: float | None  # CPU of the server's main process per image (not its OCR pool)
    errors: list[str] = field(default_factory=list)  # answers that were not OK|...


def to_params(c: OcrConstraints) -> dict[str, str]:
    """in.php options saying what ``c`` says."""
    params = {"numeric": c.numeric, "min_len": c.min_len, "max_len": c.max_len, "language": c.language,
              "regsense": int(c.case_sensitive), "phrase": int(c.phrase), "calc": int(c.calc)}
    return {name: str(value) for name, value in params.items() if value}


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    return statistics.quantiles(ordered, n=100, method="inclusive")[round(q * 100) - 1]


def load_average() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, check=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return " ".join(f"{x:.2f}" for x in os.getloadavg())


# --------------------------------------------------------------------------------------------- the client


class Client:
    """A 2captcha-style client on one keep-alive connection: submit, then long-poll for the answer."""

    def __init__(self, server: Process, key: str) -> None:
        self.http = httpx.Client(base_url=server.base_url, timeout=WAIT_S + 10)
        self.key = key
        self.submit_ms: list[float] = []

    def close(self) -> None:
        self.http.close()

    def solve(self, image: bytes, params: dict[str, str]) -> str:
        body = base64.b64encode(image).decode("ascii")
        start = time.perf_counter()
        reply = self.http.post("/in.php", data={"key": self.key, "method": "base64", "body": body, **params})
        self.submit_ms.append((time.perf_counter() - start) * 1000)
        if not reply.text.startswith("OK|"):
            return reply.text
        query = {"key": self.key, "action": "get", "id": reply.text[3:], "wait": str(WAIT_S)}
        deadline = time.monotonic() + ANSWER_TIMEOUT_S
        while True:
            text = self.http.get("/res.php", params=query).text
            if text != "CAPCHA_NOT_READY" or time.monotonic() > deadline:
                return text


async def concurrent_service(server: Process, key: str, data: Labelled, params: dict[str, str],
                             concurrency: int) -> tuple[list[str], float]:
    """Answers and images/s with ``concurrency`` clients submitting and long-polling at once."""
    answers = [""] * len(data)
    queue = list(enumerate(data))
    limits = httpx.Limits(max_connections=concurrency * 2, max_keepalive_connections=concurrency * 2)

    async def one(http: httpx.AsyncClient) -> None:
        while queue:
            index, (image, _) = queue.pop()
            body = base64.b64encode(image).decode("ascii")
            reply = (await http.post("/in.php", data={"key": key, "method": "base64", "body": body,
                                                      **params})).text
            if reply.startswith("OK|"):
                query = {"key": key, "action": "get", "id": reply[3:], "wait": str(WAIT_S)}
                while (reply := (await http.get("/res.php", params=query)).text) == "CAPCHA_NOT_READY":
                    pass
            answers[index] = reply

    async with httpx.AsyncClient(base_url=server.base_url, timeout=WAIT_S + 10, limits=limits) as http:
        start = time.perf_counter()
        await asyncio.gather(*(one(http) for _ in range(concurrency)))
        elapsed = time.perf_counter() - start
    return answers, len(data) / elapsed


# --------------------------------------------------------------------------------------------- one run


def text_of(reply: str) -> str:
    return reply[3:] if reply.startswith("OK|") else ""


def measure_set(name: str, data: Labelled, client: Client, recognizer: Recognizer,
                ddddocr_read: Callable[[bytes], str] | None, server_pid: int,
                ) -> tuple[dict[str, tuple[list[str], list[float]]], float | None]:
    """Per path, the answers and per-image milliseconds: the service and the engine interleaved image by
    image, then ddddocr in a pass of its own (onnxruntime's default thread pool spins for a while after
    each run, which would slow whatever ran next on two cores). Also the server's main-process CPU
    milliseconds per image over the interleaved pass."""
    constraints = NATURAL.get(name, OcrConstraints())
    params = to_params(constraints)
    readers: dict[str, Callable[[bytes], str]] = {
        "service": lambda b: text_of(client.solve(b, params)),
        "engine": lambda b: recognizer.recognize(b, constraints).text,
    }
    paths: dict[str, tuple[list[str], list[float]]] = {path: ([], []) for path in readers}
    cpu_before = cpu_seconds(server_pid)
    for image, _ in data:
        for path, read in readers.items():
            timed(read, image, paths[path])
    cpu_after = cpu_seconds(server_pid)
    server_cpu = None
    if cpu_before is not None and cpu_after is not None:
        server_cpu = (cpu_after - cpu_before) * 1000 / len(data)
    if ddddocr_read is not None:
        ddddocr_read(data[0][0])  # unscored: its session's first run
        paths["ddddocr"] = ([], [])
        for image, _ in data:
            timed(ddddocr_read, image, paths["ddddocr"])
    return paths, server_cpu


def timed(read: Callable[[bytes], str], image: bytes, into: tuple[list[str], list[float]]) -> None:
    start = time.perf_counter()
    answer = read(image)
    into[1].append((time.perf_counter() - start) * 1000)
    into[0].append(answer)


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of one process so far (Linux); None where /proc is not there."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_once(sets: dict[str, Labelled], processes: int, concurrency: int, with_ddddocr: bool,
             with_throughput: bool, workdir: Path) -> list[SetResult]:
    env = {"CAPGATE_OCR": "1", "CAPGATE_OCR_PROCESSES": str(processes), "CAPGATE_PRICES": "",
           "CAPGATE_MAX_PENDING": "1000000", "CAPGATE_DATA_DIR": ""}
    results: list[SetResult] = []
    recognizer = Recognizer.generic()
    ddddocr_read: Callable[[bytes], str] | None = None
    if with_ddddocr:
        import ddddocr  # only benchmarks call ddddocr itself

        ocr = ddddocr.DdddOcr(show_ad=False)

        def ddddocr_read(image: bytes) -> str:
            return str(ocr.classification(image))

    with start_capgate(workdir, env=env) as server:
        key = server.create_key(sandbox=False, threads=max(50, concurrency * 2), balance="1000")
        client = Client(server, key)
        try:
            for name, data in sets.items():
                constraints = NATURAL.get(name, OcrConstraints())
                # Unscored: every pool process and this process's sessions have run, the connection is open.
                for image, _ in data[:WARM_IMAGES]:
                    client.solve(image, to_params(constraints))
                    recognizer.recognize(image, constraints)
                submit_from = len(client.submit_ms)
                paths, server_cpu = measure_set(name, data, client, recognizer, ddddocr_read, server.pid)
                submit_ms = client.submit_ms[submit_from:]
                rows = []
                for path, (answers, times) in paths.items():
                    ci, cs = exact(answers, data)
                    shown = "none" if path == "ddddocr" else describe(constraints)
                    rows.append(Row(name, path, shown, len(data), ci, cs, statistics.median(times),
                                    percentile(times, 0.9)))
                service_ms, engine_ms = paths["service"][1], paths["engine"][1]
                if with_throughput:
                    rows = add_throughput(rows, server, key, data, constraints, processes, concurrency)
                errors = [a for a in paths["service"][0] if not a]
                results.append(SetResult(
                    name, rows,
                    statistics.median(service_ms) - statistics.median(engine_ms),
                    statistics.median(s - e for s, e in zip(service_ms, engine_ms, strict=True)),
                    statistics.median(submit_ms), server_cpu,
                    [f"{len(errors)} service answers were not OK|..."] if errors else []))
        finally:
            client.close()
    return results


def add_throughput(rows: list[Row], server: Process, key: str, data: Labelled, constraints: OcrConstraints,
                   processes: int, concurrency: int) -> list[Row]:
    """The service's and a bare pool's images/s on the same images, the pool after the service (the
    server's pool is idle by then)."""
    _, service_rate = asyncio.run(concurrent_service(server, key, data, to_params(constraints), concurrency))
    with OcrPool(processes) as pool:
        pool.wait_ready()
        through_pool(pool, data[: processes * 2], constraints)
        _, pool_rate = through_pool(pool, data, constraints)
    rates = {"service": service_rate, "engine": pool_rate}
    return [Row(**{**asdict(r), "images_per_s": rates.get(r.path)}) for r in rows]


# --------------------------------------------------------------------------------------------- reporting


def combine(runs: list[list[SetResult]]) -> list[SetResult]:
    """Per set and path, the median over runs of every figure."""
    combined = []
    for index, first in enumerate(runs[0]):
        same = [run[index] for run in runs]
        rows = []
        for row_index, row in enumerate(first.rows):
            per = [s.rows[row_index] for s in same]
            rates = [r.images_per_s for r in per if r.images_per_s is not None]
            rows.append(Row(row.set, row.path, row.constraints, row.images,
                            statistics.median(r.exact_ci for r in per), statistics.median(r.exact_cs for r in per),
                            statistics.median(r.p50_ms for r in per), statistics.median(r.p90_ms for r in per),
                            statistics.median(rates) if rates else None))
        combined.append(SetResult(first.set, rows, statistics.median(s.added_p50_ms for s in same),
                                  statistics.median(s.paired_added_p50_ms for s in same),
                                  statistics.median(s.submit_p50_ms for s in same),
                                  median_or_none([s.server_cpu_ms for s in same]),
                                  [e for s in same for e in s.errors]))
    return combined


def load_runs(path: Path) -> list[list[SetResult]]:
    """The runs recorded in a ``bench/results/ocr_e2e-*.json`` file."""
    def result(data: dict[str, Any]) -> SetResult:
        return SetResult(**{**data, "rows": [Row(**row) for row in data["rows"]]})

    meta = json.loads(path.read_text(encoding="utf-8"))
    return [[result(s) for s in run] for run in meta["each_run"]]


def median_or_none(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def table(results: Sequence[SetResult]) -> str:
    head = (f"{'set':10} {'path':8} {'constraints':30} {'n':>4} {'exact ci':>8} {'exact cs':>8} "
            f"{'p50 ms':>7} {'p90 ms':>7} {'img/s':>6}")
    lines = [head, "-" * len(head)]
    for result in results:
        for r in result.rows:
            rate = f"{r.images_per_s:6.1f}" if r.images_per_s is not None else f"{'-':>6}"
            lines.append(f"{r.set:10} {r.path:8} {r.constraints:30} {r.images:4d} {r.exact_ci * 100:7.1f}% "
                         f"{r.exact_cs * 100:7.1f}% {r.p50_ms:7.1f} {r.p90_ms:7.1f} {rate}")
        lines.append(f"{'':10} service adds {result.added_p50_ms:+.1f} ms p50 over the engine "
                     f"(paired {result.paired_added_p50_ms:+.1f} ms; in.php alone {result.submit_p50_ms:.1f} ms"
                     + (f"; server CPU {result.server_cpu_ms:.1f} ms/image" if result.server_cpu_ms is not None
                        else "") + ")"
                     + (f"; {', '.join(result.errors)}" if result.errors else ""))
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ocr_e2e", description=__doc__.split("\n\n")[0])
    parser.add_argument("--limit", type=int, default=200, help="images per set (default 200)")
    parser.add_argument("--sets", default=",".join(NATURAL), help="comma-separated set names")
    parser.add_argument("--processes", type=int, default=0, help="server OCR processes (default: one per core)")
    parser.add_argument("--concurrency", type=int, default=0, help="clients for img/s (default: 2 x processes)")
    parser.add_argument("--runs", type=int, default=1, help="repeat on a fresh server; figures are medians")
    parser.add_argument("--no-ddddocr", action="store_true", help="skip the ddddocr floor")
    parser.add_argument("--no-throughput", action="store_true", help="skip the concurrent img/s figures")
    parser.add_argument("--data-dir", type=Path, default=DATA_DIR)
    parser.add_argument("--combine", type=Path, nargs="+", metavar="JSON",
                        help="measure nothing: print the medians over every run in these result files")
    args = parser.parse_args(argv)
    if args.combine:
        print(table(combine([run for path in args.combine for run in load_runs(path)])))
        return 0

    sets = {name: data for name in args.sets.split(",") if name
            and (data := load_set(name, args.limit, args.data_dir))}
    if not sets:
        print(f"no data sets found under {args.data_dir}")
        return 1
    processes = args.processes or os.cpu_count() or 1
    concurrency = args.concurrency or 2 * processes
    loads = [load_average()]
    runs = []
    for run in range(args.runs):
        with tempfile.TemporaryDirectory(prefix="capgate-ocr-e2e-") as tmp:
            runs.append(run_once(sets, processes, concurrency, not args.no_ddddocr, not args.no_throughput,
                                 Path(tmp)))
        loads.append(load_average())
        if args.runs > 1:
            print(f"run {run + 1}/{args.runs}:\n{table(runs[-1])}\n", flush=True)
    results = combine(runs)
    print(f"capgate serve with {processes} OCR process(es) on {os.cpu_count()} cores, generic cascade "
          f"{' > '.join(DEFAULT_GENERIC)}; {args.runs} run(s), medians; service img/s with {concurrency} clients")
    print(table(results))
    print("load: " + " | ".join(loads))

    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    out = RESULTS_DIR / f"ocr_e2e-{time.strftime('%Y%m%d-%H%M%S')}.json"
    meta: dict[str, Any] = {
        "command": "python -m bench.ocr_e2e " + " ".join(sys.argv[1:] if argv is None else argv),
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "limit": args.limit, "processes": processes, "concurrency": concurrency, "runs": args.runs,
        "cpu_count": os.cpu_count(), "machine": platform.platform(), "python": platform.python_version(),
        "onnxruntime": version("onnxruntime"), "ddddocr": version("ddddocr"), "load": loads,
        "results": [asdict(r) for r in results],
        "each_run": [[asdict(r) for r in run] for run in runs],
    }
    out.write_text(json.dumps(meta, indent=2), encoding="utf-8")
    print(f"written {out.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
