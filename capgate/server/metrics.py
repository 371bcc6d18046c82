"""``/metrics`` in Prometheus's text format (``prometheus-client``).

Two kinds of series:

* **Counted in the process** as things happen: requests by endpoint and code, tasks settled by method
  and outcome, time to answer, OCR latency, requests in flight (long-polls waiting). The request path
  never touches ``prometheus_client`` itself: :class:`~capgate.server.observe.Observer` counts in plain
  dicts and :meth:`Metrics.flush` moves the counts over once a second (and before each scrape).
* **Read from the store at scrape time**: queue depth, workers online, ledger totals, accounts. The
  database is the truth every process shares, so these are right whichever process is scraped.

Several processes (``PROMETHEUS_MULTIPROC_DIR`` set): the counted series live in that folder's files,
one per process, and a scrape of any process sums them (prometheus-client's multiprocess collector).
``capgate serve --processes N`` calls :func:`prepare_multiprocess` once, before it starts a process, and
:func:`process_ended` for each one that exits.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterable, Mapping
from pathlib import Path

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
    values,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from capgate.money import micros_to_usd
from capgate.store.base import Store
from capgate.store.models import Settled

__all__ = ["CONTENT_TYPE_LATEST", "Metrics", "metrics", "prepare_multiprocess", "process_ended"]

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# Seconds from submit to settle: image tasks take a second or two, token tasks up to minutes.
ANSWER_BUCKETS = (0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0)
OCR_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
LONG_POLLS = {"/res.php": "res", "/solve.php": "solve", "/worker/v1/claim": "claim"}


def prepare_multiprocess(directory: str | os.PathLike[str]) -> Path:
    """Multi-process mode for every process started after this call (they inherit the variable): an
    empty ``directory`` (made, or emptied of an earlier run's files) named in ``PROMETHEUS_MULTIPROC_DIR``.
    Call it in the parent before any serving process starts."""
    folder = Path(directory)
    if folder.exists():
        for entry in folder.iterdir():
            if entry.is_dir():
                shutil.rmtree(entry)
            else:
                entry.unlink()
    folder.mkdir(parents=True, exist_ok=True)
    os.environ[MULTIPROC_ENV] = str(folder)
    return folder


def process_ended(pid: int) -> None:
    """A serving process has exited: its live gauges (requests in flight) stop counting."""
    if os.environ.get(MULTIPROC_ENV):
        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]


class Metrics:
    """The process's series. Made once per process (:func:`metrics`), after the multi-process
    variable is known: prometheus-client picks where values live when a series is made."""

    def __init__(self) -> None:
        self.multiprocess = bool(os.environ.get(MULTIPROC_ENV))
        # A process forked after prometheus_client was imported still has the single-process value
        # class: choose again now that the variable is read.
        values.ValueClass = values.get_value_class()  # type: ignore[no-untyped-call]
        self.registry = CollectorRegistry(auto_describe=True)
        owned = None if self.multiprocess else self.registry
        self.requests = Counter("capgate_requests", "HTTP requests by endpoint and code (the protocol's code for "
                                "in.php, res.php and solve.php; the HTTP status otherwise)",
                                ["endpoint", "code"], registry=owned)
        self.request_seconds = Counter("capgate_request_seconds", "Time spent answering requests, by endpoint",
                                       ["endpoint"], registry=owned)
        self.in_flight = Gauge("capgate_requests_in_flight", "Requests being answered now, by endpoint",
                               ["endpoint"], registry=owned, multiprocess_mode="livesum")
        self.long_polls = Gauge("capgate_long_polls_waiting", "Long-polls held open now: res.php and solve.php "
                                "polls, worker claims", ["kind"], registry=owned, multiprocess_mode="livesum")
        self.tasks = Counter("capgate_tasks_settled", "Tasks settled by this service, by method and outcome",
                             ["method", "outcome"], registry=owned)
        self.time_to_answer = Histogram("capgate_time_to_answer_seconds", "Seconds from submit to settle, by method",
                                        ["method", "outcome"], buckets=ANSWER_BUCKETS, registry=owned)
        self.ocr_seconds = Histogram("capgate_ocr_seconds", "Seconds the built-in OCR took per image, by profile",
                                     ["profile"], buckets=OCR_BUCKETS, registry=owned)
        if self.multiprocess:
            multiprocess.MultiProcessCollector(self.registry)  # type: ignore[no-untyped-call]
        else:
            from prometheus_client import PlatformCollector, ProcessCollector

            ProcessCollector(registry=self.registry)
            PlatformCollector(registry=self.registry)

    def count_requests(self, counts: Mapping[tuple[str, str], int], seconds: Mapping[str, float]) -> None:
        for (endpoint, code), n in counts.items():
            self.requests.labels(endpoint, code).inc(n)
        for endpoint, spent in seconds.items():
            self.request_seconds.labels(endpoint).inc(spent)

    def set_in_flight(self, in_flight: Mapping[str, int]) -> None:
        for endpoint, n in in_flight.items():
            self.in_flight.labels(endpoint).set(n)
            kind = LONG_POLLS.get(endpoint)
            if kind is not None:
                self.long_polls.labels(kind).set(n)

    def count_settled(self, settled: Iterable[Settled]) -> None:
        for task in settled:
            outcome = task.state.value
            self.tasks.labels(task.method, outcome).inc()
            self.time_to_answer.labels(task.method, outcome).observe(max(task.took, 0.0))

    async def render(self, store: Store, worker_presence_s: float, ledger: dict[str, tuple[int, int]]) -> bytes:
        """The exposition: this process's (or every process's) series, then the store's (``ledger``: the
        ledger's totals by kind, kept running by the caller)."""
        snapshot = await StoreSnapshot.read(store, worker_presence_s, ledger)
        extra = CollectorRegistry(auto_describe=False)
        extra.register(snapshot)
        return generate_latest(self.registry) + generate_latest(extra)


