"""The backtest event loop: one compiled pass over a tape with an exchange side and a local side.

Two clocks, as on a real venue. The *exchange* side replays book rows and trades in exchange
time, holds our resting orders with their queue position, and fills them. The *local* side sees
the same events later, at their (corrected) local receive time, and is where the strategy
decides, every `step_ns` of local time (but not through a coverage gap: `decision_segments`).
Orders travel local -> exchange with the entry latency and responses travel back with the
response latency (constant, or interpolated from a series; each direction stays first-in
first-out, like one connection). At equal timestamps the order of processing is: local data,
responses arriving locally, exchange data, requests arriving at the exchange (as hftbacktest
does), so both engines see the same sequence.

The books themselves are not rebuilt here: `grinder.sim.replay` records once per tape what the
loop needs from them (quantity before each row, best prices after each row, the local view).
Between two decisions the loop only walks exchange rows and checks them against our few orders;
it jumps over whole blocks of rows that cannot touch them (`block_extremes`), and finds an order's
place in its level's queue, and brings it up to date from the level's own rows, only when a trade
at its price needs it, which gives the same result as following every depth change.

Fill rules. A resting buy fills at its own price: in full when the best ask drops to or below it
(price-through) or when a sell trade prints below it (trade-through); at its price, once the queue
ahead of it has traded (queue model) — in full, or with partial fills on, by the traded quantity
beyond the queue in whole lots. Sells mirror this. Orders are post-only (GTX): one that would cross
on arrival expires; one that breaks the venue's filters (whole lots, minimum notional) is rejected.
Prices are int64 ticks, quantities float64 (base units, or contracts for inverse instruments),
times int64 ns; money goes through `grinder.core.ledger`.

Book readiness (decision 021). The strategy is called only on a synced local book (a snapshot
since the last reset, an event within `stale_ns`); otherwise it has no targets and its open quotes
are cancelled. At the exchange a reset cancels every resting order, and an order that arrives on
an unsynced book expires: another capture's trades never fill a quote made on an older book.
"""

from __future__ import annotations

import numpy as np
from numba import njit, types

from grinder.book.l2 import ASK, BID, EMPTY
from grinder.core.diff import (
    REQ_CANCEL,
    REQ_NEW,
    REQ_NONE,
    ST_CANCELED,
    ST_EXPIRED,
    ST_FILLED,
    ST_NEW,
    ST_NONE,
    diff_scratch,
    had_target,
)
from grinder.core.gates import gates_active
from grinder.core.ledger import (
    CASH,
    FEES,
    LEDGER_SIZE,
    POSITION,
    REALIZED,
    book_fill,
    gate_inputs,
    notional,
    quote_notional,
)
from grinder.core.qrules import CANCELLED as QR_CANCELLED
from grinder.core.qrules import EXPIRED as QR_EXPIRED
from grinder.core.qrules import FILLED as QR_FILLED
from grinder.core.qrules import GTC as QR_GTC
from grinder.core.qrules import OUT as QR_OUT
from grinder.core.qrules import REJECTED as QR_REJECTED
from grinder.core.qrules import qr_end, qr_fill, qr_new, qr_ratios
from grinder.core.step import decision_step, step_is_idle
from grinder.core.strategy import BAND_MIN_STATE, STRATEGY_FN
from grinder.sim.queue import filled_qty, on_depth, on_trade
from grinder.sim.replay import level_key, level_of, qty_at_cursor

MAX_TS = np.iinfo(np.int64).max
RESP_REJECTED = -1  # response status for a cancel that found no order
RESP_PARTIAL = -2  # response status of a partial fill (the order keeps resting)
QR_SAMPLE_NS = 1_000_000_000  # the quantitative rules are read at least this often (and after every order event)
RESP_FILTERED = -3  # response status of a new order the venue's filters refused (an expiry to the local side)
# When the loop may reuse a kernel's last targets instead of calling it (Strategy.recompute).
REUSE_NEVER, REUSE_TOP, REUSE_PRICES, REUSE_BAND = 0, 1, 2, 3

# Counters returned by the loop, in this order.
# unsynced_orders: orders the venue dropped because the book was not synced (expired on arrival, or
# cancelled at a reset); unsynced_decisions: decisions taken on an unsynced book (kernel not called).
COUNTERS = ("placed", "cancelled", "expired", "cancel_rejected", "fills", "exchange_events", "decisions", "rejected",
            "partial_fills", "unsynced_orders", "unsynced_decisions")  # fmt: skip


def _signature():
    ro = lambda t: types.Array(t, 1, "C", readonly=True)  # noqa: E731 - inputs: tapes may be read-only memmaps
    rw = lambda t: types.Array(t, 1, "C")  # noqa: E731
    i8, i64, f64, b = types.int8, types.int64, types.float64, types.boolean
    return (
        *(ro(i64), ro(i8), ro(i8), ro(i64), ro(f64)),  # tape: ts_exch, kind, side, ticks, qty
        *(ro(f64), ro(i64), ro(i64)),  # replay, exchange order: prev_qty, best_bid, best_ask
        *(ro(i64), ro(i64), ro(i64), ro(f64), ro(f64)),  # replay, local order: ts, best bid/ask, their qty
        *(ro(i64), ro(i64), ro(i64), ro(i64), ro(i64)),  # replay: level rows, ukeys, starts; reset rows, sides
        *(ro(b), ro(b)),  # replay: book synced after each row (exchange order), after each local event
        *(ro(i64), ro(i64)),  # block_extremes: highest and lowest price per block of rows
        ro(i64),  # decision_segments: the steps taken
        *(ro(i64), ro(i64), ro(i64), ro(f64), ro(f64), ro(b)),  # local_at_decisions (or empty: computed as it goes)
        *(ro(i64), ro(f64), ro(f64)),  # funding settlements: ts, rate, mark
        *(ro(i64), ro(i64), ro(i64)),  # latency series: ts, entry ns, response ns
        *(i64, i64, i64),  # start_ns, step_ns, stale_ns
        *(f64, f64, f64, f64, b, f64),  # tick, lot, min_notional (quote), maker_fee, inverse, contract_size
        *(i64, f64, b),  # queue model, queue power, partial fills
        *(STRATEGY_FN, rw(f64), rw(f64), i64, i64, i64),  # strategy, params, state, max_targets, reuse, fill_cap
        *(ro(f64), rw(f64), rw(i64)),  # gate config, gate state, blocked counters
        *(b, ro(f64), rw(i64)),  # quantitative rules: their gate on, config, state (grinder.core.qrules)
        *(b, rw(i64)),  # all_steps, progress
    )


