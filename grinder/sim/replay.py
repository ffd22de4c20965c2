"""Market replay, prepared once per tape: everything the event loop needs from the order books.

Market data never depends on our passive orders, so the exchange-side book and the local-side
book evolve the same way in every backtest of a tape. One pass with the L2 book records, per tape
row: the quantity that was at the row's price before it (queue models need it) and the best bid
and ask after it (price-through fills and post-only checks need them); and, per event in local
time order, the best bid and ask the strategy would see. The event loop then runs without any
book, and a sweep shares these read-only arrays across all its parameter sets.

The quantity resting at an arbitrary price at an arbitrary moment (the queue ahead of a new
order) is answered from an index of book rows grouped by (side, price), in row order.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit

from grinder.book.l2 import ASK, BID, apply_row, best_qty, best_ticks, new_book, qty_at
from grinder.data.tape import Tape

# Group key of a (side, price) level in Replay.level_keys: bids carry this bit, asks do not.
SIDE_BIT = np.int64(1) << np.int64(62)


@dataclass(frozen=True)
class Replay:
    """Per-row book facts of a tape (exchange order) and the local side's view (local order)."""

    prev_qty: np.ndarray  # float64: quantity at the row's side and price before the row (book rows)
    best_bid: np.ndarray  # int64 ticks after the row, EMPTY if none (exchange side)
    best_ask: np.ndarray
    local_ts: np.ndarray  # int64 ns: corrected local times, sorted
    local_best_bid: np.ndarray  # int64 ticks after each local event, in local order
    local_best_ask: np.ndarray
    local_best_bid_qty: np.ndarray  # float64 base units at those prices
    local_best_ask_qty: np.ndarray
    level_rows: np.ndarray  # int64: book row indices grouped by (side, price), ascending within a group
    level_keys: np.ndarray  # int64: the group key of each entry of level_rows (SIDE_BIT for bids + price)
    reset_rows: np.ndarray  # int64: indices of reset rows, with reset_sides (+1, -1, 0 both)
    reset_sides: np.ndarray


@njit(cache=True)
def _exchange_pass(kind, side, ticks, qty, hdr, wq, ok, oq):
    n = kind.shape[0]
    prev_q = np.zeros(n)
    bb = np.empty(n, np.int64)
    ba = np.empty(n, np.int64)
    for i in range(n):
        k = kind[i]
        if k <= 1:
            s = BID if side[i] > 0 else ASK
            prev_q[i] = qty_at(hdr, wq, ok, oq, s, ticks[i])
        if k != 3:
            ok, oq = apply_row(hdr, wq, ok, oq, k, side[i], ticks[i], qty[i])
        bb[i] = best_ticks(hdr, BID)
        ba[i] = best_ticks(hdr, ASK)
    return prev_q, bb, ba


@njit(cache=True)
def _local_pass(order, kind, side, ticks, qty, hdr, wq, ok, oq):
    n = order.shape[0]
    bb = np.empty(n, np.int64)
    ba = np.empty(n, np.int64)
    bbq = np.empty(n)
    baq = np.empty(n)
    for j in range(n):
        i = order[j]
        if kind[i] != 3:
            ok, oq = apply_row(hdr, wq, ok, oq, kind[i], side[i], ticks[i], qty[i])
        bb[j] = best_ticks(hdr, BID)
        ba[j] = best_ticks(hdr, ASK)
        bbq[j] = best_qty(hdr, wq, ok, oq, BID)
        baq[j] = best_qty(hdr, wq, ok, oq, ASK)
    return bb, ba, bbq, baq


def prepare_replay(tape: Tape, local_ts: np.ndarray) -> tuple[Replay, np.ndarray]:
    """The Replay of `tape` with the given (corrected) local times, and the local order permutation."""
    prev_q, bb, ba = _exchange_pass(tape.kind, tape.side, tape.price_ticks, tape.qty, *new_book())
    order = np.lexsort((np.arange(len(tape)), local_ts))
    lbb, lba, lbbq, lbaq = _local_pass(order, tape.kind, tape.side, tape.price_ticks, tape.qty, *new_book())
    book_rows = np.flatnonzero(tape.kind <= 1)
    keys = np.where(tape.side[book_rows] > 0, SIDE_BIT, 0) + tape.price_ticks[book_rows]
    g = np.lexsort((book_rows, keys))
    resets = np.flatnonzero(tape.kind == 2)
    rep = Replay(
        prev_q,
        bb,
        ba,
        local_ts[order],
        lbb,
        lba,
        lbbq,
        lbaq,
        book_rows[g],
        keys[g],
        resets,
        tape.side[resets].astype(np.int64),
    )
    return rep, order


@njit(cache=True)
def qty_before(level_rows, level_keys, reset_rows, reset_sides, qty, side_code, price_ticks, row):
    """Quantity resting at (side, price) once rows [0, row) have been applied."""
    key = (SIDE_BIT if side_code > 0 else 0) + price_ticks
    lo = np.searchsorted(level_keys, key, "left")
    hi = np.searchsorted(level_keys, key, "right")
    if lo == hi:
        return 0.0
    # The last row at this level before `row`.
    j = lo + np.searchsorted(level_rows[lo:hi], row, "left") - 1
    if j < lo:
        return 0.0
    last = level_rows[j]
    # A reset of this side after that row clears the level.
    r = np.searchsorted(reset_rows, row, "left") - 1
    while r >= 0 and reset_rows[r] > last:
        if reset_sides[r] == 0 or (reset_sides[r] > 0) == (side_code > 0):
            return 0.0
        r -= 1
    return qty[last]
