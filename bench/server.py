"""Service throughput (issue 2): capgate's in.php and res.php against a bare Starlette endpoint.

Everything is measured in the same run, side by side, on loopback; capgate as ``capgate serve`` runs
by default (``--processes`` to change its process count):

* ``bare``          a Starlette endpoint returning a constant, on uvicorn with one process per core
                    (``access_log=False``, uvicorn's automatic loop and HTTP implementation: uvloop and
                    httptools when installed): what a user would build instead (:mod:`bench._bare`);
* ``bare_post``     the same endpoint receiving the bodies the submits send (not a target: it shows
                    what moving 7 kB through HTTP costs by itself);
* ``poll_pending``  ``GET res.php?action=get`` on a task that stays pending (``CAPCHA_NOT_READY``);
* ``poll_solved``   the same on a solved task (``OK|answer``);
* ``submit``        ``POST in.php`` with ``method=base64`` on a sandbox key: real captcha PNGs of 4–6 kB
                    (``../shared/data/kaggle_v2``, cycled; generated PNGs if that folder is absent), each
                    request also carrying a unique ``textinstructions`` so no submit is a duplicate of a
                    pending one. The text holds ``sandbox-slow-0``, so every task is due at once and the
                    in-process sandbox worker settles it: the steady state of a real service, where
                    every submitted task is claimed and settled and the pending set stays small;
* ``submit_pending`` the same submits left pending (the server's sandbox delay is a day): in.php alone,
                    with a pending set that grows by rate × duration;
* ``floor_parse``, ``floor_check``, ``floor_store`` the submit_pending requests sent to
                    :mod:`bench._floor`, the least any Python submit can do on uvicorn and SQLite
                    (parse; also validate as capgate does; also store on the loop): no targets, they
                    show how far the submit target is within reach of this stack at all.

The sandbox key has a thread cap of 1,000,000 and the server a pending cap of 10,000,000, so neither
cap answers; every answer whose body does not start as expected counts as an error. The built-in OCR
worker is off (sandbox tasks never reach it; its pool processes would only take cores).

Besides req/s and p99, each measurement records the server process's CPU time (all threads) per
request, which other load on a shared machine disturbs less than req/s.

Load: wrk (Debian's ``wrk``; one thread, ``--connections`` connections, a Lua script for POST bodies
and body checks) or, when wrk is absent, an asyncio load generator in this process (slower: on a small
machine it competes with the server for CPU, so its ratios are less trustworthy).

Each run measures every scenario once, capgate on a fresh server and database for the polls and again
for each submit scenario (so neither inherits the other's pending tasks). Each scenario is measured
right after a fresh measurement of the bare endpoint, and its ratio is taken against that one (on a
shared machine the background load drifts within minutes); the bare row shows the median of a run's
bare measurements. The figures printed are the medians over ``--runs`` runs. After each submit
scenario the key's pending count (``threadsinfo``) is recorded: it shows whether the sandbox worker
kept up.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import dataclasses
import datetime as dt
import io
import itertools
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import httpx

from bench._server import DATA, REPO, Process, start_bare, start_capgate, start_floor

RESULTS = REPO / "bench" / "results"
SANDBOX_DELAY_S = 86_400.0  # tasks without a directive stay pending for the whole run
# Issue 11's targets, against a bare Starlette endpoint on uvicorn with one process per core.
TARGETS = {"poll_pending": 0.9, "poll_solved": 0.9, "submit": 0.2, "submit_pending": 0.2}
SERVER_ENV = {
    "CAPGATE_SANDBOX_DELAY": str(SANDBOX_DELAY_S),
    "CAPGATE_IMAGE_DEADLINE": str(SANDBOX_DELAY_S),  # the pending task must not turn unsolvable
    "CAPGATE_MAX_PENDING": "10000000",
    "CAPGATE_OCR": "false",  # sandbox keys never reach the OCR worker; keep its processes off the cores
}
THREADS = 1_000_000
TITLES = {"bare": "bare Starlette constant", "bare_post": "bare, same POST bodies as submit",
          "poll_pending": "res.php get, pending", "poll_solved": "res.php get, solved",
          "submit": "in.php base64, tasks due at once", "submit_pending": "in.php base64, tasks left pending",
          "floor_parse": "floor: body parsed only", "floor_check": "floor: + task validated, not stored",
          "floor_store": "floor: + stored in SQLite, batched on the loop"}
FLOOR_MODES = {"floor_parse": "parse", "floor_check": "check", "floor_store": "store"}


@dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    method: str  # GET or POST
    path: str  # path and query
    expect: str  # every answer body must start with this
    bodies: Path | None = None  # POST: one urlencoded body per line, cycled
    suffix: str = ""  # POST: appended to each body, then a unique per-request tag


@dataclass
class Load:
    """What one load-generator run saw."""

    requests: int
    duration_s: float
    rps: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    errors: int  # socket errors, timeouts, HTTP status other than 2xx/3xx
    bad: int  # HTTP 200 but not the expected answer
    sample: str = ""  # one unexpected body
    backlog: int | None = None  # submits: the key's tasks still pending right after the load
    cpu_us: float | None = None  # the server's CPU time (all threads) per request
    loop_cpu_us: float | None = None  # of which its main (event-loop) thread's
    bare_rps: float = 0.0  # the bare endpoint, measured just before (the ratio's denominator)
    bare_p99_ms: float = 0.0
    bare_cpu_us: float | None = None


@dataclass
class Options:
    duration: float
    connections: int
    threads: int
    warmup: float
    loadgen: str


# ---------------------------------------------------------------------------------------------- images


def _png_corpus(limit: int = 1040) -> list[bytes]:
    """Real captchas from ``../shared/data/kaggle_v2``, or generated noisy PNGs of similar size."""
    folder = DATA / "kaggle_v2"
    files = sorted(folder.glob("*.png"))[:limit] if folder.is_dir() else []
    if files:
        return [f.read_bytes() for f in files]
    from PIL import Image, ImageDraw

    rng = random.Random(7)
    images = []
    for _ in range(64):
        image = Image.new("L", (200, 50), 230)
        draw = ImageDraw.Draw(image)
        for _ in range(12):
            draw.line([(rng.randrange(200), rng.randrange(50)) for _ in range(2)], fill=rng.randrange(120),
                      width=2)
        draw.text((rng.randrange(20, 60), rng.randrange(5, 25)), "".join(rng.choices("2345678bcdefg", k=5)),
                  fill=0)
        buffer = io.BytesIO()
        image.save(buffer, "PNG")
        images.append(buffer.getvalue())
    return images


def _write_bodies(path: Path, key: str, images: Sequence[bytes]) -> None:
    lines = [f"key={key}&method=base64&body={quote(base64.b64encode(data).decode(), safe='')}"
             for data in images]
    path.write_text("\n".join(lines) + "\n")


# ---------------------------------------------------------------------------------------------- wrk

_LUA = r"""
local method = %(method)s
local path = %(path)s
local expect = %(expect)s
local bodies_path = %(bodies)s
local suffix = %(suffix)s
local bodies = {}
local nbodies = 0
local counter = 0
local headers = {["Content-Type"] = "application/x-www-form-urlencoded"}
local threads = {}
local next_id = 0
bad = 0
sample = ""

