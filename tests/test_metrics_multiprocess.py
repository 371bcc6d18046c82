"""Several serving processes, one /metrics: with ``PROMETHEUS_MULTIPROC_DIR`` every process keeps its
counts in that folder and a scrape of any of them sums them all (what ``serve --processes N`` sets up
through :func:`capgate.server.metrics.prepare_multiprocess`)."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from capgate.server.metrics import MULTIPROC_ENV, prepare_multiprocess, process_ended
from tests.serverproc import start_server

pytestmark = pytest.mark.slow
WRONG_KEY = {"key": "0" * 32, "action": "getbalance"}  # well formed, unknown: loopback is never banned for it


def refused_polls(text: str) -> float:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "capgate_requests_total" and sample.labels == {
                    "endpoint": "/res.php", "code": "ERROR_KEY_DOES_NOT_EXIST"}:
                return sample.value
    return 0.0


def test_a_scrape_of_one_process_counts_them_all(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(MULTIPROC_ENV, "")  # prepare_multiprocess sets it for this process: undone after the test
    folder = tmp_path / "prometheus"
    folder.mkdir()
    (folder / "counter_99999.db").write_bytes(b"from an earlier run")
    assert prepare_multiprocess(folder) == folder
    assert list(folder.iterdir()) == []  # an earlier run's files are gone
    env = {MULTIPROC_ENV: str(folder), "CAPGATE_DB": str(tmp_path / "shared.db"), "CAPGATE_OCR": "0"}
    with start_server(tmp_path / "a", env=env) as first, start_server(tmp_path / "b", env=env) as second:
        with httpx.Client(timeout=30) as http:
            for server, n in ((first, 3), (second, 2)):
                for _ in range(n):
                    assert http.get(server.url("/res.php"), params=WRONG_KEY).text == "ERROR_KEY_DOES_NOT_EXIST"
            deadline = time.monotonic() + 15
            while refused_polls(scraped := http.get(first.url("/metrics")).text) < 5:  # each flushes every second
                assert time.monotonic() < deadline, scraped[-3000:]
                time.sleep(0.2)
            assert refused_polls(scraped) == 5
            assert refused_polls(http.get(second.url("/metrics")).text) == 5
            assert "capgate_queue_depth" in scraped and "process_cpu_seconds_total" not in scraped
        pid = second.pid
    assert {path.name.split("_")[0] for path in folder.iterdir()} >= {"counter"}
    process_ended(pid)  # its live gauges stop counting
    assert not any(path.name.endswith(f"_{pid}.db") and path.name.startswith("gauge_live") for path in folder.iterdir())
