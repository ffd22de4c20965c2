"""The exchange side of the backtest loop: market rows in exchange time against our resting orders.

The venue as the loop models it: it replays book rows and trades, holds our resting orders with
their queue position, fills them, settles funding on the position it holds, and answers each
request that arrives (accepted, expired, refused by its filters, cancelled, or a cancel that found
nothing). Answers go onto the response bus (`grinder.sim.bus`). Fill rules are in
`grinder.sim.engine`'s docstring; the book's facts per row come from `grinder.sim.replay`.

Between two decisions only a few orders rest, so the walk over rows skips whole blocks of rows that
cannot touch them (`block_extremes`), and an order's place in its level's queue is found, and brought
up to date from the level's own rows, only when a trade at its price needs it: the same result as
following every depth change.

Prices are int64 ticks, quantities float64 (base units, or contracts for inverse instruments),
times int64 ns.
"""

from __future__ import annotations

from collections import namedtuple

import numpy as np
from numba import njit

from grinder.book.l2 import ASK, BID, EMPTY
from grinder.core.diff import REQ_NEW, ST_CANCELED, ST_EXPIRED, ST_FILLED, ST_NEW
from grinder.core.ledger import notional, quote_notional
from grinder.core.order_kind import IOC, KIND_MASK, QUOTE, REDUCE_ONLY
from grinder.data.schema import BOOK_RESET, BOOK_SNAPSHOT
from grinder.data.tape import EV_TRADE
from grinder.sim.bus import MAX_TS, RESP_FILTERED, RESP_PARTIAL, RESP_REJECTED, arrival, pop, push, top
from grinder.sim.clock import advance
from grinder.sim.queue import filled_qty, on_depth, on_trade
from grinder.sim.records import COUNTER, record_funding
from grinder.sim.replay import _first_at_or_after, level_key, level_of, qty_at_cursor
from grinder.sim.taker import MARKET_BUY, MARKET_SELL, TAKE_EXHAUSTED, TAKE_FILLED, TAKEN_LEVELS, WALK_LEVELS, walk_book
from grinder.sim.taker import touch_before as _touch_before

# The walk and the touch inlined into the loop, which runs without reference counting (decision 030).
walk = njit(_nrt=False, inline="always")(walk_book.py_func)
touch_before = njit(_nrt=False, inline="always")(_touch_before.py_func)

LEVEL_CACHE = 1024  # entries of the cache of price levels (a power of two)
BLOCK_SHIFT = 4  # rows per block: 16
BLOCK_MASK = (1 << BLOCK_SHIFT) - 1
MIN_TICKS = np.iinfo(np.int64).min
# block_extremes of a block holding a row after which the book is not synced (a reset, rows before a
# snapshot): it may reach any resting order, so the loop walks it row by row and stops at its
# resets; no real price is this extreme, so at an order's arrival they say "look at the row's sync".
UNSYNCED_HI = MAX_TS - 1
UNSYNCED_LO = MIN_TICKS + 1

# The exchange side's scalars: the next market row and funding settlement to process, the position
# the exchange holds (fills count when they happen there) and the funding paid on it (settle currency).
EXCHANGE_STATE = np.dtype(
    [("next_row", np.int64), ("next_funding", np.int64), ("position", np.float64), ("funding_paid", np.float64)],
    align=True,
)
# Per order slot, at the exchange: resting or not, quantity left, quantity ahead of it in its level's
# queue and traded there since the last depth change (grinder.sim.queue), its level's next row not
# yet applied (a position in level_rows; -1 until a trade at its price needs it), the end of that
# level's rows, and the market row the order arrived before.
Resting = namedtuple("Resting", "live leaves front traded level_row level_end arrival_row")
# Resting orders per side (BID, ASK), sorted by price: prices (ticks), their slots, how many.
PriceIndex = namedtuple("PriceIndex", "price slot count")
# The price levels of recent placements, direct-mapped by price (level_key values, the lowest int64
# being no level's, and their levels); per level of the tape, where its last search for a queue ended.
LevelCache = namedtuple("LevelCache", "key level search_end")
# Taker orders' walks (grinder.sim.taker): the depth our takes consumed in the current book state, per
# side taken (row 0 the asks, row 1 the bids), as level keys and quantities, how many, and the market row
# that state is before (-1: none yet); a walk's
# output, price (ticks) and quantity per level; an empty array (walk_book's out_avail, not wanted).
TakerScratch = namedtuple("TakerScratch", "taken_key taken_qty taken_n taken_row out_px out_qty no_avail")
ExchangeSide = namedtuple("ExchangeSide", "state resting index level_cache taker")


