"""The store alone (issue 10): sandbox submits and their settles, as the live server drives them, with
no HTTP in the way, on SQLite; this tree and others side by side in interleaved rounds.

Each round opens a fresh SQLite store in a child process per tree (``PYTHONPATH`` set to the tree, the
same interpreter) and runs, on one event loop: ``--tasks`` submits of a 5 kB image task on a sandbox
account, 32 at a time, while the tree's own sandbox worker settles them as they fall due (claim, answer,
charge: the settled-at-once ``submit`` of ``bench server``). It reports CPU per task, all threads of
the child (the event loop and the store's writer), and wall time per task.

Trees older than the store rewrite are measured through the same calls (``Store.submit``,
``SandboxWorker``), so a tree from before issue 10 is a valid baseline:

    git worktree add ../before 1d886f5
    python -m bench store --trees ../before,. --rounds 5

On a shared machine CPU time moves by 10% from one minute to the next. ``--instructions`` counts
instead what the CPU executes, which does not move: each tree's child runs under valgrind's callgrind
twice, with ``--tasks`` and three times as many, and the difference of the two counts, divided by the
difference of the tasks, is the instructions per settled submit (start-up and imports cancel out).
It takes about a minute per tree and needs valgrind (``apt-get install valgrind``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from bench._server import REPO

RESULTS = REPO / "bench" / "results"

# Run in the child, against whichever tree is first on its path: only calls every tree has.
_CHILD = r'''
import asyncio, json, os, sys, tempfile, time
from pathlib import Path
from capgate.keys import hash_secret, new_key
from capgate.store.base import SubmitLimits
from capgate.store.models import NewTask, Pool
try:
    from capgate.store.factory import open_store
    def make(path):
        try:
            return open_store(path, schema="upgrade")
        except TypeError:  # issue 10's own tree: no schema modes yet
            return open_store(path)
except ImportError:  # before the store rewrite
    from capgate.store.sqlite import SQLiteStore
    def make(path): return SQLiteStore(Path(path))
try:
    from capgate.workers.sandbox import SandboxWorker
except ImportError:
    from capgate.solvers.sandbox import SandboxWorker

TASKS = int(sys.argv[1])
BLOB = os.urandom(5000)

async def main():
    store = make(os.path.join(tempfile.mkdtemp(prefix="capgate-bench-store-"), "bench.db"))
    await store.open()
    key = new_key()
    account = await store.create_account(hash_secret(key), key[:6], 10**6, 10**12, True)
    limits = SubmitLimits("ERROR_NO_SLOT_AVAILABLE", 10**8)
    settled = []
    worker = SandboxWorker(store, settled.append)
    running = asyncio.ensure_future(worker.run(0.01))
    slots = asyncio.Semaphore(32)

    async def submit(i):
        async with slots:
            now = time.time()
            task = NewTask(method="normal", params={"textinstructions": "sandbox-slow-0", "n": str(i)},
                           blobs={"body": BLOB}, fingerprint=new_key(), price=1000, deadline_s=300.0,
                           pool=Pool.SANDBOX, not_before=now)
            outcome = await store.submit(account, task, now, limits)
            assert outcome.task_id is not None, outcome
            worker.due_at(now)

    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(submit(i) for i in range(TASKS)))
    while len(settled) < TASKS:
        await asyncio.sleep(0.002)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    running.cancel()
    await store.close()
    print(json.dumps({"cpu_us": cpu / TASKS * 1e6, "wall_us": wall / TASKS * 1e6}))

asyncio.run(main())
'''


def measure(tree: Path, tasks: int) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    done = subprocess.run([sys.executable, "-c", _CHILD, str(tasks)], capture_output=True, text=True, env=env,
                          cwd=tree, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"{tree}: {done.stderr}")
    figures: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return figures


def instructions(tree: Path, tasks: int) -> float:
    """Instructions per settled submit in ``tree``'s child (see the module's docstring)."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    counts = []
    for n in (tasks, 3 * tasks):
        done = subprocess.run(["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable,
                               "-c", _CHILD, str(n)], capture_output=True, text=True, env=env, cwd=tree, timeout=1800)
        found = re.search(r"Collected : (\d+)", done.stderr)
        if done.returncode != 0 or found is None:
            raise RuntimeError(f"{tree}: {done.stderr[-2000:]}")
        counts.append(int(found.group(1)))
    return (counts[1] - counts[0]) / (2 * tasks)


