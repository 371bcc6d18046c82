"""Real server processes for benchmarks: ``capgate serve`` and the bare app, each on a free port.

Built on :mod:`capgate.testing` (as the test suite is): the real CLI, its own SQLite file, a free
loopback port, ready once ``/healthz`` (or ``/``) answers 200.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from capgate.testing import ServerProcess, free_port, run_process, start_server

REPO = Path(__file__).resolve().parent.parent
DATA = REPO.parent / "shared" / "data"


Process = ServerProcess


@contextlib.contextmanager
def start_capgate(workdir: Path, *, env: Mapping[str, str] | None = None, args: Sequence[str] = (),
                  ) -> Iterator[Process]:
    """``capgate serve`` on a free loopback port with a fresh SQLite file in ``workdir``."""
    with start_server(workdir, env=env, args=args, cwd=REPO) as server:
        yield server


@contextlib.contextmanager
def start_bare(workdir: Path) -> Iterator[Process]:
    """The bare Starlette app of :mod:`bench._bare`, served the way ``capgate serve`` serves."""
    with _start_module(workdir, "bench._bare", "bare") as server:
        yield server


@contextlib.contextmanager
def start_floor(workdir: Path, mode: str) -> Iterator[Process]:
    """The submit floor of :mod:`bench._floor` in ``mode``, on a fresh SQLite file in ``workdir``."""
    with _start_module(workdir, "bench._floor", f"floor-{mode}", "--mode", mode,
                       "--db", str(workdir / f"floor-{mode}.db")) as server:
        yield server


@contextlib.contextmanager
def _start_module(workdir: Path, module: str, name: str, *args: str) -> Iterator[Process]:
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    server = Process(f"http://127.0.0.1:{port}", dict(os.environ), workdir / f"{name}.log", workdir / "unused.db",
                     cwd=REPO)
    command = [sys.executable, "-m", module, "--port", str(port), "--log-level", "warning", *args]
    with run_process(command, server, "") as running:
        yield running
