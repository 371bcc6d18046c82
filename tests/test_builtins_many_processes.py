"""The built-in workers of an API process, run by three processes on one database (as
``capgate serve --processes 3`` or three machines do): the sandbox worker settles each task once,
the sweepers settle each overdue task once, and the pingback senders deliver each pingback once.
Three in-process apps on one database stand for the three processes (each its own store, loop and
background tasks); on both backends. The OCR pool claims through the same contract as these, see
docs/deploy.md "Built-in workers in N processes"."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from urllib.parse import parse_qs

from tests.appkit import AppHost, app_host
from tests.storekit import Backend
from tests.test_pingback import Receiver, register, until
from tests.workerkit import submit, turnstile

TASKS, OVERDUE = 45, 9


async def test_three_processes_settle_and_ping_each_task_once(backend: Backend) -> None:
    with contextlib.ExitStack() as stack:
        hosts: list[AppHost] = [stack.enter_context(app_host(
            backend, sandbox_delay=0.05, token_deadline=1.5, pingback_allow_private=True,
            prices="turnstile=0.001")) for _ in range(3)]
        receiver = stack.enter_context(contextlib.closing(Receiver()))
        key = hosts[0].make_key(sandbox=True, threads=200, balance="10")
        async with contextlib.AsyncExitStack() as astack:
            clients = [await astack.enter_async_context(host.aclient()) for host in hosts]
            await register(clients[0], key, "127.0.0.1")
            hook = f"{receiver.url()}/hook"
            answered = await asyncio.gather(*(submit(clients[i % 3], key, **turnstile(), pingback=hook)
                                              for i in range(TASKS)))
            # Past their deadline before the sandbox would answer: settled by whichever sweeper runs first.
            overdue = await asyncio.gather(*(submit(clients[i % 3], key, method="turnstile",
                                                    sitekey=f"0x4AAAslow{i}",
                                                    pageurl="https://example.com/sandbox-slow-60", pingback=hook)
                                             for i in range(OVERDUE)))
            ids = [*answered, *overdue]
            assert all(i.isdigit() for i in ids), ids
            await until(lambda: len(receiver.hits) >= len(ids), 30)
            await asyncio.sleep(1.0)  # a second delivery of any of them would arrive meanwhile
        pinged = Counter(parse_qs(hit.body.decode())["id"][0] for hit in receiver.hits)
        assert pinged == Counter(ids), "every task pinged exactly once"
        codes = {parse_qs(hit.body.decode())["id"][0]: parse_qs(hit.body.decode())["code"][0]
                 for hit in receiver.hits}
        assert {codes[i] for i in overdue} == {"ERROR_CAPTCHA_UNSOLVABLE"}
        assert all(codes[i].startswith("SANDBOX-FAKE-TOKEN-") for i in answered)
        ledger = hosts[1].ledger(key)
        charges = [entry for entry in hosts[1].run(hosts[1].store.ledger(hosts[1].account_id(key), 10_000))
                   if entry.kind.value == "charge"]
        assert sorted(str(entry.task_id) for entry in charges) == sorted(answered)  # each answered once
        assert sum(amount for _, amount in ledger) == hosts[2].run(
            hosts[2].store.get_account(hosts[2].account_id(key))).balance  # type: ignore[union-attr]
