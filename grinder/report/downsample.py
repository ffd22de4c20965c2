"""Thin long series for plotting: keep each bucket's min and max so spikes survive; sample markers evenly."""

from __future__ import annotations

import numpy as np


def minmax_indices(values: np.ndarray, max_points: int) -> np.ndarray:
    """Sorted row indices to plot: all rows if few, else first, last and each bucket's min and max row."""
    n = len(values)
    if n <= max_points:
        return np.arange(n)
    buckets = max((max_points - 2) // 2, 1)
    width = -(-n // buckets)
    buckets = -(-n // width)
    v = np.asarray(values, dtype=np.float64)
    pad = buckets * width - n
    nan = np.isnan(v)
    # NaN and padding never win unless a whole bucket is NaN; then its first row is kept (a gap).
    lo = np.concatenate([np.where(nan, np.inf, v), np.full(pad, np.inf)]).reshape(buckets, width)
    hi = np.concatenate([np.where(nan, -np.inf, v), np.full(pad, -np.inf)]).reshape(buckets, width)
    start = np.arange(buckets) * width
    picks = np.concatenate([[0, n - 1], start + lo.argmin(axis=1), start + hi.argmax(axis=1)])
    return np.unique(np.minimum(picks, n - 1))


def even_indices(n: int, k: int) -> np.ndarray:
    """At most k row indices spread evenly over n rows (all of them when n <= k)."""
    if n <= k:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, k).round().astype(np.int64))


def change_indices(values: np.ndarray) -> np.ndarray:
    """Sorted row indices of a step series that draw the same step line ("hv"): the first and last row, every
    row whose value differs from the row before (NaN equals NaN), and the last row before a gap (NaN), where
    the line ends."""
    v = np.asarray(values, dtype=np.float64)
    n = len(v)
    if n <= 2:
        return np.arange(n)
    prev, cur = v[:-1], v[1:]
    changed = np.flatnonzero((prev != cur) & ~(np.isnan(prev) & np.isnan(cur)))
    before_gap = changed[np.isnan(cur[changed])]
    return np.unique(np.concatenate([[0], changed + 1, before_gap, [n - 1]]))
