"""The front door under attack (issue 11): one hostile client must not stall anyone else.

A real ``capgate serve`` (Granian) with the limits set small, so that each attack shows its effect
within seconds; raw sockets do what no HTTP library would. While each attack runs, a normal client
polls from its own connection: every poll must be answered, correctly, and the server's memory must
stay within the bound the limits promise. (How fast those polls answer under attack is a figure, not
an assertion: BENCHMARKS.md, "The front door".)
"""

from __future__ import annotations

import contextlib
import socket
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from capgate.testing import resident_memory
from tests.serverproc import ServerProcess, start_server
from tests.workerkit import png_b64

MiB = 1024 * 1024
# Small limits, so each attack ends within seconds; none of them exempts loopback, the test's address.
LIMITS = {
    "CAPGATE_BAN_EXEMPT": "",
    "CAPGATE_HEADER_TIMEOUT": "2",
    "CAPGATE_BODY_TIMEOUT": "3",
    "CAPGATE_ADDRESS_BODY_MEMORY": str(32 * MiB),
    "CAPGATE_PER_ADDRESS": "400",
    "CAPGATE_BAN_THRESHOLD": "100000",
}
RSS_BOUND = 160 * MiB  # what an attack may add to the server's memory, all its processes together


@pytest.fixture(scope="module")
def door(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with start_server(tmp_path_factory.mktemp("door"), env=LIMITS, args=["--no-ocr", "--log-level", "debug"]) as s:
        yield s


@pytest.fixture(scope="module")
def key(door: ServerProcess) -> str:
    return door.create_key(sandbox=True, threads=1000, balance="100")


@dataclass
class Watch:
    """A normal client's polls, one after another on one connection, and the server's peak memory."""

    server: ServerProcess
    url: str
    expect: str
    latencies: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    peak_rss: int = 0
    base_rss: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        with httpx.Client(timeout=10.0) as client:
            while not self._stop.is_set():
                started = time.perf_counter()
                try:
                    reply = client.get(self.url)
                    if reply.status_code != 200 or reply.text != self.expect:
                        self.failures.append(f"{reply.status_code} {reply.text[:80]}")
                except httpx.HTTPError as exc:
                    self.failures.append(f"{type(exc).__name__}: {exc}")
                self.latencies.append(time.perf_counter() - started)
                self.peak_rss = max(self.peak_rss, resident_memory(self.server.pid))
                time.sleep(0.02)

    def stop(self) -> None:
        self._stop.set()


@contextlib.contextmanager
def watched(server: ServerProcess, key: str) -> Iterator[Watch]:
    """Polls of a pending sandbox task (it answers in 60 s) while the block runs; then checks them."""
    submitted = httpx.post(server.url("in.php"), data={"key": key, "method": "base64", "body": png_b64(),
                                                       "sandbox": "sandbox-slow-60"}).text
    assert submitted.startswith("OK|"), submitted
    watch = Watch(server, server.url(f"res.php?key={key}&action=get&id={submitted[3:]}"), "CAPCHA_NOT_READY")
    watch.base_rss = resident_memory(server.pid)
    thread = threading.Thread(target=watch.run, daemon=True)
    thread.start()
    while not watch.latencies and thread.is_alive():
        time.sleep(0.01)
    started = time.monotonic()
    try:
        yield watch
    finally:
        time.sleep(max(0.0, 1.0 - (time.monotonic() - started)))  # polls go on a moment after the attack
        watch.stop()
        thread.join(15)
    assert watch.latencies, "no poll completed"
    assert watch.failures == [], watch.failures[:5]
    assert watch.peak_rss - watch.base_rss < RSS_BOUND, (watch.base_rss, watch.peak_rss)
    latencies = sorted(watch.latencies)
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    print(f"\n  {len(latencies)} polls under attack, p99 {p99 * 1000:.1f} ms, "
          f"rss +{(watch.peak_rss - watch.base_rss) / MiB:.0f} MiB")


def _connect(server: ServerProcess) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=10)


