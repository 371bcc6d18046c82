"""``make run``'s first step: make sure a usable API key exists and show how to use it.

Keys are stored only as hashes, so the key made here is also kept in ``<data dir>/quickstart.key``
(beside the database) to be shown again on the next ``make run``.
"""

from __future__ import annotations

import asyncio
import sys

from capgate.keys import PREFIX_LENGTH, hash_secret, new_key, well_formed
from capgate.money import usd_to_micros
from capgate.paths import data_dir, missing_folder
from capgate.settings import Settings, from_env
from capgate.store.factory import settings_store
from capgate.store.models import Account

THREADS = 10
BALANCE_USD = "10"


async def _ensure_key(settings: Settings) -> tuple[str, Account]:
    """The quickstart key and its account as they are now (a topup or ``keys threads`` since shows)."""
    path = data_dir(settings.db) / "quickstart.key"
    store = settings_store(settings)
    await store.open()
    try:
        if path.is_file():
            key = path.read_text().strip()
            account = await store.account_by_key_hash(hash_secret(key)) if well_formed(key) else None
            if account is not None:
                return key, account
        key = new_key()
        account = await store.create_account(hash_secret(key), key[:PREFIX_LENGTH], THREADS,
                                             usd_to_micros(BALANCE_USD), False)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(key + "\n")
        path.chmod(0o600)
        return key, account
    finally:
        await store.close()


def describe(account: Account, ocr: bool) -> str:
    """The banner's account line: what the account really is, not what a fresh one would be."""
    kind = "sandbox" if account.sandbox else "live"
    threads = f"{account.threads} thread{'' if account.threads == 1 else 's'}"
    state = f", disabled: capgate keys disable {account.id} --enable" if account.disabled else ""
    reader = "image captchas are read by the built-in OCR" if ocr else "the built-in OCR is off"
    return f"{kind} account, {threads}, {account.balance_usd} USD{state}; {reader}"


def main() -> int:
    try:
        settings = from_env()
    except ValueError as exc:
        print(f"capgate: {exc}", file=sys.stderr)
        return 2
    folder = missing_folder(settings.db)
    if folder is not None:
        print(f"capgate: the database {settings.db} is in a folder that does not exist ({folder}): "
              "fix CAPGATE_DB, or create the folder first", file=sys.stderr)
        return 2
    key, account = asyncio.run(_ensure_key(settings))
    base = f"http://{settings.host}:{settings.port}"
    print(f"""
capgate: API key ({describe(account, settings.ocr)}):

    {key}

Try it once the server below says it is running:

    curl -s -F key={key} -F method=post -F file=@captcha.png {base}/in.php
    curl -s "{base}/res.php?key={key}&action=get&id=TASK_ID"

The human-solver page: {base}/human (sign in with a token from: .venv/bin/capgate workers create NAME --human)

A sandbox key (fake, deterministic answers for every captcha type):  .venv/bin/capgate keys create --sandbox
""", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
