"""Binance's quantitative rules in the backtest: every order recorded, the ratios reported, the gate when asked."""

from __future__ import annotations

import numpy as np
import pytest

from grinder.core.gates import GateConfig
from grinder.core.qrules import OUT
from grinder.data.tape import load_tape
from grinder.sim.backtest import run_backtest
from tests.conftest import REPO
from tests.sim.test_digest_pins import BASE, GRID, TIGHT


@pytest.fixture(scope="module")
def sample():
    return load_tape(REPO / "data" / "sample" / "lake", "binance-usdm", "BTCUSDT")


def backtest(sample, gates=None, record="all"):
    return run_backtest(sample, GRID, GRID.vector(GRID.validate(TIGHT)), BASE, gates=gates, record=record)


def test_the_tight_grid_sends_more_orders_in_10_s_than_binance_allows_and_the_run_says_so(sample):
    free = backtest(sample)
    # 10 levels a side re-quoted every 100 ms: past the venue's 300 new orders per 10 s.
    assert free.qrules_max["orders_10s"] > 300 and free.counters["blocked_quant_rules"] == 0
    assert set(free.qrules) == {"ts", *OUT} and len(free.qrules["orders_10s"]) == len(free.steps["ts"])
    assert np.nanmax(free.qrules["orders_10s"]) == free.qrules_max["orders_10s"]
    # The counts are of orders the engine sent: never more than it placed.
    assert free.qrules_max["orders_1d"] <= free.counters["placed"]
    # record="equity" (a sweep's runs): no series, the same largest values.
    lean = backtest(sample, record="equity").qrules_max
    assert np.array_equal([lean[k] for k in OUT], [free.qrules_max[k] for k in OUT], equal_nan=True)


def test_with_the_gate_on_no_window_comes_within_the_margin_of_a_limit(sample):
    gated = backtest(sample, GateConfig(quant_rules=True))
    assert gated.counters["blocked_quant_rules"] > 0
    assert gated.qrules_max["orders_10s"] <= 300 * 0.95 and gated.qrules_max["orders_1m"] <= 1200 * 0.95
    assert gated.counters["placed"] < backtest(sample).counters["placed"]


def test_a_thresholds_file_that_is_not_there_is_one_clear_error(sample, tmp_path):
    from grinder.errors import ConfigError

    with pytest.raises(ConfigError, match="missing.toml"):
        backtest(sample, GateConfig(quant_rules=True, quant_rules_file=str(tmp_path / "missing.toml")))