def _closed_by_server(sock: socket.socket, within: float) -> bytes:
    """What the server sent before it closed the connection (waits at most ``within`` seconds)."""
    sock.settimeout(within)
    received = b""
    with contextlib.suppress(ConnectionError):
        while chunk := sock.recv(65536):
            received += chunk
    return received


def _in_threads(count: int, target: Callable[[int], None]) -> None:
    threads = [threading.Thread(target=target, args=(i,), daemon=True) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)


def _task_count(server: ServerProcess, key: str) -> int:
    """Tasks in the server's database (SQLite, read beside the server as an operator would)."""
    with contextlib.closing(sqlite3.connect(server.db)) as db:
        count: int = db.execute("SELECT count(*) FROM tasks").fetchone()[0]
    return count


def test_a_growing_header_is_refused_and_the_connection_closed(door: ServerProcess, key: str) -> None:
    closed: list[bytes] = []

    def attack(_: int) -> None:
        with _connect(door) as sock:
            sock.sendall(b"GET /res.php HTTP/1.1\r\nHost: x\r\nX-Grow: ")
            with contextlib.suppress(OSError):
                for _ in range(55):
                    sock.sendall(b"a" * MiB)
            closed.append(_closed_by_server(sock, 10))

    with watched(door, key):
        _in_threads(5, attack)
    assert len(closed) == 5
    assert all(reply == b"" or reply.startswith(b"HTTP/1.1 431") for reply in closed), closed


def test_too_many_headers_are_refused(door: ServerProcess) -> None:
    with _connect(door) as sock:
        headers = b"".join(b"X-%d: 1\r\n" % i for i in range(150))
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n")
        assert _closed_by_server(sock, 10).startswith(b"HTTP/1.1 431")


def test_a_head_sent_too_slowly_is_dropped(door: ServerProcess, key: str) -> None:
    """1,100 connections that send half a head and stop: each dropped at the header timeout."""
    socks: list[socket.socket] = []
    with watched(door, key):
        for _ in range(1100):
            sock = _connect(door)
            sock.sendall(b"GET /res.php?key=")
            socks.append(sock)
        ends = [_closed_by_server(sock, 10) for sock in socks]
    for sock in socks:
        sock.close()
    assert all(end in (b"",) or end.startswith(b"HTTP/1.1 408") for end in ends), {e[:40] for e in ends}


def test_an_idle_connection_is_closed(door: ServerProcess) -> None:
    with _connect(door) as sock:
        assert _closed_by_server(sock, 10) == b""


def test_stalled_bodies_are_dropped_and_bounded_in_memory(door: ServerProcess, key: str) -> None:
    """40 connections declare 8 MiB, send all but one byte and stall: at most ``address_body_memory``
    of them is held, the rest refused before their body is read, and none outlives the body timeout."""
    balance = _task_count(door, key)
    ends: list[bytes] = []

    def attack(_: int) -> None:
        declared = 8 * MiB
        head = (f"POST /in.php HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n"
                f"Content-Length: {declared}\r\n\r\nkey={key}&method=base64&body=").encode()
        with _connect(door) as sock:
            with contextlib.suppress(OSError):
                sock.sendall(head)
                sent = len(head) - head.index(b"\r\n\r\n") - 4
                while sent < declared - 1:
                    piece = min(MiB, declared - 1 - sent)
                    sock.sendall(b"A" * piece)
                    sent += piece
            ends.append(_closed_by_server(sock, 10))

    with watched(door, key):
        _in_threads(40, attack)
    assert len(ends) == 40
    statuses = {end.split(b"\r\n", 1)[0] for end in ends}
    assert statuses <= {b"", b"HTTP/1.1 408 Request Timeout", b"HTTP/1.1 503 Service Unavailable"}, statuses
    assert _task_count(door, key) == balance + 1  # the watching client's task alone


