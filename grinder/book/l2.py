"""A price-level (L2) order book as flat arrays, with numba kernels to update and read it.

Two tiers per side. Levels within a *window* of `W` ticks around the market live in a dense
array indexed by tick, so an update, a lookup and the best price cost O(1) (after removing the
best level, the next one is found by scanning the few ticks below it). Levels outside the window
(Binance diff streams touch prices from 1% to 1000% of the mid) live in a sorted *overflow*
array: bids keyed by +ticks, asks by -ticks, ascending, so the best overflow level is last.
When the best price comes within W/8 of a window edge, the window is re-centred: levels move
between the tiers in one O(W + overflow) pass, which happens rarely.

State, all numpy arrays (see `new_book`):
  hdr int64[8]: base tick of the window, W, best bid tick, best ask tick, window level counts
                (bid, ask), overflow level counts (bid, ask)
  wq  float64[2, W]: quantity at tick base + i (0 = no level); side 0 bid, 1 ask
  ok  int64[2, cap], oq float64[2, cap]: overflow keys and quantities
Prices are int64 ticks, quantities float64 base units.
"""

from __future__ import annotations

import numpy as np
from numba import njit

BID = 0
ASK = 1
EMPTY = np.iinfo(np.int64).min

H_BASE, H_W, H_BEST, H_WN, H_ON = 0, 1, 2, 4, 6  # header offsets (best and counts take 2 slots: bid, ask)


def new_book(window: int = 1 << 15, overflow: int = 4096):
    """An empty book: (hdr, wq, ok, oq). `window` ticks are held densely; the rest in overflow."""
    hdr = np.zeros(8, np.int64)
    hdr[H_W] = window
    hdr[H_BEST] = EMPTY
    hdr[H_BEST + 1] = EMPTY
    hdr[H_BASE] = EMPTY  # placed around the first level that arrives
    return hdr, np.zeros((2, window)), np.zeros((2, overflow), np.int64), np.zeros((2, overflow))


@njit(cache=True, inline="always")
def side_index(side_code: int) -> int:
    """Book row side code (+1 bid, -1 ask) to array index (0 bid, 1 ask)."""
    return 0 if side_code > 0 else 1


@njit(cache=True)
def _ofind(keys, n, key):
    lo, hi = 0, n
    while lo < hi:
        mid = (lo + hi) >> 1
        if keys[mid] < key:
            lo = mid + 1
        else:
            hi = mid
    return lo


@njit(cache=True)
def _oset(hdr, ok, oq, s, p, q):
    """Set a level in the overflow tier; 1 if it is full, else 0."""
    key = p if s == BID else -p
    k = ok[s]
    qs = oq[s]
    m = hdr[H_ON + s]
    i = _ofind(k, m, key)
    if i < m and k[i] == key:
        if q > 0.0:
            qs[i] = q
        else:
            for j in range(i, m - 1):
                k[j] = k[j + 1]
                qs[j] = qs[j + 1]
            hdr[H_ON + s] = m - 1
        return 0
    if q <= 0.0:
        return 0
    if m == k.shape[0]:
        return 1
    for j in range(m, i, -1):
        k[j] = k[j - 1]
        qs[j] = qs[j - 1]
    k[i] = key
    qs[i] = q
    hdr[H_ON + s] = m + 1
    return 0


@njit(cache=True)
def _oget(hdr, ok, oq, s, p):
    key = p if s == BID else -p
    m = hdr[H_ON + s]
    i = _ofind(ok[s], m, key)
    if i < m and ok[s, i] == key:
        return oq[s, i]
    return 0.0


@njit(cache=True)
def _obest(hdr, ok, s):
    m = hdr[H_ON + s]
    if m == 0:
        return EMPTY
    k = ok[s, m - 1]
    return k if s == BID else -k


