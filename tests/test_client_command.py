"""``capgate solve`` and ``capgate balance`` against a real capgate process."""

from __future__ import annotations

import csv
import io
import json
import uuid
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

from capgate.cli import main
from tests.serverproc import ServerProcess, free_port


def write_png(path: Path, text: str) -> Path:
    image = Image.new("RGB", (160, 50), "white")
    ImageDraw.Draw(image).text((8, 15), text, fill="black")
    image.save(path, "PNG")
    return path


@pytest.fixture()
def images(tmp_path: Path) -> list[Path]:
    unique = uuid.uuid4().hex[:8]
    return [write_png(tmp_path / f"c{i}.png", f"{unique}-{i}") for i in range(5)]


def test_solve_csv_with_a_row_per_file(server: ServerProcess, sandbox_key: str, images: list[Path],
                                       tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "missing.png"
    argv = ["solve", *map(str, images[:2]), str(missing), str(tmp_path), "--server", server.base_url,
            "--key", sandbox_key, "--concurrency", "2"]
    assert main(argv) == 1
    out = capsys.readouterr().out
    rows = {row["file"]: row for row in csv.DictReader(io.StringIO(out))}
    assert list(next(csv.reader(io.StringIO(out)))) == ["file", "task_id", "answer", "error"]
    assert set(rows) == {*map(str, images[:2]), str(missing), str(tmp_path)}
    for image in images[:2]:
        row = rows[str(image)]
        assert row["task_id"].isdigit() and row["answer"] and not row["error"]
    for bad in (missing, tmp_path):
        assert rows[str(bad)]["error"].startswith("ERROR_UPLOAD") and not rows[str(bad)]["answer"]


def test_solve_jsonl_with_options_from_the_environment(server: ServerProcess, sandbox_key: str,
                                                       images: list[Path], monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("CAPGATE_SERVER", server.base_url)
    monkeypatch.setenv("CAPGATE_KEY", sandbox_key)
    argv = ["solve", *map(str, images), "--format", "jsonl", "--numeric", "1", "--min-len", "4",
            "--max-len", "4", "--timeout", "60"]
    assert main(argv) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert sorted(row["file"] for row in rows) == sorted(map(str, images))
    for row in rows:
        assert row["error"] is None and row["answer"].isdigit() and len(row["answer"]) == 4


def test_solve_case_sensitive(server: ServerProcess, sandbox_key: str, images: list[Path],
                              capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["solve", *map(str, images), "--server", server.base_url, "--key", sandbox_key, "--numeric", "2",
            "--min-len", "20", "--max-len", "20", "--case-sensitive", "--format", "jsonl"]
    assert main(argv) == 0
    answers = "".join(json.loads(line)["answer"] for line in capsys.readouterr().out.splitlines())
    assert answers.isalpha() and answers != answers.lower()


def test_balance(server: ServerProcess, capsys: pytest.CaptureFixture[str]) -> None:
    key = server.create_key(sandbox=True, balance="4.25")
    assert main(["balance", "--server", server.base_url, "--key", key]) == 0
    assert capsys.readouterr().out.strip() == "4.25"


@pytest.mark.parametrize("command", ["balance", "solve"])
def test_refused_key_is_one_line_and_exit_2(server: ServerProcess, images: list[Path], command: str,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    argv = [command, "--server", server.base_url, "--key", "c" * 32]
    if command == "solve":
        argv[1:1] = [str(images[0])]
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1 and captured.err.startswith("capgate: ERROR_KEY_DOES_NOT_EXIST")


def test_unreachable_server_is_one_line(images: list[Path], capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["solve", str(images[0]), "--server", f"http://127.0.0.1:{free_port()}", "--key", "a" * 32]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "ConnectError" in err


@pytest.mark.parametrize("argv", [["balance"], ["balance", "--server", "http://127.0.0.1:9"],
                                  ["balance", "--server", "https://x.test/in.php", "--key", "k"]])
def test_missing_or_bad_settings(argv: list[str], monkeypatch: pytest.MonkeyPatch,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("CAPGATE_SERVER", raising=False)
    monkeypatch.delenv("CAPGATE_KEY", raising=False)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("capgate: ")