@pytest.mark.parametrize("with_key", [False, True])
def test_a_body_of_a_million_fields_is_refused_at_once(door: ServerProcess, key: str, with_key: bool) -> None:
    body = (f"key={key}&method=base64&".encode() if with_key else b"") + b"&" * (8 * MiB - 200)
    replies: list[str] = []

    def attack(_: int) -> None:
        replies.append(httpx.post(door.url("in.php"), content=body, timeout=20,
                                  headers={"Content-Type": "application/x-www-form-urlencoded"}).text)

    with watched(door, key):
        _in_threads(3, attack)
    assert replies == ["ERROR_BAD_PARAMETERS"] * 3


def test_only_the_methods_parameters_are_stored(door: ServerProcess, key: str) -> None:
    """Parameters the method's registry row does not know never reach the store or a worker."""
    from capgate.server.params import RequestParams
    from capgate.server.submit import build_task
    from capgate.settings import Settings

    request = RequestParams(values={"key": key, "method": "base64", "body": png_b64(), "numeric": "1",
                                    **{f"junk{i}": "x" * 1000 for i in range(200)}})
    task = build_task(request, Settings(), sandbox=True)
    assert task.params == {"numeric": "1"}


def test_an_aborted_post_creates_no_task(door: ServerProcess, key: str) -> None:
    balance = _task_count(door, key)
    body = f"key={key}&method=base64&body={png_b64()}".encode()
    with _connect(door) as sock:
        sock.sendall(b"POST /in.php HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n"
                     b"Content-Length: %d\r\n\r\n" % (len(body) + 5000) + body)
        time.sleep(0.3)
    with _connect(door) as sock:  # and once more, closing the moment the body is sent
        sock.sendall(b"POST /in.php HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n"
                     b"Content-Length: %d\r\n\r\n" % (len(body) + 1) + body)
    time.sleep(1.0)  # long enough for a sandbox answer (0.2 s) and its charge, had a task been made
    assert _task_count(door, key) == balance
    assert "the client left before its body ended" in door.log.read_text()


def test_malformed_multipart_is_error_upload_with_one_debug_line(door: ServerProcess, key: str) -> None:
    bodies = [
        ("b" * 300, b"--" + b"b" * 300 + b"\r\nContent-Disposition: form-data; name=key\r\n\r\nx\r\n"),
        ("xyz", b"garbage without any boundary at all"),
        ("xyz", b"--xyz\r\nContent-Disposition: form-data\r\n\r\nno name\r\n--xyz--\r\n"),
        ("xyz", b"--xyz\r\nbroken header line\r\n\r\n"),
    ]
    before = door.log.read_text()
    for boundary, body in bodies:
        reply = httpx.post(door.url("in.php"), content=body,
                           headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
        assert (reply.status_code, reply.text) == (200, "ERROR_UPLOAD")
    added = door.log.read_text()[len(before):]
    assert "Traceback" not in added and "WARNING" not in added, added
    assert added.count("upload refused") == len(bodies), added


def test_one_address_is_capped_in_open_requests(tmp_path: Path) -> None:
    with start_server(tmp_path, env={**LIMITS, "CAPGATE_PER_ADDRESS": "5"}, args=["--no-ocr"]) as server:
        key = server.create_key(sandbox=True, threads=100, balance="1")
        task = httpx.post(server.url("in.php"), data={"key": key, "method": "base64", "body": png_b64(),
                                                      "sandbox": "sandbox-slow-60"}).text[3:]
        statuses: list[int] = []

        def poll(_: int) -> None:
            statuses.append(httpx.get(server.url(f"res.php?key={key}&action=get&id={task}&wait=2"),
                                      timeout=10).status_code)

        _in_threads(12, poll)
        assert sorted(set(statuses)) == [200, 503]
        assert statuses.count(200) >= 5
        reply = httpx.get(server.url(f"res.php?key={key}&action=get&id={task}"))
        assert (reply.status_code, reply.text) == (200, "CAPCHA_NOT_READY")