function setup(thread)
  thread:set("tid", next_id)
  next_id = next_id + 1
  table.insert(threads, thread)
end

function init(args)
  if bodies_path ~= "" then
    for line in io.lines(bodies_path) do
      nbodies = nbodies + 1
      bodies[nbodies] = line
    end
  end
end

if bodies_path ~= "" then
  function request()
    counter = counter + 1
    local body = bodies[(counter - 1) %% nbodies + 1] .. suffix .. tid .. "-" .. counter
    return wrk.format(method, path, headers, body)
  end
end

function response(status, headers, body)
  if string.sub(body, 1, #expect) ~= expect then
    bad = bad + 1
    if sample == "" then sample = string.sub(body, 1, 200) end
  end
end

function done(summary, latency, requests)
  local b = 0
  local s = ""
  for _, t in ipairs(threads) do
    b = b + t:get("bad")
    if s == "" then s = t:get("sample") end
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%%d,"duration_us":%%d,"errors":%%d,"bad":%%d,' ..
    '"p50_us":%%d,"p99_us":%%d,"max_us":%%d}\n',
    summary.requests, summary.duration, e.connect + e.read + e.write + e.status + e.timeout, b,
    latency:percentile(50), latency:percentile(99), latency.max))
  io.write("BENCH_SAMPLE " .. string.gsub(s, "[\r\n]", " ") .. "\n")
