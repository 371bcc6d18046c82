"""Who serves what (``capgate.workers.presence``), as in.php asks it: two processes' views of one store,
on both backends. A claim counts at once in the process it went through; every other process reads it
from the store within the cache's second; the store is written at most every few seconds per token."""

from __future__ import annotations

import time

import pytest

from capgate.store.base import Store
from capgate.workers import presence
from capgate.workers.presence import CACHE_S, RECORD_EVERY_S, Presence

WINDOW_S = 60.0


async def last_seen(store: Store, worker_id: int) -> float | None:
    return next(seen.last_seen for seen in await store.workers_seen(0.0) if seen.worker.id == worker_id)


async def test_a_claim_counts_at_once_where_it_went_and_within_a_second_elsewhere(store: Store) -> None:
    bot = await store.create_worker("bot", "wh-1", "cgw_abcd", [], False)
    here, there = Presence(store, WINDOW_S), Presence(store, WINDOW_S)
    now = time.time()
    assert not await here.serves("turnstile", now) and not await there.serves("turnstile", now)
    await here.seen(bot.id, ["turnstile"], now)  # both views hold "nobody" for another second
    assert await here.serves("turnstile", now)
    assert not await here.serves("hcaptcha", now)
    assert not await there.serves("turnstile", now)  # its cached answer stands...
    assert await there.serves("turnstile", now + CACHE_S + 0.1)  # ...until it reads the store again
    # Past the note, this process reads the store too, and finds the claim there.
    assert await here.serves("turnstile", time.time() + CACHE_S + 0.1)


async def test_a_claim_of_any_method_serves_each(store: Store) -> None:
    bot = await store.create_worker("any", "wh-1", "cgw_abcd", [], False)
    here, there = Presence(store, WINDOW_S), Presence(store, WINDOW_S)
    now = time.time()
    await here.seen(bot.id, None, now)
    assert await here.serves("lemin", now) and await there.serves("friendly_captcha", now)


async def test_the_store_is_written_at_most_every_few_seconds(store: Store) -> None:
    bot = await store.create_worker("bot", "wh-1", "cgw_abcd", [], False)
    view = Presence(store, WINDOW_S)
    start = time.time()
    await view.seen(bot.id, ["turnstile"], start)
    await view.seen(bot.id, ["turnstile"], start + 1)
    assert await last_seen(store, bot.id) == pytest.approx(start)
    await view.seen(bot.id, ["hcaptcha"], start + 2)  # another list: written at once
    assert await last_seen(store, bot.id) == pytest.approx(start + 2)
    await view.seen(bot.id, ["turnstile"], start + RECORD_EVERY_S + 0.5)
    assert await last_seen(store, bot.id) == pytest.approx(start + RECORD_EVERY_S + 0.5)


async def test_the_throttle_forgets_what_it_no_longer_needs(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """A token that varies its list without end must not grow this process's memory without end."""
    monkeypatch.setattr(presence, "RECORDED_MAX", 4)
    bot = await store.create_worker("bot", "wh-1", "cgw_abcd", [], False)
    view = Presence(store, WINDOW_S)
    start = time.time()
    methods = ["turnstile", "hcaptcha", "lemin", "yandex", "capy", "tencent", "datadome", "mtcaptcha"]
    for step, method in enumerate(methods):
        await view.seen(bot.id, [method], start + step * (RECORD_EVERY_S + 1))
        assert len(view._recorded) <= 4
    assert await last_seen(store, bot.id) == pytest.approx(start + 7 * (RECORD_EVERY_S + 1))
