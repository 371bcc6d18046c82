"""WAL checkpoints for the SQLite store, on a thread of their own.

Left to itself, SQLite checkpoints inside the ``COMMIT`` that takes the WAL past its limit: that
commit then copies every page back into the database file and waits for an ``fsync``, while all
the writes queued behind it wait too. Measured on in.php submits, that was a fifth of the writer's
CPU and a third more wall time per submit. A passive checkpoint from another connection does the
same work beside the writer without blocking it. The writer keeps a high automatic limit as a
safety net, for when this thread falls behind.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Callable

log = logging.getLogger("capgate.store")
WRITER_AUTOCHECKPOINT_PAGES = 16_384  # 64 MiB of WAL at 4 kB pages, only if this thread falls behind


class Checkpointer:
    def __init__(self, connect: Callable[[], sqlite3.Connection], every_s: float = 0.5) -> None:
        self._connect = connect
        self._every_s = every_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="capgate-sqlite-checkpoint", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _run(self) -> None:
        conn = self._connect()
        try:
            while not self._stop.wait(self._every_s):
                try:
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                except sqlite3.Error:
                    log.exception("WAL checkpoint failed")
        finally:
            conn.close()
