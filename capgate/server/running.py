"""``capgate serve``'s HTTP server: Granian, with capgate's limits, one line when a signal stops it.

Granian was chosen by measurement (BENCHMARKS.md, "The front door"): on capgate's own app it serves
pending polls at about twice uvicorn's rate, and its HTTP parsing (Rust, hyper) holds the limits that
uvicorn did not: a header that keeps growing is refused at ``header_limit``, one sent too slowly is
dropped after ``header_timeout``. What arrives after the head is the app's to bound
(``capgate/server/app.py``: body limits, the body read timeout, the per-address cap).

Granian runs the app in worker processes (``processes``), each with its own event loop, store
connections and lifespan; the main process only supervises them. On SIGINT or SIGTERM the main
process prints the one line of :func:`capgate.waiting.stop_notice`, and each worker releases its
long-polls at once (:func:`release_on_signal`), so that no request holds the stop for its whole wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import resource
import signal
import tempfile
import time
from collections.abc import Callable
from multiprocessing.connection import wait
from pathlib import Path
from typing import Any

from granian.constants import HTTPModes, Interfaces, Loops
from granian.http import HTTP1Settings
from granian.log import LogLevels
from granian.server import MPServer
from granian.server.mp import WorkerProcess

from capgate.settings import Settings
from capgate.waiting import die_with_parent, stop_notice

# Granian's own messages around a start and a stop: capgate prints its own line instead.
QUIET = ("Starting granian", "Listening at", "Spawning worker", "Started worker", "Shutting down granian",
         "Stopping worker", "Stopped worker", "Granian shutdown completed")
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
REAP_WAIT_S = 0.5


class _Quiet(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(QUIET)


class _Worker(WorkerProcess):
    def join(self, timeout: float | None = None) -> None:
        """Granian kills a worker that :meth:`join` leaves alive. A process that has closed its
        descriptors (its sentinel is ready) has ended but may not be reapable yet for a moment on a
        busy machine: wait for that moment rather than report a refused stop and kill a dying process."""
        super().join(timeout)  # type: ignore[no-untyped-call]
        ended_by = time.monotonic() + REAP_WAIT_S
        while self.inner.is_alive() and wait([self.inner.sentinel], 0) and time.monotonic() < ended_by:
            time.sleep(0.005)


class _Server(MPServer):
    def _spawn_worker(self, *args: Any, **kwargs: Any) -> WorkerProcess:
        worker = super()._spawn_worker(*args, **kwargs)
        worker.__class__ = _Worker
        return worker

    def signal_handler_interrupt(self, *args: Any, **kwargs: Any) -> None:
        if not self.interrupt_signal:
            signum = args[0] if args and isinstance(args[0], int) else signal.SIGTERM
            stop_notice("capgate serve", signum)
        super().signal_handler_interrupt(*args, **kwargs)  # type: ignore[no-untyped-call]


def raise_open_files_limit() -> tuple[int, int]:
    """The soft open-file limit raised to the hard one: each connection is a descriptor, and at the
    usual soft limit of 1024 a thousand idle connections would keep everyone else out. Returns the
    (soft, hard) limits now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


_ON_SIGNAL: list[Callable[[], None]] = []


def release_on_signal(on_stop: Callable[[], None]) -> None:
    """Call ``on_stop`` as soon as SIGINT or SIGTERM reaches this worker process, before Granian begins
    its stop (which stops accepting and then waits for open requests to end)."""
    _ON_SIGNAL.append(on_stop)


def _hook_worker_signals() -> None:
    """Granian's worker installs its signal handlers with ``granian._signals.set_loop_signals`` right
    after loading the app: wrapped here, so that a signal runs :data:`_ON_SIGNAL` first. (Its handler
    cannot be chained afterwards: uvloop keeps the loop's handlers out of Python's reach.)"""
    import granian._signals as signals

    original = signals.set_loop_signals
    if getattr(original, "capgate", False):
        return

    def set_loop_signals(loop: asyncio.AbstractEventLoop) -> Any:
        event = original(loop)  # type: ignore[no-untyped-call]

        def handler() -> None:
            for callback in list(_ON_SIGNAL):
                callback()
            event.set()

        for signum in STOP_SIGNALS:
            loop.add_signal_handler(signum, handler)
        return event

    set_loop_signals.capgate = True  # type: ignore[attr-defined]
    signals.set_loop_signals = set_loop_signals


def _load(settings: Settings, log_format: str, level: str, parent: int, *_: Any) -> Any:
    """The app, built in each worker process (Granian calls this there). Worker processes, not threads:
    capgate's app is CPU-bound Python, which threads under one GIL would not spread over cores."""
    die_with_parent(parent)
    _hook_worker_signals()
    from capgate.server.observe import configure_logging

    configure_logging(log_format, level, quiet=_Quiet())  # after Granian's set-up here, before the app
    from capgate.server.app import create_app
    from capgate.server.builtin import builtin_extensions

    return create_app(settings, extensions=builtin_extensions(settings), release_on_signal=True)


def _log_config(level: str) -> dict[str, Any]:
    """Granian's logger, to stderr, set up alike in the main process and in each worker (Granian applies
    this in both; capgate's own loggers are :func:`capgate.server.observe.configure_logging`'s)."""
    handler = {"class": "logging.StreamHandler", "stream": "ext://sys.stderr", "formatter": "plain",
               "filters": ["quiet"]}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"quiet": {"()": _Quiet}},
        "formatters": {"plain": {"format": "%(levelname)s: %(message)s"}},
        "handlers": {"console": handler},
        "loggers": {
            "_granian": {"handlers": ["console"], "level": level.upper(), "propagate": False},
        },
    }


def run(settings: Settings, log_level: str = "info", log_format: str = "text") -> None:
    """Serve ``settings`` until a signal stops it. Raises SystemExit(1) when the server cannot start
    (the port in use, a failed lifespan)."""
    raise_open_files_limit()
    level = log_level.lower()
    if level not in ("critical", "error", "warning", "info", "debug"):
        level = "info"
    server = _Server(
        "capgate.server.app:create_app",
        address=settings.host,
        port=settings.port,
        interface=Interfaces.ASGI,
        workers=max(settings.processes, 1),
        loop=Loops(settings.event_loop),
        http=HTTPModes.http1,
        websockets=False,
        backlog=settings.backlog,
        backpressure=settings.max_connections,
        http1_settings=HTTP1Settings(header_read_timeout=int(settings.header_timeout * 1000),
                                     max_buffer_size=settings.header_limit, keep_alive=True),
        log_level=LogLevels(level),
        log_dictconfig=_log_config(level),
        log_access=False,
        ssl_cert=Path(settings.ssl_certfile) if settings.ssl_certfile else None,
        ssl_key=Path(settings.ssl_keyfile or settings.ssl_certfile) if settings.ssl_certfile else None,
        # A stop cuts what is still running this long after the signal (long-polls answer at once).
        workers_kill_timeout=max(settings.shutdown_grace, 1) + 1,
    )
    from capgate.server.metrics import prepare_multiprocess
    from capgate.server.observe import configure_logging

    configure_logging(log_format, level, quiet=_Quiet())
    with tempfile.TemporaryDirectory(prefix="capgate-metrics-") as folder:
        if server.workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            prepare_multiprocess(folder)  # /metrics sums every worker process's series
        server.serve(target_loader=functools.partial(_load, settings, log_format, level, os.getpid()),
                     wrap_loader=False)
