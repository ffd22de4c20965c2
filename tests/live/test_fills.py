"""The fills an order update reports: the emulator's ORDER_TRADE_UPDATE as ccxt.pro and paper mode parse it."""

from __future__ import annotations

import pytest

from grinder.live.fills import fills_of
from tests.venue.test_server import SYMBOL, scenario, tape  # noqa: F401 - tape is a fixture

CID = "grinder_static_grid:BTCUSDT:1"


def partly_filled(srv):
    """A 0.003 buy at the best bid filled in two trades (0.001, then 0.002): its NEW and TRADE events."""
    x = srv.x
    x.partial_fills = True
    bb, _ = x.best()
    new = x.create(CID, 1, bb, 0.003, "GTX", 1_000_000)
    # Sells at its price: the queue ahead trades away, then 0.001 of it; then a sell below it fills the rest.
    events = x.on_row(3, -1, bb, new.order.front + 0.001, 2_000_000)
    events += x.on_row(3, -1, bb, 0.001, 3_000_000)
    events += x.on_row(3, -1, bb - 1, 0.001, 4_000_000)
    assert [e.last_qty for e in events] == [pytest.approx(0.001), pytest.approx(0.002)]
    return bb, new, events


def test_an_order_ccxt_pro_kept_lists_every_fill_with_its_commission_however_late_it_is_read(tape):  # noqa: F811
    async def body(srv, ex):
        await ex.load_markets()
        bb, new, events = partly_filled(srv)
        user = ex.client("ws://127.0.0.1:1/user")  # never connected: ccxt's handlers only resolve on it
        for e in (new, *events):
            ex.handle_order_update(user, srv.wire.order_update(e))
        # Read once after both fills (as watch_orders returns it when the adapter was busy).
        order = ex.orders.hashmap[SYMBOL][str(new.order.order_id)]
        return bb, events, order

    bb, events, order = scenario(tape, body)
    fills = fills_of(order)
    assert [(f.trade_id, f.qty) for f in fills] == [(str(e.trade_id), pytest.approx(e.last_qty)) for e in events]
    assert all(f.price == pytest.approx(bb * 0.1) and f.fee_currency == "USDT" for f in fills)
    assert [f.fee for f in fills] == [pytest.approx(e.fee, abs=1e-8) for e in events]  # the venue's, 8 decimals


def test_an_update_without_trades_stands_for_its_own_last_fill_as_paper_mode_hands_them_over(tape):  # noqa: F811
    async def body(srv, ex):
        await ex.load_markets()
        _, new, events = partly_filled(srv)
        market = ex.market(SYMBOL)
        parsed = [ex.parse_ws_order(srv.wire.order_update(e)["o"], market) for e in (new, *events)]
        rebate = srv.wire.order_update(events[0])["o"] | {"n": "-0.00100000"}
        return new, events, parsed, ex.parse_ws_order(rebate, market)

    new, events, parsed, rebate = scenario(tape, body)
    assert fills_of(parsed[0]) == []  # NEW: no fill
    for order, e in zip(parsed[1:], events, strict=True):
        (f,) = fills_of(order)
        assert (f.trade_id, f.qty, f.fee_currency) == (str(e.trade_id), pytest.approx(e.last_qty), "USDT")
        assert f.price == pytest.approx(e.last_price_ticks * 0.1) and f.fee == pytest.approx(e.fee, abs=1e-8)
    # A maker rebate is a negative commission: ccxt's parsed fee drops it, the fill keeps it.
    assert rebate["fee"] is None and fills_of(rebate)[0].fee == -0.001
