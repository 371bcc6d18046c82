from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.serverproc import ServerProcess, start_server


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One shared capgate process (sandbox delay 0.2 s); tests create their own keys on it."""
    with start_server(tmp_path_factory.mktemp("server")) as proc:
        yield proc


@pytest.fixture()
def sandbox_key(server: ServerProcess) -> str:
    return server.create_key(sandbox=True, threads=50, balance="10")


@pytest.fixture()
def workdir(tmp_path: Path) -> Path:
    return tmp_path
