"""The event loop on hand-built tapes: queue position, price-through fills, latency, post-only."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from numba import njit

from grinder.core.gates import GateConfig
from grinder.data.instruments import Instrument
from grinder.data.tape import Series, Tape
from grinder.errors import ConfigError
from grinder.sim.backtest import VenueConfig, run_backtest
from grinder.sim.engine import LEVEL_CACHE

MS = 1_000_000
INST = Instrument(venue="test", symbol="TESTUSDT", tick_size=1.0, lot_size=1.0, maker_fee=0.0002, taker_fee=0.0005)
VENUE = VenueConfig(entry_latency_ns=10 * MS, response_latency_ns=10 * MS, step_ns=100 * MS)


@njit(cache=True)
def one_quote(params, state, now_ns, best_bid, best_ask, bid_qty, ask_qty, tick, lot, position, signals, depth,
              open_side, open_px, open_qty, n_open, out_side, out_px, out_qty, out_level, out_kind):  # fmt: skip
    """Quote params[1] (ticks) on side params[0] for params[2] while flat and best bid >= params[3]."""
    if position != 0.0 or best_bid < params[3]:
        return 0
    out_side[0] = int(params[0])
    out_px[0] = int(params[1])
    out_qty[0] = params[2]
    out_level[0] = 7
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


@njit(cache=True)
def moving_bid(params, state, now_ns, best_bid, best_ask, bid_qty, ask_qty, tick, lot, position, signals, depth,
               open_side, open_px, open_qty, n_open, out_side, out_px, out_qty, out_level, out_kind):  # fmt: skip
    """Bid params[2] at params[0] (ticks) until params[3] ns, then at params[1]."""
    out_side[0] = 1
    out_px[0] = int(params[0] if now_ns < params[3] else params[1])
    out_qty[0] = params[2]
    out_level[0] = 0
    return 1


def test_an_order_joins_its_own_level_s_queue_after_one_at_a_price_sharing_its_cache_slot():
    # The loop caches price levels by price in LEVEL_CACHE slots: prices 1024 ticks apart share a
    # slot. The bid at 88 (1 resting ahead) is placed first, then the one at 1112 (5 ahead), which
    # must queue behind 1112's 5: a trade of 2 leaves it waiting, 4 more fill it.
    assert (1112 - 88) % LEVEL_CACHE == 0
    book = [(0, 2, 0, 0, 0), (0, 1, 1, 1112, 5), (0, 1, 1, 88, 1), (0, 1, -1, 1212, 5)]
    rows = [(400, 3, -1, 1112, 2), (500, 3, -1, 1112, 4), (1000, 0, -1, 1217, 1)]
    r = run_backtest(tape(book + rows), moving_bid, np.array([88, 1112, 1, 250 * MS], np.float64), VENUE)
    assert r.counters["cancelled"] == 1  # the bid at 88, once the target moved
    assert r.fills["ts_exch"].tolist() == [500 * MS] and r.fills["price"].tolist() == [1112.0]


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


SLOW = VenueConfig(entry_latency_ns=150 * MS, response_latency_ns=150 * MS, step_ns=100 * MS)


def test_a_quote_acknowledged_after_its_target_left_is_cancelled_then():
    # Buy @ 98 decided at 100 ms (acknowledged at 400 ms); the 99 bid leaves at 150 ms, so from 200 ms
    # the kernel wants nothing, but the order cannot be cancelled before its acknowledgement. The
    # decisions at 200 and 300 ms see the same (empty) targets; the acknowledgement alone must
    # bring the cancel, at 400 ms.
    r = run_with([(150, 0, 1, 99, 0)], [1, 98, 1, 99], SLOW)
    assert r.counters["placed"] == 1 and r.counters["cancelled"] == 1


def test_a_targeted_quote_whose_cancel_lands_late_is_placed_again():
    # Responses take 150 ms. Buy @ 98 from 100 ms; the 99 bid leaves at 250 ms (the 300 ms decision
    # cancels) and is back at 350 ms (the 400 ms decision wants the quote again, but the order is
    # still known, its cancel in flight). The cancel's confirmation (460 ms) alone must bring the
    # new order, at 500 ms.
    venue = VenueConfig(entry_latency_ns=10 * MS, response_latency_ns=150 * MS, step_ns=100 * MS)
    r = run_with([(250, 0, 1, 99, 0), (350, 0, 1, 99, 5)], [1, 98, 1, 99], venue)
    assert r.counters["cancelled"] == 1 and r.counters["placed"] == 2


@njit(cache=True)
def bids_98_97(params, state, now_ns, bb, ba, bq, aq, tick, lot, position, signals, depth,
               o_side, o_px, o_qty, n_open, out_side, out_px, out_qty, out_level, out_kind):  # fmt: skip
    """Always wants 1 @ 98 and 1 @ 97."""
    for i in range(2):
        out_side[i], out_px[i], out_qty[i], out_level[i] = 1, 98 - i, 1.0, -(i + 1)
    return 2


def test_a_quote_the_gates_held_back_is_placed_at_the_next_response():
    # One token at the start, ten a second: the 100 ms decision places 98 and the gate holds 97 back.
    # The targets never change; the acknowledgement of 98 (120 ms) must bring 97 at 200 ms.
    t = tape(BOOK + END)
    gates = GateConfig(rate_capacity=1, rate_per_s=10)
    r = run_backtest(t, bids_98_97, np.zeros(1), VENUE, gates=gates)
    assert r.counters["blocked_rate_limit"] == 1 and r.counters["placed"] == 2
    assert r.steps["open_orders"].tolist()[:3] == [0, 1, 2]


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


def run_with(rows, params, venue=VENUE, instrument=INST, **kw):
    t = replace(tape(BOOK + rows + END), instrument=instrument)
    return run_backtest(t, one_quote, np.array(params, np.float64), venue, **kw)


PARTIAL = VENUE.model_copy(update={"partial_fills": True})


def test_partial_fills_take_the_traded_quantity_beyond_the_queue():
    # Buy 4 @ 99 behind 5: a sell trade of 7 leaves 2 for us; a later trade of 5 completes the order.
    r = run_with([(200, 3, -1, 99, 7), (300, 3, -1, 99, 5)], [1, 99, 4, 0], PARTIAL)
    assert r.fills["qty"].tolist() == [2.0, 2.0]
    assert r.fills["ts_exch"].tolist() == [200 * MS, 300 * MS]
    assert r.fills["order_id"].tolist() == [0, 0] and r.fills["level"].tolist() == [7, 7]
    assert r.fills["position"].tolist() == [2.0, 4.0]
    assert r.counters["partial_fills"] == 1 and r.counters["fills"] == 2 and r.position == 4.0
    # Without partial fills the first trade already fills the whole order (hftbacktest's default).
    r = run_with([(200, 3, -1, 99, 7), (300, 3, -1, 99, 5)], [1, 99, 4, 0])
    assert r.fills["qty"].tolist() == [4.0] and r.counters["partial_fills"] == 0


@njit(cache=True)
def bid_99_reporting_leaves(params, state, now_ns, bb, ba, bq, aq, tick, lot, position, signals, depth,
                            o_side, o_px, o_qty, n_open, out_side, out_px, out_qty, out_level, out_kind):  # fmt: skip
    """Always wants 4 @ 99; state[0] (recorded as the step's mode) = leaves of the open quote, -1 if none."""
    state[0] = o_qty[0] if n_open == 1 else -1.0
    out_side[0], out_px[0], out_qty[0], out_level[0] = 1, 99, 4.0, 0
    return 1


def test_partially_filled_order_stays_quoted_and_the_strategy_sees_its_leaves():
    t = tape(BOOK + [(200, 3, -1, 99, 7)] + END)
    r = run_backtest(t, bid_99_reporting_leaves, np.zeros(1), PARTIAL)
    assert r.fills["qty"].tolist() == [2.0]
    assert r.counters["placed"] == 1 and r.counters["cancelled"] == 0  # still the target: not re-sent
    modes = r.steps["mode"].tolist()
    assert modes[0] == -1 and modes[1] == 4 and modes[-1] == 2  # none yet, then 4 open, then 2 left


def test_price_through_fills_the_whole_remainder_with_partial_fills_on():
    r = run_with([(200, 3, -1, 99, 7), (300, 0, -1, 99, 3)], [1, 99, 4, 0], PARTIAL)
    assert r.fills["qty"].tolist() == [2.0, 2.0] and r.fills["ts_exch"].tolist() == [200 * MS, 300 * MS]


def test_latency_series_is_interpolated_and_keeps_messages_in_order(tmp_path):
    from grinder.sim.backtest import LatencySeries

    # Entry latency 10 ms until 100 ms, then rising to 110 ms at 200 ms: the order sent at 100 ms
    # arrives at 110 ms, and the 300 ms trade fills it; its response takes 50 ms.
    lat = LatencySeries(np.array([0, 100, 200], np.int64) * MS, np.array([10, 10, 110]) * MS,
                        np.array([50, 50, 50]) * MS)  # fmt: skip
    r = run_with([(200, 3, -1, 99, 3), (300, 3, -1, 99, 3)], [1, 99, 1, 0], latency=lat)
    assert r.fills["ts_exch"].tolist() == [300 * MS] and r.fills["ts_local"].tolist() == [350 * MS]
    # Same from a Parquet file named by the venue config.
    import pyarrow as pa
    import pyarrow.parquet as pq

    f = tmp_path / "lat.parquet"
    pq.write_table(pa.table({"ts": lat.ts, "entry_ns": lat.entry_ns, "response_ns": lat.response_ns}), f)
    r2 = run_with(
        [(200, 3, -1, 99, 3), (300, 3, -1, 99, 3)], [1, 99, 1, 0], VENUE.model_copy(update={"latency_file": str(f)})
    )
    assert r2.digest == r.digest
    # A slow cancel loses the race the fast one wins (the 215 ms trade fills the 98 bid first).
    slow = LatencySeries(np.array([0, 190], np.int64) * MS, np.array([10, 30]) * MS, np.array([10, 10]) * MS)
    r = run_with([(150, 0, 1, 99, 0), (215, 3, -1, 97, 1)], [1, 98, 1, 99], latency=slow)
    assert r.fills["ts_exch"].tolist() == [215 * MS] and r.counters["cancel_rejected"] == 1


def test_latency_file_errors_name_the_file(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from grinder.errors import DataError
    from grinder.sim.backtest import LatencySeries

    bad = tmp_path / "lat.parquet"
    pq.write_table(pa.table({"ts": [0, 0], "entry_ns": [1, 1], "response_ns": [1, 1]}), bad)
    with pytest.raises(DataError, match="increase strictly") as e:
        LatencySeries.read(bad)
    assert str(bad) in str(e.value)
    pq.write_table(pa.table({"ts": [0, 1], "entry_ns": [1, -1], "response_ns": [1, 1]}), bad)
    with pytest.raises(DataError, match="negative"):
        LatencySeries.read(bad)
    pq.write_table(pa.table({"ts": [0, 1], "entry": [1, 1]}), bad)
    with pytest.raises(DataError, match="entry_ns, response_ns"):
        LatencySeries.read(bad)
    with pytest.raises(DataError, match="no such latency file"):
        LatencySeries.read(tmp_path / "nope.parquet")


INVERSE = Instrument(venue="test", symbol="TESTUSD_PERP", tick_size=1.0, lot_size=1.0, maker_fee=0.0002,
                     taker_fee=0.0005, contract="inverse", contract_size=100.0, base="TEST", quote="USD")  # fmt: skip


def test_inverse_contract_pnl_is_in_the_coin():
    # Buy 3 contracts (100 USD each) @ 99, then the book moves up to mid 110.5 (110/111).
    up = [(400, 0, -1, 101, 0), (400, 0, -1, 102, 0), (400, 0, -1, 111, 5), (400, 0, 1, 110, 5)]
    r = run_with([(200, 3, -1, 99, 3), (300, 3, -1, 99, 3)] + up, [1, 99, 3, 0], instrument=INVERSE)
    assert r.settle == "TEST"  # PnL is in the coin
    assert r.position == 3.0 and r.avg_entry == 99.0
    assert r.balance == pytest.approx(300 / 99)  # long contracts: cash in coin = contracts x size / price
    assert r.fees == pytest.approx(300 / 99 * 0.0002)
    mid = r.steps["mid"][-1]
    assert mid == 110.5
    assert r.unrealized == pytest.approx(300 * (1 / 99 - 1 / 110.5))
    assert r.equity == pytest.approx(300 * (1 / 99 - 1 / 110.5) - r.fees)
    # Funding on inverse contracts is charged on the coin notional at the mark price.
    t_ms = np.array([0, 600], np.int64) * MS
    mark = np.array([100.0, 100.0])
    rate, due = np.array([0.001, 0.001]), np.array([500, 900]) * MS
    funding = Series({"ts_exch": t_ms, "ts_local": t_ms, "mark_price": mark, "index_price": mark,
                      "funding_rate": rate, "next_funding_ts": due})  # fmt: skip
    t = replace(tape(BOOK + [(200, 3, -1, 99, 3), (300, 3, -1, 99, 3)] + END), instrument=INVERSE, funding=funding)
    r = run_backtest(t, one_quote, np.array([1, 99, 3, 0], np.float64), VENUE)
    assert r.funding["amount"] == pytest.approx([3 * 100 / 100.0 * 0.001])


def test_progress_reports_rows_until_done():
    seen = []
    t = tape(BOOK + [(200, 3, -1, 99, 6)] + END)
    r = run_backtest(
        t, one_quote, np.array([1, 99, 1, 0], np.float64), VENUE, progress=lambda d, n: seen.append((d, n))
    )
    assert seen[-1] == (len(t), len(t)) and all(a <= b for (a, _), (b, _) in zip(seen, seen[1:], strict=False))
    assert r.digest == run([(200, 3, -1, 99, 6)], [1, 99, 1, 0]).digest


@njit(cache=True)
def too_many(params, state, now_ns, bb, ba, bq, aq, tick, lot, position, signals, depth, o_side, o_px, o_qty, n_open,
             out_side, out_px, out_qty, out_level, out_kind):  # fmt: skip
    """Claims more targets than the buffer holds (writes none: numba would not stop it)."""
    return out_side.shape[0] + 1


def test_a_kernel_returning_more_targets_than_max_targets_stops_the_run():
    with pytest.raises(ConfigError, match="too_many: strategy kernel returned more targets than max_targets"):
        run_backtest(tape(BOOK + END), too_many, np.zeros(1), VENUE, max_targets=4)


def test_a_strategy_object_brings_its_own_max_targets():
    from grinder.core.strategy import get

    grid = get("static_grid")
    p = grid.validate({"levels": 100, "interval": 1.0, "half_spread": 2.0, "order_qty": 1.0, "max_position": 5.0})
    r = run_backtest(tape(BOOK + END), grid, grid.vector(p), VENUE)
    assert r.steps["open_orders"].max() > 128  # up to 100 a side: beyond the bare-kernel default of 64


def test_a_grid_wider_than_max_targets_is_refused_not_truncated():
    from grinder.core.strategy import get

    grid = get("static_grid")
    p = grid.validate({"levels": 40, "interval": 1.0, "half_spread": 2.0, "order_qty": 1.0, "max_position": 5.0})
    with pytest.raises(ConfigError, match="static_grid: strategy kernel returned more targets"):
        run_backtest(tape(BOOK + END), grid.kernel, grid.vector(p), VENUE, max_targets=64)


@njit(cache=True)
def count_as_int32(params, state, now_ns, bb, ba, bq, aq, tick, lot, position, signals, depth,
                   o_side, o_px, o_qty, n_open, out_side, out_px, out_qty, out_level, out_kind):  # fmt: skip
    """Returns its count as int32: the engine reads an int64."""
    return np.int32(0)


def test_a_kernel_with_another_return_type_is_refused_by_name():
    with pytest.raises(ConfigError, match="count_as_int32 returns int32, not the int64 count"):
        run_backtest(tape(BOOK + END), count_as_int32, np.zeros(1), VENUE)


def test_the_engine_gets_one_kernel_handle_per_kernel():
    from grinder.core.strategy import kernel_handle

    assert kernel_handle(one_quote) is kernel_handle(one_quote)  # resolved once, not per backtest
    a = run([(200, 3, -1, 99, 6)], [1, 99, 1, 0])
    assert a.digest == run([(200, 3, -1, 99, 6)], [1, 99, 1, 0]).digest


def test_recording_only_the_equity_keeps_its_steps_and_every_result():
    rows = BOOK + [(150, 0, 1, 99, 1), (300, 3, -1, 99, 2), (400, 0, -1, 101, 3)] + END
    full = run_backtest(tape(rows), one_quote, np.array([1, 99, 1, 0], np.float64), VENUE)
    lean = run_backtest(tape(rows), one_quote, np.array([1, 99, 1, 0], np.float64), VENUE, record="equity")
    assert set(lean.steps) == {"ts", "mid", "equity"} and len(full.steps) == 11
    for k in lean.steps:
        assert np.array_equal(lean.steps[k], full.steps[k], equal_nan=True)
    assert lean.digest == full.digest and lean.counters == full.counters and len(full.fills["qty"]) == 1
    assert (lean.equity, lean.unrealized, lean.position) == (full.equity, full.unrealized, full.position)
    with pytest.raises(ConfigError, match="record must be one of all, equity, got 'mid'"):
        run_backtest(tape(rows), one_quote, np.array([1, 99, 1, 0], np.float64), VENUE, record="mid")


# --- Book readiness (decision 021): no decision and no resting quote while the book is not synced ---

BLIND_98 = np.array([98, 98, 1, 0], np.float64)  # moving_bid: 1 @ 98 whatever the book says


def test_no_decision_before_the_first_snapshot_even_on_levels_from_diffs():
    # Diffs build a two-sided book (99 / 101) before any snapshot; the snapshot comes at 450 ms.
    # A sell at 97 (200 ms) would fill a bid at 98 resting from 110 ms; none may rest before 500 ms.
    rows = [(0, 0, 1, 99, 5), (0, 0, -1, 101, 5), (200, 3, -1, 97, 1)]
    rows += [(450, 2, 0, 0, 0), (450, 1, 1, 99, 5), (450, 1, -1, 101, 5), (700, 3, -1, 97, 1)]
    r = run_backtest(tape(rows + END), moving_bid, BLIND_98, VENUE)
    assert r.fills["ts_exch"].tolist() == [700 * MS]
    st = r.steps
    early = st["ts"] < 450 * MS
    assert early.sum() == 4 and r.counters["unsynced_decisions"] == 4
    assert (st["open_orders"][early] == 0).all() and np.isnan(st["mid"][early]).all()
    # Placed at 500 ms: open from the local side's view at the next decision.
    assert st["open_orders"][st["ts"] == 600 * MS].tolist() == [1] and r.counters["unsynced_orders"] == 0


def test_a_reset_takes_resting_quotes_off_the_book_until_the_next_snapshot():
    # Bid 1 @ 98 rests from 110 ms. A reset at 300 ms (a sequence break): the sell at 97 at 305 ms,
    # before the local side can react, must not fill it. After the snapshot at 550 ms it is placed
    # again (600 ms) and the sell at 97 at 800 ms fills it.
    rows = [(300, 2, 0, 0, 0), (305, 3, -1, 97, 1), (550, 2, 0, 0, 0), (550, 1, 1, 99, 5), (550, 1, -1, 101, 5)]
    r = run_backtest(tape(BOOK + rows + [(800, 3, -1, 97, 1)] + END), moving_bid, BLIND_98, VENUE)
    assert r.fills["ts_exch"].tolist() == [800 * MS]
    assert r.counters["unsynced_orders"] == 1 and r.counters["unsynced_decisions"] == 3  # 300, 400, 500 ms
    st = r.steps
    # The venue's cancel (at 300 ms) is known locally from 310 ms: none open at 400 and 500 ms.
    assert st["open_orders"][(st["ts"] >= 400 * MS) & (st["ts"] < 600 * MS)].tolist() == [0, 0]


def test_an_order_reaching_an_unsynced_book_expires():
    # Decided at 100 ms on a synced book, it arrives at 110 ms, after a reset at 105 ms.
    rows = [(105, 2, 0, 0, 0), (150, 3, -1, 97, 1)]
    r = run_backtest(tape(BOOK + rows + END), moving_bid, BLIND_98, VENUE)
    assert len(r.fills["qty"]) == 0 and r.position == 0.0
    assert r.counters["unsynced_orders"] == 1 and r.counters["expired"] == 0
