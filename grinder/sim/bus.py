"""The order bus between the local side and the exchange: two first-in first-out rings, and their latencies.

Requests (new orders, cancels) travel local -> exchange with the entry latency, responses
(acknowledgements, fills, cancels, expiries) exchange -> local with the response latency, each
constant or interpolated from a series. Each direction stays first-in first-out, like one
connection: a message never arrives before the one sent ahead of it on its bus (`arrival`).
Times are int64 ns; a message's payload sits at the index `push` hands out, in the bus's other
arrays, until that index is handed out again.
"""

from __future__ import annotations

from collections import namedtuple

import numpy as np
from numba import njit

from grinder.sim.clock import advance
from grinder.sim.taker import WALK_LEVELS

MAX_TS = np.iinfo(np.int64).max

# A bus's ring header, int64: messages on it, where the earliest is, the latest arrival time given out.
RING_COUNT, RING_HEAD, RING_LAST = 0, 1, 2

# Local -> exchange, per message: when it arrives (ns), the order slot, REQ_NEW or REQ_CANCEL.
Requests = namedtuple("Requests", "due slot request ring")
# Exchange -> local, per message: when it arrives (ns), the order slot, its status (grinder.core.diff's
# ST_* or RESP_*), the exchange time of the event (ns), the quantity filled (base units or contracts) and
# the price it filled at (ticks: a quote's own price, or the level a taker order took).
Responses = namedtuple("Responses", "due slot status exchange_ts qty price ring")
Bus = namedtuple("Bus", "requests responses")

RESP_REJECTED = -1  # response status for a cancel that found no order
RESP_PARTIAL = -2  # response status of a partial fill (the order keeps resting)
RESP_FILTERED = -3  # response status of a new order the venue's filters refused (an expiry to the local side)


@njit(cache=True)
def new_bus(cap):
    """Empty buses for `cap` order slots: a slot has at most one request on the way, and two responses, or
    for a taker order one per level it takes (at most WALK_LEVELS) and one for its end."""
    requests = Requests(np.full(cap, MAX_TS, np.int64), np.zeros(cap, np.int64), np.zeros(cap, np.int8),
                        np.zeros(3, np.int64))  # fmt: skip
    n = cap * (WALK_LEVELS + 1)
    responses = Responses(np.full(n, MAX_TS, np.int64), np.zeros(n, np.int64), np.zeros(n, np.int8),
                          np.zeros(n, np.int64), np.zeros(n), np.zeros(n, np.int64), np.zeros(3, np.int64))  # fmt: skip
    return Bus(requests, responses)


@njit(cache=True, _nrt=False)
def latency_at(lat_ts, lat_ns, t):
    """Latency (ns) at time t: constant for a one-point series, else linear between points, flat outside."""
    n = lat_ts.shape[0]
    if n == 1 or t <= lat_ts[0]:
        return lat_ns[0]
    j = advance(lat_ts, 0, n, t)  # the first point after t
    if j >= n:
        return lat_ns[n - 1]
    t0, t1 = lat_ts[j - 1], lat_ts[j]
    v0, v1 = lat_ns[j - 1], lat_ns[j]
    return v0 + np.int64(round((v1 - v0) * ((t - t0) / (t1 - t0))))


@njit(_nrt=False, inline="always")
def arrival(ring, t, lat_ts, lat_ns):
    """When a message sent at t arrives (ns): t plus the latency then, but never before the bus's
    last arrival (first-in first-out); that becomes the bus's last arrival."""
    ta = max(t + latency_at(lat_ts, lat_ns, t), ring[RING_LAST])
    ring[RING_LAST] = ta
    return ta


@njit(cache=True, _nrt=False)
def push(due, ring, t):
    """Queue a message due at t on a bus (`due` its arrival times, `ring` its header); returns its index
    for the payload.

    Arrival times never decrease on a bus (see `arrival`), so a ring keeps them in order; equal
    times leave in the order sent.
    """
    cap = due.shape[0]
    if ring[RING_COUNT] == cap:
        raise RuntimeError("order bus full")
    # Indices wrap by one subtraction, not `%`: an integer division on every message costs more
    # than the rest of the push (head < cap and count < cap, so one wrap is enough).
    k = ring[RING_HEAD] + ring[RING_COUNT]
    if k >= cap:
        k -= cap
    if ring[RING_COUNT] > 0 and t < due[k - 1 if k > 0 else cap - 1]:
        raise RuntimeError("order bus: a message would overtake an earlier one")
    due[k] = t
    ring[RING_COUNT] += 1
    return k


@njit(cache=True, _nrt=False)
def top(due, ring):
    """(due time, index) of a bus's earliest message; (MAX_TS, -1) when it is empty."""
    if ring[RING_COUNT] == 0:
        return MAX_TS, -1
    return due[ring[RING_HEAD]], ring[RING_HEAD]


@njit(cache=True, _nrt=False)
def pop(due, ring):
    """Remove the earliest message (its payload stays readable until its index is handed out again)."""
    due[ring[RING_HEAD]] = MAX_TS
    h = ring[RING_HEAD] + 1
    ring[RING_HEAD] = 0 if h == due.shape[0] else h
    ring[RING_COUNT] -= 1
