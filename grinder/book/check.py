"""Replay a tape through the L2 book and verify it: never crossed, and equal to the venue's BBO.

The venue's best bid/ask stream (Binance ``bookTicker``) carries the update id of the book
state it shows; whenever that id equals the final update id of a depth message, the rebuilt
book's best levels must equal it exactly. This is the strongest check we have that ingest,
sync and the book kernel are right.

It also finds where the book is not synced (decision 021): before the first snapshot, after a
reset (a sequence break, or a coverage gap where `grinder.data.tape` put one) until the next
snapshot. A backtest neither decides nor keeps quotes there; `data check` lists these spans.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit

from grinder.book.l2 import ASK, BID, EMPTY, apply_row, best_qty, best_ticks, n_levels, new_book
from grinder.data.tape import GAP_RESET_REF, Tape


@njit(cache=True)
def _replay(kind, side, ticks, qty, ref, flags, bbo_uid, bbo_bid, bbo_bidq, bbo_ask, bbo_askq, hdr, wq, ok, oq, syn):
    """Replay the book rows, checking batches while synced; syn[i]: whether the book is synced after row i."""
    valid = False
    batches = crossed = checked = matched = 0
    first_cross = first_mismatch = -1
    max_levels = 0
    j = 0
    nq = bbo_uid.shape[0]
    for i in range(kind.shape[0]):
        k = kind[i]
        if k == 3:
            syn[i] = valid
            continue
        ok, oq = apply_row(hdr, wq, ok, oq, k, side[i], ticks[i], qty[i])
        if k == 2:
            valid = False
        elif k == 1:
            valid = True
        syn[i] = valid
        if flags[i] & 1 and valid:
            batches += 1
            levels = n_levels(hdr, BID) + n_levels(hdr, ASK)
            if levels > max_levels:
                max_levels = levels
            bb = best_ticks(hdr, BID)
            ba = best_ticks(hdr, ASK)
            if bb != EMPTY and ba != EMPTY and bb >= ba:
                crossed += 1
                if first_cross < 0:
                    first_cross = i
            u = ref[i]
            while j < nq and bbo_uid[j] < u:
                j += 1
            while j < nq and bbo_uid[j] == u:
                checked += 1
                if (
                    bb == bbo_bid[j]
                    and ba == bbo_ask[j]
                    and best_qty(hdr, wq, ok, oq, BID) == bbo_bidq[j]
                    and best_qty(hdr, wq, ok, oq, ASK) == bbo_askq[j]
                ):
                    matched += 1
                elif first_mismatch < 0:
                    first_mismatch = j
                j += 1
    return batches, crossed, first_cross, checked, matched, first_mismatch, max_levels


@dataclass(frozen=True)
class ReplayCheck:
    """Outcome of replaying a tape through the book."""

    batches: int  # book messages applied while the book was valid
    crossed: int  # of those, how many left the book crossed or locked
    first_cross: int  # tape index of the first crossing, -1 if none
    bbo_checked: int  # venue BBO rows whose update id equals a depth message's final id
    bbo_matched: int  # of those, how many equal the rebuilt best bid/ask exactly
    first_mismatch: int  # index into tape.bbo of the first mismatch, -1 if none
    max_levels: int  # largest number of levels held (both sides)
    unsynced: tuple[UnsyncedSpan, ...] = ()  # where the book was not synced, from the window's start on


@dataclass(frozen=True)
class UnsyncedSpan:
    """Exchange time [from_ns, to_ns) in ns over which the book was not synced, and why."""

    from_ns: int
    to_ns: int  # the snapshot that synced it, or the end of the data
    why: str
    resynced: bool  # False: no snapshot came before the data ended

    @property
    def duration_ns(self) -> int:
        return self.to_ns - self.from_ns


WHY_NO_SNAPSHOT = "no snapshot yet in its coverage span (before the capture's first snapshot)"
WHY_GAP = "coverage gap: another capture's data, no book until its snapshot"
WHY_RESET = "book reset (sequence break) until the next snapshot"


def unsynced_spans(tape: Tape, synced: np.ndarray, start_ns: int | None = None) -> tuple[UnsyncedSpan, ...]:
    """The spans of exchange time from `start_ns` (else the first row) on in which the book is not synced.

    `synced[i]`: the book is synced after row i. A reset directly followed by its snapshot (every
    capture's first snapshot has one at the same time) is no span: nothing happens in between.
    """
    n = len(tape)
    if n == 0:
        return ()
    ts = tape.ts_exch
    lo = tape.start
    # Row boundaries of the runs of unsynced rows from `lo` on (one from before lo is found below).
    s = np.concatenate(([True], synced[lo:], [True])).astype(np.int8)
    begins = np.flatnonzero(np.diff(s) == -1) + lo  # first unsynced row of each run
    ends = np.flatnonzero(np.diff(s) == 1) + lo  # the row that synced it (n: none)
    out = []
    for a, b in zip(begins.tolist(), ends.tolist(), strict=True):
        first = a
        if a == lo and lo > 0 and not synced[lo - 1]:
            first = int(np.flatnonzero(synced[:lo])[-1]) + 1 if synced[:lo].any() else 0
        if a == 0 or tape.kind[first] != 2:
            why = WHY_NO_SNAPSHOT  # nothing on the tape before it: the window starts before any snapshot
        else:
            why = WHY_GAP if tape.ref[first] == GAP_RESET_REF else WHY_RESET
        t0 = int(ts[a]) if a > lo or start_ns is None else min(int(start_ns), int(ts[a]))
        t1 = int(ts[b]) if b < n else int(ts[n - 1]) + 1
        if t1 > t0:
            out.append(UnsyncedSpan(t0, t1, why, b < n))
    return tuple(out)


def replay_check(tape: Tape, start_ns: int | None = None) -> ReplayCheck:
    """Replay every book event of `tape` and compare against its BBO series; `unsynced` from `start_ns` on."""
    tick = tape.instrument.tick_size
    b = tape.bbo
    order = np.argsort(b.update_id, kind="stable")
    synced = np.empty(len(tape), np.bool_)
    res = _replay(
        tape.kind,
        tape.side,
        tape.price_ticks,
        tape.qty,
        tape.ref,
        tape.flags,
        b.update_id[order],
        np.rint(b.bid_price[order] / tick).astype(np.int64),
        b.bid_qty[order],
        np.rint(b.ask_price[order] / tick).astype(np.int64),
        b.ask_qty[order],
        *new_book(),
        synced,
    )
    res = list(res)
    if res[5] >= 0:
        res[5] = int(order[res[5]])
    return ReplayCheck(*res, unsynced=unsynced_spans(tape, synced, start_ns))


__all__ = ["ReplayCheck", "UnsyncedSpan", "replay_check", "unsynced_spans"]
