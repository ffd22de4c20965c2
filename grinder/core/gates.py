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
- L2 execution guard (taker orders only, against the book's first `taker_guard_levels` levels a side,
  grinder.core.depth): an IOC or market order whose walk would fill at a VWAP more than
  `taker_max_slippage_bps` worse than the touch, or would take more than `taker_max_depth_share` of
  the visible depth on its side, or more than is visible within its limit, is blocked, or with
  `taker_guard_cut` cut down to the most whole lots that pass (`guard_taker`; both counted by reason);
- quote refresh (not a gate: the decision step applies it to the diff, `diff.refresh_into`): a resting
  quote older than `quote_ttl_ms` is replaced, and one within `refresh_ticks` of its target stays;
- flatten: with `flatten_bps` set, while the drawdown guard or the daily-loss kill holds, the decision
  step also closes the position with one reduce-only IOC order (`flatten_order`), at most once per
  `flatten_retry_ms`;
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

from grinder.book.l2 import EMPTY
from grinder.core.depth import ASK_QTY, ASK_TICKS, BID_QTY, BID_TICKS, MAX_DEPTH_LEVELS
from grinder.core.order_kind import IOC, KIND_MASK
from grinder.core.params import ParamVector

# Reasons, indexing the blocked-intent counters.
RATE_LIMIT, MAX_POSITION, MAX_NOTIONAL, MAX_OPEN_ORDERS, DAILY_LOSS, SPREAD_SPIKE, PRICE_IMPACT, DRAWDOWN = range(8)
QUANT_RULES = 8  # counted by the decision step after these gates (grinder.core.qrules)
TAKER_SLIPPAGE, TAKER_DEPTH = 9, 10  # the L2 execution guard's (`guard_taker`): blocked or cut down
REASONS = ("rate_limit", "max_position", "max_notional", "max_open_orders", "daily_loss", "spread_spike",
           "price_impact", "drawdown_reduce_only", "quant_rules", "taker_slippage", "taker_depth_share")  # fmt: skip
WINDOW = 256  # longest rolling window, decisions

# State layout: scalars, then two rings of WINDOW values (spreads, mids), then WINDOW values of
# scratch for the spread median (the gates allocate nothing: the decision step runs without NRT).
S_TOKENS, S_LAST_TS, S_DAY, S_DAY_START_EQ, S_PEAK_EQ, S_N, S_KILLED, S_FLATTEN_AT = range(8)
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
    flatten_bps: float = Field(
        0, ge=0, le=1000, description="close the position by a reduce-only IOC this far through the best price "
        "(basis points) while the drawdown guard or the daily-loss kill holds (0: no flatten)"
    )  # fmt: skip
    flatten_retry_ms: int = Field(1000, gt=0, description="at most one flatten order per this many ms")
    taker_max_slippage_bps: float = Field(
        0, ge=0, description="L2 guard: a taker order's VWAP over the visible book at most this far from the touch"
    )
    taker_max_depth_share: float = Field(
        0, ge=0, le=1, description="L2 guard: a taker order takes at most this share of the visible depth on its side"
    )
    taker_guard_levels: int = Field(10, ge=1, le=MAX_DEPTH_LEVELS, description="levels a side the L2 guard sees")
    taker_guard_cut: bool = Field(False, description="L2 guard: cut an order down to what passes instead of blocking")
    quote_ttl_ms: int = Field(0, ge=0, description="replace a resting quote this old, ms (0: quotes live on)")
    refresh_ticks: int = Field(0, ge=0, description="keep a quote within this many ticks of its target (0: exact)")
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
        or cfg[G.taker_max_slippage_bps] > 0.0
        or cfg[G.taker_max_depth_share] > 0.0
    )


