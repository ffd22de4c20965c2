"""The L2 execution guard (gates.guard_taker) on hand-built books, and what its cut leaves passing."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from grinder.core.gates import REASONS, GateConfig, guard_taker
from grinder.core.order_kind import IOC, MARKET, REDUCE_ONLY

# Bids 99 x 2, 98 x 3, 97 x 5; asks 101 x 2, 102 x 3, 104 x 5 (ticks, base units); tick 1, lot 0.5.
DEPTH = np.array([[99, 2, 101, 2], [98, 3, 102, 3], [97, 5, 104, 5]], np.float64)
LOT = 0.5


def guard(cfg: GateConfig, orders, depth=DEPTH):
    """orders: [(side, kind, limit ticks, qty)]; returns (kept [(index, qty)], blocked by reason)."""
    side = np.array([o[0] for o in orders], np.int8)
    kind = np.array([o[1] for o in orders], np.int8)
    px = np.array([o[2] for o in orders], np.int64)
    qty = np.array([o[3] for o in orders], np.float64)
    place = np.arange(len(orders), dtype=np.int64)
    blocked = np.zeros(len(REASONS), np.int64)
    kept = guard_taker(cfg.as_array(), np.ascontiguousarray(depth), LOT, side, px, qty, kind, place, 0, len(orders),
                       blocked)  # fmt: skip
    reasons = {r: int(b) for r, b in zip(REASONS, blocked.tolist(), strict=True) if b}
    return [(int(j), float(qty[j])) for j in place[:kept]], reasons


def test_off_lets_every_taker_through_whatever_the_book():
    assert guard(GateConfig(), [(1, MARKET, 0, 100.0)]) == ([(0, 100.0)], {})


def test_slippage_blocks_a_walk_whose_vwap_is_too_far_from_the_touch():
    # Buy 5: 2 @ 101 + 3 @ 102 = VWAP 101.6, 59.4 bps from 101; buy 2 stays at the touch.
    cfg = GateConfig(taker_max_slippage_bps=50)
    assert guard(cfg, [(1, MARKET, 0, 5.0), (1, MARKET, 0, 2.0)]) == ([(1, 2.0)], {"taker_slippage": 1})
    assert guard(GateConfig(taker_max_slippage_bps=60), [(1, MARKET, 0, 5.0)])[0] == [(0, 5.0)]
    # A sell mirrors it: 2 @ 99 + 3 @ 98 = 98.4, 60.6 bps below 99.
    assert guard(cfg, [(-1, MARKET, 0, 5.0)]) == ([], {"taker_slippage": 1})


def test_cut_leaves_the_most_whole_lots_within_the_bound():
    # 50 bps over 101 is a VWAP of 101.505: 2 @ 101 + x @ 102 with (202 + 102x) / (2 + x) <= 101.505 -> x <= 2.04,
    # so 4.0 in whole lots of 0.5 (VWAP 101.5).
    cfg = GateConfig(taker_max_slippage_bps=50, taker_guard_cut=True)
    assert guard(cfg, [(1, IOC | REDUCE_ONLY, 110, 5.0)]) == ([(0, 4.0)], {"taker_slippage": 1})


def test_depth_share_counts_the_visible_side():
    # 10 visible on the ask side: 6 is 60 %.
    cfg = GateConfig(taker_max_depth_share=0.5)
    assert guard(cfg, [(1, MARKET, 0, 6.0)]) == ([], {"taker_depth_share": 1})
    cut = GateConfig(taker_max_depth_share=0.5, taker_guard_cut=True)
    # Cut to 5, the half; the next buy of the same decision finds the half taken.
    assert guard(cut, [(1, MARKET, 0, 6.0), (1, MARKET, 0, 5.0)]) == ([(0, 5.0)], {"taker_depth_share": 2})


def test_what_the_book_does_not_show_is_not_vouched_for():
    # An IOC to 102 can see 5 within its limit; 8 is more than that, whatever the bound.
    cfg = GateConfig(taker_max_slippage_bps=1000)
    assert guard(cfg, [(1, IOC, 102, 8.0)]) == ([], {"taker_slippage": 1})
    assert guard(GateConfig(taker_max_slippage_bps=1000, taker_guard_cut=True), [(1, IOC, 102, 8.0)])[0] == [(0, 5.0)]
    # An empty side shows nothing: blocked, even with cut.
    empty = DEPTH.copy()
    empty[:, 3] = 0.0
    empty[:, 2] = np.nan
    assert guard(GateConfig(taker_max_depth_share=1.0, taker_guard_cut=True), [(1, MARKET, 0, 1.0)], empty) == (
        [], {"taker_depth_share": 1})  # fmt: skip
    # The guard's levels bound what it sees: with 2 levels the asks show 5.
    assert guard(GateConfig(taker_max_slippage_bps=1000, taker_guard_levels=2), [(1, MARKET, 0, 6.0)])[0] == []


def test_a_cut_below_one_lot_blocks():
    cfg = GateConfig(taker_max_depth_share=0.02, taker_guard_cut=True)  # 0.2 of 10: less than a lot
    assert guard(cfg, [(1, MARKET, 0, 2.0)]) == ([], {"taker_depth_share": 1})


@settings(max_examples=200, deadline=None)
@given(
    levels=st.lists(st.tuples(st.integers(1, 5), st.sampled_from([0.5, 1.0, 2.5, 4.0])), min_size=1, max_size=6),
    want=st.integers(1, 40).map(lambda n: n * LOT),
    slip=st.sampled_from([0.0, 5.0, 20.0, 80.0]),
    share=st.sampled_from([0.0, 0.3, 0.7, 1.0]),
    side=st.sampled_from([1, -1]),
)
def test_what_the_cut_leaves_passes_and_one_lot_more_would_not(levels, want, slip, share, side):
    if slip == 0.0 and share == 0.0:
        return
    depth = np.full((len(levels), 4), np.nan)
    depth[:, 1] = depth[:, 3] = 0.0
    px = 1000
    for i, (gap, q) in enumerate(levels):
        px += gap
        col = 2 if side > 0 else 0
        depth[i, col] = px if side > 0 else 2000 - px
        depth[i, col + 1] = q
    cfg = GateConfig(taker_max_slippage_bps=slip, taker_max_depth_share=share, taker_guard_cut=True)
    kept, _ = guard(cfg, [(side, MARKET, 0, want)], depth)
    strict = GateConfig(taker_max_slippage_bps=slip, taker_max_depth_share=share)
    if kept:
        q = kept[0][1]
        assert 0 < q <= want and guard(strict, [(side, MARKET, 0, q)], depth)[0] == [(0, q)]
        if q < want:
            assert guard(strict, [(side, MARKET, 0, q + LOT)], depth)[0] == []
    else:
        assert guard(strict, [(side, MARKET, 0, LOT)], depth)[0] == []


@pytest.mark.parametrize("field,value", [("taker_max_depth_share", 1.5), ("taker_guard_levels", 0),
                                         ("taker_max_slippage_bps", -1)])  # fmt: skip
def test_bad_guard_settings_are_refused(field, value):
    with pytest.raises(ValueError, match=field):
        GateConfig(**{field: value})


def test_orders_of_one_decision_are_judged_together_on_a_side():
    # Two market buys of 5 against 10 visible at a share of 0.5: the second would take the other half.
    cfg = GateConfig(taker_max_depth_share=0.5)
    assert guard(cfg, [(1, MARKET, 0, 5.0), (1, MARKET, 0, 5.0)]) == ([(0, 5.0)], {"taker_depth_share": 1})
    # The other side is another book: a sell of 5 of the bids' 10 still passes.
    assert guard(cfg, [(1, MARKET, 0, 5.0), (-1, MARKET, 0, 5.0)])[0] == [(0, 5.0), (1, 5.0)]
    # Slippage too: after a buy of 2 took the touch, a buy of 3 fills at 102 (99 bps over 101).
    slip = GateConfig(taker_max_slippage_bps=50)
    assert guard(slip, [(1, MARKET, 0, 2.0), (1, MARKET, 0, 3.0)]) == ([(0, 2.0)], {"taker_slippage": 1})


def test_a_quantity_that_is_not_a_number_ends_the_visible_book():
    nan_touch = DEPTH.copy()
    nan_touch[0, 3] = np.nan
    for cfg in (GateConfig(taker_max_depth_share=1.0), GateConfig(taker_max_slippage_bps=1000)):
        assert guard(cfg, [(1, MARKET, 0, 1.0)], nan_touch)[0] == []  # fails closed


def test_an_order_exactly_at_the_share_passes():
    depth = DEPTH.copy()
    depth[:, 3] = [0.004, 0.003, 0.003]  # 0.01 visible on the asks
    lot = 0.001
    side, kind, px = np.array([1], np.int8), np.array([MARKET], np.int8), np.array([0], np.int64)
    for share, want in ((0.7, 0.007), (0.3, 0.003)):
        qty, place, blocked = np.array([want]), np.arange(1, dtype=np.int64), np.zeros(len(REASONS), np.int64)
        cfg = GateConfig(taker_max_depth_share=share).as_array()
        assert guard_taker(cfg, depth, lot, side, px, qty, kind, place, 0, 1, blocked) == 1 and not blocked.any()
