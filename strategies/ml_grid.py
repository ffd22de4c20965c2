"""ML grid: the grid re-shaped by a model's forecast of volatility, and skewed by inventory.

It reads one signal, `signals[0]`: a registered model's prediction of the forward realized
volatility of the mid (a `fwd_rv_<h>` label of `grinder.ml.labels`, bps/sqrt(s)), made from the
features known at the decision (`grinder.ml.signals` in the backtest, the live adapter's
incremental features in live). Each decision it picks a mode:

- PAUSE when the forecast is at or above `pause_vol` (a storm is coming: no quotes), or when there
  is no forecast (NaN: the model had nothing to go on; fail closed);
- WIDEN when it is at or above `widen_vol`: interval and half spread multiplied by `widen`;
- TIGHTEN when it is at or below `tighten_vol`: multiplied by `tighten` (never below one tick);
- BASE otherwise.

A new mode takes effect after `confirm` decisions in a row (hysteresis), except PAUSE, which
applies at once: a forecast storm is no time to wait. Inventory skew moves the grid's centre by
`-skew * position` (quote currency per base unit). The mode is kept in state[0], which the drivers
record at every step.
"""

from __future__ import annotations

import numpy as np
from numba import njit
from pydantic import ConfigDict, Field, model_validator

from grinder import EMPTY, ParamVector, Strategy
from grinder.strategies.static_grid import grid_levels

BASE, WIDEN, TIGHTEN, PAUSE = 0, 1, 2, 3
MODES = ("base", "widen", "tighten", "pause")
_MODE, _CANDIDATE, _STREAK = 0, 1, 2  # state layout


class MlGridParams(ParamVector):
    """Parameters of the ML grid (prices in quote currency, sizes in base units, volatility in bps/sqrt(s))."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    levels: int = Field(20, ge=1, le=200, description="quotes per side")
    interval: float = Field(gt=0, description="BASE distance between levels, quote currency")
    half_spread: float = Field(ge=0, description="BASE distance of the first level from the centre")
    order_qty: float = Field(gt=0, description="size of each quote, base units")
    max_position: float = Field(gt=0, description="no more buying (selling) beyond +/- this, base units")
    skew: float = Field(0.0, ge=0, description="centre shift per unit of position, quote currency")
    tighten_vol: float = Field(0.5, ge=0, description="TIGHTEN at or below this forecast, bps/sqrt(s)")
    widen_vol: float = Field(2.0, gt=0, description="WIDEN at or above this forecast, bps/sqrt(s)")
    pause_vol: float = Field(6.0, gt=0, description="PAUSE at or above this forecast, bps/sqrt(s)")
    widen: float = Field(2.0, ge=1)
    tighten: float = Field(0.5, gt=0, le=1)
    confirm: int = Field(3, ge=1, description="decisions a new mode (other than PAUSE) must persist before it applies")

    @model_validator(mode="after")
    def _sane(self) -> MlGridParams:
        if not self.tighten_vol < self.widen_vol <= self.pause_vol:
            raise ValueError("need tighten_vol < widen_vol <= pause_vol")
        if self.max_position < self.order_qty:
            raise ValueError("max_position must be at least order_qty")
        return self


P = MlGridParams.index()


@njit(cache=True)
def ml_grid(
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
    forecast = signals[0]
    if np.isnan(forecast) or forecast >= params[P.pause_vol]:
        raw = PAUSE
    elif forecast >= params[P.widen_vol]:
        raw = WIDEN
    elif forecast <= params[P.tighten_vol]:
        raw = TIGHTEN
    else:
        raw = BASE
    if raw == PAUSE:
        state[_MODE] = PAUSE
        state[_STREAK] = 0.0
    elif raw == state[_MODE]:
        state[_STREAK] = 0.0
    elif raw == state[_CANDIDATE]:
        state[_STREAK] += 1.0
    else:
        state[_CANDIDATE] = raw
        state[_STREAK] = 1.0
    if state[_STREAK] >= params[P.confirm]:
        state[_MODE] = raw
        state[_STREAK] = 0.0
    mode = int(state[_MODE])
    if mode == PAUSE:
        return 0
    interval, half_spread = params[P.interval], params[P.half_spread]
    if mode == WIDEN:
        interval *= params[P.widen]
        half_spread *= params[P.widen]
    elif mode == TIGHTEN:
        interval = max(interval * params[P.tighten], tick)
        half_spread *= params[P.tighten]
    mid = (best_bid_tick * tick + best_ask_tick * tick) / 2.0
    return grid_levels(
        mid - params[P.skew] * position,
        half_spread,
        interval,
        int(params[P.levels]),
        params[P.order_qty],
        position,
        params[P.max_position],
        tick,
        best_bid_tick,
        best_ask_tick,
        True,
        out_side,
        out_px,
        out_qty,
        out_level,
    )


STRATEGY = Strategy("ml_grid", MlGridParams, ml_grid, max_targets=400, modes=MODES, signals=("fwd_rv_",))
