"""The adaptive grid's controller (modes, hysteresis), its quotes, and a run over real data."""

from __future__ import annotations

import numpy as np
import pytest

from grinder.core.strategy import get
from grinder.data.tape import load_tape
from grinder.sim.backtest import VenueConfig, run_backtest
from grinder.strategies.adaptive_grid import BASE, PAUSE, TIGHTEN, WIDEN, AdaptiveGridParams, adaptive_grid
from tests.conftest import REPO

NO_SIGNALS = np.empty(0)  # the grids read no signals

P = AdaptiveGridParams(
    levels=3,
    interval=1.0,
    half_spread=2.0,
    order_qty=0.01,
    max_position=0.05,
    skew=0.0,
    vol_halflife=1.0,
    widen_vol_bps=5.0,
    tighten_vol_bps=0.1,
    pause_spread_ticks=20,
    confirm=2,
)
NO_DEPTH = np.zeros((0, 4))  # the book's depth for a kernel that reads none


class Kernel:
    """Call the kernel one decision at a time, as the live adapter will."""

    def __init__(self, params=P):
        self.p = params.as_array()
        self.state = np.zeros(64)

    def __call__(self, bid, ask, position=0.0, bq=1.0, aq=1.0):
        side, px, qty, level = np.zeros(64, np.int8), np.zeros(64, np.int64), np.zeros(64), np.zeros(64, np.int64)
        no_side, no_px, no_qty = np.zeros(0, np.int8), np.zeros(0, np.int64), np.zeros(0)
        n = adaptive_grid(self.p, self.state, 0, bid, ask, bq, aq, 0.1, 0.001, position, NO_SIGNALS, NO_DEPTH, no_side,
                          no_px, no_qty, 0, side, px, qty, level, np.zeros(64, np.int8))  # fmt: skip
        return list(zip(side[:n].tolist(), px[:n].tolist(), strict=True)), int(self.state[0])


def test_quiet_market_tightens_after_confirmation():
    k = Kernel()
    _, mode = k(600000, 600001)
    assert mode == BASE
    k(600000, 600001)
    _, mode = k(600000, 600001)  # zero volatility, confirmed twice
    assert mode == TIGHTEN
    quotes, _ = k(600000, 600001)
    bids = [p for s, p in quotes if s == 1]
    assert np.diff(bids).tolist() == [-5, -5]  # interval 1.0 x 0.5 = 5 ticks


def test_volatility_widens_and_one_spike_does_not_flip():
    k = Kernel()
    k(600000, 600001)
    k(603000, 603001)  # +50 bp: volatility jumps, WIDEN called once
    _, mode = k(603000, 603001)
    assert mode == WIDEN  # called twice in a row: applied
    quotes, _ = k(603000, 603001)
    bids = [p for s, p in quotes if s == 1]
    assert np.diff(bids).tolist() == [-20, -20]  # interval 1.0 x 2
    k2 = Kernel()
    k2(600000, 600001)
    _, mode = k2(600000, 600040)  # one wide-spread reading
    assert mode != PAUSE


def test_wide_spread_pauses_all_quotes():
    k = Kernel()
    k(600000, 600030)
    quotes, mode = k(600000, 600030)
    assert mode == PAUSE and quotes == []


def test_inventory_skew_moves_the_grid_against_the_position():
    flat = Kernel(P.model_copy(update={"skew": 100.0}))
    long_ = Kernel(P.model_copy(update={"skew": 100.0}))
    q0, _ = flat(600000, 600001, position=0.0)
    q1, _ = long_(600000, 600001, position=0.02)  # centre 2 USDT lower
    assert max(p for s, p in q1 if s == 1) == max(p for s, p in q0 if s == 1) - 20
    assert min(p for s, p in q1 if s == -1) == min(p for s, p in q0 if s == -1) - 20
    assert all(p > 600000 for s, p in q1 if s == -1)  # never a sell at or below the best bid


def test_bad_parameters_are_refused():
    with pytest.raises(ValueError, match="tighten_vol_bps"):
        AdaptiveGridParams(interval=1, half_spread=1, order_qty=1, max_position=2, tighten_vol_bps=5, widen_vol_bps=1)


def test_runs_on_the_sample_and_records_its_modes():
    s = get("adaptive_grid")
    p = s.validate(
        {"interval": "1.0", "half_spread": "2.0", "order_qty": "0.002", "max_position": "0.04", "skew": "50"}
    )
    tape = load_tape(REPO / "data" / "sample" / "lake", "binance-usdm", "BTCUSDT")
    r = run_backtest(tape, s.kernel, s.vector(p), VenueConfig(), s.max_targets)
    modes = set(np.unique(r.steps["mode"]).tolist())
    assert modes <= {BASE, WIDEN, TIGHTEN, PAUSE} and len(modes) >= 2
    assert len(r.fills["qty"]) > 0
    assert run_backtest(tape, s.kernel, s.vector(p), VenueConfig(), s.max_targets).digest == r.digest
