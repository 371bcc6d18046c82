"""Stores on both backends for the tests: the ``backend`` and ``store`` fixtures (conftest.py) use it.

A :class:`Backend` is one database (a SQLite file, or a fresh PostgreSQL schema in the session's
database, see ``pgdb.py``) on which a test opens as many stores as it likes, as processes would.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from capgate.store.base import Store
from capgate.store.factory import open_store
from tests.pgdb import PgDatabase, fresh_schema

BACKENDS = ("sqlite", "postgres")


@dataclass
class Backend:
    name: str
    db: str  # what ``Settings.db`` holds for it: a SQLite path or a PostgreSQL URL
    opened: list[Store] = field(default_factory=list)

    def make(self) -> Store:
        """Another store on the same database, as another process would open (not opened yet)."""
        return open_store(self.db)

    async def open(self) -> Store:
        store = self.make()
        await store.open()
        self.opened.append(store)
        return store

    async def open_many(self, n: int) -> list[Store]:
        # One after the other: SQLiteStore's migration is not safe against a concurrent first open
        # (see test_store_migrations for PostgreSQL's).
        return [await self.open() for _ in range(n)]

    async def close(self) -> None:
        for store in reversed(self.opened):
            await store.close()
        self.opened.clear()


def new_backend(name: str, directory: Path, pg: Callable[[], PgDatabase]) -> Backend:
    """A new, empty database on backend ``name`` (``pg`` gives the session's PostgreSQL database)."""
    if name == "sqlite":
        return Backend("sqlite", str(directory / f"capgate-{secrets.token_hex(4)}.db"))  # several per folder
    return Backend("postgres", fresh_schema(pg()))


def sqlite_backend(directory: Path) -> Backend:
    return Backend("sqlite", str(directory / "capgate.db"))


def backend_of(request: pytest.FixtureRequest, name: str, directory: Path) -> Backend:
    """:func:`new_backend` for a fixture: the session's PostgreSQL database only when asked for."""
    return new_backend(name, directory, lambda: request.getfixturevalue("pg_database"))
