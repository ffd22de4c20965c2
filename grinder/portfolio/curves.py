"""Equity curves of several backtests on one time grid: the grid, last-value-carried-forward alignment, drawdown."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numba import njit

from grinder.errors import ConfigError, DataError


def common_grid(ts_list: Sequence[np.ndarray], step_ns: int) -> np.ndarray:
    """Times (ns) every `step_ns` from the latest first time to the earliest last time of the series."""
    step_ns = int(step_ns)
    if step_ns <= 0:
        raise ConfigError(f"step_ns must be positive, got {step_ns}")
    if not ts_list or any(len(ts) == 0 for ts in ts_list):
        raise DataError("common_grid needs at least one series, none of them empty")
    lo = max(int(ts[0]) for ts in ts_list)
    hi = min(int(ts[-1]) for ts in ts_list)
    if hi < lo:
        raise DataError(f"the series do not overlap in time (latest start {lo} > earliest end {hi})")
    return np.arange(lo, hi + 1, step_ns, dtype=np.int64)


def align_equity(
    curves: Sequence[tuple[np.ndarray, np.ndarray]], grid_ns: np.ndarray, before: float = 0.0
) -> np.ndarray:
    """(time x symbol) array of each (ts ns, equity) curve's last finite value at or before each grid time.

    NaN equity (a backtest's steps before it has a mid price) is skipped; grid times before a
    curve's first finite value get `before` (0: a backtest starts flat, having earned nothing).
    """
    grid_ns = np.asarray(grid_ns, np.int64)
    if grid_ns.ndim != 1 or len(grid_ns) == 0:
        raise DataError("grid_ns must be a non-empty 1-D array of ns")
    if (np.diff(grid_ns) <= 0).any():
        raise DataError("grid_ns must increase strictly")
    if not curves:
        raise DataError("align_equity needs at least one (ts, equity) curve")
    out = np.empty((len(grid_ns), len(curves)))
    for j, (ts, eq) in enumerate(curves):  # one vectorised pass per symbol
        ts, eq = np.asarray(ts, np.int64), np.asarray(eq, np.float64)
        if ts.shape != eq.shape or ts.ndim != 1:
            raise DataError(f"curve {j}: ts and equity must be 1-D arrays of one length")
        if (np.diff(ts) < 0).any():
            raise DataError(f"curve {j}: ts are not in time order")
        col = np.empty(len(grid_ns))
        last_finite_at(ts, eq, grid_ns, before, col)
        out[:, j] = col
    return out


@njit(cache=True, nogil=True)
def last_finite_at(ts, eq, grid_ns, before, out):
    """out[k] = eq[i] for the last i with ts[i] <= grid_ns[k] and eq[i] finite, else `before` (ns; both sorted).

    One pass over both series, compiled: a sweep calls it once per parameter set, and its time would
    otherwise be interpreter time, held against the other workers.
    """
    n = ts.shape[0]
    i = -1  # the last finite value at or before the current grid time
    j = 0
    for k in range(grid_ns.shape[0]):
        g = grid_ns[k]
        while j < n and ts[j] <= g:
            if np.isfinite(eq[j]):
                i = j
            j += 1
        out[k] = eq[i] if i >= 0 else before


def drawdown(equity: np.ndarray) -> np.ndarray:
    """Running peak minus equity along the first (time) axis, same units as equity (>= 0)."""
    equity = np.asarray(equity, np.float64)
    return np.maximum.accumulate(equity, axis=0) - equity


def max_drawdown(equity: np.ndarray) -> float:
    """Deepest fall of a 1-D equity curve below its running peak, NaN rows skipped (0 for no values)."""
    return float(_max_drawdown(np.ascontiguousarray(equity, np.float64)))


@njit(cache=True, nogil=True)
def _max_drawdown(eq):
    peak = -np.inf
    deepest = 0.0
    for x in eq:
        if np.isnan(x):
            continue
        peak = max(peak, x)
        d = peak - x  # as drawdown() computes it
        if np.isnan(d):
            return np.nan  # inf - inf, as numpy's max would give
        deepest = max(deepest, d)
    return deepest
