"""The event loop on hand-built tapes: queue position, price-through fills, latency, post-only."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from numba import njit

from grinder.data.instruments import Instrument
from grinder.data.tape import Series, Tape
from grinder.sim.backtest import VenueConfig, run_backtest

MS = 1_000_000
INST = Instrument(venue="test", symbol="TESTUSDT", tick_size=1.0, lot_size=1.0, maker_fee=0.0002, taker_fee=0.0005)
VENUE = VenueConfig(entry_latency_ns=10 * MS, response_latency_ns=10 * MS, step_ns=100 * MS)


@njit(cache=True)
def one_quote(
    params, state, now_ns, best_bid, best_ask, bid_qty, ask_qty, tick, lot, position, out_side, out_px, out_qty
):
    """Quote params[1] (ticks) on side params[0] for params[2] while flat and best bid >= params[3]."""
    if position != 0.0 or best_bid < params[3]:
        return 0
    out_side[0] = int(params[0])
    out_px[0] = int(params[1])
    out_qty[0] = params[2]
    return 1


def tape(rows):
    """rows: (t_ms, kind, side, price, qty); kind 0 diff, 1 snapshot, 2 reset, 3 trade; local = exch time."""
    a = np.array(rows, np.float64)
    ts = (a[:, 0] * MS).astype(np.int64)
    kind = a[:, 1].astype(np.int8)
    ref = np.arange(len(a), dtype=np.int64)
    return Tape(
        INST,
        ts,
        ts.copy(),
        kind,
        a[:, 2].astype(np.int8),
        a[:, 3],
        a[:, 3].astype(np.int64),
        a[:, 4],
        ref,
        np.ones(len(a), np.uint8),
        Series({"ts_exch": np.empty(0, np.int64)}),
        Series({"ts_exch": np.empty(0, np.int64)}),
    )


BOOK = [(0, 2, 0, 0, 0), (0, 1, 1, 99, 5), (0, 1, 1, 98, 5), (0, 1, -1, 101, 5), (0, 1, -1, 102, 5)]
END = [(1000, 0, -1, 105, 1)]  # keeps the clock running to 1 s


def run(rows, params):
    return run_backtest(tape(BOOK + rows + END), one_quote, np.array(params, np.float64), VENUE)


def test_risk_averse_queue_fills_only_once_the_queue_ahead_has_traded():
    # Buy 1 @ 99 decided at 100 ms, resting at the exchange from 110 ms behind 5.
    r = run([(200, 3, -1, 99, 3), (300, 3, -1, 99, 2)], [1, 99, 1, 0])
    assert len(r.fills["qty"]) == 0  # 5 traded ahead of us: still exactly at the front
    r = run([(200, 3, -1, 99, 3), (300, 3, -1, 99, 3)], [1, 99, 1, 0])
    assert r.fills["ts_exch"].tolist() == [300 * MS]
    assert r.fills["ts_local"].tolist() == [310 * MS]  # response latency
    assert r.fills["price"].tolist() == [99.0] and r.fills["maker"].tolist() == [True]
    assert r.position == 1.0 and r.balance == -99.0 and r.fees == pytest.approx(99 * 0.0002)


def test_risk_averse_queue_takes_depth_drops_only_as_a_cap():
    # The level shrinks to 1 without trades: we can be at most 1 from the front, so a trade of 2 fills us.
    r = run([(150, 0, 1, 99, 1), (300, 3, -1, 99, 2)], [1, 99, 1, 0])
    assert r.fills["ts_exch"].tolist() == [300 * MS]
    # The level grows: our place does not move back.
    r = run([(150, 0, 1, 99, 20), (300, 3, -1, 99, 6)], [1, 99, 1, 0])
    assert r.fills["ts_exch"].tolist() == [300 * MS]


def test_order_only_joins_the_queue_when_it_reaches_the_exchange():
    # Trades at 105 ms happen before our order arrives (110 ms): they do not count for us.
    r = run([(105, 3, -1, 99, 5), (300, 3, -1, 99, 5)], [1, 99, 1, 0])
    assert len(r.fills["qty"]) == 0


def test_price_through_fills_at_our_price():
    # Buy @ 98; the best ask drops to 98: filled in full at 98 as maker.
    r = run([(200, 0, -1, 98, 2)], [1, 98, 1, 0])
    assert r.fills["ts_exch"].tolist() == [200 * MS] and r.fills["price"].tolist() == [98.0]
    assert r.fills["maker"].tolist() == [True]
    # A sell trade below our price also fills us at our price.
    r = run([(200, 3, -1, 97, 1)], [1, 98, 1, 0])
    assert r.fills["price"].tolist() == [98.0]


def test_post_only_order_that_would_cross_expires():
    r = run([], [1, 101, 1, 0])
    assert len(r.fills["qty"]) == 0 and r.counters["expired"] >= 1 and r.position == 0.0


def test_fill_wins_the_race_against_a_cancel_in_flight():
    # Resting buy @ 98. At 150 ms the 99 bid disappears, so the 200 ms decision cancels (arrives 210 ms);
    # a sell trade at 97 fills us at 205 ms: the cancel is rejected and the fill stands.
    r = run([(150, 0, 1, 99, 0), (205, 3, -1, 97, 1)], [1, 98, 1, 99])
    assert r.fills["ts_exch"].tolist() == [205 * MS]
    assert r.counters["cancel_rejected"] == 1 and r.counters["cancelled"] == 1
    assert r.position == 1.0


def test_cancel_that_arrives_first_removes_the_order():
    r = run([(150, 0, 1, 99, 0), (215, 3, -1, 97, 1)], [1, 98, 1, 99])
    assert len(r.fills["qty"]) == 0 and r.counters["cancel_rejected"] == 0


def test_sell_side_mirror():
    r = run([(200, 3, 1, 101, 6)], [-1, 101, 1, 0])
    assert r.fills["side"].tolist() == [-1] and r.position == -1.0 and r.balance == 101.0


def test_digest_is_stable_and_sensitive():
    a = run([(200, 3, -1, 99, 6)], [1, 99, 1, 0])
    b = run([(200, 3, -1, 99, 6)], [1, 99, 1, 0])
    c = run([(200, 3, -1, 99, 6)], [1, 99, 2, 0])
    assert a.digest == b.digest != c.digest


def test_orders_breaking_venue_filters_are_rejected():
    strict = Instrument(venue="test", symbol="TESTUSDT", tick_size=1.0, lot_size=1.0, min_notional=200.0)
    t = tape(BOOK + [(200, 3, -1, 99, 6)] + END)
    t = replace(t, instrument=strict)
    small = run_backtest(t, one_quote, np.array([1, 99, 1, 0], np.float64), VENUE)  # 99 < 200 min notional
    assert small.counters["rejected"] >= 1 and len(small.fills["qty"]) == 0
    odd_lot = run_backtest(t, one_quote, np.array([1, 99, 2.5, 0], np.float64), VENUE)  # not whole lots
    assert odd_lot.counters["rejected"] >= 1 and len(odd_lot.fills["qty"]) == 0
    ok = run_backtest(t, one_quote, np.array([1, 99, 3, 0], np.float64), VENUE)  # 297 >= 200
    assert ok.counters["rejected"] == 0 and ok.fills["qty"].tolist() == [3.0]


def test_funding_settles_on_the_exchange_position_at_settlement_time():
    t = tape(BOOK + [(200, 3, -1, 99, 3), (300, 3, -1, 99, 3)] + END)  # long 1 from 300 ms
    funding = Series(
        {
            "ts_exch": np.array([0, 600, 900], np.int64) * MS,
            "ts_local": np.array([0, 600, 900], np.int64) * MS,
            "mark_price": np.array([100.0, 100.0, 101.0]),
            "index_price": np.array([100.0, 100.0, 101.0]),
            "funding_rate": np.array([0.001, -0.002, 0.0005]),
            "next_funding_ts": np.array([500, 800, 1800], np.int64) * MS,
        }
    )
    t = replace(t, funding=funding)
    r = run_backtest(t, one_quote, np.array([1, 99, 1, 0], np.float64), VENUE)
    assert r.position == 1.0
    assert r.funding["ts"].tolist() == [500 * MS, 800 * MS]  # 1800 ms is beyond the series
    assert r.funding["position"].tolist() == [1.0, 1.0]
    assert r.funding["amount"] == pytest.approx([0.1, -0.2])  # long pays a positive rate, earns a negative one
    assert r.funding_paid == pytest.approx(-0.1)
    mid = r.steps["mid"][-1]
    assert r.equity == pytest.approx(r.balance + r.position * mid - r.fees + 0.1)


def test_funding_before_the_fill_finds_no_position():
    t = tape(BOOK + [(200, 3, -1, 99, 3), (300, 3, -1, 99, 3)] + END)
    funding = Series(
        {
            "ts_exch": np.array([0, 400], np.int64) * MS,
            "ts_local": np.array([0, 400], np.int64) * MS,
            "mark_price": np.array([100.0, 100.0]),
            "index_price": np.array([100.0, 100.0]),
            "funding_rate": np.array([0.001, 0.001]),
            "next_funding_ts": np.array([250, 900]) * MS,
        }
    )
    t = replace(t, funding=funding)
    r = run_backtest(t, one_quote, np.array([1, 99, 1, 0], np.float64), VENUE)
    assert r.funding["ts"].tolist() == [250 * MS] and r.funding["amount"].tolist() == [0.0]
