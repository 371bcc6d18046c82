"""The floor under a submit: the least an ``in.php`` can do in this stack, served as capgate serves.

The submit target (0.4× of the bare endpoint) asks how close capgate gets to doing nothing. These
servers answer a different question: how fast can *any* Python submit on uvicorn and SQLite be, doing
only what every submit must do? Each mode adds one necessary step to the one before:

* ``parse``  read the body and parse its urlencoded parameters, answer ``OK|<constant>``;
* ``check``  also validate the task as capgate does (:func:`capgate.server.submit.build_task`: method,
             base64, image check, fingerprint), still storing nothing;
* ``store``  also store the task and its image durably in a SQLite file with capgate's schema: one
             transaction per event-loop turn for every submit that arrived in it, run on the loop
             thread itself (no thread hops, no savepoints, no account checks; the answer waits for
             the commit), with capgate's WAL checkpoint thread beside it.

No authentication, thread cap, balance, duplicate check or queue cap: the floor is what is left
when everything capgate adds on top is free. Served with the same ``uvicorn.run`` call as
:mod:`bench._bare` and ``capgate serve``.

Run: ``python -m bench._floor --mode store --port 8124 --db /tmp/floor.db``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
import time
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from pathlib import Path
from typing import Any

from capgate.server.params import RequestParams, parse_query
from capgate.server.submit import Rejected, build_task
from capgate.settings import Settings
from capgate.store.checkpoint import WRITER_AUTOCHECKPOINT_PAGES, Checkpointer
from capgate.store.ids import new_task_id
from capgate.store.sqlite import SQLiteStore

MODES = ("parse", "check", "store")
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Row = tuple[asyncio.Future[None], tuple[Any, ...], list[tuple[int, str, bytes]]]


class Floor:
    def __init__(self, mode: str, db: Path) -> None:
        self.mode = mode
        self.settings = Settings()
        self.conn: sqlite3.Connection | None = None
        self.rows: list[Row] = []
        if mode == "store":
            store = SQLiteStore(db)
            self.conn = _open(store)
            # capgate's own checkpoint thread: copying the WAL back is part of storing durably.
            Checkpointer(store._connect).start()

    async def __call__(self, scope: Message, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        try:
            reply = await self.submit(b"".join(chunks))
        except Rejected as exc:
            reply = exc.code
        body = reply.encode()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    async def submit(self, body: bytes) -> str:
        values = parse_query(body)
        if self.mode == "parse":
            return "OK|10000000001" if values else "ERROR_WRONG_USER_KEY"
        task = build_task(RequestParams(values=values), self.settings, sandbox=False)
        task_id = new_task_id()
        if self.conn is None:
            return f"OK|{task_id}"
        now = time.time()
        future = asyncio.get_running_loop().create_future()
        if not self.rows:
            asyncio.get_running_loop().call_soon(self._commit)
        self.rows.append((future, (
            task_id, task.method, json.dumps(task.params, ensure_ascii=False), task.fingerprint, task.pool.value,
            task.price, now, now + task.deadline_s, now), [(task_id, name, data) for name, data in task.blobs.items()]))
        await future
        return f"OK|{task_id}"

    def _commit(self) -> None:
        rows, self.rows = self.rows, []
        conn = self.conn
        assert conn is not None
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(
            "INSERT INTO tasks (id, account_id, method, params, fingerprint, state, pool, price, created_at,"
            " deadline_at, not_before) VALUES (?, 1, ?, ?, ?, 'pending', ?, ?, ?, ?, ?)", [row[1] for row in rows])
        conn.executemany("INSERT INTO task_blobs (task_id, name, data) VALUES (?, ?, ?)",
                         [blob for row in rows for blob in row[2]])
        conn.execute("COMMIT")
        for future, _, _ in rows:
            if not future.done():
                future.set_result(None)


def _open(store: SQLiteStore) -> sqlite3.Connection:
    """A writer connection as capgate's store opens it, on its schema, with the one account every
    task belongs to."""
    conn = store._connect()
    conn.execute(f"PRAGMA wal_autocheckpoint={WRITER_AUTOCHECKPOINT_PAGES}")
    store._migrate(conn)
    conn.execute("INSERT INTO accounts (key_hash, key_prefix, threads, balance, created_at)"
                 " VALUES ('floor', 'floor', 1000000000, 0, 0)")
    return conn


def main(argv: Sequence[str] | None = None) -> int:
    import uvicorn

    parser = argparse.ArgumentParser(prog="python -m bench._floor", description=__doc__.split("\n")[0])
    parser.add_argument("--mode", choices=MODES, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--db", type=Path, default=Path("floor.db"), help="a new SQLite file (mode store)")
    parser.add_argument("--log-level", dest="log_level", default="warning")
    args = parser.parse_args(argv)
    uvicorn.run(Floor(args.mode, args.db), host=args.host, port=args.port, log_level=args.log_level,
                access_log=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
