"""The book's first levels as a strategy kernel and the L2 execution guard see them (`depth`).

`depth` is float64 [N, 4]: per level from the touch outwards, the bid's price (ticks) and quantity
and the ask's price (ticks) and quantity, in columns BID_TICKS, BID_QTY, ASK_TICKS, ASK_QTY. A level
a side does not have has quantity 0 and price NaN. N is the most levels anyone reading it asked for:
the strategy (`Strategy.depth_levels`) or the guard (`GateConfig.taker_guard_levels`); 0 when none.

The backtest fills it with `fill_depth` from its `grinder.book.l2` replay of the local book at every
decision (grinder.sim.local_depth); live with `depth_from_levels` from the venue's book as ccxt keeps
it (price and quantity lists, best first). tests/sim/test_local_depth.py holds both to the same array
for the same book. Prices in ticks as float64 (exact below 2**53), quantities in base units
(contracts for inverse contracts).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from grinder.book.l2 import ASK, BID, top_levels

BID_TICKS, BID_QTY, ASK_TICKS, ASK_QTY = 0, 1, 2, 3
MAX_DEPTH_LEVELS = 100


@njit(cache=True)
def fill_depth(hdr, wq, ok, oq, out):
    """Write the book's first out.shape[0] levels a side into `out` ([N, 4], the layout above)."""
    n = out.shape[0]
    px = np.empty(n, np.int64)
    q = np.empty(n)
    for s in (BID, ASK):
        col = BID_TICKS if s == BID else ASK_TICKS
        k = top_levels(hdr, wq, ok, oq, s, px, q)
        for i in range(n):
            if i < k:
                out[i, col] = px[i]
                out[i, col + 1] = q[i]
            else:
                out[i, col] = np.nan
                out[i, col + 1] = 0.0


def depth_from_levels(bids, asks, tick: float, out: np.ndarray) -> np.ndarray:
    """`out` ([N, 4]) filled from a book's sides as (price, quantity, ...) rows, best first (ccxt's order
    book: quote per base), prices rounded to ticks of `tick`; returns `out`."""
    n = out.shape[0]
    for side, col in ((bids, BID_TICKS), (asks, ASK_TICKS)):
        k = min(n, len(side))
        for i in range(k):
            out[i, col] = round(float(side[i][0]) / tick)
            out[i, col + 1] = float(side[i][1])
        out[k:, col] = np.nan
        out[k:, col + 1] = 0.0
    return out


def needed_levels(strategy_levels: int, gates) -> int:
    """Levels the drivers fill: the strategy's, or the L2 execution guard's when it is on (the larger)."""
    guard = 0
    if gates is not None and (gates.taker_max_slippage_bps > 0 or gates.taker_max_depth_share > 0):
        guard = int(gates.taker_guard_levels)
    return max(int(strategy_levels), guard)
