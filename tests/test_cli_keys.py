"""``capgate keys create|list|topup|disable|threads``: the operator's side of accounts.

Most checks call ``capgate.cli.main`` in-process (fast); the ones about what a shell sees (the key
alone on the last stdout line, exit code 2, no traceback) run the real command.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from capgate import cli
from capgate.keys import hash_secret
from capgate.store.models import Account, LedgerKind
from capgate.store.sqlite import SQLiteStore
from tests.serverproc import REPO

KEY_RE = re.compile(r"[0-9a-zA-Z]{32}")


@pytest.fixture()
def db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "capgate.db"
    monkeypatch.setenv("CAPGATE_DB", str(path))
    return path


def run_main(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    try:
        code = cli.main(list(args))
    except SystemExit as exc:  # argparse errors
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def shell(db: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CAPGATE_DB": str(db)}
    return subprocess.run([sys.executable, "-m", "capgate", *args], env=env, capture_output=True, text=True,
                          cwd=REPO, timeout=60, check=False)


def find(db: Path, key: str) -> Account:
    async def run() -> Account | None:
        store = SQLiteStore(db)
        await store.open()
        try:
            return await store.account_by_key_hash(hash_secret(key))
        finally:
            await store.close()
    account = asyncio.run(run())
    assert account is not None
    return account


def ledger_kinds(db: Path, account_id: int) -> list[tuple[LedgerKind, int]]:
    async def run() -> list[tuple[LedgerKind, int]]:
        store = SQLiteStore(db)
        await store.open()
        try:
            return [(e.kind, e.amount) for e in reversed(await store.ledger(account_id))]
        finally:
            await store.close()
    return asyncio.run(run())


def create(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    code, out, _ = run_main(capsys, "keys", "create", *args)
    assert code == 0
    key = out.strip().splitlines()[-1]
    assert KEY_RE.fullmatch(key), out
    return key


# ------------------------------------------------------------------------------------------ the shell's view


def test_create_prints_the_key_alone_on_the_last_line(db: Path) -> None:
    result = shell(db, "keys", "create", "--sandbox", "--threads", "3", "--balance", "1.25")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines and KEY_RE.fullmatch(lines[-1]), result.stdout
    assert result.stdout.endswith(lines[-1] + "\n")
    account = find(db, lines[-1])
    assert (account.sandbox, account.threads, account.balance, account.disabled) == (True, 3, 1_250_000, False)
    # what scripts do: KEY=$(capgate keys create | tail -n1)
    piped = subprocess.run(f"{sys.executable} -m capgate keys create | tail -n1", shell=True, capture_output=True,
                           text=True, cwd=REPO, env={**os.environ, "CAPGATE_DB": str(db)}, timeout=60,
                           check=True)
    assert KEY_RE.fullmatch(piped.stdout.strip())
    assert piped.stdout.strip() != lines[-1]


BAD_INPUT = [
    ("keys", "create", "--balance", "abc"),
    ("keys", "create", "--balance", "-1"),
    ("keys", "create", "--balance", "nan"),
    ("keys", "create", "--balance", "inf"),
    ("keys", "create", "--threads", "0"),
    ("keys", "create", "--threads", "two"),
    ("keys", "topup", "424242", "1"),
    ("keys", "topup", "nosuchaccount", "1"),
    ("keys", "disable", "0123456789abcdef0123456789abcdef"),
    ("keys", "frobnicate"),
]


@pytest.mark.parametrize("args", BAD_INPUT, ids=lambda a: "-".join(a[1:]))
def test_bad_input_is_a_clear_error(db: Path, capsys: pytest.CaptureFixture[str], args: tuple[str, ...]) -> None:
    code, out, err = run_main(capsys, *args)  # an exception here would be a traceback in the shell
    assert code == 2
    assert out == ""
    last = err.strip().splitlines()[-1]
    assert last.startswith(("capgate: no single account", "capgate keys")), err
    assert "error" in last or "no single account" in last


@pytest.mark.parametrize("args", [BAD_INPUT[0], BAD_INPUT[4], BAD_INPUT[7]], ids=lambda a: "-".join(a[1:]))
def test_bad_input_from_the_shell(db: Path, args: tuple[str, ...]) -> None:
    result = shell(db, *args)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
    assert result.stderr.strip().splitlines()[-1].startswith(("capgate: ", "capgate keys"))


@pytest.mark.parametrize("args", [("keys", "create", "--balance", "10000000000000"),
                                  ("keys", "create", "--balance", "1e400"),
                                  ("keys", "create", "--threads", "99999999999999999999")],
                         ids=["balance-1e13", "balance-1e400", "threads-1e20"])
def test_huge_numbers_are_a_clear_error(db: Path, capsys: pytest.CaptureFixture[str], args: tuple[str, ...]) -> None:
    code, _, err = run_main(capsys, *args)
    assert code == 2 and err.startswith(("capgate", "usage"))


def test_unusable_database_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CAPGATE_DB", str(tmp_path))  # a directory
    code, _, err = run_main(capsys, "keys", "list")
    assert code == 2 and err.startswith("capgate: ")


# ------------------------------------------------------------------------------------------ in-process


def test_create_defaults(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_main(capsys, "keys", "create")
    assert code == 0
    assert out.count("\n") == 1  # the key and nothing else on stdout
    key = out.strip()
    account = find(db, key)
    assert (account.sandbox, account.threads, account.balance) == (False, 5, 0)
    assert account.key_prefix == key[:len(account.key_prefix)]
    assert "only" in err  # the key is shown once: said on stderr
    assert ledger_kinds(db, account.id) == []


def test_create_with_options(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    key = create(capsys, "--sandbox", "--threads", "12", "--balance", "3.5")
    account = find(db, key)
    assert (account.sandbox, account.threads, account.balance) == (True, 12, 3_500_000)
    assert ledger_kinds(db, account.id) == [(LedgerKind.TOPUP, 3_500_000)]


def test_keys_are_unique(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    keys = {create(capsys) for _ in range(5)}
    assert len(keys) == 5


def test_db_flag_wins_over_the_environment(db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    other = tmp_path / "other.db"
    key = create(capsys, "--db", str(other))
    find(other, key)
    code, out, _ = run_main(capsys, "keys", "list")
    assert code == 0 and out == ""  # $CAPGATE_DB has no accounts
    code, out, _ = run_main(capsys, "keys", "list", "--db", str(other))
    assert key[:6] in out


def test_list(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_main(capsys, "keys", "list")
    assert code == 0 and out == "" and "no accounts" in err
    live = create(capsys, "--threads", "2", "--balance", "0.5")
    sandbox = create(capsys, "--sandbox")
    code, out, _ = run_main(capsys, "keys", "list")
    assert code == 0
    lines = out.strip().splitlines()
    assert len(lines) == 2
    assert live[:6] in lines[0] and "live" in lines[0] and "threads=2" in lines[0] and "balance=0.50" in lines[0]
    assert sandbox[:6] in lines[1] and "sandbox" in lines[1] and "active" in lines[1]
    assert live not in out and sandbox not in out  # never the whole key


@pytest.mark.parametrize("how", ["key", "id", "prefix"])
def test_topup(db: Path, capsys: pytest.CaptureFixture[str], how: str) -> None:
    key = create(capsys, "--balance", "1")
    account = find(db, key)
    ident = {"key": key, "id": str(account.id), "prefix": key[:6]}[how]
    code, out, _ = run_main(capsys, "keys", "topup", ident, "2.25", "--note", "invoice 7")
    assert code == 0
    assert "balance=3.25" in out
    assert find(db, key).balance == 3_250_000
    assert ledger_kinds(db, account.id) == [(LedgerKind.TOPUP, 1_000_000), (LedgerKind.TOPUP, 2_250_000)]


def test_topup_refuses_bad_amounts(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    key = create(capsys)
    for amount in ("abc", "-1", "nan", ""):
        code, _, err = run_main(capsys, "keys", "topup", key, amount)
        assert code == 2, amount
        assert "not an amount" in err
    assert find(db, key).balance == 0


def test_disable_and_enable(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    key = create(capsys)
    other = create(capsys)
    code, out, _ = run_main(capsys, "keys", "disable", key)
    assert code == 0 and "disabled" in out
    assert find(db, key).disabled
    assert not find(db, other).disabled
    code, out, _ = run_main(capsys, "keys", "disable", "--enable", key)
    assert code == 0 and "active" in out
    assert not find(db, key).disabled


def test_threads(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    key = create(capsys)
    code, out, _ = run_main(capsys, "keys", "threads", key, "9")
    assert code == 0 and "threads=9" in out
    assert find(db, key).threads == 9
    code, _, _ = run_main(capsys, "keys", "threads", key, "0")
    assert code == 2


def test_unknown_account(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    create(capsys)
    for ident in ("999", "zzzzzz", "abc", ""):
        code, out, err = run_main(capsys, "keys", "topup", ident, "1")
        assert code == 2, ident
        assert out == ""
        assert err.startswith("capgate: no single account matches")


def test_a_wrong_full_key_is_not_a_prefix(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    key = create(capsys)
    wrong = key[:6] + ("0" if key[6] != "0" else "1") + key[7:]
    code, _, err = run_main(capsys, "keys", "topup", wrong, "5")
    assert find(db, key).balance == 0, "the account of another key was topped up"
    assert code == 2 and "no single account" in err