@njit(cache=True)
def _find_best(hdr, wq, ok, s, start_idx):
    """Best tick of side s, scanning the window from start_idx away from the market, then overflow."""
    w = hdr[H_W]
    best = EMPTY
    if hdr[H_WN + s] > 0:
        if s == BID:
            i = min(start_idx, w - 1)
            while i >= 0:
                if wq[0, i] > 0.0:
                    best = hdr[H_BASE] + i
                    break
                i -= 1
        else:
            i = max(start_idx, 0)
            while i < w:
                if wq[1, i] > 0.0:
                    best = hdr[H_BASE] + i
                    break
                i += 1
    if best == EMPTY:
        return _obest(hdr, ok, s)
    ob = _obest(hdr, ok, s)
    # Overflow levels are outside the window, but can still be better after a recentre moved it.
    if ob != EMPTY and ((s == BID and ob > best) or (s == ASK and ob < best)):
        return ob
    return best


@njit(cache=True)
def _recentre(hdr, wq, ok, oq, centre):
    """Move the window to centre on `centre`; returns 1 if overflow filled up (caller grows, retries)."""
    w = hdr[H_W]
    new_base = centre - w // 2
    old_base = hdr[H_BASE]
    # All or nothing: make sure the levels leaving the window fit in overflow before moving any.
    if old_base != EMPTY:
        for s in range(2):
            leaving = 0
            for i in range(w):
                if wq[s, i] > 0.0:
                    p = old_base + i
                    if p < new_base or p >= new_base + w:
                        leaving += 1
            if hdr[H_ON + s] + leaving > ok.shape[1]:
                return 1
    # Window levels that fall outside the new window go to overflow.
    if old_base != EMPTY:
        for s in range(2):
            for i in range(w):
                q = wq[s, i]
                if q > 0.0:
                    p = old_base + i
                    if p < new_base or p >= new_base + w:
                        if _oset(hdr, ok, oq, s, p, q) == 1:
                            return 1
    shifted = np.zeros((2, w))
    if old_base != EMPTY:
        for s in range(2):
            for i in range(w):
                q = wq[s, i]
                if q > 0.0:
                    j = old_base + i - new_base
                    if 0 <= j < w:
                        shifted[s, j] = q
    # Overflow levels inside the new window come back.
    for s in range(2):
        m = hdr[H_ON + s]
        keep = 0
        for i in range(m):
            key = ok[s, i]
            p = key if s == BID else -key
            j = p - new_base
            if 0 <= j < w:
                shifted[s, j] = oq[s, i]
            else:
                ok[s, keep] = key
                oq[s, keep] = oq[s, i]
                keep += 1
        hdr[H_ON + s] = keep
    wq[:, :] = shifted
    hdr[H_BASE] = new_base
    for s in range(2):
        c = 0
        for i in range(w):
            if wq[s, i] > 0.0:
                c += 1
        hdr[H_WN + s] = c
    return 0


@njit(cache=True)
def set_level(hdr, wq, ok, oq, s, price_ticks, q):
    """Set the quantity at a level (q == 0 deletes it); returns 1 if overflow is full, else 0."""
    if hdr[H_BASE] == EMPTY:
        if q <= 0.0:
            return 0
        if _recentre(hdr, wq, ok, oq, price_ticks) == 1:
            return 1
    w = hdr[H_W]
    base = hdr[H_BASE]
    idx = price_ticks - base
    if 0 <= idx < w:
        old = wq[s, idx]
        wq[s, idx] = q if q > 0.0 else 0.0
        if old > 0.0 and q <= 0.0:
            hdr[H_WN + s] -= 1
        elif old <= 0.0 and q > 0.0:
            hdr[H_WN + s] += 1
    elif _oset(hdr, ok, oq, s, price_ticks, q) == 1:
        return 1
    best = hdr[H_BEST + s]
    if q > 0.0:
        if best == EMPTY or (s == BID and price_ticks > best) or (s == ASK and price_ticks < best):
            hdr[H_BEST + s] = price_ticks
    elif price_ticks == best:
        start = price_ticks - base - 1 if s == BID else price_ticks - base + 1
        hdr[H_BEST + s] = _find_best(hdr, wq, ok, s, start)
    # Keep the market well inside the window.
    b = hdr[H_BEST + s]
    if b != EMPTY:
        j = b - hdr[H_BASE]
        if j < w // 8 or j >= w - w // 8:
            if _recentre(hdr, wq, ok, oq, b) == 1:
                return 1
            hdr[H_BEST] = _find_best(hdr, wq, ok, BID, w - 1)
            hdr[H_BEST + 1] = _find_best(hdr, wq, ok, ASK, 0)
    return 0


