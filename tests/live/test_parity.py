"""Parity: the live adapter against the emulator and the backtest on the same data decide the same."""

from __future__ import annotations

import asyncio

import pytest

from grinder.core.strategy import get
from live.parity import backtest_fills, compare, live_session, parity
from tests.venue.test_server import tape  # noqa: F401 - a fixture

# recenter_intervals > 0: the strategy keeps state (its anchor), so equal targets need equal histories.
PARAMS = {"levels": 3, "interval": 1.0, "half_spread": 0.5, "order_qty": 0.002, "max_position": 0.01,
          "recenter_intervals": 2.0}  # fmt: skip
SPEED, STEP_MS = 2.0, 100


@pytest.fixture(scope="module")
def session(tape, tmp_path_factory):  # noqa: F811
    live = asyncio.run(live_session(tape, "static_grid", PARAMS, SPEED, 6.0, STEP_MS, tmp_path_factory.mktemp("p")))
    s = get("static_grid")
    return live, parity(live.decisions, tape, s, s.validate(PARAMS), int(STEP_MS * 1e6 * SPEED), quantities=False)


def test_while_inputs_agree_live_and_backtest_ask_for_the_same_quotes(session):
    live, report = session
    assert report.live > 40 and report.agree >= 20  # the comparison has something to compare ...
    assert len({d.targets for d in live.decisions}) >= 2  # ... and the targets moved during it
    assert report.first_mismatch is None and report.same_targets == report.agree


def test_fills_agree_until_the_first_decision_timing_difference(session):
    live, report = session
    bt = backtest_fills(report.backtest, report.span_ns)
    assert live.fills and bt
    n = next((i for i, (a, b) in enumerate(zip(live.fills, bt, strict=False)) if a != b), min(len(live.fills), len(bt)))
    # The first fills are the same fills (side, price, qty); later ones may part when the live clock's
    # ticks fall between the backtest's (docs/parity.md).
    assert n >= 1 and live.fills[:n] == bt[:n]


def test_compare_flags_different_targets_for_the_same_inputs(session):
    live, report = session
    d = live.decisions[0]
    other = type(d)(d.ts_ns, d.best_bid_ticks, d.best_ask_ticks, d.bid_qty, d.ask_qty, d.position,
                    ((1, d.best_bid_ticks - 99, 1.0),))  # fmt: skip
    agree, same, first, _ = compare([d], [other], 0.001)
    assert (agree, same) == (1, 0) and first == (d, other)
