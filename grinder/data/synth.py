"""Seeded synthetic perpetual-futures market: L2 depth diffs, trades, best bid/ask and mark price.

Model: a latent fair price (float ticks) switches between regimes as a semi-Markov chain in
exchange time: *quiet* (Ornstein-Uhlenbeck around the level where the regime began: a range),
*trend* (steady drift of random sign) and *toxic* bursts (directional jumps). The visible book
(integer lots per tick) follows the fair price only through order flow: every depth message
applies a few actions (a market order walking the opposite side, limit adds, cancels, quote
improvements inside the spread) whose sides lean towards ``fair - mid``. In quiet markets makers
refill the spread at once (1 tick typical); in toxic bursts they pull quotes and refill slowly
while one-sided market orders sweep several levels. Far levels are kept at a target occupancy,
so each side holds a few hundred levels.

The rows follow the lake schema with Binance USDT-M semantics: one BOOK_RESET row and a
snapshot, then diff messages of absolute quantities sharing update id and times; trades print
before the diff message that consumes their levels; a bookTicker-like BBO row follows every
message and a markPrice row every exchange second. Everything comes from one compiled pass
that reseeds numba's generator from `seed`, so equal arguments give bit-identical tables in any
process. The regime schedule is returned in ``report.notes``; ``regime_schedule`` parses it.
"""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
from numba import njit

from grinder.data.instruments import Instrument
from grinder.data.lake import IngestBatch, IngestReport
from grinder.data.schema import (
    BBO,
    BOOK,
    BOOK_DIFF,
    BOOK_RESET,
    BOOK_SNAPSHOT,
    FUNDING,
    SIDE_ASK,
    SIDE_BID,
    SIDE_BOTH,
    TRADES,
)

SEQ_SHIFT = 16  # seq = arrival line << 16 | row within the line's message, as the Binance ingest
NS = 1_000_000_000
MS = 1_000_000
FUNDING_PERIOD_NS = 8 * 3600 * NS

QUIET, TREND, TOXIC = 0, 1, 2
REGIME_NAMES = ("quiet", "trend", "toxic")

_RING = 1 << 13  # book slots per side, indexed by price ticks mod _RING; must exceed a side's span
_MASK = _RING - 1
_DEPTH = 1000  # target span of each side from its best level, ticks
_MSG_CAP = 2048  # most levels one message may touch

# Per-regime parameters, indexed QUIET, TREND, TOXIC.
_MSG_RATE = np.array([40.0, 60.0, 160.0])  # depth messages per second of exchange time
_EXTRA_ACTIONS = np.array([1.0, 1.5, 3.0])  # Poisson mean of further actions in a message
_P_TRADE = np.array([0.25, 0.35, 0.6])  # chance a message opens with a market order
_P_IMPROVE = np.array([0.9, 0.75, 0.5])  # chance an action refills a spread wider than 1 tick
_P_ADD = np.array([0.55, 0.55, 0.35])  # adds among the remaining actions (the rest cancel)
_P_PULL = np.array([0.5, 0.5, 0.85])  # chance a cancel removes the whole level
_TRADE_MEDIAN_QUOTE = np.array([2_000.0, 4_000.0, 15_000.0])  # market order size, quote currency
_TRADE_SIGMA = np.array([1.3, 1.3, 1.2])  # log-normal spread of market order sizes
_P_SWEEP = np.array([0.0, 0.02, 0.25])  # chance a market order is sized to walk several levels
_SIGMA_REL = np.array([1.2e-5, 1.5e-5, 3.0e-5])  # fair-price volatility, fraction per sqrt(second)
_FLOW_BIAS = np.array([0.0, 0.5, 2.0])  # extra logit pushing flow in the regime's direction
_DUR_MEAN_S = np.array([120.0, 60.0, 12.0])  # mean regime duration, seconds
_DUR_MIN_S = np.array([10.0, 10.0, 3.0])
_JITTER_NS = np.array([200_000.0, 300_000.0, 1_000_000.0])  # mean extra feed latency per line
_NEXT_REGIME_P = np.array([[0.0, 0.65, 0.35], [0.6, 0.0, 0.4], [0.6, 0.4, 0.0]])  # row: from

