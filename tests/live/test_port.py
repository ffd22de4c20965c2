"""The exchange port against the emulator through real ccxt.pro: backoff as told, one order per id, the breaker."""

from __future__ import annotations

import asyncio
import json
import random

import pytest

from grinder.live.audit import AuditLog
from grinder.live.budget import BudgetLimits, DailyBudget
from grinder.live.client_ids import ClientOrderId
from grinder.live.port import ExchangePort, PortFailed, PortRefused
from grinder.live.retry import Backoff, CircuitBreaker
from grinder.venue.server import VenueServer
from tests.venue.test_server import CREDS, SYMBOL, client, tape  # noqa: F401 - tape is a fixture

T0 = 1_764_028_800_000_000_000


class Clock:
    """A fake clock the fake sleep advances; every requested sleep is recorded."""

    def __init__(self):
        self.t, self.slept = T0, []

    def now(self) -> int:
        return self.t

    async def sleep(self, s: float) -> None:
        self.slept.append(s)
        self.t += int(s * 1e9)
        await asyncio.sleep(0)


ROOMY = BudgetLimits(100, 1e9)


def run(tape, body, limits=ROOMY, breaker=None, tmp=None):  # noqa: F811
    async def main():
        srv = VenueServer(tape, CREDS, speed=1.0)
        srv.preroll()
        port = await srv.start()
        ex = client(port)
        await ex.load_markets()
        clock = Clock()
        audit = AuditLog(tmp / "audit.jsonl", secrets=(CREDS.api_key, CREDS.secret))
        p = ExchangePort(ex, SYMBOL, audit, DailyBudget(tmp / "budget.jsonl", limits), clock.now, clock.sleep,
                         Backoff(base_s=0.5, cap_s=8.0, max_attempts=4), breaker or CircuitBreaker(3, 30.0),
                         random.Random(1), timeout_s=5.0)  # fmt: skip
        try:
            return await body(srv, ex, p, clock)
        finally:
            audit.close()
            p.budget.close()  # its fsync thread and file lock, not left to the rest of the session
            await ex.close()
            await srv.stop()

    return asyncio.run(main())


def posts(srv) -> int:
    return sum(1 for m, path in srv.faults.requests if m == "POST" and path == "/fapi/v1/order")


def cid(n: int) -> ClientOrderId:
    return ClientOrderId("static_grid", "BTCUSDT", n, "Port0")


def test_a_429_is_waited_out_as_the_venue_says_then_the_order_goes_once(tape, tmp_path):  # noqa: F811
    async def body(srv, ex, p, clock):
        bb, _ = srv.x.best()
        srv.faults.http_status, srv.faults.http_count, srv.faults.retry_after_s = 429, 2, 3
        o = await p.create(cid(1), "buy", (bb - 50) * 0.1, 0.002)
        assert o["clientOrderId"] == str(cid(1)) and len(srv.x.open_orders()) == 1
        assert len(clock.slept) == 2 and all(s >= 3.0 for s in clock.slept)  # Retry-After: 3
        assert posts(srv) == 3

    run(tape, body, tmp=tmp_path)


def test_a_lost_create_reply_is_looked_up_and_never_sent_twice(tape, tmp_path):  # noqa: F811
    async def body(srv, ex, p, clock):
        bb, _ = srv.x.best()
        srv.faults.lose_create_replies = 1
        o = await p.create(cid(2), "buy", (bb - 50) * 0.1, 0.002)
        assert o["clientOrderId"] == str(cid(2))
        assert [x.client_id for x in srv.x.open_orders()] == [str(cid(2))] and posts(srv) == 1
        lines = [json.loads(x) for x in (tmp_path / "audit.jsonl").read_text().splitlines()]
        assert lines[-1]["event"] == "created" and lines[-1]["found_by_lookup"] is True

    run(tape, body, tmp=tmp_path)


