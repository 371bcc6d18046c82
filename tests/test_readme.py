"""The README's Python examples run as written (issue 16, item 4): each ```python block of README.md, as
its own program, in a folder holding ``captcha.png``, with ``CAPGATE_KEY`` (a live key, as ``make run``
prints) and ``CAPGATE_SANDBOX_KEY`` set, against a real capgate process with its built-in OCR. The one
change: ``make run``'s address, ``http://127.0.0.1:8000``, becomes the test server's.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures import draw
from tests.serverproc import REPO, ServerProcess, start_server

README = REPO / "README.md"
MAKE_RUN_URL = "http://127.0.0.1:8000"
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def python_blocks() -> list[str]:
    return BLOCK.findall(README.read_text())


@pytest.fixture(scope="module")
def ocr_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with start_server(tmp_path_factory.mktemp("readme")) as server:
        yield server


def test_the_readme_has_python_examples() -> None:
    blocks = python_blocks()
    assert len(blocks) >= 3 and all(MAKE_RUN_URL in block for block in blocks)


@pytest.mark.parametrize("index", range(len(python_blocks())))
def test_a_readme_python_example_runs_as_written(ocr_server: ServerProcess, tmp_path: Path, index: int) -> None:
    source = python_blocks()[index].replace(MAKE_RUN_URL, ocr_server.base_url)
    (tmp_path / "captcha.png").write_bytes(draw(f"{48213 + index}"))
    env = {**ocr_server.env, "CAPGATE_KEY": ocr_server.create_key(sandbox=False, threads=5, balance="10"),
           "CAPGATE_SANDBOX_KEY": ocr_server.create_key(sandbox=True)}
    env.pop("PYTHONPATH", None)
    done = subprocess.run([sys.executable, "-c", source], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, f"README block {index}:\n{source}\n--- stderr:\n{done.stderr}"
    assert done.stdout.strip(), source
    assert "Traceback" not in done.stderr, done.stderr
    if "turnstile" in source:
        assert "SANDBOX-FAKE-TOKEN-" in done.stdout and "no Turnstile worker: ERROR_NO_SLOT_AVAILABLE" in done.stdout
