"""The dashboard's figures, worked out from the store: queue, throughput, time to answer, workers,
accounts, failures, bans, and the OCR's accuracy per profile from customers' reports."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from capgate.money import micros_to_usd
from capgate.paths import profiles_dir
from capgate.settings import Settings
from capgate.solvers.ocr.profile import list_profiles
from capgate.store.base import Store
from capgate.store.models import Account, Settled, TaskState, WorkerSeen

WINDOW_S = 900.0  # figures cover the last 15 minutes (results are kept that long by default)
MINUTE = 60.0
GENERIC = "(generic)"  # tasks read by the built-in model or a profile chosen by the image's look
OCR_METHODS = ("normal",)
SETTLED_READ = 20_000  # settled tasks read for the figures: beyond it, the newest (the figures say so)
OVERVIEW_MEMO_S = 1.5  # every open dashboard asks every 2 s: they share one reading
PROFILES_MEMO_S = 10.0  # accuracy reads every reported task: not on every refresh


def percentile(sorted_values: Sequence[float], share: float) -> float | None:
    """Nearest-rank percentile of already sorted values; ``None`` for none."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(share * len(sorted_values)))
    return sorted_values[rank - 1]


def account_json(account: Account, working: int = 0) -> dict[str, Any]:
    return {"id": account.id, "key_prefix": account.key_prefix, "sandbox": account.sandbox,
            "disabled": account.disabled, "threads": account.threads, "working_threads": working,
            "balance": micros_to_usd(account.balance), "balance_micros": account.balance,
            "created_at": account.created_at, "settings": account.settings}


def worker_json(seen: WorkerSeen, now: float, presence_s: float) -> dict[str, Any]:
    w = seen.worker
    online = not w.disabled and seen.last_seen is not None and seen.last_seen >= now - presence_s
    return {"id": w.id, "name": w.name, "token_prefix": w.token_prefix, "methods": list(w.methods),
            "human": w.human, "disabled": w.disabled, "created_at": w.created_at, "last_seen": seen.last_seen,
            "online": online, "serving": list(seen.serving)}


def throughput(settled: Sequence[Settled], now: float) -> dict[str, Any]:
    """Per method: counts, solves per minute and time to answer over the window; and a per-minute series."""
    by_method: dict[str, list[Settled]] = {}
    for task in settled:
        by_method.setdefault(task.method, []).append(task)
    methods = []
    for method, tasks in sorted(by_method.items()):
        solved = sorted(t.took for t in tasks if t.state is TaskState.SOLVED)
        unsolvable = sum(1 for t in tasks if t.state is TaskState.UNSOLVABLE)
        last_minute = sum(1 for t in tasks if t.state is TaskState.SOLVED and t.settled_at > now - MINUTE)
        methods.append({"method": method, "solved": len(solved), "unsolvable": unsolvable,
                        "solved_last_minute": last_minute, "p50": percentile(solved, 0.5),
                        "p95": percentile(solved, 0.95)})
    buckets = int(WINDOW_S // MINUTE)
    start = math.floor(now / MINUTE) * MINUTE - (buckets - 1) * MINUTE
    solved_series, failed_series = [0] * buckets, [0] * buckets
    for task in settled:
        index = int((task.settled_at - start) // MINUTE)
        if 0 <= index < buckets:
            (solved_series if task.state is TaskState.SOLVED else failed_series)[index] += 1
    return {"methods": methods, "series": {"start": start, "step": MINUTE, "solved": solved_series,
                                           "unsolvable": failed_series}}


class ProfileFigures:
    """Profiles on disk, who uses them and how customers reported their answers (memoised briefly)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._memo: tuple[float, list[dict[str, Any]]] = (0.0, [])

    def folder(self) -> Path:
        return profiles_dir(self.settings.db)

    async def read(self, store: Store, fresh: bool = False) -> list[dict[str, Any]]:
        now = time.time()
        if not fresh and now - self._memo[0] < PROFILES_MEMO_S:
            return self._memo[1]
        trained = {profile.name: profile for profile in list_profiles(self.folder())}
        users: dict[str, list[int]] = {}
        for account in await store.list_accounts():
            chosen = account.settings.get("profile")
            if isinstance(chosen, str):
                users.setdefault(chosen, []).append(account.id)
        reports: dict[str, list[int]] = {}  # profile -> [good, bad]
        for params, report, account_settings in await store.reports(OCR_METHODS):
            name = params.get("profile") or account_settings.get("profile") or GENERIC
            tally = reports.setdefault(str(name), [0, 0])
            tally[0 if report == "good" else 1] += 1
        names = sorted(set(trained) | set(users) | set(reports), key=lambda n: (n == GENERIC, n))
        figures = []
        for name in names:
            good, bad = reports.get(name, [0, 0])
            profile = trained.get(name)
            figures.append({"name": name, "trained": profile is not None or name == GENERIC,
                            "accounts": users.get(name, []), "reports_good": good, "reports_bad": bad,
                            "accuracy": good / (good + bad) if good + bad else None,
                            "training_metrics": profile.metrics if profile is not None else {}})
        self._memo = (now, figures)
        return figures


async def overview(store: Store, settings: Settings, profiles: ProfileFigures) -> dict[str, Any]:
    """Everything the dashboard's first page shows, in one answer."""
    now = time.time()
    settled = await store.settled_since(now - WINDOW_S, SETTLED_READ)
    queue = await store.queue_depth()
    working = await store.pending_by_account(now)
    accounts = await store.list_accounts()
    seen = await store.workers_seen(now - settings.worker_presence)
    busiest = sorted(accounts, key=lambda a: (-working.get(a.id, 0), a.disabled, a.id))[:20]
    failures = [{"id": str(t.id), "account_id": t.account_id, "method": t.method, "error": t.error,
                 "settled_at": t.settled_at} for t in settled if t.state is TaskState.UNSOLVABLE][:20]
    return {
        "now": now,
        "window_s": WINDOW_S,
        # Only the newest SETTLED_READ tasks were read: the older minutes of the series fall short.
        "sampled": len(settled) >= SETTLED_READ,
        "queue": [{"method": method, "pool": pool, "depth": n} for (method, pool), n in sorted(queue.items())],
        "pending": sum(queue.values()),
        **throughput(settled, now),
        "workers": [worker_json(w, now, settings.worker_presence) for w in seen],
        "accounts": [account_json(a, working.get(a.id, 0)) for a in busiest],
        "account_count": len(accounts),
        "failures": failures,
        "bans": [{"address": ip, "until": until} for ip, until in await store.bans(now)],
        "profiles": await profiles.read(store),
    }
