"""Labels: what happened after each sample time, from the tape, in one compiled pass (docs/data/labels.md).

For a sample time t (exchange ns) and a horizon h, every label looks at the window (t, t + h] only:

- `fwd_rv_<h>`: forward realized volatility of the mid, bps/sqrt(s): `1e4 sqrt(sum r^2 / h_s)`,
  r the log returns of the mid over the window's book changes, starting from the mid at t. The
  feature set's `rv_<h>` is in the same unit (there an EWMA of the same squared returns).
- `fwd_regime_<h>`: 0 (low), 1 (normal), 2 (high): `fwd_rv_<h>` below `regime_bps[0]`, below
  `regime_bps[1]`, or at or above it.
- `markout_bid_<h>` / `markout_ask_<h>`: the markout in bps of a passive fill at the touch at t,
  whether or not such a fill happened: `(mid(t+h) - bid(t)) / mid(t) * 1e4` for a buy at the best
  bid, `(ask(t) - mid(t+h)) / mid(t) * 1e4` for a sell at the best ask; positive is good for the
  maker. Their sum is the spread at t in bps.
- `fill_bid_d<d>_<h>` / `fill_ask_d<d>_<h>`: 1 when a quote resting d ticks behind the touch at t
  (a buy at bid(t) - d ticks, a sell at ask(t) + d ticks) was reached in the window: a trade
  printed at or through its price, or the opposite best moved to or through it; else 0. Reached,
  not filled: a trade at the price may leave a queue ahead of the quote.

The book at a time is the book after every tape row at or before it (book changes count at the
end of their exchange message). A label is NaN (not valid) unless its whole window is known: the
book synced and two-sided at t and at every book change in the window, no book reset in the
window, and t and t + h inside one coverage span of the tape's rows (`grinder.data.coverage`),
so a window that runs past the tape's last row or into a gap is NaN, never a partial value.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
from numba import njit
from pydantic import BaseModel, ConfigDict, field_validator, model_validator

from grinder.book.l2 import EMPTY, H_BEST, apply_row, new_book
from grinder.data.coverage import DEFAULT_MAX_GAP_NS, spans_of_times
from grinder.data.tape import Tape
from grinder.errors import ConfigError
from grinder.features.offline import NamedColumns, sample_times_checked
from grinder.features.spec import NS_PER_S, horizon_label

SOURCE = Path(__file__)

# The tape's codes the kernel reads (grinder.data.tape; not imported into it: numba caches by file).
TRADE_ROW = 3
SNAPSHOT_ROW = 1
RESET_ROW = 2
BATCH_END = 1

# Label kinds and the learning task each is (the training objective follows from it).
REGRESSION, BINARY, MULTICLASS = "regression", "binary", "multiclass"
KINDS = {
    "fwd_rv": REGRESSION,
    "fwd_regime": MULTICLASS,
    "markout_bid": REGRESSION,
    "markout_ask": REGRESSION,
    "fill_bid": BINARY,
    "fill_ask": BINARY,
}
N_REGIMES = 3


@cache
def _source_digest() -> str:
    return hashlib.sha256(SOURCE.read_bytes()).hexdigest()


@dataclass(frozen=True)
class LabelInfo:
    """What one label column is: its kind (`KINDS`), task, horizon (ns) and quote distance (ticks; fills only)."""

    name: str
    kind: str
    task: str
    horizon_ns: int
    distance_ticks: int | None


class LabelSpec(BaseModel):
    """What the labels are: horizons (ns), quote distances behind the touch (ticks), regime thresholds (bps/sqrt(s)).

    Columns (`names`), per horizon h in the order given: fwd_rv_<h>, fwd_regime_<h>,
    markout_bid_<h>, markout_ask_<h>, then fill_bid_d<d>_<h> per distance, then fill_ask_d<d>_<h>.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    horizons_ns: tuple[int, ...] = (10 * NS_PER_S, 60 * NS_PER_S)
    fill_distances_ticks: tuple[int, ...] = (0, 1, 5)
    # Low and high thresholds of the forward volatility regime. BTCUSDT's 10 s realized volatility
    # has a median near 1 bps/sqrt(s) on the bundled sample; these put most samples in "normal".
    regime_bps: tuple[float, float] = (0.5, 2.0)

    @field_validator("horizons_ns")
    @classmethod
    def _horizons(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        if not v:
            raise ConfigError("horizons_ns must name at least one horizon")
        if any(h <= 0 for h in v):
            raise ConfigError(f"horizons_ns must be positive ns, got {v}")
        if len({horizon_label(h) for h in v}) != len(v):
            raise ConfigError(f"horizons_ns repeats a horizon: {v}")
        return v

    @field_validator("fill_distances_ticks")
    @classmethod
    def _distances(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        if any(d < 0 for d in v):
            raise ConfigError(f"fill_distances_ticks must be >= 0 ticks, got {v}")
        if len(set(v)) != len(v):
            raise ConfigError(f"fill_distances_ticks repeats a distance: {v}")
        return v

    @model_validator(mode="after")
    def _regime(self) -> LabelSpec:
        lo, hi = self.regime_bps
        if not (math.isfinite(lo) and math.isfinite(hi) and 0.0 < lo < hi):
            raise ConfigError(f"regime_bps must be two finite thresholds 0 < low < high, got {self.regime_bps}")
        return self

    @property
    def names(self) -> tuple[str, ...]:
        """Label column names, in the order `compute_labels` writes them."""
        return tuple(i.name for i in self._infos())

    def _infos(self) -> tuple[LabelInfo, ...]:
        out = []
        for h in self.horizons_ns:
            lab = horizon_label(h)
            for kind in ("fwd_rv", "fwd_regime", "markout_bid", "markout_ask"):
                out.append(LabelInfo(f"{kind}_{lab}", kind, KINDS[kind], h, None))
            for kind in ("fill_bid", "fill_ask"):
                for d in self.fill_distances_ticks:
                    out.append(LabelInfo(f"{kind}_d{d}_{lab}", kind, BINARY, h, d))
        return tuple(out)

    def info(self, name: str) -> LabelInfo:
        """What label `name` is; ConfigError naming it (and the spec's labels) when the spec has none of that name."""
        for i in self._infos():
            if i.name == name:
                return i
        raise ConfigError(f"unknown label {name!r}; this label spec's labels: {', '.join(self.names)}")

    def declaration(self) -> dict:
        """What the hash covers: parameters, column names, the coverage gap and this module's source digest."""
        return {
            "horizons_ns": list(self.horizons_ns),
            "fill_distances_ticks": list(self.fill_distances_ticks),
            "regime_bps": list(self.regime_bps),
            "max_gap_ns": DEFAULT_MAX_GAP_NS,
            "names": list(self.names),
            "source_sha256": _source_digest(),
        }

    @property
    def version(self) -> str:
        """SHA-256 (hex) of the canonical JSON of `declaration()`."""
        text = json.dumps(self.declaration(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class Labels(NamedColumns):
    """Label columns at sample times: `values[k]` is label `names[k]` (float64, NaN: not valid), one entry per `ts`."""

    names: tuple[str, ...]
    values: np.ndarray  # float64 [n_labels, n_samples]
    ts: np.ndarray  # int64 ns
    version: str
    column_kind = "label"


def compute_labels(tape: Tape, at: np.ndarray, spec: LabelSpec) -> Labels:
    """The labels of `spec` at the sample times `at` (sorted int64 exchange ns) from `tape`: one compiled pass."""
    at_arr = sample_times_checked(at)
    spans = spans_of_times(tape.ts_exch, DEFAULT_MAX_GAP_NS)
    span_lo = np.array([s.start_ns for s in spans], np.int64)
    span_last = np.array([s.end_ns - 1 for s in spans], np.int64)  # the span's last row
    horizons = np.array(spec.horizons_ns, np.int64)
    dists = np.array(spec.fill_distances_ticks, np.int64)
    out = np.full((len(spec.names), at_arr.shape[0]), np.nan)
    hdr, wq, ok, oq = new_book()
    _label_pass(
        np.ascontiguousarray(tape.ts_exch, np.int64), tape.kind, tape.side, tape.price_ticks, tape.qty, tape.flags,
        at_arr, horizons, dists, span_lo, span_last, float(spec.regime_bps[0]), float(spec.regime_bps[1]),
        hdr, wq, ok, oq, out,
    )  # fmt: skip
    return Labels(spec.names, out, at_arr.copy(), spec.version)


@njit(cache=True)
def _book_points(ts, kind, side, ticks, qty, flags, hdr, wq, ok, oq):
    """Replay the book once: its states at message ends where they change, the trades, the resets.

    Returns (p_ts, p_bid, p_ask, p_ok, trade ts, trade ticks, reset ts); p_ok: synced, two-sided
    and positive. Only changes of (bid, ask, ok) are kept: the book between them is a step function.
    """
    n = ts.shape[0]
    n_msg = 0
    n_tr = 0
    n_rs = 0
    for i in range(n):
        if kind[i] == TRADE_ROW:
            n_tr += 1
        elif flags[i] & BATCH_END:
            n_msg += 1
        if kind[i] == RESET_ROW:
            n_rs += 1
    p_ts = np.empty(n_msg, np.int64)
    p_bid = np.empty(n_msg, np.int64)
    p_ask = np.empty(n_msg, np.int64)
    p_ok = np.empty(n_msg, np.bool_)
    t_ts = np.empty(n_tr, np.int64)
    t_px = np.empty(n_tr, np.int64)
    r_ts = np.empty(n_rs, np.int64)
    m = 0
    j = 0
    r = 0
    synced = False
    for i in range(n):
        k = kind[i]
        if k == TRADE_ROW:
            t_ts[j] = ts[i]
            t_px[j] = ticks[i]
            j += 1
            continue
        ok, oq = apply_row(hdr, wq, ok, oq, k, side[i], ticks[i], qty[i])
        if k == SNAPSHOT_ROW:
            synced = True
        elif k == RESET_ROW:
            synced = False
            r_ts[r] = ts[i]
            r += 1
        if flags[i] & BATCH_END == 0:
            continue
        bb = hdr[H_BEST]
        ba = hdr[H_BEST + 1]
        good = synced and bb != EMPTY and ba != EMPTY and bb > 0  # a log return needs positive prices
        if m > 0 and p_ok[m - 1] == good and (not good or (p_bid[m - 1] == bb and p_ask[m - 1] == ba)):
            continue
        p_ts[m] = ts[i]
        p_bid[m] = bb
        p_ask[m] = ba
        p_ok[m] = good
        m += 1
    return p_ts[:m], p_bid[:m], p_ask[:m], p_ok[:m], t_ts, t_px, r_ts


@njit(cache=True)
def _label_pass(ts, kind, side, ticks, qty, flags, at, horizons, dists, span_lo, span_last, lo_bps, hi_bps,
                hdr, wq, ok, oq, out):  # fmt: skip
    """The labels at each time of `at` into out[:, m] (left NaN where not valid); see the module docstring.

    Per sample, one forward walk over the book changes and the trades up to the longest horizon,
    the horizons read off in increasing order as the walk passes their ends.
    """
    p_ts, p_bid, p_ask, p_ok, t_ts, t_px, r_ts = _book_points(ts, kind, side, ticks, qty, flags, hdr, wq, ok, oq)
    npt = p_ts.shape[0]
    ntr = t_ts.shape[0]
    nrs = r_ts.shape[0]
    nsp = span_lo.shape[0]
    nh = horizons.shape[0]
    nd = dists.shape[0]
    block = 4 + 2 * nd
    order = np.argsort(horizons)
    # Per horizon (in `order`): sum of r^2, mid2 at the end, highest bid and lowest ask in the window,
    # lowest and highest trade price, whether the book stayed whole.
    s_r2 = np.empty(nh)
    s_mid2 = np.empty(nh, np.int64)
    s_maxbid = np.empty(nh, np.int64)
    s_minask = np.empty(nh, np.int64)
    s_mintr = np.empty(nh, np.int64)
    s_maxtr = np.empty(nh, np.int64)
    s_whole = np.empty(nh, np.bool_)
    big = np.iinfo(np.int64).max
    small = np.iinfo(np.int64).min
    p = -1  # last book point at or before t
    q = 0  # first trade after t
    rr = 0  # first reset after t
    sp = 0  # first span whose last row is at or after t
    for m in range(at.shape[0]):
        t = at[m]
        while p + 1 < npt and p_ts[p + 1] <= t:
            p += 1
        while q < ntr and t_ts[q] <= t:
            q += 1
        while rr < nrs and r_ts[rr] <= t:
            rr += 1
        while sp < nsp and span_last[sp] < t:
            sp += 1
        if p < 0 or not p_ok[p] or sp >= nsp or span_lo[sp] > t:
            continue  # no whole book at t, or t in a gap or past the tape
        bid0 = p_bid[p]
        ask0 = p_ask[p]
        mid2_0 = bid0 + ask0
        # Book changes in the window, horizon by horizon (increasing).
        j = p + 1
        r2 = 0.0
        prev = mid2_0
        maxbid = small
        minask = big
        whole = True
        for oi in range(nh):
            end = t + horizons[order[oi]]
            while whole and j < npt and p_ts[j] <= end:
                if not p_ok[j]:
                    whole = False
                    break
                mid2 = p_bid[j] + p_ask[j]
                if mid2 != prev:
                    x = math.log(mid2 / prev)
                    r2 += x * x
                    prev = mid2
                maxbid = max(maxbid, p_bid[j])
                minask = min(minask, p_ask[j])
                j += 1
            s_r2[oi] = r2
            s_mid2[oi] = prev
            s_maxbid[oi] = maxbid
            s_minask[oi] = minask
            s_whole[oi] = whole
        # Trades in the window, horizon by horizon.
        j = q
        mintr = big
        maxtr = small
        for oi in range(nh):
            end = t + horizons[order[oi]]
            while j < ntr and t_ts[j] <= end:
                mintr = min(mintr, t_px[j])
                maxtr = max(maxtr, t_px[j])
                j += 1
            s_mintr[oi] = mintr
            s_maxtr[oi] = maxtr
        for oi in range(nh):
            h = order[oi]
            end = t + horizons[h]
            if not s_whole[oi] or end > span_last[sp] or (rr < nrs and r_ts[rr] <= end):
                continue
            o = h * block
            rv = math.sqrt(s_r2[oi] / (horizons[h] * 1e-9)) * 1e4
            out[o, m] = rv
            out[o + 1, m] = 0.0 if rv < lo_bps else (1.0 if rv < hi_bps else 2.0)
            out[o + 2, m] = (s_mid2[oi] - 2 * bid0) / mid2_0 * 1e4
            out[o + 3, m] = (2 * ask0 - s_mid2[oi]) / mid2_0 * 1e4
            for k in range(nd):
                buy = bid0 - dists[k]
                sell = ask0 + dists[k]
                out[o + 4 + k, m] = 1.0 if (s_mintr[oi] <= buy or s_minask[oi] <= buy) else 0.0
                out[o + 4 + nd + k, m] = 1.0 if (s_maxtr[oi] >= sell or s_maxbid[oi] >= sell) else 0.0