def _instructions_table(trees: Sequence[Path], tasks: int) -> dict[str, dict[str, object]]:
    found = {}
    for tree in trees:
        found[str(tree)] = instructions(tree, tasks)
        print(f"  {tree.name:<12} {found[str(tree)]:9.0f} instructions/task", file=sys.stderr, flush=True)
    base = found[str(trees[0])]
    print(f"\ninstructions per settled submit (callgrind, {tasks} and {3 * tasks} tasks; SQLite)\n")
    print("| tree | commit | instructions/task | × first tree |")
    print("|---|---|---:|---:|")
    summary: dict[str, dict[str, object]] = {}
    for tree in trees:
        count = found[str(tree)]
        summary[str(tree)] = {"commit": _commit(tree), "instructions": count, "ratio": count / base}
        print(f"| {tree.name} | {summary[str(tree)]['commit']} | {count:,.0f} | {count / base:.3f} |")
    return summary


def _commit(tree: Path) -> str:
    done = subprocess.run(["git", "-C", str(tree), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run(["git", "-C", str(tree), "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True).stdout.strip()
    return done.stdout.strip() + ("+changes" if dirty else "")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench store", description=__doc__.split("\n\n")[0])
    parser.add_argument("--trees", default=".", help="comma-separated checkouts; the first is the ratios' base")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--tasks", type=int, default=6000)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--instructions", action="store_true",
                        help="count instructions under callgrind instead of timing (--tasks 2000 is plenty)")
    args = parser.parse_args(argv)
    trees = [Path(t).resolve() for t in args.trees.split(",") if t]
    if len(set(trees)) != len(trees):
        parser.error("each tree once: rounds interleave them")
    out = args.out or RESULTS / f"store-{time.strftime('%Y%m%d-%H%M%S')}.json"
    command = "python -m bench store " + " ".join(argv if argv is not None else sys.argv[1:])
    if args.instructions:
        if shutil.which("valgrind") is None:
            print("--instructions needs valgrind (apt-get install valgrind)", file=sys.stderr)
            return 2
        summary = _instructions_table(trees, args.tasks)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"command": command, "trees": summary}, indent=2) + "\n")
        print(f"results: {out}")
        return 0
    found: dict[str, list[dict[str, float]]] = {str(t): [] for t in trees}
    for run in range(args.rounds):
        for tree in trees:
            figures = measure(tree, args.tasks)
            found[str(tree)].append(figures)
            print(f"  round {run + 1}  {tree.name:<12} CPU {figures['cpu_us']:6.0f} µs/task  "
                  f"wall {figures['wall_us']:6.0f} µs/task", file=sys.stderr, flush=True)
    base = statistics.median(f["cpu_us"] for f in found[str(trees[0])])
    print(f"\nmedians of {args.rounds} interleaved rounds, {args.tasks} tasks each (submit + sandbox settle, SQLite)\n")
    # The machine's speed drifts between rounds more than trees differ: each round's own ratio to the
    # first tree (measured moments apart) is the steadier figure.
    print("| tree | commit | CPU µs/task | × first tree | × first tree, median of rounds' ratios | wall µs/task |")
    print("|---|---|---:|---:|---:|---:|")
    summary = {}
    for tree in trees:
        cpu = statistics.median(f["cpu_us"] for f in found[str(tree)])
        wall = statistics.median(f["wall_us"] for f in found[str(tree)])
        paired = statistics.median(f["cpu_us"] / b["cpu_us"] for f, b in zip(found[str(tree)], found[str(trees[0])],
                                                                           strict=True))
        summary[str(tree)] = {"commit": _commit(tree), "cpu_us": cpu, "wall_us": wall, "ratio": cpu / base,
                              "paired_ratio": paired, "rounds": found[str(tree)]}
        print(f"| {tree.name} | {summary[str(tree)]['commit']} | {cpu:.0f} | {cpu / base:.2f} | {paired:.2f} "
              f"| {wall:.0f} |")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"command": command, "trees": summary}, indent=2) + "\n")
    print(f"results: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
