"""``capgate solve``'s progress bar (issue 16, item 3): on a terminal's stderr only, always its last line,
rows above it and nothing of it left at the end; nothing of it in pipes.

A real ``capgate solve`` process against the suite's server, its stderr (and stdout) a pseudo-terminal.
What the terminal shows is replayed from the bytes it got (``\\r``, erase-line and ``\\n``, all a
one-line bar uses), so a row printed onto the bar, or a bar left behind, shows as a wrong line.
"""

from __future__ import annotations

import csv
import fcntl
import io
import os
import re
import struct
import subprocess
import sys
import termios
import time
import uuid
from pathlib import Path

import pytest

from tests.serverproc import REPO, ServerProcess
from tests.test_client_command import write_png

FILES = 6
ESCAPE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


@pytest.fixture()
def images(tmp_path: Path) -> list[str]:
    unique = uuid.uuid4().hex[:8]
    return [str(write_png(tmp_path / f"p{i}.png", f"{unique}-{i}")) for i in range(FILES)]


def solve_argv(server: ServerProcess, key: str, images: list[str], fmt: str) -> list[str]:
    # One at a time: the sandbox answers each after 0.2 s, so the bar is up for a while.
    return [sys.executable, "-m", "capgate", "solve", *images, "--server", server.base_url, "--key", key,
            "--concurrency", "1", "--format", fmt]


def terminal(columns: int = 100) -> tuple[int, int]:
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 30, columns, 0, 0))
    return master, slave


def run_on_terminal(argv: list[str], stdout_too: bool) -> tuple[str, bytes]:
    """Run ``argv`` with its stderr (and its stdout, with ``stdout_too``) on a pseudo-terminal: stdout
    as text when it is a pipe, and the bytes the terminal got."""
    master, slave = terminal()
    process = subprocess.Popen(argv, cwd=REPO, stdin=subprocess.DEVNULL, stderr=slave,
                               stdout=slave if stdout_too else subprocess.PIPE)
    os.close(slave)
    got = bytearray()
    deadline = time.monotonic() + 60
    out = b""
    try:
        if process.stdout is not None:
            os.set_blocking(master, False)
        while time.monotonic() < deadline:
            try:
                chunk = os.read(master, 65536)
            except BlockingIOError:
                if process.poll() is not None and process.stdout is not None:
                    break
                if process.stdout is not None:
                    time.sleep(0.02)
                continue
            except OSError:  # EIO: every process holding the terminal has closed it
                break
            if not chunk:
                break
            got += chunk
        if process.stdout is not None:
            out = process.stdout.read()
        process.wait(timeout=30)
    finally:
        os.close(master)
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, bytes(got).decode(errors="replace") + out.decode(errors="replace")
    return out.decode(), bytes(got)


def screen(data: bytes) -> list[str]:
    """The lines a terminal shows for ``data``: text overwrites from the cursor, ``\\r`` goes to the
    line's start, ``ESC[2K`` blanks the line, ``\\n`` moves down; colours are dropped."""
    lines: list[str] = []
    line: list[str] = []
    column = 0
    text = data.decode()
    i = 0
    while i < len(text):
        char = text[i]
        match = ESCAPE.match(text, i)
        if match:
            if match.group() == "\x1b[2K":
                line = []
            elif not match.group().endswith("m"):
                raise AssertionError(f"a control the replay does not know: {match.group()!r}")
            i = match.end()
            continue
        if char == "\r":
            column = 0
        elif char == "\n":
            lines.append("".join(line).rstrip())
            line, column = [], 0
        else:
            line[column:column + 1] = [char] if column < len(line) else [*" " * (column - len(line)), char]
            column += 1
        i += 1
    lines.append("".join(line).rstrip())
    return lines


def test_on_a_terminal_rows_go_above_the_bar_and_the_bar_goes(server: ServerProcess, sandbox_key: str,
                                                               images: list[str]) -> None:
    _, shown = run_on_terminal(solve_argv(server, sandbox_key, images, "csv"), stdout_too=True)
    assert b"solving" in shown and "━".encode() in shown, shown  # the bar was drawn
    assert f"{FILES}/{FILES}".encode() in shown, shown
    lines = screen(shown)
    assert lines[-1] == "", lines  # the bar is erased at the end, the cursor on a clean line
    rows = list(csv.DictReader(io.StringIO("\n".join(lines[:-1]) + "\n")))
    assert lines[0] == "file,task_id,answer,error", lines
    assert sorted(row["file"] for row in rows) == sorted(images), lines  # not one row printed onto the bar
    assert all(row["answer"] and row["task_id"].isdigit() and not row["error"] for row in rows), lines


def test_results_to_a_pipe_while_the_bar_is_on_the_terminal(server: ServerProcess, sandbox_key: str,
                                                            images: list[str]) -> None:
    out, shown = run_on_terminal(solve_argv(server, sandbox_key, images, "jsonl"), stdout_too=False)
    assert "\x1b" not in out and "solving" not in out and "\r" not in out, out
    assert len(out.splitlines()) == FILES and all(line.startswith('{"file": ') for line in out.splitlines())
    assert b"solving" in shown and screen(shown) == [""], shown  # drawn, then erased


def test_nothing_of_the_bar_in_pipes(server: ServerProcess, sandbox_key: str, images: list[str]) -> None:
    done = subprocess.run(solve_argv(server, sandbox_key, images, "csv"), cwd=REPO, capture_output=True,
                          timeout=60, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr
    assert done.stderr == b""
    out = done.stdout.decode()
    assert "\x1b" not in out and "\r" not in out and "solving" not in out, out
    assert out.splitlines()[0] == "file,task_id,answer,error" and len(out.splitlines()) == FILES + 1, out
