"""The customer side of capgate without HTTP: in.php and res.php as functions of parameters.

Order of checks on every call: banned address, then the key, then the call itself; a wrong or
unknown key counts against the caller's address (PROTOCOL.md §0 "IP ban").
"""

from __future__ import annotations

import ipaddress
import logging
import math
import time
from collections.abc import Awaitable, Callable, Iterable
from urllib.parse import urlsplit

from capgate.keys import hash_secret, well_formed
from capgate.money import micros_to_usd
from capgate.protocol import wire
from capgate.protocol.codes import CODES, OK_REPORT_RECORDED, C
from capgate.protocol.methods import BY_NAME
from capgate.protocol.wire import Reply
from capgate.server.counts import HeldCounts
from capgate.server.memo import Memo
from capgate.server.observe import ACCOUNT
from capgate.server.params import RequestParams
from capgate.server.pingback import Fence, refused_host
from capgate.server.submit import Rejected, build_task
from capgate.server.turns import SubmitTurns
from capgate.settings import Settings, parse_networks
from capgate.solvers import sandbox
from capgate.store.base import ReportPolicy, Store, SubmitLimits
from capgate.store.lifecycle import state_as_of
from capgate.store.models import Account, TaskOutcome, TaskState
from capgate.workers.dispatch import Dispatcher
from capgate.workers.labels import keep_task_label
from capgate.workers.notify import SettleHub
from capgate.workers.sandbox import SandboxWorker

MAX_BATCH_IDS = 100
AUTH_MEMO_S = 0.2
OUTCOME_MEMO_S = 0.1
SETTLED_MEMO_S = 5.0
log = logging.getLogger("capgate.service")


