"""Smart grid (v2): the adaptive grid, with each level sized from the book's depth near it and a risk budget.

The controller, the modes and the inventory skew are the adaptive grid's (`shape_grid`, the same
parameters first). Each level's size is then at most:

- `depth_share` of the visible quantity on its own side of the book within `near_ticks` of its price
  (the queue it joins and its neighbours), from the book's first `DEPTH_LEVELS` levels
  (`depth`, grinder.core.depth); a level beyond the deepest visible one takes the mean visible
  quantity per level of its side, since the book shows nothing there;
- `level_budget` of notional (quote currency), the risk budget per level;

and `order_qty`, rounded down to whole lots. A level left below half a lot is not quoted. With both
off (0) it quotes what the adaptive grid quotes. Exits by taker order come from the gates: with
`[gates] max_drawdown` (or `max_daily_loss`) and `flatten_bps`, the position is closed by a
reduce-only IOC when the guard fires (docs/backtest.md, "Gates"); live's kill switch flattens with
`kill_flatten` (docs/live.md).
"""

from __future__ import annotations

import numpy as np
from numba import njit
from pydantic import Field

from grinder import ASK_QTY, ASK_TICKS, BID_QTY, BID_TICKS, EMPTY, Strategy
from grinder.strategies.adaptive_grid import MODES, PAUSE, AdaptiveGridParams, shape_grid
from grinder.strategies.static_grid import grid_levels

DEPTH_LEVELS = 10  # levels a side the sizing reads


class SmartGridParams(AdaptiveGridParams):
    """The adaptive grid's parameters, then the depth-aware sizing's (sizes in base units)."""

    depth_share: float = Field(0.0, ge=0, le=1, description="a level's size at most this share of the depth near it")
    near_ticks: int = Field(5, ge=0, le=10_000, description="depth within this many ticks of a level is near it")
    level_budget: float = Field(0.0, ge=0, description="a level's notional at most this, quote currency (0: none)")


P = SmartGridParams.index()


@njit(cache=True)
def near_depth(depth, side, px, near):
    """Visible quantity on a quote's own side (side +1: the bids) within `near` ticks of its price `px`;
    for a price beyond the side's deepest visible level, the mean visible quantity per level there."""
    pc, qc = (BID_TICKS, BID_QTY) if side > 0 else (ASK_TICKS, ASK_QTY)
    total = 0.0
    seen = 0
    near_q = 0.0
    deepest = np.nan
    for i in range(depth.shape[0]):
        q = depth[i, qc]
        if q <= 0.0:
            break
        total += q
        seen += 1
        deepest = depth[i, pc]
        if abs(depth[i, pc] - px) <= near:
            near_q += q
    if seen > 0 and ((side > 0 and px < deepest - near) or (side < 0 and px > deepest + near)):
        return total / seen
    return near_q


@njit(cache=True)
def smart_grid(
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
    """Target quotes for one decision (see the module docstring); updates `state`."""
    if best_bid_tick == EMPTY or best_ask_tick == EMPTY:
        return 0
    mode, mid, interval, half_spread = shape_grid(params, state, best_bid_tick, best_ask_tick, bid_qty, ask_qty, tick)
    if mode == PAUSE:
        return 0
    levels, qty, max_position, skew = int(params[P.levels]), params[P.order_qty], params[P.max_position], params[P.skew]
    n = grid_levels(mid - skew * position, half_spread, interval, levels, qty, position, max_position, tick,
                    best_bid_tick, best_ask_tick, True, out_side, out_px, out_qty, out_level)  # fmt: skip
    if n > out_side.shape[0]:
        return n  # more than the buffer: the driver refuses the run
    share, near, budget = params[P.depth_share], params[P.near_ticks], params[P.level_budget]
    if share <= 0.0 and budget <= 0.0:
        return n
    kept = 0
    for j in range(n):
        q = out_qty[j]
        if share > 0.0:
            q = min(q, share * near_depth(depth, out_side[j], out_px[j], near))
        if budget > 0.0:
            q = min(q, budget / (out_px[j] * tick))
        q = np.floor(q / lot + 1e-9) * lot
        if q < 0.5 * lot:
            continue
        out_side[kept], out_px[kept], out_level[kept], out_qty[kept] = out_side[j], out_px[j], out_level[j], q
        kept += 1
    return kept


STRATEGY = Strategy("smart_grid", SmartGridParams, smart_grid, max_targets=400, modes=MODES,
                    depth_levels=DEPTH_LEVELS)  # fmt: skip
