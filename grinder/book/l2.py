"""A price-level (L2) order book as flat arrays, with numba kernels to update and read it.

Two tiers per side. Levels within a *window* of `W` ticks around the market live in a dense
array indexed by tick, so an update, a lookup and the best price cost O(1) (after removing the
best level, the next one is found by scanning the few ticks below it). Levels outside the window
(Binance diff streams touch prices far from the mid, though few updates land there: decision 002)
live in an open-addressing *overflow* hash per side, also O(1), which tracks its own best level.
When the best price comes within W/8 of a window edge, the window is re-centred: levels move
between the tiers in one O(W + overflow) pass, which happens rarely.

State, all numpy arrays (see `new_book`):
  hdr int64[12]: base tick of the window, W, best bid/ask tick, window level counts (bid, ask),
                 overflow level counts, overflow tombstone counts, overflow best ticks
  wq  float64[2, W]: quantity at tick base + i (0 = no level); side 0 bid, 1 ask
  ok  int64[2, cap], oq float64[2, cap]: overflow hash slots (price tick or FREE/TOMB), quantities
Prices are int64 ticks, quantities float64 base units.
"""

from __future__ import annotations

import numpy as np
from numba import njit

BID = 0
ASK = 1
EMPTY = np.iinfo(np.int64).min

H_BASE, H_W, H_BEST, H_WN, H_ON, H_OT, H_OB = 0, 1, 2, 4, 6, 8, 10  # offsets; per-side fields take 2 slots
FREE = np.iinfo(np.int64).min + 1  # never-used overflow slot
TOMB = np.iinfo(np.int64).min + 2  # deleted overflow slot (probing continues past it)


def new_book(window: int = 1 << 15, overflow: int = 4096):
    """An empty book: (hdr, wq, ok, oq). `window` ticks are held densely; the rest in overflow."""
    if overflow & (overflow - 1):
        raise ValueError("overflow capacity must be a power of two")
    hdr = np.zeros(12, np.int64)
    hdr[H_W] = window
    hdr[H_BEST : H_BEST + 2] = EMPTY
    hdr[H_OB : H_OB + 2] = EMPTY
    hdr[H_BASE] = EMPTY  # placed around the first level that arrives
    return hdr, np.zeros((2, window)), np.full((2, overflow), FREE, np.int64), np.zeros((2, overflow))


@njit(cache=True, inline="always")
def _hash(p, mask):
    return ((p * -7046029254386353131) >> 17) & mask


@njit(cache=True, inline="always")
def _better(s, a, b):
    """Whether price a is better than price b on side s (EMPTY is worst)."""
    if b == EMPTY:
        return a != EMPTY
    if a == EMPTY:
        return False
    return a > b if s == BID else a < b


@njit(cache=True)
def _orescan_best(hdr, ok, s):
    best = EMPTY
    for i in range(ok.shape[1]):
        p = ok[s, i]
        if p != FREE and p != TOMB and _better(s, p, best):
            best = p
    hdr[H_OB + s] = best


@njit(cache=True)
def _oset(hdr, ok, oq, s, p, q):
    """Set a level in the overflow tier; 1 if the table must grow first, else 0."""
    mask = ok.shape[1] - 1
    i = _hash(p, mask)
    first_free = -1
    while True:
        k = ok[s, i]
        if k == p:
            if q > 0.0:
                oq[s, i] = q
            else:
                ok[s, i] = TOMB
                hdr[H_ON + s] -= 1
                hdr[H_OT + s] += 1
                if p == hdr[H_OB + s]:
                    _orescan_best(hdr, ok, s)
            return 0
        if k == TOMB and first_free < 0:
            first_free = i
        if k == FREE:
            if first_free < 0:
                first_free = i
            break
        i = (i + 1) & mask
    if q <= 0.0:
        return 0
    if ok[s, first_free] == FREE and 2 * (hdr[H_ON + s] + hdr[H_OT + s] + 1) > ok.shape[1]:
        return 1
    if ok[s, first_free] == TOMB:
        hdr[H_OT + s] -= 1
    ok[s, first_free] = p
    oq[s, first_free] = q
    hdr[H_ON + s] += 1
    if _better(s, p, hdr[H_OB + s]):
        hdr[H_OB + s] = p
    return 0


@njit(cache=True)
def _oget(hdr, ok, oq, s, p):
    mask = ok.shape[1] - 1
    i = _hash(p, mask)
    while True:
        k = ok[s, i]
        if k == p:
            return oq[s, i]
        if k == FREE:
            return 0.0
        i = (i + 1) & mask


