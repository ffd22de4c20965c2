"""Issue 21's fault matrix: every fault against the emulator, and the same four invariants checked after each.

One parametrized test, one cell per fault. Each cell runs the adapter (in this process, or as a
`grinder live` process where the fault is the process dying) against one emulated account, injects
its fault, checks what is particular to it, and hands the account to `check_invariants`:

- 0 duplicate client ids among every order the venue ever accepted;
- 0 orders of ours open on the venue once the last adapter stopped (or died and the venue's
  countdown ran out);
- 0 decisions on a stale book: between each `book_stale` and the line that ends it (`book_fresh`,
  or the session's `stop`) the decision count does not move;
- the budget intact: every state folder's budget journal reloads, and its charges cover every
  create and cancel request of ours that reached the venue's matching core (a request the venue
  refused at the door with a fault status executed nothing, and the port charges an action once
  however many tries it takes).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qsl

import pytest
from aiohttp import web

from grinder.errors import LiveError, VenueError
from grinder.live.adapter import LiveAdapter
from grinder.live.audit import AuditLog
from grinder.live.budget import BudgetLimits, DailyBudget, utc_day
from grinder.live.client import make_client
from grinder.live.client_ids import is_ours
from grinder.live.retry import CircuitBreaker
from grinder.live.rollout import MODES
from grinder.venue.server import VenueServer
from tests.conftest import REPO
from tests.live.test_adapter import _dead_port, _until, config, pairs
from tests.live.test_shutdown import ENV
from tests.venue.test_server import CREDS, SYMBOL, client, tape  # noqa: F401 - tape is a fixture

SPEED = 10.0  # replay speed: the sample tape lasts 34 s of wall time, longer than any cell needs
STRATEGY, VENUE_SYMBOL = "static_grid", "BTCUSDT"
# After a 5xx storm ends and the breaker's cool-down (STORM_COOLDOWN_S) has passed, the first order the
# venue accepts comes within this many decisions of the storm's end. 2 s of cool-down is 20 decisions of
# 100 ms, one reconciliation (every 1 s) forgets the creates the storm left unknown, one decision sends
# the trial: about 35 decisions; the rest is slack. Counted in decisions, not seconds: a busy machine
# takes fewer decisions in a second, never more.
STORM_COOLDOWN_S = 2.0
RECOVERY_DECISIONS = 60
HAND_QTY = 0.02  # the position the kill-switch cells open by hand before the kill


# `grinder live` as a process (the kill -9 cells): quotes 1000 USDT from the touch, which no move of the
# sample tape reaches in a cell, so what the killed process leaves rests until someone cancels it.
FAR_GRID = """strategy = "static_grid"
symbol = "BTCUSDT"
step_ms = 200
reconcile_s = 60
params = { levels = 2, interval = 5.0, half_spread = 1000.0, order_qty = 0.002, max_position = 0.01 }
"""


def ours(ids) -> list[str]:
    return sorted(c for c in ids if is_ours(c, STRATEGY, VENUE_SYMBOL))


def read_audit(home: Path) -> list[dict]:
    path = home / "state" / "audit.jsonl"
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


def tap_orders(srv: VenueServer) -> list[tuple[str, str | None]]:
    """(method, client id) of every create and cancel request that gets past the venue's fault knobs.

    Installed inside the server's fault middleware (before it starts): a request answered with a
    fault status never reaches it. A cancel by venue order id is named by that order's client id.
    """
    served: list[tuple[str, str | None]] = []

    @web.middleware
    async def tap(request: web.Request, handler):
        if request.path == "/fapi/v1/order" and request.method in ("POST", "DELETE"):
            p = dict(parse_qsl(request.rel_url.raw_query_string)) | dict(parse_qsl(await request.text()))
            cid = p.get("newClientOrderId") or p.get("origClientOrderId")
            if cid is None and p.get("orderId", "").isdigit() and int(p["orderId"]) in srv.x.orders:
                cid = srv.x.orders[int(p["orderId"])].client_id
            served.append((request.method, cid))
        return await handler(request)

    srv.app.middlewares.append(tap)
    return served


class Live:
    """An adapter in this process on the account: state folder `<home>/state`, audit trail in it (as the CLI)."""

    def __init__(self, acct: Account, home: Path, port: int | None = None, breaker: CircuitBreaker | None = None,
                 **cfg_kw):  # fmt: skip
        self.acct, self.home = acct, home
        # Valid values only: model_copy does not validate them again.
        self.cfg = config(home, port or acct.port).model_copy(update={"instance_probe_s": 0.5, **cfg_kw})
        self.cfg.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.ex = make_client(self.cfg, CREDS.api_key, CREDS.secret)
        self.audit = AuditLog(self.cfg.state_dir / "audit.jsonl", secrets=(CREDS.api_key, CREDS.secret))
        self.adapter = LiveAdapter(self.cfg, self.ex, self.audit, breaker=breaker)
        self.task = asyncio.create_task(self.adapter.run())
        self.closed = False
        acct.lives.append(self)

    def events(self) -> list[dict]:
        return read_audit(self.home)

    async def finish(self, stop: bool = True, timeout_s: float = 90.0) -> BaseException | None:
        """Stop the adapter (`stop`; else wait for it to end by itself), close its client; what it raised, or None."""
        if self.closed:
            return None
        if stop:
            # What the stop leaves is checked: it starts with an order of this adapter resting (unless it ended).
            mine = lambda: any(self.adapter.ids.is_mine(c) for c in self.acct.resting())  # noqa: E731
            await _until(lambda: self.task.done() or mine(), 30, "an order of ours resting before the stop")
            self.adapter.stop()
        try:
            await asyncio.wait_for(self.task, timeout_s)
            return None
        except Exception as e:  # noqa: BLE001 - the cell asserts on it
            return e
        finally:
            self.closed = True
            await self.ex.close()
            self.audit.close()


@dataclass
class Account:
    """One emulated account for a cell: the venue, a hand-operated client, and every adapter's state folder."""

    tape: object
    tmp_path: Path
    speed: float = SPEED
    homes: list[Path] = field(default_factory=list)
    lives: list[Live] = field(default_factory=list)

    async def __aenter__(self) -> Account:
        self.day = utc_day(time.time_ns())
        self.srv = VenueServer(self.tape, CREDS, speed=self.speed)
        self.srv.preroll()
        self.served = tap_orders(self.srv)
        self.port = await self.srv.start()
        self.replay = asyncio.create_task(self.srv.run_replay())
        self.hand = client(self.port)  # an operator's session on the same account
        await self.hand.load_markets()
        return self

    async def __aexit__(self, *exc) -> None:
        try:
            for live in self.lives:  # a cell that failed half-way: its adapters still stop first
                live.adapter.stop()
                await live.finish(stop=False)
        finally:
            self.replay.cancel()
            await self.hand.close()
            await self.srv.stop()

    def home(self, name: str) -> Path:
        path = self.tmp_path / name
        path.mkdir(exist_ok=True)
        if path not in self.homes:
            self.homes.append(path)
        return path

    def start(self, name: str = "a", **kw) -> Live:
        return Live(self, self.home(name), **kw)

    def resting(self) -> list[str]:
        """Client ids of ours open on the venue now."""
        return ours(o.client_id for o in self.srv.x.open_orders())

    async def quoting(self, n: int = 2, timeout_s: float = 60.0) -> None:
        await _until(lambda: len(self.resting()) >= n, timeout_s, f"{n} quotes of ours resting")


