"""A portfolio run: rank candidate symbols on a look-back window, trade the top K, allocate by drawdown.

Causal by construction: symbols are chosen on [start, start + lookback) and traded from
start + lookback to end, so the choice never sees the period it is judged on. Each chosen symbol
is backtested at its own parameters (the shared `[strategy]` values, overridden per symbol), its
equity put on a common time grid, and the drawdown allocator (`grinder.portfolio.allocator`)
turns those full-size curves into budgets and a portfolio equity curve.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from grinder.core.gates import GateConfig
from grinder.core.strategy import Strategy
from grinder.data.tape import Tape, load_tape
from grinder.errors import ConfigError
from grinder.portfolio.allocator import DrawdownRule, Portfolio, allocate
from grinder.portfolio.curves import align_equity
from grinder.portfolio.prefilter import PrefilterRules, Selection, SymbolFeatures, tape_features, top_k
from grinder.sim.backtest import BacktestResult, VenueConfig, run_backtest


@dataclass(frozen=True)
class PortfolioRun:
    """What a portfolio run chose, how each pick did at full size, and the allocated portfolio."""

    features: list[SymbolFeatures]
    selection: Selection
    results: dict[str, BacktestResult]
    grid_ns: np.ndarray
    full_equity: np.ndarray  # (T, K) each pick's equity at full size, settle currency
    portfolio: Portfolio
    trade_start_ns: int
    end_ns: int


def run_portfolio(
    root: Path,
    venue: str,
    symbols: list[str],
    strategy: Strategy,
    params_for: Callable[[str], object],
    start_ns: int,
    end_ns: int,
    lookback_ns: int,
    k: int,
    budget: float,
    rule: DrawdownRule,
    venue_cfg: VenueConfig,
    gates: GateConfig | None = None,
    prefilter: PrefilterRules | None = None,
    grid_step_ns: int = 1_000_000_000,
    load: Callable[[str, int, int], Tape] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> PortfolioRun:
    """Choose the top-k symbols on the look-back, backtest them after it, allocate `budget` by drawdown.

    A candidate is SYMBOL (on `venue`) or VENUE/SYMBOL; `params_for(candidate)` gives its parameters.
    `progress(done, total)` is called after each candidate ranked and each pick backtested.
    """
    if not symbols:
        raise ConfigError("no candidate symbols")
    if len(set(symbols)) != len(symbols):
        raise ConfigError(f"candidate symbols repeat: {', '.join(symbols)}")
    if lookback_ns <= 0 or start_ns + lookback_ns >= end_ns:
        raise ConfigError(f"the look-back ({lookback_ns} ns) must be positive and end before the selection does")
    if budget <= 0:
        raise ConfigError(f"budget must be positive, got {budget}")

    def split(name: str) -> tuple[str, str]:
        # Candidates from several venues are written VENUE/SYMBOL.
        v, _, sym = name.rpartition("/")
        return (v or venue), sym

    load = load or (lambda name, lo, hi: load_tape(root, *split(name), lo, hi))
    trade_start = start_ns + lookback_ns
    tick = progress or (lambda _done, _total: None)
    feats = []
    for i, sym in enumerate(symbols):
        tape = load(sym, start_ns, trade_start)
        # Named as the candidate (VENUE/SYMBOL stays distinct from SYMBOL on another venue).
        feats.append(dataclasses.replace(tape_features(tape, start_ns, trade_start), symbol=sym))
        tick(i + 1, len(symbols) + min(k, len(symbols)))
    sel = top_k(feats, k, prefilter)
    total = len(symbols) + len(sel.symbols)
    tick(len(symbols), total)
    results, settles = {}, set()
    for i, sym in enumerate(sel.symbols):
        tape = load(sym, trade_start, end_ns)
        p = params_for(sym)
        results[sym] = run_backtest(tape, strategy, strategy.vector(p), venue_cfg, start_ns=trade_start, gates=gates)
        settles.add(tape.instrument.settle)
        tick(len(symbols) + i + 1, total)
    if len(settles) > 1:
        raise ConfigError(f"the chosen symbols settle in different currencies ({', '.join(sorted(settles))})")
    grid_ns = np.arange(trade_start, end_ns + 1, grid_step_ns, dtype=np.int64)
    full = align_equity([(r.steps["ts"], r.steps["equity"]) for r in results.values()], grid_ns)
    port = allocate(full, budget, rule)
    return PortfolioRun(feats, sel, results, grid_ns, full, port, trade_start, end_ns)