class Service:
    def __init__(self, settings: Settings, store: Store, hub: SettleHub | None = None) -> None:
        self.settings = settings
        self.store = store
        self.hub = hub or SettleHub()
        self.dispatcher = Dispatcher(settings, store, self.hub)
        self.sandbox: SandboxWorker | None = None
        self.builtin_methods: set[str] = set()  # served by in-process workers (OCR)
        self._turns = SubmitTurns(settings.submit_turns, settings.turn_window, settings.turn_block)
        self._ban_exempt = parse_networks(settings.ban_exempt, "ban_exempt")
        self._pingback_fence = Fence.of(settings)
        self._unbanned: Memo[str, bool] = Memo(AUTH_MEMO_S)
        self._accounts: Memo[str, Account] = Memo(AUTH_MEMO_S)
        self._pending_outcomes: Memo[int, tuple[int, TaskOutcome]] = Memo(OUTCOME_MEMO_S)
        self._settled_outcomes: Memo[int, tuple[int, TaskOutcome]] = Memo(SETTLED_MEMO_S)
        # The reply made for a memoised solved outcome (the same object): parsing its stored answer
        # is most of what a solved poll costs beside the store read.
        self._answer_replies: Memo[int, tuple[TaskOutcome, Reply]] = Memo(SETTLED_MEMO_S)
        self.hub.on_any_settle.append(self._forget_outcome)
        self._long_polls: HeldCounts[int] = HeldCounts()  # account id -> long-polls it holds now
        self._actions: dict[str, Callable[[Account, RequestParams, float], Awaitable[Reply]]] = {
            "get": self._get, "get2": self._get2, "getbalance": self._balance,
            "reportgood": self._report_good, "reportbad": self._report_bad, "threadsinfo": self._threads,
            "add_pingback": self._add_pingback, "get_pingback": self._get_pingback,
            "del_pingback": self._del_pingback,
        }

    # ---------------------------------------------------------------------------------- guard

    async def authenticate(self, ip: str, key: str, now: float) -> Account:
        # Both look-ups are memoised for AUTH_MEMO_S: a client polling many times a second costs
        # one read of each per interval. Only good news is memoised (an address not banned, a key
        # that exists), and a ban made here drops the address's memo at once.
        if not self._unbanned.get(ip, now):
            if not self._exempt(ip) and await self.store.ip_banned(ip, now):
                raise Rejected(C.IP_BANNED)
            self._unbanned.put(ip, True, now)
        if not well_formed(key):
            await self._strike(ip, now)
            raise Rejected(C.WRONG_USER_KEY)
        key_hash = hash_secret(key)
        account = self._accounts.get(key_hash, now)
        if account is None:
            account = await self.store.account_by_key_hash(key_hash)
            if account is None:
                await self._strike(ip, now)
                raise Rejected(C.KEY_DOES_NOT_EXIST)
            self._accounts.put(key_hash, account, now)
        ACCOUNT.set(account.id)  # for the request's log line
        if account.disabled:
            raise Rejected(C.KEY_DOES_NOT_EXIST)
        return account

    def _exempt(self, ip: str) -> bool:
        """An address of ``ban_exempt`` (loopback by default) is never struck or banned."""
        try:
            address = ipaddress.ip_address(ip.split("%", 1)[0])
        except ValueError:
            return False
        inner = address.ipv4_mapped if isinstance(address, ipaddress.IPv6Address) else None
        return any(a in net for a in (address, inner) if a is not None for net in self._ban_exempt
                   if a.version == net.version)

    async def _strike(self, ip: str, now: float) -> None:
        s = self.settings
        if self._exempt(ip):
            return
        if await self.store.strike(ip, now, s.ban_window, s.ban_threshold, s.ban_duration):
            self._unbanned.drop(ip)
            raise Rejected(C.IP_BANNED)

    # ---------------------------------------------------------------------------------- in.php

    async def submit(self, ip: str, request: RequestParams) -> Reply:
        try:
            return wire.ok(str(await self.create(ip, request)))
        except Rejected as exc:
            return wire.code(exc.code)

    async def create(self, ip: str, request: RequestParams) -> int:
        """in.php's submit without its wire form, shared with the JSON task API's createTask: the new
        task's id, or :class:`Rejected` with the code."""
        now = time.time()
        account = await self.authenticate(ip, request.get("key").strip(), now)
        return await self._submit(account, request, now)

    async def task_state(self, ip: str, key: str, raw_id: str) -> tuple[TaskState, TaskOutcome | None]:
        """A task's state and outcome as res.php's ``get`` reads them (the JSON task API's
        getTaskResult), or :class:`Rejected` with the code."""
        now = time.time()
        account = await self.authenticate(ip, key.strip(), now)
        return self._slot(await self._outcome(account.id, _task_id(raw_id), now), now)

    async def _submit(self, account: Account, request: RequestParams, now: float) -> int:
        """Store the task the request describes; its id, or :class:`Rejected` with the code."""
        if not self._turns.allow(account.id, now):
            raise Rejected(C.MAX_USER_TURN)
        directives = sandbox.directives(request.values) if account.sandbox else None
        delay = self.settings.sandbox_delay
        if directives is not None:
            if directives.noslot:
                raise Rejected(C.NO_SLOT_AVAILABLE)
            if directives.submit_error:
                raise Rejected(directives.submit_error)
            if directives.delay is not None:
                delay = directives.delay
        task = build_task(request, self.settings, account.sandbox, not_before=now + delay if account.sandbox else 0)
        if not account.sandbox and not await self._served(task.method, now):
            raise Rejected(C.NO_SLOT_AVAILABLE)
        if task.pingback is not None and not await self._pingback_allowed(account, task.pingback):
            raise Rejected(C.BAD_PARAMETERS)
        limits = SubmitLimits(self.settings.thread_cap_code, self.settings.max_pending)
        outcome = await self.store.submit(account, task, now, limits)
        if outcome.task_id is None:
            raise Rejected(outcome.code or C.SERVER_ERROR)
        if account.sandbox:
            if self.sandbox is not None:
                self.sandbox.due_at(task.not_before)
        else:
            self.hub.queued()
        return outcome.task_id

    async def solve_now(self, ip: str, request: RequestParams) -> Reply:
        """``solve.php``: in.php and res.php in one call, holding the request until the task settles
        (at most ``solve_wait`` seconds, then ``CAPCHA_NOT_READY`` with the id still pollable)."""
        now = time.time()
        try:
            account = await self.authenticate(ip, request.get("key").strip(), now)
            task_id = await self._submit(account, request, now)

            async def settled() -> bool:
                task = (await self.store.outcomes(account.id, [task_id])).get(task_id)
                return self._slot(task, time.time())[0] is not TaskState.PENDING

            if self._hold_long_poll(account.id):
                try:
                    await self.hub.wait([task_id], self.settings.solve_wait, settled)
                finally:
                    self._release_long_poll(account.id)
            return self._reply_for((await self.store.outcomes(account.id, [task_id])).get(task_id), time.time())
        except Rejected as exc:
            return wire.code(exc.code)

    async def _served(self, method: str, now: float) -> bool:
        if method in self.builtin_methods:
            return True
        return await self.dispatcher.presence.serves(method, now)

    async def _pingback_allowed(self, account: Account, url: str) -> bool:
        host = _host_of(url)
        # Checked again as add_pingback checks it: a host registered before the rules (or under
        # laxer settings) gets no new task.
        return (host is not None and refused_host(host, self._pingback_fence) is None
                and host in await self.store.pingback_hosts(account.id))

    # ---------------------------------------------------------------------------------- res.php

    async def result(self, ip: str, request: RequestParams) -> Reply:
        now = time.time()
        try:
            account = await self.authenticate(ip, request.get("key").strip(), now)
            handler = self._actions.get(request.get("action").strip())
            if handler is None:
                raise Rejected(C.EMPTY_ACTION)
            return await handler(account, request, now)
        except Rejected as exc:
            return wire.code(exc.code)

    def _slot(self, task: TaskOutcome | None, now: float) -> tuple[TaskState, TaskOutcome | None]:
        if task is None:
            return TaskState.EXPIRED, None
        return state_as_of(task.state, task.created_at, task.deadline_at, task.settled_at, now,
                           self.settings.retention), task

    def _reply_for(self, task: TaskOutcome | None, now: float, price: bool = False) -> Reply:
        state, found = self._slot(task, now)
        if state is TaskState.PENDING:
            return wire.code(C.NOT_READY)
        if state is TaskState.EXPIRED or found is None:
            return wire.code(C.WRONG_CAPTCHA_ID)
        if state is TaskState.UNSOLVABLE:
            return wire.code(found.error or C.CAPTCHA_UNSOLVABLE)
        if not price:
            made = self._answer_replies.get(found.id, now)
            if made is not None and made[0] is found:
                return made[1]
        kind = BY_NAME[found.method].answer
        stored = found.answer_json or "{}"  # a solved task always has one; "{}" fails loudly, as it should
        if price:
            return wire.solved(kind, stored, micros_to_usd(found.price))
        reply = wire.solved(kind, stored)
        self._answer_replies.put(found.id, (found, reply), now)
        return reply

    async def _outcome(self, account_id: int, task_id: int, now: float) -> TaskOutcome | None:
        """A task's outcome for a poll. Clients poll the same task over and over: an outcome read in
        the last OUTCOME_MEMO_S (pending) or SETTLED_MEMO_S (settled: it no longer changes, and
        expiry is worked out from its times) is reused. A settle drops the memo as soon as this
        process hears of it (capgate.workers.notify); at the latest it is OUTCOME_MEMO_S old."""
        memo = self._settled_outcomes.get(task_id, now) or self._pending_outcomes.get(task_id, now)
        if memo is not None and memo[0] == account_id:
            return memo[1]
        outcome = (await self.store.outcomes(account_id, [task_id])).get(task_id)
        if outcome is not None:
            pending = outcome.state is TaskState.PENDING
            (self._pending_outcomes if pending else self._settled_outcomes).put(task_id, (account_id, outcome), now)
        return outcome

    def _forget_outcome(self, task_id: int) -> None:
        self._pending_outcomes.drop(task_id)

    def _wait_seconds(self, request: RequestParams) -> float:
        """``wait=N`` capped at ``max_wait`` (``inf`` included); 0 when absent; NaN is a bad parameter."""
        raw = request.get("wait").strip()
        if not raw:
            return 0.0
        try:
            wait = float(raw)
        except ValueError:
            raise Rejected(C.BAD_PARAMETERS) from None
        if math.isnan(wait):
            raise Rejected(C.BAD_PARAMETERS)
        return min(wait, self.settings.max_wait)

    async def _wait_for(self, account: Account, ids: list[int], request: RequestParams,
                        enough: Callable[[Iterable[bool]], bool] = all) -> dict[int, TaskOutcome] | None:
        """``wait=N``: hold the poll until the tasks asked for have settled (``all`` of them, or for a
        batch ``any``: the caller then has work to do), at most N seconds. The outcomes it read last
        (``None`` without a wait): the poll answers from those, since a memo of the same task from
        before the wait may not have been dropped yet (the store commits a settle a moment before
        this process hears of it)."""
        wait = self._wait_seconds(request)
        if wait <= 0:
            return None
        seen: dict[int, TaskOutcome] = {}

        async def settled() -> bool:
            seen.clear()
            seen.update(await self.store.outcomes(account.id, ids))
            now = time.time()
            return enough(self._slot(seen.get(i), now)[0] is not TaskState.PENDING for i in ids)

        if not self._hold_long_poll(account.id):
            return None  # the account holds its most long-polls: answered as a poll without a wait
        try:
            await self.hub.wait(ids, wait, settled)
        finally:
            self._release_long_poll(account.id)
        return seen

    def _hold_long_poll(self, account_id: int) -> bool:
        """Count one more long-poll of the account, unless it holds ``long_polls_per_account``."""
        return self._long_polls.take(account_id, self.settings.long_polls_per_account)

    def _release_long_poll(self, account_id: int) -> None:
        self._long_polls.give(account_id)

    async def _get(self, account: Account, request: RequestParams, now: float) -> Reply:
        if request.get("ids").strip():
            return await self._get_many(account, request)
        return self._reply_for(*await self._polled(account, request))

    async def _get_many(self, account: Account, request: RequestParams) -> Reply:
        ids = [_task_id(part) for part in request.get("ids").split(",") if part.strip()]
        if not ids or len(ids) > MAX_BATCH_IDS:
            raise Rejected(C.BAD_PARAMETERS)
        waited = await self._wait_for(account, ids, request, any)
        now = time.time()
        tasks = waited if waited is not None else await self.store.outcomes(account.id, ids)
        slots = []
        for task_id in ids:
            reply = self._reply_for(tasks.get(task_id), now)
            slots.append(reply.plain[3:] if reply.status == 1 else reply.plain)
        return wire.batch(slots)

    async def _get2(self, account: Account, request: RequestParams, now: float) -> Reply:
        return self._reply_for(*await self._polled(account, request), price=True)

    async def _polled(self, account: Account, request: RequestParams) -> tuple[TaskOutcome | None, float]:
        """The task ``id`` names, after its ``wait=N`` if any, and the time it was read at."""
        task_id = _task_id(request.get("id"))
        waited = await self._wait_for(account, [task_id], request)
        now = time.time()
        return (waited.get(task_id) if waited is not None else await self._outcome(account.id, task_id, now)), now

    async def _balance(self, account: Account, request: RequestParams, now: float) -> Reply:
        fresh = await self.store.get_account(account.id)  # the memoised account's balance may be old
        return wire.bare((fresh or account).balance_usd)

    async def _report(self, account: Account, request: RequestParams, now: float, good: bool) -> Reply:
        task_id = _task_id(request.get("id"))
        s = self.settings
        policy = ReportPolicy(s.report_window, s.refund_bad, retention_s=s.retention, budget_share=s.refund_budget)
        code = await self.store.report(account.id, task_id, good, now, policy)
        if code is not None:
            raise Rejected(code)
        if good:
            task = await self.store.get_task(account.id, task_id)
            if task is not None:
                await keep_task_label(self.store, self.settings, task)
        return wire.bare(OK_REPORT_RECORDED)

    async def _report_good(self, account: Account, request: RequestParams, now: float) -> Reply:
        return await self._report(account, request, now, True)

    async def _report_bad(self, account: Account, request: RequestParams, now: float) -> Reply:
        return await self._report(account, request, now, False)

    async def _threads(self, account: Account, request: RequestParams, now: float) -> Reply:
        working = await self.store.working_threads(account.id, now)
        return Reply(1, f"OK|threads:{account.threads},working_threads:{working}",
                     {"request": "OK", "threads": account.threads, "working_threads": working})

    async def _add_pingback(self, account: Account, request: RequestParams, now: float) -> Reply:
        addr = request.get("addr").strip()
        host = _host_of(addr)
        if host is None:
            why = f"{addr[:100]!r} is not an http(s) URL or a host"
        else:
            refused = refused_host(host, self._pingback_fence)
            limit = self.settings.pingback_hosts_max
            if refused is None:
                held = await self.store.add_pingback_host(account.id, host, limit)
                if held is None:
                    return wire.bare("OK")
                refused = f"the account has {held} pingback hosts, the most allowed ({limit})"
            why = refused
        log.info("add_pingback refused for account %s: %s", account.id, why)
        # The plain answer is the protocol's code alone; json mode's error_text says why.
        return Reply(0, C.IP_ADDRES, {"request": C.IP_ADDRES, "error_text": f"{CODES[C.IP_ADDRES].meaning} {why}"})

    async def _get_pingback(self, account: Account, request: RequestParams, now: float) -> Reply:
        hosts = await self.store.pingback_hosts(account.id)
        return Reply(1, "OK|" + ",".join(hosts), {"request": hosts})

    async def _del_pingback(self, account: Account, request: RequestParams, now: float) -> Reply:
        addr = request.get("addr").strip()
        if addr == "all":
            await self.store.del_pingback_host(account.id, None)
        else:
            host = _host_of(addr)
            if host is None:
                raise Rejected(C.IP_ADDRES)
            await self.store.del_pingback_host(account.id, host)
        return wire.bare("OK")


def _task_id(raw: str) -> int:
    text = raw.strip()
    if not text:
        raise Rejected(C.WRONG_CAPTCHA_ID)
    if not text.isascii() or not text.isdigit() or len(text) > 18:
        raise Rejected(C.WRONG_ID_FORMAT)
    return int(text)


def _host_of(addr: str) -> str | None:
    """The host a pingback address names: ``https://h:1/p`` and bare ``h`` both give ``h``."""
    if not addr or any(ord(ch) < 32 or ord(ch) == 127 for ch in addr):
        return None  # control characters (NUL above all) are never part of a host we would call
    try:
        parts = urlsplit(addr if "://" in addr else f"http://{addr}")
        host = parts.hostname
        _ = parts.port
    except ValueError:
        return None
    if parts.scheme not in ("http", "https"):
        return None
    return host.lower() if host else None
