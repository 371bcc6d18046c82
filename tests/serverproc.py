"""The test suite's real server processes: :mod:`capgate.testing` with the suite's defaults.

Every one of them logs a line per request (``--log-level info``), and when it stops, its whole log is
read for anything shaped like a secret: an API key, a worker token or an admin token. No request line,
warning or traceback may ever hold one.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from capgate.testing import ServerProcess, free_port
from capgate.testing import start_server as _start_server

REPO = Path(__file__).resolve().parent.parent
DATA = REPO.parent / "shared" / "data"
# Fast sandbox answers, one OCR process: the suite runs many servers on two cores.
DEFAULTS = {"CAPGATE_SANDBOX_DELAY": "0.2", "CAPGATE_OCR_PROCESSES": "1"}

# A 32-character key (new_key: lowercase hex) or a worker / admin token, standing alone.
SECRET = re.compile(r"(?<![0-9A-Za-z_])(?:[0-9a-f]{32}|cg[wa]_[0-9a-f]{40})(?![0-9A-Za-z_])")

__all__ = ["DATA", "REPO", "SECRET", "ServerProcess", "assert_no_secrets", "free_port", "start_server"]


def assert_no_secrets(log: Path) -> None:
    text = log.read_text(errors="replace") if log.exists() else ""
    found = [line for line in text.splitlines() if SECRET.search(line)]
    assert not found, f"{len(found)} line(s) of {log} hold something shaped like a key or token:\n" + \
        "\n".join(found[:5])


@contextlib.contextmanager
def start_server(workdir: Path, *, env: Mapping[str, str] | None = None, args: Sequence[str] = (),
                 scheme: str = "http", host: str = "127.0.0.1", verify: str | bool = True,
                 ) -> Iterator[ServerProcess]:
    with _start_server(workdir, env={**DEFAULTS, **(env or {})}, args=["--log-level", "info", *args], scheme=scheme,
                       host=host, verify=verify, cwd=REPO) as server:
        yield server
    assert_no_secrets(server.log)
