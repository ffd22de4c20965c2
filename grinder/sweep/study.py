"""A sweep study: every parameter set of a grid over every window, then in-sample vs out-of-sample ranking.

Each window's tape is loaded once (as `grinder backtest --start --end` would load it) and all
parameter sets run over it (`grinder.sweep.runner`). The results table has one row per
(parameter set, window); the ranking table one row per set with its in-sample and out-of-sample
means side by side, ranked by the out-of-sample value of the chosen metric when there is an
out-of-sample window (by the in-sample value otherwise).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from grinder.core.gates import GateConfig
from grinder.data.tape import Tape, load_tape
from grinder.errors import ConfigError, DataError
from grinder.report.qrules import QR_COLUMNS
from grinder.sim.backtest import LatencySeries, VenueConfig, prepare
from grinder.sim.heap import keep_freed_memory
from grinder.sim.replay_cache import cache_root
from grinder.sweep.folds import Window
from grinder.sweep.runner import METRICS, run_window
from grinder.sweep.spec import Grid

# Metrics where lower is better; every other metric ranks higher-is-better.
LOWER_IS_BETTER = frozenset({"max_drawdown", "fees", "funding_paid"})
RANKABLE = (*METRICS, "sharpe", "return_over_drawdown")


@dataclass(frozen=True)
class Selection:
    """Which data a sweep reads: lake folder, venue, symbol, and the [start, end) span in ns (None: all)."""

    root: Path
    venue: str
    symbol: str
    start_ns: int | None = None
    end_ns: int | None = None
    cache: bool = False  # keep each window's tape and replay on disk in the lake, reused by later sweeps


@dataclass
class StudyResult:
    """Rows per (set, window), the per-set ranking, and each window's equity curves (grid ns, matrix)."""

    results: pd.DataFrame
    ranking: pd.DataFrame
    rank_by: str
    equity: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)


def sharpe_of(grid_ns: np.ndarray, equity: np.ndarray) -> np.ndarray:
    """vectorbt's Sharpe ratio of each column's equity increments on the grid (capital-free, annualised)."""
    from grinder.report.stats import YEAR_FREQ, quiet_vectorbt

    if equity.shape[0] < 3:
        return np.full(equity.shape[1], np.nan)
    step_ns = int(np.median(np.diff(grid_ns)))
    # Increments over a constant unit capital: no compounding, so the ratio does not depend on capital.
    inc = np.ascontiguousarray(np.diff(equity, axis=0), np.float64)
    with quiet_vectorbt():
        from vectorbt.returns.nb import sharpe_ratio_nb

    # The kernel behind `.vbt.returns(freq, year_freq).sharpe_ratio()`, with its annualisation factor
    # (year / step), without building an indexed frame, which costs more than the ratios (decision 031).
    return sharpe_ratio_nb(inc, pd.Timedelta(YEAR_FREQ) / pd.Timedelta(step_ns, "ns"))


def run_study(
    sel: Selection,
    grid: Grid,
    windows: list[Window],
    venue: VenueConfig,
    gates: GateConfig | None = None,
    latency: LatencySeries | None = None,
    rank_by: str = "equity",
    workers: int | None = None,
    load: Callable[[Selection, Window], Tape] | None = None,
    progress: Callable[[str, int, int], None] | None = None,
    client=None,
    rules_ok: bool = False,
) -> StudyResult:
    """Run the grid over each window; rank sets by `rank_by` out of sample (in sample if no test window).

    With a dask.distributed `client` the parameter sets go to its workers in chunks
    (`grinder.sweep.cluster`); the results are the same as a local run's. With `rules_ok` the sets
    that kept Binance's quantitative rules in every window rank before all the others (see `rank`).
    """
    if rank_by not in RANKABLE:
        raise ConfigError(f"unknown ranking metric {rank_by!r}; choose from {', '.join(RANKABLE)}")
    # Each window's tape and replay, and every set's arrays, reuse freed pages (decision 016; the
    # process keeps its peak memory), Arrow's Parquet buffers included (the default loader keeps
    # them). Not in run_window: Dask workers keep their own trim policy. The backtests do not read
    # the bbo table, so the default loader skips it.
    keep_freed_memory()
    load = load or (lambda s, w: load_tape(s.root, s.venue, s.symbol, w.start_ns, w.end_ns, cache=s.cache,
                                           release_buffers=False, bbo=False))  # fmt: skip
    frames, curves = [], {}
    for w in windows:
        if client is not None:
            from grinder.sweep.cluster import run_window_on_cluster

            run = run_window_on_cluster(client, sel, w, grid, venue, gates or GateConfig())
        else:
            tape = load(sel, w)
            if len(tape) == 0:
                raise DataError(f"window {w.name} [{w.start_ns}, {w.end_ns}) holds no events")
            cb = (lambda d, n, name=w.name: progress(name, d, n)) if progress else None
            replay = prepare(tape, venue, cache_root(sel.root)) if sel.cache else None
            run = run_window(tape, grid.strategy, grid.sets, venue, gates, start_ns=w.start_ns, latency=latency,
                             replay=replay, workers=workers, progress=cb)  # fmt: skip
            del tape
        frames.append(_window_frame(w, grid, run))
        curves[w.name] = (run.grid_ns, run.equity)
    results = pd.concat(frames, ignore_index=True)
    return StudyResult(results, rank(results, list(grid.axes), rank_by, rules_ok), rank_by, curves)


