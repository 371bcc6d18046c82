"""``docs/example_worker.py``, the plain-Python worker in docs/worker-api.md, run as a program against a
live server: it claims a task, answers it (or gives it back), and with ``--once`` stops."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import httpx
import pytest

from tests.serverproc import REPO, ServerProcess, start_server
from tests.workerkit import PAGEURL, claim_id, get, submit, worker_token

EXAMPLE = REPO / "docs" / "example_worker.py"


@dataclass(frozen=True)
class Setup:
    server: ServerProcess
    key: str
    turnstile_token: str  # from `capgate workers create --methods turnstile`
    any_token: str


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    with start_server(tmp_path_factory.mktemp("example-worker"), env={"CAPGATE_OCR": "0"}) as proc:
        key = proc.create_key(sandbox=False, threads=200)
        yield Setup(proc, key, worker_token(proc, "example", "--methods", "turnstile"), worker_token(proc, "other"))


@pytest.fixture()
async def client(setup: Setup) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=setup.server.base_url, timeout=40) as http:
        yield http


def run_example(setup: Setup, token: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, str(EXAMPLE), "--server", setup.server.base_url,
                             "--token", token, "--once", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish(process: subprocess.Popen[str]) -> tuple[int, str]:
    try:
        output, _ = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    return process.returncode, output


async def test_example_worker_answers_a_turnstile_task(setup: Setup, client: httpx.AsyncClient) -> None:
    process = run_example(setup, setup.turnstile_token)
    try:
        # Accepted once the example's first claim has told the service that turnstile is served.
        task_id = await submit(client, setup.key, method="turnstile", sitekey="0x4AAAexample", pageurl=PAGEURL)
        assert await get(client, setup.key, task_id, wait=25) == "OK|EXAMPLE-TOKEN-for-0x4AAAexample"
    finally:
        code, output = finish(process)
    assert code == 0, output


async def test_example_worker_gives_back_what_it_cannot_solve(setup: Setup, client: httpx.AsyncClient) -> None:
    # Its solve() handles tokens only: a GeeTest task goes back to the queue for another worker.
    process = run_example(setup, setup.any_token, "--methods", "geetest")
    try:
        task_id = await submit(client, setup.key, method="geetest", gt="gt-example", challenge="ch",
                               pageurl=PAGEURL)
    finally:
        code, output = finish(process)
    assert code == 0, output
    assert await get(client, setup.key, task_id) == "CAPCHA_NOT_READY"
    task = await claim_id(client, setup.any_token, task_id, ["geetest"])
    assert task["attempt"] == 2