async def grinder_live(home: Path, port: int, extra: str) -> asyncio.subprocess.Process:
    """`grinder live` on the venue at `port` with FAR_GRID and `extra` (TOML); state folder `<home>/state`."""
    cfg = home / "live.toml"
    cfg.write_text(f'{FAR_GRID}api_url = "http://127.0.0.1:{port}"\nstate_dir = "{home / "state"}"\n{extra}')
    return await asyncio.create_subprocess_exec(sys.executable, "-m", "grinder", "live", "--config", str(cfg),
                                                env=ENV, cwd=REPO, stdout=asyncio.subprocess.DEVNULL,
                                                stderr=asyncio.subprocess.DEVNULL)  # fmt: skip


# ---- the invariants every cell must leave ----


def stale_decisions(events: list[dict]) -> list[tuple[dict, dict]]:
    """(book_stale, the line ending it) pairs whose decision counts differ: decisions taken on a stale book.

    A stale period ends at the next `book_fresh` or the session's `stop`; one cut short by the next
    `start` (the process died) has nothing after it to compare.
    """
    bad = []
    for i, e in enumerate(events):
        if e["event"] == "book_stale":
            end = next((f for f in events[i + 1 :] if f["event"] in ("book_fresh", "stop", "start")), None)
            if end is not None and end["event"] != "start" and end["decisions"] != e["decisions"]:
                bad.append((e, end))
    return bad


