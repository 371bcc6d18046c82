"""Opening a store from the database setting: a SQLite path or a ``postgresql://`` URL."""

from __future__ import annotations

from capgate.paths import sqlite_path
from capgate.settings import Settings
from capgate.store.base import Store
from capgate.store.schema import SchemaMode


def open_store(db: str, *, schema: SchemaMode = "check", pooled: bool = False, listen: str = "") -> Store:
    """The store ``db`` names (``Settings.db``, ``CAPGATE_DB``), not yet opened. Each backend is
    imported only when chosen: a SQLite deployment never loads psycopg. PostgreSQL only: ``pooled``,
    ``db`` is a transaction pooler's address; ``listen``, where the LISTEN connection goes instead
    (``Settings.db_pooled``, ``Settings.db_listen``).

    ``schema``: what opening does to the schema (``capgate.store.schema``). By default a new, empty
    database gets the schema and one behind this capgate is refused (:class:`SchemaMismatch`):
    migrations run only when asked for (``capgate db upgrade``), never by whichever process starts first."""
    path = sqlite_path(db)
    if path is None:
        from capgate.store.postgres import PostgresStore

        return PostgresStore(db, schema=schema, pooled=pooled, listen_url=listen)
    from capgate.store.sqlite import SQLiteStore

    return SQLiteStore(path, schema=schema)


def settings_store(settings: Settings, *, schema: SchemaMode = "check") -> Store:
    """The store ``settings`` name: :func:`open_store` with the settings' database, pooler and LISTEN
    addresses (every process's way in, so that none forgets the pooler)."""
    return open_store(settings.db, schema=schema, pooled=settings.db_pooled, listen=settings.db_listen)
