"""Run every parameter set of a grid over one prepared tape, in parallel, keeping only metrics.

The tape and its replay are built once per window and shared read-only; the compiled loop
releases the GIL, so a thread pool runs as many backtests at once as there are cores without
copying market data (decision 010). Each backtest is reduced to one row of metrics and an equity
curve on a coarse common time grid as soon as it ends, so memory does not grow with the number of
parameter sets beyond the results table.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from pydantic import BaseModel

from grinder.core.depth import needed_levels
from grinder.core.gates import GateConfig
from grinder.core.strategy import Strategy, compile_kernel
from grinder.data.tape import Tape
from grinder.portfolio.curves import last_finite_at, max_drawdown
from grinder.report.qrules import qr_metrics, rules_of
from grinder.sim.backtest import (
    BacktestResult,
    LatencySeries,
    VenueConfig,
    decision_inputs,
    prepare,
    row_blocks,
    run_backtest,
)
from grinder.sim.replay import Replay

METRICS = ("equity", "realized", "unrealized", "fees", "funding_paid", "fills", "position", "max_drawdown",
           "placed", "cancelled", "rejected", "expired", "blocked")  # fmt: skip


def metrics_of(res: BacktestResult, gates: GateConfig | None = None) -> dict:
    """The numbers a sweep compares (settle currency; max_drawdown is the deepest fall of equity below its peak);
    `gates` name the quantitative rules' thresholds file (default: the shipped one)."""
    c = res.counters
    return {
        "equity": res.equity,
        "realized": res.realized,
        "unrealized": res.unrealized,
        "fees": res.fees,
        "funding_paid": res.funding_paid,
        "fills": c["fills"],
        "position": res.position,
        "max_drawdown": max_drawdown(res.steps["equity"]),
        "placed": c["placed"],
        "cancelled": c["cancelled"],
        "rejected": c["rejected"],
        "expired": c["expired"],
        "blocked": sum(v for k, v in c.items() if k.startswith("blocked_")),
        **qr_metrics(res, rules_of(gates)),  # each quantitative rule's largest value, and rules_ok
        "digest": res.digest,
    }


def equity_on_grid(res: BacktestResult, grid_ns: np.ndarray) -> np.ndarray:
    """Equity (settle currency) at each grid time: the last finite value at or before it, 0 before any."""
    out = np.empty(len(grid_ns))
    last_finite_at(res.steps["ts"], res.steps["equity"], grid_ns, 0.0, out)  # steps are in time order
    return out


@dataclass(frozen=True)
class WindowRun:
    """Metrics of every parameter set over one window, and their equity curves on a common grid."""

    rows: list[dict]
    grid_ns: np.ndarray
    equity: np.ndarray  # (len(grid_ns), n_sets), settle currency


def run_window(
    tape: Tape,
    strategy: Strategy,
    sets: list[BaseModel],
    venue: VenueConfig,
    gates: GateConfig | None = None,
    start_ns: int = 0,
    latency: LatencySeries | None = None,
    replay: Replay | None = None,
    workers: int | None = None,
    grid_points: int = 2_000,
    progress: Callable[[int, int], None] | None = None,
) -> WindowRun:
    """Backtest each parameter set over `tape` (one shared replay, a thread pool); rows in set order."""
    compile_kernel(strategy.kernel)
    latency = LatencySeries.for_venue(venue) if latency is None else latency  # read a latency file once, not per set
    rep = prepare(tape, venue) if replay is None else replay
    blocks = row_blocks(tape, rep)
    decisions = decision_inputs(tape, rep, venue, start_ns, needed_levels(strategy.depth_levels, gates))
    lo = start_ns if start_ns > 0 else int(min(tape.ts_exch[0], rep.local_ts[0])) if len(tape) else 0
    hi = int(max(tape.ts_exch[-1], rep.local_ts[-1])) if len(tape) else lo
    grid_ns = np.unique(np.linspace(lo, hi, grid_points).astype(np.int64))
    equity = np.zeros((len(grid_ns), len(sets)))
    rows: list[dict | None] = [None] * len(sets)

    def one(i: int) -> int:
        res = run_backtest(tape, strategy, strategy.vector(sets[i]), venue, start_ns=start_ns, replay=rep,
                           gates=gates, latency=latency, blocks=blocks, decisions=decisions,
                           record="equity")  # fmt: skip
        rows[i] = {**metrics_of(res, gates), "events": len(tape)}
        equity[:, i] = equity_on_grid(res, grid_ns)
        return i

    n_workers = max(1, min(workers or os.cpu_count() or 1, len(sets)))
    done = 0
    with ThreadPoolExecutor(n_workers, thread_name_prefix="grinder-sweep") as pool:
        for _ in pool.map(one, range(len(sets))):
            done += 1
            if progress is not None:
                progress(done, len(sets))
    return WindowRun(rows, grid_ns, equity)  # type: ignore[arg-type]
