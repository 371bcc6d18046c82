"""Throwaway PostgreSQL databases for the tests that run against both backends.

A test session gets a database of its own (``capgate_test_<random>``, made through the ``postgres``
maintenance database and dropped at the end: the ``pg_database`` fixture in conftest.py) and each test
a fresh schema in it (:func:`fresh_schema`). Without a reachable server the PostgreSQL cases are
skipped; ``CAPGATE_TEST_PG`` names the maintenance database to connect to when it is not ``postgres``
(or ``test``) at 127.0.0.1:5432 as user ``postgres`` (or ``root``).
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import quote

import psycopg
import pytest
from psycopg import sql

PG_CANDIDATES = tuple(f"postgresql://{user}@127.0.0.1:5432/{db}" for db in ("postgres", "test")
                      for user in ("postgres", "root"))

__all__ = [
    "PG_CANDIDATES",
    "PgDatabase",
    "create_database",
    "database_url",
    "drop_database",
    "fresh_schema",
    "pg_admin_url",
    "throwaway_database",
]


def pg_admin_url() -> str | None:
    """The maintenance database's URL, or ``None`` when no PostgreSQL answers."""
    explicit = os.environ.get("CAPGATE_TEST_PG")
    for url in ((explicit,) if explicit else PG_CANDIDATES):
        try:
            with psycopg.connect(url, connect_timeout=3, autocommit=True) as conn:
                conn.execute("SELECT 1")
            return url
        except psycopg.Error:
            continue
    return None


def database_url(admin_url: str, name: str) -> str:
    """``admin_url`` pointing at the database ``name`` instead."""
    info = psycopg.conninfo.conninfo_to_dict(admin_url)
    user = info.get("user") or "postgres"
    host = info.get("host") or "127.0.0.1"
    port = info.get("port") or "5432"
    password = info.get("password")
    auth = quote(str(user), safe="") + (":" + quote(str(password), safe="") if password else "")
    return f"postgresql://{auth}@{host}:{port}/{name}"


@dataclass
class PgDatabase:
    admin_url: str
    name: str
    url: str


def create_database(prefix: str = "capgate_test") -> PgDatabase:
    """A new, empty database (the calling test is skipped when no PostgreSQL answers)."""
    admin = pg_admin_url()
    if admin is None:
        pytest.skip("PostgreSQL is not reachable (tried " + ", ".join(
            [os.environ["CAPGATE_TEST_PG"]] if os.environ.get("CAPGATE_TEST_PG") else list(PG_CANDIDATES))
            + "); set CAPGATE_TEST_PG to a maintenance database URL")
    name = f"{prefix}_{secrets.token_hex(6)}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return PgDatabase(admin, name, database_url(admin, name))


def drop_database(db: PgDatabase) -> None:
    with psycopg.connect(db.admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(db.name)))


@contextlib.contextmanager
def throwaway_database(prefix: str = "capgate_test") -> Iterator[PgDatabase]:
    """:func:`create_database`, dropped when the block ends."""
    db = create_database(prefix)
    try:
        yield db
    finally:
        drop_database(db)


def fresh_schema(db: PgDatabase) -> str:
    """A URL whose connections work in a new, empty schema of ``db``."""
    schema = f"t_{secrets.token_hex(6)}"
    with psycopg.connect(db.url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    return f"{db.url}?options=" + quote(f"-csearch_path={schema}", safe="")
