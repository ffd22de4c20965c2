"""Prefilter, backtests and allocator together: real BTCUSDT and ETHUSDT (2024-07-18) plus three synthetic symbols."""

from __future__ import annotations

import math

import numpy as np
import pytest

from grinder.core.strategy import get
from grinder.data.ingest.binance import parse_binance
from grinder.data.instruments import resolve_instrument
from grinder.data.lake import Lake
from grinder.data.synth import synth_batch
from grinder.data.tape import load_tape
from grinder.portfolio.allocator import DrawdownRule, allocate
from grinder.portfolio.curves import align_equity, common_grid
from grinder.portfolio.prefilter import PrefilterRules, tape_features, top_k
from grinder.sim.backtest import VenueConfig, run_backtest

S = 1_000_000_000
LOOKBACK_S = 120  # the prefilter looks at [t0, t0 + 120 s); the grids trade after it, to t0 + 360 s
END_S = 360
REAL = {
    "BTCUSDT": ["btcusdt_20240718.gz", "btcusdt_20240719.gz"],
    "ETHUSDT": ["ethusdt_20240718.gz", "ethusdt_20240719.gz"],
}
# (symbol, mid, tick, lot): SYNA's tick is 1 bps of its price, so its spread is at least 1 bps.
SYNTH = [("SYNAUSDT", 100.0, 0.01, 0.1), ("SYNBUSDT", 50_000.0, 0.1, 0.001), ("SYNCUSDT", 2_000.0, 0.01, 0.01)]
RULES = PrefilterRules(max_spread_bps=0.5)
BASE = 3_000.0  # quote per symbol: about the largest inventory of the grids below (20 quotes of ~150 quote)
RULE = DrawdownRule(max_drawdown=0.01, floor=0.0)  # 30 quote of drawdown empties a symbol's budget


@pytest.fixture(scope="module")
def universe(real_dir, tmp_path_factory):
    """(lake root, {symbol: venue}, t0): the two real windows and three synthetic symbols starting with them."""
    root = tmp_path_factory.mktemp("universe")
    lake = Lake(root)
    for symbol, files in REAL.items():
        paths = [real_dir / f for f in files]
        lake.write(parse_binance(paths, resolve_instrument("binance-usdm", symbol)), paths)
    venues = dict.fromkeys(REAL, "binance-usdm")
    t0 = max(int(load_tape(root, "binance-usdm", s).ts_exch[0]) for s in REAL)
    for seed, (symbol, mid, tick, lot) in enumerate(SYNTH):
        lake.write(synth_batch(150_000, seed, symbol, start_ns=t0, mid=mid, tick_size=tick, lot_size=lot), [], key="pf")
        venues[symbol] = "synthetic"
    for symbol, venue in venues.items():
        assert load_tape(root, venue, symbol).ts_exch[-1] >= t0 + END_S * S, symbol  # every symbol spans the test
    return root, venues, t0


def grid_params(tape):
    """The static grid of strategies/static_grid.toml scaled to the symbol's price: ~1.5e-5 of mid apart, ~150 quote."""
    inst = tape.instrument
    mid = (tape.bbo.bid_price[0] + tape.bbo.ask_price[0]) / 2
    interval = max(1, round(mid * 1.5e-5 / inst.tick_size)) * inst.tick_size
    qty = math.ceil(150.0 / mid / inst.lot_size) * inst.lot_size
    return dict(levels=20, interval=interval, half_spread=2 * interval, order_qty=qty, max_position=20 * qty)


def by_hand(curves, grid, total, rule):
    """Budgets and portfolio equity in plain Python: carry values forward, scale increments by the last budget."""
    n = len(curves)
    base = total / n
    budgets = [[0.0] * n for _ in grid]
    port = [0.0] * len(grid)
    for j, (ts, eq) in enumerate(curves):
        col, k, last = [], 0, 0.0
        for g in grid:
            while k < len(ts) and ts[k] <= g:
                if not math.isnan(eq[k]):
                    last = eq[k]
                k += 1
            col.append(last)
        peak, frac, acc = col[0], 1.0, 0.0
        for t in range(len(grid)):
            if t > 0:
                acc += (col[t] - col[t - 1]) * frac  # the fraction set at t - 1
            port[t] += acc
            peak = max(peak, col[t])
            frac = max(rule.floor, 1.0 - (peak - col[t]) / (rule.max_drawdown * base))
            budgets[t][j] = base * frac
    peak, dd = -math.inf, []
    for v in port:
        peak = max(peak, v)
        dd.append(peak - v)
    return np.array(budgets), np.array(port), np.array(dd)


def test_prefilter_picks_three_and_the_allocator_matches_a_hand_computation(universe):
    root, venues, t0 = universe
    tapes = {s: load_tape(root, v, s, end_ns=t0 + END_S * S) for s, v in venues.items()}
    feats = [tape_features(t, t0, t0 + LOOKBACK_S * S) for t in tapes.values()]
    sel = top_k(feats, 3, RULES)

    # SYNA is out on its spread; the other four are ranked by mean rank of volatility and traded notional.
    assert [s for s, _ in sel.excluded] == ["SYNAUSDT"]
    eligible = [f for f in feats if f.symbol != "SYNAUSDT"]
    vol_pos = {f.symbol: i / 3 for i, f in enumerate(sorted(eligible, key=lambda f: f.vol_bps))}
    liq_pos = {f.symbol: i / 3 for i, f in enumerate(sorted(eligible, key=lambda f: f.notional_per_s))}
    expected = sorted(eligible, key=lambda f: (-round((vol_pos[f.symbol] + liq_pos[f.symbol]) / 2, 9), f.symbol))
    assert sel.symbols == tuple(f.symbol for f in expected[:3])
    assert [p.score for p in sel.ranked] == pytest.approx(
        [(vol_pos[f.symbol] + liq_pos[f.symbol]) / 2 for f in expected]
    )

    grid = get("static_grid")
    runs = []
    for symbol in sel.symbols:
        tape = tapes[symbol]
        p = grid.validate(grid_params(tape))
        r = run_backtest(tape, grid, grid.vector(p), VenueConfig(), start_ns=t0 + LOOKBACK_S * S)
        assert len(r.fills["qty"]) > 50, symbol  # the grids trade, so the curves move
        runs.append(r)

    curves = [(r.steps["ts"], r.steps["equity"]) for r in runs]
    g = common_grid([ts for ts, _ in curves], S)
    eq = align_equity(curves, g)
    total = BASE * len(runs)
    port = allocate(eq, total, RULE)
    budgets, equity, dd = by_hand([(ts.tolist(), e.tolist()) for ts, e in curves], g.tolist(), total, RULE)

    assert len(g) > 200 and port.base.tolist() == [BASE] * 3
    np.testing.assert_allclose(port.budgets, budgets, rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(port.equity, equity, rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(port.drawdown, dd, rtol=1e-12, atol=1e-9)
    # The rule did act: some budget was cut below half its base, and the portfolio is not the plain sum.
    assert port.budgets.min() < 0.5 * BASE
    assert not np.allclose(port.equity, (eq - eq[0]).sum(axis=1))
