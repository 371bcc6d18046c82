"""A real capgate server process for integration tests and benchmarks (yours and ours).

::

    from capgate.testing import start_server

    with start_server(tmp_path, env={"CAPGATE_SANDBOX_DELAY": "0.2"}) as server:
        key = server.create_key(sandbox=True)
        # point your CaptchaAI / 2captcha integration at server.base_url with that key

Each server gets its own SQLite file in ``workdir``, a free loopback port, and the real CLI; it is
ready once ``/healthz`` answers and is stopped (SIGTERM, then SIGKILL) when the block ends.
"""

from __future__ import annotations

import contextlib
import os
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx


def resident_memory(pid: int) -> int:
    """Resident memory of process ``pid`` and its children, in bytes (Linux ``/proc``): a server's
    worker processes are its children."""
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            status = (entry / "status").read_text() if int(entry.name) == pid or parent == pid else ""
        except (OSError, IndexError, ValueError):
            continue  # gone meanwhile
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1]) * 1024
    return total


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class ServerProcess:
    """A server process on ``base_url``; ``pid`` is what a profiler attaches to."""

    base_url: str
    env: dict[str, str]
    log: Path
    db: Path  # the SQLite file (unused when CAPGATE_DB in env names PostgreSQL)
    cwd: Path | None = None
    process: subprocess.Popen[bytes] | None = None
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

    def cli(self, *args: str, check: bool = True, env: Mapping[str, str] | None = None,
            ) -> subprocess.CompletedProcess[str]:
        """``capgate ARGS`` against this server's database."""
        return subprocess.run([sys.executable, "-m", "capgate", *args], env={**self.env, **(env or {})},
                              capture_output=True, text=True, check=check, cwd=self.cwd, timeout=120)

    def create_key(self, *, sandbox: bool = True, threads: int = 5, balance: str = "0") -> str:
        args = ["keys", "create", "--threads", str(threads), "--balance", balance]
        if sandbox:
            args.append("--sandbox")
        return self.cli(*args).stdout.strip().splitlines()[-1]


def _wait_ready(server: ServerProcess, path: str, verify: str | bool, timeout: float) -> None:
    # httpx takes a CA bundle as an SSL context (a path string is deprecated).
    context: ssl.SSLContext | bool = ssl.create_default_context(cafile=verify) if isinstance(verify, str) else verify
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process is not None and server.process.poll() is not None:
            raise RuntimeError(f"server exited with {server.process.returncode}:\n{server.log.read_text()}")
        try:
            if httpx.get(server.url(path), timeout=1.0, verify=context).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"server did not start in {timeout:.0f} s:\n{server.log.read_text()}")


@contextlib.contextmanager
def run_process(command: Sequence[str], server: ServerProcess, ready_path: str = "healthz",
                verify: str | bool = True, timeout: float = 60.0) -> Iterator[ServerProcess]:
    """Start ``command`` for ``server``, wait until ``ready_path`` answers 200, stop it afterwards."""
    with open(server.log, "wb") as log:
        server.process = subprocess.Popen(list(command), env=server.env, stdout=log, stderr=subprocess.STDOUT,
                                          cwd=server.cwd)
        try:
            _wait_ready(server, ready_path, verify, timeout)
            yield server
        finally:
            server.process.terminate()
            try:
                server.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                server.process.kill()
                server.process.wait()


@contextlib.contextmanager
def start_server(workdir: Path, *, env: Mapping[str, str] | None = None, args: Sequence[str] = (),
                 scheme: str = "http", host: str = "127.0.0.1", verify: str | bool = True,
                 cwd: Path | None = None) -> Iterator[ServerProcess]:
    """``capgate serve`` on a free port with a fresh SQLite file in ``workdir``."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    db = workdir / "capgate.db"
    full_env = {**os.environ, "CAPGATE_DB": str(db), **(env or {})}
    server = ServerProcess(f"{scheme}://{host}:{port}", full_env, workdir / "server.log", db=db, cwd=cwd)
    command = [sys.executable, "-m", "capgate", "serve", "--host", host, "--port", str(port),
               "--log-level", "warning", *args]
    with run_process(command, server, "healthz", verify) as running:
        yield running