@njit(cache=True)
def new_exchange_side(cap, n_levels):
    """The exchange side with nothing resting, for `cap` order slots and a tape of `n_levels` price levels."""
    resting = Resting(np.zeros(cap, np.bool_), np.zeros(cap), np.zeros(cap), np.zeros(cap), np.zeros(cap, np.int64),
                      np.zeros(cap, np.int64), np.zeros(cap, np.int64))  # fmt: skip
    index = PriceIndex(np.zeros((2, cap), np.int64), np.zeros((2, cap), np.int64), np.zeros(2, np.int64))
    # A grid quotes the same few hundred prices again and again: a hit saves a binary search over
    # every level of the tape.
    level_cache = new_level_cache(n_levels)
    taker = TakerScratch(np.zeros((2, TAKEN_LEVELS), np.int64), np.zeros((2, TAKEN_LEVELS)), np.zeros(2, np.int64),
                         np.full(1, -1, np.int64), np.zeros(WALK_LEVELS, np.int64), np.zeros(WALK_LEVELS),
                         np.zeros(0))  # fmt: skip
    return ExchangeSide(np.zeros(1, EXCHANGE_STATE), resting, index, level_cache, taker)


@njit(cache=True)
def block_extremes(kind, side, ticks, best_bid, best_ask, synced):
    """Per block of 2**BLOCK_SHIFT rows (ticks): the highest price that could reach a resting ask
    (best bid after any row, buy trade) and the lowest that could reach a resting bid (best ask
    after any row, sell trade). A block whose highest is below our lowest ask and whose lowest is
    above our highest bid cannot fill us; a bid below the block's lowest (an ask above its highest)
    does not cross the book after any of its rows. A block with a row after which the book is not
    synced gets UNSYNCED_HI and UNSYNCED_LO."""
    n = kind.shape[0]
    nb = (n + BLOCK_MASK) >> BLOCK_SHIFT
    hi = np.full(nb, MIN_TICKS, np.int64)
    lo = np.full(nb, MAX_TS, np.int64)
    for i in range(n):
        b = i >> BLOCK_SHIFT
        if not synced[i]:
            hi[b] = UNSYNCED_HI
            lo[b] = UNSYNCED_LO
        if hi[b] == UNSYNCED_HI:
            continue
        if kind[i] == EV_TRADE:
            if side[i] > 0:
                hi[b] = max(hi[b], ticks[i])
            else:
                lo[b] = min(lo[b], ticks[i])
        if best_bid[i] != EMPTY:
            hi[b] = max(hi[b], best_bid[i])
        if best_ask[i] != EMPTY:
            lo[b] = min(lo[b], best_ask[i])
    return hi, lo


@njit(cache=True, _nrt=False)
def index_find(index, s, px):
    """Position of px among side s's resting prices (or where it would go)."""
    lo, hi = 0, index.count[s]
    while lo < hi:
        mid = (lo + hi) >> 1
        if index.price[s, mid] < px:
            lo = mid + 1
        else:
            hi = mid
    return lo


@njit(cache=True, _nrt=False)
def index_add(index, s, px, slot):
    """Add the order in `slot`, at price px, to side s."""
    i = index_find(index, s, px)
    m = index.count[s]
    for k in range(m, i, -1):
        index.price[s, k] = index.price[s, k - 1]
        index.slot[s, k] = index.slot[s, k - 1]
    index.price[s, i] = px
    index.slot[s, i] = slot
    index.count[s] = m + 1


@njit(cache=True, _nrt=False)
def index_remove_at(index, s, i):
    """Remove side s's i-th resting order."""
    m = index.count[s]
    for k in range(i, m - 1):
        index.price[s, k] = index.price[s, k + 1]
        index.slot[s, k] = index.slot[s, k + 1]
    index.count[s] = m - 1


