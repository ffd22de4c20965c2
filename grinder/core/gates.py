"""Gates: the last word before an order leaves, shared by the backtest engine and the live adapter.

Each decision's intents (cancels, then places) pass through the gates in this order; a blocked
intent is dropped and counted under its reason:

- risk: a place that would take |position + pending same-side quantity| past `max_position`
  (base units, or contracts) or position notional past `max_notional` (quote), or open orders past
  `max_open_orders`; after the day's loss exceeds `max_daily_loss` (settle currency: quote for
  linear contracts, the coin for inverse ones) every place is blocked until the next UTC day, even if
  equity recovers (kill switch: the strategy's cancels still go out);
- drawdown guard: once equity is `max_drawdown` (settle currency) below its peak, only places that reduce
  the position pass (reduce-only);
- toxicity: no places while the spread is more than `spread_spike` times its rolling median, or
  while the mid has moved more than `max_impact_bps` over the last `impact_window` decisions;
- rate limit: a token bucket of `rate_capacity` actions refilled at `rate_per_s`; cancels are
  served before places.

After these, the decision step applies Binance's quantitative trading rules (`quant_rules`,
grinder.core.qrules). A limit of 0 switches its gate off. Everything here is pure: state lives in a float64 array the
caller keeps between decisions (`new_gate_state`).
"""

from __future__ import annotations

import numpy as np
from numba import njit
from pydantic import ConfigDict, Field

from grinder.core.params import ParamVector

# Reasons, indexing the blocked-intent counters.
RATE_LIMIT, MAX_POSITION, MAX_NOTIONAL, MAX_OPEN_ORDERS, DAILY_LOSS, SPREAD_SPIKE, PRICE_IMPACT, DRAWDOWN = range(8)
QUANT_RULES = 8  # counted by the decision step after these gates (grinder.core.qrules)
REASONS = ("rate_limit", "max_position", "max_notional", "max_open_orders", "daily_loss", "spread_spike",
           "price_impact", "drawdown_reduce_only", "quant_rules")  # fmt: skip
WINDOW = 256  # longest rolling window, decisions

# State layout: scalars, then two rings of WINDOW values (spreads, mids), then WINDOW values of
# scratch for the spread median (the gates allocate nothing: the decision step runs without NRT).
S_TOKENS, S_LAST_TS, S_DAY, S_DAY_START_EQ, S_PEAK_EQ, S_N, S_KILLED = range(7)
S_RING = 8
S_SCRATCH = S_RING + 2 * WINDOW
NS_PER_DAY = 86_400_000_000_000


