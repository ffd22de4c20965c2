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