@njit(_nrt=False, inline="always")
def respond(responses, latency, slot, status, exchange_ts, qty, price, inflight):
    """Send the local side the response to an event of the order in `slot` at `exchange_ts` (ns); a
    fill's quantity and price (ticks)."""
    k = push(responses.due, responses.ring, arrival(responses.ring, exchange_ts, latency.ts, latency.response_ns))
    responses.slot[k], responses.status[k], responses.exchange_ts[k] = slot, status, exchange_ts
    responses.qty[k], responses.price[k] = qty, price
    inflight[slot] += 1


@njit(_nrt=False, inline="always")
def execute(slot, ts, q, full, exchange, orders, responses, latency, counters):
    """q of the order in `slot` executed at the exchange at ts; its response goes out.

    `full` marks the last execution (the order leaves the book); the caller removes it from the index.
    """
    resting = exchange.resting
    resting.leaves[slot] -= q
    if full:
        resting.live[slot] = False
        resting.leaves[slot] = 0.0
    exchange.state[0].position += q if orders.side[slot] > 0 else -q
    respond(responses, latency, slot, ST_FILLED if full else RESP_PARTIAL, ts, q, orders.price[slot], orders.inflight)
    counters[COUNTER.fills] += 1
    if not full:
        counters[COUNTER.partial_fills] += 1


@njit(_nrt=False, inline="always")
def settle_funding(k, funding, exchange, paid, inverse, contract_size):
    """Funding settlement k, on the position held at the exchange at that moment (settle currency;
    positive rates: longs pay shorts)."""
    state = exchange.state[0]
    amount = notional(state.position, funding.mark[k], inverse, contract_size) * funding.rate[k]
    state.funding_paid += amount
    record_funding(paid, k, funding.ts[k], state.position, amount)


@njit(_nrt=False, inline="always")
def pass_over(row, lim, rows, book, blocks, index):
    """The first row from `row` on that may reach a resting order, or is after lim (ns), or a reset.

    Depth at our prices is applied lazily, at a trade there, so rows that cannot reach our orders
    are passed over: a block whose extremes (`block_extremes`) cannot reach them is left by its
    times alone, from any row in it; in a block that might, rows are tested one by one.
    """
    n = rows.ts_exch.shape[0]
    min_ask = index.price[ASK, 0] if index.count[ASK] > 0 else MAX_TS
    max_bid = index.price[BID, index.count[BID] - 1] if index.count[BID] > 0 else MIN_TICKS
    while row < n:
        b = row >> BLOCK_SHIFT
        end = min((b + 1) << BLOCK_SHIFT, n)
        if blocks.highest[b] < min_ask and blocks.lowest[b] > max_bid:
            if rows.ts_exch[end - 1] <= lim:
                row = end
                continue
            while rows.ts_exch[row] <= lim:  # stops inside the block: its last row is after lim
                row += 1
            break
        while row < end and rows.ts_exch[row] <= lim:
            if rows.kind[row] == EV_TRADE:
                reach_ask = rows.price_ticks[row] if rows.side[row] > 0 else MIN_TICKS
                reach_bid = rows.price_ticks[row] if rows.side[row] < 0 else MAX_TS
            elif rows.kind[row] == BOOK_RESET:
                break  # our resting orders leave the book (`cancel_all`)
            else:
                reach_ask = book.best_bid[row]  # EMPTY is the lowest int64: reaches nothing
                reach_bid = book.best_ask[row] if book.best_ask[row] != EMPTY else MAX_TS
            if reach_ask >= min_ask or reach_bid <= max_bid:
                break
            row += 1
        if row < end:
            break  # a row that may reach us, or one after lim
    return row


@njit(_nrt=False, inline="always")
def join_queue(slot, p, rows, levels, exchange, orders):
    """Find the queue the order in `slot` (price p) joined on arrival, once rows [0, its arrival row)
    had been applied: its level's rows from there on, and the quantity ahead of it.

    Galloping from where the last search at that level ended, so a price quoted again is found in a
    few steps; most quotes are cancelled before a trade at their price needs this.
    """
    resting, cache = exchange.resting, exchange.level_cache
    ra = resting.arrival_row[slot]
    key = level_key(orders.side[slot], p)
    h = key & (LEVEL_CACHE - 1)  # the price's low bits (the side bit is far above them)
    if cache.key[h] == key:
        u = cache.level[h]
    else:
        u = level_of(levels.ukeys, orders.side[slot], p)
        cache.key[h], cache.level[h] = key, u
    lo = hi = first = 0
    if u >= 0:
        lo, hi = levels.starts[u], levels.starts[u + 1]
        g = cache.search_end[u]
        if g <= lo or levels.rows[g - 1] >= ra:
            g = lo  # no earlier search there, or one from a later row
        first = advance(levels.rows, g, hi, ra - 1)
        cache.search_end[u] = first
    resting.level_row[slot], resting.level_end[slot] = first, hi
    resting.front[slot] = qty_at_cursor(levels.rows, levels.reset_rows, levels.reset_sides, rows.qty,
                                        orders.side[slot], lo, first, ra, levels.init_keys, levels.init_qty,
                                        key)  # fmt: skip