_QUIET_KAPPA = 1.0 / 20.0  # quiet mean reversion, 1/s
_TREND_DRIFT_REL = (1.5e-5, 4.0e-5)  # |drift| range, fraction per second
_JUMP_RATE = 1.5  # toxic jumps per second
_JUMP_MEAN_REL = 2.0e-5  # mean toxic jump, fraction of price
_HOME_REL = 0.02  # trends and bursts lean back towards the start price beyond this distance
_GAP_SCALE = 2.0  # ticks of fair-minus-mid that tilt order flow by one logit


@njit(cache=True)
def _grow(a, need):
    """`a` (one column per row of the array) with room for at least `need` entries per column."""
    cap = a.shape[1]
    if need <= cap:
        return a
    out = np.empty((a.shape[0], max(need, cap + cap // 2)), a.dtype)
    out[:, :cap] = a
    return out


@njit(cache=True)
def _occupancy(depth_ticks):
    """Target probability that the level `depth_ticks` behind the best is populated."""
    return 0.35 + 0.65 * math.exp(-depth_ticks / 40.0)


@njit(cache=True)
def _set_level(q, st, mb, s, p, lots):
    """Set side s (0 bid, 1 ask) at price p (ticks) to `lots`, track best/far ends, log it in the message.

    The caller never removes a side's last level. st holds best bid, best ask, far bid, far ask
    (ticks) and the message's row count; mb holds the message's (side, ticks, lots) rows.
    """
    q[s, p & _MASK] = lots
    d = 1 if s == 0 else -1  # direction of a better price on this side
    if lots > 0:
        if (p - st[s]) * d > 0:
            st[s] = p
        if (st[2 + s] - p) * d > 0:
            st[2 + s] = p
    else:
        if p == st[s]:
            x = p - d
            while q[s, x & _MASK] == 0:
                x -= d
            st[s] = x
        if p == st[2 + s]:
            x = p + d
            while q[s, x & _MASK] == 0:
                x += d
            st[2 + s] = x
    # A diff carries each level once, with its final quantity.
    n = st[4]
    for i in range(n):
        if mb[0, i] == s and mb[1, i] == p:
            mb[2, i] = lots
            return
    mb[0, n] = s
    mb[1, n] = p
    mb[2, n] = lots
    st[4] = n + 1


@njit(cache=True)
def _logn_lots(median_lots, sigma):
    """Log-normal size in lots (at least 1)."""
    return max(1, np.int64(median_lots * math.exp(sigma * np.random.standard_normal())))


@njit(cache=True)
def _to_px(ticks, tick, pdiv):
    """Price from ticks; dividing by an exact integer gives the decimal's nearest float."""
    return ticks / pdiv if pdiv > 0.0 else ticks * tick


@njit(cache=True)
def _to_qty(lots, lot, qdiv):
    """Base quantity from lots; see _to_px."""
    return lots / qdiv if qdiv > 0.0 else lots * lot


@njit(cache=True)
def _kernel(n_events, seed32, start_ns, mid_ticks0, tick, pdiv, lot, qdiv, lots_per_quote):
    """Generate every table in arrival order: times ns, prices ticks -> quote, sizes lots -> base qty.

    Returns column-major buffers and their row counts: book (int64 ts_exch, ts_local, seq,
    update_id; int8 kind, side; float64 price, qty), trades (int64 ts_exch, ts_local, seq,
    trade_id; int8 side; float64 price, qty), bbo (int64 ts_exch, ts_local, seq, update_id;
    float64 bid, bid qty, ask, ask qty), funding (int64 ts_exch, ts_local, seq, next funding;
    float64 mid, funding rate, basis) and the regime schedule (start ns, regime, direction).
    """
    np.random.seed(seed32)
    K = mid_ticks0  # ticks per unit of relative price move
    # Capacities from the usual mix (about 3/4 book rows, 1/4 trades, a ticker per 4 rows) with
    # headroom; buffers grow if a run deviates. The tables view these buffers without copying.
    bcap = n_events * 4 // 5 + 4096
    book_i = np.empty((4, bcap), np.int64)
    book_k = np.empty((2, bcap), np.int8)
    book_f = np.empty((2, bcap), np.float64)
    tcap = n_events * 3 // 10 + 4096
    tr_i = np.empty((4, tcap), np.int64)
    tr_s = np.empty((1, tcap), np.int8)
    tr_f = np.empty((2, tcap), np.float64)
    qcap = n_events * 3 // 10 + 1024
    bbo_i = np.empty((4, qcap), np.int64)
    bbo_f = np.empty((4, qcap), np.float64)
    fcap = n_events // 100 + 1024
    fu_i = np.empty((4, fcap), np.int64)
    fu_f = np.empty((3, fcap), np.float64)
    reg = np.empty((3, 256), np.int64)
    nb = nt = nq = nf = nr = 0

    q = np.zeros((2, _RING), np.int64)
    st = np.zeros(5, np.int64)
    mb = np.empty((3, _MSG_CAP), np.int64)
    g = 0  # arrival line counter: every message, trade, ticker and mark price is one line
    uid = 3_000_000_000_000 + np.int64(np.random.randint(0, 1_000_000))
    trade_id = 4_000_000_000 + np.int64(np.random.randint(0, 1_000_000))

    # --- initial snapshot: dense near the touch, thinning out to _DEPTH ticks ---
    bb = np.int64(mid_ticks0)
    st[0] = bb
    st[1] = bb + 1
    st[2] = bb
    st[3] = bb + 1
    deep_med = 30_000.0 * lots_per_quote
    for s in range(2):
        d_sign = 1 if s == 0 else -1
        for dep in range(_DEPTH):
            if dep == 0 or np.random.random() < _occupancy(dep):
                p = st[s] - d_sign * dep
                q[s, p & _MASK] = _logn_lots(deep_med * (1.0 + dep / 100.0), 0.8)
                st[2 + s] = p
    t = np.int64(start_ns)  # exchange clock, ns
    lat = 3.0 * MS  # slow part of the feed latency, ns
    local = np.int64(0)  # last receive time: the recorder appends lines in order
    local = max(local, t + np.int64(lat + np.random.exponential(_JITTER_NS[0])))
    # Reset and snapshot are one arrival line, like the ingest's REST snapshot.
    book_i[0, nb] = t
    book_i[1, nb] = local
    book_i[2, nb] = g << SEQ_SHIFT
    book_i[3, nb] = uid
    book_k[0, nb] = BOOK_RESET
    book_k[1, nb] = SIDE_BOTH
    book_f[0, nb] = 0.0
    book_f[1, nb] = 0.0
    nb += 1
    row = 1
    for s in range(2):
        d_sign = 1 if s == 0 else -1
        p = st[s]
        while True:
            lots = q[s, p & _MASK]
            if lots > 0:
                book_i[0, nb] = t
                book_i[1, nb] = local
                book_i[2, nb] = (g << SEQ_SHIFT) | row
                book_i[3, nb] = uid
                book_k[0, nb] = BOOK_SNAPSHOT
                book_k[1, nb] = SIDE_BID if s == 0 else SIDE_ASK
                book_f[0, nb] = _to_px(p, tick, pdiv)
                book_f[1, nb] = _to_qty(lots, lot, qdiv)
                nb += 1
                row += 1
            if p == st[2 + s]:
                break
            p -= d_sign
    g += 1
    bbo_i[0, 0] = t
    local = max(local, t + np.int64(lat + np.random.exponential(_JITTER_NS[0])))
    bbo_i[1, 0] = local
    bbo_i[2, 0] = g << SEQ_SHIFT
    bbo_i[3, 0] = uid
    bbo_f[0, 0] = _to_px(st[0], tick, pdiv)
    bbo_f[1, 0] = _to_qty(q[0, st[0] & _MASK], lot, qdiv)
    bbo_f[2, 0] = _to_px(st[1], tick, pdiv)
    bbo_f[3, 0] = _to_qty(q[1, st[1] & _MASK], lot, qdiv)
    nq = 1
    g += 1

    # --- latent state ---
    fair = mid_ticks0 + 0.5
    home = fair
    regime = QUIET
    direction = 0
    anchor = fair
    regime_end = t + np.int64((_DUR_MIN_S[0] + np.random.exponential(_DUR_MEAN_S[0] - _DUR_MIN_S[0])) * NS)
    drift = 0.0
    reg[0, 0] = t
    reg[1, 0] = regime
    reg[2, 0] = 0
    nr = 1
    next_fund = ((t + NS - 1) // NS) * NS
    rate = 1e-4
    basis = 5e-5
    add_med = 15_000.0 * lots_per_quote

    while nb + nt < n_events:
        # Room for one message of any size and the lines around it.
        book_i = _grow(book_i, nb + _MSG_CAP + 1)
        book_k = _grow(book_k, nb + _MSG_CAP + 1)
        book_f = _grow(book_f, nb + _MSG_CAP + 1)
        tr_i = _grow(tr_i, nt + _MSG_CAP)
        tr_s = _grow(tr_s, nt + _MSG_CAP)
        tr_f = _grow(tr_f, nt + _MSG_CAP)
        bbo_i = _grow(bbo_i, nq + 1)
        bbo_f = _grow(bbo_f, nq + 1)
        reg = _grow(reg, nr + 1)

        dt_s = np.random.exponential(1.0 / _MSG_RATE[regime])
        t += np.int64(dt_s * NS) + 1
        # Funding rows fall between messages; they use the book as it stood.
        while next_fund <= t:
            fu_i = _grow(fu_i, nf + 1)
            fu_f = _grow(fu_f, nf + 1)
            lat = 3.0 * MS + 0.98 * (lat - 3.0 * MS) + 50_000.0 * np.random.standard_normal()
            lat = max(lat, 1.0 * MS)
            local = max(local, next_fund + np.int64(lat + np.random.exponential(_JITTER_NS[regime])))
            rate += 0.002 * (1e-4 - rate) + 3e-7 * np.random.standard_normal()
            rate = min(max(rate, -3e-3), 3e-3)
            basis += 0.01 * (5e-5 - basis) + 3e-6 * np.random.standard_normal()
            fu_i[0, nf] = next_fund
            fu_i[1, nf] = local
            fu_i[2, nf] = g << SEQ_SHIFT
            fu_i[3, nf] = (next_fund // FUNDING_PERIOD_NS + 1) * FUNDING_PERIOD_NS
            fu_f[0, nf] = 0.5 * (st[0] + st[1])
            fu_f[1, nf] = rate
            fu_f[2, nf] = basis
            nf += 1
            g += 1
            next_fund += NS

        # Regime switch (semi-Markov in exchange time).
        if t >= regime_end:
            u = np.random.random()
            nxt = 0
            acc = 0.0
            for r in range(3):
                acc += _NEXT_REGIME_P[regime, r]
                if u < acc:
                    nxt = r
                    break
            regime = nxt
            regime_end = t + np.int64(
                (_DUR_MIN_S[regime] + np.random.exponential(_DUR_MEAN_S[regime] - _DUR_MIN_S[regime])) * NS
            )
            mid_now = 0.5 * (st[0] + st[1])
            anchor = mid_now
            # Directions lean home so long runs stay within a few percent of the start price.
            p_up = 1.0 / (1.0 + math.exp((mid_now - home) / (_HOME_REL * K)))
            direction = 0 if regime == QUIET else (1 if np.random.random() < p_up else -1)
            lo, hi = _TREND_DRIFT_REL
            drift = direction * (lo + (hi - lo) * np.random.random()) * K
            reg[0, nr] = (t // MS) * MS
            reg[1, nr] = regime
            reg[2, nr] = direction
            nr += 1

        # Latent fair price over dt.
        sig = _SIGMA_REL[regime] * K
        if regime == QUIET:
            e = math.exp(-_QUIET_KAPPA * dt_s)
            sd = sig * math.sqrt((1.0 - e * e) / (2.0 * _QUIET_KAPPA))
            fair = anchor + (fair - anchor) * e + sd * np.random.standard_normal()
        else:
            fair += drift * dt_s + sig * math.sqrt(dt_s) * np.random.standard_normal()
            if regime == TOXIC and np.random.random() < 1.0 - math.exp(-_JUMP_RATE * dt_s):
                fair += direction * np.random.exponential(_JUMP_MEAN_REL * K)
        # Keep the fair price far from zero whatever the path.
        fair = max(fair, 4.0 * _DEPTH)

        ts = (t // MS) * MS  # Binance stamps events in whole milliseconds
        lat = 3.0 * MS + 0.98 * (lat - 3.0 * MS) + 50_000.0 * np.random.standard_normal()
        lat = max(lat, 1.0 * MS)

        st[4] = 0
        gap = fair - 0.5 * (st[0] + st[1])
        x = gap / _GAP_SCALE + _FLOW_BIAS[regime] * direction
        p_up = 1.0 / (1.0 + math.exp(-x)) if x > -30.0 else 0.0

        # --- market order: opens the message so it prints at the book the reader holds ---
        if np.random.random() < _P_TRADE[regime]:
            buy = np.random.random() < p_up
            s = 1 if buy else 0  # the side it consumes
            d_sign = 1 if s == 0 else -1
            want = _logn_lots(_TRADE_MEDIAN_QUOTE[regime] * lots_per_quote, _TRADE_SIGMA[regime])
            if np.random.random() < _P_SWEEP[regime]:
                k = min(2 + np.random.geometric(0.25), 15)
                want = 0
                p = st[s]
                for _ in range(k):
                    want += q[s, p & _MASK]
                    p -= d_sign
                    while q[s, p & _MASK] == 0 and p != st[2 + s]:
                        p -= d_sign
                want += np.int64(np.random.random() * q[s, p & _MASK])
            levels = 0
            while want > 0 and levels < 25 and st[s] != st[2 + s]:
                p = st[s]
                avail = q[s, p & _MASK]
                take = min(want, avail)
                # Several resting orders at one price fill as separate trades.
                nfill = min(take, 1 + min(np.random.poisson(0.6), 3))
                left = take
                for f in range(nfill):
                    part = left if f == nfill - 1 else max(1, np.int64(left * np.random.random() * 0.7))
                    part = min(part, left - (nfill - 1 - f))
                    left -= part
                    local = max(local, t + np.int64(lat + np.random.exponential(_JITTER_NS[regime])))
                    tr_i[0, nt] = ts
                    tr_i[1, nt] = local
                    tr_i[2, nt] = g << SEQ_SHIFT
                    tr_i[3, nt] = trade_id
                    tr_s[0, nt] = SIDE_BID if buy else SIDE_ASK
                    tr_f[0, nt] = _to_px(p, tick, pdiv)
                    tr_f[1, nt] = _to_qty(part, lot, qdiv)
                    nt += 1
                    g += 1
                    trade_id += 1
                _set_level(q, st, mb, s, p, avail - take)
                want -= take
                levels += 1

        # --- limit order flow ---
        n_act = np.random.poisson(_EXTRA_ACTIONS[regime])
        if st[4] == 0:
            n_act += 1
        for _ in range(n_act):
            if st[4] > _MSG_CAP - 64:
                break
            spread = st[1] - st[0]
            u = np.random.random()
            if spread > 1 and (u < _P_IMPROVE[regime] or spread > 40):
                # Quote inside the spread, at most halfway across it.
                half = max(1, spread // 2)
                # Both sides re-quote, the chasing side more often.
                if np.random.random() < 0.5 + 0.6 * (p_up - 0.5):
                    p = st[0] + 1 + np.int64(np.random.random() * half)
                    _set_level(q, st, mb, 0, p, q[0, p & _MASK] + _logn_lots(add_med, 0.9))
                else:
                    p = st[1] - 1 - np.int64(np.random.random() * half)
                    _set_level(q, st, mb, 1, p, q[1, p & _MASK] + _logn_lots(add_med, 0.9))
            elif np.random.random() < _P_ADD[regime]:
                s = 0 if np.random.random() < p_up else 1
                d_sign = 1 if s == 0 else -1
                p = st[s] - d_sign * (np.random.geometric(0.3) - 1)
                _set_level(q, st, mb, s, p, q[s, p & _MASK] + _logn_lots(add_med, 0.9))
            else:
                # Makers pull the side the price is heading to.
                s = 1 if np.random.random() < p_up else 0
                d_sign = 1 if s == 0 else -1
                threatened = (s == 1 and gap > 1.5) or (s == 0 and gap < -1.5)
                dep = 0 if threatened and np.random.random() < 0.7 else np.random.geometric(0.25) - 1
                p = st[s] - d_sign * dep
                while q[s, p & _MASK] == 0 and p != st[2 + s]:
                    p -= d_sign
                if p == st[2 + s]:
                    continue  # the far end belongs to depth upkeep below
                lots = q[s, p & _MASK]
                if lots <= 1 or np.random.random() < _P_PULL[regime]:
                    _set_level(q, st, mb, s, p, 0)
                else:
                    _set_level(q, st, mb, s, p, lots - max(1, np.int64(lots * 0.8 * np.random.random())))

        # --- depth upkeep: far levels drift towards the target occupancy ---
        if np.random.random() < 0.5:
            s = 0 if np.random.random() < 0.5 else 1
            d_sign = 1 if s == 0 else -1
            dep = 8 + np.int64(np.random.random() * (_DEPTH - 8))
            p = st[s] - d_sign * dep
            lots = q[s, p & _MASK]
            occ = _occupancy(dep)
            if lots == 0:
                if (st[2 + s] - p) * d_sign <= 0 and np.random.random() < occ:
                    _set_level(q, st, mb, s, p, _logn_lots(deep_med * (1.0 + dep / 100.0), 0.8))
            elif np.random.random() < 1.0 - occ and p != st[2 + s]:
                _set_level(q, st, mb, s, p, 0)
            else:
                _set_level(q, st, mb, s, p, max(1, np.int64(lots * math.exp(0.3 * np.random.standard_normal()))))
        for s in range(2):
            d_sign = 1 if s == 0 else -1
            for _ in range(2):
                span = (st[s] - st[2 + s]) * d_sign
                if span > _DEPTH + 20:
                    _set_level(q, st, mb, s, st[2 + s], 0)
                elif span < _DEPTH - 20:
                    p = st[2 + s] - d_sign * np.random.geometric(0.35)
                    _set_level(q, st, mb, s, p, _logn_lots(deep_med * (1.0 + span / 100.0), 0.8))
                else:
                    break

        if st[4] == 0:
            # Every message changes something: a maker tops up one best level.
            s = 0 if np.random.random() < 0.5 else 1
            _set_level(q, st, mb, s, st[s], q[s, st[s] & _MASK] + _logn_lots(add_med, 0.9))

        # --- write the message: bids then asks, like a depthUpdate's b and a lists ---
        n_rows = st[4]
        local = max(local, t + np.int64(lat + np.random.exponential(_JITTER_NS[regime])))
        uid += n_rows + np.random.poisson(2.0)  # other symbols' updates share the id space
        row = 1
        for s in range(2):
            for i in range(n_rows):
                if mb[0, i] != s:
                    continue
                book_i[0, nb] = ts
                book_i[1, nb] = local
                book_i[2, nb] = (g << SEQ_SHIFT) | row
                book_i[3, nb] = uid
                book_k[0, nb] = BOOK_DIFF
                book_k[1, nb] = SIDE_BID if s == 0 else SIDE_ASK
                book_f[0, nb] = _to_px(mb[1, i], tick, pdiv)
                book_f[1, nb] = _to_qty(mb[2, i], lot, qdiv)
                nb += 1
                row += 1
        g += 1
        local = max(local, t + np.int64(lat + np.random.exponential(_JITTER_NS[regime])))
        bbo_i[0, nq] = ts
        bbo_i[1, nq] = local
        bbo_i[2, nq] = g << SEQ_SHIFT
        bbo_i[3, nq] = uid
        bbo_f[0, nq] = _to_px(st[0], tick, pdiv)
        bbo_f[1, nq] = _to_qty(q[0, st[0] & _MASK], lot, qdiv)
        bbo_f[2, nq] = _to_px(st[1], tick, pdiv)
        bbo_f[3, nq] = _to_qty(q[1, st[1] & _MASK], lot, qdiv)
        nq += 1
        g += 1

    return book_i, book_k, book_f, nb, tr_i, tr_s, tr_f, nt, bbo_i, bbo_f, nq, fu_i, fu_f, nf, reg, nr


def _exact_divisor(step: float) -> float:
    """1/step when it is a whole number (so values can be divided by it exactly), else 0."""
    inv = 1.0 / step
    r = round(inv)
    return float(r) if r >= 1 and abs(inv - r) <= 1e-9 * inv else 0.0


def synth_batch(
    n_events: int,
    seed: int = 0,
    symbol: str = "SYNTHUSDT",
    venue: str = "synthetic",
    start_ns: int = 1_704_067_200_000_000_000,
    mid: float = 50_000.0,
    tick_size: float = 0.1,
    lot_size: float = 0.001,
) -> IngestBatch:
    """Seeded synthetic book, trades, BBO and funding with about `n_events` book plus trade rows."""
    if n_events < 1:
        raise ValueError(f"n_events must be positive, got {n_events}")
    if seed < 0:
        raise ValueError(f"seed must be non-negative, got {seed}")
    if not (tick_size > 0 and lot_size > 0 and mid > 0):
        raise ValueError("mid, tick_size and lot_size must be positive")
    mid_ticks = round(mid / tick_size)
    if mid_ticks < 10 * _DEPTH:
        raise ValueError(f"mid must be at least {10 * _DEPTH} ticks for a {_DEPTH}-tick deep book")
    seed32 = int(np.random.SeedSequence(seed).generate_state(1)[0])
    pdiv, qdiv = _exact_divisor(tick_size), _exact_divisor(lot_size)
    lots_per_quote = 1.0 / (mid * lot_size)
    (book_i, book_k, book_f, nb, tr_i, tr_s, tr_f, nt, bbo_i, bbo_f, nq, fu_i, fu_f, nf, reg, nr) = _kernel(
        int(n_events),
        seed32,
        int(start_ns),
        int(mid_ticks),
        float(tick_size),
        pdiv,
        float(lot_size),
        qdiv,
        lots_per_quote,
    )

    def cols(*parts: np.ndarray, n: int) -> list[pa.Array]:
        # Each buffer row is one contiguous column: Arrow wraps it without a copy.
        return [pa.array(p[j, :n]) for p in parts for j in range(p.shape[0])]

    tables = {
        "book": pa.Table.from_arrays(cols(book_i, book_k, book_f, n=nb), schema=BOOK),
        "trades": pa.Table.from_arrays(cols(tr_i, tr_s, tr_f, n=nt), schema=TRADES),
        "bbo": pa.Table.from_arrays(cols(bbo_i, bbo_f, n=nq), schema=BBO),
    }
    # Mark and index hover around the mid; mark carries the premium the funding rate implies.
    mid_px = fu_f[0, :nf] * tick_size
    rng = np.random.default_rng(seed32)
    index = np.round(mid_px * (1.0 - fu_f[2, :nf] + 2e-5 * rng.standard_normal(nf)), 8)
    mark = np.round(mid_px * (1.0 + 1e-5 * rng.standard_normal(nf)), 8)
    tables["funding"] = pa.Table.from_arrays(
        [
            pa.array(fu_i[0, :nf].copy()),
            pa.array(fu_i[1, :nf].copy()),
            pa.array(fu_i[2, :nf].copy()),
            pa.array(mark),
            pa.array(index),
            pa.array(np.round(fu_f[1, :nf], 8)),
            pa.array(fu_i[3, :nf].copy()),
        ],
        schema=FUNDING,
    )

    report = IngestReport(rows={k: v.num_rows for k, v in tables.items()})
    report.notes.append(f"synthetic seed={seed} n_events={n_events} mid={mid} tick={tick_size} lot={lot_size}")
    for i in range(nr):
        report.notes.append(f"regime {int(reg[0, i])} {REGIME_NAMES[reg[1, i]]} {int(reg[2, i]):+d}")
    base = symbol[:-4] if symbol.endswith("USDT") and len(symbol) > 4 else symbol
    inst = Instrument(
        venue=venue,
        symbol=symbol,
        contract="linear",
        base=base,
        quote="USDT",
        tick_size=tick_size,
        lot_size=lot_size,
        min_notional=100.0,
        maker_fee=0.0002,
        taker_fee=0.0005,
    )
    return IngestBatch(fmt="synth", instrument=inst, tables=tables, report=report)


def regime_schedule(report: IngestReport) -> list[tuple[int, str, int]]:
    """The regimes of a synthetic batch as (start ts_exch ns, name, direction +1/-1/0), in time order."""
    out = []
    for note in report.notes:
        if note.startswith("regime "):
            _, ts, name, direction = note.split()
            out.append((int(ts), name, int(direction)))
    return out
