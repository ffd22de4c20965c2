"""Strategies that let the engine reuse their last targets must give the same run as when called every decision."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from grinder.core.strategy import BAND_MIN_STATE, RECOMPUTE, Strategy, discover
from grinder.data.tape import load_tape
from grinder.errors import ConfigError
from grinder.sim.backtest import VenueConfig, run_backtest
from tests.conftest import REPO

# Parameters each reusing strategy is checked with (a new reusing strategy must add its own here).
EXAMPLES = {
    "static_grid": [
        {"levels": 5, "interval": 0.5, "half_spread": 0.1, "order_qty": 0.002, "max_position": 0.01},
        {"levels": 4, "interval": 3.0, "half_spread": 1.0, "order_qty": 0.002, "max_position": 0.004},
        {"levels": 8, "interval": 1.0, "half_spread": 0.5, "order_qty": 0.002, "max_position": 0.01,
         "recenter_intervals": 2.0},
    ],
}  # fmt: skip

REUSING = sorted(name for name, s in discover().items() if s.recompute != "always")


def test_the_grid_declares_reuse():
    assert "static_grid" in REUSING  # the sweep speed depends on it


@pytest.mark.parametrize("name", REUSING)
def test_reusing_targets_changes_nothing(name):
    strategy = discover()[name]
    assert name in EXAMPLES, f"{name} declares recompute={strategy.recompute!r}: add example parameters here"
    tape = load_tape(REPO / "data" / "sample" / "lake", "binance-usdm", "BTCUSDT")
    venue = VenueConfig(step_ns=50_000_000)
    always = dataclasses.replace(strategy, recompute="always")
    # Modes that reuse less often than the declared one must not change the run either; every
    # reusing mode also exercises the engine's round for decisions where nothing can happen.
    modes = RECOMPUTE[1 : RECOMPUTE.index(strategy.recompute) + 1]
    for values in EXAMPLES[name]:
        vec = strategy.vector(strategy.validate(values))
        b = run_backtest(tape, always, vec, venue)
        for mode in modes:
            a = run_backtest(tape, dataclasses.replace(strategy, recompute=mode), vec, venue)
            assert a.counters["fills"] > 0
            assert a.digest == b.digest and a.counters == b.counters, mode
            for k, col in b.steps.items():
                assert np.array_equal(a.steps[k], col, equal_nan=True), (mode, k)


def test_a_state_too_short_for_a_band_gives_the_same_run():
    grid = discover()["static_grid"]
    assert grid.recompute == "mid_band"
    tape = load_tape(REPO / "data" / "sample" / "lake", "binance-usdm", "BTCUSDT")
    venue = VenueConfig(step_ns=50_000_000)
    vec = grid.vector(grid.validate(EXAMPLES["static_grid"][1]))
    short = run_backtest(tape, grid, vec, venue, state_size=BAND_MIN_STATE - 1)
    band = run_backtest(tape, grid, vec, venue)
    always = run_backtest(tape, dataclasses.replace(grid, recompute="always"), vec, venue)
    assert short.counters["fills"] > 0
    assert short.digest == band.digest == always.digest


def test_unknown_recompute_value_is_refused():
    grid = discover()["static_grid"]
    with pytest.raises(ConfigError, match="recompute must be one of"):
        Strategy("x", grid.params, grid.kernel, recompute="sometimes")
    assert RECOMPUTE[0] == "always"
