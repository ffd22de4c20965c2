"""Pinned digests: varied backtests on the sample give exactly the results the engine gave before decision 015.

The loop's shortcuts (reusing a kernel's targets, skipping a diff that cannot change anything, a
grid's band) must never change a result. These digests were computed at commit 7408d5d, before
decision 015, and are unchanged by it: a change to the model updates them on purpose, in the
same commit, with its reason; any other change that moves one is a bug.
"""

from __future__ import annotations

import pytest

from grinder.core.gates import GateConfig
from grinder.data.tape import load_tape
from grinder.sim.backtest import VenueConfig, run_backtest
from grinder.strategies.adaptive_grid import STRATEGY as ADAPTIVE
from grinder.strategies.static_grid import STRATEGY as GRID
from tests.conftest import REPO

BASE = VenueConfig(entry_latency_ns=10_000_000, response_latency_ns=10_000_000, step_ns=100_000_000)
TOML = {"levels": 20, "interval": 1.0, "half_spread": 2.0, "order_qty": 0.1, "max_position": 5.0}  # make run's
TIGHT = {"levels": 10, "interval": 0.2, "half_spread": 0.1, "order_qty": 0.002, "max_position": 0.01}
WIDE = {"levels": 5, "interval": 3.0, "half_spread": 1.0, "order_qty": 0.002, "max_position": 0.004}
GATES = GateConfig(rate_capacity=3, rate_per_s=8, max_open_orders=8, max_position=0.006)
SLOW = VenueConfig(entry_latency_ns=150_000_000, response_latency_ns=120_000_000, step_ns=50_000_000)
CASES = {
    "toml": (GRID, TOML, BASE, None),
    "tight": (GRID, TIGHT, BASE, None),
    "wide": (GRID, WIDE, BASE, None),
    "tight_gated": (GRID, TIGHT, BASE, GATES),
    "tight_partial_power": (GRID, TIGHT, BASE.model_copy(update={"partial_fills": True, "queue": "power"}), None),
    "tight_slow": (GRID, TIGHT, SLOW, None),  # responses slower than a decision step
    "recentred": (GRID, {**TIGHT, "recenter_intervals": 2.0}, BASE, None),
    "adaptive": (ADAPTIVE, {"levels": 8, "interval": 0.5, "half_spread": 0.2, "order_qty": 0.002, "max_position": 0.01},
                 BASE, None),
}  # fmt: skip
PINS = {  # digest, fills
    "toml": ("b37a68182a357eb98e77ff4bb1fae8decff7749b8d4ef1e9c593c7867198e0f4", 1035),
    "tight": ("0b79ee76fd1d59137159b81c1c6a3b77fafc92cb0354ba63e9c027db5465eda8", 1696),
    "wide": ("b773562cd82c8f240692ee982e3fb63578db1d2714a0eb4eb18cb60de3893f90", 262),
    # Changed on purpose (issue 20): a quote a gate held back is asked for again at the next decision,
    # as live does, instead of only after the next order event (was 0a917af1...acd85, 211 fills).
    "tight_gated": ("131ffd2cc7c17239213e8a91d83ede9d5cb18bbce32d5da6c3d888c714484c16", 484),
    "tight_partial_power": ("b867c1c495313a6c4a959878a1ef7b284fac1e364206c5ed21e904e5ea434ea3", 1711),
    "tight_slow": ("ac097a11ec2d9024659196f8b05c84a024f8c79ffb8dcd07b5c3a34fadc0c2c8", 1427),
    "recentred": ("687235f2d361aa6ea614b6e192cea9fe2c4fc987ba4d43364c96799bbf1452e1", 1624),
    # Decision 021 moved this one on purpose: before it, the decision at 23:54:16.522 quoted 16 orders
    # on a local book made only of the diffs that bridge the snapshot and reached the recorder before
    # it (local order); the book was synced only at 16.592. Now the first quotes are placed at 16.622.
    "adaptive": ("63e51685be705648c1b393f86978341d7a70a6184bdc0973d5746998ca25398c", 1344),
}


@pytest.fixture(scope="module")
def sample():
    return load_tape(REPO / "data" / "sample" / "lake", "binance-usdm", "BTCUSDT")


@pytest.mark.parametrize("name", list(CASES))
def test_digest_is_pinned(sample, name):
    strategy, values, venue, gates = CASES[name]
    r = run_backtest(sample, strategy, strategy.vector(strategy.validate(values)), venue, gates=gates)
    assert (r.digest, r.counters["fills"]) == PINS[name]
