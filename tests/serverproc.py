"""The test suite's real server processes: :mod:`capgate.testing` with the suite's defaults."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from capgate.testing import ServerProcess, free_port
from capgate.testing import start_server as _start_server

REPO = Path(__file__).resolve().parent.parent
DATA = REPO.parent / "shared" / "data"
# Fast sandbox answers, one OCR process: the suite runs many servers on two cores.
DEFAULTS = {"CAPGATE_SANDBOX_DELAY": "0.2", "CAPGATE_OCR_PROCESSES": "1"}

__all__ = ["DATA", "REPO", "ServerProcess", "free_port", "start_server"]


@contextlib.contextmanager
def start_server(workdir: Path, *, env: Mapping[str, str] | None = None, args: Sequence[str] = (),
                 scheme: str = "http", host: str = "127.0.0.1", verify: str | bool = True,
                 ) -> Iterator[ServerProcess]:
    with _start_server(workdir, env={**DEFAULTS, **(env or {})}, args=args, scheme=scheme, host=host,
                       verify=verify, cwd=REPO) as server:
        yield server
