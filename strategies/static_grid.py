"""Static symmetric grid: `levels` quotes a side, `interval` apart, at least `half_spread` from its centre.

Re-centring. With `recenter_intervals = 0` (the default) the centre is the local mid at every
decision and the grid is aligned to multiples of the interval, so it stays put while the mid moves
inside one interval and re-centres (quotes that left the grid are cancelled, new levels placed)
when it moves further. This is the grid of hftbacktest's "High-Frequency Grid Trading" example,
computed with the same floating-point steps so both engines quote the same prices. With
`recenter_intervals = k > 0` the centre is anchored and moves to the mid only once the mid has
drifted more than k intervals from it: the grid then lets the price walk through its levels (the
classic grid) instead of following it; levels the market has crossed are left out, since quotes
are post-only. A side is not quoted once the position reaches `max_position` on it.

Installed as `grinder.strategies.static_grid`; `grinder backtest static_grid` finds it by name.
"""

from __future__ import annotations

import numpy as np
from numba import njit
from pydantic import ConfigDict, Field, model_validator

from grinder import BAND_MIN_STATE, EMPTY, ParamVector, Strategy


class StaticGridParams(ParamVector):
    """Parameters of the static grid (prices in quote currency, sizes in base units), read by name (`P`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    levels: int = Field(20, ge=1, le=200, description="quotes per side")
    interval: float = Field(gt=0, description="distance between grid levels, quote currency")
    half_spread: float = Field(ge=0, description="minimum distance of the first level from mid")
    order_qty: float = Field(gt=0, description="size of each quote, base units")
    max_position: float = Field(gt=0, description="no more buying (selling) beyond +/- this, base units")
    recenter_intervals: float = Field(
        0.0, ge=0, description="0: centre on the mid every decision; k > 0: re-centre once the mid is k intervals away"
    )

    @model_validator(mode="after")
    def _sane(self) -> StaticGridParams:
        if self.max_position < self.order_qty:
            raise ValueError("max_position must be at least order_qty")
        return self


P = StaticGridParams.index()


@njit(cache=True)
def grid_levels(
    centre,
    half_spread,
    interval,
    levels,
    qty,
    position,
    max_position,
    tick,
    best_bid_tick,
    best_ask_tick,
    post_only_guard,
    out_side,
    out_px,
    out_qty,
    out_level,
):
    """Write `levels` bids below and asks above `centre` on an `interval` grid; returns the count.

    Prices are aligned to multiples of the interval (quote currency), converted to ticks with the
    same floating-point steps as hftbacktest's example. A side is left out once |position| reaches
    `max_position` on it. With `post_only_guard`, levels that would cross the book are dropped.
    Level ids count from the centre: bids -1, -2, ..., asks 1, 2, ... Returns how many quotes it
    wants even when the buffers hold fewer, so the driver can refuse instead of quoting part of a grid.
    """
    n = 0
    if position < max_position:
        bid = np.floor((centre - half_spread) / interval) * interval
        for k in range(levels):
            px = round(bid / tick)
            if not post_only_guard or px < best_ask_tick:
                if n < out_side.shape[0]:  # never write past the buffer (numba does not check bounds)
                    out_side[n] = 1
                    out_px[n] = px
                    out_qty[n] = qty
                    out_level[n] = -(k + 1)
                n += 1
            bid -= interval
    if position > -max_position:
        ask = np.ceil((centre + half_spread) / interval) * interval
        for k in range(levels):
            px = round(ask / tick)
            if not post_only_guard or px > best_bid_tick:
                if n < out_side.shape[0]:
                    out_side[n] = -1
                    out_px[n] = px
                    out_qty[n] = qty
                    out_level[n] = k + 1
                n += 1
            ask += interval
    return n


@njit(cache=True)
def mid_band(mid, half_spread, interval, tick):
    """(lowest, highest) best bid + best ask, ticks, over which a grid centred on the mid keeps its levels.

    The levels depend on the mid only through floor((mid - half_spread) / interval) and
    ceil((mid + half_spread) / interval). The band keeps both quotients a margin away from an
    integer, far wider than any rounding of these float steps, so every mid inside it gives the same
    two integers as exact arithmetic would, and so the same prices; (1, 0), an empty band, when the
    mid itself is within the margin of a boundary.
    """
    qb = (mid - half_spread) / interval
    qa = (mid + half_spread) / interval
    nb = np.floor(qb)
    na = np.ceil(qa)
    eps = 1e-9 * (abs(nb) + abs(na) + 1.0)
    if not (nb + eps <= qb <= nb + 1.0 - eps and na - 1.0 + eps <= qa <= na - eps):
        return 1.0, 0.0
    m_lo = max((nb + 2.0 * eps) * interval + half_spread, (na - 1.0 + 2.0 * eps) * interval - half_spread)
    m_hi = min((nb + 1.0 - 2.0 * eps) * interval + half_spread, (na - 2.0 * eps) * interval - half_spread)
    return np.ceil(2.0 * m_lo / tick), np.floor(2.0 * m_hi / tick)


@njit(cache=True)
def static_grid(
    params,
    state,
    now_ns,
    best_bid_tick,
    best_ask_tick,
    bid_qty,
    ask_qty,
    tick,
    lot,
    position,
    signals,
    depth,
    open_side,
    open_px,
    open_qty,
    n_open,
    out_side,
    out_px,
    out_qty,
    out_level,
    out_kind,
):
    """Target quotes for one decision; writes (side +1/-1, price ticks, qty, level) and returns their count."""
    nst = state.shape[0]
    if nst >= BAND_MIN_STATE:
        state[nst - 2], state[nst - 1] = 1.0, 0.0  # no band until one is known to hold
    if best_bid_tick == EMPTY or best_ask_tick == EMPTY:
        return 0
    levels = int(params[P.levels])
    interval = params[P.interval]
    half_spread = params[P.half_spread]
    qty = params[P.order_qty]
    max_position = params[P.max_position]
    recenter = params[P.recenter_intervals]
    mid = (best_bid_tick * tick + best_ask_tick * tick) / 2.0
    centre = mid
    if recenter == 0.0 and nst >= BAND_MIN_STATE:
        # Centred on the mid, the levels stay put while it stays in one band (an anchored centre
        # also drops crossing levels, which depend on each best price: no band).
        state[nst - 2], state[nst - 1] = mid_band(mid, half_spread, interval, tick)
    if recenter > 0.0:
        # state[1] holds the anchored centre (0 before the first decision).
        if state[1] == 0.0 or abs(mid - state[1]) > recenter * interval:
            state[1] = mid
        centre = state[1]
    return grid_levels(
        centre,
        half_spread,
        interval,
        levels,
        qty,
        position,
        max_position,
        tick,
        best_bid_tick,
        best_ask_tick,
        recenter > 0.0,
        out_side,
        out_px,
        out_qty,
        out_level,
    )


STRATEGY = Strategy("static_grid", StaticGridParams, static_grid, max_targets=400, recompute="mid_band")