def check_invariants(acct: Account) -> None:
    """The four invariants of issue 21's matrix, on the venue, the audit trails and the state folders."""
    srv = acct.srv
    dup = sorted(c for c, n in Counter(o.client_id for o in srv.x.orders.values()).items() if n > 1)
    assert dup == [], f"client ids the venue accepted more than once: {dup}"
    assert acct.resting() == [], f"orders of ours left on the venue after the stop: {acct.resting()}"
    for live in acct.lives:
        out = live.adapter.stop_outcome  # None: it never traded (a refused start)
        assert out is None or out.clean, f"{live.home.name}: stop not clean: {out.message()}"
    for home in acct.homes:
        assert stale_decisions(read_audit(home)) == [], f"{home.name}: decisions on a stale book"
    charged = 0
    for home in acct.homes:
        path = home / "state" / "budget.jsonl"
        if not path.exists():
            continue
        budget = DailyBudget(path, BudgetLimits(10**9, 1e18), max_delay_s=None)  # LiveError if damaged
        try:
            charged += budget.actions if budget.day == acct.day else 0
        finally:
            budget.close()
    sent = [(m, c) for m, c in acct.served if is_ours(c, STRATEGY, VENUE_SYMBOL)]
    assert sent, "no order request of ours reached the venue: the cell exercised nothing"
    if utc_day(time.time_ns()) == acct.day:  # a UTC midnight inside the cell restarts the count
        assert charged >= len(sent), f"{len(sent)} create/cancel requests of ours reached the venue, {charged} charged"


# ---- the cells ----


async def _stale_then_trading(acct: Account, fault: str) -> None:
    live = acct.start()
    await acct.quoting()
    setattr(acct.srv.faults, fault, True)

    def resumed() -> bool:
        stale = pairs(live.events(), "book_stale", "book_fresh")
        return bool(stale) and stale[0][1] is not None and live.adapter.decisions > stale[0][1]["decisions"] + 5

    await _until(resumed, 60, "the book stale, fresh again and decisions after it")
    assert await live.finish() is None
    (gap, _fresh), *_ = pairs(live.events(), "book_stale", "book_fresh")
    assert (gap["reason"] == "sequence gap") == (fault == "seq_gap")
    assert sum(p == "/fapi/v1/depth" for _, p in acct.srv.faults.requests) >= 2  # resynced from a new snapshot


async def websocket_drop(acct: Account) -> None:
    await _stale_then_trading(acct, "drop_ws")


async def sequence_gap(acct: Account) -> None:
    await _stale_then_trading(acct, "seq_gap")


async def rate_limited(acct: Account) -> None:
    live = acct.start()
    await acct.quoting()
    f = acct.srv.faults

    def limited_creates() -> list[dict]:
        return [e for e in live.events() if e["event"] == "create_error"
                and e["error"] in ("RateLimitExceeded", "DDoSProtection")]  # fmt: skip

    # A few 429s at a time (fewer than the breaker's threshold), until some met a create.
    for _ in range(20):
        f.http_status, f.http_count = 429, 3
        await _until(lambda: f.http_count == 0, 30, "the 429s to be answered")
        if limited_creates():
            break
    limited = {e["client_id"] for e in limited_creates()}

    def answered() -> set[str]:  # sent again after its 429s, and the venue answered it (accepted, or post-only)
        return {e["client_id"] for e in live.events() if e["event"] in ("created", "create_rejected")}

    await _until(lambda: limited <= answered(), 30, "the rate-limited creates to be sent again")
    assert await live.finish() is None
    assert not [e for e in live.events() if e["event"] == "create_failed"]
    assert live.adapter.port.breaker.state == "closed"


