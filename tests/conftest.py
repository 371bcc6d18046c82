from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from capgate.store.base import Store
from tests.appkit import AppHost, app_host
from tests.pgdb import PgDatabase, throwaway_database
from tests.serverproc import ServerProcess, start_server
from tests.storekit import BACKENDS, Backend, new_backend, sqlite_backend


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One shared capgate process (sandbox delay 0.2 s); tests create their own keys on it. Only for
    tests where the process is the point (clients, official SDKs): the others use ``app``."""
    with start_server(tmp_path_factory.mktemp("server")) as proc:
        yield proc


@pytest.fixture()
def sandbox_key(server: ServerProcess) -> str:
    return server.create_key(sandbox=True, threads=50, balance="10")


@pytest.fixture(scope="session")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppHost]:
    """One shared in-process app on SQLite (sandbox answers at once, no OCR); tests make their own keys."""
    with app_host(sqlite_backend(tmp_path_factory.mktemp("app"))) as host:
        yield host


@pytest.fixture(scope="session")
def pg_database() -> Iterator[PgDatabase]:
    """A PostgreSQL database for the session (dropped at the end); skips when none is reachable."""
    with throwaway_database() as db:
        yield db


@pytest.fixture()
def workdir(tmp_path: Path) -> Path:
    return tmp_path


@pytest.fixture(params=BACKENDS)
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    """An empty database on each backend in turn; the test opens stores on it."""
    chosen = new_backend(request.param, tmp_path, lambda: request.getfixturevalue("pg_database"))
    try:
        yield chosen
    finally:
        await chosen.close()


@pytest.fixture()
async def store(backend: Backend) -> Store:
    return await backend.open()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Debian's Chromium under Playwright, one per test module (tests/browserkit.py)."""
    from tests.browserkit import chromium

    with chromium() as launched:
        yield launched
