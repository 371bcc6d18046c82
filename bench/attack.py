"""Polls under attack (issue 11): a normal client's poll latency and the server's memory while hostile
connections hold the front door, against the same polls with no attack, in the same run.

Attacks, all from loopback (``ban_exempt`` cleared so that loopback is capped like anyone):

* ``slow bodies``   50 connections that declare 8 MiB, send all but the last byte and stall;
* ``growing heads`` 5 connections that send one header line without end, 1 MiB at a time;
* ``both``          the two at once.

Each phase lasts ``--duration`` seconds; a normal client polls a pending task on its own connection,
one poll after another, 50 a second; the server's resident memory (all its processes) is sampled with
each poll. Run: ``python -m bench attack [--duration 10] [--runs 3]``.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import io
import json
import multiprocessing
import multiprocessing.synchronize
import os
import socket
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx
from PIL import Image

from bench._server import REPO, Process, start_capgate
from capgate.testing import resident_memory

MiB = 1024 * 1024
ENV = {"CAPGATE_BAN_EXEMPT": "", "CAPGATE_OCR": "false", "CAPGATE_SANDBOX_DELAY": "86400",
       "CAPGATE_IMAGE_DEADLINE": "86400"}
RESULTS = REPO / "bench" / "results"


@dataclass
class Phase:
    name: str
    polls: int
    failed: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    rss_mib: float  # peak resident memory during the phase
    rss_added_mib: float  # peak over the value just before the phase


def _slow_body(server: Process, key: str, stop: threading.Event) -> None:
    declared = 8 * MiB
    head = (f"POST /in.php HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n"
            f"Content-Length: {declared}\r\n\r\nkey={key}&method=base64&body=").encode()
    while not stop.is_set():
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
            sock.sendall(head)
            sent = len(head) - head.index(b"\r\n\r\n") - 4
            while sent < declared - 1 and not stop.is_set():
                piece = min(MiB, declared - 1 - sent)
                sock.sendall(b"A" * piece)
                sent += piece
            sock.settimeout(0.5)
            while not stop.is_set():  # stalled: wait for the server to drop it
                with contextlib.suppress(TimeoutError):
                    if not sock.recv(65536):
                        break


def _growing_head(server: Process, key: str, stop: threading.Event) -> None:
    while not stop.is_set():
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
            sock.sendall(b"GET /res.php HTTP/1.1\r\nHost: x\r\nX-Grow: ")
            while not stop.is_set():
                sock.sendall(b"a" * MiB)


ATTACKS: dict[str, list[tuple[Callable[[Process, str, threading.Event], None], int]]] = {
    "none": [],
    "slow bodies (50)": [(_slow_body, 50)],
    "growing heads (5)": [(_growing_head, 5)],
    "both": [(_slow_body, 50), (_growing_head, 5)],
}


def _attack(server: Process, key: str, name: str, stop: multiprocessing.synchronize.Event) -> None:
    """The attack's connections, each in a thread, in a process of their own: in the measuring process
    they would take the GIL from the normal client whose polls are the measure."""
    done = threading.Event()
    threads = [threading.Thread(target=fn, args=(server, key, done), daemon=True)
               for fn, count in ATTACKS[name] for _ in range(count)]
    for thread in threads:
        thread.start()
    stop.wait()
    done.set()
    for thread in threads:
        thread.join(10)


def phase(server: Process, key: str, url: str, name: str, duration: float) -> Phase:
    context = multiprocessing.get_context("fork")
    stop = context.Event()
    attacker = context.Process(target=_attack, args=(server, key, name, stop), daemon=True)
    before = resident_memory(server.pid)
    attacker.start()
    time.sleep(0.5)  # the connections are open
    latencies: list[float] = []
    failed = 0
    peak = before
    ends = time.monotonic() + duration
    with httpx.Client(timeout=10) as client:
        while time.monotonic() < ends:
            started = time.perf_counter()
            try:
                ok = client.get(url).text == "CAPCHA_NOT_READY"
            except httpx.HTTPError:
                ok = False
            latencies.append(time.perf_counter() - started)
            failed += not ok
            peak = max(peak, resident_memory(server.pid))
            time.sleep(0.02)
    stop.set()
    attacker.join(15)
    if attacker.is_alive():
        attacker.kill()
    latencies.sort()

    def pct(q: float) -> float:
        return latencies[min(len(latencies) - 1, int(len(latencies) * q))] * 1000

    return Phase(name, len(latencies), failed, pct(0.5), pct(0.99), latencies[-1] * 1000, peak / MiB,
                 (peak - before) / MiB)


def _png_b64() -> str:
    buf = io.BytesIO()
    Image.frombytes("L", (60, 30), os.urandom(60 * 30)).save(buf, "PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


@contextlib.contextmanager
def _server() -> Iterator[tuple[Process, str, str]]:
    with tempfile.TemporaryDirectory(prefix="capgate-attack-") as folder, \
            start_capgate(Path(folder), env=ENV) as server:
        key = server.create_key(sandbox=True, threads=1000)
        task = httpx.post(server.url("in.php"), data={"key": key, "method": "base64", "body": _png_b64()}).text
        yield server, key, server.url(f"res.php?key={key}&action=get&id={task[3:]}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench attack", description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--runs", type=int, default=3, help="rounds of every phase, interleaved (medians)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    rounds: list[list[Phase]] = []
    with _server() as (server, key, url):
        for run in range(args.runs):
            results = []
            for name in ATTACKS:
                result = phase(server, key, url, name, args.duration)
                print(f"  run {run + 1}  {name:<18} polls {result.polls:4}  failed {result.failed}  "
                      f"p99 {result.p99_ms:7.1f} ms  rss {result.rss_mib:6.0f} MiB (+{result.rss_added_mib:.0f})",
                      flush=True)
                results.append(result)
            rounds.append(results)
    print("\n| attack | polls | failed | poll p50 ms | poll p99 ms | max ms | peak RSS MiB | added MiB |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for index, name in enumerate(ATTACKS):
        each = [r[index] for r in rounds]

        def med(field: str, each: list[Phase] = each) -> float:
            return float(statistics.median(getattr(x, field) for x in each))
        print(f"| {name} | {med('polls'):.0f} | {sum(x.failed for x in each)} | {med('p50_ms'):.1f} | "
              f"{med('p99_ms'):.1f} | {med('max_ms'):.1f} | {med('rss_mib'):.0f} | {med('rss_added_mib'):.0f} |")
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"attack-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps({"command": "python -m bench attack " + " ".join(argv or []),
                                "rounds": [[asdict(p) for p in r] for r in rounds]}, indent=2) + "\n")
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
