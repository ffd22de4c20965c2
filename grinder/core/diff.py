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


_NO_KEY = np.iinfo(np.int64).min


@njit(cache=True, inline="always")
def _key(side, px):
    return px * 2 + (1 if side > 0 else 0)


@njit(cache=True, inline="always")
def _slot(key, mask):
    # Fibonacci hashing; the mask keeps the index in range for negative products too.
    return (key * -7046029254386353131) >> 20 & mask


@njit(cache=True)
def _table(n):
    size = 8
    while size < 2 * n:
        size *= 2
    return np.full(size, _NO_KEY, np.int64), size - 1


@njit(cache=True, inline="always")
def _insert(table, mask, key):
    h = _slot(key, mask)
    while table[h] != _NO_KEY and table[h] != key:
        h = (h + 1) & mask
    table[h] = key


@njit(cache=True, inline="always")
def _contains(table, mask, key):
    h = _slot(key, mask)
    while table[h] != _NO_KEY:
        if table[h] == key:
            return True
        h = (h + 1) & mask
    return False


@njit(cache=True)
def diff_quotes(t_side, t_px, n_targets, o_side, o_px, o_status, o_req, o_live, slots, n_orders, out_cancel, out_place):
    """Fill out_cancel with positions in `slots` to cancel and out_place with target indices to place.

    Orders are o_*[slots[i]] for i < n_orders. An order is cancelled when it is cancellable
    (resting, no request in flight) and no target has its side and price; a target is placed when
    no known order (in any state still tracked, including in-flight ones) has its side and price.
    Returns (n_cancel, n_place). Linear in targets + orders (hash sets of (side, price) keys).
    """
    targets, tmask = _table(n_targets)
    for j in range(n_targets):
        _insert(targets, tmask, _key(t_side[j], t_px[j]))
    known, kmask = _table(n_orders)
    nc = 0
    for i in range(n_orders):
        o = slots[i]
        if not o_live[o]:
            continue
        k = _key(o_side[o], o_px[o])
        _insert(known, kmask, k)
        if o_status[o] == ST_NEW and o_req[o] == REQ_NONE and not _contains(targets, tmask, k):
            out_cancel[nc] = i
            nc += 1
    npl = 0
    for j in range(n_targets):
        if not _contains(known, kmask, _key(t_side[j], t_px[j])):
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
