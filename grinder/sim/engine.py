"""The backtest event loop: one compiled pass over a tape with an exchange side and a local side.

Two clocks, as on a real venue. The *exchange* side replays book rows and trades in exchange
time, holds our resting orders with their queue position, and fills them. The *local* side sees
the same events later, at their (corrected) local receive time, and is where the strategy
decides, every `step_ns` of local time. Orders travel local -> exchange with the entry latency and
responses travel back with the response latency. At equal timestamps the order of processing is:
local data, responses arriving locally, exchange data, requests arriving at the exchange (as
hftbacktest does), so both engines see the same sequence.

The books themselves are not rebuilt here: `grinder.sim.replay` records once per tape what the
loop needs from them (quantity before each row, best prices after each row, the local view).
Between two decisions the loop only walks exchange rows and checks them against our few orders.

Fill rules (no partial fills): a resting buy fills in full at its own price when the best ask
drops to or below it, when a sell trade prints below it, or when the queue ahead of it at its
price is consumed (queue model). Orders are post-only (GTX): one that would cross on arrival
expires; one that breaks the venue's filters (whole lots, minimum notional) is rejected. Prices
are int64 ticks, quantities float64 base units, times int64 ns.
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
    diff_quotes,
)
from grinder.core.gates import apply_gates
from grinder.sim.queue import filled_qty, on_depth, on_trade
from grinder.sim.replay import qty_before

MAX_TS = np.iinfo(np.int64).max
RESP_REJECTED = -1  # response status for a cancel that found no order

# The strategy kernel's signature (see grinder.core.strategy). The engine takes the kernel as a
# typed function pointer, so it is compiled once for every strategy and cached on disk.
STRATEGY_SIG = types.int64(
    types.float64[::1],  # params
    types.float64[::1],  # state, kept between decisions (zeros at the start)
    types.int64,  # now, ns (local clock)
    types.int64,  # best bid, ticks (EMPTY if none)
    types.int64,  # best ask, ticks
    types.float64,  # quantity at the best bid, base units
    types.float64,  # quantity at the best ask
    types.float64,  # tick size
    types.float64,  # lot size
    types.float64,  # position, base units
    types.int8[::1],  # out: side
    types.int64[::1],  # out: price, ticks
    types.float64[::1],  # out: quantity, base units
)
STRATEGY_FN = types.FunctionType(STRATEGY_SIG)


def _run_signature(tape_readonly: bool):
    a = lambda t, ro=False: types.Array(t, 1, "C", readonly=ro)  # noqa: E731
    ro = tape_readonly
    return (
        a(types.int64, ro),
        a(types.int8, ro),
        a(types.int8, ro),
        a(types.int64, ro),
        a(types.float64, ro),
        a(types.float64),
        a(types.int64),
        a(types.int64),
        a(types.int64),
        a(types.int64),
        a(types.int64),
        a(types.float64),
        a(types.float64),
        a(types.int64),
        a(types.int64),
        a(types.int64),
        a(types.int64),
        a(types.int64),
        a(types.float64),
        a(types.float64),
        types.int64,
        types.int64,
        types.int64,
        types.int64,
        types.float64,
        types.float64,
        types.float64,
        types.float64,
        types.float64,
        types.int64,
        types.float64,
        STRATEGY_FN,
        a(types.float64),
        a(types.float64),
        types.int64,
        a(types.float64),
        a(types.float64),
        a(types.int64),
    )


@njit(cache=True)
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


@njit(cache=True)
def _idx_add(ipx, islot, icnt, s, px, slot):
    i = _idx_find(ipx, icnt, s, px)
    m = icnt[s]
    for k in range(m, i, -1):
        ipx[s, k] = ipx[s, k - 1]
        islot[s, k] = islot[s, k - 1]
    ipx[s, i] = px
    islot[s, i] = slot
    icnt[s] = m + 1


@njit(cache=True)
def _idx_remove_at(ipx, islot, icnt, s, i):
    m = icnt[s]
    for k in range(i, m - 1):
        ipx[s, k] = ipx[s, k + 1]
        islot[s, k] = islot[s, k + 1]
    icnt[s] = m - 1


@njit(cache=True, inline="always")
def _before(ts, sq, a, b):
    return ts[a] < ts[b] or (ts[a] == ts[b] and sq[a] < sq[b])


@njit(cache=True)
def _bus_push(ts, sq, heap, st, free, t, s):
    """Queue an entry due at t (ties: lower s first) on a bus; returns its index for the payload."""
    if st[1] == 0:
        raise RuntimeError("order bus full")
    st[1] -= 1
    k = free[st[1]]
    ts[k] = t
    sq[k] = s
    i = st[0]
    st[0] += 1
    heap[i] = k
    while i > 0:
        parent = (i - 1) >> 1
        if not _before(ts, sq, heap[i], heap[parent]):
            break
        heap[i], heap[parent] = heap[parent], heap[i]
        i = parent
    return k


@njit(cache=True, inline="always")
def _bus_top(ts, heap, st):
    """(due time, index) of a bus's earliest entry; (MAX_TS, -1) when empty."""
    if st[0] == 0:
        return MAX_TS, -1
    return ts[heap[0]], heap[0]


