"""What a new user meets first (issue 16, item 7): the database named by ``--db`` in its errors, a
mistyped database folder refused rather than created, help that reads as text, ``keys set --profile``
refusing a profile that does not exist, ``make run``'s banner showing the account as it is, and a server
URL without a scheme.

Most checks run the real ``capgate`` command, as a shell would; the help walk is in process.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from capgate import cli
from capgate.client import Client, NetworkError
from capgate.protocol.wire import base_url
from capgate.solvers.ocr.profile import Profile, save_profile
from tests.serverproc import REPO, ServerProcess, start_server


def capgate(*args: str, db: Path | None = None, cwd: Path = REPO, module: str = "capgate",
            ) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("CAPGATE_DB", "CAPGATE_DATA_DIR")}
    if db is not None:
        env["CAPGATE_DB"] = str(db)
    return subprocess.run([sys.executable, "-m", module, *args], env=env, capture_output=True, text=True,
                          cwd=cwd, timeout=120, check=False)


def refused(result: subprocess.CompletedProcess[str]) -> str:
    """The one line a refused command prints: exit code 2, nothing on stdout, no traceback."""
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("capgate: "), result.stderr
    return lines[0]


# ------------------------------------------------------------------------------------------ the database


def test_a_database_error_names_the_db_flag(tmp_path: Path) -> None:
    env_db = tmp_path / "from-env.db"
    not_a_db = tmp_path / "garbage.db"
    not_a_db.write_bytes(b"this is not a SQLite file, and it is long enough to be read as one" * 4)
    line = refused(capgate("keys", "list", "--db", str(not_a_db), db=env_db))
    assert str(not_a_db) in line and str(env_db) not in line
    folder = tmp_path / "a-folder.db"
    folder.mkdir()
    line = refused(capgate("keys", "list", "--db", str(folder), db=env_db))
    assert str(folder) in line and "can't be used" in line


@pytest.mark.parametrize("how", ["env", "flag"])
def test_a_missing_database_folder_is_refused_not_created(tmp_path: Path, how: str) -> None:
    mistyped = tmp_path / "captgate-data" / "capgate.db"
    result = capgate("keys", "create", *(["--db", str(mistyped)] if how == "flag" else []),
                     db=mistyped if how == "env" else tmp_path / "other.db")
    line = refused(result)
    assert str(mistyped.parent) in line and "does not exist" in line
    assert not mistyped.parent.exists()


def test_serve_refuses_a_missing_database_folder(tmp_path: Path) -> None:
    mistyped = tmp_path / "nope" / "capgate.db"
    line = refused(capgate("serve", "--port", "1", db=mistyped))
    assert "does not exist" in line
    assert not mistyped.parent.exists()


def test_make_runs_first_step_refuses_it_too(tmp_path: Path) -> None:
    mistyped = tmp_path / "nope" / "capgate.db"
    line = refused(capgate(db=mistyped, module="capgate.quickstart"))
    assert str(mistyped.parent) in line
    assert not mistyped.parent.exists()


def test_the_default_data_folder_is_made(tmp_path: Path) -> None:
    result = capgate("keys", "list", cwd=tmp_path)  # neither --db nor CAPGATE_DB: .capgate/capgate.db
    assert result.returncode == 0, result.stderr
    assert (tmp_path / ".capgate" / "capgate.db").is_file()
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    result = capgate("keys", "list", db=Path(".capgate/capgate.db"), cwd=fresh)  # as the Makefile exports it
    assert result.returncode == 0, result.stderr
    assert (fresh / ".capgate" / "capgate.db").is_file()


# ------------------------------------------------------------------------------------------ help


def _parsers(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                yield from _parsers(child)


def test_help_is_text_not_markup() -> None:
    result = capgate("--help")
    assert result.returncode == 0
    assert "``" not in result.stdout and "capgate" in result.stdout
    for parser in _parsers(cli.build_parser()):
        assert "``" not in parser.format_help(), parser.prog


def test_every_serve_option_says_what_it_does() -> None:
    serve = next(p for p in _parsers(cli.build_parser()) if p.prog.endswith(" serve"))
    undescribed = [action.option_strings for action in serve._actions if not action.help]
    assert undescribed == []
    text = capgate("serve", "--help").stdout
    assert "default 8000" in text and "0 for every" in text  # the port, and what prices default to


# ------------------------------------------------------------------------------------------ keys set --profile


def test_keys_set_refuses_a_profile_that_does_not_exist(tmp_path: Path) -> None:
    db = tmp_path / "capgate.db"
    key = capgate("keys", "create", db=db).stdout.strip()
    line = refused(capgate("keys", "set", key, "--profile", "shpo", db=db))
    assert "'shpo'" in line and str(tmp_path / "profiles") in line and "capgate train" in line
    save_profile(tmp_path / "profiles", Profile(name="shop", alphabet="abc"), b"not really onnx")
    line = refused(capgate("keys", "set", key, "--profile", "shpo", db=db))
    assert "there: shop" in line
    result = capgate("keys", "set", key, "--profile", "shop", db=db)
    assert result.returncode == 0, result.stderr
    assert "profile=shop" in result.stdout
    result = capgate("keys", "set", key, "--profile", "off", db=db)  # off needs no profile
    assert result.returncode == 0, result.stderr
    assert "settings: none" in result.stdout


# ------------------------------------------------------------------------------------------ make run's banner


def test_the_banner_shows_the_account_as_it_is(tmp_path: Path) -> None:
    db = tmp_path / "capgate.db"
    first = capgate(db=db, module="capgate.quickstart")
    assert first.returncode == 0, first.stderr
    assert "live account, 10 threads, 10.00 USD" in first.stderr
    assert "http://127.0.0.1:8000/human" in first.stderr
    key = (tmp_path / "quickstart.key").read_text().strip()
    assert key in first.stderr
    assert capgate("keys", "topup", key, "5.5", db=db).returncode == 0
    assert capgate("keys", "threads", key, "3", db=db).returncode == 0
    again = capgate(db=db, module="capgate.quickstart")
    assert again.returncode == 0, again.stderr
    assert key in again.stderr  # the same key
    assert "live account, 3 threads, 15.50 USD" in again.stderr
    assert "10 threads" not in again.stderr


# ------------------------------------------------------------------------------------------ server URLs


@pytest.mark.parametrize(("typed", "url"), [
    ("127.0.0.1:8000", "http://127.0.0.1:8000"),
    ("localhost:8000/", "http://localhost:8000"),
    ("LOCALHOST", "http://LOCALHOST"),
    ("127.1.2.3", "http://127.1.2.3"),
    ("[::1]:8000/prefix", "http://[::1]:8000/prefix"),
    ("api.2captcha.com", "https://api.2captcha.com"),
    ("10.0.0.5:8000", "https://10.0.0.5:8000"),
    ("http://capgate.internal:8000", "http://capgate.internal:8000"),
    ("https://127.0.0.1:8443", "https://127.0.0.1:8443"),
    (" HTTP://127.0.0.1 ", "HTTP://127.0.0.1"),
])
def test_base_url(typed: str, url: str) -> None:
    assert base_url(typed) == url


@pytest.mark.parametrize("typed", ["", "  ", "ftp://127.0.0.1", "file:///etc/passwd"])
def test_base_url_refuses(typed: str) -> None:
    with pytest.raises(ValueError):
        base_url(typed)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with start_server(tmp_path_factory.mktemp("first-contact"), env={"CAPGATE_OCR": "0"}) as proc:
        yield proc


def test_a_bare_local_address_is_plain_http(server: ServerProcess) -> None:
    key = server.create_key(balance="1.5")
    bare = server.base_url.removeprefix("http://")
    with Client(bare, key, network_retries=0) as client:
        assert client.balance() == Decimal("1.50")
    result = capgate("balance", "--server", bare, "--key", key)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "1.50"


def test_https_to_a_plain_http_server_says_so(server: ServerProcess) -> None:
    key = server.create_key()
    https = server.base_url.replace("http://", "https://")
    with Client(https, key, network_retries=0) as client, pytest.raises(NetworkError) as caught:
        client.balance()
    assert "does not speak HTTPS" in str(caught.value) and "http://" in str(caught.value)
    line = refused(capgate("balance", "--server", https, "--key", key))
    assert "does not speak HTTPS" in line
