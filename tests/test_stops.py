"""Every capgate process stops on Ctrl-C or SIGTERM within 2 s, with one line and no traceback, its
child processes included (issue 16, item 2).

Real processes, started as a terminal starts them: in a session of their own, SIGINT at Python's
default. A Ctrl-C is a SIGINT to the whole foreground process group (the OCR pool's processes get it
too); ``kill``, ``docker stop`` and ``systemctl stop`` send SIGTERM to the main process, systemd to
the whole group as well. The signal goes in right after the process is ready, while its OCR process
is still loading its models: the moment when a stop once printed tracebacks from the pool and took
9.4 s. A server stops with long-polls open (a client's ``wait=N``, a remote worker's claim): they are
answered as the stop begins, not cut with a traceback once the server's grace runs out.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.serverproc import REPO, ServerProcess, free_port, start_server
from tests.workerkit import png_b64, worker_token

STOP_S = 2.0  # the promise: from the signal until the last process of the group is gone
START_S = 60.0  # generous: the suite runs many processes on two cores

# ``python -m capgate`` as a shell at a terminal runs it: a test runner (or a CI script's ``&``) may
# have left SIGINT ignored, which every child would inherit.
LAUNCH = ("import runpy, signal; signal.signal(signal.SIGINT, signal.default_int_handler); "
          "runpy.run_module('capgate', run_name='__main__', alter_sys=True)")

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").is_file() or not hasattr(os, "killpg"),
                                reason="needs /proc and process groups to find every process of a stop")


# (how the signal is sent, the signal): Ctrl-C at a terminal, `kill PID`, systemd's stop.
HOWS = [
    pytest.param("group", signal.SIGINT, id="ctrl-c"),
    pytest.param("leader", signal.SIGTERM, id="sigterm"),
    pytest.param("group", signal.SIGTERM, id="sigterm-to-group"),
]


@dataclass
class Launched:
    process: subprocess.Popen[bytes]
    err: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def stderr(self) -> str:
        return self.err.read_text(errors="replace")


def _stat(pid: str) -> tuple[str, int] | None:
    """A process's state and process group."""
    try:
        fields = (Path("/proc") / pid / "stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return fields[0], int(fields[2])


def group(pgid: int) -> list[int]:
    """The live (not zombie) processes of a process group."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            stat = _stat(entry.name)
            if stat is not None and stat[1] == pgid and stat[0] != "Z":
                found.append(int(entry.name))
    return found


def cmdline(pid: int) -> bytes:
    try:
        return (Path("/proc") / str(pid) / "cmdline").read_bytes()
    except OSError:
        return b""


@contextlib.contextmanager
def launch(args: list[str], env: dict[str, str], workdir: Path) -> Iterator[Launched]:
    err = workdir / f"{args[0]}.err"
    with err.open("wb") as sink:
        process = subprocess.Popen([sys.executable, "-c", LAUNCH, *args], env=env, cwd=REPO,
                                   stdout=subprocess.DEVNULL, stderr=sink, start_new_session=True)
    launched = Launched(process, err)
    try:
        yield launched
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def wait_for_pool(launched: Launched) -> None:
    """Until the OCR pool's process has started (it then loads its models for a second or more)."""
    deadline = time.monotonic() + START_S
    while time.monotonic() < deadline:
        assert launched.process.poll() is None, launched.stderr()
        if any(b"spawn_main" in cmdline(pid) for pid in group(launched.pid)):
            return
        time.sleep(0.05)
    pytest.fail(f"no OCR process started:\n{launched.stderr()}")


def stop_and_check(launched: Launched, how: str, signum: signal.Signals, command: str) -> None:
    before = len(launched.err.read_bytes())
    started = time.monotonic()
    if how == "group":
        os.killpg(launched.pid, signum)
    else:
        launched.process.send_signal(signum)
    left = group(launched.pid)
    while time.monotonic() - started < STOP_S + 3 and (launched.process.poll() is None or left):
        time.sleep(0.02)
        left = group(launched.pid)
    elapsed = time.monotonic() - started
    if launched.process.poll() is None:
        os.kill(launched.pid, signal.SIGUSR1)  # its threads' stacks, into the log the failure shows
        time.sleep(0.5)
    text = launched.stderr()
    assert launched.process.poll() is not None, f"still running {elapsed:.1f} s after {signum.name}:\n{text}"
    assert left == [], f"{len(left)} child process(es) outlived the stop:\n{text}"
    assert elapsed <= STOP_S, f"the stop took {elapsed:.2f} s:\n{text}"
    assert "Traceback" not in text and "KeyboardInterrupt" not in text, text
    name = "Ctrl-C" if signum == signal.SIGINT else signum.name
    assert launched.err.read_bytes()[before:].decode() == f"{command}: stopping ({name})\n", text
    # Ctrl-C: 0 (or 130); SIGTERM: 0, or killed by its own SIGTERM raised again once it has stopped
    # (a server's way of telling a supervisor how it ended).
    assert launched.process.returncode in (0, 130, -signal.SIGTERM), (launched.process.returncode, text)


class Held:
    """A request sent in a thread, held by the server (a long-poll); ``reply`` once answered."""

    def __init__(self, send: Callable[[httpx.Client], httpx.Response]) -> None:
        self.reply: httpx.Response | str | None = None
        self._send = send
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            with httpx.Client(timeout=60.0) as client:
                self.reply = self._send(client)
        except httpx.HTTPError as exc:
            self.reply = f"{type(exc).__name__}: {exc}"

    def result(self) -> httpx.Response | str | None:
        self._thread.join(10.0)
        return self.reply


def wait_held(base: str, kinds: dict[str, int]) -> None:
    """Until the server holds these long-polls (its metrics say so): a request sent from a thread may
    not even have connected yet on a loaded machine, and a fixed sleep once let the stop come first."""
    deadline = time.monotonic() + START_S
    while True:
        text = httpx.get(f"{base}/metrics", timeout=5.0).text
        held = {kind: float(value) for kind, value in
                re.findall(r'^capgate_long_polls_waiting\{kind="(\w+)"\} ([0-9.]+)$', text, re.M)}
        if all(held.get(kind) == n for kind, n in kinds.items()):
            return
        assert time.monotonic() < deadline, held
        time.sleep(0.05)


def cli(env: dict[str, str], *args: str) -> str:
    """``capgate ARGS``' last line."""
    done = subprocess.run([sys.executable, "-m", "capgate", *args], env=env, cwd=REPO, capture_output=True,
                          text=True, timeout=START_S, check=True)
    return done.stdout.strip().splitlines()[-1]


@pytest.mark.parametrize(("how", "signum"), HOWS)
def test_capgate_serve_stops_with_its_ocr_pool(tmp_path: Path, how: str, signum: signal.Signals) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {**os.environ, "CAPGATE_DB": str(tmp_path / "capgate.db"), "CAPGATE_OCR_PROCESSES": "1"}
    key = cli(env, "keys", "create", "--sandbox")
    token = cli(env, "workers", "create", "box", "--methods", "turnstile")
    # The default log level: the HTTP server's own shutdown messages must not add to the one line.
    with launch(["serve", "--host", "127.0.0.1", "--port", str(port)], env, tmp_path) as served:
        deadline = time.monotonic() + START_S
        while True:
            assert served.process.poll() is None, served.stderr()
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{base}/healthz", timeout=1.0).status_code == 200:
                    break
            assert time.monotonic() < deadline, served.stderr()
            time.sleep(0.05)
        submitted = httpx.post(f"{base}/in.php", data={"key": key, "method": "base64", "body": png_b64(),
                                                       "sandbox": "sandbox-slow-60"})
        assert submitted.text.startswith("OK|"), submitted.text
        poll = Held(lambda client: client.get(f"{base}/res.php", params={
            "key": key, "action": "get", "id": submitted.text[3:], "wait": "30"}))
        claim = Held(lambda client: client.post(f"{base}/worker/v1/claim", json={"wait": 30},
                                                headers={"Authorization": f"Bearer {token}"}))
        wait_for_pool(served)
        wait_held(base, {"res": 1, "claim": 1})
        assert poll.reply is None and claim.reply is None, (poll.reply, claim.reply)
        stop_and_check(served, how, signum, "capgate serve")
        answered, claimed = poll.result(), claim.result()
        assert isinstance(answered, httpx.Response) and answered.text == "CAPCHA_NOT_READY", answered
        assert isinstance(claimed, httpx.Response) and claimed.json() == {"task": None}, claimed


@pytest.fixture(scope="module")
def no_ocr_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with start_server(tmp_path_factory.mktemp("stops"), args=["--no-ocr"]) as server:
        yield server


@pytest.mark.parametrize(("how", "signum"), HOWS)
def test_capgate_worker_stops_with_its_ocr_pool(no_ocr_server: ServerProcess, tmp_path: Path, how: str,
                                                signum: signal.Signals) -> None:
    token = worker_token(no_ocr_server, f"stops-{tmp_path.name}", "--methods", "normal")
    args = ["worker", "--ocr", "--server", no_ocr_server.base_url, "--token", token, "--processes", "1"]
    with launch(args, no_ocr_server.env, tmp_path) as worker:
        wait_for_pool(worker)
        stop_and_check(worker, how, signum, "capgate worker")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the parent-death signal is Linux's")
@pytest.mark.parametrize("command", ["serve", "worker"])
def test_a_process_killed_outright_takes_its_children_with_it(no_ocr_server: ServerProcess, tmp_path: Path,
                                                              command: str) -> None:
    """``kill -9`` of the main process (a crash, the OOM killer): its Granian worker process must not go
    on serving the port unsupervised, nor its OCR processes linger (they did, for as long as one looked)."""
    port = free_port()
    env = {**os.environ, "CAPGATE_DB": str(tmp_path / "capgate.db"), "CAPGATE_OCR_PROCESSES": "1"}
    if command == "serve":
        args = ["serve", "--host", "127.0.0.1", "--port", str(port), "--processes", "2"]
    else:
        token = worker_token(no_ocr_server, f"killed-{tmp_path.name}", "--methods", "normal")
        args = ["worker", "--ocr", "--server", no_ocr_server.base_url, "--token", token, "--processes", "1"]
        env = no_ocr_server.env
    with launch(args, env, tmp_path) as launched:
        wait_for_pool(launched)
        if command == "serve":
            deadline = time.monotonic() + START_S
            while True:  # both worker processes up (each runs its own OCR pool)
                spawned = [pid for pid in group(launched.pid) if b"spawn_main" in cmdline(pid)]
                if len(spawned) >= 2:
                    break
                assert time.monotonic() < deadline, launched.stderr()
                time.sleep(0.05)
        before = group(launched.pid)
        assert len(before) >= 3, before  # the main process and its children
        launched.process.kill()
        launched.process.wait()
        deadline = time.monotonic() + 10.0
        while (left := group(launched.pid)) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert left == [], [cmdline(pid) for pid in left]
        if command == "serve":
            with pytest.raises(httpx.ConnectError):
                httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2.0)
