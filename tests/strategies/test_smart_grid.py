"""Smart grid v2: depth-aware level sizes and a risk budget over the adaptive grid's controller; a run over
real data with the guards' flatten, and a sweep."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from grinder.core.gates import GateConfig
from grinder.core.order_kind import FLATTEN_LEVEL
from grinder.core.strategy import get
from grinder.data.tape import load_tape
from grinder.errors import ConfigError
from grinder.sim.backtest import VenueConfig, run_backtest
from grinder.strategies.adaptive_grid import adaptive_grid
from grinder.strategies.smart_grid import SmartGridParams, near_depth, smart_grid
from grinder.sweep.runner import run_window
from tests.conftest import REPO

BASE = {"levels": 3, "interval": 1.0, "half_spread": 0.5, "order_qty": 2.0, "max_position": 10.0, "confirm": 1,
        "tighten_vol_bps": 0.0, "widen_vol_bps": 1e9}  # fmt: skip
# Bids 99 x 1, 98 x 4, 97 x 10; asks 101 x 3, 102 x 0.5, 104 x 8 (ticks, base units); tick 1, lot 0.5.
DEPTH = np.array([[99, 1, 101, 3], [98, 4, 102, 0.5], [97, 10, 104, 8]], np.float64)


def targets(kernel, p: SmartGridParams, depth=DEPTH, bid=99, ask=101, position=0.0):
    out = (np.zeros(16, np.int8), np.zeros(16, np.int64), np.zeros(16), np.zeros(16, np.int64), np.zeros(16, np.int8))
    none = (np.zeros(0, np.int8), np.zeros(0, np.int64), np.zeros(0), 0)  # no open quotes
    n = kernel(p.as_array(), np.zeros(64), 0, bid, ask, depth[0, 1], depth[0, 3], 1.0, 0.5, position, np.empty(0),
               np.ascontiguousarray(depth), *none, *out)  # fmt: skip
    return [(int(out[0][j]), int(out[1][j]), float(out[2][j])) for j in range(n)]


def test_without_sizing_it_quotes_what_the_adaptive_grid_quotes():
    p = SmartGridParams(**BASE)
    grid = [(1, 99, 2.0), (1, 98, 2.0), (1, 97, 2.0), (-1, 101, 2.0), (-1, 102, 2.0), (-1, 103, 2.0)]
    assert targets(smart_grid, p) == targets(adaptive_grid, p) == grid


def test_levels_are_sized_from_the_depth_near_them_in_whole_lots():
    # Half of the own side's quantity within 0 ticks: 99 -> 0.5, 98 -> 2 (capped at order_qty), 97 -> 2;
    # 101 -> 1.5, 102 -> 0.25: below a lot, dropped; 103 has no level within 0 ticks inside the visible range: 0.
    p = SmartGridParams(**BASE, depth_share=0.5, near_ticks=0)
    assert targets(smart_grid, p) == [(1, 99, 0.5), (1, 98, 2.0), (1, 97, 2.0), (-1, 101, 1.5)]
    # Within 1 tick, 103 sees 102 and 104: 0.5 x 8.5 -> 2 (order_qty).
    p = SmartGridParams(**BASE, depth_share=0.5, near_ticks=1)
    assert (-1, 103, 2.0) in targets(smart_grid, p)


def test_a_level_beyond_the_visible_book_takes_the_mean_visible_level():
    p = SmartGridParams(**{**BASE, "levels": 5}, depth_share=0.1, near_ticks=0)
    # Bids are visible to 97: 96 and 95 lie beyond, the mean visible bid level (5) gives 0.5 each; 97 gets 1.0 of
    # its 10, 99 and 98 less than a lot. Asks to 104: 104 gets 0.5 of 8; 105, beyond, 0.38 of the mean (3.83).
    assert targets(smart_grid, p) == [(1, 97, 1.0), (1, 96, 0.5), (1, 95, 0.5), (-1, 104, 0.5)]
    assert near_depth(np.ascontiguousarray(DEPTH), -1, 110, 0) == pytest.approx(11.5 / 3)
    assert near_depth(np.ascontiguousarray(DEPTH), 1, 90, 2) == pytest.approx(5.0)
    assert near_depth(np.ascontiguousarray(DEPTH), 1, 96, 1) == 10.0  # within reach of the deepest: near


def test_the_risk_budget_caps_each_levels_notional():
    p = SmartGridParams(**BASE, level_budget=150.0)  # 150 quote: 1.52-1.55 at 97-99, 1.46-1.49 at 101-103
    assert [q for _, _, q in targets(smart_grid, p)] == [1.5, 1.5, 1.5, 1.0, 1.0, 1.0]


@settings(max_examples=100, deadline=None)
@given(share=st.floats(0.0, 1.0), near=st.integers(0, 6), budget=st.sampled_from([0.0, 60.0, 500.0]),
       qty=st.sampled_from([0.5, 2.0, 7.5]))  # fmt: skip
def test_sizes_never_exceed_any_bound_and_are_whole_lots(share, near, budget, qty):
    p = SmartGridParams(**{**BASE, "order_qty": qty, "max_position": 20.0}, depth_share=share, near_ticks=near,
                        level_budget=budget)  # fmt: skip
    plain = {(s, px) for s, px, _ in targets(adaptive_grid, p)}
    for s, px, q in targets(smart_grid, p):
        assert (s, px) in plain and 0.5 <= q <= qty and (q / 0.5).is_integer()
        if share > 0:
            assert q <= share * near_depth(np.ascontiguousarray(DEPTH), s, px, near) + 1e-9
        if budget > 0:
            assert q * px <= budget + 1e-9


@pytest.fixture(scope="module")
def sample():
    return load_tape(REPO / "data" / "sample" / "lake", "binance-usdm", "BTCUSDT")


def test_a_run_on_real_data_with_the_guards_flatten(sample):
    strat = get("smart_grid")
    values = {"levels": 5, "interval": 1.0, "half_spread": 1.0, "order_qty": 0.1, "max_position": 1.0,
              "depth_share": 0.2, "near_ticks": 5, "level_budget": 20_000.0}  # fmt: skip
    p = strat.vector(strat.validate(values))
    gates = GateConfig(max_drawdown=10.0, flatten_bps=10.0)
    r = run_backtest(sample, strat, p, VenueConfig(), gates=gates)
    again = run_backtest(sample, strat, p, VenueConfig(), gates=gates)
    assert r.digest == again.digest and r.fills["maker"].any()
    assert (r.fills["level"] == FLATTEN_LEVEL).any() and not r.fills["maker"][r.fills["level"] == FLATTEN_LEVEL].any()
    maker_qty = r.fills["qty"][r.fills["maker"]]
    assert maker_qty.max() <= 0.1 + 1e-12 and (maker_qty < 0.1 - 1e-12).any()  # some levels sized below order_qty


def test_it_sweeps_like_the_other_strategies(sample):
    strat = get("smart_grid")
    sets = [strat.validate({**BASE, "order_qty": 0.1, "max_position": 1.0, "depth_share": s}) for s in (0.0, 0.3)]
    w = run_window(sample, strat, sets, VenueConfig(), workers=1)
    assert len(w.rows) == 2 and w.rows[0]["fills"] != w.rows[1]["fills"]
    for row, params in zip(w.rows, sets, strict=True):
        alone = run_backtest(sample, strat, strat.vector(params), VenueConfig())
        assert row["digest"] == alone.digest


def test_bad_sizing_settings_are_refused():
    with pytest.raises(ConfigError, match="depth_share"):
        get("smart_grid").validate({**BASE, "depth_share": 1.5})