@njit(cache=True, _nrt=False)
def apply_gates(cfg, st, now_ns, position, best_bid_px, best_ask_px, equity, unit_notional, t_side, t_qty, place,
                n_place, n_cancel, n_open, blocked, first_taker):  # fmt: skip
    """Filter one decision's intents; returns (places kept, cancels kept). `place` is compacted in place.

    Entries of `place` at or above `first_taker` are taker orders (grinder.core.order_kind): they never
    rest, so they do not count toward `max_open_orders`.

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
    resting = 0  # quotes kept (taker orders are kept too, but never rest)
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
        elif max_open > 0.0 and i < first_taker and n_open + resting + 1 > max_open:
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
        resting += 1 if i < first_taker else 0
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


@njit(cache=True, _nrt=False)
def flatten_order(cfg, st, now_ns, position, equity, best_bid_ticks, best_ask_ticks, lot):
    """The flatten the guards ask for at this decision: (side, limit price ticks, qty), qty 0.0 for none.

    With `flatten_bps` set, while the drawdown guard or the daily-loss kill holds (as `apply_gates` left
    the state: call it first, on the same decision), a position of at least half a lot is closed by one
    reduce-only IOC order (grinder.core.order_kind) `flatten_bps` through the best price on the side it
    takes, rounded towards the book (live.rollout.flatten_price's rule), for the position in whole lots;
    at most once per `flatten_retry_ms`. None without a best price on that side. Prices in ticks,
    quantities in base units (contracts for inverse instruments), `equity` in the settle currency.
    """
    bps = cfg[G.flatten_bps]
    if bps <= 0.0 or abs(position) < 0.5 * lot:
        return 0, 0, 0.0
    max_dd = cfg[G.max_drawdown]
    if not (st[S_KILLED] != 0.0 or (max_dd > 0.0 and st[S_PEAK_EQ] - equity > max_dd)):
        return 0, 0, 0.0
    if st[S_FLATTEN_AT] != 0.0 and now_ns - st[S_FLATTEN_AT] < cfg[G.flatten_retry_ms] * 1e6:
        return 0, 0, 0.0
    if position > 0.0:
        if best_bid_ticks == EMPTY:
            return 0, 0, 0.0
        side, limit = -1, np.int64(np.ceil(best_bid_ticks * (1.0 - bps / 1e4) - 1e-9))
    else:
        if best_ask_ticks == EMPTY:
            return 0, 0, 0.0
        side, limit = 1, np.int64(np.floor(best_ask_ticks * (1.0 + bps / 1e4) + 1e-9))
    st[S_FLATTEN_AT] = now_ns
    return side, limit, np.round(abs(position) / lot) * lot


@njit(cache=True, _nrt=False)
def _guard_allows(cfg, depth, side, limit, has_limit, want, lot, skip):
    """(the most of `want` that passes the L2 guard, in whole lots; the reason it binds, -1 if it does not)
    for a taker order on `side` (+1 buy takes asks) against `depth` (grinder.core.depth), `limit` ticks
    (inclusive) when `has_limit`, after earlier orders of the same decision took `skip` from that side
    (the touch outwards). A quantity that is not a positive number ends the visible book. See
    `guard_taker`."""
    max_slip, max_share = cfg[G.taker_max_slippage_bps], cfg[G.taker_max_depth_share]
    pc, qc = (ASK_TICKS, ASK_QTY) if side > 0 else (BID_TICKS, BID_QTY)
    n = min(depth.shape[0], int(cfg[G.taker_guard_levels]))
    total = 0.0  # visible depth on the side, the guard's levels
    for i in range(n):
        if not depth[i, qc] > 0.0:
            break
        total += depth[i, qc]
    best = want
    reason = -1
    if max_share > 0.0 and skip + want > max_share * total * (1.0 + 1e-9):
        best = max(0.0, max_share * total - skip)
        reason = TAKER_DEPTH
    # The walk over the visible levels within the limit, best first, past what earlier orders took. With
    # the bound on the VWAP, a level costs side x (price - bound) a unit (negative near the touch): the
    # VWAP stays within the bound while the sum of those costs over what was taken is at most 0.
    touch = depth[0, pc] if n > 0 else np.nan
    bound = touch * (1.0 + side * max_slip / 1e4)
    walkable = 0.0
    fits = 0.0  # the most that keeps the VWAP within its bound
    spent = 0.0
    capped = False
    left = skip
    for i in range(n):
        q, px = depth[i, qc], depth[i, pc]
        if not q > 0.0 or (has_limit and ((side > 0 and px > limit) or (side < 0 and px < limit))):
            break
        if left > 0.0:
            used = min(q, left)
            q -= used
            left -= used
            if q <= 0.0:
                continue
        walkable += q
        if max_slip > 0.0 and not capped:
            e = side * (px - bound)
            if e > 0.0 and spent + q * e > 0.0:
                fits += max(0.0, -spent / e)
                capped = True
            else:
                fits += q
                spent += q * e
    if max_slip > 0.0 and fits < best:
        best = fits
        reason = TAKER_SLIPPAGE
    if walkable < best:  # more than the visible book holds within the limit: its cost cannot be known
        best = walkable
        reason = TAKER_DEPTH if max_share > 0.0 else TAKER_SLIPPAGE
    if reason < 0 or best >= want * (1.0 - 1e-9):  # float rounding of a bound met exactly is no breach
        return want, -1
    return np.floor(best / lot + 1e-9) * lot, reason


@njit(cache=True, _nrt=False)
def guard_taker(cfg, depth, lot, t_side, t_px, t_qty, t_kind, place, first, n, blocked):
    """The L2 execution guard over the taker orders place[first:first + n] (indices into the targets);
    returns how many are kept, compacted in place, each cut down (t_qty) when `taker_guard_cut` lets it.

    An order passes when its walk of the visible book (`depth`, the first `taker_guard_levels` levels of
    the side it takes, up to an IOC's limit, after what the decision's earlier taker orders on that
    side would take) fills its whole quantity at a VWAP at most `taker_max_slippage_bps` from the touch,
    and the side's orders together take at most `taker_max_depth_share` of its visible depth; otherwise
    it is blocked, or cut to the most whole lots that pass (none: blocked), and counted under
    TAKER_SLIPPAGE or TAKER_DEPTH, the limit that binds. What the book does not show cannot be vouched
    for: more than the visible depth within the limit does not pass. With both limits 0 (off) every
    order passes.
    """
    if cfg[G.taker_max_slippage_bps] <= 0.0 and cfg[G.taker_max_depth_share] <= 0.0:
        return n
    cut = cfg[G.taker_guard_cut] != 0.0
    taken_buy = 0.0  # what the orders kept so far take from the asks, and from the bids
    taken_sell = 0.0
    kept = 0
    for k in range(first, first + n):
        j = place[k]
        has_limit = (t_kind[j] & KIND_MASK) == IOC
        skip = taken_buy if t_side[j] > 0 else taken_sell
        allowed, reason = _guard_allows(cfg, depth, t_side[j], t_px[j], has_limit, t_qty[j], lot, skip)
        if reason >= 0:
            blocked[reason] += 1
            if not cut or allowed < 0.5 * lot:
                continue
            t_qty[j] = allowed
        if t_side[j] > 0:
            taken_buy += t_qty[j]
        else:
            taken_sell += t_qty[j]
        place[first + kept] = j
        kept += 1
    return kept


@njit(cache=True, _nrt=False)
def refresh_settings(cfg):
    """(time to live, ns; refresh distance, ticks) of the quotes (0: off), for `diff.refresh_into`."""
    return np.int64(cfg[G.quote_ttl_ms] * 1e6), np.int64(cfg[G.refresh_ticks])
