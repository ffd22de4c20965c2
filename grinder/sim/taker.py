"""Taker orders (IOC, market) against the exchange side's book: a walk over its levels, best first.

A buy takes asks upward from the best ask, a sell takes bids downward from the best bid, each level
at its own price and for at most what rests there, until the order is filled, the next level is
beyond its limit, or the side has no more depth. The book walked is the exchange side's just before
market row `row` (rows [0, row) applied, as `replay.qty_before` answers): the replay's
(side, price) level index is read directly and no book is built. Ask keys in `level_ukeys` ascend
with price below SIDE_BIT and bid keys ascend with price from it, so the walk is a run over
consecutive keys from the touch; a chunk's starting book (`init_keys`, `init_qty`: levels no row of
the chunk touches) is merged in key order.

The replay's book never holds our orders, and it moves on only with the tape. Depth that our own
fills took stays taken while the book state lasts: the caller owns a small table of (level key,
quantity taken) for the current state, each walk subtracts it from what it sees and adds its own
takes to it, and the caller empties it (count 0) when the next market row is applied. hftbacktest
2.4.4's PartialFillExchange walks an IOC the same way (every price from the touch to the limit
inclusive, min(depth, left) at each) but subtracts nothing: an empty table before every walk gives
its rule. Its NoPartialFillExchange does not walk: the whole quantity fills at the touch.

Float dust: a level whose visible quantity (resting minus taken) is at most DUST of what rests there
counts as empty, and a level whose leftover after a take would be that small counts as used up (the
table records all of it), so rounding never leaves a sliver for the next walk; an order whose
remainder is at most DUST of its quantity is done, so no sliver fill is written either. Fills never
exceed the quantity wanted. Lots are the caller's: it rounds the order first and each fill after.

Prices are int64 ticks, quantities float64 base units (contracts for inverse instruments).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from grinder.book.l2 import EMPTY
from grinder.sim.replay import SIDE_BIT, _first_at_or_after, level_key, qty_at_cursor

# Limit prices of market orders: a buy's limit is above every ask, a sell's below every bid.
MARKET_BUY = np.iinfo(np.int64).max
MARKET_SELL = np.iinfo(np.int64).min
# How a walk ended (walk_book's third result).
TAKE_FILLED = 0  # the whole quantity wanted is filled (up to DUST)
TAKE_EXHAUSTED = 1  # no more visible depth within the limit (or no touch): an IOC's rest expires
TAKE_OUT_FULL = 2  # out_px / out_qty are full and depth within the limit remains
TAKE_TABLE_FULL = 3  # the consumed-depth table has no room for another level (commit=True only)
DUST = 1e-12  # a quantity at most this share of its whole counts as zero (module docstring)
# The most levels one taker order takes in the backtest engine: the rest of it expires, counted as
# `walk_capped` (grinder.sim.records). The response bus holds one message per level taken.
WALK_LEVELS = 128
# Levels one book state's walks may take together (the consumed-depth table of the engine).
TAKEN_LEVELS = 4 * WALK_LEVELS


@njit(cache=True)
def touch_before(best_bid, best_ask, side, row):
    """The best price a taker on `side` (+1 buy, -1 sell) meets before market row `row`, in ticks: the
    best ask after row - 1 for a buy, the best bid for a sell (`Replay.best_bid`, `best_ask`); EMPTY
    at row 0 (a whole tape starts empty) and when that side is empty or the book is unsynced."""
    if row <= 0:
        return EMPTY
    return best_ask[row - 1] if side > 0 else best_bid[row - 1]


@njit(cache=True)
def walk_book(level_rows, level_ukeys, level_starts, reset_rows, reset_sides, qty, init_keys, init_qty, row, side,
              touch, limit, want, cons_key, cons_qty, cons_n, out_px, out_qty, out_avail, commit):  # fmt: skip
    """Fill `want` (base units) of a taker order on `side` (+1 buy, -1 sell) with limit `limit`
    (ticks, inclusive; MARKET_BUY / MARKET_SELL for a market order) against the exchange book just
    before market row `row`; returns (levels written, quantity filled, TAKE_* status).

    The replay arrays and the starting book (`init_keys`, `init_qty`: replay.NO_KEYS, NO_QTY for a
    whole tape) are those `replay.qty_before` takes; `qty` is the tape's qty column. `touch` is the
    best price on the side taken before `row` (`touch_before`); EMPTY means no book to take from
    (an empty side, or unsynced: decision 021) and nothing fills. Levels with no visible depth are
    skipped.

    Consumed depth: cons_key[:cons_n[0]] (level keys, `replay.level_key`) and cons_qty (base units)
    hold what earlier walks in this book state took; it is subtracted level by level and, with
    `commit`, this walk's takes are added (cons_n[0] grows by one per new level). Without `commit`
    the table is read only (a what-if for a guard). The caller sets cons_n[0] = 0 whenever the book
    state changes (the next market row applied), and sizes the table for the levels one state's
    walks take (TAKE_TABLE_FULL stops the walk before a level it has no room for).

    Output: per level taken, best first, its price (ticks) in out_px and the quantity taken in
    out_qty; out_avail (length 0 to skip, else at least len(out_px)) gets the visible quantity there
    before the take (`walk_cost`). The walk stops with TAKE_OUT_FULL when out_px is full and depth
    within the limit remains. The quantity filled is the sum of out_qty (float rounding of that sum
    clamped to `want`: never above it).
    """
    cap = out_px.shape[0]
    with_avail = out_avail.shape[0] > 0
    if want <= 0.0:
        return 0, 0.0, TAKE_FILLED
    if touch == EMPTY or (side > 0 and touch > limit) or (side < 0 and touch < limit):
        return 0, 0.0, TAKE_EXHAUSTED
    code = -1 if side > 0 else 1  # the side of the book taken
    step = 1 if side > 0 else -1
    nu = level_ukeys.shape[0]
    ni = init_keys.shape[0]
    k0 = level_key(code, touch)
    # u, j: the next level key to look at in level_ukeys and in init_keys (going up for a buy, down
    # for a sell); levels past the touch are empty by definition, so the walk starts there.
    if side > 0:
        u = _first_at_or_after(level_ukeys, 0, nu, k0)
        j = _first_at_or_after(init_keys, 0, ni, k0)
    else:
        u = _first_at_or_after(level_ukeys, 0, nu, k0 + 1) - 1
        j = _first_at_or_after(init_keys, 0, ni, k0 + 1) - 1
    n = 0
    filled = 0.0
    status = TAKE_EXHAUSTED
    while True:
        # The next key of the side taken from either list: asks below SIDE_BIT, bids from it.
        has_u = (u < nu and level_ukeys[u] < SIDE_BIT) if side > 0 else (u >= 0 and level_ukeys[u] >= SIDE_BIT)
        has_j = (j < ni and init_keys[j] < SIDE_BIT) if side > 0 else (j >= 0 and init_keys[j] >= SIDE_BIT)
        if not has_u and not has_j:
            break
        if has_u and has_j:
            ku, kj = level_ukeys[u], init_keys[j]
            key = min(ku, kj) if side > 0 else max(ku, kj)
        else:
            key = level_ukeys[u] if has_u else init_keys[j]
        px = key if side > 0 else key - SIDE_BIT
        if (side > 0 and px > limit) or (side < 0 and px < limit):
            break
        if has_u and level_ukeys[u] == key:
            # The level's place in the index is known: level_cursor's search by price is not needed.
            lo = level_starts[u]
            first = _first_at_or_after(level_rows, lo, level_starts[u + 1], row)
            u += step
        else:
            lo = first = 0  # no row of this tape at the level: the starting book's quantity, if not reset
        if has_j and init_keys[j] == key:
            j += step
        q = qty_at_cursor(level_rows, reset_rows, reset_sides, qty, code, lo, first, row, init_keys, init_qty, key)
        c = 0.0
        slot = -1
        for e in range(cons_n[0]):
            if cons_key[e] == key:
                slot = e
                c = cons_qty[e]
                break
        avail = q - c
        if avail <= q * DUST:
            continue  # no level, or our fills took it all in this book state
        if n == cap:
            status = TAKE_OUT_FULL
            break
        if commit and slot < 0 and cons_n[0] == cons_key.shape[0]:
            status = TAKE_TABLE_FULL
            break
        rem = want - filled
        take = avail if avail < rem else rem
        out_px[n] = px
        out_qty[n] = take
        if with_avail:
            out_avail[n] = avail
        n += 1
        filled += take
        if commit:
            if slot < 0:
                slot = cons_n[0]
                cons_n[0] = slot + 1
                cons_key[slot] = key
                cons_qty[slot] = 0.0
            # A sliver left by rounding is no depth: record the level as used up.
            cons_qty[slot] = q if avail - take <= q * DUST else c + take
        if want - filled <= want * DUST:
            status = TAKE_FILLED
            break
    if filled > want:
        filled = want  # float rounding of the sum; a take is never more than what was left
    return n, filled, status


@njit(cache=True)
def walk_cost(out_px, out_qty, out_avail, n, side, touch):
    """What a walk's first `n` fills (walk_book's out_px, out_qty, out_avail) cost against the touch
    `touch` (ticks): (VWAP slippage in ticks, positive when worse than the touch; the share of the
    visible depth on the levels walked that the fills took, 0 to 1). (0.0, 0.0) when nothing filled.

    A guard blocks or cuts down an intent whose slippage or share is too high (issue 27)."""
    total = 0.0
    shift = 0.0
    depth = 0.0
    for i in range(n):
        total += out_qty[i]
        shift += (out_px[i] - touch) * out_qty[i]  # prices as offsets from the touch: no large products
        depth += out_avail[i]
    if total <= 0.0:
        return 0.0, 0.0
    slip = shift / total
    return (slip if side > 0 else -slip), total / depth
