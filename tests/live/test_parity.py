"""Parity: the live adapter against the emulator and the backtest on the same data decide the same.

The live side runs in lock-step (grinder.live.parity.lockstep_session): the emulator's replay and the
adapter's decision clock are stepped by the test, so the outcome does not depend on how busy the
machine is, and every decision and every fill must agree.
"""

from __future__ import annotations

import asyncio

import pytest

from grinder.core.gates import GateConfig
from grinder.core.order_kind import FLATTEN_LEVEL
from grinder.core.strategy import get
from grinder.live.parity import (
    _until,
    backtest_blocked,
    backtest_decisions,
    backtest_fills,
    backtest_pnl,
    by_instant,
    compare,
    compare_at,
    lockstep_parity,
    lockstep_session,
)
from grinder.sim.backtest import VenueConfig
from tests.venue.test_server import tape  # noqa: F401 - a fixture

# recenter_intervals > 0: the strategy keeps state (its anchor), so equal targets need equal histories.
PARAMS = {"levels": 3, "interval": 1.0, "half_spread": 0.5, "order_qty": 0.002, "max_position": 0.01,
          "recenter_intervals": 2.0}  # fmt: skip
STEP_NS, TICKS = 100_000_000, 200  # 20 s of exchange time
# On this window the position limit fires first, then the drawdown guard (0.3 USDT below the peak),
# then the daily-loss kill (0.5 USDT below the day's start).
GATES = GateConfig(max_position=0.006, max_drawdown=0.3, max_daily_loss=0.5)
FIRING = ("max_position", "drawdown_reduce_only", "daily_loss")


@pytest.fixture(scope="module")
def session(tape, tmp_path_factory):  # noqa: F811
    live = asyncio.run(lockstep_session(tape, "static_grid", PARAMS, STEP_NS, TICKS, tmp_path_factory.mktemp("p")))
    s = get("static_grid")
    return live, lockstep_parity(live, tape, s, s.validate(PARAMS))


@pytest.fixture(scope="module")
def gated(tape, tmp_path_factory):  # noqa: F811
    live = asyncio.run(lockstep_session(tape, "static_grid", PARAMS, STEP_NS, TICKS, tmp_path_factory.mktemp("g"),
                                        gates=GATES))  # fmt: skip
    s, p = get("static_grid"), get("static_grid").validate(PARAMS)
    return live, lockstep_parity(live, tape, s, p, GATES), backtest_blocked(live, tape, s, p, GATES)


def test_in_lock_step_every_live_decision_sees_the_backtests_inputs_and_asks_for_its_quotes(session):
    live, report = session
    assert report.live == TICKS and live.decision_ts[-1] == live.start_ns + TICKS * STEP_NS  # a decision every tick
    # The same best prices, their quantities and position at every decision, and the same targets.
    assert report.input_differences == {} and report.first_difference is None and report.agree == report.live
    assert report.first_mismatch is None and report.same_targets == report.agree
    # ... while the targets and the position moved: the comparison has something to compare.
    assert len({d.targets for d in live.decisions}) >= 3 and len({d.position for d in live.decisions}) >= 3


def test_in_lock_step_the_fills_position_and_pnl_are_the_backtests(session):
    live, report = session
    bt = backtest_fills(report.backtest, report.span_ns, with_ts=True)
    fills = [(ts, *f) for ts, f in zip(live.fill_ts, live.fills, strict=True)]
    # One for one: the same fills (side, price, qty) at the same exchange times.
    assert len(bt) >= 10 and by_instant(fills) == by_instant(bt)
    assert live.position == pytest.approx(sum(side * qty for _, side, _, qty in bt), abs=1e-12)
    assert live.pnl == pytest.approx(backtest_pnl(report.backtest, report.span_ns), abs=1e-9)


def test_compare_flags_different_targets_for_the_same_inputs(session):
    live, _ = session
    d = live.decisions[0]
    other = type(d)(d.ts_ns, d.best_bid_ticks, d.best_ask_ticks, d.bid_qty, d.ask_qty, d.position,
                    ((1, d.best_bid_ticks - 99, 1.0),))  # fmt: skip
    agree, same, first, _ = compare([d], [other], 0.001)
    assert (agree, same) == (1, 0) and first == (d, other)


def test_compare_at_pairs_decisions_by_time_and_names_the_first_difference(session):
    live, _ = session
    a, b = live.decisions[:2]
    ta, tb = live.decision_ts[:2]
    moved = type(b)(tb, b.best_bid_ticks - 1, b.best_ask_ticks, b.bid_qty, b.ask_qty, b.position, b.targets)
    same_a = type(a)(ta, *(getattr(a, f) for f in ("best_bid_ticks", "best_ask_ticks", "bid_qty", "ask_qty",
                                                   "position", "targets")))  # fmt: skip
    agree, same, first, why, diff = compare_at([a, b], [ta, tb], [same_a, moved], 0.001)
    assert (agree, same, first) == (1, 1, None) and why["book"] == 1 and diff == (b, moved)
    # A live decision at a time the backtest did not decide has no pair.
    assert compare_at([a], [ta + 1], [same_a], 0.001)[3]["no backtest decision"] == 1


