"""Taker orders (IOC, market) in the event loop on hand-built tapes: the walk at arrival, fees per level,
reduce-only, consumed depth within one book state, filters, and what the strategy is shown."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from numba import njit

from grinder.core.gates import GateConfig
from grinder.core.order_kind import FLATTEN_LEVEL, IOC, MARKET, QUOTE, REDUCE_ONLY
from grinder.errors import ConfigError
from grinder.sim.backtest import run_backtest
from grinder.sim.chunked import TapeChunks, run_chunked
from tests.sim.test_engine import INST, MS, VENUE, tape

# Orders the probe sends: per order (at ms, side, kind, limit or quote price ticks, qty), from params[1] on.
FIELDS = 5


@njit(cache=True)
def probe(params, state, now_ns, best_bid, best_ask, bid_qty, ask_qty, tick, lot, position, signals, depth,
          open_side, open_px, open_qty, n_open, out_side, out_px, out_qty, out_level, out_kind):  # fmt: skip
    """params[0] orders, each (at ms, side, kind, price ticks, qty): from its time on a QUOTE is a target at
    every decision; a taker order is sent once (state[2 + i] marks it sent)."""
    n = 0
    for i in range(int(params[0])):
        base = 1 + i * FIELDS
        kind = int(params[base + 2])
        if now_ns < int(params[base]) * 1_000_000 or (kind != 0 and state[2 + i] != 0.0):
            continue
        if kind != 0:
            state[2 + i] = 1.0
        out_side[n] = int(params[base + 1])
        out_kind[n] = kind
        out_px[n] = int(params[base + 3])
        out_qty[n] = params[base + 4]
        out_level[n] = 100 + i
        n += 1
    return n


# Bids 99 x 5, 98 x 5; asks 101 x 5, 102 x 5, 103 x 5 (BOOK in test_engine lacks the third ask).
BOOK = [(0, 2, 0, 0, 0), (0, 1, 1, 99, 5), (0, 1, 1, 98, 5), (0, 1, -1, 101, 5), (0, 1, -1, 102, 5),
        (0, 1, -1, 103, 5)]  # fmt: skip
END = [(1000, 0, -1, 110, 1)]  # keeps the clock running to 1 s


def run(orders, rows=(), venue=VENUE, inst=INST, gates=None):
    """Run the probe over BOOK + rows + END; `orders` as (at ms, side, kind, price ticks, qty)."""
    params = np.array([len(orders), *[x for o in orders for x in o]], np.float64)
    t = tape(BOOK + list(rows) + END)
    if inst is not INST:
        t = replace(t, instrument=inst)
    return run_backtest(t, probe, params, venue, gates=gates)


def fills(r):
    return list(zip(r.fills["price_ticks"].tolist(), r.fills["qty"].tolist(), r.fills["maker"].tolist(), strict=True))


def test_an_ioc_buy_walks_the_asks_level_by_level_at_each_levels_price_with_the_taker_fee():
    # Decided at 100 ms, it arrives at 110 ms: 5 @ 101, then 3 of the 5 @ 102.
    r = run([(100, 1, IOC, 102, 8)])
    assert fills(r) == [(101, 5.0, False), (102, 3.0, False)]
    assert r.fills["ts_exch"].tolist() == [110 * MS] * 2 and r.fills["ts_local"].tolist() == [120 * MS] * 2
    assert r.fills["level"].tolist() == [100, 100] and len(set(r.fills["order_id"].tolist())) == 1
    assert r.fees == pytest.approx((5 * 101 + 3 * 102) * 0.0005)  # taker, paid on each level
    assert r.position == 8.0 and r.balance == pytest.approx(-(5 * 101 + 3 * 102))
    assert (r.counters["takers"], r.counters["placed"], r.counters["taker_expired"]) == (1, 0, 0)


def test_an_ioc_stops_at_its_limit_and_the_rest_expires():
    r = run([(100, 1, IOC, 101, 8)])
    assert fills(r) == [(101, 5.0, False)]
    assert r.counters["taker_expired"] == 1 and r.position == 5.0
    # A limit short of the touch takes nothing.
    r = run([(100, 1, IOC, 100, 8)])
    assert fills(r) == [] and r.counters["taker_expired"] == 1


def test_a_market_sell_takes_every_bid_level_until_the_side_runs_out():
    r = run([(100, -1, MARKET, 0, 12)])
    assert fills(r) == [(99, 5.0, False), (98, 5.0, False)]
    assert r.position == -10.0 and r.counters["taker_expired"] == 1


def test_the_walk_sees_the_book_at_arrival_not_at_the_decision():
    # The 101 level leaves at 105 ms, between the decision (100 ms) and the arrival (110 ms).
    r = run([(100, 1, IOC, 102, 3)], rows=[(105, 0, -1, 101, 0)])
    assert fills(r) == [(102, 3.0, False)]


def test_two_takers_in_one_book_state_do_not_take_the_same_depth():
    # Both leave at the same decision and arrive together, with no market row between them.
    r = run([(100, 1, IOC, 101, 4), (100, 1, IOC, 101, 4)])
    assert fills(r) == [(101, 4.0, False), (101, 1.0, False)]
    assert r.counters["takers"] == 2 and r.counters["taker_expired"] == 1


def test_consumed_depth_comes_back_with_the_next_market_row():
    # The replayed market moves on from the recorded data: a row at 150 ms (elsewhere in the book) is a
    # new book state, and the second taker sees the 101 level whole again.
    r = run([(100, 1, IOC, 101, 4), (200, 1, IOC, 101, 4)], rows=[(150, 0, 1, 97, 2)])
    assert fills(r) == [(101, 4.0, False), (101, 4.0, False)]


def test_reduce_only_is_cut_to_the_position_and_refused_without_one():
    r = run([(100, -1, MARKET | REDUCE_ONLY, 0, 2)])  # flat: nothing to reduce
    assert fills(r) == [] and r.counters["rejected"] == 1 and r.position == 0.0
    # Long 3, then a reduce-only market sell of 10 closes exactly the 3.
    r = run([(100, 1, IOC, 101, 3), (300, -1, MARKET | REDUCE_ONLY, 0, 10)])
    assert fills(r) == [(101, 3.0, False), (99, 3.0, False)] and r.position == 0.0
    # The same side as the position: refused.
    r = run([(100, 1, IOC, 101, 3), (300, 1, IOC | REDUCE_ONLY, 103, 1)])
    assert fills(r) == [(101, 3.0, False)] and r.counters["rejected"] == 1


def test_the_venue_filters_apply_to_takers_but_reduce_only_skips_the_minimum_notional():
    inst = INST.model_copy(update={"min_notional": 400.0})
    r = run([(100, 1, IOC, 102, 3)], inst=inst)  # 3 x 102 = 306 < 400
    assert fills(r) == [] and r.counters["rejected"] == 1
    r = run([(100, 1, MARKET, 0, 3)], inst=inst)  # valued at the touch, 101
    assert fills(r) == [] and r.counters["rejected"] == 1
    r = run([(100, 1, IOC, 102, 5), (300, -1, MARKET | REDUCE_ONLY, 0, 2)], inst=inst)
    assert fills(r) == [(101, 5.0, False), (99, 2.0, False)]
    r = run([(100, 1, IOC, 102, 2.5)])  # not whole lots
    assert fills(r) == [] and r.counters["rejected"] == 1


def test_a_taker_on_an_unsynced_book_expires():
    # The reset at 105 ms leaves the book unsynced when the order arrives (110 ms); no snapshot follows.
    r = run([(100, 1, IOC, 102, 3)], rows=[(105, 2, 0, 0, 0)])
    assert fills(r) == [] and r.counters["unsynced_orders"] >= 1 and r.counters["takers"] == 1


def test_a_quote_and_a_taker_from_one_call_each_go_their_way():
    # The taker is written first: the quote still rests (and fills as maker), the taker is never shown
    # among the open quotes, so the diff never cancels it, and it is sent once.
    r = run([(100, 1, MARKET, 0, 2), (100, -1, QUOTE, 104, 1)], rows=[(400, 3, 1, 104, 9)])
    assert fills(r) == [(101, 2.0, False), (104, 1.0, True)]
    # placed twice: the quote is still a target after its fill
    assert (r.counters["takers"], r.counters["placed"], r.counters["cancelled"]) == (1, 2, 0)
    assert r.fees == pytest.approx(2 * 101 * 0.0005 + 104 * 0.0002)


def test_gates_act_on_takers():
    r = run([(100, 1, IOC, 102, 8)], gates=GateConfig(max_position=5))
    assert fills(r) == [] and r.counters["blocked_max_position"] >= 1
    # A taker that reduces the position passes the same gate.
    r = run([(100, 1, IOC, 102, 4), (300, -1, MARKET, 0, 4)], gates=GateConfig(max_position=5))
    assert fills(r) == [(101, 4.0, False), (99, 4.0, False)]


@njit(cache=True)
def bad_kind(params, state, now_ns, best_bid, best_ask, bid_qty, ask_qty, tick, lot, position, signals, depth,
             open_side, open_px, open_qty, n_open, out_side, out_px, out_qty, out_level, out_kind):  # fmt: skip
    out_side[0], out_px[0], out_qty[0], out_kind[0] = 1, 101, 1.0, QUOTE | REDUCE_ONLY
    return 1


def test_a_kind_that_names_no_order_stops_the_run_naming_the_strategy():
    with pytest.raises(ConfigError, match="order kind"):
        run_backtest(tape(BOOK + END), bad_kind, np.zeros(1), VENUE)


def test_runs_without_takers_are_unchanged_by_them():
    # The same quote with and without a taker order that can never fill (a limit short of the touch):
    # the quote's fill and the run's money are the same.
    quote = (100, 1, QUOTE, 99, 1)
    a = run([quote], rows=[(300, 3, -1, 99, 6)])
    b = run([quote, (100, 1, IOC, 50, 1)], rows=[(300, 3, -1, 99, 6)])
    assert fills(a) == fills(b) == [(99, 1.0, True)]
    assert (a.position, a.balance, a.fees) == (b.position, b.balance, b.fees)


@pytest.mark.parametrize("chunk_ms", [50, 150, 205, 1000])
def test_a_chunked_run_with_takers_equals_the_whole_run(chunk_ms):
    # The second taker arrives (210 ms) in the book state the first one (110 ms) left, with chunk
    # boundaries between them for most chunk sizes: the depth the first one took stays taken.
    orders = [(100, 1, IOC, 101, 4), (200, 1, IOC, 102, 4), (300, -1, MARKET | REDUCE_ONLY, 0, 20),
              (100, -1, QUOTE, 104, 1)]  # fmt: skip
    rows = [(400, 3, 1, 104, 9), (600, 0, -1, 101, 7)]
    params = np.array([len(orders), *[x for o in orders for x in o]], np.float64)
    t = tape(BOOK + rows + END)
    whole = run_backtest(t, probe, params, VENUE)
    assert fills(whole) == [(101, 4.0, False), (101, 1.0, False), (102, 3.0, False), (99, 5.0, False),
                            (98, 3.0, False), (104, 1.0, True)]  # fmt: skip
    chunked = run_chunked(TapeChunks(t, chunk_ms * MS), probe, params, VENUE)
    assert chunked.digest == whole.digest and fills(chunked) == fills(whole)
    assert chunked.counters == whole.counters


def test_a_market_order_stops_where_the_venue_protects_it():
    # Asks 101, 102, 103: one tick through the touch (101) takes 101 and 102, inclusive; the rest expires.
    r = run([(100, 1, MARKET, 0, 14)], venue=VENUE.model_copy(update={"market_walk_ticks": 1}))
    assert fills(r) == [(101, 5.0, False), (102, 5.0, False)] and r.counters["taker_expired"] == 1
    r = run([(100, -1, MARKET, 0, 14)], venue=VENUE.model_copy(update={"market_walk_ticks": 1}))
    assert fills(r) == [(99, 5.0, False), (98, 5.0, False)]


def test_the_drawdown_guard_flattens_by_a_reduce_only_ioc_once_per_retry():
    # Long 8 @ 101-102 (taker), then the bids fall to 90: equity drops far below its peak and the guard
    # closes the position with a reduce-only IOC 500 bps through the best bid (90 -> limit 86 ticks).
    rows = [(150, 2, 0, 0, 0), (150, 1, 1, 90, 3), (150, 1, 1, 89, 3), (150, 1, 1, 88, 3), (150, 1, -1, 91, 5)]
    gates = GateConfig(max_drawdown=5.0, flatten_bps=500, flatten_retry_ms=300)
    r = run([(100, 1, IOC, 102, 8)], rows=rows, gates=gates)
    flat = [f for f, lv in zip(fills(r), r.fills["level"].tolist(), strict=True) if lv == FLATTEN_LEVEL]
    assert flat == [(90, 3.0, False), (89, 3.0, False), (88, 2.0, False)] and r.position == 0.0
    # One order covered it (its fills share an id); none went out after the position was closed.
    ids = {
        o for o, lv in zip(r.fills["order_id"].tolist(), r.fills["level"].tolist(), strict=True) if lv == FLATTEN_LEVEL
    }
    assert len(ids) == 1 and r.counters["takers"] == 2 and r.counters["rejected"] == 0
    # Without flatten_bps the guard only blocks: the position stays.
    r = run([(100, 1, IOC, 102, 8)], rows=rows, gates=GateConfig(max_drawdown=5.0))
    assert r.position == 8.0 and r.counters["takers"] == 1


def test_a_flatten_that_cannot_fill_is_sent_again_after_the_retry_interval():
    # Only 1 rests on the bid side within the flatten's limit: the first flatten takes it, the rest
    # expires; the next one goes out after flatten_retry_ms and takes what has come back.
    rows = [(150, 2, 0, 0, 0), (150, 1, 1, 90, 1), (150, 1, 1, 80, 9), (150, 1, -1, 91, 5), (600, 0, 1, 90, 9)]
    gates = GateConfig(max_drawdown=5.0, flatten_bps=100, flatten_retry_ms=300)
    r = run([(100, 1, IOC, 102, 8)], rows=rows, gates=gates)
    flat = [(f, t) for f, lv, t in zip(fills(r), r.fills["level"].tolist(), r.fills["ts_exch"].tolist(), strict=True)
            if lv == FLATTEN_LEVEL]  # fmt: skip
    assert [f for f, _ in flat] == [(90, 1.0, False), (90, 7.0, False)]
    assert flat[1][1] - flat[0][1] >= 300 * MS and r.position == 0.0


def test_the_guards_flatten_goes_out_when_the_kernel_fills_every_target():
    # max_targets = 2 and the probe writes 2 quotes (far from the book) at every decision: the flatten
    # is the drivers' own order, outside the targets, so it still goes out (it used to need a free slot).
    rows = [(150, 2, 0, 0, 0), (150, 1, 1, 90, 3), (150, 1, 1, 89, 9), (150, 1, -1, 91, 5)]
    orders = [(100, 1, IOC, 102, 8), (100, 1, QUOTE, 50, 1), (100, -1, QUOTE, 150, 1)]
    params = np.array([len(orders), *[x for o in orders for x in o]], np.float64)
    gates = GateConfig(max_drawdown=5.0, flatten_bps=500)
    r = run_backtest(tape(BOOK + rows + END), probe, params, VENUE, max_targets=3, gates=gates)
    assert r.position == 0.0 and (r.fills["level"] == FLATTEN_LEVEL).any()
    # The Decider sends it too, with every target slot taken.
    from grinder.core.decision import Decider, Order
    from grinder.core.strategy import Strategy
    from tests.sim.test_local_depth import NoParams

    d = Decider(Strategy("probe", NoParams, probe, max_targets=2), NoParams(), gates=gates)
    d.params = np.array([2, 0, 1, QUOTE, 50, 1, 0, -1, QUOTE, 150, 1], np.float64)
    d.decide(0, 99, 101, 5.0, 5.0, 1.0, 1.0, 8.0, 100.0, 100.0, [])  # the peak
    later = d.decide(MS, 90, 91, 3.0, 5.0, 1.0, 1.0, 8.0, 0.0, 90.5, [Order(1, 50, 1.0), Order(-1, 150, 1.0)])
    assert later.take == [(-1, 86, 8.0, FLATTEN_LEVEL, IOC | REDUCE_ONLY)]


def test_taker_orders_do_not_count_toward_max_open_orders():
    # Two quotes rest; with max_open_orders = 2 a reduce-only market exit still goes out.
    orders = [
        (100, 1, IOC, 101, 3),
        (100, 1, QUOTE, 50, 1),
        (100, -1, QUOTE, 150, 1),
        (300, -1, MARKET | REDUCE_ONLY, 0, 3),
    ]
    r = run(orders, gates=GateConfig(max_open_orders=2))
    assert fills(r)[:2] == [(101, 3.0, False), (99, 3.0, False)] and r.position == 0.0
    assert r.counters["blocked_max_open_orders"] == 0


def test_a_kernel_that_reuses_its_targets_may_not_write_taker_orders():
    from grinder.core.strategy import Strategy
    from tests.sim.test_local_depth import NoParams

    reusing = Strategy("probe", NoParams, probe, max_targets=4, recompute="best_prices")
    params = np.array([1, 100, 1, IOC, 102, 1], np.float64)
    with pytest.raises(ConfigError, match="probe: strategy kernel wrote a taker order but does not recompute"):
        run_backtest(tape(BOOK + END), reusing, params, VENUE)
    from grinder.core.decision import Decider

    d = Decider(reusing, NoParams())
    d.params = params
    with pytest.raises(ConfigError, match="probe: strategy kernel wrote a taker order but does not recompute"):
        d.decide(200 * MS, 99, 101, 5.0, 5.0, 1.0, 1.0, 0.0, 0.0, 100.0, [])


def test_exits_on_one_side_are_not_blocked_by_deep_takes_on_the_other():
    # 600 ask levels of 1: four market buys of 128 levels each fill the asks' consumed-depth table (512
    # levels) in one book state; a reduce-only sell in that same state still takes the bids.
    book = [(0, 2, 0, 0, 0), (0, 1, 1, 99, 50), *[(0, 1, -1, 101 + i, 1) for i in range(600)]]
    orders = [(100, 1, MARKET, 0, 128)] * 4 + [(100, -1, MARKET | REDUCE_ONLY, 0, 10)]
    params = np.array([len(orders), *[x for o in orders for x in o]], np.float64)
    r = run_backtest(tape(book + END), probe, params, VENUE)
    sells = [f for f in fills(r) if f[0] == 99]
    assert sells == [(99, 10.0, False)] and r.position == 4 * 128 - 10


def test_a_taker_quantity_that_is_not_a_number_is_refused():
    r = run([(100, 1, IOC, 102, float("nan"))])
    assert fills(r) == [] and r.counters["rejected"] == 1 and r.counters["takers"] == 1
    r = run([(100, 1, QUOTE, 99, float("nan"))])  # a quote's too: refused, not resting
    assert r.counters["rejected"] >= 1
