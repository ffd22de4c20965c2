"""Top-K symbol prefilter: per-symbol volatility and liquidity over a look-back window, and a ranking.

Features come from the prevailing best bid/ask sampled on a regular clock (last quote at or before
each sample time) and from the trades inside the window; see docs/portfolio.md for units and the
score. Everything is vectorised numpy over the window's arrays; the Python loops run over symbols.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from grinder.data.tape import BATCH_END, EV_TRADE, Tape
from grinder.errors import ConfigError, DataError

NS = 1_000_000_000
SECONDS_PER_YEAR = 365 * 86_400  # perpetual futures trade every day


@dataclass(frozen=True)
class SymbolFeatures:
    """One symbol's statistics over a look-back window; money in quote currency."""

    symbol: str
    vol_bps: float  # realized volatility of mid log returns, bps per sqrt(second)
    notional_per_s: float  # traded notional, quote per second of window
    depth_quote: float  # mean top-of-book depth, (bid side + ask side) / 2, quote
    spread_bps: float  # mean quoted spread (ask - bid) / mid, bps
    n_trades: int
    n_samples: int  # quote samples the volatility, depth and spread are taken over
    span_s: float  # window length, seconds

    @property
    def vol_annual(self) -> float:
        """Volatility annualised over a 365-day year, as a fraction (0.5 = 50 %)."""
        return self.vol_bps * 1e-4 * math.sqrt(SECONDS_PER_YEAR)


def _check_sorted(ts: np.ndarray, what: str, symbol: str) -> None:
    if len(ts) > 1 and (np.diff(ts) < 0).any():
        raise DataError(f"{symbol}: {what} times are not in time order")


def features(
    symbol: str,
    quote_ts: np.ndarray,
    bid: np.ndarray,
    ask: np.ndarray,
    bid_qty: np.ndarray,
    ask_qty: np.ndarray,
    trade_ts: np.ndarray,
    trade_price: np.ndarray,
    trade_qty: np.ndarray,
    start_ns: int,
    end_ns: int,
    sample_ns: int = NS,
    inverse: bool = False,
    contract_size: float = 1.0,
) -> SymbolFeatures:
    """Features of [start_ns, end_ns) from best bid/ask quotes (ns, quote per base, base) and trades.

    The quote prevailing at start_ns + k * sample_ns (k = 0, 1, ... while before end_ns) is the last
    one at or before that time; samples before the first quote are skipped. Volatility is the root
    of the summed squared log returns of the sampled mid per second, in bps; sampling on a clock
    rather than per quote keeps bid/ask bounce out of it. Quantities of inverse contracts are
    contracts of `contract_size` quote each.
    """
    start_ns, end_ns, sample_ns = int(start_ns), int(end_ns), int(sample_ns)
    if end_ns <= start_ns:
        raise ConfigError(f"{symbol}: empty look-back window: end {end_ns} <= start {start_ns}")
    if sample_ns <= 0:
        raise ConfigError(f"{symbol}: sample_ns must be positive, got {sample_ns}")
    n_q = len(quote_ts)
    if not all(len(a) == n_q for a in (bid, ask, bid_qty, ask_qty)):
        raise DataError(f"{symbol}: quote arrays differ in length")
    if not len(trade_price) == len(trade_qty) == len(trade_ts):
        raise DataError(f"{symbol}: trade arrays differ in length")
    _check_sorted(quote_ts, "quote", symbol)
    _check_sorted(trade_ts, "trade", symbol)

    grid = np.arange(start_ns, end_ns, sample_ns, dtype=np.int64)
    idx = np.searchsorted(quote_ts, grid, "right") - 1
    idx = idx[idx >= 0]
    if len(idx) < 2:
        raise DataError(
            f"{symbol}: {len(idx)} quote sample(s) in the look-back window; need at least 2 "
            f"(window {(end_ns - start_ns) / NS:g} s, sample every {sample_ns / NS:g} s)"
        )
    b, a, bq, aq = bid[idx], ask[idx], bid_qty[idx], ask_qty[idx]
    if not ((b > 0) & (a > 0)).all():
        raise DataError(f"{symbol}: non-positive bid or ask price in the look-back window")
    mid = (b + a) / 2.0
    r = np.diff(np.log(mid))
    vol_bps = 1e4 * math.sqrt(float(np.dot(r, r)) / (len(r) * sample_ns / NS))
    spread_bps = float(np.mean((a - b) / mid)) * 1e4
    if inverse:
        depth = float(np.mean(bq + aq)) * contract_size / 2.0
    else:
        depth = float(np.mean(b * bq + a * aq)) / 2.0

    lo, hi = np.searchsorted(trade_ts, [start_ns, end_ns], "left")
    px, q = trade_price[lo:hi], trade_qty[lo:hi]
    traded = float(q.sum()) * contract_size if inverse else float(np.dot(px, q))
    span_s = (end_ns - start_ns) / NS
    return SymbolFeatures(
        symbol=symbol,
        vol_bps=vol_bps,
        notional_per_s=traded / span_s,
        depth_quote=depth,
        spread_bps=spread_bps,
        n_trades=int(hi - lo),
        n_samples=len(idx),
        span_s=span_s,
    )