def test_a_5xx_storm_opens_the_breaker_no_new_orders_then_it_recovers(tape, tmp_path):  # noqa: F811
    async def body(srv, ex, p, clock):
        bb, _ = srv.x.best()
        px = (bb - 50) * 0.1
        srv.faults.http_status, srv.faults.http_count = 503, 1000
        with pytest.raises(PortFailed) as e:
            await p.create(cid(3), "buy", px, 0.002)
        assert e.value.unknown  # a 5xx on a create: the venue may hold it, reconciliation will tell
        assert p.breaker.state == "open"
        sent = len(srv.faults.requests)
        with pytest.raises(PortRefused, match="circuit breaker open"):
            await p.create(cid(4), "buy", px, 0.002)
        assert len(srv.faults.requests) == sent  # refused without a request
        srv.faults.http_count = 0  # the venue is back
        clock.t += 31 * 10**9  # after the cool-down one trial goes out
        o = await p.create(cid(5), "buy", px, 0.002)
        assert o["status"] == "open" and p.breaker.state == "closed"
        assert [x.client_id for x in srv.x.open_orders()] == [str(cid(5))]

    run(tape, body, tmp=tmp_path)


def test_permanent_rejections_are_not_retried_and_the_budget_stops_orders(tape, tmp_path):  # noqa: F811
    async def body(srv, ex, p, clock):
        bb, _ = srv.x.best()
        with pytest.raises(PortFailed, match="rejected"):  # post-only that would take
            await p.create(cid(6), "buy", (bb + 100) * 0.1, 0.002)
        assert posts(srv) == 1 and clock.slept == []
        await p.create(cid(7), "buy", (bb - 50) * 0.1, 0.002)
        with pytest.raises(PortRefused, match="daily order actions used up"):
            await p.create(cid(8), "buy", (bb - 60) * 0.1, 0.002)
        assert posts(srv) == 2
        text = (tmp_path / "audit.jsonl").read_text()
        assert CREDS.secret not in text and CREDS.api_key not in text

    run(tape, body, limits=BudgetLimits(max_actions=2, max_notional=1e9), tmp=tmp_path)


def test_cancel_goes_out_even_with_the_breaker_open_and_unknown_orders_are_none(tape, tmp_path):  # noqa: F811
    async def body(srv, ex, p, clock):
        bb, _ = srv.x.best()
        o = await p.create(cid(9), "buy", (bb - 50) * 0.1, 0.002)
        p.breaker.state, p.breaker.opened_at_s = "open", clock.now() / 1e9
        assert (await p.cancel(client_id=str(cid(9))))["status"] == "canceled"
        assert srv.x.open_orders() == []
        assert await p.cancel(order_id=o["id"]) is None  # no longer open

    run(tape, body, tmp=tmp_path)


def test_with_today_used_up_or_the_disk_full_new_orders_stop_and_cancels_still_go(tape, tmp_path):  # noqa: F811
    async def body(srv, ex, p, clock):
        bb, _ = srv.x.best()
        await p.create(cid(1), "buy", (bb - 50) * 0.1, 0.002)
        await p.create(cid(2), "buy", (bb - 60) * 0.1, 0.002)
        with pytest.raises(PortRefused, match="daily order actions used up"):
            await p.create(cid(3), "buy", (bb - 70) * 0.1, 0.002)
        await p.cancel(client_id=str(cid(1)))  # the budget is used up: the cancel still goes (and counts)
        assert p.budget.actions == 3
        p.budget._journal._fail(OSError(28, "No space left on device"))  # the state folder's disk is full
        p.budget.limits = BudgetLimits(100, 1e9)
        with pytest.raises(PortRefused, match="state not recorded .*No space left on device"):
            await p.create(cid(4), "buy", (bb - 80) * 0.1, 0.002)
        await p.cancel(client_id=str(cid(2)))
        assert srv.x.open_orders() == []

    run(tape, body, limits=BudgetLimits(2, 1e9), tmp=tmp_path)