@njit(_nrt=False, inline="always")
def fill_at_price(slot, i, p, rows, book, levels, exchange, orders, venue):
    """(quantity, in full) of the order in `slot` that the trade at row i, at the order's price p,
    fills by the queue model: the level's depth changes before the trade first, then the trade."""
    resting = exchange.resting
    if resting.level_row[slot] < 0:
        join_queue(slot, p, rows, levels, exchange, orders)
    lp, le = resting.level_row[slot], resting.level_end[slot]
    model, power = venue.queue_model, venue.queue_power
    while lp < le and levels.rows[lp] < i:
        r = levels.rows[lp]
        resting.front[slot], resting.traded[slot] = on_depth(model, power, resting.front[slot], resting.traded[slot],
                                                             book.prev_qty[r], rows.qty[r])  # fmt: skip
        lp += 1
    resting.level_row[slot] = lp
    resting.front[slot], resting.traded[slot] = on_trade(resting.front[slot], resting.traded[slot], rows.qty[i])
    q = filled_qty(resting.front[slot], venue.lot)
    full = False
    if q > 0.0:
        if venue.partial_fills and q < resting.leaves[slot] - 0.5 * venue.lot:
            resting.front[slot] = 0.0  # we took the traded quantity beyond the queue
        else:
            q = resting.leaves[slot]
            full = True
    return q, full


@njit(_nrt=False, inline="always")
def match_trade(i, rows, book, levels, exchange, orders, responses, latency, venue, counters):
    """A trade at row i by an aggressor on rows.side[i]: our orders on the other side at or through
    its price may fill (through it: in full, our level was taken out; at it: by the queue model)."""
    index = exchange.index
    p = rows.price_ticks[i]
    s = ASK if rows.side[i] > 0 else BID
    j = 0 if s == ASK else index.count[s] - 1
    while (s == ASK and j < index.count[s] and index.price[s, j] <= p) or (s == BID and j >= 0 and
                                                                          index.price[s, j] >= p):  # fmt: skip
        slot = index.slot[s, j]
        q = 0.0
        full = index.price[s, j] != p  # traded through our price: our level was taken out
        if full:
            q = exchange.resting.leaves[slot]
        else:
            q, full = fill_at_price(slot, i, p, rows, book, levels, exchange, orders, venue)
        if q > 0.0:
            execute(slot, rows.ts_exch[i], q, full, exchange, orders, responses, latency, counters)
        if full:
            index_remove_at(index, s, j)
            if s == ASK:
                continue  # the next order slid into position j
        if s == ASK:
            j += 1
        else:
            j -= 1


@njit(_nrt=False, inline="always")
def match_best_move(i, rows, book, exchange, orders, responses, latency, counters):
    """Book row i moved its side's best price: if through our orders on the other side, they fill at
    their price, in full. (Depth changes at our prices are applied lazily, at the next trade there.)"""
    index = exchange.index
    o = -1
    if rows.side[i] > 0:
        nb = book.best_bid[i]
        pb = book.best_bid[i - 1] if i > 0 else EMPTY
        if nb != EMPTY and (pb == EMPTY or nb > pb):
            o = ASK
    else:
        na = book.best_ask[i]
        pa = book.best_ask[i - 1] if i > 0 else EMPTY
        if na != EMPTY and (pa == EMPTY or na < pa):
            o = BID
    while o >= 0 and index.count[o] > 0:
        j = 0 if o == ASK else index.count[o] - 1
        if (o == ASK and index.price[o, j] > book.best_bid[i]) or (o == BID and index.price[o, j] < book.best_ask[i]):
            break
        slot = index.slot[o, j]
        index_remove_at(index, o, j)
        execute(slot, rows.ts_exch[i], exchange.resting.leaves[slot], True, exchange, orders, responses, latency,
                counters)  # fmt: skip