def tape_quotes(tape: Tape) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(ts ns, bid, ask, bid qty, ask qty) of the tape: its venue BBO series, else rebuilt from its book.

    Tapes ingested without a BBO stream (Tardis, hftbacktest) get the best levels after every
    complete exchange message, from one replay of the book.
    """
    q = tape.bbo
    if len(q):
        return q.ts_exch, q.bid_price, q.ask_price, q.bid_qty, q.ask_qty
    from grinder.book.l2 import EMPTY
    from grinder.sim.replay import build_replay

    # Exchange times are sorted, so the replay's "local" arrays are its exchange-order ones.
    rep = build_replay(tape, np.ascontiguousarray(tape.ts_exch))
    ok = ((tape.flags & BATCH_END) != 0) & (rep.local_best_bid != EMPTY) & (rep.local_best_ask != EMPTY)
    tick = tape.instrument.tick_size
    return (
        tape.ts_exch[ok],
        rep.local_best_bid[ok] * tick,
        rep.local_best_ask[ok] * tick,
        rep.local_best_bid_qty[ok],
        rep.local_best_ask_qty[ok],
    )


def tape_features(
    tape: Tape, start_ns: int | None = None, end_ns: int | None = None, sample_ns: int = NS
) -> SymbolFeatures:
    """`features` of a tape over [start_ns, end_ns) (default: its first event in window to its last)."""
    if len(tape) == 0:
        raise DataError(f"{tape.instrument.symbol}: empty tape")
    start = int(tape.ts_exch[min(tape.start, len(tape) - 1)]) if start_ns is None else int(start_ns)
    end = int(tape.ts_exch[-1]) + 1 if end_ns is None else int(end_ns)
    trades = tape.kind == EV_TRADE
    inst = tape.instrument
    return features(
        inst.symbol,
        *tape_quotes(tape),
        tape.ts_exch[trades],
        tape.price[trades],
        tape.qty[trades],
        start,
        end,
        sample_ns,
        inverse=inst.contract == "inverse",
        contract_size=inst.contract_size,
    )


class PrefilterRules(BaseModel):
    """Who may be picked (floors and caps, quote currency and bps) and how volatility and liquidity weigh."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    vol_weight: float = Field(0.5, ge=0, le=1, description="weight of the volatility rank; liquidity gets the rest")
    min_notional_per_s: float = Field(1_000.0, ge=0, description="excluded below this traded quote per second")
    min_depth_quote: float = Field(0.0, ge=0, description="excluded below this mean top-of-book depth, quote")
    max_spread_bps: float = Field(10.0, gt=0, description="excluded above this mean spread, bps of mid")


@dataclass(frozen=True)
class Pick:
    """An eligible symbol's score in [0, 1] and its volatility and liquidity ranks (0 lowest, 1 highest)."""

    symbol: str
    score: float
    vol_rank: float
    liq_rank: float


