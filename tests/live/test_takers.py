"""A strategy's taker orders (IOC, market) through the live adapter and the emulator: sent once, walked, booked once.

The probe kernel below sends an IOC buy through the asks at its first decision, then, once it sees the
position that bought, a market reduce-only sell that closes it; a quote far from the touch on request.
"""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from numba import njit
from prometheus_client.parser import text_string_to_metric_families
from pydantic import ConfigDict, Field

from grinder.book.l2 import EMPTY
from grinder.core import strategy as strategy_mod
from grinder.core.gates import GateConfig
from grinder.core.ledger import FEES
from grinder.core.order_kind import IOC, MARKET, REDUCE_ONLY
from grinder.core.params import ParamVector
from grinder.core.strategy import Strategy
from grinder.live.adapter import LiveAdapter
from grinder.live.audit import AuditLog
from grinder.live.client import make_client
from grinder.live.config import HaConfig, LiveConfig
from grinder.live.leader import Leadership, key_prefix
from grinder.live.metrics import exposition
from grinder.venue.server import VenueServer
from tests.live.redis_server import redis_server  # noqa: F401 - a fixture
from tests.venue.test_server import CREDS, tape  # noqa: F401 - tape is a fixture

NAME = "taker_probe"
TAKER_FEE = 0.0005  # BTCUSDT's (the instruments snapshot), what the emulator charges a taker


