"""Explicit migrations: ``capgate db upgrade`` and ``capgate db status`` on both backends; ``serve``
and every other command refuse a database whose schema is behind, naming the command that
upgrades it; a new, empty database is simply created (``make run``)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest

from capgate.store.factory import open_store
from capgate.store.schema import VERSION, SchemaMismatch
from tests.serverproc import REPO
from tests.storekit import Backend
from tests.test_store_migrations import build_postgres, build_sqlite

OLD = 3  # a released version: MIGRATIONS[:3] built it


def capgate(*args: str, db: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CAPGATE_DB": db, "CAPGATE_OCR": "0"}
    return subprocess.run([sys.executable, "-m", "capgate", *args], env=env, cwd=REPO, capture_output=True,
                          text=True, timeout=timeout)


def build_old(backend: Backend) -> None:
    if backend.name == "sqlite":
        build_sqlite(Path(backend.db), tuple(range(OLD)), OLD)
    else:
        build_postgres(backend.db, tuple(range(OLD)), OLD)


def test_new_database_status_upgrade_status(backend: Backend) -> None:
    before = capgate("db", "status", db=backend.db)
    assert before.returncode == 1, before.stderr
    assert "capgate db upgrade" in before.stdout
    made = capgate("db", "upgrade", db=backend.db)
    assert made.returncode == 0, made.stderr
    assert made.stdout.strip() == f"created the schema (version {VERSION})"
    after = capgate("db", "status", db=backend.db)
    assert (after.returncode, after.stdout.strip()) == (0, f"the schema is up to date (version {VERSION})")
    again = capgate("db", "upgrade", db=backend.db)
    assert (again.returncode, again.stdout.strip()) == (0, f"the schema is up to date (version {VERSION})")


def test_out_of_date_schema_refused_until_upgraded(backend: Backend) -> None:
    build_old(backend)
    status = capgate("db", "status", db=backend.db)
    assert status.returncode == 1
    assert status.stdout.strip() == (f"the schema is at version {OLD}, this capgate needs {VERSION}: "
                                     "run 'capgate db upgrade'")
    for command in (["serve", "--port", "0", "--no-ocr"], ["keys", "list"]):
        refused = capgate(*command, db=backend.db)
        assert refused.returncode == 2, (command, refused.stdout, refused.stderr)
        assert refused.stderr.strip() == (
            f"capgate: the database's schema is at version {OLD}, this capgate needs version {VERSION}: "
            "run 'capgate db upgrade' (with the same --db or CAPGATE_DB) first"), refused.stderr
        assert "Traceback" not in refused.stderr
    upgraded = capgate("db", "upgrade", "--db", backend.db, db="")
    assert (upgraded.returncode, upgraded.stdout.strip()) == (0, f"upgraded the schema from version {OLD} to {VERSION}")
    listed = capgate("keys", "list", db=backend.db)
    assert listed.returncode == 0, listed.stderr
    assert "oldkey00" in listed.stdout  # the rows written under the old schema are there


async def test_store_opened_by_the_factory_does_not_migrate(backend: Backend) -> None:
    await asyncio.to_thread(build_old, backend)
    store = open_store(backend.db)
    with pytest.raises(SchemaMismatch) as refused:
        await store.open()
    assert (refused.value.found, refused.value.wanted) == (OLD, VERSION)
    inspected = open_store(backend.db, schema="inspect")
    await inspected.open()
    try:
        assert inspected.schema_found == OLD
    finally:
        await inspected.close()
    upgraded = open_store(backend.db, schema="upgrade")
    await upgraded.open()
    await upgraded.close()
    fresh = open_store(backend.db)
    await fresh.open()
    try:
        assert fresh.schema_found == VERSION
    finally:
        await fresh.close()


async def test_new_database_created_by_a_plain_open(backend: Backend) -> None:
    store = open_store(backend.db)
    await store.open()
    try:
        assert store.schema_found == 0
        assert await store.list_accounts() == []
    finally:
        await store.close()
