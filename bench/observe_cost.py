"""What the per-request bookkeeping (request id, counts, log line) adds to a poll, in process.

The ASGI app is called directly (no HTTP, no server) for ``res.php?action=get`` of a pending task, the
hot path's commonest request, in three ways: without the observer (the baseline), with it and no log
handler (``--log-level warning``: the logger call returns at once), and with it writing every request
line as text to a null stream. Rounds alternate between the ways so that drift hits them alike, and
each is timed in this process's CPU time, which other processes on a busy machine do not inflate.

Run: ``python -m bench.observe_cost`` (about 5 s).
"""

from __future__ import annotations

import asyncio
import io
import logging
import shutil
import statistics
import tempfile
import time
from collections.abc import MutableMapping
from decimal import Decimal
from pathlib import Path
from typing import Any

from capgate.keys import PREFIX_LENGTH, hash_secret, new_key
from capgate.money import usd_to_micros
from capgate.server.app import create_app
from capgate.server.observe import ACCESS, configure_logging
from capgate.settings import Settings
from capgate.store.factory import settings_store

ROUNDS = 15
CALLS = 2000


async def measure() -> dict[str, list[float]]:
    from tests.appkit import asgi_lifespan

    folder = Path(tempfile.mkdtemp(prefix="capgate-observe-"))
    settings = Settings(db=str(folder / "capgate.db"), ocr=False, sandbox_delay=3600.0)
    store = settings_store(settings)
    app = create_app(settings, store)
    results: dict[str, list[float]] = {"bare": [], "observed": [], "observed+log": []}
    async with asgi_lifespan(app):
        key = new_key()
        await store.create_account(hash_secret(key), key[:PREFIX_LENGTH], 10, usd_to_micros(Decimal(1)), True)
        scope_in: dict[str, Any] = {"type": "http", "method": "GET", "path": "/in.php", "headers": [],
                                    "query_string": f"key={key}&method=turnstile&sitekey=s&pageurl=https://e.com/"
                                    .encode(), "client": ("127.0.0.1", 5000)}
        sent: list[MutableMapping[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: MutableMapping[str, Any]) -> None:
            sent.append(message)

        await app(scope_in, receive, send)
        task_id = bytes(sent[-1]["body"]).decode()[3:]
        query = f"key={key}&action=get&id={task_id}".encode()
        observer = app.observer
        sink = io.StringIO()

        async def run(name: str) -> float:
            app.observer = None if name == "bare" else observer
            logging.getLogger("capgate").setLevel(logging.INFO if name == "observed+log" else logging.WARNING)
            if observer is not None:
                observer.refresh()
            start = time.process_time()  # this process's CPU time: another process's load does not count
            for _ in range(CALLS):
                sent.clear()
                await app({"type": "http", "method": "GET", "path": "/res.php", "headers": [], "query_string": query,
                           "client": ("127.0.0.1", 5000)}, receive, send)
            took = (time.process_time() - start) / CALLS * 1e6
            assert sent[-1]["body"] == b"CAPCHA_NOT_READY", sent[-1]
            sink.seek(0)
            sink.truncate()
            return took

        configure_logging("text")
        handler = ACCESS.handlers[0]
        assert isinstance(handler, logging.StreamHandler)
        handler.setStream(sink)
        for name in results:  # warm-up
            await run(name)
        for _ in range(ROUNDS):
            for name in results:
                results[name].append(await run(name))
        app.observer = observer
    await asyncio.sleep(0)
    assert ACCESS.name == "capgate.access"
    return results


def main() -> int:
    try:
        results = asyncio.run(measure())
    finally:
        for folder in Path(tempfile.gettempdir()).glob("capgate-observe-*"):
            shutil.rmtree(folder, ignore_errors=True)
    # The fastest round of each is its own cost with the least interference from other processes
    # (on a shared machine the medians drift by more than what is measured).
    base, base_median = min(results["bare"]), statistics.median(results["bare"])
    for name, runs in results.items():
        print(f"{name:<13} fastest {min(runs):6.2f} µs per poll (+{min(runs) - base:5.2f})   median "
              f"{statistics.median(runs):6.2f} (+{statistics.median(runs) - base_median:5.2f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