@njit(cache=True, inline="always")
def _obest(hdr, ok, s):
    return hdr[H_OB + s]


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
    """Move the window to centre on `centre`; returns 1 if overflow must grow first (nothing changed)."""
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
            if 2 * (hdr[H_ON + s] + hdr[H_OT + s] + leaving) > ok.shape[1]:
                return 1
    shifted = np.zeros((2, w))
    for s in range(2):
        # Overflow levels inside the new window come back (their slots become tombstones).
        for i in range(ok.shape[1]):
            p = ok[s, i]
            if p != FREE and p != TOMB and new_base <= p < new_base + w:
                shifted[s, p - new_base] = oq[s, i]
                ok[s, i] = TOMB
                hdr[H_ON + s] -= 1
                hdr[H_OT + s] += 1
        # Window levels stay (shifted) or leave for overflow.
        if old_base != EMPTY:
            for i in range(w):
                q = wq[s, i]
                if q > 0.0:
                    p = old_base + i
                    j = p - new_base
                    if 0 <= j < w:
                        shifted[s, j] = q
                    else:
                        _oset(hdr, ok, oq, s, p, q)
        _orescan_best(hdr, ok, s)
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
    """Set the quantity at a level (q == 0 deletes it); returns 1 if overflow is full, else 0.

    grinder.sim.replay._book_pass writes out the in-window branch; tests/sim/test_replay.py holds
    the two to the same results, but change both together.
    """
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
    ok[s, :] = FREE
    hdr[H_WN + s] = 0
    hdr[H_ON + s] = 0
    hdr[H_OT + s] = 0
    hdr[H_OB + s] = EMPTY
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
def _overflow_sorted(ok, oq, s):
    """Overflow levels of side s, best first (allocates; for the rare deep look-ups)."""
    n = 0
    for i in range(ok.shape[1]):
        if ok[s, i] != FREE and ok[s, i] != TOMB:
            n += 1
    px = np.empty(n, np.int64)
    qs = np.empty(n)
    n = 0
    for i in range(ok.shape[1]):
        if ok[s, i] != FREE and ok[s, i] != TOMB:
            px[n] = ok[s, i]
            qs[n] = oq[s, i]
            n += 1
    order = np.argsort(-px) if s == BID else np.argsort(px)
    return px[order], qs[order]


@njit(cache=True)
def level(hdr, wq, ok, oq, s, depth):
    """(price ticks, qty) of the depth-th level from the top of side s (0 = best); EMPTY past the end."""
    if hdr[H_BEST + s] == EMPTY:
        return EMPTY, 0.0
    w = hdr[H_W]
    base = hdr[H_BASE]
    # Walk the window from the best outwards; overflow levels are merged in price order.
    opx, oqs = _overflow_sorted(ok, oq, s) if hdr[H_ON + s] > 0 else (np.empty(0, np.int64), np.empty(0))
    r = 0
    seen = 0
    i = min(hdr[H_BEST + s] - base, w - 1) if s == BID else max(hdr[H_BEST + s] - base, 0)
    step = -1 if s == BID else 1
    while 0 <= i < w:
        if wq[s, i] > 0.0:
            p = base + i
            while r < opx.shape[0] and _better(s, opx[r], p):
                if seen == depth:
                    return opx[r], oqs[r]
                seen += 1
                r += 1
            if seen == depth:
                return p, wq[s, i]
            seen += 1
        i += step
    while r < opx.shape[0]:
        if seen == depth:
            return opx[r], oqs[r]
        seen += 1
        r += 1
    return EMPTY, 0.0


@njit(cache=True)
def grow(hdr, ok, oq):
    """New overflow arrays with twice the capacity, entries rehashed and tombstones dropped."""
    cap = ok.shape[1] * 2
    k2 = np.full((2, cap), FREE, np.int64)
    q2 = np.zeros((2, cap))
    for s in range(2):
        hdr[H_ON + s] = 0
        hdr[H_OT + s] = 0
        for i in range(ok.shape[1]):
            p = ok[s, i]
            if p != FREE and p != TOMB:
                _oset(hdr, k2, q2, s, p, oq[s, i])
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
            ok, oq = grow(hdr, ok, oq)
    return ok, oq


@njit(cache=True)
def top_levels(hdr, wq, ok, oq, s, out_px, out_qty):
    """The first len(out_px) levels of side s, best first, into out_px (ticks) and out_qty; returns how
    many there are (at most len(out_px)). One walk: what `level` gives for depths 0, 1, ... in turn."""
    n = out_px.shape[0]
    if n == 0 or hdr[H_BEST + s] == EMPTY:
        return 0
    w = hdr[H_W]
    base = hdr[H_BASE]
    opx, oqs = _overflow_sorted(ok, oq, s) if hdr[H_ON + s] > 0 else (np.empty(0, np.int64), np.empty(0))
    r = 0
    k = 0
    i = min(hdr[H_BEST + s] - base, w - 1) if s == BID else max(hdr[H_BEST + s] - base, 0)
    step = -1 if s == BID else 1
    while 0 <= i < w and k < n:
        if wq[s, i] > 0.0:
            p = base + i
            while r < opx.shape[0] and k < n and _better(s, opx[r], p):
                out_px[k], out_qty[k] = opx[r], oqs[r]
                k += 1
                r += 1
            if k < n:
                out_px[k], out_qty[k] = p, wq[s, i]
                k += 1
        i += step
    while r < opx.shape[0] and k < n:
        out_px[k], out_qty[k] = opx[r], oqs[r]
        k += 1
        r += 1
    return k