def test_with_gates_the_position_limit_drawdown_guard_and_kill_fire_at_the_same_decision_live_and_in_the_backtest(
    gated,
):
    live, report, engine = gated
    assert report.agree == report.live == TICKS and report.first_difference is None and report.first_mismatch is None
    bt = backtest_fills(report.backtest, report.span_ns, with_ts=True)
    assert by_instant([(ts, *f) for ts, f in zip(live.fill_ts, live.fills, strict=True)]) == by_instant(bt)
    assert None not in engine  # the engine's counts are known at every decision
    first = {}
    for reason in FIRING:
        live_k = next(k for k, b in enumerate(live.blocked) if reason in b)
        assert live_k == next(k for k, b in enumerate(engine) if reason in b)
        first[reason] = live_k
    assert first["max_position"] < first["drawdown_reduce_only"] < first["daily_loss"]
    # Decision by decision the same intents blocked for the same reasons: a quote a gate held back is
    # asked for again at the next decision in both drivers, with nothing else changed.
    assert [dict(b) for b in live.blocked] == [dict(b) for b in engine]


@pytest.fixture(scope="module")
def flattened(tape, tmp_path_factory):  # noqa: F811
    live = asyncio.run(lockstep_session(tape, "static_grid", PARAMS, STEP_NS, TICKS, tmp_path_factory.mktemp("f"),
                                        gates=FLATTEN))  # fmt: skip
    s, p = get("static_grid"), get("static_grid").validate(PARAMS)
    return live, lockstep_parity(live, tape, s, p, FLATTEN)


# The same guards, and a flatten by reduce-only IOC 20 bps through the best price once the drawdown guard
# or the kill holds (grinder.core.gates.flatten_order): a taker order from the decision step in both drivers.
FLATTEN = GateConfig(max_position=0.006, max_drawdown=0.3, max_daily_loss=0.5, flatten_bps=20)


def test_a_taker_flatten_is_the_same_intent_live_and_in_the_backtest_and_fills_the_same(flattened):
    live, report = flattened
    assert report.agree == report.live == TICKS and report.first_difference is None and report.first_mismatch is None
    fills = report.backtest.fills
    t0, t1 = report.span_ns
    inside = (fills["ts_exch"] >= t0) & (fills["ts_exch"] <= t1)
    flat = inside & (fills["level"] == FLATTEN_LEVEL)
    assert flat.any() and not fills["maker"][flat].any()  # the backtest flattened, by taker fills
    # Live sent the same orders: the emulator walked its book for the IOC as the backtest walked its own, so
    # the fills are the same, one for one, taker and maker alike, and so are the position and PnL.
    bt = backtest_fills(report.backtest, report.span_ns, with_ts=True)
    assert by_instant([(ts, *f) for ts, f in zip(live.fill_ts, live.fills, strict=True)]) == by_instant(bt)
    assert live.position == pytest.approx(sum(side * qty for _, side, _, qty in bt), abs=1e-12)
    assert live.pnl == pytest.approx(backtest_pnl(report.backtest, report.span_ns), abs=1e-9)


def test_the_backtests_decisions_replay_a_strategy_that_reads_depth(tape):  # noqa: F811
    # smart_grid reads 10 levels a side: the replay through the Decider gives it the engine's depth table.
    s = get("smart_grid")
    p = s.validate({"levels": 3, "interval": 1.0, "half_spread": 0.5, "order_qty": 0.002, "max_position": 0.01,
                    "depth_share": 0.5})  # fmt: skip
    start = int(tape.ts_exch[0])
    decisions, result = backtest_decisions(tape, s, p, VenueConfig(), start, start + 20 * STEP_NS)
    assert len(decisions) >= 15 and any(d.targets for d in decisions) and len(result.fills["qty"]) > 0


def test_a_lock_step_wait_that_does_not_end_fails_naming_its_condition_or_the_adapters_error():
    async def main():
        alive = asyncio.create_task(asyncio.Event().wait())
        with pytest.raises(TimeoutError, match=r"tick 7: the book did not happen in 0.05 s \(u 3 of 4\)"):
            await _until(lambda: False, "tick 7: the book", lambda: "u 3 of 4", alive, 0.05)
        alive.cancel()

        async def dies():
            raise ConnectionError("venue gone")

        dead = asyncio.create_task(dies())
        with pytest.raises(ConnectionError, match="venue gone"):
            await _until(lambda: False, "tick 1", lambda: "", dead, 60.0)

    asyncio.run(main())