@njit(cache=True)
def _bus_pop(ts, sq, heap, st, free):
    """Remove the earliest entry (its payload stays readable until the next push)."""
    k = heap[0]
    st[0] -= 1
    n = st[0]
    heap[0] = heap[n]
    i = 0
    while True:
        lft = 2 * i + 1
        if lft >= n:
            break
        c = lft
        if lft + 1 < n and _before(ts, sq, heap[lft + 1], heap[lft]):
            c = lft + 1
        if not _before(ts, sq, heap[c], heap[i]):
            break
        heap[i], heap[c] = heap[c], heap[i]
        i = c
    ts[k] = MAX_TS
    free[st[1]] = k
    st[1] += 1


@njit(cache=True, inline="always")
def _fill(
    s_,
    ts,
    response_ns,
    seq,
    o_qty,
    x_live,
    inflight,
    counters,
    r_ts,
    r_seq,
    r_slot,
    r_status,
    r_exch_ts,
    r_qty,
    o_side,
    x_pos,
    r_heap,
    r_st,
    r_free,
):
    """Order in slot s_ filled in full at the exchange at ts: queue the fill response; returns next seq."""
    x_live[s_] = False
    x_pos[0] += o_qty[s_] if o_side[s_] > 0 else -o_qty[s_]
    k = _bus_push(r_ts, r_seq, r_heap, r_st, r_free, ts + response_ns, seq)
    r_slot[k] = s_
    r_status[k] = ST_FILLED
    r_exch_ts[k] = ts
    r_qty[k] = o_qty[s_]
    inflight[s_] += 1
    counters[4] += 1
    return seq + 1