class GateConfig(ParamVector):
    """Gate limits; 0 switches a gate off. The numeric fields, in this order, are the vector `apply_gates` reads."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    vector_exclude = ("quant_rules", "quant_rules_file")  # the decision step's rules gate, not apply_gates'

    rate_capacity: float = Field(0, ge=0, description="token bucket size, order actions")
    rate_per_s: float = Field(0, ge=0, description="tokens refilled per second")
    max_position: float = Field(0, ge=0, description="base units")
    max_notional: float = Field(0, ge=0, description="quote currency")
    max_open_orders: int = Field(0, ge=0)
    max_daily_loss: float = Field(0, ge=0, description="settle currency, per UTC day")
    spread_spike: float = Field(0, ge=0, description="block when spread > this x rolling median")
    spread_window: int = Field(50, ge=2, le=WINDOW, description="decisions in the spread median")
    max_impact_bps: float = Field(0, ge=0, description="block when |mid move| over the window exceeds this")
    impact_window: int = Field(10, ge=1, le=WINDOW - 1, description="decisions")
    max_drawdown: float = Field(0, ge=0, description="settle currency below peak equity: reduce-only")
    quant_rules: bool = Field(False, description="block new orders before Binance's quantitative rules or "
                              "order limits would be breached; tracked and reported either way")  # fmt: skip
    quant_rules_file: str = Field("", description="thresholds file (TOML); empty: the shipped, versioned one")


G = GateConfig.index()  # each limit's slot in the vector (GateConfig.as_array)


def new_gate_state(cfg: np.ndarray) -> np.ndarray:
    """Fresh gate state: a full token bucket, no history."""
    st = np.zeros(S_SCRATCH + WINDOW)
    st[S_TOKENS] = cfg[G.rate_capacity]
    st[S_LAST_TS] = -1.0
    st[S_DAY] = -1.0
    st[S_PEAK_EQ] = -np.inf
    return st


@njit(cache=True, _nrt=False)
def _select(a, lo, hi, k):
    """Reorder a[lo:hi] so that a[k] holds the value a sort would put there; returns it (quickselect)."""
    while hi - lo > 1:
        pivot = a[(lo + hi - 1) >> 1]
        i, j = lo, hi - 1
        while i <= j:
            while a[i] < pivot:
                i += 1
            while a[j] > pivot:
                j -= 1
            if i <= j:
                a[i], a[j] = a[j], a[i]
                i += 1
                j -= 1
        if k <= j:
            hi = j + 1
        elif k >= i:
            lo = i
        else:
            break
    return a[k]


@njit(cache=True, _nrt=False)
def median_in_place(a, start, n):
    """np.median of a[start:start + n] (n >= 1, no NaN), the same number, found without allocating; reorders them."""
    half = start + (n >> 1)
    upper = _select(a, start, start + n, half)
    if n & 1:
        return upper
    lower = a[start]  # the largest of the lower half, which _select left below `half`
    for i in range(start + 1, half):
        lower = max(lower, a[i])
    return (lower + upper) / 2


@njit(cache=True)
def gates_active(cfg) -> bool:
    """Whether any gate is on (a limit above 0); with none, apply_gates would pass every intent unchanged."""
    return (
        cfg[G.rate_capacity] > 0.0
        or cfg[G.max_position] > 0.0
        or cfg[G.max_notional] > 0.0
        or cfg[G.max_open_orders] > 0.0
        or cfg[G.max_daily_loss] > 0.0
        or cfg[G.spread_spike] > 0.0
        or cfg[G.max_impact_bps] > 0.0
        or cfg[G.max_drawdown] > 0.0
    )


@njit(cache=True, _nrt=False)
def apply_gates(cfg, st, now_ns, position, best_bid_px, best_ask_px, equity, unit_notional, t_side, t_qty, place,
                n_place, n_cancel, n_open, blocked):  # fmt: skip
    """Filter one decision's intents; returns (places kept, cancels kept). `place` is compacted in place.

    Prices are quote per base; `equity` is in the settle currency; `unit_notional` is the quote value
    of one unit of position (the mid for linear contracts, the contract size for inverse ones).
    """
    rate_cap, rate_per_s = cfg[G.rate_capacity], cfg[G.rate_per_s]
    max_pos, max_notional, max_open = cfg[G.max_position], cfg[G.max_notional], cfg[G.max_open_orders]
    max_loss, max_dd = cfg[G.max_daily_loss], cfg[G.max_drawdown]
    spike, spread_win = cfg[G.spread_spike], int(cfg[G.spread_window])
    max_impact, impact_win = cfg[G.max_impact_bps], int(cfg[G.impact_window])
    have_book = best_bid_px > 0.0 and best_ask_px > 0.0
    mid = 0.5 * (best_bid_px + best_ask_px) if have_book else 0.0
    # Rolling history of spreads and mids, one entry per decision with a book.
    n_hist = int(st[S_N])
    if have_book:
        k = n_hist % WINDOW
        st[S_RING + k] = best_ask_px - best_bid_px
        st[S_RING + WINDOW + k] = mid
        n_hist += 1
        st[S_N] = n_hist
    # Day boundary and equity peak.
    day = now_ns // NS_PER_DAY
    if st[S_DAY] != day:
        st[S_DAY] = day
        st[S_DAY_START_EQ] = equity
        st[S_KILLED] = 0.0
    st[S_PEAK_EQ] = max(st[S_PEAK_EQ], equity)
    # Latched for the rest of the UTC day: equity climbing back (a mark moving) does not re-open trading.
    if max_loss > 0.0 and st[S_DAY_START_EQ] - equity > max_loss:
        st[S_KILLED] = 1.0
    killed = st[S_KILLED] != 0.0
    reduce_only = max_dd > 0.0 and st[S_PEAK_EQ] - equity > max_dd
    toxic = -1
    if spike > 0.0 and have_book and n_hist >= spread_win:
        for j in range(spread_win):
            st[S_SCRATCH + j] = st[S_RING + (n_hist - 1 - j) % WINDOW]
        if (best_ask_px - best_bid_px) > spike * median_in_place(st, S_SCRATCH, spread_win):
            toxic = SPREAD_SPIKE
    if toxic < 0 and max_impact > 0.0 and have_book and n_hist > impact_win:
        past = st[S_RING + WINDOW + (n_hist - 1 - impact_win) % WINDOW]
        if abs(mid - past) / past * 1e4 > max_impact:
            toxic = PRICE_IMPACT
    # Risk, drawdown and toxicity act on places only.
    pending_buy = 0.0
    pending_sell = 0.0
    kept = 0
    for j in range(n_place):
        i = place[j]
        sgn = 1.0 if t_side[i] > 0 else -1.0
        reduces = sgn * position < 0.0
        after = position + sgn * ((pending_buy if sgn > 0 else pending_sell) + t_qty[i])
        reason = -1
        if killed:
            reason = DAILY_LOSS
        elif reduce_only and not reduces:
            reason = DRAWDOWN
        elif toxic >= 0:
            reason = toxic
        elif max_pos > 0.0 and abs(after) > max_pos and not reduces:
            reason = MAX_POSITION
        elif max_notional > 0.0 and have_book and abs(after) * unit_notional > max_notional and not reduces:
            reason = MAX_NOTIONAL
        elif max_open > 0.0 and n_open + kept + 1 > max_open:
            reason = MAX_OPEN_ORDERS
        if reason >= 0:
            blocked[reason] += 1
            continue
        if sgn > 0:
            pending_buy += t_qty[i]
        else:
            pending_sell += t_qty[i]
        place[kept] = i
        kept += 1
    # Rate limit last, cancels first.
    n_c = n_cancel
    if rate_cap > 0.0:
        if st[S_LAST_TS] >= 0.0:
            st[S_TOKENS] = min(rate_cap, st[S_TOKENS] + (now_ns - st[S_LAST_TS]) * 1e-9 * rate_per_s)
        st[S_LAST_TS] = now_ns
        tokens = int(st[S_TOKENS])
        if n_c > tokens:
            blocked[RATE_LIMIT] += n_c - tokens
            n_c = tokens
        tokens -= n_c
        if kept > tokens:
            blocked[RATE_LIMIT] += kept - tokens
            kept = tokens
        st[S_TOKENS] -= n_c + kept
    return kept, n_c
