"""Client efficiency (issue 4): HTTP requests per solved task and wall time for many concurrent solves.

One local ``capgate serve`` (sandbox keys, sandbox delay ``--delay`` seconds, no OCR worker), then, in
the same run and one after the other, ``--tasks`` concurrent normal-image solves with:

* ``capgate``   :class:`capgate.client.AsyncClient`, one client, ``asyncio.gather`` of every solve;
* ``captchaai`` the official SDK 1.0.1's ``AsyncCaptchaAI`` the same way (its startup ``threadsinfo``
                call included in its count).

Each client gets its own fresh sandbox key. Images are real captchas from ``../shared/data/kaggle_v2``
(generated PNGs when absent), each task carrying a unique ``textinstructions`` so that no submit is a
duplicate of a pending one. Requests are counted at the client's transport: every request any
``httpx.AsyncHTTPTransport`` of this process sends, by path.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import datetime as dt
import io
import json
import platform
import random
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench._server import DATA, REPO, start_capgate
from capgate.client import AsyncClient

RESULTS = REPO / "bench" / "results"
TARGET_REQUESTS_PER_TASK = 1.2


@dataclass
class Run:
    client: str
    tasks: int
    solved: int
    errors: dict[str, int]
    requests: dict[str, int]
    wall_s: float
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def total_requests(self) -> int:
        return sum(self.requests.values())

    @property
    def per_task(self) -> float:
        return self.total_requests / self.solved if self.solved else float("inf")


class RequestCounter:
    """Counts what every ``httpx.AsyncHTTPTransport`` in this process sends, by URL path."""

    def __init__(self) -> None:
        self.counts: collections.Counter[str] = collections.Counter()
        self._original = httpx.AsyncHTTPTransport.handle_async_request

    def __enter__(self) -> RequestCounter:
        original = self._original
        counts = self.counts

        async def counting(transport: httpx.AsyncHTTPTransport, request: httpx.Request) -> httpx.Response:
            counts[request.url.path.rsplit("/", 1)[-1] or "/"] += 1
            return await original(transport, request)

        setattr(httpx.AsyncHTTPTransport, "handle_async_request", counting)  # noqa: B010
        return self

    def __exit__(self, *exc: object) -> None:
        setattr(httpx.AsyncHTTPTransport, "handle_async_request", self._original)  # noqa: B010


def corpus(count: int) -> list[bytes]:
    folder = DATA / "kaggle_v2"
    files = sorted(folder.glob("*.png")) if folder.is_dir() else []
    if files:
        return [files[i % len(files)].read_bytes() for i in range(count)]
    from PIL import Image, ImageDraw

    rng = random.Random(7)
    images = []
    for i in range(min(count, 64)):
        image = Image.new("L", (200, 50), 230)
        draw = ImageDraw.Draw(image)
        for _ in range(12):
            draw.line([(rng.randrange(200), rng.randrange(50)) for _ in range(2)], fill=rng.randrange(120))
        draw.text((30, 15), f"{i:05d}", fill=0)
        buffer = io.BytesIO()
        image.save(buffer, "PNG")
        images.append(buffer.getvalue())
    return [images[i % len(images)] for i in range(count)]


async def _gather(count: int, solve: Callable[[int], Awaitable[object]]) -> tuple[int, dict[str, int]]:
    outcomes = await asyncio.gather(*(solve(i) for i in range(count)), return_exceptions=True)
    errors: collections.Counter[str] = collections.Counter()
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            errors[f"{type(outcome).__name__}: {str(outcome)[:80]}"] += 1
    return count - sum(errors.values()), dict(errors)


async def run_capgate(url: str, key: str, images: Sequence[bytes], tag: str) -> Run:
    with RequestCounter() as counter:
        started = time.perf_counter()
        async with AsyncClient(url, key, timeout=120) as client:
            solved, errors = await _gather(len(images), lambda i: client.normal(
                images[i], instructions=f"{tag} {i}"))
            engine = client._engine
        wall = time.perf_counter() - started
    return Run("capgate AsyncClient", len(images), solved, errors, dict(counter.counts), wall,
               {"batch": engine.batch, "wait": engine.wait})


async def run_captchaai(url: str, key: str, images: Sequence[bytes], tag: str) -> Run:
    from captchaai import AsyncCaptchaAI

    with RequestCounter() as counter:
        started = time.perf_counter()
        solver = await AsyncCaptchaAI.create(api_key=key, base_url=url)
        try:
            solved, errors = await _gather(len(images), lambda i: solver.normal(
                images[i], instructions=f"{tag} {i}"))
        finally:
            await solver._transport.aclose()
        wall = time.perf_counter() - started
    return Run("captchaai AsyncCaptchaAI 1.0.1", len(images), solved, errors, dict(counter.counts), wall)


def table(runs: Sequence[Run]) -> str:
    head = f"{'client':<32} {'tasks':>6} {'solved':>6} {'in.php':>7} {'res.php':>8} {'other':>6} " \
           f"{'req/task':>9} {'wall s':>7}"
    lines = [head, "-" * len(head)]
    for run in runs:
        other = run.total_requests - run.requests.get("in.php", 0) - run.requests.get("res.php", 0)
        lines.append(f"{run.client:<32} {run.tasks:>6} {run.solved:>6} {run.requests.get('in.php', 0):>7} "
                     f"{run.requests.get('res.php', 0):>8} {other:>6} {run.per_task:>9.3f} {run.wall_s:>7.2f}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.client", description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--delay", type=float, default=1.0, help="sandbox answer delay in seconds")
    parser.add_argument("--skip-sdk", action="store_true", help="measure capgate's client only")
    parser.add_argument("--out", type=Path, default=None, help="JSON file (default bench/results/...)")
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))

    images = corpus(args.tasks)
    runs: list[Run] = []
    with tempfile.TemporaryDirectory(prefix="capgate-bench-client-") as tmp, \
            start_capgate(Path(tmp), env={"CAPGATE_SANDBOX_DELAY": str(args.delay)}, args=["--no-ocr"]) as server:
        tag = dt.datetime.now().strftime("%H%M%S")
        key = server.create_key(sandbox=True, threads=args.tasks * 2, balance="1000")
        runs.append(asyncio.run(run_capgate(server.base_url, key, images, f"capgate {tag}")))
        if not args.skip_sdk:
            key = server.create_key(sandbox=True, threads=args.tasks * 2, balance="1000")
            runs.append(asyncio.run(run_captchaai(server.base_url, key, images, f"sdk {tag}")))

    print(f"{args.tasks} concurrent sandbox solves (normal image), sandbox delay {args.delay:g} s, "
          f"local capgate on {platform.node()}")
    print(table(runs))
    for run in runs:
        for error, count in run.errors.items():
            print(f"  {run.client}: {count} × {error}", file=sys.stderr)
    ours = runs[0]
    met = ours.solved == ours.tasks and ours.per_task <= TARGET_REQUESTS_PER_TASK
    print(f"target ≤ {TARGET_REQUESTS_PER_TASK} requests/task for AsyncClient: "
          f"{'met' if met else 'NOT met'} ({ours.per_task:.3f})")

    RESULTS.mkdir(parents=True, exist_ok=True)
    out = args.out or RESULTS / f"client-{dt.datetime.now():%Y%m%d-%H%M%S}.json"
    out.write_text(json.dumps({
        "bench": "client", "when": dt.datetime.now().isoformat(timespec="seconds"),
        "python": platform.python_version(), "machine": platform.machine(), "tasks": args.tasks,
        "sandbox_delay_s": args.delay, "target_requests_per_task": TARGET_REQUESTS_PER_TASK,
        "runs": [{**asdict(run), "total_requests": run.total_requests, "requests_per_task": run.per_task}
                 for run in runs],
    }, indent=2) + "\n")
    print(f"wrote {out.relative_to(REPO) if out.is_relative_to(REPO) else out}", file=sys.stderr)
    return 0 if met else 1


if __name__ == "__main__":
    raise SystemExit(main())
