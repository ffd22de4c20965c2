"""The decision clock: on which steps of local time the strategy decides, and the local book at each.

Decisions are on the grid t0 + k * step_ns (ns of local time, k >= 1). Across a coverage gap the
steps after the first stale one are left out (`decision_segments`), and what the local book shows
at every step taken is tabulated once per tape (`local_at_decisions`): every parameter set of a
sweep decides at the same times on the same book. `advance` is the sorted-array search the loop
and these tables share.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from grinder.book.l2 import EMPTY

GAP_STRIDE = 64  # events per test of `_gap_skips`'s scan for coverage gaps


@njit(cache=True, _nrt=False)
def advance(ts, j, hi, t):
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


@njit(cache=True, nogil=True)
def _gap_skips(local_ts, t0, step_ns, stale_ns, out):
    """Count the gaps whose steps `decision_segments` leaves out; with room in `out`, write each
    one's last kept step and next kept step at out[2g + 1], out[2g + 2]. local_ts is sorted."""
    fill = out.shape[0] > 0
    n = local_ts.shape[0]
    i = advance(local_ts, 0, n, t0)  # events up to t0 do not move the clock's origin
    g = 0
    if i < n:
        g = _gap_skip(t0, local_ts[i], t0, step_ns, stale_ns, out, g, fill)
    # Times are sorted, so a stride whose ends are within stale_ns holds no gap: one test per
    # GAP_STRIDE events instead of one per event, which cost more than the rest of the run's
    # inputs (decision 040).
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
            lj = advance(local_ts, lj, n, target)
            lj_[k] = lj
            bb[k] = local_bb[lj - 1] if lj > 0 else EMPTY
            ba[k] = local_ba[lj - 1] if lj > 0 else EMPTY
            bbq[k] = local_bbq[lj - 1] if lj > 0 else 0.0
            baq[k] = local_baq[lj - 1] if lj > 0 else 0.0
            syn[k] = lj > 0 and local_synced[lj - 1] and target - local_ts[lj - 1] <= stale_ns
            k += 1
    return lj_, bb, ba, bbq, baq, syn