def test_prewarm_sends_charges_and_writes_nothing(tape, tmp_path):  # noqa: F811
    async def body(srv, ex, p, clock):
        bb, _ = srv.x.best()
        audit = tmp_path / "audit.jsonl"
        before = audit.read_text() if audit.exists() else ""
        spent = (p.budget.actions, p.budget.notional)
        last = (ex.last_request_url, ex.last_request_body)
        ex.enableRateLimit = True  # as against Binance: a throwaway must not wait for nor spend request weight
        ex.arm_probe()
        p.prewarm((bb - 1000) * 0.1, 0.002)
        ex.prewarm(p.symbol, (bb - 1000) * 0.1, 0.002)  # raises if the path waited before its fetch
        assert ex.enableRateLimit and (ex.last_request_url, ex.last_request_body) == last
        assert ex.first_request_ns == 0  # never reached the connection
        ex.enableRateLimit = False
        assert posts(srv) == 0 and srv.x.open_orders() == []
        assert (p.budget.actions, p.budget.notional) == spent
        assert (audit.read_text() if audit.exists() else "") == before
        line = p.audit.render(1, "create", client_id="c", side="buy", price=1.5, qty=0.002)
        assert line == '{"ts_ns":1,"event":"create","client_id":"c","side":"buy","price":1.5,"qty":0.002}'

    run(tape, body, tmp=tmp_path)


def test_after_a_5xx_storm_warm_ups_do_not_use_up_the_trial_and_refusals_are_counted_not_listed(tape, tmp_path):  # noqa: F811
    async def body(srv, ex, p, clock):
        bb, _ = srv.x.best()
        px = (bb - 50) * 0.1
        srv.faults.http_status, srv.faults.http_count = 503, 1000
        with pytest.raises(PortFailed):
            await p.create(cid(1), "buy", px, 0.002)
        assert p.breaker.state == "open"
        srv.faults.http_count = 0  # the venue is back
        # A decision every 100 ms for 40 s: each tick warms the path up, each decision asks first.
        n_refused = 0
        for _ in range(400):
            clock.t += 100_000_000
            p.prewarm(px, 0.002)
            if (reason := p.refusal(clock.now(), px * 0.002)) is not None:
                p.refuse(clock.now(), reason)
                n_refused += 1
        assert 250 < n_refused <= 300  # refused for the rest of the 30 s cool-down, not beyond
        assert p.refusal(clock.now(), px * 0.002) is None  # the trial is still there for a real order
        o = await p.create(cid(2), "buy", px, 0.002)
        assert o["status"] == "open" and p.breaker.state == "closed"
        lines = [json.loads(x) for x in (tmp_path / "audit.jsonl").read_text().splitlines()]
        refused = [x for x in lines if x["event"] == "creates_refused"]
        # 30 s of cool-down at 10 refusals a second: one line per 10 s, not 300 lines.
        assert 2 <= len(refused) <= 4
        assert "client_id" not in refused[0] and not [x for x in lines if x["event"] == "create_refused"]
        assert [x["state"] for x in lines if x["event"] == "breaker"] == ["open", "half_open", "closed"]
        p.flush_refused(clock.now(), force=True)
        lines = [json.loads(x) for x in (tmp_path / "audit.jsonl").read_text().splitlines()]
        assert sum(sum(x["counts"].values()) for x in lines if x["event"] == "creates_refused") == n_refused

    run(tape, body, tmp=tmp_path)


def test_a_half_open_trial_the_venue_rejects_still_closes_the_breaker(tape, tmp_path):  # noqa: F811
    async def body(srv, ex, p, clock):
        bb, _ = srv.x.best()
        p.breaker.failure(clock.now() / 1e9)
        p.breaker.failure(clock.now() / 1e9)
        p.breaker.failure(clock.now() / 1e9)
        assert p.breaker.state == "open"
        clock.t += 31 * 10**9
        with pytest.raises(PortFailed, match="rejected"):  # the trial: a post-only order that would take
            await p.create(cid(1), "buy", (bb + 100) * 0.1, 0.002)
        assert p.breaker.state == "closed"  # the venue answered: it is up
        await p.create(cid(2), "buy", (bb - 50) * 0.1, 0.002)

    run(tape, body, tmp=tmp_path)


def test_a_refusals_reason_becomes_one_of_a_few_fixed_kinds():
    from grinder.live.port import refusal_kind

    assert refusal_kind("circuit breaker open") == "breaker_open"
    assert refusal_kind("daily order actions used up (3/3)") == "budget_actions"
    assert refusal_kind("daily notional used up (10.00 + 5.00 > 12.00)") == "budget_notional"
    assert refusal_kind("state not recorded (No space left on device): no new orders") == "state_not_recorded"
    assert refusal_kind("something new") == "other"