class StoreSnapshot(Collector):
    """What the database says at one moment, as Prometheus series."""

    def __init__(self) -> None:
        self.queue: dict[tuple[str, str], int] = {}
        self.workers_online: dict[str, int] = {}
        self.workers_total = 0
        self.ledger: dict[str, tuple[int, int]] = {}
        self.accounts = 0
        self.balance = 0

    @staticmethod
    async def read(store: Store, worker_presence_s: float, ledger: dict[str, tuple[int, int]]) -> StoreSnapshot:
        snap = StoreSnapshot()
        now = time.time()
        snap.queue = await store.queue_depth()
        seen = await store.workers_seen(now - worker_presence_s)
        snap.workers_total = sum(1 for w in seen if not w.worker.disabled)
        for w in seen:
            if w.worker.disabled or not w.serving:
                continue
            for method in w.serving:
                snap.workers_online[method] = snap.workers_online.get(method, 0) + 1
        snap.workers_online["any"] = sum(1 for w in seen if not w.worker.disabled and w.serving)
        snap.ledger = ledger
        accounts = await store.list_accounts()
        snap.accounts = len(accounts)
        snap.balance = sum(a.balance for a in accounts)
        return snap

    def collect(self) -> Iterable[GaugeMetricFamily | CounterMetricFamily]:
        queue = GaugeMetricFamily("capgate_queue_depth", "Pending tasks (queued or being solved) by method and pool",
                                  labels=["method", "pool"])
        for (method, pool), n in sorted(self.queue.items()):
            queue.add_metric([method, pool], n)
        yield queue
        online = GaugeMetricFamily("capgate_workers_online", "Enabled worker tokens that claimed within the presence "
                                   "window, by method served ('*' serves any; 'any': every such worker)",
                                   labels=["method"])
        for method, n in sorted(self.workers_online.items()):
            online.add_metric([method], n)
        yield online
        yield GaugeMetricFamily("capgate_worker_tokens", "Enabled worker tokens", value=self.workers_total)
        entries = CounterMetricFamily("capgate_ledger_entries", "Ledger entries by kind", labels=["kind"])
        amounts = GaugeMetricFamily("capgate_ledger_usd", "Sum of ledger amounts in USD by kind (charges are "
                                      "negative)", labels=["kind"])
        for kind, (n, total) in sorted(self.ledger.items()):
            entries.add_metric([kind], n)
            amounts.add_metric([kind], float(micros_to_usd(total)))
        yield entries
        yield amounts
        yield GaugeMetricFamily("capgate_accounts", "Accounts", value=self.accounts)
        yield GaugeMetricFamily("capgate_balance_usd", "Sum of every account's balance in USD",
                                value=float(micros_to_usd(self.balance)))


_METRICS: Metrics | None = None


def metrics() -> Metrics:
    """This process's :class:`Metrics`, made on first use."""
    global _METRICS
    if _METRICS is None:
        _METRICS = Metrics()
    return _METRICS
