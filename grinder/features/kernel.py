"""The one compiled per-event feature update, the read of the features at a time, and the offline loop.

Both drivers call these same functions: the offline pass (`offline_pass`, the compiled loop over a
tape that `grinder.features.offline` runs) and the online updater (`grinder.features.online`, one call per book
change, trade or funding update from the live adapter). The same compiled code in the same order
of operations gives the same floats, so parity holds by construction.

State, all numpy arrays (see `new_state`):
  si int64[NI]: time of the last update (ns), whether any update came, 2 x the last mid in ticks
                (0: none, so the next mid starts a new chain of returns), updates seen
  sf float64[NF_FIXED + nv + 3 nf]: the book features after the last book update (microprice
                offset, imbalance, spread), the funding rate, then per volatility horizon the
                decayed sum of squared mid log returns, per flow horizon the decayed buy and sell
                volumes (base units) and the decayed trade count. Sums are held as of `si[I_T]`.
Parameters: `levels` (first N levels for the imbalance), `vol_tau` and `flow_tau` (float64 ns:
the EWMA time constants).

Every decayed sum X with time constant tau moves from t0 to t1 >= t0 as X * exp(-(t1 - t0) / tau)
and an event adds its term after the decay. A time before the last update counts as the last
update's time (dt clamped at 0), so an out-of-order stamp from another stream never grows a sum.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from grinder.book.l2 import ASK, BID, EMPTY, H_BASE, H_BEST, H_ON, H_W, apply_row, level

# The tape's codes the offline loop reads (grinder.data.tape; not imported: numba caches by file).
TRADE_ROW = 3  # tape kind of a trade
BATCH_END = 1  # tape flag: the last row of an exchange message

# Event kinds the update takes.
EV_BOOK = 0  # the book changed (the driver applied a whole exchange message first)
EV_TRADE = 1  # a trade: side (+1 buyer aggressor, -1 seller), qty base units
EV_FUNDING = 2  # a funding update: rate (per funding interval)

# si slots
I_T, I_STARTED, I_MID2, I_N = 0, 1, 2, 3
NI = 4
# sf slots; the horizon blocks follow
F_MICRO, F_IMB, F_SPREAD, F_FUNDING = 0, 1, 2, 3
NF_FIXED = 4
# Output columns: these first, then one per volatility horizon, then flow imbalance per flow
# horizon, then intensity per flow horizon, then funding (see FeatureSet.names).
O_MICRO, O_IMB, O_SPREAD = 0, 1, 2


def state_sizes(nv: int, nf: int) -> tuple[int, int]:
    """(len(si), len(sf)) for nv volatility and nf flow horizons."""
    return NI, NF_FIXED + nv + 3 * nf


def n_outputs(nv: int, nf: int) -> int:
    """Number of feature columns for nv volatility and nf flow horizons."""
    return 3 + nv + 2 * nf + 1


def new_state(nv: int, nf: int) -> tuple[np.ndarray, np.ndarray]:
    """Fresh (si, sf): no update seen, book features and funding NaN, sums 0."""
    ni, nfl = state_sizes(nv, nf)
    sf = np.zeros(nfl)
    sf[:NF_FIXED] = np.nan
    return np.zeros(ni, np.int64), sf


@njit(cache=True)
def _depth_slow(hdr, wq, ok, oq, s, n):
    """(best qty, qty over the first n levels) of side s through l2.level (allocates; rare)."""
    top = 0.0
    tot = 0.0
    for d in range(n):
        p, q = level(hdr, wq, ok, oq, s, d)
        if p == EMPTY:
            break
        if d == 0:
            top = q
        tot += q
    return top, tot


@njit(cache=True)
def side_depth(hdr, wq, ok, oq, s, n):
    """(best qty, qty summed over the first n levels, best first) of side s; (0, 0) when empty.

    The best is in the dense window after every l2.set_level, and no overflow level of a side is
    better than its best, so the window walked outwards from the best gives the levels in price
    order; only when the window runs out with overflow levels left does it take the slow path.
    """
    b = hdr[H_BEST + s]
    if b == EMPTY:
        return 0.0, 0.0
    w = hdr[H_W]
    i = b - hdr[H_BASE]
    if i < 0 or i >= w:
        return _depth_slow(hdr, wq, ok, oq, s, n)
    top = wq[s, i]
    tot = 0.0
    seen = 0
    step = -1 if s == BID else 1
    while 0 <= i < w and seen < n:
        q = wq[s, i]
        if q > 0.0:
            tot += q
            seen += 1
        i += step
    if seen < n and hdr[H_ON + s] > 0:
        return _depth_slow(hdr, wq, ok, oq, s, n)
    return top, tot


@njit(cache=True)
def update(si, sf, levels, vol_tau, flow_tau, ts, ev, side, qty, rate, hdr, wq, ok, oq, synced):
    """Apply one event at `ts` (int64 ns) to the feature state (si, sf), in place.

    ev EV_BOOK: reads the book (hdr, wq, ok, oq; `synced`: whether it is whole) after the driver
    applied a whole message; EV_TRADE: `side`, `qty`; EV_FUNDING: `rate`. Unused arguments are
    ignored (the book arrays may be empty for trades and funding).
    """
    nv = vol_tau.shape[0]
    nf = flow_tau.shape[0]
    v0 = NF_FIXED
    b0 = v0 + nv
    if si[I_STARTED] == 0:
        si[I_STARTED] = 1
        si[I_T] = ts
    dt = ts - si[I_T]
    if dt > 0:
        si[I_T] = ts
        fdt = float(dt)
        for k in range(nv):
            sf[v0 + k] *= math.exp(-fdt / vol_tau[k])
        for k in range(nf):
            d = math.exp(-fdt / flow_tau[k])
            sf[b0 + 3 * k] *= d
            sf[b0 + 3 * k + 1] *= d
            sf[b0 + 3 * k + 2] *= d
    si[I_N] += 1
    if ev == EV_BOOK:
        bb = hdr[H_BEST]
        ba = hdr[H_BEST + 1]
        if not synced or bb == EMPTY or ba == EMPTY:
            # No two-sided market: no book features, and the next mid starts a new chain of
            # returns (no return spans a resync or an empty side).
            sf[F_MICRO] = np.nan
            sf[F_IMB] = np.nan
            sf[F_SPREAD] = np.nan
            si[I_MID2] = 0
            return
        bq, bsum = side_depth(hdr, wq, ok, oq, BID, levels)
        aq, asum = side_depth(hdr, wq, ok, oq, ASK, levels)
        spread = float(ba - bb)
        sf[F_SPREAD] = spread
        # microprice - mid = (ask - bid) (bq - aq) / (2 (bq + aq)), in ticks
        sf[F_MICRO] = spread * (bq - aq) / (2.0 * (bq + aq))
        sf[F_IMB] = (bsum - asum) / (bsum + asum)
        mid2 = bb + ba
        prev = si[I_MID2]
        if prev != 0 and mid2 != prev:
            r = math.log(mid2 / prev)
            r2 = r * r
            for k in range(nv):
                sf[v0 + k] += r2
        si[I_MID2] = mid2
    elif ev == EV_TRADE:
        for k in range(nf):
            if side > 0:
                sf[b0 + 3 * k] += qty
            else:
                sf[b0 + 3 * k + 1] += qty
            sf[b0 + 3 * k + 2] += 1.0
    elif ev == EV_FUNDING:
        sf[F_FUNDING] = rate


@njit(cache=True)
def read(si, sf, vol_tau, flow_tau, ts, out):
    """Write the features as of `ts` (int64 ns, at or after the last update) into `out`, leaving the state as it is.

    Columns: microprice offset (ticks), imbalance, spread (ticks), realized volatility per
    horizon (bps/sqrt(s)), flow imbalance per horizon, trade intensity per horizon (trades/s),
    funding rate. The sums are decayed to `ts` first.
    """
    nv = vol_tau.shape[0]
    nf = flow_tau.shape[0]
    v0 = NF_FIXED
    b0 = v0 + nv
    fdt = 0.0
    if si[I_STARTED] != 0 and ts > si[I_T]:
        fdt = float(ts - si[I_T])
    out[O_MICRO] = sf[F_MICRO]
    out[O_IMB] = sf[F_IMB]
    out[O_SPREAD] = sf[F_SPREAD]
    o = 3
    for k in range(nv):
        v = sf[v0 + k] * math.exp(-fdt / vol_tau[k])
        out[o + k] = math.sqrt(v / (vol_tau[k] * 1e-9)) * 1e4
    o += nv
    for k in range(nf):
        d = math.exp(-fdt / flow_tau[k])
        buy = sf[b0 + 3 * k] * d
        sell = sf[b0 + 3 * k + 1] * d
        tot = buy + sell
        out[o + k] = (buy - sell) / tot if tot > 0.0 else np.nan
        out[o + nf + k] = sf[b0 + 3 * k + 2] * d / (flow_tau[k] * 1e-9)
    out[o + 2 * nf] = sf[F_FUNDING]


@njit(cache=True)
def _apply_funding_to(t, f_ts, f_rate, fj, si, sf, levels, vol_tau, flow_tau, hdr, wq, ok, oq):
    """Apply the funding rows with time <= t from position fj; returns the next position."""
    while fj < f_ts.shape[0] and f_ts[fj] <= t:
        update(si, sf, levels, vol_tau, flow_tau, f_ts[fj], EV_FUNDING, 0, 0.0, f_rate[fj], hdr, wq, ok, oq, False)
        fj += 1
    return fj


@njit(cache=True)
def offline_pass(ts, kind, side, ticks, qty, flags, f_ts, f_rate, at, at_events, levels, vol_tau, flow_tau, si, sf,
          hdr, wq, ok, oq, values, out_ts, out_row):  # fmt: skip
    """The offline driver's loop (grinder.features.offline): book rows into the book, `update` at each update point.

    It lives here, beside `update`, because numba's on-disk cache is keyed by the compiled
    function's own file: a loop in another file would keep a stale copy of an edited `update`.
    ts..flags: the tape's columns; f_ts, f_rate: funding; at (sorted ns) with at_events False, else
    a sample per update point; samples go to values[:, m], out_ts, out_row.
    """
    n = ts.shape[0]
    n_at = at.shape[0]
    nfeat = values.shape[0]
    row = np.empty(nfeat)
    synced = False
    fj = 0
    m = 0
    for i in range(n):
        t = ts[i]
        if not at_events:
            # Times before this event see every earlier event (all rows of a message share its time).
            while m < n_at and at[m] < t:
                fj = _apply_funding_to(at[m], f_ts, f_rate, fj, si, sf, levels, vol_tau, flow_tau, hdr, wq, ok, oq)
                read(si, sf, vol_tau, flow_tau, at[m], row)
                values[:, m] = row
                out_ts[m] = at[m]
                out_row[m] = i - 1
                m += 1
        fj = _apply_funding_to(t, f_ts, f_rate, fj, si, sf, levels, vol_tau, flow_tau, hdr, wq, ok, oq)
        k = kind[i]
        if k != TRADE_ROW:
            ok, oq = apply_row(hdr, wq, ok, oq, k, side[i], ticks[i], qty[i])
            if k == 1:
                synced = True
            elif k == 2:
                synced = False
        if flags[i] & BATCH_END == 0:
            continue
        if k == TRADE_ROW:
            update(si, sf, levels, vol_tau, flow_tau, t, EV_TRADE, side[i], qty[i], 0.0, hdr, wq, ok, oq, synced)
        else:
            update(si, sf, levels, vol_tau, flow_tau, t, EV_BOOK, 0, 0.0, 0.0, hdr, wq, ok, oq, synced)
        if at_events:
            read(si, sf, vol_tau, flow_tau, t, row)
            values[:, m] = row
            out_ts[m] = t
            out_row[m] = i
            m += 1
    if not at_events:
        while m < n_at:
            fj = _apply_funding_to(at[m], f_ts, f_rate, fj, si, sf, levels, vol_tau, flow_tau, hdr, wq, ok, oq)
            read(si, sf, vol_tau, flow_tau, at[m], row)
            values[:, m] = row
            out_ts[m] = at[m]
            out_row[m] = n - 1
            m += 1
