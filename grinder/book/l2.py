"""A price-level (L2) order book as flat arrays, with numba kernels to update and read it.

Layout: ``keys[s, :n[s]]`` holds the levels of side ``s`` (0 = bid, 1 = ask) sorted ascending
so that the best level is last: bids store the price in ticks, asks store minus the price in
ticks. ``qty[s, i]`` is the resting quantity (base units) at that level. Updates near the top of
the book, by far the most common, therefore move only a few elements. All prices are int64
ticks; quantities float64.
"""

from __future__ import annotations

import numpy as np
from numba import njit

BID = 0
ASK = 1
EMPTY = np.iinfo(np.int64).min


def new_book(capacity: int = 4096) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """An empty book: (keys int64[2, cap], qty float64[2, cap], n int64[2])."""
    return (
        np.zeros((2, capacity), np.int64),
        np.zeros((2, capacity), np.float64),
        np.zeros(2, np.int64),
    )


@njit(cache=True, inline="always")
def side_index(side_code: int) -> int:
    """Book row side code (+1 bid, -1 ask) to array index (0 bid, 1 ask)."""
    return 0 if side_code > 0 else 1


@njit(cache=True)
def _find(keys: np.ndarray, n: int, key: int) -> int:
    """Index of the first element >= key among keys[:n] (binary search)."""
    lo, hi = 0, n
    while lo < hi:
        mid = (lo + hi) >> 1
        if keys[mid] < key:
            lo = mid + 1
        else:
            hi = mid
    return lo


@njit(cache=True)
def set_level(keys: np.ndarray, qty: np.ndarray, n: np.ndarray, s: int, price_ticks: int, q: float) -> int:
    """Set the quantity at a level (q == 0 deletes it); returns 1 if the book is full, else 0."""
    key = price_ticks if s == BID else -price_ticks
    k = keys[s]
    m = n[s]
    i = _find(k, m, key)
    if i < m and k[i] == key:
        if q > 0.0:
            qty[s, i] = q
        else:
            k[i : m - 1] = k[i + 1 : m].copy()
            qty[s, i : m - 1] = qty[s, i + 1 : m].copy()
            n[s] = m - 1
        return 0
    if q <= 0.0:
        return 0
    if m == k.shape[0]:
        return 1
    k[i + 1 : m + 1] = k[i:m].copy()
    qty[s, i + 1 : m + 1] = qty[s, i:m].copy()
    k[i] = key
    qty[s, i] = q
    n[s] = m + 1
    return 0


@njit(cache=True)
def clear_side(n: np.ndarray, s: int) -> None:
    """Remove every level of side s."""
    n[s] = 0


@njit(cache=True)
def best_ticks(keys: np.ndarray, n: np.ndarray, s: int) -> int:
    """Best price of side s in ticks, or EMPTY."""
    if n[s] == 0:
        return EMPTY
    k = keys[s, n[s] - 1]
    return k if s == BID else -k


@njit(cache=True)
def best_qty(qty: np.ndarray, n: np.ndarray, s: int) -> float:
    """Quantity at the best level of side s (0 when empty)."""
    if n[s] == 0:
        return 0.0
    return qty[s, n[s] - 1]


@njit(cache=True)
def qty_at(keys: np.ndarray, qty: np.ndarray, n: np.ndarray, s: int, price_ticks: int) -> float:
    """Resting quantity at a price on side s (0 if no level)."""
    key = price_ticks if s == BID else -price_ticks
    i = _find(keys[s], n[s], key)
    if i < n[s] and keys[s, i] == key:
        return qty[s, i]
    return 0.0


@njit(cache=True)
def level(keys: np.ndarray, qty: np.ndarray, n: np.ndarray, s: int, depth: int) -> tuple[int, float]:
    """(price ticks, qty) of the depth-th level from the top of side s (0 = best); EMPTY past the end."""
    if depth >= n[s]:
        return EMPTY, 0.0
    i = n[s] - 1 - depth
    k = keys[s, i]
    return (k if s == BID else -k), qty[s, i]


@njit(cache=True)
def grow(keys: np.ndarray, qty: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Copies of the book arrays with twice the capacity."""
    cap = keys.shape[1]
    k2 = np.zeros((2, cap * 2), np.int64)
    q2 = np.zeros((2, cap * 2), np.float64)
    k2[:, :cap] = keys
    q2[:, :cap] = qty
    return k2, q2
