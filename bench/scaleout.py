"""Scale-out (issue 13): throughput with 1 and N API processes, on SQLite and on PostgreSQL, and the
latency of a long-poll woken by a settle in another process.

For each backend and each process count it measures, on a fresh database:

* ``poll_pending``  ``GET res.php?action=get`` on a task that stays pending;
* ``submit``        ``POST in.php`` base64 on a sandbox key, tasks due at once (settled by the
                    in-process sandbox workers: the steady state), as ``bench server`` sends them;
* ``claim_answer``  a worker's claim then answer through the worker API (turnstile tasks submitted
                    beforehand), per second: what one API process moves for remote workers;

each as req/s and as a ratio to the single-process figure on the same backend. Then ``wake``: a
``res.php wait=20`` long-poll on one process, its task answered through another; the time from the
answer's reply to the long-poll's reply, p50 and p99 over ``--wakes`` samples.

N processes are ``capgate serve --processes N`` on one port when the CLI has that option, else N
``capgate serve`` processes on N ports sharing the database, the load split evenly between them (the
figures are comparable: the same processes, one accept queue each instead of a shared one).

PostgreSQL: ``--pg URL`` names a server where the bench may create and drop a database of its own
(default ``$CAPGATE_BENCH_PG`` or ``postgresql://postgres@127.0.0.1:5432/postgres``).

    python -m bench scaleout --backends sqlite,postgres --processes 1,2 --duration 5
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import dataclasses
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from bench._server import REPO, Process, start_capgate
from bench.server import SERVER_ENV, THREADS, Load, Options, Scenario, _measure, _png_corpus, _prepare

RESULTS = REPO / "bench" / "results"
DEFAULT_PG = os.environ.get("CAPGATE_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
SCENARIOS = ("poll_pending", "submit", "claim_answer")


@contextlib.contextmanager
def database(backend: str, pg_admin: str, workdir: Path) -> Iterator[str]:
    """A fresh database: a SQLite path, or a PostgreSQL database made (and dropped) for the run."""
    if backend == "sqlite":
        yield str(workdir / f"scaleout-{secrets.token_hex(4)}.db")
        return
    import psycopg

    if not pg_admin.startswith(("postgresql://", "postgres://")):
        raise SystemExit(f"--pg: a postgresql:// URL, not {pg_admin!r}")  # capgate takes anything else for a file
    name = f"capgate_bench_{secrets.token_hex(4)}"
    with psycopg.connect(pg_admin, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    try:
        yield urlsplit(pg_admin)._replace(path=f"/{name}").geturl()
    finally:
        with psycopg.connect(pg_admin, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def _has_processes_option() -> bool:
    shown = subprocess.run([sys.executable, "-m", "capgate", "serve", "--help"], capture_output=True, text=True,
                           cwd=REPO, timeout=60)
    return "--processes" in shown.stdout


@contextlib.contextmanager
def servers(db: str, n: int, workdir: Path, one_port: bool) -> Iterator[list[Process]]:
    """``n`` API processes on ``db``: one server (``--processes n``) or ``n`` servers."""
    env = {**SERVER_ENV, "CAPGATE_DB": db}
    with contextlib.ExitStack() as stack:
        if one_port:
            yield [stack.enter_context(start_capgate(workdir / "p0", env=env, args=["--processes", str(n)]))]
            return
        # The first one creates the schema; the others start after it.
        started = [stack.enter_context(start_capgate(workdir / "p0", env=env))]
        for i in range(1, n):
            started.append(stack.enter_context(start_capgate(workdir / f"p{i}", env=env)))
        yield started


def _spread(procs: Sequence[Process], scenario: Scenario, opts: Options, workdir: Path, run: int) -> Load:
    """The same load on every process at once, the connections split between them; figures summed."""
    share = Options(opts.duration, max(1, opts.connections // len(procs)), opts.threads, opts.warmup, opts.loadgen)
    # Each process's bodies carry its own tag: the same body sent to two processes is a duplicate task.
    # (and its own folder: the load generator's script is written there under the scenario's name).
    tagged = []
    for i, proc in enumerate(procs):
        (workdir / f"load-p{i}").mkdir(parents=True, exist_ok=True)
        tagged.append((proc, dataclasses.replace(scenario, suffix=f"{scenario.suffix}p{i}+"), workdir / f"load-p{i}"))
    with concurrent.futures.ThreadPoolExecutor(len(procs)) as pool:
        loads = list(pool.map(lambda job: _measure(job[0], job[1], share, job[2], run), tagged))
    total = sum(load.requests for load in loads)
    seconds = max(load.duration_s for load in loads)
    return Load(requests=total, duration_s=seconds, rps=sum(load.rps for load in loads),
                p50_ms=statistics.median(load.p50_ms for load in loads), p99_ms=max(load.p99_ms for load in loads),
                max_ms=max(load.max_ms for load in loads), errors=sum(load.errors for load in loads),
                bad=sum(load.bad for load in loads), sample=next((x.sample for x in loads if x.sample), ""))


# ---------------------------------------------------------------------------------------------- worker side


def _worker_token(server: Process) -> str:
    done = server.cli("workers", "create", f"bench-{uuid.uuid4().hex[:6]}", "--methods", "turnstile")
    return done.stdout.strip().splitlines()[-1]


def _turnstile(key: str) -> dict[str, str]:
    return {"key": key, "method": "turnstile", "sitekey": f"0x4AAA{uuid.uuid4().hex[:12]}",
            "pageurl": "https://example.com/bench"}


async def _fill_queue(procs: Sequence[Process], key: str, token: str, count: int) -> None:
    async with httpx.AsyncClient(timeout=30) as client:
        for proc in procs:  # each process learns that turnstile is served (N processes on one port:
            for _ in range(8):  # the kernel picks which one answers, so ask several times)
                await client.post(proc.url("/worker/v1/claim"), json={"methods": ["turnstile"]},
                                  headers={"Authorization": f"Bearer {token}"})
        sem = asyncio.Semaphore(32)

        async def one(i: int) -> None:
            async with sem:
                for _ in range(50):
                    reply = await client.post(procs[i % len(procs)].url("in.php"), data=_turnstile(key))
                    if reply.text.startswith("OK|"):
                        return
                    await asyncio.sleep(0.1)
                raise RuntimeError(f"in.php refused the set-up submit: {reply.text}")

        await asyncio.gather(*(one(i) for i in range(count)))


async def _claim_answer(procs: Sequence[Process], token: str, duration: float, connections: int) -> Load:
    headers = {"Authorization": f"Bearer {token}"}
    latencies: list[float] = []
    errors = 0
    end = time.perf_counter() + duration
    start = time.perf_counter()
    limits = httpx.Limits(max_connections=connections)
    async with httpx.AsyncClient(timeout=30, limits=limits, headers=headers) as client:
        async def worker(i: int) -> None:
            nonlocal errors
            proc = procs[i % len(procs)]
            while time.perf_counter() < end:
                sent = time.perf_counter()
                claimed = (await client.post(proc.url("/worker/v1/claim"),
                                             json={"methods": ["turnstile"], "wait": 1})).json()
                task = claimed.get("task")
                if task is None:  # the queue ran dry (or another claimer took the last one): ask again
                    continue
                body = {"lease": task["lease"], "answer": {"token": "bench"}}
                reply = await client.post(proc.url(f"/worker/v1/tasks/{task['id']}/answer"), json=body)
                if reply.status_code != 200:
                    errors += 1
                latencies.append(time.perf_counter() - sent)

        await asyncio.gather(*(worker(i) for i in range(connections)))
    elapsed = time.perf_counter() - start
    ordered = sorted(latencies) or [0.0]
    return Load(requests=len(latencies), duration_s=elapsed, rps=len(latencies) / elapsed,
                p50_ms=ordered[len(ordered) // 2] * 1e3, p99_ms=ordered[int(len(ordered) * 0.99)] * 1e3,
                max_ms=ordered[-1] * 1e3, errors=errors, bad=0)


async def _wakes(a: Process, b: Process, key: str, token: str, samples: int) -> list[float]:
    """Milliseconds from B's answer reply to A's long-poll reply, for ``samples`` tasks."""
    headers = {"Authorization": f"Bearer {token}"}
    found: list[float] = []
    async with httpx.AsyncClient(timeout=60, headers=headers) as client:
        for _ in range(samples):
            reply = await client.post(a.url("in.php"), data=_turnstile(key))
            task_id = reply.text[3:]
            task = None
            while task is None:
                task = (await client.post(b.url("/worker/v1/claim"), json={"methods": ["turnstile"]})).json()["task"]
                if task is not None and task["id"] != task_id:  # left over from the claim scenario
                    await client.post(b.url(f"/worker/v1/tasks/{task['id']}/answer"),
                                      json={"lease": task["lease"], "answer": {"token": "x"}})
                    task = None
            polling = asyncio.ensure_future(client.get(a.url("res.php"), params={
                "key": key, "action": "get", "id": task_id, "wait": "20"}))
            await asyncio.sleep(0.05)
            await client.post(b.url(f"/worker/v1/tasks/{task_id}/answer"),
                              json={"lease": task["lease"], "answer": {"token": "woken"}})
            answered = time.perf_counter()
            polled = await polling
            if polled.text != "OK|woken":
                raise RuntimeError(f"the long-poll answered {polled.text!r}")
            found.append((time.perf_counter() - answered) * 1e3)
    return found


# ---------------------------------------------------------------------------------------------- main


def run_backend(backend: str, counts: Sequence[int], opts: Options, names: Sequence[str], wakes: int,
                pg_admin: str, workdir: Path, one_port: bool) -> dict[str, object]:
    images = _png_corpus()
    figures: dict[str, dict[str, float]] = {}
    for n in counts:
        for name in names:
            with database(backend, pg_admin, workdir) as db, \
                    servers(db, n, workdir / f"{backend}-{n}-{name}", one_port) as procs:
                if name == "claim_answer":
                    key = procs[0].create_key(sandbox=False, threads=THREADS, balance="0")
                    token = _worker_token(procs[0])
                    asyncio.run(_fill_queue(procs, key, token, max(500, int(opts.duration * 1500))))
                    load = asyncio.run(_claim_answer(procs, token, opts.duration, opts.connections))
                else:
                    scenario = _prepare(procs[0], images, workdir)[name]
                    load = _spread(procs, scenario, opts, workdir, 0)
            figures.setdefault(name, {})[str(n)] = load.rps
            print(f"  {backend:<8} {n} process(es)  {name:<13} {load.rps:9.0f} req/s  p99 {load.p99_ms:7.2f} ms"
                  f"  errors {load.errors} non-OK {load.bad} {load.sample[:80]}", file=sys.stderr, flush=True)
    result: dict[str, object] = {"rps": figures, "ratio_to_one": {
        name: {n: rps / by_n[str(counts[0])] for n, rps in by_n.items() if by_n.get(str(counts[0]))}
        for name, by_n in figures.items()}}
    if wakes:
        with database(backend, pg_admin, workdir) as db, servers(db, 2, workdir / f"{backend}-wake", False) as pair:
            key = pair[0].create_key(sandbox=False, threads=THREADS, balance="0")
            token = _worker_token(pair[0])
            asyncio.run(_fill_queue(pair, key, token, 1))
            latencies = sorted(asyncio.run(_wakes(pair[0], pair[1], key, token, wakes)))
        result["wake_ms"] = {"p50": latencies[len(latencies) // 2],
                             "p99": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))],
                             "max": latencies[-1], "samples": len(latencies)}
        print(f"  {backend:<8} cross-process wake  p50 {result['wake_ms']['p50']:.1f} ms"  # type: ignore[index]
              f"  p99 {result['wake_ms']['p99']:.1f} ms", file=sys.stderr)  # type: ignore[index]
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench scaleout", description=__doc__.split("\n\n")[0])
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument("--processes", default="1,2", help="API process counts, the first is the ratios' base")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS), help=f"of {', '.join(SCENARIOS)}")
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--wakes", type=int, default=200, help="cross-process wake-up samples (0: none)")
    parser.add_argument("--pg", default=DEFAULT_PG, help="a PostgreSQL server where the bench may create databases")
    parser.add_argument("--out", type=Path, default=None, help="write the figures here as JSON")
    args = parser.parse_args(argv)
    names = [name for name in args.scenarios.split(",") if name]
    unknown = sorted(set(names) - set(SCENARIOS))
    if unknown:
        parser.error(f"unknown scenarios {', '.join(unknown)}")
    counts = [int(n) for n in args.processes.split(",")]
    loadgen = "wrk" if subprocess.run(["which", "wrk"], capture_output=True).returncode == 0 else "python"
    opts = Options(args.duration, args.connections, 1, args.warmup, loadgen)
    one_port = _has_processes_option()
    results: dict[str, object] = {"processes": counts, "one_port": one_port, "duration_s": args.duration}
    with tempfile.TemporaryDirectory(prefix="capgate-scaleout-") as tmp:
        for backend in args.backends.split(","):
            results[backend] = run_backend(backend, counts, opts, names, args.wakes, args.pg, Path(tmp), one_port)
    text = json.dumps(results, indent=2)
    print(text)
    out = args.out or RESULTS / f"scaleout-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text + "\n")
    return 0
