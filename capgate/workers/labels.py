"""Learning from use: answers people confirmed, kept as labelled images for ``capgate train``.

Kept only for accounts that opted in (``capgate keys set ACCOUNT --keep-labels on``): answers
confirmed by ``reportgood`` and answers typed by human workers. Each family folder
(``<data dir>/labelled/<profile>/``) has the layout ``capgate train`` reads (images plus
``labels.csv``) and holds at most ``label_limit`` images, so storage stays bounded.
"""

from __future__ import annotations

import asyncio
import csv
import hashlib
import io
import logging
import threading
from pathlib import Path

from capgate.imageformat import sniff
from capgate.paths import labelled_dir
from capgate.protocol.answers import AnswerKind, plain_from_json
from capgate.protocol.methods import BY_NAME, Category
from capgate.settings import Settings
from capgate.solvers.ocr.profile import valid_profile_name
from capgate.store.base import Store
from capgate.store.models import Task

log = logging.getLogger("capgate.labels")
LABELS_FILE = "labels.csv"
DEFAULT_FAMILY = "default"
_lock = threading.Lock()


def family_of(task: Task, account_settings: dict[str, object]) -> str:
    for candidate in (task.params.get("profile"), account_settings.get("profile")):
        if isinstance(candidate, str) and valid_profile_name(candidate):
            return candidate
    return DEFAULT_FAMILY


def keep(folder: Path, image: bytes, label: str, limit: int) -> bool:
    """Add one labelled image to ``folder``; ``False`` if it is full or has the image already."""
    with _lock:
        folder.mkdir(parents=True, exist_ok=True)
        labels = folder / LABELS_FILE
        rows = labels.read_text(encoding="utf-8").splitlines() if labels.exists() else []
        if len(rows) >= limit:
            return False
        name = f"{hashlib.sha256(image).hexdigest()[:24]}.{sniff(image) or 'png'}"
        if (folder / name).exists():
            return False
        (folder / name).write_bytes(image)
        line = io.StringIO()
        csv.writer(line, lineterminator="\n").writerow([name, label])
        with labels.open("a", encoding="utf-8") as handle:
            handle.write(line.getvalue())
        return True


async def keep_task_label(store: Store, settings: Settings, task: Task) -> None:
    """Keep a solved image task's answer as a label, if its account opted in."""
    if BY_NAME[task.method].answer is not AnswerKind.TEXT or task.answer is None:
        return
    if BY_NAME[task.method].category is not Category.IMAGE:  # an audio task's text labels no image
        return
    account = await store.get_account(task.account_id)
    if account is None or not account.settings.get("keep_labels"):
        return
    text = plain_from_json(AnswerKind.TEXT, task.answer)
    image = (await store.blobs(task.id)).get("body")
    if image is None or not text:
        return
    folder = labelled_dir(settings.db) / family_of(task, account.settings)
    try:
        await asyncio.to_thread(keep, folder, image, text, settings.label_limit)
    except OSError:
        log.exception("could not keep a label in %s", folder)
