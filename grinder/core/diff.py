"""Diff a target set of quotes against the orders we know of: which to cancel, which to place.

A quote is identified by (side, price in ticks): a strategy asks for at most one order per side
and price. The same kernel serves the simulated venue and the live adapter, so both turn the
same targets into the same intents.
"""

from __future__ import annotations

import numpy as np
from numba import njit

# Local order states, as the strategy's side of the wire sees them.
ST_NONE = 0  # submitted, not yet acknowledged
ST_NEW = 1  # resting at the venue
ST_FILLED = 2
ST_CANCELED = 3
ST_EXPIRED = 4  # post-only order that would have crossed, or rejected by the venue
REQ_NONE = 0
REQ_NEW = 1
REQ_CANCEL = 2


@njit(cache=True)
def diff_quotes(t_side, t_px, n_targets, o_side, o_px, o_status, o_req, o_live, slots, n_orders, out_cancel, out_place):
    """Fill out_cancel with positions in `slots` to cancel and out_place with target indices to place.

    Orders are o_*[slots[i]] for i < n_orders. An order is cancelled when it is cancellable
    (resting, no request in flight) and no target has its side and price; a target is placed when
    no known order (in any state still tracked, including in-flight ones) has its side and price.
    Returns (n_cancel, n_place).
    """
    nc = 0
    for i in range(n_orders):
        o = slots[i]
        if not o_live[o] or o_status[o] != ST_NEW or o_req[o] != REQ_NONE:
            continue
        wanted = False
        for j in range(n_targets):
            if t_side[j] == o_side[o] and t_px[j] == o_px[o]:
                wanted = True
                break
        if not wanted:
            out_cancel[nc] = i
            nc += 1
    npl = 0
    for j in range(n_targets):
        known = False
        for i in range(n_orders):
            o = slots[i]
            if o_live[o] and o_side[o] == t_side[j] and o_px[o] == t_px[j]:
                known = True
                break
        if not known:
            out_place[npl] = j
            npl += 1
    return nc, npl


def diff_quotes_py(targets: list[tuple[int, int]], orders: list[tuple[int, int, int, int]]):
    """Python entry for one decision: targets [(side, px)], orders [(side, px, status, req)]."""
    t = np.array(targets, np.int64).reshape(-1, 2)
    o = np.array(orders, np.int64).reshape(-1, 4)
    oc = np.empty(len(o), np.int64)
    op = np.empty(len(t), np.int64)
    nc, npl = diff_quotes(
        t[:, 0],
        t[:, 1],
        len(t),
        o[:, 0],
        o[:, 1],
        o[:, 2],
        o[:, 3],
        np.ones(len(o), np.bool_),
        np.arange(len(o)),
        len(o),
        oc,
        op,
    )
    return oc[:nc].tolist(), op[:npl].tolist()