@njit(_nrt=False, inline="always")
def cancel_all(i, rows, exchange, orders, responses, latency, counters):
    """A reset at row i (of either side): from here the data no longer says where the book is (a
    sequence break, or another capture's data after a coverage gap), so nothing can fill or queue
    our orders truthfully. The venue cancels all of them, as on a dropped session; none is accepted
    again before a snapshot (decision 021)."""
    index, resting = exchange.index, exchange.resting
    for o in range(2):
        while index.count[o] > 0:
            slot = index.slot[o, index.count[o] - 1]
            index_remove_at(index, o, index.count[o] - 1)
            resting.live[slot] = False
            resting.leaves[slot] = 0.0
            respond(responses, latency, slot, ST_CANCELED, rows.ts_exch[i], 0.0, 0, orders.inflight)
            counters[COUNTER.unsynced_orders] += 1


@njit(_nrt=False, inline="always")
def accept(slot, row, book, blocks, exchange, orders, counters):
    """The response status of a new order arriving once rows [0, row) are applied: ST_NEW (it now
    rests), or ST_EXPIRED (post-only and crossing the book, or no synced book to rest in)."""
    s = BID if orders.side[slot] > 0 else ASK
    px = orders.price[slot]
    # The book's best price is read only when the order is within its block's extremes: reading
    # it misses the cache on most arrivals. Its sync is read only in a block flagged as holding an
    # unsynced row.
    crosses = False
    unsynced = row == 0
    if row > 0:
        b = (row - 1) >> BLOCK_SHIFT
        if s == BID:
            lo_b = blocks.lowest[b]
            if px >= lo_b:
                if lo_b == UNSYNCED_LO and not book.synced[row - 1]:
                    unsynced = True
                else:
                    ba = book.best_ask[row - 1]
                    crosses = ba != EMPTY and px >= ba
        else:
            hi_b = blocks.highest[b]
            if px <= hi_b:
                if hi_b == UNSYNCED_HI and not book.synced[row - 1]:
                    unsynced = True
                else:
                    bb = book.best_bid[row - 1]
                    crosses = bb != EMPTY and px <= bb
    if unsynced:
        counters[COUNTER.unsynced_orders] += 1  # no book to rest in (decision 021)
        return ST_EXPIRED
    if crosses:
        counters[COUNTER.expired] += 1
        return ST_EXPIRED
    resting = exchange.resting
    resting.live[slot] = True
    resting.leaves[slot] = orders.qty[slot]
    # Its place in its level's queue is looked up at the first trade at its price (`join_queue`).
    resting.level_row[slot] = -1
    resting.arrival_row[slot] = row
    resting.traded[slot] = 0.0
    index_add(exchange.index, s, px, slot)
    return ST_NEW


