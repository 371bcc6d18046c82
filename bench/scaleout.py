"""Scale-out (issue 13): throughput with 1 and N API processes, on SQLite and on PostgreSQL, and the
latency of a long-poll woken by a settle in another process.

For each backend and each process count it measures, on a fresh database:

* ``poll_pending``  ``GET res.php?action=get`` on a task that stays pending;
* ``submit``        ``POST in.php`` base64 on a sandbox key, tasks due at once (settled by the
                    in-process sandbox workers: the steady state), as ``bench server`` sends them;
* ``claim_answer``  a worker's claim then answer through the worker API (turnstile tasks queued by
                    wrk beforehand), per second: what one API process moves for remote workers.
                    wrk drives it too (a Lua script: each claimed task is answered by the thread's
                    next request); an httpx client measured itself, about 300 requests/s of CPU;

each as req/s and as a ratio to the single-process figure on the same backend. First, ``bare``: the
bare Starlette constant on Granian with 1 and N worker processes under the same wrk, the most that
N processes of any Python app can gain on this machine. Then ``wake``: a
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
from bench.server import (
    BARE,
    SERVER_ENV,
    THREADS,
    Load,
    Options,
    Scenario,
    _cpu_seconds,
    _measure,
    _png_corpus,
    _prepare,
)
from bench.servers import GRANIAN, _start

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


async def _announce(procs: Sequence[Process], token: str) -> None:
    """Each process learns that turnstile is served (N processes on one port: the kernel picks which
    one answers, so ask several times)."""
    async with httpx.AsyncClient(timeout=30) as client:
        for proc in procs:
            for _ in range(8):
                await client.post(proc.url("/worker/v1/claim"), json={"methods": ["turnstile"]},
                                  headers={"Authorization": f"Bearer {token}"})


async def _fill_queue(procs: Sequence[Process], key: str, token: str, count: int) -> None:
    await _announce(procs, token)
    async with httpx.AsyncClient(timeout=30) as client:
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


def _fill_with_wrk(procs: Sequence[Process], key: str, token: str, opts: Options, workdir: Path) -> Load:
    """Turnstile tasks queued by wrk for ``opts.duration`` seconds: more than the claims that follow can
    take in as long (a submit is one request, a claim and answer two). httpx would be the bottleneck."""
    asyncio.run(_announce(procs, token))
    workdir.mkdir(parents=True, exist_ok=True)
    bodies = workdir / "turnstile-bodies.txt"
    bodies.write_text(f"key={key}&method=turnstile&sitekey=0x4AAAAAAABench&pageurl=https%3A%2F%2Fexample.com%2Fb\n")
    # The tag goes into a parameter of its own that turnstile does not store: every task is new.
    fill = Scenario("fill", "turnstile submits", "POST", "/in.php", "OK|", bodies, "&bench=")
    return _spread(procs, fill, dataclasses.replace(opts, warmup=0), workdir / "fill", 0)


_CLAIM_ANSWER_LUA = r"""
-- Each connection claims (waiting up to 1 s); a claimed task is answered by the next request this
-- thread sends. Counts answers taken (200); claims and answers are both requests to wrk.
local token = %(token)s
local jobs = {}
local threads = {}
answered = 0
refused = 0
empty = 0
local headers = {["Content-Type"] = "application/json", ["Authorization"] = "Bearer " .. token}

function setup(thread)
  table.insert(threads, thread)
end

function request()
  local job = table.remove(jobs)
  if job then
    return wrk.format("POST", "/worker/v1/tasks/" .. job[1] .. "/answer", headers,
                      '{"lease":"' .. job[2] .. '","answer":{"token":"bench"}}')
  end
  return wrk.format("POST", "/worker/v1/claim", headers, '{"methods":["turnstile"],"wait":1}')
end

function response(status, headers, body)
  if string.sub(body, 1, 7) == '{"ok":t' then
    answered = answered + 1
    return
  end
  local id = string.match(body, '"id":%%s*"(%%d+)"')
  local lease = string.match(body, '"lease":%%s*"(%%x+)"')
  if id and lease then
    table.insert(jobs, {id, lease})
  elseif status == 200 and string.sub(body, 1, 12) == '{"task":null' then
    empty = empty + 1
  else
    refused = refused + 1
  end
end

function done(summary, latency, requests)
  local a, r, n = 0, 0, 0
  for _, t in ipairs(threads) do
    a = a + t:get("answered")
    r = r + t:get("refused")
    n = n + t:get("empty")
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%%d,"answered":%%d,"refused":%%d,"empty":%%d,"duration_us":%%d,"errors":%%d,' ..
    '"p50_us":%%d,"p99_us":%%d,"max_us":%%d}\n',
    summary.requests, a, r, n, summary.duration, e.connect + e.read + e.write + e.status + e.timeout,
    latency:percentile(50), latency:percentile(99), latency.max))
