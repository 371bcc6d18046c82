"""``make run``'s first step: make sure a usable API key exists and show how to use it.

Keys are stored only as hashes, so the key made here is also kept in ``<data dir>/quickstart.key``
(beside the database) to be shown again on the next ``make run``.
"""

from __future__ import annotations

import asyncio
import sys

from capgate.keys import PREFIX_LENGTH, hash_secret, new_key, well_formed
from capgate.money import usd_to_micros
from capgate.paths import data_dir
from capgate.settings import Settings, from_env
from capgate.store.factory import open_store


async def _ensure_key(settings: Settings) -> str:
    path = data_dir(settings.db) / "quickstart.key"
    store = open_store(settings.db)
    await store.open()
    try:
        if path.is_file():
            key = path.read_text().strip()
            if well_formed(key) and await store.account_by_key_hash(hash_secret(key)) is not None:
                return key
        key = new_key()
        await store.create_account(hash_secret(key), key[:PREFIX_LENGTH], 10, usd_to_micros("10"), False)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(key + "\n")
        path.chmod(0o600)
        return key
    finally:
        await store.close()


def main() -> int:
    settings = from_env()
    key = asyncio.run(_ensure_key(settings))
    base = f"http://{settings.host}:{settings.port}"
    print(f"""
capgate: API key (live account, 10 threads, 10.00 USD; image captchas are read by the built-in OCR):

    {key}

Try it once the server below says it is running:

    curl -s -F key={key} -F method=post -F file=@captcha.png {base}/in.php
    curl -s "{base}/res.php?key={key}&action=get&id=TASK_ID"

A sandbox key (fake, deterministic answers for every captcha type):  .venv/bin/capgate keys create --sandbox
""", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