async def storm_5xx_then_recovery(acct: Account) -> None:
    live = acct.start(breaker=CircuitBreaker(cooldown_s=STORM_COOLDOWN_S))
    await acct.quoting()
    f = acct.srv.faults
    f.http_status, f.http_count = 503, 10**9  # every private request fails
    await _until(lambda: live.adapter.port.breaker.state == "open", 30, "the breaker to open")
    await asyncio.sleep(1.0)  # decisions refused while it is open
    accepted = len(acct.srv.x.orders)
    f.http_count = 0  # the storm ends
    ended_at = live.adapter.decisions
    await _until(lambda: len(acct.srv.x.orders) > accepted, 60, "an order accepted after the storm")
    recovered_at = live.adapter.decisions
    assert await live.finish() is None
    assert recovered_at - ended_at <= RECOVERY_DECISIONS, f"orders flowed again {recovered_at - ended_at} decisions on"
    states = [e["state"] for e in live.events() if e["event"] == "breaker"]
    assert states[-3:] == ["open", "half_open", "closed"]


async def lost_create_reply(acct: Account) -> None:
    live = acct.start()
    await acct.quoting()
    acct.srv.faults.lose_create_replies = 2  # accepted by the venue, the reply never arrives
    await _until(lambda: any(e["event"] == "created" and e.get("found_by_lookup") for e in live.events()), 60,
                 "a lost create found by its client id")  # fmt: skip
    assert await live.finish() is None
    assert acct.srv.faults.lose_create_replies == 0


async def kill_9_then_restart(acct: Account) -> None:
    home = acct.home("a")
    proc = await grinder_live(home, acct.port, "dead_man_s = 0\n")  # no countdown: the restart must clean up
    try:
        await acct.quoting(2, 90)
        proc.send_signal(signal.SIGKILL)  # no goodbye: nothing of the stop runs
        assert await asyncio.wait_for(proc.wait(), 30) == -signal.SIGKILL
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    left = acct.resting()
    assert left
    live = acct.start("a")  # the same state folder

    def cleaned_up() -> bool:
        now = acct.resting()
        return any(live.adapter.ids.is_mine(c) for c in now) and not set(left) & set(now)

    await _until(cleaned_up, 60, "the restart to trade with the dead process's orders gone")
    assert await live.finish() is None
    ev = live.events()
    restart = ev[max(i for i, e in enumerate(ev) if e["event"] == "start") :]
    cancelled = {e["client_id"] for e in restart if e["event"] == "plan_action" and e["result"] == "cancelled"}
    assert cancelled == set(left) and acct.srv.countdowns_fired == 0  # the restart cancelled them, as orphans


async def kill_9_countdown_expires(acct: Account) -> None:
    home = acct.home("a")
    proc = await grinder_live(home, acct.port, "dead_man_s = 2\n")
    try:
        await _until(lambda: len(acct.resting()) >= 2 and acct.srv.countdown_ms == 2000, 90,
                     "quotes and the switch armed")  # fmt: skip
        proc.send_signal(signal.SIGKILL)
        assert await asyncio.wait_for(proc.wait(), 30) == -signal.SIGKILL
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert acct.resting()  # left by the dead process ...
    await _until(lambda: acct.srv.countdowns_fired >= 1 and not acct.resting(), 30, "the countdown to run out")
    kinds = [e["event"] for e in read_audit(home)]
    assert "dead_man_armed" in kinds and "stop" not in kinds  # ... and cancelled by the venue, not by a stop


async def sigterm_under_503(acct: Account) -> None:
    live = acct.start()
    await acct.quoting(4)
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, live.adapter.stop)  # as `grinder live` does
    try:
        f = acct.srv.faults
        f.http_status, f.http_count = 503, 10**9
        n = len(f.requests)
        os.kill(os.getpid(), signal.SIGTERM)
        # The stop's lists and cancels fail for a while (a dozen requests), then the venue is back.
        await _until(lambda: len(f.requests) - n >= 12 or live.task.done(), 60, "the stop to retry against the 503s")
        f.http_count = 0
        assert await live.finish(stop=False) is None
    finally:
        loop.remove_signal_handler(signal.SIGTERM)
    kinds = [e["event"] for e in live.events()]
    assert "open_orders_failed" in kinds or "cancel_error" in kinds  # it met the 503s ...
    assert "stop_clean" in kinds and "orders_left" not in kinds, "the stop gave up while the venue answered 503"
    assert kinds.index("stop_cancels") < kinds.index("stop_clean") < kinds.index("stop")  # ... and went on