@njit([_run_signature(False), _run_signature(True)], cache=True)
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
    level_keys,
    reset_rows,
    reset_sides,
    fund_ts,
    fund_rate,
    fund_mark,
    start_ns,
    step_ns,
    entry_ns,
    response_ns,
    tick,
    lot,
    min_notional,
    maker_fee,
    taker_fee,
    queue_model,
    queue_n,
    strategy,
    params,
    strategy_state,
    max_targets,
    gate_cfg,
    gate_state,
    blocked,
):
    """Run a strategy over a prepared tape; returns fills, per-step records and counters."""
    n = ts_exch.shape[0]
    cap = max(64, 4 * max_targets)
    o_side = np.zeros(cap, np.int8)
    o_px = np.zeros(cap, np.int64)
    o_qty = np.zeros(cap)
    l_live = np.zeros(cap, np.bool_)  # tracked by the local side
    l_status = np.zeros(cap, np.int8)
    l_req = np.zeros(cap, np.int8)
    x_live = np.zeros(cap, np.bool_)  # resting at the exchange
    x_front = np.zeros(cap)
    x_cum = np.zeros(cap)
    inflight = np.zeros(cap, np.int64)
    free = np.arange(cap - 1, -1, -1).astype(np.int64)
    nfree = cap
    hi = 0  # slots [0, hi) have been used: the free list hands out low slots first
    touched = True
    last_nt = -1
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
    # Buses (unordered; the earliest entry is looked up when they change).
    q_ts = np.full(cap, MAX_TS, np.int64)
    q_seq = np.zeros(cap, np.int64)
    q_slot = np.zeros(cap, np.int64)
    q_req = np.zeros(cap, np.int8)
    r_ts = np.full(cap * 2, MAX_TS, np.int64)
    r_seq = np.zeros(cap * 2, np.int64)
    r_slot = np.zeros(cap * 2, np.int64)
    r_status = np.zeros(cap * 2, np.int8)
    r_exch_ts = np.zeros(cap * 2, np.int64)
    r_qty = np.zeros(cap * 2)
    q_heap = np.zeros(cap, np.int64)
    q_st = np.array([0, cap], np.int64)  # heap size, free entries
    q_free = np.arange(cap).astype(np.int64)
    r_heap = np.zeros(cap * 2, np.int64)
    r_st = np.array([0, cap * 2], np.int64)
    r_free = np.arange(cap * 2).astype(np.int64)
    seq = 0
    # Ledger of the local side.
    position = 0.0
    balance = 0.0
    fees = 0.0
    f_cap = 1024
    f_ts_exch = np.zeros(f_cap, np.int64)
    f_ts_local = np.zeros(f_cap, np.int64)
    f_side = np.zeros(f_cap, np.int8)
    f_px = np.zeros(f_cap, np.int64)
    f_qty = np.zeros(f_cap)
    f_maker = np.zeros(f_cap, np.bool_)
    f_fee = np.zeros(f_cap)
    nf = 0
    t_side = np.zeros(max_targets, np.int8)
    t_px = np.zeros(max_targets, np.int64)
    t_qty = np.zeros(max_targets)
    out_cancel = np.zeros(cap, np.int64)
    out_place = np.zeros(max_targets, np.int64)
    slots = np.zeros(cap, np.int64)
    # Decision clock: start_ns + k * step_ns (k >= 1), or from the first event when start_ns <= 0.
    if start_ns > 0 or n == 0:
        t0 = start_ns
    else:
        t0 = min(ts_exch[0], local_ts[0])
    last_ts = max(ts_exch[n - 1], local_ts[n - 1]) if n > 0 else t0
    n_steps_cap = max(1, (last_ts - t0) // step_ns + 2)
    s_ts = np.zeros(n_steps_cap, np.int64)
    s_mid = np.zeros(n_steps_cap)
    s_pos = np.zeros(n_steps_cap)
    s_bal = np.zeros(n_steps_cap)
    s_fee = np.zeros(n_steps_cap)
    s_open = np.zeros(n_steps_cap, np.int64)
    s_mode = np.zeros(n_steps_cap, np.int8)  # the strategy's state[0]: its controller mode, if it has one
    ns = 0
    # placed, cancelled, expired (post-only), cancel_rejected, fills, events, decisions, rejected (filters)
    counters = np.zeros(8, np.int64)
    ei = 0  # next exchange row
    lj = 0  # next local event
    tq, qi = MAX_TS, -1
    target = t0 + step_ns
    while True:
        # ---- exchange side: rows and request arrivals up to `target`, rows first on ties ----
        while True:
            te = ts_exch[ei] if ei < n else MAX_TS
            tf = fund_ts[fi] if fi < nfund else MAX_TS
            if tf < te and tf <= tq and tf <= target:
                # Funding settles on the position held at the exchange at that moment (quote currency;
                # positive rates: longs pay shorts).
                amount = x_pos[0] * fund_mark[fi] * fund_rate[fi]
                funding_paid += amount
                p_ts[fi], p_pos[fi], p_amount[fi] = tf, x_pos[0], amount
                fi += 1
            elif te <= tq and te <= target and te != MAX_TS:
                i = ei
                k_ = kind[i]
                p = ticks[i]
                if k_ == 3:
                    # Trade by an aggressor on side[i]: our orders on the other side may fill.
                    if side[i] > 0:
                        s = ASK
                        j = 0
                        while j < icnt[s] and ipx[s, j] <= p:
                            s_ = islot[s, j]
                            fill = ipx[s, j] < p
                            if not fill:
                                x_front[s_], x_cum[s_] = on_trade(x_front[s_], x_cum[s_], qty[i])
                                fill = filled_qty(x_front[s_], lot) > 0.0
                            if fill:
                                _idx_remove_at(ipx, islot, icnt, s, j)
                                seq = _fill(
                                    s_,
                                    ts_exch[i],
                                    response_ns,
                                    seq,
                                    o_qty,
                                    x_live,
                                    inflight,
                                    counters,
                                    r_ts,
                                    r_seq,
                                    r_slot,
                                    r_status,
                                    r_exch_ts,
                                    r_qty,
                                    o_side,
                                    x_pos,
                                    r_heap,
                                    r_st,
                                    r_free,
                                )
                            else:
                                j += 1
                    else:
                        s = BID
                        j = icnt[s] - 1
                        while j >= 0 and ipx[s, j] >= p:
                            s_ = islot[s, j]
                            fill = ipx[s, j] > p
                            if not fill:
                                x_front[s_], x_cum[s_] = on_trade(x_front[s_], x_cum[s_], qty[i])
                                fill = filled_qty(x_front[s_], lot) > 0.0
                            if fill:
                                _idx_remove_at(ipx, islot, icnt, s, j)
                                seq = _fill(
                                    s_,
                                    ts_exch[i],
                                    response_ns,
                                    seq,
                                    o_qty,
                                    x_live,
                                    inflight,
                                    counters,
                                    r_ts,
                                    r_seq,
                                    r_slot,
                                    r_status,
                                    r_exch_ts,
                                    r_qty,
                                    o_side,
                                    x_pos,
                                    r_heap,
                                    r_st,
                                    r_free,
                                )
                            j -= 1
                elif k_ <= 1:
                    s = BID if side[i] > 0 else ASK
                    if icnt[s] > 0 and ipx[s, 0] <= p <= ipx[s, icnt[s] - 1]:
                        j = _idx_find(ipx, icnt, s, p)
                        if j < icnt[s] and ipx[s, j] == p:
                            s_ = islot[s, j]
                            x_front[s_], x_cum[s_] = on_depth(
                                queue_model, queue_n, x_front[s_], x_cum[s_], prev_qty[i], qty[i]
                            )
                    # The best moved through our orders on the other side: they fill at their price.
                    if s == BID:
                        nb = best_bid[i]
                        pb = best_bid[i - 1] if i > 0 else EMPTY
                        if nb != EMPTY and (pb == EMPTY or nb > pb):
                            o = ASK
                            while icnt[o] > 0 and ipx[o, 0] <= nb:
                                s_ = islot[o, 0]
                                _idx_remove_at(ipx, islot, icnt, o, 0)
                                seq = _fill(
                                    s_,
                                    ts_exch[i],
                                    response_ns,
                                    seq,
                                    o_qty,
                                    x_live,
                                    inflight,
                                    counters,
                                    r_ts,
                                    r_seq,
                                    r_slot,
                                    r_status,
                                    r_exch_ts,
                                    r_qty,
                                    o_side,
                                    x_pos,
                                    r_heap,
                                    r_st,
                                    r_free,
                                )
                    else:
                        na = best_ask[i]
                        pa = best_ask[i - 1] if i > 0 else EMPTY
                        if na != EMPTY and (pa == EMPTY or na < pa):
                            o = BID
                            while icnt[o] > 0 and ipx[o, icnt[o] - 1] >= na:
                                s_ = islot[o, icnt[o] - 1]
                                _idx_remove_at(ipx, islot, icnt, o, icnt[o] - 1)
                                seq = _fill(
                                    s_,
                                    ts_exch[i],
                                    response_ns,
                                    seq,
                                    o_qty,
                                    x_live,
                                    inflight,
                                    counters,
                                    r_ts,
                                    r_seq,
                                    r_slot,
                                    r_status,
                                    r_exch_ts,
                                    r_qty,
                                    o_side,
                                    x_pos,
                                    r_heap,
                                    r_st,
                                    r_free,
                                )
                ei += 1
                counters[5] += 1
            elif tq <= target and tq != MAX_TS:
                s_ = q_slot[qi]
                req = q_req[qi]
                _bus_pop(q_ts, q_seq, q_heap, q_st, q_free)
                inflight[s_] -= 1
                k = _bus_push(r_ts, r_seq, r_heap, r_st, r_free, tq + response_ns, seq)
                r_slot[k], r_exch_ts[k], r_qty[k] = s_, tq, 0.0
                seq += 1
                inflight[s_] += 1
                lots = o_qty[s_] / lot
                if req == REQ_NEW and (
                    lots < 0.5
                    or abs(lots - round(lots)) > 1e-9
                    or o_px[s_] * tick * o_qty[s_] < min_notional * (1.0 - 1e-12)
                ):
                    # The venue's filters: whole lots, and at least the minimum notional (quote).
                    r_status[k] = ST_EXPIRED
                    counters[7] += 1
                elif req == REQ_NEW:
                    s = BID if o_side[s_] > 0 else ASK
                    # The exchange book now holds rows [0, ei).
                    bb_x = best_bid[ei - 1] if ei > 0 else EMPTY
                    ba_x = best_ask[ei - 1] if ei > 0 else EMPTY
                    if s == BID:
                        crosses = ba_x != EMPTY and o_px[s_] >= ba_x
                    else:
                        crosses = bb_x != EMPTY and o_px[s_] <= bb_x
                    if crosses:
                        r_status[k] = ST_EXPIRED
                        counters[2] += 1
                    else:
                        r_status[k] = ST_NEW
                        x_live[s_] = True
                        x_front[s_] = qty_before(
                            level_rows, level_keys, reset_rows, reset_sides, qty, o_side[s_], o_px[s_], ei
                        )
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
                tq, qi = _bus_top(q_ts, q_heap, q_st)
            else:
                break
        # ---- local side: responses that have arrived, in arrival order ----
        while True:
            tr, ri = _bus_top(r_ts, r_heap, r_st)
            if tr > target:
                break
            s_ = r_slot[ri]
            st = r_status[ri]
            _bus_pop(r_ts, r_seq, r_heap, r_st, r_free)
            touched = True
            inflight[s_] -= 1
            if st == ST_FILLED:
                sgn = 1.0 if o_side[s_] > 0 else -1.0
                notional = r_qty[ri] * (o_px[s_] * tick)
                fee = notional * maker_fee
                position += sgn * r_qty[ri]
                balance -= sgn * notional
                fees += fee
                if nf == f_cap:
                    f_cap *= 2
                    f_ts_exch = np.concatenate((f_ts_exch, np.zeros(f_cap - nf, np.int64)))
                    f_ts_local = np.concatenate((f_ts_local, np.zeros(f_cap - nf, np.int64)))
                    f_side = np.concatenate((f_side, np.zeros(f_cap - nf, np.int8)))
                    f_px = np.concatenate((f_px, np.zeros(f_cap - nf, np.int64)))
                    f_qty = np.concatenate((f_qty, np.zeros(f_cap - nf)))
                    f_maker = np.concatenate((f_maker, np.zeros(f_cap - nf, np.bool_)))
                    f_fee = np.concatenate((f_fee, np.zeros(f_cap - nf)))
                f_ts_exch[nf] = r_exch_ts[ri]
                f_ts_local[nf] = tr
                f_side[nf] = o_side[s_]
                f_px[nf] = o_px[s_]
                f_qty[nf] = r_qty[ri]
                f_maker[nf] = True
                f_fee[nf] = fee
                nf += 1
                l_status[s_] = ST_FILLED
                l_req[s_] = REQ_NONE
            elif st == RESP_REJECTED:
                l_req[s_] = REQ_NONE
            else:
                l_status[s_] = st
                l_req[s_] = REQ_NONE
            if not l_live[s_] and not x_live[s_] and inflight[s_] == 0:
                free[nfree] = s_
                nfree += 1
        # ---- local market data up to `target` ----
        while lj < n and local_ts[lj] <= target:
            lj += 1
        # Nothing left to happen after `target`: the data has ended, no more decisions.
        tr, ri = _bus_top(r_ts, r_heap, r_st)
        if ei >= n and lj >= n and tq == MAX_TS and tr == MAX_TS and (fi >= nfund or fund_ts[fi] > last_ts):
            break
        # ---- decision at `target` ----
        bb = local_bb[lj - 1] if lj > 0 else EMPTY
        ba = local_ba[lj - 1] if lj > 0 else EMPTY
        # A strategy sees only (params, best prices, position): with those and every order's state
        # unchanged since the last decision, it would ask for what is already known.
        bbq = local_bbq[lj - 1] if lj > 0 else 0.0
        baq = local_baq[lj - 1] if lj > 0 else 0.0
        for s_ in range(hi):
            if l_live[s_] and (l_status[s_] == ST_FILLED or l_status[s_] == ST_CANCELED or l_status[s_] == ST_EXPIRED):
                l_live[s_] = False
                if not x_live[s_] and inflight[s_] == 0:
                    free[nfree] = s_
                    nfree += 1
        m = 0
        for s_ in range(hi):
            if l_live[s_]:
                slots[m] = s_
                m += 1
        nc = npl = 0
        nt = strategy(params, strategy_state, target, bb, ba, bbq, baq, tick, lot, position, t_side, t_px, t_qty)
        # The same targets as last time, and no order changed state since: the diff would be empty.
        same = not touched and nt == last_nt
        if same:
            for j in range(nt):
                if t_side[j] != p_side[j] or t_px[j] != p_px[j] or t_qty[j] != p_qty[j]:
                    same = False
                    break
        touched = False
        last_nt = nt
        p_side[:nt] = t_side[:nt]
        p_px[:nt] = t_px[:nt]
        p_qty[:nt] = t_qty[:nt]
        if not same:
            nc, npl = diff_quotes(
                t_side, t_px, nt, o_side, o_px, l_status, l_req, l_live, slots, m, out_cancel, out_place
            )
        mid_now = (bb + ba) * 0.5 * tick if bb != EMPTY and ba != EMPTY else 0.0
        npl, nc = apply_gates(
            gate_cfg,
            gate_state,
            target,
            position,
            bb * tick if bb != EMPTY else 0.0,
            ba * tick if ba != EMPTY else 0.0,
            balance + position * mid_now - fees,
            t_side,
            t_qty,
            out_place,
            npl,
            nc,
            m,
            blocked,
        )
        for c in range(nc):
            s_ = slots[out_cancel[c]]
            l_req[s_] = REQ_CANCEL
            k = _bus_push(q_ts, q_seq, q_heap, q_st, q_free, target + entry_ns, seq)
            q_slot[k], q_req[k] = s_, REQ_CANCEL
            seq += 1
            inflight[s_] += 1
            counters[1] += 1
        for pl in range(npl):
            j = out_place[pl]
            if nfree == 0:
                break
            nfree -= 1
            s_ = free[nfree]
            hi = max(hi, s_ + 1)
            o_side[s_], o_px[s_], o_qty[s_] = t_side[j], t_px[j], t_qty[j]
            l_live[s_], l_status[s_], l_req[s_] = True, ST_NONE, REQ_NEW
            k = _bus_push(q_ts, q_seq, q_heap, q_st, q_free, target + entry_ns, seq)
            q_slot[k], q_req[k] = s_, REQ_NEW
            seq += 1
            inflight[s_] += 1
            counters[0] += 1
        tq, qi = _bus_top(q_ts, q_heap, q_st)
        if ns < n_steps_cap:
            s_ts[ns] = target
            s_mid[ns] = (bb + ba) * 0.5 * tick if bb != EMPTY and ba != EMPTY else np.nan
            s_pos[ns] = position
            s_bal[ns] = balance
            s_fee[ns] = fees
            s_open[ns] = m
            s_mode[ns] = np.int8(strategy_state[0]) if strategy_state.shape[0] > 0 else 0
            ns += 1
        target += step_ns
    counters[6] = ns
    return (
        f_ts_exch[:nf],
        f_ts_local[:nf],
        f_side[:nf],
        f_px[:nf],
        f_qty[:nf],
        f_maker[:nf],
        f_fee[:nf],
        s_ts[:ns],
        s_mid[:ns],
        s_pos[:ns],
        s_bal[:ns],
        s_fee[:ns],
        s_open[:ns],
        counters,
        s_mode[:ns],
        position,
        balance,
        fees,
        p_ts[:fi],
        p_pos[:fi],
        p_amount[:fi],
        funding_paid,
    )
