"""Each gate's allow and block paths, one decision at a time (as the live adapter calls them)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from grinder.core.gates import REASONS, GateConfig, apply_gates, median_in_place, new_gate_state

S = 1_000_000_000


def decide(cfg: GateConfig, st=None, now=0, position=0.0, bid=100.0, ask=100.1, equity=0.0, places=(), cancels=0,
           n_open=0, unit_notional=None):  # fmt: skip
    """places: [(side, qty)]; returns (kept place indices, cancels kept, blocked by reason, state)."""
    c = cfg.as_array()
    st = new_gate_state(c) if st is None else st
    side = np.array([p[0] for p in places], np.int8)
    qty = np.array([p[1] for p in places], np.float64)
    idx = np.arange(len(places), dtype=np.int64)
    blocked = np.zeros(len(REASONS), np.int64)
    unit = (bid + ask) / 2 if unit_notional is None else unit_notional
    kept, nc = apply_gates(c, st, now, position, bid, ask, equity, unit, side, qty, idx, len(places), cancels, n_open,
                           blocked, len(places))  # fmt: skip
    return idx[:kept].tolist(), nc, dict(zip(REASONS, blocked.tolist(), strict=True)), st


def test_all_gates_off_let_everything_through():
    kept, nc, blocked, _ = decide(GateConfig(), places=[(1, 1.0)] * 5, cancels=3)
    assert kept == [0, 1, 2, 3, 4] and nc == 3 and not any(blocked.values())


def test_rate_limit_serves_cancels_first_and_refills():
    cfg = GateConfig(rate_capacity=4, rate_per_s=2)
    kept, nc, blocked, st = decide(cfg, places=[(1, 1.0)] * 3, cancels=2)
    assert nc == 2 and kept == [0, 1] and blocked["rate_limit"] == 1
    kept, nc, blocked, st = decide(cfg, st, now=S // 2, places=[(1, 1.0)] * 3)  # half a second: 1 token
    assert kept == [0] and blocked["rate_limit"] == 2
    kept, _, blocked, _ = decide(cfg, st, now=10 * S, places=[(1, 1.0)] * 3)  # refilled (capped at 4)
    assert kept == [0, 1, 2] and blocked["rate_limit"] == 0


def test_max_position_counts_pending_quantity_and_lets_reductions_through():
    cfg = GateConfig(max_position=2.0)
    kept, _, blocked, _ = decide(cfg, position=1.0, places=[(1, 0.5), (1, 0.5), (1, 0.5), (-1, 5.0)])
    assert kept == [0, 1, 3] and blocked["max_position"] == 1  # the sell reduces a long: allowed


def test_max_notional_and_open_orders():
    kept, _, blocked, _ = decide(GateConfig(max_notional=150.0), places=[(1, 1.0), (1, 1.0)])
    assert kept == [0] and blocked["max_notional"] == 1  # 2 x 100 > 150
    # Inverse contracts: notional is contracts x contract size (quote), whatever the price.
    kept, _, blocked, _ = decide(GateConfig(max_notional=250.0), places=[(1, 2.0), (1, 1.0)], unit_notional=100.0)
    assert kept == [0] and blocked["max_notional"] == 1
    kept, _, blocked, _ = decide(GateConfig(max_open_orders=3), places=[(1, 1.0)] * 3, n_open=1)
    assert kept == [0, 1] and blocked["max_open_orders"] == 1


def test_daily_loss_kill_switch_blocks_places_until_the_next_day():
    cfg = GateConfig(max_daily_loss=100.0)
    _, _, _, st = decide(cfg, equity=0.0)
    kept, nc, blocked, st = decide(cfg, st, now=S, equity=-150.0, places=[(1, 1.0), (-1, 1.0)], cancels=2)
    assert kept == [] and nc == 2 and blocked["daily_loss"] == 2
    # Latched: equity climbing back within the limit (a mark moving back) does not re-open trading today.
    kept, _, blocked, st = decide(cfg, st, now=2 * S, equity=-20.0, places=[(1, 1.0)])
    assert kept == [] and blocked["daily_loss"] == 1
    kept, _, blocked, _ = decide(cfg, st, now=86_400 * S + 1, equity=-150.0, places=[(1, 1.0)])
    assert kept == [0]  # a new UTC day starts from the current equity


def test_drawdown_guard_is_reduce_only():
    cfg = GateConfig(max_drawdown=50.0)
    _, _, _, st = decide(cfg, equity=200.0)
    kept, _, blocked, _ = decide(cfg, st, now=S, equity=120.0, position=-1.0, places=[(-1, 1.0), (1, 1.0)])
    assert kept == [1] and blocked["drawdown_reduce_only"] == 1


def test_spread_spike_and_price_impact_block_places():
    cfg = GateConfig(spread_spike=3.0, spread_window=5)
    st = None
    for k in range(5):
        _, _, _, st = decide(cfg, st, now=k * S, bid=100.0, ask=100.1)
    kept, _, blocked, st = decide(cfg, st, now=6 * S, bid=100.0, ask=100.5, places=[(1, 1.0)])
    assert kept == [] and blocked["spread_spike"] == 1
    kept, _, _, _ = decide(cfg, st, now=7 * S, bid=100.0, ask=100.1, places=[(1, 1.0)])
    assert kept == [0]
    cfg = GateConfig(max_impact_bps=20.0, impact_window=2)
    _, _, _, st = decide(cfg, bid=100.0, ask=100.1)
    _, _, _, st = decide(cfg, st, now=S, bid=100.1, ask=100.2)
    kept, _, blocked, _ = decide(cfg, st, now=2 * S, bid=100.4, ask=100.5, places=[(1, 1.0)])  # +40 bp
    assert kept == [] and blocked["price_impact"] == 1


@pytest.mark.parametrize("field,value", [("rate_capacity", -1), ("spread_window", 1), ("impact_window", 0)])
def test_bad_limits_are_rejected(field, value):
    with pytest.raises(ValueError, match=field):
        GateConfig(**{field: value})


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.sampled_from([0.1, 0.2, 0.5, 1.0, 1.5, 2.0, 1e6]) | st.floats(0, 1e4), min_size=1, max_size=256),
    st.integers(0, 8),
)
def test_the_allocation_free_median_is_numpys_to_the_bit(values, start):
    """Ties (spreads in ticks repeat), odd and even counts, at an offset into the gate state."""
    a = np.full(start + len(values) + 3, -7.0)
    a[start : start + len(values)] = values
    got = median_in_place(a, start, len(values))
    assert got == np.median(np.array(values))
    assert sorted(a[start : start + len(values)]) == sorted(values)  # reordered, nothing lost
    assert (a[:start] == -7.0).all() and (a[start + len(values) :] == -7.0).all()  # nothing outside touched
