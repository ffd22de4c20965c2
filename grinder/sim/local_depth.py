"""The local book's first levels at each decision: what `depth` shows a kernel and the L2 guard in a backtest.

One pass over the tape's book rows in local order (the order the strategy's process receives them)
into a `grinder.book.l2` book, the same book live keeps, reading `grinder.core.depth.fill_depth` at
each decision of the clock once the rows that arrived by then are applied. Computed once per tape,
clock and level count (sweeps share it, as they share `clock.local_at_decisions`); only when a
strategy or the guard reads depth.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from grinder.book.l2 import apply_row, new_book
from grinder.core.depth import fill_depth
from grinder.data.tape import EV_TRADE


@njit(cache=True)
def _pass(order, kind, side, ticks, qty, events, out, hdr, wq, ok, oq):
    j = 0
    n = order.shape[0]
    for k in range(events.shape[0]):
        while j < events[k] and j < n:
            r = order[j]
            if kind[r] != EV_TRADE:
                ok, oq = apply_row(hdr, wq, ok, oq, kind[r], side[r], ticks[r], qty[r])
            j += 1
        fill_depth(hdr, wq, ok, oq, out[k])


def depth_at_decisions(tape, local_ts: np.ndarray, events: np.ndarray, n_levels: int) -> np.ndarray:
    """float64 [decisions, n_levels, 4]: the local book's first `n_levels` levels a side (grinder.core.depth's
    layout) at each decision, where events[k] local events (rows in order of `local_ts`, the corrected
    local times, stable) have arrived by decision k (`clock.local_at_decisions`' first column)."""
    local_ts = np.asarray(local_ts)
    if len(local_ts) > 1 and (np.diff(local_ts) < 0).any():
        order = np.argsort(local_ts, kind="stable").astype(np.int64)
    else:
        order = np.arange(len(local_ts), dtype=np.int64)
    out = np.zeros((len(events), n_levels, 4))
    c = np.ascontiguousarray
    _pass(order, c(tape.kind), c(tape.side), c(tape.price_ticks), c(tape.qty), c(events, np.int64), out, *new_book())
    return out
