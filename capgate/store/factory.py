"""Opening a store from the database setting: a SQLite path or a ``postgresql://`` URL."""

from __future__ import annotations

from capgate.paths import sqlite_path
from capgate.store.base import Store


def open_store(db: str) -> Store:
    """The store ``db`` names (``Settings.db``, ``CAPGATE_DB``), not yet opened. Each backend is
    imported only when chosen: a SQLite deployment never loads psycopg."""
    path = sqlite_path(db)
    if path is None:
        from capgate.store.postgres import PostgresStore

        return PostgresStore(db)
    from capgate.store.sqlite import SQLiteStore

    return SQLiteStore(path)
