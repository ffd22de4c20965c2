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


@njit(cache=True, inline="always")
def _key(side, px):
    return px * 2 + (1 if side > 0 else 0)


@njit(cache=True, inline="always")
def _slot(key, mask):
    # Fibonacci hashing; the mask keeps the index in range for negative products too.
    return (key * -7046029254386353131) >> 20 & mask


@njit(cache=True, inline="always")
def _mask(n):
    size = 8
    while size < 2 * n:
        size *= 2
    return size - 1


@njit(cache=True, inline="always")
def _probe(keys, stamps, stamp, mask, key):
    """The slot holding `key` in this stamp's table, or the free slot where it would go."""
    h = _slot(key, mask)
    while stamps[h] == stamp and keys[h] != key:
        h = (h + 1) & mask
    return h


@njit(cache=True)
def diff_scratch(max_keys):
    """Tables for `diff_quotes_into` over up to `max_keys` targets and any number of orders (int64, 4 rows)."""
    return np.zeros((4, _mask(max_keys) + 1), np.int64)


@njit(cache=True, _nrt=False)
def diff_quotes_into(t_side, t_px, n_targets, o_side, o_px, o_status, o_req, o_live, slots, n_orders, out_cancel,
                     out_place, scratch, stamp):  # fmt: skip
    """Fill out_cancel with positions in `slots` to cancel and out_place with target indices to place.

    Orders are o_*[slots[i]] for i < n_orders. An order is cancelled when it is cancellable
    (resting, no request in flight) and no target has its side and price; a target is placed when
    no known order (in any state still tracked, including in-flight ones) has its side and price.
    Returns (n_cancel, n_place). Linear in targets + orders (a hash table of the targets' (side,
    price) keys) on caller-kept tables (`diff_scratch`): no allocation per decision.

    `stamp` must differ from every earlier call's on the same scratch (a counter from 1): a slot
    counts as used only when it carries the current stamp, so the tables are never cleared.
    Targets must number at most the `max_keys` the scratch was made for.
    """
    # One hash table, of the targets' keys: each order looks its key up once, cancels itself when
    # absent and marks the slot when present; a target is placed when its slot is unmarked (which
    # also covers a target listed twice). Half the probes of a second table of the orders' keys.
    t_keys, t_stamps, t_marked, t_slot = scratch[0], scratch[1], scratch[2], scratch[3]
    tmask = _mask(n_targets)
    for j in range(n_targets):
        key = _key(t_side[j], t_px[j])
        h = _probe(t_keys, t_stamps, stamp, tmask, key)
        t_keys[h] = key
        t_stamps[h] = stamp
        t_slot[j] = h
    nc = 0
    for i in range(n_orders):
        o = slots[i]
        if not o_live[o]:
            continue
        h = _probe(t_keys, t_stamps, stamp, tmask, _key(o_side[o], o_px[o]))
        if t_stamps[h] == stamp:
            t_marked[h] = stamp  # a known order covers this target
        elif o_status[o] == ST_NEW and o_req[o] == REQ_NONE:
            out_cancel[nc] = i
            nc += 1
    npl = 0
    for j in range(n_targets):
        if t_marked[t_slot[j]] != stamp:
            out_place[npl] = j
            npl += 1
    return nc, npl


@njit(cache=True, _nrt=False)
def had_target(scratch, stamp, n_targets, side, px):
    """Whether the `diff_quotes_into` call with this stamp on `scratch` had a target at (side, price in ticks).

    Its target table stays readable until the next call on the scratch; `n_targets` is that call's.
    """
    return scratch[1, _probe(scratch[0], scratch[1], stamp, _mask(n_targets), _key(side, px))] == stamp


@njit(cache=True, _nrt=False)
def refresh_into(t_side, t_px, n_targets, o_side, o_px, o_status, o_req, o_live, o_placed, slots, n_orders, out_cancel,
                 nc, out_place, npl, scratch, stamp, now_ns, ttl_ns, near_ticks):  # fmt: skip
    """Quote refresh after `diff_quotes_into` (the same call's stamp and lists): returns (n_cancel, n_place).

    - Time to live (`ttl_ns` > 0): a resting order with no request in flight, sent `ttl_ns` or more
      before `now_ns` (o_placed, ns; 0: unknown, never stale), is cancelled even while a target has its
      side and price. It still covers that target, which is placed again once the cancel is through:
      a replacement, never two orders at one price.
    - Refresh distance (`near_ticks` > 0): an order the diff would cancel that is within `near_ticks`
      of a target the diff would place, on its side, stays and stands for that target (first found,
      in the diff's order), unless it is stale. Orders farther than that from every target are replaced.
    Cancels and places are counted by the drivers like any other (quantitative rules included).
    """
    if ttl_ns > 0:
        tmask = _mask(n_targets)
        for i in range(n_orders):
            o = slots[i]
            if (o_live[o] and o_status[o] == ST_NEW and o_req[o] == REQ_NONE and o_placed[o] > 0
                    and now_ns - o_placed[o] >= ttl_ns):  # fmt: skip
                h = _probe(scratch[0], scratch[1], stamp, tmask, _key(o_side[o], o_px[o]))
                if scratch[1, h] == stamp:  # covers a target: the diff did not cancel it
                    out_cancel[nc] = i
                    nc += 1
    if near_ticks <= 0 or nc == 0 or npl == 0:
        return nc, npl
    for c in range(nc):
        o = slots[out_cancel[c]]
        if ttl_ns > 0 and o_placed[o] > 0 and now_ns - o_placed[o] >= ttl_ns:
            continue
        for k in range(npl):
            j = out_place[k]
            if j >= 0 and t_side[j] == o_side[o] and abs(t_px[j] - o_px[o]) <= near_ticks:
                out_place[k] = -1
                out_cancel[c] = -1
                break
    kc = 0
    for c in range(nc):
        if out_cancel[c] >= 0:
            out_cancel[kc] = out_cancel[c]
            kc += 1
    kp = 0
    for k in range(npl):
        if out_place[k] >= 0:
            out_place[kp] = out_place[k]
            kp += 1
    return kc, kp
