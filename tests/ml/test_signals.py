"""A model's inputs in the backtest: the decision times are the engine's, and each decision's features use only
events received by then."""

from __future__ import annotations

import numpy as np

from grinder.core.strategy import get
from grinder.data.tape import load_tape
from grinder.ml.signals import decision_times, known_exchange_times
from grinder.sim.backtest import VenueConfig, local_times, prepare, run_backtest
from tests.conftest import REPO

SAMPLE = REPO / "data" / "sample" / "lake"


def test_decision_times_are_the_steps_the_engine_takes():
    tape = load_tape(SAMPLE, "binance-usdm", "BTCUSDT")
    venue = VenueConfig(step_ns=250_000_000)
    grid = get("static_grid")
    p = grid.vector(grid.validate({"interval": 5.0, "half_spread": 2.0, "order_qty": 0.002, "max_position": 0.02}))
    replay = prepare(tape, venue)
    res = run_backtest(tape, grid, p, venue, replay=replay)
    times, steps = decision_times(tape, replay, venue), res.steps["ts"]
    # The loop stops recording once the data has ended; the clock's last steps may go untaken.
    assert np.array_equal(times[: steps.shape[0]], steps) and 0 <= times.shape[0] - steps.shape[0] <= 2


def test_known_times_use_only_events_received_by_then():
    tape = load_tape(SAMPLE, "binance-usdm", "BTCUSDT")
    venue = VenueConfig()
    local = local_times(tape, venue)
    rng = np.random.default_rng(7)
    times = np.sort(rng.integers(local.min() - 10**9, local.max() + 10**9, 500))
    known = known_exchange_times(tape, venue, times)
    for t, k in zip(times, known, strict=True):
        received = local <= t
        if not received.any():
            assert k == np.iinfo(np.int64).min
        else:
            assert k == tape.ts_exch[received].max()  # the latest exchange time received, and no later one
    assert (np.diff(known) >= 0).all()
