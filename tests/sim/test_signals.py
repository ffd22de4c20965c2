"""Signals in the engine: each decision's kernel gets the row in force at its time, NaN before the first,
and the signals' source enters the digest; a strategy gets signals exactly when it reads them."""

from __future__ import annotations

import numpy as np
import pytest
from numba import njit

from grinder.core.decision import Decider, Order
from grinder.core.params import ParamVector
from grinder.core.strategy import Strategy
from grinder.errors import ConfigError
from grinder.sim.backtest import SignalSeries, run_backtest
from tests.sim.test_engine import BOOK, END, VENUE, tape

MS = 1_000_000


@njit(cache=True)
def echo(params, state, now_ns, bb, ba, bq, aq, tick, lot, position, signals, depth, o_side, o_px, o_qty, n_open,
         out_side, out_px, out_qty, out_level, out_kind):  # fmt: skip
    """Records signals[0] as its mode (state[0], recorded every step; -1 for NaN) and bids 1 @ 98 while it is 1."""
    s = signals[0]
    state[0] = -1.0 if np.isnan(s) else s
    if s == 1.0:
        out_side[0], out_px[0], out_qty[0], out_level[0] = 1, 98, 1.0, -1
        return 1
    return 0


class NoParams(ParamVector):
    pass


ECHO = Strategy("echo", NoParams, echo, signals=("fwd_rv_",))
TAPE = tape(BOOK + END)


def series(times_ms, values, source="test-model/1"):
    return SignalSeries(np.array(times_ms, np.int64) * MS, np.array(values, np.float64).reshape(-1, 1), source)


def run(signals):
    return run_backtest(TAPE, ECHO, np.zeros(1), VENUE, signals=signals)


def test_each_decision_gets_the_row_in_force_and_nan_before_the_first():
    res = run(series([250, 500, 750], [2.0, 3.0, 4.0]))
    ts, seen = res.steps["ts"], res.steps["mode"]
    expect = np.select([ts >= 750 * MS, ts >= 500 * MS, ts >= 250 * MS], [4.0, 3.0, 2.0], -1.0)
    assert (seen == expect).all()
    assert (seen == -1.0).any() and (seen == 4.0).any()  # the test covers both ends


def test_a_signal_changes_what_the_kernel_asks_for():
    quiet = run(series([0], [0.0]))
    bid = run(series([0], [1.0]))
    assert quiet.counters["placed"] == 0
    assert bid.counters["placed"] == 1


def test_the_source_enters_the_digest():
    a = run(series([0], [0.0], "m/1 sha256=aa"))
    b = run(series([0], [0.0], "m/2 sha256=bb"))
    assert a.fills["qty"].size == b.fills["qty"].size == 0
    assert a.digest != b.digest


def test_a_strategy_gets_signals_exactly_when_it_reads_them():
    with pytest.raises(ConfigError, match="reads signals"):
        run(None)
    two = SignalSeries(np.array([0]), np.zeros((1, 2)), "m/1")
    with pytest.raises(ConfigError, match="reads 1 signal"):
        run(two)
    from grinder.core.strategy import get

    grid = get("static_grid")
    p = grid.vector(grid.validate({"interval": 1.0, "half_spread": 1.0, "order_qty": 1.0, "max_position": 5.0}))
    with pytest.raises(ConfigError, match="reads no signals"):
        run_backtest(TAPE, grid, p, VENUE, signals=series([0], [1.0]))


@pytest.mark.parametrize(
    "ts, values, source, message",
    [
        ([0, 1], np.zeros((3, 1)), "m", "one row of values per time"),
        ([5, 1], np.zeros((2, 1)), "m", "sorted"),
        ([0], np.zeros((1, 1)), "", "source"),
    ],
)
def test_bad_signal_series_are_refused(ts, values, source, message):
    with pytest.raises(ConfigError, match=message):
        SignalSeries(np.array(ts, np.int64), values, source)


def test_the_decider_passes_signals_and_checks_their_shape():
    d = Decider(ECHO, NoParams())
    args = (1, 99, 101, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 1.0, [Order(1, 50, 1.0)])
    assert d.decide(*args, signals=np.array([1.0])).place == [(1, 98, 1.0, -1)]
    assert d.mode == 1
    d.decide(*args)  # none given: NaN, as a model with nothing to go on
    assert d.mode == -1
    with pytest.raises(ConfigError, match="1 signal"):
        d.decide(*args, signals=np.array([1.0, 2.0]))