def _window_frame(w: Window, grid: Grid, run) -> pd.DataFrame:
    """The results rows of one window: set, window, swept values, metrics, Sharpe and return over drawdown."""
    n = len(grid.sets)
    col = {k: [r[k] for r in run.rows] for k in run.rows[0]}
    equity, drawdown = np.asarray(col["equity"], np.float64), np.asarray(col["max_drawdown"], np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        rod = np.where(drawdown > 0, equity / drawdown, np.nan)
    # One constructor for the whole frame: inserting column by column costs more than the ranking.
    head = {"set": np.arange(n), "window": [w.name] * n, "sample": [w.sample] * n,
            "start_ns": np.full(n, w.start_ns, np.int64), "end_ns": np.full(n, w.end_ns, np.int64),
            "events": col.pop("events")}  # fmt: skip
    axes = {name: [getattr(p, name) for p in grid.sets] for name in grid.axes}
    tail = {"sharpe": sharpe_of(run.grid_ns, run.equity), "return_over_drawdown": rod}
    return pd.DataFrame({**head, **axes, **col, **tail})


def rank(results: pd.DataFrame, axes: list[str], rank_by: str, rules_ok: bool = False) -> pd.DataFrame:
    """One row per set: swept values, in-sample and out-of-sample means of every metric, and its rank.

    Each quantitative rule's worst value over all the set's windows is a `qr_<metric>_max` column, and
    `rules_ok` says whether the set kept every rule in every window (None: not tracked). With
    `rules_ok=True` those sets are ranked first and the ones that breached follow, marked False.
    """
    metrics = [m for m in RANKABLE if m in results]
    sets, inverse = np.unique(results["set"].to_numpy(), return_inverse=True)
    first = np.full(len(sets), len(results))
    np.minimum.at(first, inverse, np.arange(len(results)))
    out = {"set": sets, **{a: results[a].to_numpy()[first] for a in axes}}
    sample = results["sample"].to_numpy()
    has_out = bool((sample == "out").any())
    for m in metrics:
        v = results[m].to_numpy(np.float64)
        for s in sorted(set(sample.tolist())):
            # The mean of each set's rows in this sample, NaN and inf left out (NaN when it has none):
            # a Sharpe ratio of inf (a flat or constant equity) must not rank first.
            keep = (sample == s) & np.isfinite(v)
            total = np.bincount(inverse[keep], v[keep], len(sets))
            count = np.bincount(inverse[keep], None, len(sets))
            with np.errstate(divide="ignore", invalid="ignore"):
                out[f"{m}_{s}"] = total / count
    key = f"{rank_by}_{'out' if has_out else 'in'}"
    breach = _rules_columns(results, inverse, len(sets), out)
    if rules_ok and breach is None:
        raise ConfigError("--rules-ok: the backtests recorded no quantitative-rules series to rank by")
    # Best first, NaN (no finite value) last (lexsort puts NaN last, and negating keeps it NaN); ties: the lower set
    # number first, so rankings are deterministic. One constructor: sorting a frame costs more.
    keys = (sets, out[key] if rank_by in LOWER_IS_BETTER else -out[key])
    order = np.lexsort((*keys, breach) if rules_ok else keys)
    ranked = pd.DataFrame({"rank": np.arange(1, len(sets) + 1), **{k: np.asarray(v)[order] for k, v in out.items()}})
    ranked.attrs["rank_key"] = key
    ranked.attrs["rules_ok"] = rules_ok
    return ranked


def _rules_columns(results: pd.DataFrame, inverse: np.ndarray, n: int, out: dict) -> np.ndarray | None:
    """Add each set's worst quantitative-rule values and its rules_ok to `out`; returns 1 where a set
    breached (None when some backtest tracked no rules)."""
    for c in QR_COLUMNS[:-1]:
        if c in results:
            worst = np.full(n, np.nan)
            np.fmax.at(worst, inverse, results[c].to_numpy(np.float64))
            out[c] = worst
    if "rules_ok" not in results:
        return None
    flags = results["rules_ok"].to_numpy(object)
    known = np.array([isinstance(f, bool | np.bool_) for f in flags], bool)
    bad = np.array([f is not None and not f for f in flags], bool) & known
    unknown = np.bincount(inverse[~known], None, n) > 0
    breach = (np.bincount(inverse[bad], None, n) > 0).astype(np.int8)
    out["rules_ok"] = np.array([None if u else not b for u, b in zip(unknown, breach, strict=True)], object)
    return None if unknown.any() else breach