@njit(_nrt=False, inline="always")
def take(t, slot, row, rows, book, levels, exchange, orders, responses, latency, venue, counters):
    """The taker order (IOC or market, grinder.core.order_kind) in `slot` arrives at t, after rows [0, row):
    it walks the book (grinder.sim.taker.walk_book) and every level it takes is a fill at that level's
    price, answered one by one; the rest expires (a market order's, too, past `venue.market_walk_ticks`
    ticks through the touch, when set). Reduce-only: cut to the position held here, refused
    when there is none on the other side. The minimum notional (at the limit; a market order's at the
    touch) does not apply to reduce-only orders. Our takes stay taken while the book state lasts."""
    state = exchange.state[0]
    side = orders.side[slot]
    kind = orders.kind[slot]
    want = orders.qty[slot]
    if kind & REDUCE_ONLY:
        if state.position * side >= 0.0 or abs(state.position) < 0.5 * venue.lot:
            counters[COUNTER.rejected] += 1
            respond(responses, latency, slot, RESP_FILTERED, t, 0.0, 0, orders.inflight)
            return
        want = min(want, abs(state.position))
    if row == 0 or not book.synced[row - 1]:
        counters[COUNTER.unsynced_orders] += 1  # no book to take from (decision 021)
        respond(responses, latency, slot, ST_EXPIRED, t, 0.0, 0, orders.inflight)
        return
    touch = touch_before(book.best_bid, book.best_ask, side, row)
    if (kind & KIND_MASK) == IOC:
        limit = orders.price[slot]
    elif venue.market_walk_ticks > 0 and touch != EMPTY:
        limit = touch + side * venue.market_walk_ticks  # inclusive
    else:
        limit = MARKET_BUY if side > 0 else MARKET_SELL
    priced = orders.price[slot] if (kind & KIND_MASK) == IOC else touch
    if (not kind & REDUCE_ONLY and priced != EMPTY
            and quote_notional(want, priced * venue.tick, venue.inverse, venue.contract_size)
            < venue.min_notional * (1.0 - 1e-12)):  # fmt: skip
        counters[COUNTER.rejected] += 1
        respond(responses, latency, slot, RESP_FILTERED, t, 0.0, 0, orders.inflight)
        return
    tk = exchange.taker
    if tk.taken_row[0] != row:  # another book state: what earlier takes consumed is back
        tk.taken_n[0] = 0
        tk.taken_n[1] = 0
        tk.taken_row[0] = row
    s = 0 if side > 0 else 1  # the asks a buy takes, the bids a sell takes: one table each
    n, _, status = walk(levels.rows, levels.ukeys, levels.starts, levels.reset_rows, levels.reset_sides, rows.qty,
                        levels.init_keys, levels.init_qty, row, side, touch, limit, want, tk.taken_key[s],
                        tk.taken_qty[s], tk.taken_n[s : s + 1], tk.out_px, tk.out_qty, tk.no_avail, True)  # fmt: skip
    for i in range(n):
        q = tk.out_qty[i]
        state.position += q if side > 0 else -q
        last = i == n - 1 and status == TAKE_FILLED
        respond(responses, latency, slot, ST_FILLED if last else RESP_PARTIAL, t, q, tk.out_px[i], orders.inflight)
        counters[COUNTER.fills] += 1
    if status != TAKE_FILLED:
        if status == TAKE_EXHAUSTED:
            counters[COUNTER.taker_expired] += 1
        else:
            counters[COUNTER.walk_capped] += 1
        respond(responses, latency, slot, ST_EXPIRED, t, 0.0, 0, orders.inflight)


@njit(_nrt=False, inline="always")
def arrive(t, k, row, rows, book, blocks, levels, exchange, orders, bus, latency, venue, counters):
    """The request at the head of the request bus (index k) arrives at the exchange at t, after rows
    [0, row); its response goes out."""
    requests = bus.requests
    slot = requests.slot[k]
    request = requests.request[k]
    pop(requests.due, requests.ring)
    orders.inflight[slot] -= 1
    lots = orders.qty[slot] / venue.lot
    # Written so that a quantity that is not a number fails them (every comparison with NaN is false).
    whole = lots >= 0.5 and abs(lots - round(lots)) <= 1e-9
    if request == REQ_NEW and orders.kind[slot] != QUOTE and whole:
        take(t, slot, row, rows, book, levels, exchange, orders, bus.responses, latency, venue, counters)
        return
    if request == REQ_NEW and (
        not whole
        or not quote_notional(orders.qty[slot], orders.price[slot] * venue.tick, venue.inverse, venue.contract_size)
        >= venue.min_notional * (1.0 - 1e-12)
    ):
        # The venue's filters: whole lots, and at least the minimum notional (quote); a taker order that
        # fails the first is refused here too (take judges its notional).
        status = RESP_FILTERED
        counters[COUNTER.rejected] += 1
    elif request == REQ_NEW:
        status = accept(slot, row, book, blocks, exchange, orders, counters)
    elif exchange.resting.live[slot]:
        s = BID if orders.side[slot] > 0 else ASK
        index_remove_at(exchange.index, s, index_find(exchange.index, s, orders.price[slot]))
        exchange.resting.live[slot] = False
        status = ST_CANCELED
    else:
        status = RESP_REJECTED
        counters[COUNTER.cancel_rejected] += 1
    respond(bus.responses, latency, slot, status, t, 0.0, 0, orders.inflight)