@njit(cache=True, _nrt=False)
def latency_at(lat_ts, lat_ns, t):
    """Latency (ns) at time t: constant for a one-point series, else linear between points, flat outside."""
    n = lat_ts.shape[0]
    if n == 1 or t <= lat_ts[0]:
        return lat_ns[0]
    j = _advance(lat_ts, 0, n, t)  # the first point after t
    if j >= n:
        return lat_ns[n - 1]
    t0, t1 = lat_ts[j - 1], lat_ts[j]
    v0, v1 = lat_ns[j - 1], lat_ns[j]
    return v0 + np.int64(round((v1 - v0) * ((t - t0) / (t1 - t0))))


@njit(cache=True, _nrt=False)
def _idx_find(ipx, icnt, s, px):
    """Position of px in the sorted price index of side s (or where it would go)."""
    lo, hi = 0, icnt[s]
    while lo < hi:
        mid = (lo + hi) >> 1
        if ipx[s, mid] < px:
            lo = mid + 1
        else:
            hi = mid
    return lo


@njit(cache=True, _nrt=False)
def _idx_add(ipx, islot, icnt, s, px, slot):
    i = _idx_find(ipx, icnt, s, px)
    m = icnt[s]
    for k in range(m, i, -1):
        ipx[s, k] = ipx[s, k - 1]
        islot[s, k] = islot[s, k - 1]
    ipx[s, i] = px
    islot[s, i] = slot
    icnt[s] = m + 1


@njit(cache=True, _nrt=False)
def _idx_remove_at(ipx, islot, icnt, s, i):
    m = icnt[s]
    for k in range(i, m - 1):
        ipx[s, k] = ipx[s, k + 1]
        islot[s, k] = islot[s, k + 1]
    icnt[s] = m - 1


@njit(cache=True, _nrt=False)
def _bus_push(ts, st, t):
    """Queue an entry due at t on a bus (a ring: st = [count, head]); returns its index for the payload.

    Each direction is first-in first-out (arrival times never decrease: see the callers' max with
    the bus's last arrival), so a ring keeps them in order; equal times leave in the order sent.
    """
    cap = ts.shape[0]
    if st[0] == cap:
        raise RuntimeError("order bus full")
    # Indices wrap by one subtraction, not `%`: an integer division on every message costs more
    # than the rest of the push (head < cap and count < cap, so one wrap is enough).
    k = st[1] + st[0]
    if k >= cap:
        k -= cap
    if st[0] > 0 and t < ts[k - 1 if k > 0 else cap - 1]:
        raise RuntimeError("order bus: a message would overtake an earlier one")
    ts[k] = t
    st[0] += 1
    return k


@njit(cache=True, _nrt=False)
def _bus_top(ts, st):
    """(due time, index) of a bus's earliest entry; (MAX_TS, -1) when empty."""
    if st[0] == 0:
        return MAX_TS, -1
    return ts[st[1]], st[1]


@njit(cache=True, _nrt=False)
def _bus_pop(ts, st):
    """Remove the earliest entry (its payload stays readable until its index is handed out again)."""
    ts[st[1]] = MAX_TS
    h = st[1] + 1
    st[1] = 0 if h == ts.shape[0] else h
    st[0] -= 1


LEVEL_CACHE = 1024  # entries of the loop's cache of price levels (a power of two)
BLOCK_SHIFT = 4  # rows per block: 16
BLOCK_MASK = (1 << BLOCK_SHIFT) - 1
_MIN_TICKS = np.iinfo(np.int64).min
# block_extremes of a block holding a row after which the book is not synced (a reset, rows before a
# snapshot): it may reach any resting order, so the loop walks it row by row and stops at its
# resets; no real price is this extreme, so at an order's arrival they say "look at the row's sync".
UNSYNCED_HI = MAX_TS - 1
UNSYNCED_LO = _MIN_TICKS + 1


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
    hi = np.full(nb, _MIN_TICKS, np.int64)
    lo = np.full(nb, MAX_TS, np.int64)
    for i in range(n):
        b = i >> BLOCK_SHIFT
        if not synced[i]:
            hi[b] = UNSYNCED_HI
            lo[b] = UNSYNCED_LO
        if hi[b] == UNSYNCED_HI:
            continue
        if kind[i] == 3:
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
def _advance(ts, j, hi, t):
    """The first index in [j, hi) whose value is after t (ts sorted there), or hi: a galloping search from j."""
    if j >= hi or ts[j] > t:
        return j
    step = 1
    lo = j  # ts[lo] <= t
    while lo + step < hi and ts[lo + step] <= t:
        lo += step
        step *= 2
    top = min(lo + step, hi)  # ts[top] > t, or top == hi
    while top - lo > 1:
        mid = (lo + top) >> 1
        if ts[mid] <= t:
            lo = mid
        else:
            top = mid
    return top


