"""A process pool that runs OCR off the event loop, one onnxruntime session per model per process.

Inference is CPU-bound and holds the GIL for the parts numpy and Pillow do in Python, so threads
would not scale; one single-threaded process per core does. Children are started with "spawn":
the server process runs threads and event loops, and forking those is unsafe.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import io
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from types import TracebackType

from PIL import Image, ImageDraw

from capgate.solvers.ocr.constraints import OcrConstraints
from capgate.solvers.ocr.engine import (
    DEFAULT_GENERIC,
    GenericName,
    OcrResult,
    Recognizer,
    UnknownProfile,
)
from capgate.solvers.ocr.profile import MODEL_FILE, PROFILE_FILE, profile_dir
from capgate.waiting import die_with_parent

# How long ``close`` lets a busy process finish before it is terminated. Its answer is not waited
# for (the caller is stopping), so this only spares a process that is about to be idle anyway.
CLOSE_TIMEOUT_S = 0.3
KILL_AFTER_S = 0.5  # after SIGTERM, before SIGKILL
MANAGER_JOIN_S = 1.0  # for the executor's own thread, once its processes are gone

_SIGINT_BLOCKABLE = hasattr(signal, "pthread_sigmask")

# --------------------------------------------------------------------------- in the child

_profiles_dir: Path | None = None
_generic: Recognizer | None = None
# name -> (the profile files' (mtime_ns, size) when loaded, its recognizer)
_profiles: dict[str, tuple[tuple[tuple[int, int], ...], Recognizer]] = {}


def _warm_image() -> bytes:
    image = Image.new("L", (120, 40), 255)
    ImageDraw.Draw(image).text((10, 12), "a1b2c", fill=0)
    buf = io.BytesIO()
    image.save(buf, "PNG")
    return buf.getvalue()


def _init_worker(profiles_dir: str | None, generic: tuple[GenericName, ...], warm: bool,
                 parent: int | None) -> None:
    global _profiles_dir, _generic
    if parent is not None:
        die_with_parent(parent)  # a server killed outright takes its OCR processes with it
    # Ctrl-C reaches every process of the terminal's foreground group: the parent stops the pool,
    # a child must not die of it mid-task with a KeyboardInterrupt traceback. The parent started this
    # process with SIGINT blocked (so a Ctrl-C during start-up waits, pending); ignoring it drops
    # such a pending one, and only then is it unblocked. SIGTERM keeps its default: it ends a child
    # quietly, which is what a SIGTERM to the whole group (systemd) wants.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if _SIGINT_BLOCKABLE:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    _profiles_dir = Path(profiles_dir) if profiles_dir else None
    _generic = Recognizer.generic(generic)
    if warm:
        # onnxruntime allocates and plans on the first run; pay for it before a client waits.
        _generic.warm_up(_warm_image())


def _profile_stamp(folder: Path) -> tuple[tuple[int, int], ...]:
    stats = [(folder / name).stat() for name in (PROFILE_FILE, MODEL_FILE)]
    return tuple((s.st_mtime_ns, s.st_size) for s in stats)


def _profile_recognizer(name: str) -> Recognizer:
    if _profiles_dir is None:
        raise UnknownProfile(f"profile {name!r} asked for, but no profiles folder is configured")
    try:
        folder = profile_dir(_profiles_dir, name)
        stamp = _profile_stamp(folder)
    except (OSError, ValueError) as exc:
        _profiles.pop(name, None)
        raise UnknownProfile(f"profile {name!r}: {exc}") from exc
    cached = _profiles.get(name)
    if cached is not None and cached[0] == stamp:
        return cached[1]
    recognizer = Recognizer.from_profile(_profiles_dir, name)
    _profiles[name] = (stamp, recognizer)
    return recognizer


def _recognize(image: bytes, constraints: OcrConstraints, profile: str | None) -> OcrResult:
    recognizer = _profile_recognizer(profile) if profile else _generic
    assert recognizer is not None, "worker not initialised"
    return recognizer.recognize(image, constraints)


def _ping() -> int:
    return os.getpid()


@contextlib.contextmanager
def _sigint_blocked() -> Iterator[None]:
    """SIGINT blocked in the calling thread while it starts processes: a blocked mask survives
    fork and exec, so a child is born with SIGINT held back until its initializer ignores it (a
    Ctrl-C while the interpreter starts up would otherwise print a traceback from the child). Other
    threads of the parent still take a Ctrl-C meant for the parent."""
    if not _SIGINT_BLOCKABLE:
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


# --------------------------------------------------------------------------- in the server


class OcrPool:
    """OCR workers, one process per core by default (``workers``); trained profiles are read from
    ``profiles_dir`` when a request names one.

    ``recognize`` raises what the engine raises (:class:`~capgate.solvers.ocr.engine.UnreadableImage`,
    :class:`~capgate.solvers.ocr.engine.UnknownProfile`). A worker that dies (killed for memory)
    breaks a ``ProcessPoolExecutor`` for good; the pool then starts a fresh one and retries once.
    """

    def __init__(
        self,
        workers: int | None = None,
        profiles_dir: Path | None = None,
        *,
        generic: Sequence[GenericName] = DEFAULT_GENERIC,
        warm: bool = True,
        start_method: str = "spawn",
    ) -> None:
        if start_method not in ("spawn", "forkserver"):
            raise ValueError("start_method must be 'spawn' or 'forkserver': forking a threaded server is unsafe")
        self.workers = max(1, workers or os.cpu_count() or 1)
        self._profiles_dir = profiles_dir
        self._generic = tuple(generic)
        self._warm = warm
        self._context = multiprocessing.get_context(start_method)
        self._lock = threading.Lock()
        self._closed = False
        self._executor = self._new_executor()
        self._started = self._start_all()

    def _new_executor(self) -> concurrent.futures.ProcessPoolExecutor:
        return concurrent.futures.ProcessPoolExecutor(
            max_workers=self.workers,
            mp_context=self._context,
            initializer=_init_worker,
            # Under forkserver a worker's parent is the fork server, which outlives nothing in particular:
            # only spawned workers are tied to this process.
            initargs=(str(self._profiles_dir) if self._profiles_dir else None, self._generic, self._warm,
                      os.getpid() if self._context.get_start_method() == "spawn" else None),
        )

    def _start_all(self) -> list[concurrent.futures.Future[int]]:
        # Non-fork executors start workers on demand, one per submission that finds none idle: as
        # many no-op jobs as workers start them all now, so the first real requests find them
        # loaded and warm (and no later submission starts a process).
        with _sigint_blocked():
            return [self._executor.submit(_ping) for _ in range(self.workers)]

    def wait_ready(self, timeout: float | None = None) -> None:
        """Block until every worker has loaded its models (the constructor only starts them)."""
        concurrent.futures.wait(self._started, timeout=timeout)
        for future in self._started:
            future.result(timeout=0)

    async def ready(self) -> None:
        await asyncio.gather(*(asyncio.wrap_future(f) for f in self._started))

    def submit(
        self, image: bytes, constraints: OcrConstraints, profile: str | None = None
    ) -> concurrent.futures.Future[OcrResult]:
        """The blocking-world entry point (benchmarks, CLI); the server uses :meth:`recognize`.
        A future that fails with ``BrokenProcessPool`` is not retried here."""
        return self._submit(image, constraints, profile)[1]

    async def recognize(self, image: bytes, constraints: OcrConstraints, profile: str | None = None) -> OcrResult:
        executor, future = self._submit(image, constraints, profile)
        try:
            return await asyncio.wrap_future(future)
        except BrokenProcessPool:
            self._replace_executor(executor)
            return await asyncio.wrap_future(self._submit(image, constraints, profile)[1])

    def _submit(
        self, image: bytes, constraints: OcrConstraints, profile: str | None
    ) -> tuple[concurrent.futures.ProcessPoolExecutor, concurrent.futures.Future[OcrResult]]:
        if self._closed:
            raise RuntimeError("OcrPool is closed")
        executor = self._executor
        try:
            return executor, executor.submit(_recognize, image, constraints, profile)
        except BrokenProcessPool:
            self._replace_executor(executor)
            executor = self._executor
            return executor, executor.submit(_recognize, image, constraints, profile)

    def _replace_executor(self, broken: concurrent.futures.ProcessPoolExecutor) -> None:
        with self._lock:
            if self._closed:
                raise RuntimeError("OcrPool is closed")
            # Several requests see the same breakage; only the first replaces the executor.
            if self._executor is broken:
                self._executor = self._new_executor()
                self._started = self._start_all()
                broken.shutdown(wait=False, cancel_futures=True)

    def close(self, timeout_s: float = CLOSE_TIMEOUT_S) -> None:
        """Stop the processes within about a second: idle ones leave at once; the ones still busy
        (in a model, or still loading one) after ``timeout_s`` are terminated, then killed, so a
        Ctrl-C never waits on a process stuck in a model (seen under load: the worker outlived 30 s)
        and a stop never lasts (seen: 9.4 s for a SIGTERM while the pool was starting)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            processes = list((getattr(self._executor, "_processes", None) or {}).values())
            manager = getattr(self._executor, "_executor_manager_thread", None)
            self._executor.shutdown(wait=False, cancel_futures=True)
        deadline = time.monotonic() + timeout_s
        for process in processes:
            process.join(max(0.0, deadline - time.monotonic()))
        stragglers = [process for process in processes if process.is_alive()]
        for process in stragglers:
            process.terminate()
        deadline = time.monotonic() + KILL_AFTER_S
        for process in stragglers:
            process.join(max(0.0, deadline - time.monotonic()))
        for process in stragglers:
            if process.is_alive():
                process.kill()
                process.join(1.0)
        if manager is not None:
            # The executor's thread ends once its processes have, closing its wake-up pipe. Left
            # running, it races CPython 3.11's exit hook, which writes to that pipe unlocked: "OSError:
            # Bad file descriptor" printed at exit (seen on a SIGTERM to `capgate worker`).
            manager.join(MANAGER_JOIN_S)

    def __enter__(self) -> OcrPool:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