async def two_adapters_one_account(acct: Account) -> None:
    first = acct.start("a")
    await acct.quoting(2)
    # Another state folder, the same strategy and symbol: its probe sees the first place orders.
    second = acct.start("b", instance_probe_s=5.0)
    refused = await second.finish(stop=False)
    assert isinstance(refused, LiveError) and "another adapter" in str(refused)
    decisions, accepted = first.adapter.decisions, len(acct.srv.x.orders)
    await _until(lambda: len(acct.srv.x.orders) > accepted and first.adapter.decisions > decisions + 5, 60,
                 "the first to trade on")  # fmt: skip
    assert not first.task.done()
    assert await first.finish() is None
    b = [e["event"] for e in second.events()]
    assert "other_instance" in b and not [k for k in b if k.startswith("cancel") or k == "create"]
    assert "other_instance" not in [e["event"] for e in first.events()]


async def failed_first_start_then_start(acct: Account) -> None:
    down = acct.start("a", port=_dead_port())  # the venue is down on the first start
    failed = await down.finish(stop=False)
    assert isinstance(failed, VenueError) and "did not answer" in str(failed)
    live = acct.start("a")  # the same state folder, the venue up
    await acct.quoting()
    assert await live.finish() is None


def kill_switch(mode: str):
    async def cell(acct: Account) -> None:
        live = acct.start(rollout=mode, kill_flatten=True, max_flatten_qty=0.05, reconcile_s=60.0)
        await acct.quoting()
        _bb, ba = acct.srv.x.best()
        await acct.hand.create_order(SYMBOL, "limit", "buy", HAND_QTY, (ba + 500) * 0.1, {"timeInForce": "IOC"})
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGUSR1, live.adapter.request_kill)  # as `grinder live` does
        try:
            os.kill(os.getpid(), signal.SIGUSR1)
            await _until(live.task.done, 60, "the kill to stop the adapter")
        finally:
            loop.remove_signal_handler(signal.SIGUSR1)
        assert await live.finish(stop=False) is None
        ev = live.events()
        names = [e["event"] for e in ev]
        i = names.index("kill_requested")
        assert "create" not in names[i:]  # nothing new leaves once the kill is asked for
        (kill,) = [e for e in ev if e["event"] == "kill"]
        assert kill["orders_left"] == []
        flattens = [o for o in acct.srv.x.orders.values() if o.reduce_only]
        if mode == "execute_flatten":
            (order,) = flattens
            assert order.tif == "IOC" and kill["flatten"]["client_id"] == order.client_id
        else:
            assert flattens == [] and kill["flatten"]["result"] == "not_in_mode"
        # Killed stays killed: a start on the folder refuses before it sends anything.
        sent = len(acct.srv.faults.requests)
        again = acct.start(rollout=mode)
        refused = await again.finish(stop=False)
        assert isinstance(refused, LiveError) and "refusing to trade" in str(refused)
        assert len(acct.srv.faults.requests) == sent

    return cell


CELLS = {
    "websocket drop": websocket_drop,
    "sequence gap": sequence_gap,
    "429": rate_limited,
    "5xx storm then recovery": storm_5xx_then_recovery,
    "lost create reply": lost_create_reply,
    "kill -9 then restart": kill_9_then_restart,
    "kill -9 and the countdown expires": kill_9_countdown_expires,
    "SIGTERM under 503": sigterm_under_503,
    "two adapters on one account": two_adapters_one_account,
    "failed first start then a start": failed_first_start_then_start,
    **{f"kill switch in {mode}": kill_switch(mode) for mode in MODES},
}


@pytest.mark.parametrize("cell", list(CELLS))
def test_every_fault_leaves_no_duplicate_id_no_order_of_ours_no_stale_decision_and_the_budget_whole(
    tape,  # noqa: F811
    tmp_path,
    cell,
):
    async def main() -> Account:
        async with Account(tape, tmp_path) as acct:
            await CELLS[cell](acct)
        return acct

    check_invariants(asyncio.run(main()))