@dataclass(frozen=True)
class Selection:
    """Eligible symbols best first (`ranked`), the first k of them (`picks`), and why others were excluded."""

    ranked: tuple[Pick, ...]
    k: int
    excluded: tuple[tuple[str, str], ...]  # (symbol, reason), in input order

    @property
    def picks(self) -> tuple[Pick, ...]:
        """The chosen symbols' picks, best first (all eligible ones when fewer than k)."""
        return self.ranked[: self.k]

    @property
    def symbols(self) -> tuple[str, ...]:
        """The chosen symbols, best first."""
        return tuple(p.symbol for p in self.picks)


def fractional_rank(x: np.ndarray) -> np.ndarray:
    """Rank of each value among x scaled to [0, 1] (0 smallest, 1 largest), ties sharing their mean rank."""
    n = len(x)
    if n == 1:
        return np.ones(1)
    _, inv, counts = np.unique(x, return_inverse=True, return_counts=True)
    first = np.cumsum(counts) - counts  # 0-based position of each distinct value in sorted order
    return (first + (counts - 1) / 2.0)[inv] / (n - 1)


def _exclusion(f: SymbolFeatures, rules: PrefilterRules) -> str | None:
    if f.spread_bps > rules.max_spread_bps:
        return f"mean spread {f.spread_bps:.4g} bps > max_spread_bps {rules.max_spread_bps:g}"
    if f.notional_per_s < rules.min_notional_per_s:
        return f"traded {f.notional_per_s:.4g} quote/s < min_notional_per_s {rules.min_notional_per_s:g}"
    if f.depth_quote < rules.min_depth_quote:
        return f"top-of-book depth {f.depth_quote:.4g} quote < min_depth_quote {rules.min_depth_quote:g}"
    return None


def top_k(features: Sequence[SymbolFeatures], k: int = 3, rules: PrefilterRules | None = None) -> Selection:
    """The k best eligible symbols by vol_weight * volatility rank + (1 - vol_weight) * liquidity rank.

    Symbols whose spread is above the cap, or whose traded notional or depth is below the floors,
    are excluded before ranking, so they do not shift the others' ranks. Ranks are taken among the
    eligible symbols (liquidity = traded quote per second); equal scores go to the symbol name that
    sorts first. Fewer than k eligible symbols: all of them.
    """
    rules = PrefilterRules() if rules is None else rules
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
        raise ConfigError(f"k must be a positive integer, got {k!r}")
    if not features:
        raise ConfigError("empty universe: no symbols to rank")
    names = [f.symbol for f in features]
    dupes = sorted({s for s in names if names.count(s) > 1})
    if dupes:
        raise ConfigError(f"symbol(s) listed more than once: {', '.join(dupes)}")
    for f in features:
        if not all(math.isfinite(v) for v in (f.vol_bps, f.notional_per_s, f.depth_quote, f.spread_bps)):
            raise DataError(f"{f.symbol}: non-finite feature in {f}")
    excluded = [(f.symbol, why) for f in features if (why := _exclusion(f, rules)) is not None]
    out = {s for s, _ in excluded}
    eligible = [f for f in features if f.symbol not in out]
    if not eligible:
        reasons = "; ".join(f"{s}: {why}" for s, why in excluded)
        raise DataError(f"no eligible symbol among {len(features)}: {reasons}")
    vol_rank = fractional_rank(np.array([f.vol_bps for f in eligible]))
    liq_rank = fractional_rank(np.array([f.notional_per_s for f in eligible]))
    # Scores equal on paper may differ in the last bit (0.5 * 0.2 + 0.5 * 1.0 != 0.5 * 0.4 + 0.5 * 0.8): round them.
    score = np.round(rules.vol_weight * vol_rank + (1.0 - rules.vol_weight) * liq_rank, 12)
    picks = [
        Pick(f.symbol, float(s), float(v), float(q))
        for f, s, v, q in zip(eligible, score, vol_rank, liq_rank, strict=True)
    ]
    picks.sort(key=lambda p: (-p.score, p.symbol))
    return Selection(tuple(picks), int(k), tuple(excluded))
