"""A real capgate server process for tests: its own database, a free port, the real CLI."""

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

REPO = Path(__file__).resolve().parent.parent
DATA = REPO.parent / "shared" / "data"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class ServerProcess:
    base_url: str
    db: Path
    env: dict[str, str]
    process: subprocess.Popen[bytes] | None = None
    log: Path | None = None
    keys: dict[str, str] = field(default_factory=dict)

    def cli(self, *args: str, check: bool = True, env: Mapping[str, str] | None = None,
            ) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "capgate", *args], env={**self.env, **(env or {})},
                              capture_output=True, text=True, check=check, cwd=REPO, timeout=120)

    def create_key(self, *, sandbox: bool = True, threads: int = 5, balance: str = "0") -> str:
        args = ["keys", "create", "--threads", str(threads), "--balance", balance]
        if sandbox:
            args.append("--sandbox")
        return self.cli(*args).stdout.strip().splitlines()[-1]

    def url(self, path: str) -> str:
        return f"{self.base_url}/{path.lstrip('/')}"


def _wait_ready(server: ServerProcess, verify: str | bool, timeout: float = 30.0) -> None:
    # httpx takes a CA bundle as an SSL context (a path string is deprecated).
    context: ssl.SSLContext | bool = ssl.create_default_context(cafile=verify) if isinstance(verify, str) else verify
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process is not None and server.process.poll() is not None:
            log = server.log.read_text() if server.log else ""
            raise RuntimeError(f"capgate serve exited with {server.process.returncode}:\n{log}")
        try:
            if httpx.get(server.url("healthz"), timeout=1.0, verify=context).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise RuntimeError("capgate serve did not start in time")


@contextlib.contextmanager
def start_server(workdir: Path, *, env: Mapping[str, str] | None = None, args: Sequence[str] = (),
                 scheme: str = "http", host: str = "127.0.0.1", verify: str | bool = True,
                 ) -> Iterator[ServerProcess]:
    """Run ``capgate serve`` on a free port with a fresh SQLite file in ``workdir``."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    full_env = {
        **os.environ,
        "CAPGATE_DB": str(workdir / "capgate.db"),
        "CAPGATE_SANDBOX_DELAY": "0.2",
        "CAPGATE_OCR_PROCESSES": "1",
        **(env or {}),
    }
    server = ServerProcess(f"{scheme}://{host}:{port}", workdir / "capgate.db", full_env,
                           log=workdir / "server.log")
    with open(server.log or workdir / "server.log", "wb") as log:
        server.process = subprocess.Popen(
            [sys.executable, "-m", "capgate", "serve", "--host", host, "--port", str(port),
             "--log-level", "warning", *args],
            env=full_env, stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
        try:
            _wait_ready(server, verify)
            yield server
        finally:
            server.process.terminate()
            try:
                server.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                server.process.kill()
                server.process.wait()