@njit(cache=True, nogil=True)
def decision_clock(ts_exch, local_ts, start_ns, step_ns):
    """(t0, last event time, calendar capacity): decisions are on the grid t0 + k * step_ns, k >= 1,
    where t0 is start_ns, or the first event's time when start_ns <= 0; the grid has `capacity`
    steps while the data lasts (`decision_segments` says which of them are taken)."""
    n = ts_exch.shape[0]
    if start_ns > 0 or n == 0:
        t0 = start_ns
    else:
        t0 = min(ts_exch[0], local_ts[0])
    last_ts = max(ts_exch[n - 1], local_ts[n - 1]) if n > 0 else t0
    return t0, last_ts, max(1, (last_ts - t0) // step_ns + 2)


@njit(cache=True, nogil=True)
def decision_segments(ts_exch, local_ts, start_ns, step_ns, stale_ns):
    """The steps k of the decision clock (decisions at t0 + k * step_ns, see `decision_clock`) that
    are taken, as inclusive runs [first_k, last_k] flattened into one int64 array; the last run
    ends at the clock's capacity (the loop goes on past it, unrecorded, while orders are in flight).

    Across a coverage gap, a local gap of more than `stale_ns` (the clock's origin counts as an
    event), the steps after the first stale one and before the next event are left out: the book is
    stale there, so the kernel is not called and nothing can rest, and stepping through the gap
    would make memory and time follow the calendar instead of the data (a lake with captures
    months apart: hundreds of millions of steps). The first stale step is kept because it is the
    one that cancels the open quotes, as live does when its book stops updating. All steps stay on
    one grid, so a tape without such a gap gets the single run [1, capacity]."""
    t0, _, cap = decision_clock(ts_exch, local_ts, start_ns, step_ns)
    gaps = _gap_skips(local_ts, t0, step_ns, stale_ns, np.empty(0, np.int64))
    out = np.empty(2 * gaps + 2, np.int64)
    out[0] = 1
    _gap_skips(local_ts, t0, step_ns, stale_ns, out)
    out[2 * gaps + 1] = cap
    return out


GAP_STRIDE = 64  # events per test of `_gap_skips`'s scan for coverage gaps


@njit(cache=True, nogil=True)
def _gap_skips(local_ts, t0, step_ns, stale_ns, out):
    """Count the gaps whose steps `decision_segments` leaves out; with room in `out`, write each
    one's last kept step and next kept step at out[2g + 1], out[2g + 2]. local_ts is sorted."""
    fill = out.shape[0] > 0
    n = local_ts.shape[0]
    i = _advance(local_ts, 0, n, t0)  # events up to t0 do not move the clock's origin
    g = 0
    if i < n:
        g = _gap_skip(t0, local_ts[i], t0, step_ns, stale_ns, out, g, fill)
    # Times are sorted, so a stride whose ends are within stale_ns holds no gap: one test per
    # GAP_STRIDE events instead of one per event (a pass per event cost ~1.3 ns each, several
    # times the rest of the run's inputs on the sample).
    j = i
    while j + 1 < n:
        e = min(j + GAP_STRIDE, n - 1)
        if local_ts[e] - local_ts[j] > stale_ns:
            for m in range(j + 1, e + 1):
                if local_ts[m] - local_ts[m - 1] > stale_ns:
                    g = _gap_skip(local_ts[m - 1], local_ts[m], t0, step_ns, stale_ns, out, g, fill)
        j = e
    return g


@njit(cache=True, nogil=True)
def _gap_skip(a, b, t0, step_ns, stale_ns, out, g, fill):
    """Between events at a and b (ns, b - a > stale_ns or not): the gap count after this one."""
    if b - a <= stale_ns:
        return g
    ks = (a + stale_ns - t0) // step_ns + 1  # the first step after the book went stale
    kb = (b - t0 + step_ns - 1) // step_ns  # the first step at or after the next event
    if kb <= ks + 1:
        return g  # no step to leave out
    if fill:
        out[2 * g + 1] = ks
        out[2 * g + 2] = kb
    return g + 1


@njit(cache=True, nogil=True)
def segment_steps(segments):
    """The number of steps in `decision_segments` runs."""
    total = 0
    for r in range(0, segments.shape[0], 2):
        total += segments[r + 1] - segments[r] + 1
    return total


@njit(cache=True, nogil=True)
def local_at_decisions(segments, local_ts, local_bb, local_ba, local_bbq, local_baq, local_synced, t0, step_ns,
                       stale_ns):  # fmt: skip
    """At each decision time of the clock (steps in `segments`, from `decision_segments`, on the grid
    t0 + k * step_ns): local events arrived by then, best bid and ask (ticks), their quantities and
    whether the local book is synced (and its last event at most `stale_ns` old: across a coverage
    gap no data says where the book is). The same for every parameter set over a tape: sweeps
    compute it once."""
    cap = segment_steps(segments)
    n = local_ts.shape[0]
    lj_ = np.empty(cap, np.int64)
    bb = np.empty(cap, np.int64)
    ba = np.empty(cap, np.int64)
    bbq = np.empty(cap)
    baq = np.empty(cap)
    syn = np.empty(cap, np.bool_)
    lj = 0
    k = 0
    for r in range(0, segments.shape[0], 2):
        for step in range(segments[r], segments[r + 1] + 1):
            target = t0 + step * step_ns
            lj = _advance(local_ts, lj, n, target)
            lj_[k] = lj
            bb[k] = local_bb[lj - 1] if lj > 0 else EMPTY
            ba[k] = local_ba[lj - 1] if lj > 0 else EMPTY
            bbq[k] = local_bbq[lj - 1] if lj > 0 else 0.0
            baq[k] = local_baq[lj - 1] if lj > 0 else 0.0
            syn[k] = lj > 0 and local_synced[lj - 1] and target - local_ts[lj - 1] <= stale_ns
            k += 1
    return lj_, bb, ba, bbq, baq, syn


@njit(cache=True, _nrt=False)
def _execute(s_, ts, q, full, r_arrive, x_leaves, x_live, x_pos, o_side, inflight, counters, r_ts, r_st, r_slot,
             r_status, r_exch_ts, r_qty):  # fmt: skip
    """q of the order in slot s_ executed at the exchange at ts; queue the response.

    `full` marks the last execution (the order leaves the book); the caller removes it from the index.
    """
    x_leaves[s_] -= q
    if full:
        x_live[s_] = False
        x_leaves[s_] = 0.0
    x_pos[0] += q if o_side[s_] > 0 else -q
    k = _bus_push(r_ts, r_st, r_arrive)
    r_slot[k] = s_
    r_status[k] = ST_FILLED if full else RESP_PARTIAL
    r_exch_ts[k] = ts
    r_qty[k] = q
    inflight[s_] += 1
    counters[4] += 1
    if not full:
        counters[8] += 1


@njit(_signature(), cache=True, nogil=True)
def run(  # noqa: C901 - the loop is the model; splitting it would hide the order of events
    ts_exch,
    kind,
    side,
    ticks,
    qty,
    prev_qty,
    best_bid,
    best_ask,
    local_ts,
    local_bb,
    local_ba,
    local_bbq,
    local_baq,
    level_rows,
    level_ukeys,
    level_starts,
    reset_rows,
    reset_sides,
    synced,
    local_synced,
    blk_hi,
    blk_lo,
    segments,
    dec_lj,
    dec_bb,
    dec_ba,
    dec_bbq,
    dec_baq,
    dec_sync,
    fund_ts,
    fund_rate,
    fund_mark,
    lat_ts,
    lat_entry,
    lat_resp,
    start_ns,
    step_ns,
    stale_ns,
    tick,
    lot,
    min_notional,
    maker_fee,
    inverse,
    contract_size,
    queue_model,
    queue_n,
    partial,
    strategy,
    params,
    strategy_state,
    max_targets,
    reuse,
    fill_cap,
    gate_cfg,
    gate_state,
    blocked,
    qr_on,
    qr_cfg,
    qr_state,
    all_steps,
    progress,
):
    """Run a strategy over a prepared tape; returns fills, per-step records, the ledger and counters.

    Without `all_steps` only the steps' times, mids and equity are recorded (the other step arrays
    come back empty): all a sweep reads, without writing eight more values at every decision.
    progress[0] is set to the number of exchange rows processed at every decision (another thread
    may read it; the loop releases the GIL).
    """
    n = ts_exch.shape[0]
    cap = max(64, 4 * max_targets)
    o_side = np.zeros(cap, np.int8)
    o_px = np.zeros(cap, np.int64)
    o_qty = np.zeros(cap)
    o_level = np.zeros(cap, np.int64)
    o_id = np.zeros(cap, np.int64)
    o_qr = np.zeros(cap, np.int64)  # its record in the quantitative rules' state
    next_id = 0
    l_live = np.zeros(cap, np.bool_)  # tracked by the local side
    l_status = np.zeros(cap, np.int8)
    l_req = np.zeros(cap, np.int8)
    l_leaves = np.zeros(cap)
    x_live = np.zeros(cap, np.bool_)  # resting at the exchange
    x_leaves = np.zeros(cap)
    x_front = np.zeros(cap)
    x_cum = np.zeros(cap)
    # The order's next level row (position in level_rows) not yet applied, -1 until a trade at its
    # price needs it; the end of its level's rows there.
    x_lp = np.zeros(cap, np.int64)
    x_le = np.zeros(cap, np.int64)
    x_row = np.zeros(cap, np.int64)  # the exchange row the order arrived before
    n_state = strategy_state.shape[0]
    gates_on = gates_active(gate_cfg)  # all off: skip them (their rolling history is only read by gates)
    inflight = np.zeros(cap, np.int64)
    free = np.arange(cap - 1, -1, -1).astype(np.int64)
    nfree = cap
    hi = 0  # slots [0, hi) have been used: the free list hands out low slots first
    touched = True
    last_nt = -1
    # The last diff's intents all went out (gates off, slots to spare) and no response since could
    # change what it would say with the same targets: a fill, cancel or expiry of a targeted
    # quote, an acknowledgement of one no longer targeted, a rejected cancel (see `relevant`).
    settled = False
    d_nt = 0  # the last diff's target count (its table is read between diffs)
    k_pos = np.nan  # the position at the kernel's last call
    # Reusing the last targets (see REUSE_*): the local view of our orders changed (responses,
    # requests sent), and the inputs the kernel was last called with.
    dirty = True
    m = 0
    qbid = EMPTY
    qask = EMPTY
    k_bb = k_ba = EMPTY
    k_bbq = k_baq = np.nan
    p_side = np.zeros(max_targets, np.int8)
    p_px = np.zeros(max_targets, np.int64)
    p_qty = np.zeros(max_targets)
    x_pos = np.zeros(1)  # position as the exchange sees it (fills count when they happen there)
    nfund = fund_ts.shape[0]
    fi = 0
    funding_paid = 0.0
    p_ts = np.zeros(nfund, np.int64)
    p_pos = np.zeros(nfund)
    p_amount = np.zeros(nfund)
    # Exchange price index of resting orders, per side, sorted by price.
    ipx = np.zeros((2, cap), np.int64)
    islot = np.zeros((2, cap), np.int64)
    icnt = np.zeros(2, np.int64)
    # Buses: first-in first-out rings (see _bus_push), one per direction.
    q_ts = np.full(cap, MAX_TS, np.int64)
    q_slot = np.zeros(cap, np.int64)
    q_req = np.zeros(cap, np.int8)
    q_st = np.zeros(2, np.int64)  # ring: count, head
    r_ts = np.full(cap * 2, MAX_TS, np.int64)
    r_slot = np.zeros(cap * 2, np.int64)
    r_status = np.zeros(cap * 2, np.int8)
    r_exch_ts = np.zeros(cap * 2, np.int64)
    r_qty = np.zeros(cap * 2)
    r_st = np.zeros(2, np.int64)
    lvl_pos = np.zeros(level_ukeys.shape[0], np.int64)  # per price level: where its last search ended
    # The price levels of recent placements, direct-mapped by price: a grid quotes the same
    # few hundred prices again and again, and a hit saves a binary search over every level of the tape.
    lvl_key = np.full(LEVEL_CACHE, _MIN_TICKS, np.int64)  # level_key values; the lowest int64 is no level's
    lvl_u = np.zeros(LEVEL_CACHE, np.int64)
    q_last = np.int64(0)  # latest arrival on each bus: a message never overtakes an earlier one
    r_last = np.int64(0)
    led = np.zeros(LEDGER_SIZE)  # the local side's ledger
    # Fill records: fixed buffers (never reassigned in the loop, which would cost reference counting
    # on every response); when they are full the run stops with `overflow` and the caller reruns it
    # with larger ones. np.empty leaves untouched pages unmapped, so a generous cap costs no memory.
    f_ts_exch = np.empty(fill_cap, np.int64)
    f_ts_local = np.empty(fill_cap, np.int64)
    f_side = np.empty(fill_cap, np.int8)
    f_px = np.empty(fill_cap, np.int64)
    f_qty = np.empty(fill_cap)
    f_fee = np.empty(fill_cap)
    f_oid = np.empty(fill_cap, np.int64)
    f_level = np.empty(fill_cap, np.int64)
    f_pos = np.empty(fill_cap)
    f_real = np.empty(fill_cap)
    overflow = False
    nf = 0
    t_side = np.zeros(max_targets, np.int8)
    t_px = np.zeros(max_targets, np.int64)
    t_qty = np.zeros(max_targets)
    t_level = np.zeros(max_targets, np.int64)
    v_side = np.zeros(cap, np.int8)  # the open quotes the strategy is shown
    v_px = np.zeros(cap, np.int64)
    v_qty = np.zeros(cap)
    out_cancel = np.zeros(cap, np.int64)
    out_place = np.zeros(max_targets, np.int64)
    d_scratch = diff_scratch(max_targets)  # the diff's tables, kept for the whole run
    d_stamp = 0
    slots = np.zeros(cap, np.int64)
    any_gate = gates_on or qr_on
    gated_out = False  # the last decision's gates held back an intent
    blocked_before = 0
    qr_now = np.zeros(len(QR_OUT))  # the rules' ratios and order counts at a decision
    qr_max = np.full(len(QR_OUT), np.nan)  # ... their largest over the run
    qr_moved = True  # an order event since qr_now was read
    qr_sample_at = 0  # read qr_now again at this time at the latest
    t0, last_ts, _ = decision_clock(ts_exch, local_ts, start_ns, step_ns)
    n_steps_cap = segment_steps(segments)
    # The time of the last step of the clock's current run (`segments`): there the clock jumps
    # over a coverage gap to the next run; after the last run it goes on, unrecorded. A time, not
    # a step count, so a decision costs one comparison more than a clock without gaps.
    seg_at = 0  # where the current run starts in `segments`
    seg_end_t = t0 + segments[1] * step_ns if segments.shape[0] > 2 else MAX_TS
    n_dec = dec_lj.shape[0]
    k_dec = 0
    s_ts = np.zeros(n_steps_cap, np.int64)
    s_mid = np.zeros(n_steps_cap)
    s_eq = np.zeros(n_steps_cap)
    n_rec = n_steps_cap if all_steps else 0
    s_pos = np.zeros(n_rec)
    s_cash = np.zeros(n_rec)
    s_fee = np.zeros(n_rec)
    s_real = np.zeros(n_rec)
    s_open = np.zeros(n_rec, np.int64)
    s_qbid = np.zeros(n_rec, np.int64)  # our innermost open quotes, ticks (EMPTY if none)
    s_qask = np.zeros(n_rec, np.int64)
    s_mode = np.zeros(n_rec, np.int8)  # the strategy's state[0]: its controller mode, if it has one
    s_qr = np.zeros((len(QR_OUT), n_rec))  # qr_now at each step
    ns = 0
    counters = np.zeros(11, np.int64)  # see COUNTERS
    k_stale = False  # a decision on an unsynced book came since the kernel's last call
    ei = 0  # next exchange row
    lj = 0  # next local event
    tq, qi = MAX_TS, -1
    target = t0 + segments[0] * step_ns
    while True:
        # ---- exchange side: rows and request arrivals up to `target`, rows first on ties ----
        while True:
            te = ts_exch[ei] if ei < n else MAX_TS
            tf = fund_ts[fi] if fi < nfund else MAX_TS
            if tf < te and tf <= tq and tf <= target:
                # Funding settles on the position held at the exchange at that moment (settle
                # currency; positive rates: longs pay shorts).
                amount = notional(x_pos[0], fund_mark[fi], inverse, contract_size) * fund_rate[fi]
                funding_paid += amount
                p_ts[fi], p_pos[fi], p_amount[fi] = tf, x_pos[0], amount
                fi += 1
            elif te <= tq and te <= target and te != MAX_TS:
                # Rows that cannot reach our orders, up to the next request, decision or funding, are
                # passed over (depth at our prices is applied lazily, at a trade there): a block whose
                # summary (`block_extremes`) cannot reach them is left by its times alone, from any row
                # in it; in a block that might, rows are tested one by one.
                lim = min(tq, target, tf)
                min_ask = ipx[ASK, 0] if icnt[ASK] > 0 else MAX_TS
                max_bid = ipx[BID, icnt[BID] - 1] if icnt[BID] > 0 else _MIN_TICKS
                e0 = ei
                while ei < n:
                    b = ei >> BLOCK_SHIFT
                    end = min((b + 1) << BLOCK_SHIFT, n)
                    if blk_hi[b] < min_ask and blk_lo[b] > max_bid:
                        if ts_exch[end - 1] <= lim:
                            ei = end
                            continue
                        while ts_exch[ei] <= lim:  # stops inside the block: its last row is after lim
                            ei += 1
                        break
                    while ei < end and ts_exch[ei] <= lim:
                        if kind[ei] == 3:
                            reach_ask = ticks[ei] if side[ei] > 0 else _MIN_TICKS
                            reach_bid = ticks[ei] if side[ei] < 0 else MAX_TS
                        elif kind[ei] == 2:
                            break  # a reset: our resting orders leave the book (below)
                        else:
                            reach_ask = best_bid[ei]  # EMPTY is the lowest int64: reaches nothing
                            reach_bid = best_ask[ei] if best_ask[ei] != EMPTY else MAX_TS
                        if reach_ask >= min_ask or reach_bid <= max_bid:
                            break
                        ei += 1
                    if ei < end:
                        break  # a row that may reach us, or one after lim
                if ei != e0:
                    continue
                i = ei
                k_ = kind[i]
                p = ticks[i]
                if k_ == 3:
                    # Trade by an aggressor on side[i]: our orders on the other side may fill.
                    s = ASK if side[i] > 0 else BID
                    j = 0 if s == ASK else icnt[s] - 1
                    while (s == ASK and j < icnt[s] and ipx[s, j] <= p) or (s == BID and j >= 0 and ipx[s, j] >= p):
                        s_ = islot[s, j]
                        exec_q = 0.0
                        full = ipx[s, j] != p  # traded through our price: our level was taken out
                        if full:
                            exec_q = x_leaves[s_]
                        else:
                            if x_lp[s_] < 0:
                                # The queue it joined on arrival, once rows [0, x_row) had been applied:
                                # the level's rows from there on (galloping from where the last search
                                # there ended, so a price quoted again is found in a few steps).
                                ra = x_row[s_]
                                key = level_key(o_side[s_], p)
                                h = key & (LEVEL_CACHE - 1)  # the price's low bits (the side bit is far above them)
                                if lvl_key[h] == key:
                                    u = lvl_u[h]
                                else:
                                    u = level_of(level_ukeys, o_side[s_], p)
                                    lvl_key[h], lvl_u[h] = key, u
                                lo = hi_ = first = 0
                                if u >= 0:
                                    lo, hi_ = level_starts[u], level_starts[u + 1]
                                    g = lvl_pos[u]
                                    if g <= lo or level_rows[g - 1] >= ra:
                                        g = lo  # no earlier search there, or one from a later row
                                    first = _advance(level_rows, g, hi_, ra - 1)
                                    lvl_pos[u] = first
                                x_lp[s_], x_le[s_] = first, hi_
                                x_front[s_] = qty_at_cursor(level_rows, reset_rows, reset_sides, qty, o_side[s_], lo,
                                                            first, ra)  # fmt: skip
                            # Bring the queue up to date with the level's depth changes before this trade.
                            lp, le = x_lp[s_], x_le[s_]
                            while lp < le and level_rows[lp] < i:
                                r_ = level_rows[lp]
                                x_front[s_], x_cum[s_] = on_depth(
                                    queue_model, queue_n, x_front[s_], x_cum[s_], prev_qty[r_], qty[r_]
                                )
                                lp += 1
                            x_lp[s_] = lp
                            x_front[s_], x_cum[s_] = on_trade(x_front[s_], x_cum[s_], qty[i])
                            exec_q = filled_qty(x_front[s_], lot)
                            if exec_q > 0.0:
                                if partial and exec_q < x_leaves[s_] - 0.5 * lot:
                                    x_front[s_] = 0.0  # we took the traded quantity beyond the queue
                                else:
                                    exec_q = x_leaves[s_]
                                    full = True
                        if exec_q > 0.0:
                            ta = max(ts_exch[i] + latency_at(lat_ts, lat_resp, ts_exch[i]), r_last)
                            r_last = ta
                            _execute(s_, ts_exch[i], exec_q, full, ta, x_leaves, x_live, x_pos, o_side, inflight,
                                     counters, r_ts, r_st, r_slot, r_status, r_exch_ts, r_qty)  # fmt: skip
                        if full:
                            _idx_remove_at(ipx, islot, icnt, s, j)
                            if s == ASK:
                                continue  # the next order slid into position j
                        if s == ASK:
                            j += 1
                        else:
                            j -= 1
                elif k_ <= 1:
                    s = BID if side[i] > 0 else ASK
                    # (Depth changes at our prices are applied lazily, at the next trade there.)
                    # The best moved through our orders on the other side: they fill at their price.
                    o = -1
                    if s == BID:
                        nb = best_bid[i]
                        pb = best_bid[i - 1] if i > 0 else EMPTY
                        if nb != EMPTY and (pb == EMPTY or nb > pb):
                            o = ASK
                    else:
                        na = best_ask[i]
                        pa = best_ask[i - 1] if i > 0 else EMPTY
                        if na != EMPTY and (pa == EMPTY or na < pa):
                            o = BID
                    while o >= 0 and icnt[o] > 0:
                        j = 0 if o == ASK else icnt[o] - 1
                        if (o == ASK and ipx[o, j] > best_bid[i]) or (o == BID and ipx[o, j] < best_ask[i]):
                            break
                        s_ = islot[o, j]
                        _idx_remove_at(ipx, islot, icnt, o, j)
                        ta = max(ts_exch[i] + latency_at(lat_ts, lat_resp, ts_exch[i]), r_last)
                        r_last = ta
                        _execute(s_, ts_exch[i], x_leaves[s_], True, ta, x_leaves, x_live, x_pos, o_side, inflight,
                                 counters, r_ts, r_st, r_slot, r_status, r_exch_ts, r_qty)  # fmt: skip
                else:
                    # A reset (of either side): from here the data no longer says where the book is
                    # (a sequence break, or another capture's data after a coverage gap), so nothing
                    # can fill or queue our orders truthfully. The venue cancels all of them, as on
                    # a dropped session; none is accepted again before a snapshot (decision 021).
                    for o in range(2):
                        while icnt[o] > 0:
                            s_ = islot[o, icnt[o] - 1]
                            _idx_remove_at(ipx, islot, icnt, o, icnt[o] - 1)
                            x_live[s_] = False
                            x_leaves[s_] = 0.0
                            ta = max(ts_exch[i] + latency_at(lat_ts, lat_resp, ts_exch[i]), r_last)
                            r_last = ta
                            k = _bus_push(r_ts, r_st, ta)
                            r_slot[k], r_status[k], r_exch_ts[k], r_qty[k] = s_, ST_CANCELED, ts_exch[i], 0.0
                            inflight[s_] += 1
                            counters[9] += 1
                ei += 1
            elif tq <= target and tq != MAX_TS:
                s_ = q_slot[qi]
                req = q_req[qi]
                _bus_pop(q_ts, q_st)
                inflight[s_] -= 1
                ta = max(tq + latency_at(lat_ts, lat_resp, tq), r_last)
                r_last = ta
                k = _bus_push(r_ts, r_st, ta)
                r_slot[k], r_exch_ts[k], r_qty[k] = s_, tq, 0.0
                inflight[s_] += 1
                lots = o_qty[s_] / lot
                if req == REQ_NEW and (
                    lots < 0.5
                    or abs(lots - round(lots)) > 1e-9
                    or quote_notional(o_qty[s_], o_px[s_] * tick, inverse, contract_size) < min_notional * (1.0 - 1e-12)
                ):
                    # The venue's filters: whole lots, and at least the minimum notional (quote).
                    r_status[k] = RESP_FILTERED
                    counters[7] += 1
                elif req == REQ_NEW:
                    s = BID if o_side[s_] > 0 else ASK
                    # The exchange book now holds rows [0, ei). Its best price is read only when the
                    # order is within its block's extremes: reading it misses the cache on most arrivals.
                    # Its sync is read only in a block flagged as holding an unsynced row.
                    crosses = False
                    unsynced = ei == 0
                    if ei > 0:
                        b = (ei - 1) >> BLOCK_SHIFT
                        if s == BID:
                            lo_b = blk_lo[b]
                            if o_px[s_] >= lo_b:
                                if lo_b == UNSYNCED_LO and not synced[ei - 1]:
                                    unsynced = True
                                else:
                                    ba_x = best_ask[ei - 1]
                                    crosses = ba_x != EMPTY and o_px[s_] >= ba_x
                        else:
                            hi_b = blk_hi[b]
                            if o_px[s_] <= hi_b:
                                if hi_b == UNSYNCED_HI and not synced[ei - 1]:
                                    unsynced = True
                                else:
                                    bb_x = best_bid[ei - 1]
                                    crosses = bb_x != EMPTY and o_px[s_] <= bb_x
                    if unsynced:
                        # No book to rest in: the order expires (decision 021).
                        r_status[k] = ST_EXPIRED
                        counters[9] += 1
                    elif crosses:
                        r_status[k] = ST_EXPIRED
                        counters[2] += 1
                    else:
                        r_status[k] = ST_NEW
                        x_live[s_] = True
                        x_leaves[s_] = o_qty[s_]
                        # Where it joins its level's queue is looked up at the first trade at its
                        # price: most quotes are cancelled before one, and the lookup misses the cache.
                        x_lp[s_] = -1
                        x_row[s_] = ei
                        x_cum[s_] = 0.0
                        _idx_add(ipx, islot, icnt, s, o_px[s_], s_)
                elif x_live[s_]:
                    s = BID if o_side[s_] > 0 else ASK
                    _idx_remove_at(ipx, islot, icnt, s, _idx_find(ipx, icnt, s, o_px[s_]))
                    x_live[s_] = False
                    r_status[k] = ST_CANCELED
                else:
                    r_status[k] = RESP_REJECTED
                    counters[3] += 1
                tq, qi = _bus_top(q_ts, q_st)
            else:
                break
        # ---- local side: responses that have arrived, in arrival order ----
        while True:
            tr, ri = _bus_top(r_ts, r_st)
            if tr > target:
                break
            s_ = r_slot[ri]
            st = r_status[ri]
            _bus_pop(r_ts, r_st)
            touched = True
            dirty = True
            if settled:
                if st == RESP_PARTIAL:
                    relevant = False  # the quote stays, with its price and state
                elif st == RESP_REJECTED:
                    relevant = True
                else:
                    targeted = had_target(d_scratch, d_stamp, d_nt, o_side[s_], o_px[s_])
                    # A targeted quote left (fill, cancel, expiry), or an untargeted one can now be cancelled.
                    relevant = targeted != (st == ST_NEW)
                settled = not relevant
            inflight[s_] -= 1
            qr_moved = True
            if st == RESP_FILTERED:
                qr_end(qr_state, o_qr[s_], tr, QR_REJECTED)  # refused at the door: in no ratio
                st = ST_EXPIRED
            elif st == ST_CANCELED:
                qr_end(qr_state, o_qr[s_], tr, QR_CANCELLED)
            elif st == ST_EXPIRED:
                qr_end(qr_state, o_qr[s_], tr, QR_EXPIRED)
            if st == ST_FILLED or st == RESP_PARTIAL:
                qr_fill(qr_state, o_qr[s_], tr, r_qty[ri],
                        abs(quote_notional(r_qty[ri], o_px[s_] * tick, inverse, contract_size)))  # fmt: skip
                if st == ST_FILLED:
                    qr_end(qr_state, o_qr[s_], tr, QR_FILLED)
                fee = book_fill(led, o_side[s_], o_px[s_] * tick, r_qty[ri], maker_fee, inverse, contract_size)
                if nf == fill_cap:
                    overflow = True
                    break
                f_ts_exch[nf] = r_exch_ts[ri]
                f_ts_local[nf] = tr
                f_side[nf] = o_side[s_]
                f_px[nf] = o_px[s_]
                f_qty[nf] = r_qty[ri]
                f_fee[nf] = fee
                f_oid[nf] = o_id[s_]
                f_level[nf] = o_level[s_]
                f_pos[nf] = led[POSITION]
                f_real[nf] = led[REALIZED]
                nf += 1
                l_leaves[s_] -= r_qty[ri]
                if st == ST_FILLED:
                    l_status[s_] = ST_FILLED
                    l_req[s_] = REQ_NONE
                    l_leaves[s_] = 0.0
            elif st == RESP_REJECTED:
                l_req[s_] = REQ_NONE
            else:
                l_status[s_] = st
                l_req[s_] = REQ_NONE
            if not l_live[s_] and not x_live[s_] and inflight[s_] == 0:
                free[nfree] = s_
                nfree += 1
        if overflow:
            break
        # ---- local market data up to `target` ----
        if k_dec < n_dec:
            lj = dec_lj[k_dec]
        else:
            lj = _advance(local_ts, lj, n, target)
        # Nothing left to happen after `target`: the data has ended, no more decisions.
        tr, ri = _bus_top(r_ts, r_st)
        if ei >= n and lj >= n and tq == MAX_TS and tr == MAX_TS and (fi >= nfund or fund_ts[fi] > last_ts):
            break
        # ---- decision at `target` ----
        if k_dec < n_dec:  # read in order: no cache miss per decision
            bb, ba, bbq, baq = dec_bb[k_dec], dec_ba[k_dec], dec_bbq[k_dec], dec_baq[k_dec]
            syn = dec_sync[k_dec]
        else:
            bb = local_bb[lj - 1] if lj > 0 else EMPTY
            ba = local_ba[lj - 1] if lj > 0 else EMPTY
            bbq = local_bbq[lj - 1] if lj > 0 else 0.0
            baq = local_baq[lj - 1] if lj > 0 else 0.0
            syn = lj > 0 and local_synced[lj - 1] and target - local_ts[lj - 1] <= stale_ns
        k_dec += 1
        moved = bb != k_bb or ba != k_ba
        if moved and reuse == REUSE_BAND and bb != EMPTY and ba != EMPTY and n_state >= BAND_MIN_STATE:
            # The kernel's last call said its targets hold while bid + ask (ticks) stays in its band.
            sb = np.float64(bb + ba)
            moved = not (strategy_state[n_state - 2] <= sb <= strategy_state[n_state - 1])
        position = led[POSITION]
        fresh = syn and (
            k_stale  # the first decision on a synced book after an unsynced one: whatever the band says
            or (dirty and reuse != REUSE_BAND)  # a band kernel reads neither the clock nor our open quotes
            or (reuse == REUSE_BAND and position != k_pos)
            or gates_on
            or reuse == REUSE_NEVER
            or moved
            or (reuse == REUSE_TOP and (bbq != k_bbq or baq != k_baq))
        )
        if dirty:
            m = 0
            qbid = EMPTY
            qask = EMPTY
            for s_ in range(hi):
                if not l_live[s_]:
                    continue
                if l_status[s_] == ST_FILLED or l_status[s_] == ST_CANCELED or l_status[s_] == ST_EXPIRED:
                    l_live[s_] = False
                    if not x_live[s_] and inflight[s_] == 0:
                        free[nfree] = s_
                        nfree += 1
                else:
                    slots[m] = s_
                    v_side[m], v_px[m], v_qty[m] = o_side[s_], o_px[s_], l_leaves[s_]
                    m += 1
                    if o_side[s_] > 0 and (qbid == EMPTY or o_px[s_] > qbid):
                        qbid = o_px[s_]
                    elif o_side[s_] < 0 and (qask == EMPTY or o_px[s_] < qask):
                        qask = o_px[s_]
        dirty = False
        if not syn:
            # The book is not synced (before a snapshot, after a reset): the strategy is not
            # called and nothing should rest, as live (decision 021): the step cancels every quote.
            counters[10] += 1
            k_stale = True
        elif fresh:
            k_stale = False
            k_bb, k_ba, k_bbq, k_baq, k_pos = bb, ba, bbq, baq, position
        have_mid = bb != EMPTY and ba != EMPTY
        mid_now, eq_now, unit_now = gate_inputs(led, bb, ba, EMPTY, tick, funding_paid, inverse, contract_size)
        # A strategy sees only (params, its state, market, position, open quotes): with the same
        # targets and no order changed since the last diff (or only in ways that cannot change its
        # answer: `settled`), the diff would be empty.
        # A quote a gate held back last time is asked for again (as live does at every decision):
        # the gate may let it through now, with nothing else changed.
        orders_changed = (touched and not settled) or gated_out
        compare = settled or not touched
        stamp = d_stamp + 1
        if any_gate:
            blocked_before = blocked.sum()
        if step_is_idle(syn, fresh, orders_changed, gates_on, qr_on, last_nt):
            nt, nc, npl, diffed = (last_nt if syn else 0), 0, 0, False
        else:
            nt, nc, npl, diffed = decision_step(strategy, params, strategy_state,
                                                (syn, fresh, orders_changed, compare, gates_on, qr_on),
                                                (target, bb, ba, bbq, baq, tick, lot, position, eq_now, unit_now),
                                                (m, last_nt, stamp), v_side, v_px, v_qty, o_side, o_px, l_status, l_req,
                                                l_live, slots, t_side, t_px, t_qty, t_level, p_side, p_px, p_qty,
                                                out_cancel, out_place, gate_cfg, gate_state, qr_cfg, qr_state, blocked,
                                                d_scratch)  # fmt: skip
        if syn and fresh and (nt < 0 or nt > max_targets):
            raise ValueError("strategy kernel returned more targets than max_targets (or a negative count)")
        last_nt = nt
        gated_out = any_gate and blocked.sum() > blocked_before
        if diffed:
            d_stamp += 1
            d_nt = nt
            settled = not gates_on
        touched = False
        if not have_mid:
            eq_now = np.nan
        t_send = q_last
        if nc > 0 or npl > 0:
            dirty = True
            t_send = max(target + latency_at(lat_ts, lat_entry, target), q_last)
            q_last = t_send
        for c in range(nc):
            s_ = slots[out_cancel[c]]
            l_req[s_] = REQ_CANCEL
            k = _bus_push(q_ts, q_st, t_send)
            q_slot[k], q_req[k] = s_, REQ_CANCEL
            inflight[s_] += 1
            counters[1] += 1
        for pl in range(npl):
            j = out_place[pl]
            if nfree == 0:
                settled = False  # a target left unplaced
                break
            nfree -= 1
            s_ = free[nfree]
            hi = max(hi, s_ + 1)
            o_side[s_], o_px[s_], o_qty[s_], o_level[s_] = t_side[j], t_px[j], t_qty[j], t_level[j]
            o_id[s_] = next_id
            next_id += 1
            # Recorded as sent at the decision, valued at the mid (what the rules' gate assumed).
            o_qr[s_] = qr_new(qr_state, target, QR_GTC, t_qty[j], t_qty[j] * unit_now)
            qr_moved = True
            l_live[s_], l_status[s_], l_req[s_], l_leaves[s_] = True, ST_NONE, REQ_NEW, t_qty[j]
            k = _bus_push(q_ts, q_st, t_send)
            q_slot[k], q_req[k] = s_, REQ_NEW
            inflight[s_] += 1
            counters[0] += 1
        tq, qi = _bus_top(q_ts, q_st)
        if ns < n_steps_cap:
            s_ts[ns] = target
            s_mid[ns] = mid_now if have_mid else np.nan
            s_eq[ns] = eq_now
            if qr_moved or target >= qr_sample_at:
                # Read after every order event (the counts peak right after one), else once a second
                # (orders only leaving the windows): a decision with neither costs nothing here.
                qr_ratios(qr_state, qr_cfg, target, qr_now)
                for q in range(len(QR_OUT)):
                    if not np.isnan(qr_now[q]) and not qr_now[q] <= qr_max[q]:
                        qr_max[q] = qr_now[q]
                qr_moved = False
                qr_sample_at = target + QR_SAMPLE_NS
            if all_steps:
                s_pos[ns] = led[POSITION]
                s_cash[ns] = led[CASH]
                s_fee[ns] = led[FEES]
                s_real[ns] = led[REALIZED]
                s_open[ns] = m
                s_qbid[ns] = qbid
                s_qask[ns] = qask
                s_mode[ns] = np.int8(strategy_state[0]) if strategy_state.shape[0] > 0 else 0
                s_qr[:, ns] = qr_now
            ns += 1
        progress[0] = ei
        if target == seg_end_t:
            seg_at += 2
            target = t0 + segments[seg_at] * step_ns
            seg_end_t = t0 + segments[seg_at + 1] * step_ns if seg_at + 2 < segments.shape[0] else MAX_TS
        else:
            target += step_ns
    counters[5] = ei
    counters[6] = ns
    progress[0] = n
    fills = (f_ts_exch[:nf], f_ts_local[:nf], f_side[:nf], f_px[:nf], f_qty[:nf], f_fee[:nf], f_oid[:nf],
             f_level[:nf], f_pos[:nf], f_real[:nf])  # fmt: skip
    steps = (s_ts[:ns], s_mid[:ns], s_pos[:ns], s_cash[:ns], s_fee[:ns], s_real[:ns], s_eq[:ns], s_open[:ns],
             s_qbid[:ns], s_qask[:ns], s_mode[:ns])  # fmt: skip
    funding = (p_ts[:fi], p_pos[:fi], p_amount[:fi])
    return fills, steps, funding, led, funding_paid, counters, (s_qr[:, :ns], qr_max), overflow