@njit(cache=True)
def clear_side(hdr, wq, ok, oq, s):
    """Remove every level of side s."""
    wq[s, :] = 0.0
    hdr[H_WN + s] = 0
    hdr[H_ON + s] = 0
    hdr[H_BEST + s] = EMPTY


@njit(cache=True, inline="always")
def best_ticks(hdr, s):
    """Best price of side s in ticks, or EMPTY."""
    return hdr[H_BEST + s]


@njit(cache=True)
def qty_at(hdr, wq, ok, oq, s, price_ticks):
    """Resting quantity at a price on side s (0 if no level)."""
    if hdr[H_BASE] == EMPTY:
        return 0.0
    idx = price_ticks - hdr[H_BASE]
    if 0 <= idx < hdr[H_W]:
        return wq[s, idx]
    return _oget(hdr, ok, oq, s, price_ticks)


@njit(cache=True)
def best_qty(hdr, wq, ok, oq, s):
    """Quantity at the best level of side s (0 when empty)."""
    b = hdr[H_BEST + s]
    if b == EMPTY:
        return 0.0
    return qty_at(hdr, wq, ok, oq, s, b)


@njit(cache=True)
def n_levels(hdr, s):
    """Number of levels on side s."""
    return hdr[H_WN + s] + hdr[H_ON + s]


@njit(cache=True)
def level(hdr, wq, ok, oq, s, depth):
    """(price ticks, qty) of the depth-th level from the top of side s (0 = best); EMPTY past the end."""
    if hdr[H_BEST + s] == EMPTY:
        return EMPTY, 0.0
    # Levels in price order: overflow levels on the market side of the window (only while the
    # book is crossed or re-centring), then the window, then overflow levels beyond it.
    w = hdr[H_W]
    base = hdr[H_BASE]
    seen = 0
    r = hdr[H_ON + s] - 1
    while r >= 0:
        key = ok[s, r]
        p = key if s == BID else -key
        if (s == BID and p < base + w) or (s == ASK and p >= base):
            break
        if seen == depth:
            return p, oq[s, r]
        seen += 1
        r -= 1
    # No window level is better than the best: start the walk there.
    i = min(hdr[H_BEST + s] - base, w - 1) if s == BID else max(hdr[H_BEST + s] - base, 0)
    step = -1 if s == BID else 1
    while 0 <= i < w:
        if wq[s, i] > 0.0:
            if seen == depth:
                return base + i, wq[s, i]
            seen += 1
        i += step
    while r >= 0:
        if seen == depth:
            key = ok[s, r]
            return (key if s == BID else -key), oq[s, r]
        seen += 1
        r -= 1
    return EMPTY, 0.0


@njit(cache=True)
def grow(ok, oq):
    """Copies of the overflow arrays with twice the capacity."""
    cap = ok.shape[1]
    k2 = np.zeros((2, cap * 2), np.int64)
    q2 = np.zeros((2, cap * 2))
    k2[:, :cap] = ok
    q2[:, :cap] = oq
    return k2, q2


@njit(cache=True)
def apply_row(hdr, wq, ok, oq, kind, side_code, price_ticks, q):
    """Apply one tape book row (kind 0 diff, 1 snapshot level, 2 reset); returns (ok, oq), grown if needed."""
    if kind == 2:
        if side_code >= 0:
            clear_side(hdr, wq, ok, oq, BID)
        if side_code <= 0:
            clear_side(hdr, wq, ok, oq, ASK)
    elif kind <= 1:
        s = BID if side_code > 0 else ASK
        while set_level(hdr, wq, ok, oq, s, price_ticks, q) == 1:
            ok, oq = grow(ok, oq)
    return ok, oq
