"""Reconciliation against the emulator: own orphans cancelled, foreign orders untouched, drift and missing logged."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from grinder.core.ledger import FEES, POSITION, REALIZED, book_fill, equity, new_ledger, unrealized, value
from grinder.live.budget import BudgetLimits
from grinder.live.client_ids import ClientOrderId
from grinder.live.reconcile import (
    VenuePosition,
    adopt_position,
    check_orders,
    check_position,
    ledger_drift,
    reconcile,
    reconcile_ledger,
    venue_wallet,
)
from tests.live.test_port import run
from tests.venue.test_server import SYMBOL, tape  # noqa: F401 - tape is a fixture


def order(cid: str) -> dict:
    return {"clientOrderId": cid, "side": "buy", "amount": 0.002, "price": 1.0}


def test_orders_are_sorted_into_ours_unknown_missing_and_foreign():
    venue = [order("grinder_static_grid:BTCUSDT:1"), order("grinder_static_grid:BTCUSDT:2"),
             order("grinder_adaptive_grid:BTCUSDT:1"), order("grinder_static_grid:ETHUSDT:1"), order("web_77"),
             order("")]  # fmt: skip
    c = check_orders(
        {"grinder_static_grid:BTCUSDT:1", "grinder_static_grid:BTCUSDT:9"}, venue, "static_grid", "BTCUSDT"
    )
    assert [o["clientOrderId"] for o in c.orphans] == ["grinder_static_grid:BTCUSDT:2"]
    assert c.missing == ["grinder_static_grid:BTCUSDT:9"]
    assert len(c.foreign) == 4  # another strategy's, another symbol's, another tool's, none


def test_position_drift_is_half_a_lot_or_more():
    assert check_position(0.002, 0.002, 0.001) is None and check_position(0.0, 0.0004, 0.001) is None
    assert check_position(0.0, 0.002, 0.001).kind == "position_drift"


def test_reconcile_cancels_only_our_orphans_and_logs_every_mismatch(tape, tmp_path):  # noqa: F811
    async def body(srv, ex, p, clock):
        bb, _ = srv.x.best()
        for n, cid in enumerate(["grinder_static_grid:BTCUSDT:1", "grinder_static_grid:BTCUSDT:2", "web_77",
                                 "grinder_adaptive_grid:BTCUSDT:5"]):  # fmt: skip
            await ex.create_order(
                SYMBOL, "limit", "buy", 0.002, (bb - 10 - n) * 0.1, {"postOnly": True, "clientOrderId": cid}
            )
        expected = {"grinder_static_grid:BTCUSDT:1", str(ClientOrderId("static_grid", "BTCUSDT", 3))}
        found, pos = await reconcile(ex, p, p.audit, clock.now(), SYMBOL, "static_grid", "BTCUSDT", 0.001, expected,
                                     0.5)  # fmt: skip
        return found, pos, sorted(o.client_id for o in srv.x.open_orders())

    found, pos, left = run(tape, body, limits=BudgetLimits(10, 1e9), tmp=tmp_path)
    assert sorted((m.kind, m.client_id) for m in found) == [
        ("missing", "grinder_static_grid:BTCUSDT:3"), ("orphan", "grinder_static_grid:BTCUSDT:2"),
        ("position_drift", None)]  # fmt: skip
    assert pos == VenuePosition(0.0, 0.0)
    assert left == ["grinder_adaptive_grid:BTCUSDT:5", "grinder_static_grid:BTCUSDT:1", "web_77"]
    events = [json.loads(x)["event"] for x in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert events.count("mismatch") == 3 and "cancelled" in events


prices = st.floats(100.0, 100_000.0)
fills = st.lists(st.tuples(st.sampled_from([1, -1]), prices, st.floats(0.001, 5.0)), max_size=8)


@given(fills, st.floats(-5.0, 5.0), prices, prices, prices, st.booleans())
def test_an_adopted_position_is_valued_from_the_venues_entry_with_realized_pnl_and_fees_kept(
    before, qty, entry, mark, close, inverse
):
    cs = 100.0 if inverse else 1.0
    led = new_ledger()
    for side, px, q in before:
        book_fill(led, side, px, q, 0.0004, inverse, cs)
    realized, fees = led[REALIZED], led[FEES]
    adopt_position(led, qty, entry, inverse, cs)
    assert (led[POSITION], led[REALIZED], led[FEES]) == (qty, realized, fees)
    # Equity is the venue's view: realized, less fees, plus the position marked against its entry.
    upnl = value(qty, mark, inverse, cs) - value(qty, entry, inverse, cs)
    assert equity(led, mark, 0.0, inverse, cs) == pytest.approx(realized - fees + upnl, rel=1e-9, abs=1e-6)
    assert unrealized(led, mark, inverse, cs) == pytest.approx(upnl, rel=1e-9, abs=1e-6)
    if qty != 0.0:  # closing it realizes what the venue would: against the adopted entry
        book_fill(led, -1 if qty > 0 else 1, close, abs(qty), 0.0, inverse, cs)
        gain = value(qty, close, inverse, cs) - value(qty, entry, inverse, cs)
        assert led[POSITION] == 0.0 and led[REALIZED] == pytest.approx(realized + gain, rel=1e-9, abs=1e-6)


def test_a_position_without_an_entry_price_is_not_adopted():
    with pytest.raises(ValueError, match="entry price above 0"):
        adopt_position(new_ledger(), 0.002, 0.0, False, 1.0)


def test_the_ledger_drift_is_the_venues_position_and_wallet_change_less_the_ledgers():
    led = new_ledger()
    book_fill(led, 1, 100.0, 2.0, 0.001, False, 1.0)
    book_fill(led, -1, 110.0, 1.0, 0.001, False, 1.0)  # realized 10, fees 0.31
    d = ledger_drift(led, 0.5, 1.5, 1_000.0, 1_009.0)
    assert d.position == pytest.approx(0.5) and d.wallet == pytest.approx(9.0 - (10.0 - 0.31 - 0.5))
    assert d.wallet_now == 1_009.0
    assert ledger_drift(led, 0.0, 1.0, None, 1_009.0).wallet is None  # no baseline yet (on start)
    assert venue_wallet({"info": {"assets": [{"asset": "BNB", "walletBalance": "1"}]}}, "USDT") is None


def test_a_fill_the_ledger_missed_shows_as_drift_and_adopting_the_position_leaves_its_commission(tape, tmp_path):  # noqa: F811
    async def body(srv, ex, p, clock):
        start = venue_wallet(await ex.fetch_balance(), "USDT")
        bb, _ = srv.x.best()
        await ex.create_order(SYMBOL, "limit", "buy", 0.002, bb * 0.1,
                              {"postOnly": True, "clientOrderId": "grinder_static_grid:BTCUSDT:1"})  # fmt: skip
        srv.speed = 1e9  # the replay runs as fast as it can: until the quote fills
        while srv.x.position()[0] == 0.0 and srv.row < len(srv.tape):
            await srv.run_replay(until_row=srv.row + 1000)
        led = new_ledger()  # a ledger that never heard of the fill
        _, venue = await reconcile(ex, p, p.audit, clock.now(), SYMBOL, "static_grid", "BTCUSDT", 0.001, set(), 0.0)
        missed = await reconcile_ledger(ex, p.audit, clock.now(), "USDT", led, 0.0, venue, start)
        adopt_position(led, venue.qty, venue.entry, False, 1.0)
        adopted = await reconcile_ledger(ex, p.audit, clock.now(), "USDT", led, 0.0, venue, start)
        bal = await ex.fetch_balance()
        bb, ba = srv.x.best()
        return start, venue, missed, adopted, led, bal, (bb + ba) * 0.05

    start, venue, missed, adopted, led, bal, mid = run(tape, body, limits=BudgetLimits(10, 1e9), tmp=tmp_path)
    fee = 0.002 * venue.entry * 0.0002  # the emulator's maker fee on the fill
    assert venue.qty == 0.002 and venue.entry > 0 and start == 10_000.0
    assert missed.position == pytest.approx(0.002) and missed.wallet == pytest.approx(-fee, abs=1e-8)
    # Adopted: the position agrees; the commission the ledger never booked is still the wallet's drift.
    assert adopted.position == 0.0 and adopted.wallet == pytest.approx(-fee, abs=1e-8)
    assert adopted.wallet_now == pytest.approx(10_000.0 - fee, abs=1e-8)
    assert bal["USDT"]["total"] != pytest.approx(adopted.wallet_now, abs=1e-9)  # ccxt's total has the unrealized
    assert equity(led, mid, 0.0, False, 1.0) == pytest.approx(0.002 * (mid - venue.entry))
    lines = [json.loads(x) for x in (tmp_path / "audit.jsonl").read_text().splitlines()]
    drift = [e for e in lines if e["event"] == "ledger_drift"]
    assert [(e["position"], e["venue_position"], e["settle"]) for e in drift] == [(0.0, 0.002, "USDT"),
                                                                               (0.002, 0.002, "USDT")]  # fmt: skip
    assert np.isclose(drift[0]["position_drift"], 0.002) and np.isclose(drift[1]["wallet_drift"], -fee)
