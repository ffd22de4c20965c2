"""The book's first levels at each decision (grinder.sim.local_depth), what kernels and the L2 guard see of
them in the backtest and in live, and what refuses them."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numba import njit
from pydantic import BaseModel

from grinder.book.l2 import apply_row, new_book
from grinder.core.decision import Decider
from grinder.core.depth import ASK_QTY, ASK_TICKS, depth_from_levels, fill_depth
from grinder.core.gates import GateConfig
from grinder.core.order_kind import IOC
from grinder.core.strategy import Strategy
from grinder.errors import ConfigError
from grinder.sim.backtest import decision_inputs, local_times, prepare, run_backtest
from grinder.sim.chunked import TapeChunks, run_chunked
from grinder.sim.local_depth import depth_at_decisions
from tests.sim.test_engine import MS, VENUE, tape
from tests.sim.test_engine_takers import BOOK, END, fills


@settings(max_examples=60, deadline=None)
@given(
    rows=st.lists(st.tuples(st.integers(0, 2), st.sampled_from([1, -1]), st.integers(95, 105),
                            st.sampled_from([0.0, 1.0, 2.5])), min_size=1, max_size=60),
    jitter=st.lists(st.integers(0, 30), min_size=60, max_size=60),
    n=st.integers(1, 4),
)  # fmt: skip
def test_depth_at_decisions_is_the_local_book_in_local_order(rows, jitter, n):
    # Book rows 10 ms apart in exchange time, received with a jitter that reorders them locally.
    full = [(0, 2, 0, 0, 0)] + [(10 * (i + 1), k if k < 2 else 0, s, p, q) for i, (k, s, p, q) in enumerate(rows)]
    t = tape(full)
    local = t.ts_exch + np.array([0] + jitter[: len(rows)], np.int64) * MS
    t = replace(t, ts_local=local)
    rep = prepare(t, VENUE)
    segments, events, *_ = decision_inputs(t, rep, VENUE, 0)
    table = depth_at_decisions(t, local_times(t, VENUE), events, n)
    order = np.argsort(local_times(t, VENUE), kind="stable")
    for k, arrived in enumerate(events.tolist()):
        model = {1: {}, -1: {}}
        for r in order[:arrived]:
            kind, side, px, q = int(t.kind[r]), int(t.side[r]), int(t.price_ticks[r]), float(t.qty[r])
            if kind == 2:
                model[1].clear()
                model[-1].clear()
            elif q > 0:
                model[side][px] = q
            else:
                model[side].pop(px, None)
        bids, asks = sorted(model[1], reverse=True)[:n], sorted(model[-1])[:n]
        assert table[k, : len(bids), 0].tolist() == bids and table[k, : len(bids), 1].tolist() == [
            model[1][p] for p in bids
        ]
        assert table[k, : len(asks), 2].tolist() == asks and table[k, : len(asks), 3].tolist() == [
            model[-1][p] for p in asks
        ]
        assert (table[k, len(bids) :, 1] == 0).all() and (table[k, len(asks) :, 3] == 0).all()


class NoParams(BaseModel):
    def as_array(self) -> np.ndarray:
        return np.zeros(1)


@njit(cache=True)
def sweep_two_asks(params, state, now_ns, best_bid, best_ask, bid_qty, ask_qty, tick, lot, position, signals, depth,
                   open_side, open_px, open_qty, n_open, out_side, out_px, out_qty, out_level, out_kind):  # fmt: skip
    """Once: an IOC buy for what the first two ask levels hold, limited to the second one's price."""
    if state[1] != 0.0 or depth[1, ASK_QTY] <= 0.0:
        return 0
    state[1] = 1.0
    out_side[0], out_px[0], out_level[0], out_kind[0] = 1, np.int64(depth[1, ASK_TICKS]), 1, IOC
    out_qty[0] = depth[0, ASK_QTY] + depth[1, ASK_QTY]
    return 1


DEPTH2 = Strategy("sweep_two_asks", NoParams, sweep_two_asks, max_targets=4, depth_levels=2)


def test_a_kernel_reads_the_book_beyond_the_touch_in_the_backtest():
    r = run_backtest(tape(BOOK + END), DEPTH2, np.zeros(1), VENUE)
    assert fills(r) == [(101, 5.0, False), (102, 5.0, False)]


