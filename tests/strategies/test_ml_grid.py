"""The ML grid's controller: the forecast picks the mode (PAUSE at once and without a forecast, others after
`confirm` decisions), and the mode shapes the grid."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from grinder.core.strategy import get
from grinder.errors import ConfigError
from grinder.strategies.ml_grid import BASE, PAUSE, TIGHTEN, WIDEN, MlGridParams, ml_grid

PARAMS = MlGridParams(levels=3, interval=1.0, half_spread=0.5, order_qty=0.01, max_position=0.1, confirm=2,
                      tighten_vol=0.5, widen_vol=2.0, pause_vol=6.0)  # fmt: skip


class Grid:
    def __init__(self, params=PARAMS):
        self.p = params.as_array()
        self.state = np.zeros(64)

    def __call__(self, forecast, bid=1000_0, ask=1000_1, position=0.0):
        side, px, qty, level = np.zeros(64, np.int8), np.zeros(64, np.int64), np.zeros(64), np.zeros(64, np.int64)
        n = ml_grid(self.p, self.state, 0, bid, ask, 1.0, 1.0, 0.1, 0.001, position, np.array([forecast]),
                    np.zeros((0, 4)), np.zeros(0, np.int8), np.zeros(0, np.int64), np.zeros(0), 0, side, px, qty, level,
                    np.zeros(64, np.int8))  # fmt: skip
        return list(zip(side[:n].tolist(), px[:n].tolist(), strict=True)), int(self.state[0])


def spacing(quotes):
    bids = sorted((p for s, p in quotes if s == 1), reverse=True)
    return bids[0] - bids[1]


def test_no_forecast_and_a_storm_pause_at_once():
    g = Grid()
    quotes, mode = g(1.0)
    assert quotes and mode == BASE
    assert g(np.nan) == ([], PAUSE)
    g = Grid()
    g(1.0)
    assert g(7.0) == ([], PAUSE)


def test_other_modes_wait_for_confirmation_and_shape_the_grid():
    g = Grid()
    base, mode = g(1.0)
    assert mode == BASE
    assert g(3.0)[1] == BASE  # one call: not yet
    wide, mode = g(3.0)
    assert mode == WIDEN and spacing(wide) == 2 * spacing(base)
    g(0.1)
    tight, mode = g(0.1)
    assert mode == TIGHTEN and spacing(tight) == spacing(base) // 2


def test_leaving_pause_waits_for_confirmation():
    g = Grid()
    g(np.nan)
    assert g(1.0) == ([], PAUSE)
    assert g(1.0)[1] == BASE


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.floats(0, 10), st.just(float("nan"))), min_size=1, max_size=30))
def test_quotes_never_cross_and_respect_the_position_limit(forecasts):
    g = Grid()
    for f in forecasts:
        quotes, mode = g(f, position=0.1)
        assert all(p <= 1000_0 for s, p in quotes if s == 1) and all(p >= 1000_1 for s, p in quotes if s == -1)
        assert not any(s == 1 for s, _ in quotes)  # at max_position: no more buying
        if np.isnan(f) or f >= PARAMS.pause_vol:
            assert quotes == [] and mode == PAUSE


def test_parameters_are_checked():
    grid = get("ml_grid")
    base = {"interval": 1.0, "half_spread": 0.5, "order_qty": 0.01, "max_position": 0.1}
    with pytest.raises(ConfigError, match="tighten_vol < widen_vol <= pause_vol"):
        grid.validate(base | {"widen_vol": 7.0})
    assert grid.signals == ("fwd_rv_",) and grid.recompute == "always"
