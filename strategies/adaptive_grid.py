"""Adaptive grid: the static grid, re-shaped by a controller and skewed by inventory.

Each decision the controller reads three features — short-term volatility (an exponentially
weighted mean of |mid return|, bps), the spread (ticks) and the best-level imbalance
(|bid qty - ask qty| / their sum) — and picks a mode:

- PAUSE when the spread or the imbalance is extreme: no quotes (resting ones are cancelled);
- WIDEN when volatility is high: interval and half spread multiplied by `widen`;
- TIGHTEN when volatility is low: multiplied by `tighten` (never below one tick);
- BASE otherwise.

A new mode takes effect only after it has been called for `confirm` decisions in a row
(hysteresis, so one noisy reading does not flip the grid). Inventory skew moves the grid's centre
by `-skew * position` (quote currency per base unit), so a long book quotes lower and sells
sooner. The mode is kept in state[0], which the engine records at every step.
"""

from __future__ import annotations

from numba import njit
from pydantic import ConfigDict, Field, model_validator

from grinder import EMPTY, ParamVector, Strategy
from grinder.strategies.static_grid import grid_levels

BASE, WIDEN, TIGHTEN, PAUSE = 0, 1, 2, 3
MODES = ("base", "widen", "tighten", "pause")
# state layout
_MODE, _CANDIDATE, _STREAK, _LAST_MID, _VOL = 0, 1, 2, 3, 4


class AdaptiveGridParams(ParamVector):
    """Parameters of the adaptive grid (prices in quote currency, sizes in base units)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    levels: int = Field(20, ge=1, le=200, description="quotes per side")
    interval: float = Field(gt=0, description="BASE distance between levels, quote currency")
    half_spread: float = Field(ge=0, description="BASE distance of the first level from the centre")
    order_qty: float = Field(gt=0, description="size of each quote, base units")
    max_position: float = Field(gt=0, description="no more buying (selling) beyond +/- this, base units")
    skew: float = Field(0.0, ge=0, description="centre shift per unit of position, quote currency")
    vol_halflife: float = Field(20.0, gt=0, description="decisions")
    widen_vol_bps: float = Field(3.0, gt=0, description="WIDEN above this volatility (bps per decision)")
    tighten_vol_bps: float = Field(0.3, ge=0, description="TIGHTEN below this volatility")
    pause_spread_ticks: int = Field(20, ge=2, description="PAUSE when the spread is at least this wide")
    pause_imbalance: float = Field(0.98, gt=0, le=1, description="PAUSE when best-level imbalance reaches this")
    widen: float = Field(2.0, ge=1)
    tighten: float = Field(0.5, gt=0, le=1)
    confirm: int = Field(3, ge=1, description="decisions a new mode must persist before it applies")

    @model_validator(mode="after")
    def _sane(self) -> AdaptiveGridParams:
        if self.tighten_vol_bps >= self.widen_vol_bps:
            raise ValueError("tighten_vol_bps must be below widen_vol_bps")
        if self.max_position < self.order_qty:
            raise ValueError("max_position must be at least order_qty")
        return self


P = AdaptiveGridParams.index()


@njit(cache=True)
def shape_grid(params, state, best_bid_tick, best_ask_tick, bid_qty, ask_qty, tick):
    """The controller (module docstring) at one decision on a two-sided book: (mode, mid, interval, half
    spread), quote currency, after updating its features and hysteresis in `state`. `params` starts
    with AdaptiveGridParams' fields (a strategy that extends them shares this controller)."""
    interval, half_spread = params[P.interval], params[P.half_spread]
    halflife, widen_vol, tighten_vol = params[P.vol_halflife], params[P.widen_vol_bps], params[P.tighten_vol_bps]
    pause_spread, pause_imb = params[P.pause_spread_ticks], params[P.pause_imbalance]
    widen, tighten, confirm = params[P.widen], params[P.tighten], params[P.confirm]
    mid = (best_bid_tick * tick + best_ask_tick * tick) / 2.0
    # Features.
    if state[_LAST_MID] > 0.0:
        ret_bps = abs(mid / state[_LAST_MID] - 1.0) * 1e4
        alpha = 1.0 - 0.5 ** (1.0 / halflife)
        state[_VOL] += alpha * (ret_bps - state[_VOL])
    state[_LAST_MID] = mid
    spread_ticks = best_ask_tick - best_bid_tick
    top = bid_qty + ask_qty
    imbalance = abs(bid_qty - ask_qty) / top if top > 0.0 else 0.0
    # Controller with hysteresis.
    if spread_ticks >= pause_spread or imbalance >= pause_imb:
        raw = PAUSE
    elif state[_VOL] >= widen_vol:
        raw = WIDEN
    elif state[_VOL] <= tighten_vol:
        raw = TIGHTEN
    else:
        raw = BASE
    if raw == state[_MODE]:
        state[_STREAK] = 0.0
    elif raw == state[_CANDIDATE]:
        state[_STREAK] += 1.0
    else:
        state[_CANDIDATE] = raw
        state[_STREAK] = 1.0
    if state[_STREAK] >= confirm:
        state[_MODE] = raw
        state[_STREAK] = 0.0
    mode = int(state[_MODE])
    if mode == WIDEN:
        interval *= widen
        half_spread *= widen
    elif mode == TIGHTEN:
        interval = max(interval * tighten, tick)
        half_spread *= tighten
    return mode, mid, interval, half_spread


@njit(cache=True)
def adaptive_grid(
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
    # Skew may push a level through the book: drop those rather than send taker-priced quotes.
    return grid_levels(
        mid - skew * position,
        half_spread,
        interval,
        levels,
        qty,
        position,
        max_position,
        tick,
        best_bid_tick,
        best_ask_tick,
        True,
        out_side,
        out_px,
        out_qty,
        out_level,
    )


STRATEGY = Strategy("adaptive_grid", AdaptiveGridParams, adaptive_grid, max_targets=400, modes=MODES)