end
"""


def _lua_string(text: str) -> str:
    return '"' + "".join(c if c.isalnum() or c in " -_./|:&=+?%" else f"\\{ord(c)}" for c in text) + '"'


def _wrk(base_url: str, scenario: Scenario, duration: float, opts: Options, tag: str, workdir: Path) -> Load:
    script = workdir / f"{scenario.name}-{tag}.lua"
    script.write_text(_LUA % {
        "method": _lua_string(scenario.method), "path": _lua_string(scenario.path),
        "expect": _lua_string(scenario.expect),
        "bodies": _lua_string(str(scenario.bodies) if scenario.bodies else ""),
        "suffix": _lua_string(scenario.suffix + tag + "+"),
    })
    command = ["wrk", "-t", str(opts.threads), "-c", str(opts.connections), "-d", f"{max(1, round(duration))}s",
               "--timeout", "10s", "-s", str(script), base_url + scenario.path]
    done = subprocess.run(command, capture_output=True, text=True, timeout=duration + 60)
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    stats: dict[str, Any] = {}
    sample = ""
    for line in done.stdout.splitlines():
        if line.startswith("BENCH_JSON "):
            stats = json.loads(line[len("BENCH_JSON "):])
        elif line.startswith("BENCH_SAMPLE "):
            sample = line[len("BENCH_SAMPLE "):]
    if not stats:
        raise RuntimeError(f"no figures from wrk:\n{done.stdout}\n{done.stderr}")
    seconds = stats["duration_us"] / 1e6
    return Load(requests=stats["requests"], duration_s=seconds, rps=stats["requests"] / seconds,
                p50_ms=stats["p50_us"] / 1e3, p99_ms=stats["p99_us"] / 1e3, max_ms=stats["max_us"] / 1e3,
                errors=stats["errors"], bad=stats["bad"], sample=sample)


# ---------------------------------------------------------------------------------------------- asyncio


def _request_factory(base_url: str, scenario: Scenario, tag: str) -> Callable[[int, int], bytes]:
    host = urlsplit(base_url).netloc
    if scenario.bodies is None:
        fixed = (f"{scenario.method} {scenario.path} HTTP/1.1\r\nHost: {host}\r\n\r\n").encode()
        return lambda conn, n: fixed
    bodies = scenario.bodies.read_text().splitlines()
    prefix = scenario.suffix + tag + "+"

    def make(conn: int, n: int) -> bytes:
        body = f"{bodies[n % len(bodies)]}{prefix}{conn}-{n}".encode()
        head = (f"{scenario.method} {scenario.path} HTTP/1.1\r\nHost: {host}\r\n"
                f"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {len(body)}\r\n\r\n")
        return head.encode() + body

    return make


async def _asyncio_load(base_url: str, scenario: Scenario, duration: float, connections: int, tag: str,
                        ) -> Load:
    parts = urlsplit(base_url)
    make = _request_factory(base_url, scenario, tag)
    expect = scenario.expect.encode()
    latencies: list[float] = []
    counts = {"errors": 0, "bad": 0}
    samples: list[str] = []
    start = time.perf_counter()
    end = start + duration

    async def connection(index: int) -> None:
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
        n = 0
        try:
            while time.perf_counter() < end:
                request = make(index, n)
                n += 1
                sent = time.perf_counter()
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                body = await reader.readexactly(length)
                latencies.append(time.perf_counter() - sent)
                if head[9:10] not in (b"2", b"3"):
                    counts["errors"] += 1
                elif not body.startswith(expect):
                    counts["bad"] += 1
                    if not samples:
                        samples.append(body[:200].decode("utf-8", "replace"))
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            counts["errors"] += 1
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    await asyncio.gather(*(connection(i) for i in range(connections)))
    elapsed = time.perf_counter() - start
    ordered = sorted(latencies) or [0.0]

    def pct(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1e3

    return Load(requests=len(latencies), duration_s=elapsed, rps=len(latencies) / elapsed, p50_ms=pct(0.50),
                p99_ms=pct(0.99), max_ms=ordered[-1] * 1e3, errors=counts["errors"], bad=counts["bad"],
                sample=samples[0] if samples else "")


def _python_load(base_url: str, scenario: Scenario, duration: float, opts: Options, tag: str) -> Load:
    runner: Callable[[Any], Any] = asyncio.run
    with contextlib.suppress(ImportError):
        import uvloop

        runner = uvloop.run
    result: Load = runner(_asyncio_load(base_url, scenario, duration, opts.connections, tag))
    return result


# ---------------------------------------------------------------------------------------------- a run


def _measure(server: Process, scenario: Scenario, opts: Options, workdir: Path, run: int) -> Load:
    def once(duration: float, tag: str) -> Load:
        if opts.loadgen == "wrk":
            return _wrk(server.base_url, scenario, duration, opts, tag, workdir)
        return _python_load(server.base_url, scenario, duration, opts, tag)

    if opts.warmup > 0:
        once(opts.warmup, f"r{run}w")
    before, loop_before = _cpu_seconds(server.pid), _cpu_seconds(server.pid, main_thread=True)
    load = once(opts.duration, f"r{run}m")
    after, loop_after = _cpu_seconds(server.pid), _cpu_seconds(server.pid, main_thread=True)
    if before is not None and after is not None and load.requests:
        load.cpu_us = (after - before) / load.requests * 1e6
    if loop_before is not None and loop_after is not None and load.requests:
        load.loop_cpu_us = (loop_after - loop_before) / load.requests * 1e6
    return load


def _stat(path: str) -> list[str] | None:
    try:
        return Path(path).read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def _cpu_seconds(pid: int, main_thread: bool = False) -> float | None:
    """User + system CPU time of a server: its process, all its threads and its live child processes
    (a server's workers: Granian's, uvicorn's with ``--workers``), or of the main thread of the busiest
    of them alone (the event loop's, which the GIL makes the limit), or ``None`` (not Linux)."""
    pids = [pid] + [int(entry.name) for entry in Path("/proc").iterdir()
                    if entry.name.isdigit() and (stat := _stat(f"/proc/{entry.name}/stat")) and int(stat[1]) == pid]
    ticks = []
    for each in pids:
        fields = _stat(f"/proc/{each}/task/{each}/stat" if main_thread else f"/proc/{each}/stat")
        if fields is not None:
            ticks.append(int(fields[11]) + int(fields[12]))
    if not ticks:
        return None
    return (max(ticks) if main_thread else sum(ticks)) / os.sysconf("SC_CLK_TCK")


def _submit(server: Process, key: str, image: bytes, text: str) -> str:
    reply = httpx.post(server.url("in.php"), data={
        "key": key, "method": "base64", "body": base64.b64encode(image).decode(), "textinstructions": text,
    }, timeout=10).text
    if not reply.startswith("OK|"):
        raise RuntimeError(f"in.php refused the set-up submit: {reply}")
    return reply[3:]


BARE = Scenario("bare", TITLES["bare"], "GET", "/", "OK|bare")


def _get(server: Process, path: str) -> str:
    return httpx.get(server.url(path), timeout=10).text


def _prepare(server: Process, images: Sequence[bytes], workdir: Path) -> dict[str, Scenario]:
    """A sandbox key, a pending and a solved task on a fresh server; the capgate scenarios."""
    key = server.create_key(sandbox=True, threads=THREADS)
    server.keys["sandbox"] = key
    pending = _submit(server, key, images[0], "bench pending task")
    solved = _submit(server, key, images[1], "bench solved task sandbox-slow-0")
    get = f"/res.php?key={key}&action=get&id="
    deadline = time.monotonic() + 10
    while not _get(server, get + solved).startswith("OK|"):
        if time.monotonic() > deadline:
            raise RuntimeError("the sandbox worker did not solve the set-up task")
        time.sleep(0.02)
    if _get(server, get + pending) != "CAPCHA_NOT_READY":
        raise RuntimeError("the set-up pending task is not pending")
    bodies = workdir / f"bodies-{server.port}.txt"
    _write_bodies(bodies, key, images[2:] or images)
    return {
        "poll_pending": Scenario("poll_pending", TITLES["poll_pending"], "GET", get + pending,
                                 "CAPCHA_NOT_READY"),
        "poll_solved": Scenario("poll_solved", TITLES["poll_solved"], "GET", get + solved, "OK|"),
        "submit": Scenario("submit", TITLES["submit"], "POST", "/in.php", "OK|", bodies,
                           "&textinstructions=sandbox-slow-0+bench+"),
        "submit_pending": Scenario("submit_pending", TITLES["submit_pending"], "POST", "/in.php", "OK|",
                                   bodies, "&textinstructions=bench+"),
    }


def _keyless_bodies(images: Sequence[bytes], workdir: Path) -> Path:
    """The submit bodies for servers that read no key (bare_post, the floors)."""
    bodies = workdir / "bodies-keyless.txt"
    if not bodies.exists():
        _write_bodies(bodies, "0" * 32, images[2:] or images)
    return bodies


def _backlog(server: Process) -> int:
    """Tasks of the sandbox key still pending (``threadsinfo``'s working threads)."""
    reply = _get(server, f"/res.php?key={server.keys['sandbox']}&action=threadsinfo")
    return int(reply.rsplit(":", 1)[1]) if reply.startswith("OK|") else -1


Wrapper = Callable[[Scenario, Process], contextlib.AbstractContextManager[None]]
# Each group runs on its own fresh capgate server and database, so no scenario inherits the
# pending tasks of another.
CAPGATE_GROUPS = (("poll_pending", "poll_solved"), ("submit",), ("submit_pending",))


def one_run(run: int, opts: Options, names: Sequence[str], images: Sequence[bytes], workdir: Path,
            on_server: Wrapper | None = None) -> dict[str, Load]:
    """Every scenario once, each right after a measurement of the bare endpoint (its yardstick: on a
    shared machine the background load drifts within minutes). ``on_server`` wraps each capgate
    measurement (profiling)."""
    results: dict[str, Load] = {}
    bares: list[Load] = []

    def measure(server: Process, scenario: Scenario, profile: bool = False) -> Load:
        wrapper = on_server(scenario, server) if on_server and profile else contextlib.nullcontext()
        with wrapper:
            load = _measure(server, scenario, opts, workdir, run)
        if scenario.name.startswith("submit"):
            load.backlog = _backlog(server)
        backlog = f"  still pending {load.backlog}" if load.backlog is not None else ""
        print(f"  run {run + 1}  {scenario.name:<15} {load.rps:9.0f} req/s  p99 {load.p99_ms:7.2f} ms"
              f"  errors {load.errors}  non-OK {load.bad}{backlog}", file=sys.stderr, flush=True)
        return load

    def paired(server: Process, scenario: Scenario, profile: bool = False) -> None:
        yardstick = measure(bare, BARE, profile)
        bares.append(yardstick)
        load = measure(server, scenario, profile)
        load.bare_rps, load.bare_p99_ms, load.bare_cpu_us = yardstick.rps, yardstick.p99_ms, yardstick.cpu_us
        results[scenario.name] = load

    with start_bare(workdir) as bare:
        if "bare_post" in names:
            paired(bare, Scenario("bare_post", TITLES["bare_post"], "POST", "/", "OK|bare",
                                  _keyless_bodies(images, workdir), "&textinstructions=bench+"))
        for group, members in enumerate(CAPGATE_GROUPS):
            wanted = [name for name in members if name in names]
            if not wanted:
                continue
            with start_capgate(workdir / f"run{run}-{group}", env=SERVER_ENV) as capgate:
                scenarios = _prepare(capgate, images, workdir)
                for name in wanted:
                    paired(capgate, scenarios[name], True)
        for name, mode in FLOOR_MODES.items():
            if name in names:
                with start_floor(workdir / f"run{run}-{name}", mode) as floor:
                    paired(floor, Scenario(name, TITLES[name], "POST", "/in.php", "OK|",
                                           _keyless_bodies(images, workdir), "&textinstructions=bench+"))
        if not bares:
            bares.append(measure(bare, BARE))
    middle = sorted(bares, key=lambda load: load.rps)[(len(bares) - 1) // 2]
    results["bare"] = dataclasses.replace(middle, bare_rps=middle.rps, bare_p99_ms=middle.p99_ms,
                                          bare_cpu_us=middle.cpu_us)
    return results


# ---------------------------------------------------------------------------------------------- report


@dataclass
class Row:
    name: str
    title: str
    rps: float
    p99_ms: float
    ratio: float | None  # median over runs of (req/s ÷ req/s of the bare run just before)
    p99_ratio: float | None
    target: float | None
    errors: int
    bad: int
    backlog: int | None = None  # submits: median of the tasks still pending after the load
    cpu_us: float | None = None  # median server CPU µs per request
    loop_cpu_us: float | None = None  # median of its event-loop thread's share
    cpu_ratio: float | None = None  # median of (bare CPU µs per request ÷ this one's), same pairs
    runs: list[dict[str, Any]] = field(default_factory=list)

    @property
    def met(self) -> bool | None:
        if self.target is None or self.ratio is None:
            return None
        return self.ratio >= self.target


def summarise(runs: Sequence[dict[str, Load]], titles: dict[str, str]) -> list[Row]:
    rows = []
    for name in titles:
        loads = [run[name] for run in runs if name in run]
        if not loads:
            continue
        ratios = [x.rps / x.bare_rps for x in loads if x.bare_rps]
        p99s = [x.p99_ms / x.bare_p99_ms for x in loads if x.bare_p99_ms]
        cpus = [x.cpu_us for x in loads if x.cpu_us]
        cpu_ratios = [x.bare_cpu_us / x.cpu_us for x in loads if x.cpu_us and x.bare_cpu_us]
        rows.append(Row(
            name=name, title=titles[name], rps=statistics.median(x.rps for x in loads),
            p99_ms=statistics.median(x.p99_ms for x in loads),
            ratio=statistics.median(ratios) if ratios and name != "bare" else None,
            p99_ratio=statistics.median(p99s) if p99s and name != "bare" else None,
            target=TARGETS.get(name), errors=sum(x.errors for x in loads), bad=sum(x.bad for x in loads),
            backlog=round(statistics.median(backlogs)) if (backlogs := [x.backlog for x in loads
                                                                        if x.backlog is not None]) else None,
            cpu_us=statistics.median(cpus) if cpus else None,
            loop_cpu_us=statistics.median(loops) if (loops := [x.loop_cpu_us for x in loads
                                                                if x.loop_cpu_us]) else None,
            cpu_ratio=statistics.median(cpu_ratios) if cpu_ratios and name != "bare" else None,
            runs=[asdict(x) for x in loads]))
    return rows


def table(rows: Sequence[Row]) -> str:
    lines = ["| scenario | req/s | p99 ms | × bare req/s | × bare p99 | target | server CPU µs/req "
             "| of which loop thread | × bare CPU/req | errors + non-OK | pending after |",
             "|---|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|"]

    def num(value: float | None, spec: str, missing: str = "") -> str:
        return missing if value is None else format(value, spec)

    for row in rows:
        target = "" if row.target is None else f"≥ {row.target:g}× " + ("met" if row.met else "**missed**")
        lines.append(" | ".join([
            f"| {row.name} ({row.title})", f"{row.rps:,.0f}", f"{row.p99_ms:.2f}", num(row.ratio, ".2f", "1"),
            num(row.p99_ratio, ".2f", "1"), target, num(row.cpu_us, ",.0f"), num(row.loop_cpu_us, ",.0f"),
            num(row.cpu_ratio, ".2f", "1"),
            str(row.errors + row.bad), num(row.backlog, ","),
        ]) + " |")
    return "\n".join(lines)


def machine() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    versions = {}
    for package in ("starlette", "uvicorn", "granian", "uvloop", "httptools"):
        with contextlib.suppress(Exception):
            from importlib.metadata import version

            versions[package] = version(package)
    return {"nproc": os.cpu_count(), "cpu": model, "python": platform.python_version(),
            "loadavg_at_start": list(os.getloadavg()), "packages": versions}


def _tree() -> dict[str, Any]:
    """The commit measured, and the files under capgate/ that differ from it."""
    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], capture_output=True, text=True, cwd=REPO)
        return done.stdout.strip() if done.returncode == 0 else ""

    changed = [line[3:] for line in git("status", "--porcelain", "--", "capgate").splitlines()]
    return {"commit": git("rev-parse", "HEAD"), "capgate_changes": changed}


def _wrk_version() -> str:
    done = subprocess.run(["wrk", "--version"], capture_output=True, text=True)
    words = (done.stdout or done.stderr).split()
    return f"wrk {words[1]}" if len(words) > 1 else "wrk"


@contextlib.contextmanager
def _workdir(keep: bool) -> Iterator[Path]:
    if keep:
        path = Path(tempfile.mkdtemp(prefix="capgate-bench-"))
        print(f"work files in {path}", file=sys.stderr)
        yield path
    else:
        with tempfile.TemporaryDirectory(prefix="capgate-bench-") as name:
            yield Path(name)


@contextlib.contextmanager
def _py_spy(out: Path, rate: int) -> Iterator[Wrapper]:
    """``--profile``: record collapsed stacks of the capgate process during each scenario."""
    exe = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(exe).exists():
        raise SystemExit("--profile needs py-spy: .venv/bin/pip install py-spy")
    out.mkdir(parents=True, exist_ok=True)
    serial = itertools.count(1)

    @contextlib.contextmanager
    def record(scenario: Scenario, server: Process) -> Iterator[None]:
        target = out / f"{scenario.name}-{next(serial)}.txt"
        spy = subprocess.Popen([exe, "record", "--pid", str(server.pid), "--format", "raw",
                                "--rate", str(rate), "--nonblocking", "--threads", "--subprocesses",
                                "--output", str(target)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.5)
        try:
            yield
        finally:
            spy.send_signal(2)  # SIGINT: py-spy writes what it has and exits
            spy.wait(timeout=30)
            print(f"  profile of {scenario.name}: {target}", file=sys.stderr)

    yield record


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench server", description=__doc__.split("\n")[0],
                                     epilog="Figures are ratios measured side by side on one machine; "
                                            "compare ratios, not req/s, across machines.")
    parser.add_argument("--duration", type=float, default=10.0,
                        help="seconds per scenario (default 10; wrk takes whole seconds)")
    parser.add_argument("--connections", type=int, default=32, help="concurrent connections (default 32)")
    parser.add_argument("--threads", type=int, default=1, help="wrk threads (default 1)")
    parser.add_argument("--runs", type=int, default=3, help="runs; medians are reported (default 3)")
    parser.add_argument("--warmup", type=float, default=2.0,
                        help="seconds of unmeasured load before each measurement (default 2; 0: none)")
    parser.add_argument("--loadgen", choices=("auto", "wrk", "python"), default="auto",
                        help="wrk if installed (auto), or the asyncio generator")
    parser.add_argument("--scenarios", default=",".join(TITLES),
                        help="comma-separated subset (bare is always measured)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where the JSON results go")
    parser.add_argument("--processes", type=int, default=None,
                        help="capgate serve --processes (default: capgate's own default)")
    parser.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (databases, logs)")
    parser.add_argument("--profile", action="store_true",
                        help="record py-spy stacks (raw, collapsed) of the server during each capgate scenario "
                             "and its bare yardstick, under bench/results/profile-*/ (skews figures)")
    parser.add_argument("--profile-rate", type=int, default=200, help="py-spy samples per second")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    loadgen = args.loadgen
    if loadgen == "auto":
        loadgen = "wrk" if shutil.which("wrk") else "python"
    if loadgen == "wrk" and not shutil.which("wrk"):
        print("wrk is not installed (apt-get install wrk)", file=sys.stderr)
        return 2
    if loadgen == "python":
        print("note: wrk not found, using the asyncio load generator in this process; it shares the CPU "
              "with the servers (apt-get install wrk for better figures)", file=sys.stderr)
    opts = Options(args.duration, args.connections, args.threads, args.warmup, loadgen)
    if args.processes is not None:
        SERVER_ENV["CAPGATE_PROCESSES"] = str(args.processes)
    names = {"bare", *(n.strip() for n in args.scenarios.split(",") if n.strip())}
    unknown = names - set(TITLES)
    if unknown:
        print(f"unknown scenarios: {', '.join(sorted(unknown))}", file=sys.stderr)
        return 2
    started = dt.datetime.now().astimezone()
    stamp = started.strftime("%Y%m%d-%H%M%S")
    info = machine()
    generator = _wrk_version() if loadgen == "wrk" else f"asyncio (python {platform.python_version()})"
    print(f"service throughput: {loadgen}, {opts.connections} connections, {opts.duration:g} s per scenario, "
          f"{args.runs} runs; {info['nproc']} cores ({info['cpu']}), load average {info['loadavg_at_start']}",
          file=sys.stderr, flush=True)
    images = _png_corpus()
    runs: list[dict[str, Load]] = []
    with _workdir(args.keep) as workdir, contextlib.ExitStack() as stack:
        spy = stack.enter_context(_py_spy(args.out / f"profile-{stamp}", args.profile_rate)) \
            if args.profile else None
        for run in range(args.runs):
            runs.append(one_run(run, opts, [name for name in TITLES if name in names], images, workdir, spy))
    rows = summarise(runs, {k: v for k, v in TITLES.items() if k in names})
    command = "python -m bench server " + " ".join(argv if argv is not None else sys.argv[1:])
    report = {
        "bench": "server", "date": started.isoformat(timespec="seconds"),
        "command": command.strip(), "machine": info, "tree": _tree(), "loadgen": generator,
        "options": asdict(opts), "runs": args.runs, "profiled": bool(args.profile),
        "server_env": SERVER_ENV, "images": len(images),
        "rows": [{**asdict(row), "met": row.met} for row in rows],
    }
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"server-{stamp}.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    print()
    print(f"Service throughput, medians of {args.runs} runs ({generator}, {opts.connections} connections, "
          f"{opts.duration:g} s each; ratios within each run, side by side)")
    print(table(rows))
    tree = report["tree"]
    print(f"\ncommit {tree['commit'][:10]}" + (f" with {len(tree['capgate_changes'])} uncommitted changes under "
                                                f"capgate/" if tree["capgate_changes"] else ""))
    print(f"results: {path.relative_to(REPO) if path.is_relative_to(REPO) else path}")
    failures = [row for row in rows if row.errors or row.bad]
    for row in failures:
        sample = next((r["sample"] for r in row.runs if r["sample"]), "")
        print(f"{row.name}: {row.errors} errors, {row.bad} unexpected answers (e.g. {sample!r})",
              file=sys.stderr)
    if failures:
        return 1
    if args.check and any(row.met is False for row in rows):
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
