"""Real server processes for benchmarks: ``capgate serve`` and the bare app, each on a free port.

Mirrors ``tests/serverproc.py`` (benchmarks do not import from ``tests/``): the real CLI, its own
SQLite file, a free loopback port, ready once ``/healthz`` (or ``/``) answers 200.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
DATA = REPO.parent / "shared" / "data"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Process:
    """A server process on ``base_url``; ``pid`` is what a profiler attaches to."""

    base_url: str
    env: dict[str, str]
    log: Path
    process: subprocess.Popen[bytes] | None = None
    db: Path | None = None
    keys: dict[str, str] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    @property
    def port(self) -> int:
        return int(self.base_url.rsplit(":", 1)[1])

    def url(self, path: str) -> str:
        return f"{self.base_url}/{path.lstrip('/')}"

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        """``capgate ARGS`` against this server's database."""
        return subprocess.run([sys.executable, "-m", "capgate", *args], env=self.env, capture_output=True,
                              text=True, check=True, cwd=REPO, timeout=120)

    def create_key(self, *, sandbox: bool = True, threads: int = 5, balance: str = "0") -> str:
        args = ["keys", "create", "--threads", str(threads), "--balance", balance]
        if sandbox:
            args.append("--sandbox")
        return self.cli(*args).stdout.strip().splitlines()[-1]


def _wait_ready(server: Process, path: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process is not None and server.process.poll() is not None:
            raise RuntimeError(f"server exited with {server.process.returncode}:\n{server.log.read_text()}")
        try:
            if httpx.get(server.url(path), timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"server did not start in {timeout:.0f} s:\n{server.log.read_text()}")


@contextlib.contextmanager
def _run(command: Sequence[str], server: Process, ready_path: str) -> Iterator[Process]:
    with open(server.log, "wb") as log:
        server.process = subprocess.Popen(list(command), env=server.env, stdout=log, stderr=subprocess.STDOUT,
                                          cwd=REPO)
        try:
            _wait_ready(server, ready_path)
            yield server
        finally:
            server.process.terminate()
            try:
                server.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                server.process.kill()
                server.process.wait()


@contextlib.contextmanager
def start_capgate(workdir: Path, *, env: Mapping[str, str] | None = None, args: Sequence[str] = (),
                  ) -> Iterator[Process]:
    """``capgate serve`` on a free loopback port with a fresh SQLite file in ``workdir``."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    db = workdir / "capgate.db"
    full_env = {**os.environ, "CAPGATE_DB": str(db), **(env or {})}
    server = Process(f"http://127.0.0.1:{port}", full_env, workdir / "capgate.log", db=db)
    command = [sys.executable, "-m", "capgate", "serve", "--host", "127.0.0.1", "--port", str(port),
               "--log-level", "warning", *args]
    with _run(command, server, "healthz") as running:
        yield running


@contextlib.contextmanager
def start_bare(workdir: Path) -> Iterator[Process]:
    """The bare Starlette app of :mod:`bench._bare`, served the way ``capgate serve`` serves."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    server = Process(f"http://127.0.0.1:{port}", dict(os.environ), workdir / "bare.log")
    command = [sys.executable, "-m", "bench._bare", "--port", str(port), "--log-level", "warning"]
    with _run(command, server, "") as running:
        yield running
