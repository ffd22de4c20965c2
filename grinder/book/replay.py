"""Replay a tape through the L2 book and verify it: never crossed, and equal to the venue's BBO.

The venue's best bid/ask stream (Binance ``bookTicker``) carries the update id of the book
state it shows; whenever that id equals the final update id of a depth message, the rebuilt
book's best levels must equal it exactly. This is the strongest check we have that ingest,
sync and the book kernel are right.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit

from grinder.book.l2 import ASK, BID, EMPTY, apply_row, best_qty, best_ticks, n_levels, new_book
from grinder.data.tape import Tape


@njit(cache=True)
def _replay(kind, side, ticks, qty, ref, flags, bbo_uid, bbo_bid, bbo_bidq, bbo_ask, bbo_askq, hdr, wq, ok, oq):
    valid = False
    batches = crossed = checked = matched = 0
    first_cross = first_mismatch = -1
    max_levels = 0
    j = 0
    nq = bbo_uid.shape[0]
    for i in range(kind.shape[0]):
        k = kind[i]
        if k == 3:
            continue
        ok, oq = apply_row(hdr, wq, ok, oq, k, side[i], ticks[i], qty[i])
        if k == 2:
            valid = False
        elif k == 1:
            valid = True
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


def replay_check(tape: Tape) -> ReplayCheck:
    """Replay every book event of `tape` and compare against its BBO series."""
    tick = tape.instrument.tick_size
    b = tape.bbo
    order = np.argsort(b.update_id, kind="stable")
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
    )
    out = ReplayCheck(*res)
    if out.first_mismatch >= 0:
        out = ReplayCheck(*res[:5], int(order[out.first_mismatch]), res[6])
    return out


__all__ = ["ReplayCheck", "replay_check"]