class ProbeParams(ParamVector):
    """What the probe sends (quantities in base units; 0: not sent)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    ioc_qty: float = Field(0.0, ge=0, description="the IOC's quantity beyond the best level's (0: no IOC)")
    ioc_through: int = Field(50, ge=0, description="the IOC's limit: ticks through the touch")
    ioc_walk: int = Field(1, ge=0, le=1, description="1: the IOC also takes the whole best level (two levels)")
    ioc_flags: int = Field(0, ge=0, le=4, description="added to the IOC's kind code (4: reduce-only)")
    mkt_qty: float = Field(0.0, ge=0, description="the market sell's quantity (0: the whole position)")
    mkt: int = Field(1, ge=0, le=1, description="1: a market sell once the IOC is seen (at once without an IOC)")
    mkt_flags: int = Field(REDUCE_ONLY, ge=0, le=4, description="added to the market order's kind code")
    quote_qty: float = Field(0.0, ge=0, description="a post-only bid 500 ticks under the touch at every decision")


@njit(cache=False)
def probe(params, state, now_ns, best_bid, best_ask, bid_qty, ask_qty, tick, lot, position, signals, depth,
          open_side, open_px, open_qty, n_open, out_side, out_px, out_qty, out_level, out_kind):  # fmt: skip
    """state[1]: 0 first decision, 1 IOC sent, 2 done; state[2] the position before the IOC, state[3] the position
    the decision after it saw, state[4] decisions that still saw the old position."""
    if best_bid == EMPTY or best_ask == EMPTY:
        return 0
    n = 0
    phase = state[1]
    market_now = False
    if phase == 0.0:
        state[2] = position
        if params[0] > 0.0:
            q = params[0] + (ask_qty if params[2] > 0 else 0.0)
            out_side[n] = 1
            out_px[n] = best_ask + int(params[1])
            out_qty[n] = round(q / lot) * lot
            out_level[n] = 1
            out_kind[n] = IOC + int(params[3])
            n += 1
            state[1] = 1.0
        else:
            market_now = True
    elif phase == 1.0:
        if position != state[2]:
            state[3] = position
            market_now = True
        else:
            state[4] += 1.0
    if market_now:
        state[1] = 2.0
        q = params[4] if params[4] > 0.0 else abs(position)
        if params[5] > 0 and q > 0.0:
            out_side[n] = -1
            out_px[n] = 0
            out_qty[n] = q
            out_level[n] = 2
            out_kind[n] = MARKET + int(params[6])
            n += 1
    if params[7] > 0.0:
        out_side[n] = 1
        out_px[n] = best_bid - 500
        out_qty[n] = params[7]
        out_level[n] = 3
        n += 1
    return n


PROBE = Strategy(NAME, ProbeParams, probe, max_targets=4)


@pytest.fixture(autouse=True)
def probe_strategy(monkeypatch):
    """The probe among the strategies the adapter and its config find by name."""
    found = strategy_mod.discover
    monkeypatch.setattr(strategy_mod, "discover", lambda: {**found(), NAME: PROBE})


def config(tmp_path, port: int, params: dict, **kw) -> LiveConfig:
    return LiveConfig(strategy=NAME, params=params, symbol="BTCUSDT", api_url=f"http://127.0.0.1:{port}",
                      state_dir=tmp_path / "state", step_ms=100, reconcile_s=1.0, instance_probe_s=0.3,
                      **kw)  # fmt: skip


async def _until(pred, timeout_s: float, what: str) -> None:
    t0 = time.monotonic()
    while not pred():
        if time.monotonic() - t0 > timeout_s:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def session(tape, tmp_path, params: dict, seconds: float = 3.0, before=None, until=None, mode: str = "live",  # noqa: F811
                  **cfg_kw):  # fmt: skip
    """The probe against a fresh emulator for `seconds` (or until `until(adapter)`, then 1 s more).

    Returns (adapter, server, audit events, the adapter's client, the exposition at stop). `before(srv)` runs
    before the adapter starts.
    """
    srv = VenueServer(tape, CREDS, speed=5.0)
    srv.preroll()
    port = await srv.start()
    replay = asyncio.create_task(srv.run_replay())
    if before is not None:
        await before(srv)
    cfg = config(tmp_path, port, params, mode=mode, **cfg_kw)
    ex = make_client(cfg, CREDS.api_key, CREDS.secret) if mode != "paper" else make_client(cfg)
    audit = AuditLog(tmp_path / "audit.jsonl", secrets=(CREDS.api_key, CREDS.secret))
    adapter = LiveAdapter(cfg, ex, audit)
    task = asyncio.create_task(adapter.run())
    try:
        if until is not None:
            await _until(lambda: until(adapter) or task.done(), 60, "the probe's orders")
            await asyncio.sleep(1.0)
        else:
            await asyncio.sleep(seconds)
        assert not task.done(), "the adapter stopped by itself"
        text = exposition(adapter.metrics).decode()
        adapter.stop()
        await asyncio.wait_for(task, 60)
    finally:
        if not task.done():
            adapter.stop()
            await asyncio.wait_for(task, 60)
        replay.cancel()
        await ex.close()
        audit.close()
        await srv.stop()
    events = [json.loads(x) for x in (tmp_path / "audit.jsonl").read_text().splitlines()]
    return adapter, srv, events, ex, text


def metric(text: str, name: str, **labels) -> float:
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    raise KeyError(name)


def of(events: list[dict], name: str) -> list[dict]:
    return [e for e in events if e["event"] == name]


def posts(srv) -> list:
    """The order creates that reached the emulator."""
    return [r for r in srv.faults.requests if r == ("POST", "/fapi/v1/order")]


def done_by(adapter) -> bool:
    return sum(adapter.taker_results.values()) >= 2


def test_an_ioc_and_a_market_reduce_only_order_walk_the_book_and_are_booked_once_with_taker_fees(tape, tmp_path):  # noqa: F811
    adapter, srv, events, _ex, text = asyncio.run(
        session(tape, tmp_path, {"ioc_qty": 1.0, "ioc_through": 2000}, until=done_by)
    )
    sent, done = of(events, "taker"), of(events, "taker_done")
    assert [(e["kind"], e["side"], e["reduce_only"]) for e in sent] == [
        ("ioc", "buy", False),
        ("market reduce-only", "sell", True),
    ]
    assert sent[0]["limit"] > 0 and sent[1]["limit"] is None and sent[0]["client_id"].startswith("g_taker_probe:")
    assert [e["result"] for e in done] == ["filled", "filled"] and [e["client_id"] for e in done] == [
        e["client_id"] for e in sent
    ]
    ioc, mkt = (srv.x.find(client_id=e["client_id"]) for e in sent)
    assert (ioc.type, ioc.tif, mkt.type, mkt.reduce_only) == ("LIMIT", "IOC", "MARKET", True)
    assert len(posts(srv)) == 2  # each sent once
    # The IOC walked two levels (the whole best ask and more), the market sell closed the position.
    fills = of(events, "fill")
    ioc_fills = [f for f in fills if f["client_id"] == ioc.client_id]
    assert len({f["price"] for f in ioc_fills}) >= 2 and sum(f["qty"] for f in ioc_fills) == pytest.approx(ioc.filled)
    assert sum(f["qty"] for f in fills if f["client_id"] == mkt.client_id) == pytest.approx(mkt.filled)
    assert mkt.filled == pytest.approx(ioc.filled) and srv.x.position()[0] == pytest.approx(0.0, abs=1e-9)
    # Booked once: every trade id once, the ledger's position the venue's, fees the venue's (taker) charge.
    ids = [f["trade_id"] for f in fills]
    assert len(ids) == len(set(ids)) and adapter.position == pytest.approx(0.0, abs=1e-9)
    notional = ioc.quote_filled + mkt.quote_filled
    assert float(adapter.led[FEES]) == pytest.approx(notional * TAKER_FEE, rel=1e-9)
    assert float(adapter.led[FEES]) == pytest.approx(float(srv.x.led[FEES]), rel=1e-9)
    assert sum(e["booked_from_reply"] for e in done) == 0.0  # the user stream had them before the decision ended
    # The strategy saw the IOC's position at the very next decision.
    assert adapter.decider.state[4] == 0.0 and adapter.decider.state[3] == pytest.approx(ioc.filled)
    # Charged to the budget (the IOC at its limit, the market order at the touch) and counted.
    assert adapter.budget.notional >= sent[0]["notional"] + sent[1]["notional"] - 1e-6
    assert sent[0]["notional"] == pytest.approx(sent[0]["limit"] * sent[0]["qty"])
    first_bid = next(f["price"] for f in fills if f["client_id"] == mkt.client_id)  # the touch it walked from
    assert sent[1]["notional"] / sent[1]["qty"] == pytest.approx(first_bid, rel=1e-3)
    assert metric(text, "grinder_taker_orders_sent_total") == 2
    assert metric(text, "grinder_taker_orders_total", result="filled") == 2
    assert metric(text, "grinder_taker_orders_total", result="rejected") == 0
    assert metric(text, "grinder_fills_total") == len(fills)


def test_a_reduce_only_order_when_flat_is_refused_by_the_venue_audited_and_the_adapter_keeps_quoting(tape, tmp_path):  # noqa: F811
    adapter, srv, events, _ex, text = asyncio.run(
        session(tape, tmp_path, {"mkt_qty": 0.002, "quote_qty": 0.002}, seconds=3.0)
    )
    (done,) = of(events, "taker_done")
    assert done["result"] == "rejected" and "-2022" in done["error"] and done["kind"] == "market reduce-only"
    assert srv.orders_rejected == {-2022: 1} and srv.x.position()[0] == 0.0
    # Not retried, and the adapter went on deciding and quoting.
    assert len(of(events, "taker")) == 1
    assert adapter.decisions > 10 and of(events, "created")
    assert not of(events, "task_failed") and of(events, "stop")
    assert metric(text, "grinder_taker_orders_total", result="rejected") == 1
    assert metric(text, "grinder_taker_orders_sent_total") == 1


def test_a_taker_whose_reply_is_lost_is_not_sent_again_and_the_position_is_the_venues(tape, tmp_path):  # noqa: F811
    async def lose(srv):
        srv.faults.lose_create_replies = 1  # the first create (the IOC) is taken, its reply never arrives

    adapter, srv, events, _ex, text = asyncio.run(
        session(tape, tmp_path, {"ioc_qty": 0.002, "mkt": 0}, seconds=4.0, before=lose)
    )
    (sent,) = of(events, "taker")
    (done,) = of(events, "taker_done")
    assert done["result"] == "unknown" and done["client_id"] == sent["client_id"]
    assert len(posts(srv)) == 1  # never sent again, nor looked up and re-sent
    order = srv.x.find(client_id=sent["client_id"])
    assert order.filled > 0 and srv.x.position()[0] == pytest.approx(order.filled)
    # Its fills reached the ledger anyway (the user stream), and the reconciliations after it agree with the venue.
    assert adapter.position == pytest.approx(order.filled)
    after = [e for e in of(events, "ledger_drift") if e["ts_ns"] > done["ts_ns"]]
    assert after and all(abs(e["position_drift"]) < 0.0005 for e in after)
    assert after[-1]["venue_position"] == pytest.approx(order.filled)
    assert metric(text, "grinder_taker_orders_total", result="unknown") == 1


def test_the_budget_refuses_an_oversize_taker_before_it_takes_an_id(tape, tmp_path):  # noqa: F811
    # 0.002 BTC beyond the best level is worth far more than 50 USDT.
    adapter, srv, events, _ex, text = asyncio.run(
        session(tape, tmp_path, {"ioc_qty": 0.002}, seconds=2.5, max_notional_per_day=50.0)
    )
    (done,) = of(events, "taker_done")
    assert done["result"] == "refused" and "notional" in done["reason"] and "client_id" not in done
    assert not of(events, "taker") and not posts(srv) and srv.x.orders == {}
    assert adapter.budget.notional == 0.0
    assert metric(text, "grinder_taker_orders_total", result="refused") == 1
    assert metric(text, "grinder_taker_orders_sent_total") == 0
    assert metric(text, "grinder_orders_rejected_total", reason="budget_notional") == 1


def test_paper_mode_sends_no_taker_to_the_venue_and_fills_it_on_its_local_book(tape, tmp_path):  # noqa: F811
    adapter, srv, events, ex, _text = asyncio.run(
        session(tape, tmp_path, {"ioc_qty": 0.002}, mode="paper", until=done_by)
    )
    assert not posts(srv) and srv.x.orders == {}  # nothing left for the venue
    assert [e["result"] for e in of(events, "taker_done")] == ["filled", "filled"]
    local = [o for o in ex.x.orders.values() if o.takes]
    assert [(o.type, o.reduce_only) for o in local] == [("LIMIT", False), ("MARKET", True)]
    assert adapter.position == pytest.approx(ex.x.position()[0], abs=1e-9) == pytest.approx(0.0, abs=1e-9)
    assert float(adapter.led[FEES]) == pytest.approx(float(ex.x.led[FEES]), rel=1e-9)


def test_a_non_executing_rollout_mode_treats_takers_as_it_treats_quotes(tape, tmp_path):  # noqa: F811
    # Rollout modes say what a reconciliation may repair (live.rollout); a strategy's own orders, quotes and
    # takers alike, are not repairs: detect_only quotes, and sends the strategy's takers too.
    adapter, srv, events, _ex, _text = asyncio.run(
        session(tape, tmp_path, {"ioc_qty": 0.002, "quote_qty": 0.002}, rollout="detect_only", until=done_by)
    )
    assert of(events, "created") and [e["result"] for e in of(events, "taker_done")] == ["filled", "filled"]
    assert adapter.position == pytest.approx(srv.x.position()[0], abs=1e-9)


def test_the_l2_guard_reads_the_live_book_and_blocks_a_taker_larger_than_it_shows(tape, tmp_path):  # noqa: F811
    # A market sell of 1,000 BTC: more than the bids' first ten levels show, so the guard blocks it at every
    # decision that asks (counted by reason), nothing reaches the venue, and the adapter keeps deciding on the
    # depth it keeps from the stream (a decision without it would stop the adapter).
    gates = GateConfig(taker_max_depth_share=1.0)
    params = {"ioc_qty": 0.0, "mkt_qty": 1000.0, "mkt_flags": 0}
    adapter, srv, events, _ex, _text = asyncio.run(session(tape, tmp_path, params, gates=gates,
                                                           until=lambda a: a.decisions > 5))  # fmt: skip
    assert adapter.decisions > 5 and adapter.decider.depth_levels == 10
    assert (adapter.depth[:, 1] > 0).all() and (adapter.depth[:, 3] > 0).all()  # ten levels a side, as streamed
    assert not posts(srv) and not of(events, "taker")
    blocked = [e["counts"].get("taker_depth_share", 0) for e in of(events, "gates_blocked")]
    assert sum(blocked) == 1  # the kernel asks once; the guard says no


def test_a_follower_decides_its_takers_and_sends_none(tape, tmp_path, redis_server):  # noqa: F811
    async def main():
        ha = HaConfig(redis_url=redis_server.url, lease_ms=10_000, acquire_every_ms=100, account="test")
        holder = Leadership(ha, key_prefix("test", NAME, "BTCUSDT"), "holder", AuditLog(tmp_path / "h.jsonl"),
                            time.time_ns)  # fmt: skip
        assert await holder.acquire()  # another instance leads for the whole session
        try:
            return await session(tape, tmp_path, {"ioc_qty": 0.002, "mkt_qty": 0.002}, seconds=3.0, ha=ha)
        finally:
            await holder.close()

    adapter, srv, events, _ex, text = asyncio.run(main())
    assert adapter.decisions > 5 and adapter.decider.state[1] == 1.0  # the kernel asked for its IOC ...
    assert not posts(srv) and not of(events, "taker") and not of(events, "taker_done")  # ... nothing was sent
    assert metric(text, "grinder_taker_orders_sent_total") == 0


def _trade(tid: str, price: float, qty: float, fee: float) -> dict:
    return {"id": tid, "price": price, "amount": qty, "fee": {"cost": fee, "currency": "USDT"}}


def test_a_fill_the_stream_is_late_with_is_booked_from_the_reply_once_and_its_commission_comes_after(tmp_path):
    """The user stream is the booking path; what a reply reports filled that the stream has not brought in time is
    booked from the reply (at the rest's own average), and the stream's later fills of it add their commission only."""
    cfg = LiveConfig(strategy=NAME, params={}, symbol="BTCUSDT", state_dir=tmp_path / "state")
    audit = AuditLog(tmp_path / "audit.jsonl", max_delay_s=None)
    adapter = LiveAdapter(cfg, ex=None, audit=audit)
    try:
        adapter.settle = adapter.settle_id = "USDT"
        cid = "g_taker_probe:BTCUSDT:abcde:1"
        # The reply: 0.003 filled for 0.3006 (100 x 0.001 + 100.3 x 0.002); the stream has brought the first level.
        first = {"side": "buy", "filled": 0.001, "trades": [_trade("t1", 100.0, 0.001, 0.05)]}
        adapter._book_fills(cid, first, 0.001)
        t0 = time.monotonic()
        booked = asyncio.run(adapter._settle_taker(cid, 1, 0.003, 0.3006))
        assert time.monotonic() - t0 < 1.0  # waited TAKER_BOOK_WAIT_S at most
        assert booked == pytest.approx(0.002) and adapter.position == pytest.approx(0.003)
        last = json.loads((tmp_path / "audit.jsonl").read_text().splitlines()[-1])
        assert last["event"] == "fill" and last["price"] == pytest.approx(100.3)  # the rest at its own price
        # The stream catches up: both trades again (ccxt keeps them) and the second: no quantity twice.
        later = {"side": "buy", "filled": 0.003,
                 "trades": [_trade("t1", 100.0, 0.001, 0.05), _trade("t2", 100.3, 0.002, 0.1003)]}  # fmt: skip
        adapter._book_fills(cid, later, 0.003)
        adapter._book_fills(cid, later, 0.003)
        assert adapter.position == pytest.approx(0.003) and adapter.filled[cid] == pytest.approx(0.003)
        assert float(adapter.led[FEES]) == pytest.approx(0.05 + 0.1003)  # every commission, once
        events = [json.loads(x)["event"] for x in (tmp_path / "audit.jsonl").read_text().splitlines()]
        assert events.count("fill") == 2 and events.count("fill_fee") == 1
        # Nothing outstanding: a reply the stream has fully booked books nothing more.
        assert asyncio.run(adapter._settle_taker(cid, 1, 0.003, 0.3006)) == 0.0
    finally:
        adapter.ids.close()
        adapter.budget.close()
        audit.close()