end
"""


def _claim_answer_wrk(proc: Process, token: str, opts: Options, connections: int, workdir: Path) -> Load:
    """Claims and answers per second on one process (or one port), by wrk: answers taken, not requests;
    the latencies are per request (a claim or an answer)."""
    workdir.mkdir(parents=True, exist_ok=True)
    script = workdir / "claim-answer.lua"
    script.write_text(_CLAIM_ANSWER_LUA % {"token": json.dumps(token)})
    command = ["wrk", "-t", "1", "-c", str(connections), "-d", f"{max(1, round(opts.duration))}s",
               "--timeout", "10s", "-s", str(script), proc.base_url]
    done = subprocess.run(command, capture_output=True, text=True, timeout=opts.duration + 60)
    line = next((x for x in done.stdout.splitlines() if x.startswith("BENCH_JSON ")), None)
    if done.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    stats = json.loads(line[len("BENCH_JSON "):])
    seconds = stats["duration_us"] / 1e6
    if stats["empty"]:  # a claim found nothing to take: the figure is a floor, not the rate
        print(f"  claim_answer: the queue ran dry ({stats['empty']} empty claims)", file=sys.stderr)
    return Load(requests=stats["answered"], duration_s=seconds, rps=stats["answered"] / seconds,
                p50_ms=stats["p50_us"] / 1e3, p99_ms=stats["p99_us"] / 1e3, max_ms=stats["max_us"] / 1e3,
                errors=stats["errors"], bad=stats["refused"])


def _claim_answer_spread(procs: Sequence[Process], token: str, opts: Options, workdir: Path) -> Load:
    share = max(1, opts.connections // len(procs))
    with concurrent.futures.ThreadPoolExecutor(len(procs)) as pool:
        loads = list(pool.map(lambda i: _claim_answer_wrk(procs[i], token, opts, share, workdir / f"ca-p{i}"),
                              range(len(procs))))
    return Load(requests=sum(x.requests for x in loads), duration_s=max(x.duration_s for x in loads),
                rps=sum(x.rps for x in loads), p50_ms=statistics.median(x.p50_ms for x in loads),
                p99_ms=max(x.p99_ms for x in loads), max_ms=max(x.max_ms for x in loads),
                errors=sum(x.errors for x in loads), bad=sum(x.bad for x in loads))


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
                    if opts.loadgen != "wrk":  # an asyncio client in this process would measure itself
                        print("  claim_answer needs wrk: skipped", file=sys.stderr)
                        continue
                    key = procs[0].create_key(sandbox=False, threads=THREADS, balance="0")
                    token = _worker_token(procs[0])
                    _fill_with_wrk(procs, key, token, opts, workdir / f"{backend}-{n}-fill")
                    cpu = sum(_cpu_seconds(proc.pid) or 0.0 for proc in procs)
                    load = _claim_answer_spread(procs, token, opts, workdir / f"{backend}-{n}-claims")
                    if load.requests:  # the servers' CPU (with their worker processes) per pair
                        load.cpu_us = (sum(_cpu_seconds(proc.pid) or 0.0 for proc in procs) - cpu) / load.requests * 1e6
                else:
                    scenario = _prepare(procs[0], images, workdir)[name]
                    load = _spread(procs, scenario, opts, workdir, 0)
            figures.setdefault(name, {})[str(n)] = load.rps
            if load.cpu_us:
                figures.setdefault(f"{name}_cpu_us", {})[str(n)] = load.cpu_us
            cpu_note = f"  CPU {load.cpu_us:.0f} µs each" if load.cpu_us else ""
            print(f"  {backend:<8} {n} process(es)  {name:<13} {load.rps:9.0f} req/s  p99 {load.p99_ms:7.2f} ms"
                  f"  errors {load.errors} non-OK {load.bad}{cpu_note} {load.sample[:80]}", file=sys.stderr, flush=True)
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


def run_bare(counts: Sequence[int], opts: Options, workdir: Path) -> dict[str, object]:
    """The machine's own ceiling: the bare Starlette constant on Granian with 1 and N worker processes,
    driven by the same wrk. What N processes of anything can gain here, with the load generator on the
    same cores, is at most this ratio."""
    figures: dict[str, float] = {}
    for n in counts:
        command = [*GRANIAN[:GRANIAN.index("--workers") + 1], str(n), *GRANIAN[GRANIAN.index("--workers") + 2:],
                   "--factory", "bench._bare:create_app"]
        with _start(command, workdir / f"bare-{n}", f"bare-{n}", "") as server:
            load = _measure(server, BARE, opts, workdir, 0)
        figures[str(n)] = load.rps
        print(f"  bare     {n} process(es)  constant      {load.rps:9.0f} req/s  p99 {load.p99_ms:7.2f} ms",
              file=sys.stderr, flush=True)
    return {"rps": figures, "ratio_to_one": {n: rps / figures[str(counts[0])] for n, rps in figures.items()}}


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
    parser.add_argument("--no-bare", action="store_true", help="skip the bare constant's 1-to-N ceiling")
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
        if not args.no_bare and loadgen == "wrk":
            results["bare"] = run_bare(counts, opts, Path(tmp))
        for backend in args.backends.split(","):
            results[backend] = run_backend(backend, counts, opts, names, args.wakes, args.pg, Path(tmp), one_port)
    text = json.dumps(results, indent=2)
    print(text)
    out = args.out or RESULTS / f"scaleout-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text + "\n")
    return 0