@njit(_nrt=False, inline="always")
def exchange_until(target, rows, book, blocks, levels, funding, latency, venue, exchange, orders, bus, paid, counters):
    """Everything at the exchange up to `target` (ns), in exchange time: funding settlements, market
    rows and request arrivals; rows first on ties, and a settlement before both."""
    state = exchange.state[0]
    requests = bus.requests
    n = rows.ts_exch.shape[0]
    n_funding = funding.ts.shape[0]
    row = state.next_row
    settlement = state.next_funding
    request_ts, request_at = top(requests.due, requests.ring)
    while True:
        row_ts = rows.ts_exch[row] if row < n else MAX_TS
        settlement_ts = funding.ts[settlement] if settlement < n_funding else MAX_TS
        if settlement_ts < row_ts and settlement_ts <= request_ts and settlement_ts <= target:
            settle_funding(settlement, funding, exchange, paid, venue.inverse, venue.contract_size)
            settlement += 1
        elif row_ts <= request_ts and row_ts <= target and row_ts != MAX_TS:
            row_before = row
            row = pass_over(row, min(request_ts, target, settlement_ts), rows, book, blocks, exchange.index)
            if row != row_before:
                continue
            kind = rows.kind[row]
            if kind == EV_TRADE:
                match_trade(row, rows, book, levels, exchange, orders, bus.responses, latency, venue, counters)
            elif kind <= BOOK_SNAPSHOT:
                match_best_move(row, rows, book, exchange, orders, bus.responses, latency, counters)
            else:
                cancel_all(row, rows, exchange, orders, bus.responses, latency, counters)
            row += 1
        elif request_ts <= target and request_ts != MAX_TS:
            arrive(request_ts, request_at, row, rows, book, blocks, levels, exchange, orders, bus, latency, venue,
                   counters)  # fmt: skip
            request_ts, request_at = top(requests.due, requests.ring)
        else:
            break
    state.next_row = row
    state.next_funding = settlement


@njit(cache=True)
def queues_to_chunk_end(rows, book, levels, exchange, orders, venue):
    """At the end of a chunk of rows (all of them applied): every resting order's place in its
    queue brought up to date through the chunk's last row, so the next chunk needs none of these
    rows (`grinder.sim.chunked`). The same depth changes in the same order as a trade at its price
    would apply them later (`fill_at_price`)."""
    index, resting = exchange.index, exchange.resting
    model, power = venue.queue_model, venue.queue_power
    for s in range(2):
        for j in range(index.count[s]):
            slot = index.slot[s, j]
            if resting.level_row[slot] < 0:
                join_queue(slot, index.price[s, j], rows, levels, exchange, orders)
            lp, le = resting.level_row[slot], resting.level_end[slot]
            while lp < le:
                r = levels.rows[lp]
                resting.front[slot], resting.traded[slot] = on_depth(model, power, resting.front[slot],
                                                                     resting.traded[slot], book.prev_qty[r],
                                                                     rows.qty[r])  # fmt: skip
                lp += 1
            resting.level_row[slot] = lp


@njit(cache=True)
def queues_from_chunk_start(levels, exchange, orders, first_row):
    """At the start of the next chunk, after `queues_to_chunk_end`: each resting order's level rows
    in this chunk from `first_row` on (the rows before it were applied in the last chunk). Depth taker
    orders consumed after the last chunk's last row stays consumed: that book state is the one before
    `first_row` (call this before moving `next_row` there); any other is gone."""
    tk = exchange.taker
    if tk.taken_row[0] == exchange.state[0].next_row:
        tk.taken_row[0] = first_row
    else:
        tk.taken_n[0] = 0
        tk.taken_n[1] = 0
        tk.taken_row[0] = -1
    index, resting = exchange.index, exchange.resting
    for s in range(2):
        for j in range(index.count[s]):
            slot = index.slot[s, j]
            u = level_of(levels.ukeys, orders.side[slot], index.price[s, j])
            if u < 0:
                resting.level_row[slot], resting.level_end[slot] = 0, 0
            else:
                lo, hi = levels.starts[u], levels.starts[u + 1]
                resting.level_row[slot] = _first_at_or_after(levels.rows, lo, hi, first_row)
                resting.level_end[slot] = hi


@njit(cache=True)
def new_level_cache(n_levels):
    """The cache of price levels for a tape (or chunk) of `n_levels` levels."""
    return LevelCache(np.full(LEVEL_CACHE, MIN_TICKS, np.int64), np.zeros(LEVEL_CACHE, np.int64),
                      np.zeros(n_levels, np.int64))  # fmt: skip
