"""The backtest event loop: one compiled pass over a tape with an exchange side and a local side.

Two clocks, as on a real venue. The *exchange* side replays book rows and trades in exchange
time, holds our resting orders with their queue position, and fills them. The *local* side sees
the same events later, at their (corrected) local receive time, keeps its own book, and is where
the strategy decides, every `step_ns` of local time. Orders travel local -> exchange with the
entry latency and responses travel back with the response latency. At equal timestamps the
order of processing is: local data, responses arriving locally, exchange data, requests arriving
at the exchange (as hftbacktest does), so both engines see the same sequence.

Fill rules (no partial fills): a resting buy fills in full at its own price when the best ask
drops to or below it, when a sell trade prints below it, or when the queue ahead of it at its
price is consumed (queue model). Orders are post-only (GTX): one that would cross on arrival
expires. Prices are int64 ticks, quantities float64 base units, times int64 ns.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from grinder.book.l2 import ASK, BID, EMPTY, apply_row, best_ticks, qty_at
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
from grinder.sim.queue import filled_qty, on_depth, on_trade

MAX_TS = np.iinfo(np.int64).max
RESP_REJECTED = -1  # response status for a cancel that found no order


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
def _idx_remove(ipx, islot, icnt, s, px):
    i = _idx_find(ipx, icnt, s, px)
    m = icnt[s]
    if i < m and ipx[s, i] == px:
        for k in range(i, m - 1):
            ipx[s, k] = ipx[s, k + 1]
            islot[s, k] = islot[s, k + 1]
        icnt[s] = m - 1


@njit(cache=True)
def run(  # noqa: C901 - the loop is the model; splitting it would hide the order of events
    ts_exch, ts_local, kind, side, ticks, qty, local_order,
    start_ns, step_ns, entry_ns, response_ns,
    tick, lot, maker_fee, taker_fee, queue_model, queue_n,
    strategy, params, max_targets, x_book, l_book,
):  # fmt: skip
    """Run a strategy over a tape; returns fills, per-step records and counters (see BacktestResult)."""
    n = ts_exch.shape[0]
    # Books: exchange view and local view.
    xh, xw, xok, xoq = x_book
    lh, lw, lok, loq = l_book
    # Order slots, shared by both views.
    cap = max(64, 4 * max_targets)
    o_side = np.zeros(cap, np.int8)
    o_px = np.zeros(cap, np.int64)
    o_qty = np.zeros(cap)
    o_local_ts = np.zeros(cap, np.int64)
    l_live = np.zeros(cap, np.bool_)  # tracked by the local side
    l_status = np.zeros(cap, np.int8)
    l_req = np.zeros(cap, np.int8)
    x_live = np.zeros(cap, np.bool_)  # resting at the exchange
    x_front = np.zeros(cap)
    x_cum = np.zeros(cap)
    inflight = np.zeros(cap, np.int64)
    free = np.arange(cap - 1, -1, -1).astype(np.int64)
    nfree = cap
    # Exchange price index of resting orders, per side, sorted by price.
    ipx = np.zeros((2, cap), np.int64)
    islot = np.zeros((2, cap), np.int64)
    icnt = np.zeros(2, np.int64)
    # Buses: requests to the exchange, responses to the local side (unordered, scanned for the earliest).
    q_ts = np.full(cap, MAX_TS, np.int64)
    q_seq = np.zeros(cap, np.int64)
    q_slot = np.zeros(cap, np.int64)
    q_req = np.zeros(cap, np.int8)
    r_ts = np.full(cap * 2, MAX_TS, np.int64)
    r_seq = np.zeros(cap * 2, np.int64)
    r_slot = np.zeros(cap * 2, np.int64)
    r_status = np.zeros(cap * 2, np.int8)
    r_exch_ts = np.zeros(cap * 2, np.int64)
    r_px = np.zeros(cap * 2, np.int64)
    r_qty = np.zeros(cap * 2)
    r_maker = np.zeros(cap * 2, np.bool_)
    seq = 0
    # Ledger (local side: what the strategy knows).
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
    # Strategy scratch.
    t_side = np.zeros(max_targets, np.int8)
    t_px = np.zeros(max_targets, np.int64)
    t_qty = np.zeros(max_targets)
    out_cancel = np.zeros(cap, np.int64)
    out_place = np.zeros(max_targets, np.int64)
    slots = np.zeros(cap, np.int64)
    # Per-step records.
    # Decision clock: start_ns + k * step_ns (k >= 1), or from the first event when start_ns <= 0.
    if start_ns > 0 or n == 0:
        t0 = start_ns
    else:
        t0 = min(ts_exch[0], ts_local[local_order[0]])
    last_ts = 0
    if n > 0:
        last_ts = max(ts_exch[n - 1], ts_local[local_order[n - 1]])
    n_steps_cap = max(1, (last_ts - t0) // step_ns + 2)
    s_ts = np.zeros(n_steps_cap, np.int64)
    s_mid = np.zeros(n_steps_cap)
    s_pos = np.zeros(n_steps_cap)
    s_bal = np.zeros(n_steps_cap)
    s_fee = np.zeros(n_steps_cap)
    s_open = np.zeros(n_steps_cap, np.int64)
    ns = 0
    counters = np.zeros(8, np.int64)  # placed, cancelled, expired, cancel_rejected, fills, events
    li = 0
    ei = 0
    target = t0 + step_ns
    bus_dirty = True
    tr = tq = MAX_TS
    ri = qi = -1
    while True:
        tl = ts_local[local_order[li]] if li < n else MAX_TS
        if bus_dirty:
            # Buses change only on order traffic, so their earliest entries are looked up then.
            tr, ri = _earliest(r_ts, r_seq)
            tq, qi = _earliest(q_ts, q_seq)
            bus_dirty = False
        te = ts_exch[ei] if ei < n else MAX_TS
        nxt = tl
        which = 0
        if tr < nxt:
            nxt = tr
            which = 1
        if te < nxt:
            nxt = te
            which = 2
        if tq < nxt:
            nxt = tq
            which = 3
        if nxt == MAX_TS:
            break
        if nxt > target:
            # ---- decision on the local side at `target` ----
            # Forget orders that are done (filled, cancelled, expired).
            for s_ in range(cap):
                if l_live[s_] and (l_status[s_] == ST_FILLED or l_status[s_] == ST_CANCELED
                                   or l_status[s_] == ST_EXPIRED):  # fmt: skip
                    l_live[s_] = False
                    if not x_live[s_] and inflight[s_] == 0:
                        free[nfree] = s_
                        nfree += 1
            bb = best_ticks(lh, BID)
            ba = best_ticks(lh, ASK)
            nt = strategy(params, bb, ba, tick, lot, position, t_side, t_px, t_qty)
            m = 0
            for s_ in range(cap):
                if l_live[s_]:
                    slots[m] = s_
                    m += 1
            nc, npl = diff_quotes(t_side, t_px, nt, o_side[slots[:m]], o_px[slots[:m]], l_status[slots[:m]],
                                  l_req[slots[:m]], l_live[slots[:m]], m, out_cancel, out_place)  # fmt: skip
            for c in range(nc):
                s_ = slots[out_cancel[c]]
                l_req[s_] = REQ_CANCEL
                for k in range(q_ts.shape[0]):
                    if q_ts[k] == MAX_TS:
                        q_ts[k] = target + entry_ns
                        q_seq[k] = seq
                        seq += 1
                        q_slot[k] = s_
                        q_req[k] = REQ_CANCEL
                        inflight[s_] += 1
                        break
                counters[1] += 1
            for p in range(npl):
                j = out_place[p]
                if nfree == 0:
                    break
                nfree -= 1
                s_ = free[nfree]
                o_side[s_] = t_side[j]
                o_px[s_] = t_px[j]
                o_qty[s_] = t_qty[j]
                o_local_ts[s_] = target
                l_live[s_] = True
                l_status[s_] = ST_NONE
                l_req[s_] = REQ_NEW
                for k in range(q_ts.shape[0]):
                    if q_ts[k] == MAX_TS:
                        q_ts[k] = target + entry_ns
                        q_seq[k] = seq
                        seq += 1
                        q_slot[k] = s_
                        q_req[k] = REQ_NEW
                        inflight[s_] += 1
                        break
                counters[0] += 1
            if ns < n_steps_cap:
                s_ts[ns] = target
                s_mid[ns] = (bb + ba) * 0.5 * tick if bb != EMPTY and ba != EMPTY else np.nan
                s_pos[ns] = position
                s_bal[ns] = balance
                s_fee[ns] = fees
                s_open[ns] = m
                ns += 1
            target += step_ns
            bus_dirty = True
            continue
        if which == 0:
            i = local_order[li]
            lok, loq = apply_row(lh, lw, lok, loq, kind[i], side[i], ticks[i], qty[i])
            li += 1
        elif which == 1:
            s_ = r_slot[ri]
            st = r_status[ri]
            r_ts[ri] = MAX_TS
            bus_dirty = True
            inflight[s_] -= 1
            if st == ST_FILLED:
                sgn = 1.0 if o_side[s_] > 0 else -1.0
                px = r_px[ri] * tick
                notional = r_qty[ri] * px
                fee = notional * (maker_fee if r_maker[ri] else taker_fee)
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
                f_px[nf] = r_px[ri]
                f_qty[nf] = r_qty[ri]
                f_maker[nf] = r_maker[ri]
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
        elif which == 2:
            i = ei
            k_ = kind[i]
            counters[5] += 1
            if k_ == 3:
                # Trade: the aggressor's side is side[i]; our orders on the other side may fill.
                p = ticks[i]
                if side[i] > 0:
                    s = ASK  # sells rest on the ask side: those priced at or below the trade
                    j = 0
                    while j < icnt[s] and ipx[s, j] <= p:
                        s_ = islot[s, j]
                        fill = ipx[s, j] < p
                        if not fill:
                            x_front[s_], x_cum[s_] = on_trade(x_front[s_], x_cum[s_], qty[i])
                            fill = filled_qty(x_front[s_], lot) > 0.0
                        if fill:
                            _idx_remove(ipx, islot, icnt, s, ipx[s, j])
                            x_live[s_] = False
                            k = _free_resp(r_ts)
                            r_ts[k] = ts_exch[i] + response_ns
                            r_seq[k] = seq
                            seq += 1
                            r_slot[k] = s_
                            r_status[k] = ST_FILLED
                            r_exch_ts[k] = ts_exch[i]
                            r_px[k] = o_px[s_]
                            r_qty[k] = o_qty[s_]
                            r_maker[k] = True
                            inflight[s_] += 1
                            counters[4] += 1
                            bus_dirty = True
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
                            _idx_remove(ipx, islot, icnt, s, ipx[s, j])
                            x_live[s_] = False
                            k = _free_resp(r_ts)
                            r_ts[k] = ts_exch[i] + response_ns
                            r_seq[k] = seq
                            seq += 1
                            r_slot[k] = s_
                            r_status[k] = ST_FILLED
                            r_exch_ts[k] = ts_exch[i]
                            r_px[k] = o_px[s_]
                            r_qty[k] = o_qty[s_]
                            r_maker[k] = True
                            inflight[s_] += 1
                            counters[4] += 1
                            bus_dirty = True
                        j -= 1
            elif k_ == 2:
                xok, xoq = apply_row(xh, xw, xok, xoq, k_, side[i], ticks[i], qty[i])
            else:
                s = BID if side[i] > 0 else ASK
                p = ticks[i]
                prev_best = best_ticks(xh, s)
                prev_q = qty_at(xh, xw, xok, xoq, s, p)
                xok, xoq = apply_row(xh, xw, xok, xoq, k_, side[i], p, qty[i])
                # Our order resting at this price on this side: update its queue position.
                j = _idx_find(ipx, icnt, s, p)
                if j < icnt[s] and ipx[s, j] == p:
                    s_ = islot[s, j]
                    x_front[s_], x_cum[s_] = on_depth(queue_model, queue_n, x_front[s_], x_cum[s_], prev_q, qty[i])
                new_best = best_ticks(xh, s)
                # The best moved through our orders on the other side: they fill at their price.
                if s == BID and new_best != EMPTY and (prev_best == EMPTY or new_best > prev_best):
                    o = ASK
                    while icnt[o] > 0 and ipx[o, 0] <= new_best:
                        s_ = islot[o, 0]
                        _idx_remove(ipx, islot, icnt, o, ipx[o, 0])
                        x_live[s_] = False
                        k = _free_resp(r_ts)
                        r_ts[k] = ts_exch[i] + response_ns
                        r_seq[k] = seq
                        seq += 1
                        r_slot[k] = s_
                        r_status[k] = ST_FILLED
                        r_exch_ts[k] = ts_exch[i]
                        r_px[k] = o_px[s_]
                        r_qty[k] = o_qty[s_]
                        r_maker[k] = True
                        inflight[s_] += 1
                        counters[4] += 1
                        bus_dirty = True
                elif s == ASK and new_best != EMPTY and (prev_best == EMPTY or new_best < prev_best):
                    o = BID
                    while icnt[o] > 0 and ipx[o, icnt[o] - 1] >= new_best:
                        s_ = islot[o, icnt[o] - 1]
                        _idx_remove(ipx, islot, icnt, o, ipx[o, icnt[o] - 1])
                        x_live[s_] = False
                        k = _free_resp(r_ts)
                        r_ts[k] = ts_exch[i] + response_ns
                        r_seq[k] = seq
                        seq += 1
                        r_slot[k] = s_
                        r_status[k] = ST_FILLED
                        r_exch_ts[k] = ts_exch[i]
                        r_px[k] = o_px[s_]
                        r_qty[k] = o_qty[s_]
                        r_maker[k] = True
                        inflight[s_] += 1
                        counters[4] += 1
                        bus_dirty = True
            ei += 1
        else:
            s_ = q_slot[qi]
            req = q_req[qi]
            q_ts[qi] = MAX_TS
            bus_dirty = True
            inflight[s_] -= 1
            k = _free_resp(r_ts)
            r_ts[k] = tq + response_ns
            r_seq[k] = seq
            seq += 1
            r_slot[k] = s_
            r_exch_ts[k] = tq
            r_px[k] = 0
            r_qty[k] = 0.0
            r_maker[k] = False
            inflight[s_] += 1
            if req == REQ_NEW:
                s = BID if o_side[s_] > 0 else ASK
                crosses = False
                if s == BID:
                    ba_x = best_ticks(xh, ASK)
                    crosses = ba_x != EMPTY and o_px[s_] >= ba_x
                else:
                    bb_x = best_ticks(xh, BID)
                    crosses = bb_x != EMPTY and o_px[s_] <= bb_x
                if crosses:
                    r_status[k] = ST_EXPIRED
                    counters[2] += 1
                else:
                    r_status[k] = ST_NEW
                    x_live[s_] = True
                    x_front[s_] = qty_at(xh, xw, xok, xoq, s, o_px[s_])
                    x_cum[s_] = 0.0
                    _idx_add(ipx, islot, icnt, s, o_px[s_], s_)
            else:
                if x_live[s_]:
                    s = BID if o_side[s_] > 0 else ASK
                    _idx_remove(ipx, islot, icnt, s, o_px[s_])
                    x_live[s_] = False
                    r_status[k] = ST_CANCELED
                else:
                    r_status[k] = RESP_REJECTED
                    counters[3] += 1
    counters[6] = ns
    return (f_ts_exch[:nf], f_ts_local[:nf], f_side[:nf], f_px[:nf], f_qty[:nf], f_maker[:nf], f_fee[:nf],
            s_ts[:ns], s_mid[:ns], s_pos[:ns], s_bal[:ns], s_fee[:ns], s_open[:ns], counters,
            position, balance, fees)  # fmt: skip


@njit(cache=True)
def _earliest(ts, sq):
    """(timestamp, index) of the earliest entry of a bus, first sent first on ties; MAX_TS if empty."""
    best = MAX_TS
    bi = -1
    for k in range(ts.shape[0]):
        if ts[k] < best or (ts[k] == best and best != MAX_TS and sq[k] < sq[bi]):
            best = ts[k]
            bi = k
    return best, bi


@njit(cache=True)
def _free_resp(r_ts):
    for k in range(r_ts.shape[0]):
        if r_ts[k] == MAX_TS:
            return k
    return -1