def test_live_gives_the_kernel_the_same_levels_from_the_same_book_code():
    hdr, wq, ok, oq = new_book()
    for _, kind, side, px, q in BOOK:
        ok, oq = apply_row(hdr, wq, ok, oq, kind, side, px, q)
    depth = np.zeros((2, 4))
    fill_depth(hdr, wq, ok, oq, depth)
    # Live's book is the venue's as ccxt keeps it: the same levels give the same array.
    ccxt_book = {"bids": [[99.0, 5.0], [98.0, 5.0]], "asks": [[101.0, 5.0], [102.0, 5.0], [103.0, 5.0]]}
    assert np.array_equal(depth_from_levels(ccxt_book["bids"], ccxt_book["asks"], 1.0, np.zeros((2, 4))), depth)
    three = depth_from_levels(ccxt_book["bids"], ccxt_book["asks"], 1.0, np.zeros((3, 4)))
    assert np.isnan(three[2, 0]) and three[2, 1] == 0.0 and three[2, 2:].tolist() == [103.0, 5.0]
    d = Decider(DEPTH2, NoParams())
    assert d.depth_levels == 2
    intents = d.decide(100 * MS, 99, 101, 5.0, 5.0, 1.0, 1.0, 0.0, 0.0, 100.0, [], depth=depth)
    assert intents.take == [(1, 102, 10.0, 1, IOC)] and intents.place == []
    with pytest.raises(ConfigError, match="give decide\\(\\) the depth"):
        Decider(DEPTH2, NoParams()).decide(0, 99, 101, 5.0, 5.0, 1.0, 1.0, 0.0, 0.0, 100.0, [])
    with pytest.raises(ConfigError, match="need at least \\(2, 4\\)"):
        Decider(DEPTH2, NoParams()).decide(0, 99, 101, 5.0, 5.0, 1.0, 1.0, 0.0, 0.0, 100.0, [], depth=np.zeros((1, 4)))


def test_the_guard_blocks_in_the_backtest_and_counts_it():
    # The same sweep walks 2 levels: VWAP 101.5, 49.5 bps over the touch.
    r = run_backtest(tape(BOOK + END), DEPTH2, np.zeros(1), VENUE, gates=GateConfig(taker_max_slippage_bps=40))
    assert fills(r) == [] and r.counters["blocked_taker_slippage"] == 1
    cut = GateConfig(taker_max_slippage_bps=40, taker_guard_cut=True)
    r = run_backtest(tape(BOOK + END), DEPTH2, np.zeros(1), VENUE, gates=cut)
    # 40 bps over 101 is 101.404: 5 @ 101 + x @ 102 with x <= 3.39 -> 8 in whole lots (lot 1).
    assert fills(r) == [(101, 5.0, False), (102, 3.0, False)] and r.counters["blocked_taker_slippage"] == 1


def test_a_run_that_reads_depth_is_refused_where_it_is_not_tabulated():
    t = tape(BOOK + END)
    with pytest.raises(ConfigError, match="sweep_two_asks: reads 2 levels of the book .* run the window whole"):
        run_chunked(TapeChunks(t, 100 * MS), DEPTH2, np.zeros(1), VENUE)
    rep = prepare(t, VENUE)
    with pytest.raises(ConfigError, match="decisions carry 0 levels of the book's depth; this run reads 2"):
        run_backtest(t, DEPTH2, np.zeros(1), VENUE, replay=rep, decisions=decision_inputs(t, rep, VENUE))
    r = run_backtest(t, DEPTH2, np.zeros(1), VENUE, replay=rep, decisions=decision_inputs(t, rep, VENUE, None, 3))
    assert fills(r) == [(101, 5.0, False), (102, 5.0, False)]


def test_depth_levels_are_bounded_and_read_at_every_decision():
    with pytest.raises(ConfigError, match="depth_levels must be 0 to 100"):
        Strategy("deep", NoParams, sweep_two_asks, depth_levels=101)
    # The loop's reuse of a kernel's targets watches the best prices, not the levels behind them.
    with pytest.raises(ConfigError, match="deep: a kernel that reads depth must recompute 'always'"):
        Strategy("deep", NoParams, sweep_two_asks, depth_levels=2, recompute="top_of_book")
