"""Binance Futures Trading Quantitative Rules, tracked per symbol as orders come and go (decision 026).

Over the orders *placed* in the last `window_s` (10 minutes, rolling):

- UFR, unfilled ratio: 1 - executed base quantity / placed base quantity (by quote value with
  `ufr_by_value`, the rule's 2020 wording);
- GTC cancel ratio (Binance's ICR, formerly GCR): GTC / GTX (post-only) / GTD orders cancelled less
  than `quick_cancel_s` after placement, over all such orders;
- IOC/FOK expire ratio (IFER): IOC and FOK orders that ended expired, over all of them;
- dust ratio (DR): orders whose value at placement is below `dust_notional` (quote), over all orders.

Rejected orders count in none of the ratios (the venue's "rejected orders won't count") but do in
the order counts: orders sent in the last 10 s, the last minute (rolling) and the UTC day. A ratio
applies only once its window holds `*_min_orders` orders (the venue's recording threshold); until
then it is NaN.

Everything here is pure: the state is one int64 array the caller keeps (`new_qr_state`); float sums
live in the same memory, read through a float64 view. The compiled functions allocate nothing and
run without reference counting (`_nrt=False`): the engine calls them on every order event. Each
order is a record in a ring of `cap` slots holding the orders still inside some window; running
counts are updated on each event and records leave from the ring's head as time passes, so every
call is amortised O(1). A ring too small for the orders of one window drops its oldest record
early: the ratios then cover the last `cap` orders only, and `st[H_OVERFLOW]` counts each such
record so a driver can report it (the default ring holds the venue's default order limit, 1,200 a
minute, for a whole window).
"""

from __future__ import annotations

import math
import tomllib
from importlib import resources
from pathlib import Path

import numpy as np
from numba import njit
from pydantic import ConfigDict, Field, ValidationError, model_validator

from grinder.core.params import ParamVector
from grinder.errors import ConfigError, LiveError

NS = 1_000_000_000
NS_PER_DAY = 86_400 * NS
SHORT_NS, MINUTE_NS = 10 * NS, 60 * NS  # the venue's order-count windows

# Time in force, as qr_new takes it: GTX (post-only) and GTD orders count as GTC.
GTC, IOC, FOK = 0, 1, 2
TIFS = {"GTC": GTC, "GTX": GTC, "GTD": GTC, "IOC": IOC, "FOK": FOK}
# How an order ended, as qr_end takes it (Binance order statuses in ENDS).
CANCELLED, EXPIRED, REJECTED, FILLED = range(4)
ENDS = {"CANCELED": CANCELLED, "CANCELLED": CANCELLED, "EXPIRED": EXPIRED, "EXPIRED_IN_MATCH": EXPIRED,
        "REJECTED": REJECTED, "FILLED": FILLED}  # fmt: skip

# qr_ratios' output, in order; the backtest's result.qrules uses the same names.
OUT = ("ufr", "gtc_cancel", "expire", "dust", "orders_10s", "orders_1m", "orders_1d")
RATIOS = OUT[:4]
COUNTS = OUT[4:]

# State layout: header slots, then `cap` records of REC slots. F_* slots hold float64 bits.
# H_DUE: the earliest time at which a window's head or the day can move (before it, `_advance` has
# nothing to do); P_SPAN_NS: the shortest of the windows.
(H_CAP, H_NEXT, H_TAIL, H_WIN, H_1M, H_10S, H_YOUNG, H_LAST, H_DAY, H_NDAY, H_OVERFLOW, N_ALL, N_GTC, N_QC,
 N_IOC, N_EXP, N_DUST, N_OPEN_IOC, N_YOUNG_GTC, P_WINDOW_NS, P_QUICK_NS, F_QTY, F_FQTY, F_NOT, F_FNOT,
 F_DUST, H_DUE, P_SPAN_NS) = range(28)  # fmt: skip
HEADER = 32
R_T, R_FLAGS, R_QTY, R_NOT, R_FQTY, R_FNOT = range(6)
REC = 6
# Record flags.
B_IOC, B_DUST, B_ENDED, B_QC, B_EXP, B_REJ = 1, 2, 4, 8, 16, 32


class QuantRules(ParamVector):
    """Thresholds and definitions of the rules; the defaults are the venue's published values (see the TOML).

    The numeric fields not in `vector_exclude`, in this order, are the vector qr_ratios and qr_allowed
    read; the excluded windows and dust value go into the state (`new_qr_state`)."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)
    vector_exclude = ("version", "retrieved", "source", "window_s", "quick_cancel_s", "dust_notional")

    version: str = Field("", description="which publication of the rules these numbers come from")
    retrieved: str = Field("", description="when they were read (ISO date)")
    source: list[str] = Field(default_factory=list, description="URLs of the published rules")
    enabled: bool = Field(True, description="whether the gate blocks orders (tracking and reporting go on)")
    margin: float = Field(0.05, ge=0, lt=1, description="block when a value would reach threshold x (1 - margin)")
    window_s: float = Field(600, gt=0, le=86_400, description="ratio window, seconds (rolling)")
    quick_cancel_s: float = Field(5, gt=0, description="a GTC cancelled sooner than this after placing is invalid")
    dust_notional: float = Field(50, ge=0, description="an order worth less than this (quote) is dust")
    ufr_by_value: bool = Field(False, description="UFR by quote value instead of base quantity")
    ufr_max: float = Field(0.99, gt=0, le=1)
    ufr_min_orders: int = Field(10_000, ge=0, description="orders in the window before UFR applies")
    gtc_cancel_max: float = Field(0.99, gt=0, le=1)
    gtc_cancel_min_orders: int = Field(5_000, ge=0, description="GTC/GTX/GTD orders before the ratio applies")
    expire_max: float = Field(0.99, gt=0, le=1)
    expire_min_orders: int = Field(5_000, ge=0, description="IOC/FOK orders before the ratio applies")
    dust_max: float = Field(0.9, gt=0, le=1)
    dust_min_orders: int = Field(10_000, ge=0, description="orders in the window before DR applies")
    orders_10s_max: int = Field(300, ge=0, description="orders per 10 s; 0: no limit")
    orders_1m_max: int = Field(1_200, ge=0, description="orders per minute; 0: no limit")
    orders_1d_max: int = Field(0, ge=0, description="orders per UTC day; 0: no limit")

    @model_validator(mode="after")
    def _quick_within_window(self) -> QuantRules:
        if self.quick_cancel_s > self.window_s:
            raise ValueError(f"quick_cancel_s ({self.quick_cancel_s}) must not exceed window_s ({self.window_s})")
        return self

    def thresholds(self) -> dict[str, float]:
        """Each OUT metric's threshold: a ratio at or above it, or a count above it, breaks the rule (0: none)."""
        return dict(zip(OUT, (self.ufr_max, self.gtc_cancel_max, self.expire_max, self.dust_max,
                              self.orders_10s_max, self.orders_1m_max, self.orders_1d_max), strict=True))  # fmt: skip

    def min_orders(self) -> dict[str, int]:
        """Each ratio's recording threshold: orders in the window before it applies."""
        return dict(zip(RATIOS, (self.ufr_min_orders, self.gtc_cancel_min_orders, self.expire_min_orders,
                                 self.dust_min_orders), strict=True))  # fmt: skip

    def ring_cap(self) -> int:
        """Ring slots for a whole window of orders at the per-minute limit (16,384 when there is none)."""
        per_min = self.orders_1m_max or 1_200
        need = max(per_min * math.ceil(max(self.window_s, 60) / 60), 1_024)
        return 1 << (need - 1).bit_length()


C = QuantRules.index()  # each threshold's slot in the vector (QuantRules.as_array)
DEFAULT_FILE = "binance_qrules.toml"


def load_quant_rules(path: str | Path | None = None) -> QuantRules:
    """The rules from a TOML file (default: the shipped, versioned one); ConfigError naming the file and key."""
    if path is None:
        where = f"grinder/core/{DEFAULT_FILE}"
        text = resources.files("grinder.core").joinpath(DEFAULT_FILE).read_text(encoding="utf-8")
    else:
        where = str(path)
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError(f"cannot read quantitative rules: {e.__class__.__name__}", where) from None
    try:
        values = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"not valid TOML: {e}", where) from None
    try:
        return QuantRules(**values)
    except ValidationError as e:
        first = e.errors()[0]
        key = ".".join(str(x) for x in first["loc"]) or "(file)"
        raise ConfigError(f"{key}: {first['msg']}", where) from None


def new_qr_state(rules: QuantRules, cap: int | None = None) -> np.ndarray:
    """Fresh state for one symbol: no orders, a ring of `cap` records (default rules.ring_cap(); a power of two up)."""
    cap = rules.ring_cap() if cap is None else int(cap)
    if cap >= 1:
        cap = 1 << (cap - 1).bit_length()  # a power of two: a record's slot is a mask, not a division
    if cap < 1:
        raise ConfigError(f"the quantitative-rules ring needs at least one slot, got {cap}")
    # Only the header is cleared: a record is read only once qr_new has written all of it, and a ring
    # left unwritten costs no page of memory (a backtest places far fewer orders than the ring holds).
    st = np.empty(HEADER + REC * cap, np.int64)
    st[:HEADER] = 0
    st[H_CAP] = cap
    st[H_LAST] = np.iinfo(np.int64).min
    st[H_DAY] = -1
    st[P_WINDOW_NS] = round(rules.window_s * NS)
    st[P_QUICK_NS] = max(1, round(rules.quick_cancel_s * NS))
    st[P_SPAN_NS] = min(st[P_WINDOW_NS], st[P_QUICK_NS], SHORT_NS, MINUTE_NS)
    st[H_DUE] = np.iinfo(np.int64).min  # the first call sets the day
    st.view(np.float64)[F_DUST] = rules.dust_notional
    return st


@njit(cache=True, _nrt=False)
def _base(st, seq):
    return HEADER + (seq & (st[H_CAP] - 1)) * REC


@njit(cache=True, _nrt=False)
def _leave_window(st, sf, b):
    """Take a record out of the ratio counts (it left the window, was dropped, or was rejected)."""
    flags = st[b + R_FLAGS]
    if flags & B_REJ:
        return
    st[N_ALL] -= 1
    sf[F_QTY] -= sf[b + R_QTY]
    sf[F_FQTY] -= sf[b + R_FQTY]
    sf[F_NOT] -= sf[b + R_NOT]
    sf[F_FNOT] -= sf[b + R_FNOT]
    if flags & B_IOC:
        st[N_IOC] -= 1
        if flags & B_EXP:
            st[N_EXP] -= 1
        if not flags & B_ENDED:
            st[N_OPEN_IOC] -= 1
    else:
        st[N_GTC] -= 1
        if flags & B_QC:
            st[N_QC] -= 1
    if flags & B_DUST:
        st[N_DUST] -= 1
    if st[N_ALL] == 0:  # an empty window has exact sums: no rounding carried from the orders that left
        sf[F_QTY] = sf[F_FQTY] = sf[F_NOT] = sf[F_FNOT] = 0.0


@njit(cache=True, _nrt=False)
def _young_open_gtc(st, b):
    return (st[b + R_FLAGS] & (B_IOC | B_ENDED)) == 0


@njit(cache=True, _nrt=False)
def _advance(st, sf, now_ns):
    """Move the windows to `now_ns` (never backwards) and return the time used."""
    now = max(now_ns, st[H_LAST])
    st[H_LAST] = now
    if now < st[H_DUE]:
        return now
    day = now // NS_PER_DAY
    if day != st[H_DAY]:
        st[H_DAY] = day
        st[H_NDAY] = 0
    due = (day + 1) * NS_PER_DAY
    nxt = st[H_NEXT]
    w = st[H_WIN]
    while w < nxt and st[_base(st, w) + R_T] <= now - st[P_WINDOW_NS]:
        _leave_window(st, sf, _base(st, w))
        w += 1
    st[H_WIN] = w
    if w < nxt:
        due = min(due, st[_base(st, w) + R_T] + st[P_WINDOW_NS])
    h = st[H_1M]
    while h < nxt and st[_base(st, h) + R_T] <= now - MINUTE_NS:
        h += 1
    st[H_1M] = h
    if h < nxt:
        due = min(due, st[_base(st, h) + R_T] + MINUTE_NS)
    h = st[H_10S]
    while h < nxt and st[_base(st, h) + R_T] <= now - SHORT_NS:
        h += 1
    st[H_10S] = h
    if h < nxt:
        due = min(due, st[_base(st, h) + R_T] + SHORT_NS)
    h = st[H_YOUNG]
    while h < nxt and st[_base(st, h) + R_T] <= now - st[P_QUICK_NS]:
        if _young_open_gtc(st, _base(st, h)):
            st[N_YOUNG_GTC] -= 1
        h += 1
    st[H_YOUNG] = h
    if h < nxt:
        due = min(due, st[_base(st, h) + R_T] + st[P_QUICK_NS])
    st[H_DUE] = due
    st[H_TAIL] = min(st[H_WIN], st[H_1M], st[H_10S], st[H_YOUNG])
    return now


@njit(cache=True, _nrt=False)
def _drop_oldest(st, sf):
    """The ring is full: drop its oldest record, which some window still needs (counted as overflow)."""
    seq = st[H_TAIL]
    b = _base(st, seq)
    if seq >= st[H_WIN]:
        _leave_window(st, sf, b)
        st[H_WIN] = seq + 1
    st[H_1M] = max(st[H_1M], seq + 1)
    st[H_10S] = max(st[H_10S], seq + 1)
    if seq >= st[H_YOUNG]:
        if _young_open_gtc(st, b):
            st[N_YOUNG_GTC] -= 1
        st[H_YOUNG] = seq + 1
    st[H_TAIL] = seq + 1
    st[H_OVERFLOW] += 1


@njit(cache=True, _nrt=False)
def qr_new(st, now_ns, tif, qty, notional):
    """Record an order sent at `now_ns` (tif: GTC, IOC or FOK; qty base units, notional quote); returns its id."""
    sf = st.view(np.float64)
    now = _advance(st, sf, now_ns)
    if st[H_NEXT] - st[H_TAIL] >= st[H_CAP]:
        _drop_oldest(st, sf)
    seq = st[H_NEXT]
    b = _base(st, seq)
    flags = 0
    if tif != GTC:
        flags |= B_IOC
    if notional < sf[F_DUST]:
        flags |= B_DUST
    st[b + R_T] = now
    st[b + R_FLAGS] = flags
    sf[b + R_QTY] = qty
    sf[b + R_NOT] = notional
    sf[b + R_FQTY] = 0.0
    sf[b + R_FNOT] = 0.0
    st[H_NEXT] = seq + 1
    st[H_DUE] = min(st[H_DUE], now + st[P_SPAN_NS])  # a window that was empty has a head again
    st[N_ALL] += 1
    sf[F_QTY] += qty
    sf[F_NOT] += notional
    if flags & B_IOC:
        st[N_IOC] += 1
        st[N_OPEN_IOC] += 1
    else:
        st[N_GTC] += 1
        st[N_YOUNG_GTC] += 1
    if flags & B_DUST:
        st[N_DUST] += 1
    st[H_NDAY] += 1
    return seq


@njit(cache=True, _nrt=False)
def qr_fill(st, rec, now_ns, qty, quote_notional):
    """Record a fill of `qty` (base) worth `quote_notional` on order `rec`; ignored once it left the window."""
    sf = st.view(np.float64)
    _advance(st, sf, now_ns)
    if rec < st[H_WIN] or rec >= st[H_NEXT]:
        return
    b = _base(st, rec)
    if st[b + R_FLAGS] & B_REJ:
        return
    sf[b + R_FQTY] += qty
    sf[b + R_FNOT] += quote_notional
    sf[F_FQTY] += qty
    sf[F_FNOT] += quote_notional


@njit(cache=True, _nrt=False)
def qr_end(st, rec, now_ns, how):
    """Record how order `rec` ended (CANCELLED, EXPIRED, REJECTED or FILLED); only the first end counts."""
    sf = st.view(np.float64)
    now = _advance(st, sf, now_ns)
    if rec < st[H_WIN] or rec >= st[H_NEXT]:
        return
    b = _base(st, rec)
    flags = st[b + R_FLAGS]
    if flags & B_ENDED:
        return
    if flags & B_IOC:
        st[N_OPEN_IOC] -= 1
    elif rec >= st[H_YOUNG]:
        st[N_YOUNG_GTC] -= 1
    flags |= B_ENDED
    if how == CANCELLED and not flags & B_IOC and now - st[b + R_T] < st[P_QUICK_NS]:
        flags |= B_QC
        st[N_QC] += 1
    elif how == EXPIRED and flags & B_IOC:
        flags |= B_EXP
        st[N_EXP] += 1
    st[b + R_FLAGS] = flags
    if how == REJECTED:
        _leave_window(st, sf, b)
        st[b + R_FLAGS] = flags | B_REJ


@njit(cache=True, _nrt=False)
def _ratio(num, den, min_n):
    if den <= 0 or den < min_n:
        return np.nan
    return min(1.0, max(0.0, num / den))


@njit(cache=True, _nrt=False)
def qr_ratios(st, cfg, now_ns, out):
    """Fill `out` (len(OUT)) with the ratios now (NaN where a ratio does not apply yet) and the order counts."""
    sf = st.view(np.float64)
    _advance(st, sf, now_ns)
    if cfg[C.ufr_by_value] != 0.0:
        out[0] = _ratio(sf[F_NOT] - sf[F_FNOT], sf[F_NOT], 0.0)
    else:
        out[0] = _ratio(sf[F_QTY] - sf[F_FQTY], sf[F_QTY], 0.0)
    if st[N_ALL] < cfg[C.ufr_min_orders]:
        out[0] = np.nan
    out[1] = _ratio(st[N_QC], st[N_GTC], cfg[C.gtc_cancel_min_orders])
    out[2] = _ratio(st[N_EXP], st[N_IOC], cfg[C.expire_min_orders])
    out[3] = _ratio(st[N_DUST], st[N_ALL], cfg[C.dust_min_orders])
    out[4] = st[H_NEXT] - st[H_10S]
    out[5] = st[H_NEXT] - st[H_1M]
    out[6] = st[H_NDAY]


@njit(cache=True, _nrt=False)
def _within(num, den, min_n, limit):
    """Whether a ratio num/den stays below `limit` (or does not apply: fewer than min_n orders)."""
    return den <= 0 or den < min_n or num < limit * den


@njit(cache=True, _nrt=False)
def _ok(st, sf, cfg, k, ioc, qty, notional, dust):
    """Whether every rule stays clear of its margin with k more orders, all of them and every open order
    ending the worst way: nothing more filled, each GTC still young enough cancelled, each IOC/FOK expired."""
    m = 1.0 - cfg[C.margin]
    n = st[N_ALL] + k
    if cfg[C.ufr_by_value] != 0.0:
        placed, filled = sf[F_NOT] + k * notional, sf[F_FNOT]
    else:
        placed, filled = sf[F_QTY] + k * qty, sf[F_FQTY]
    if n >= cfg[C.ufr_min_orders] and placed > 0.0 and placed - filled >= cfg[C.ufr_max] * m * placed:
        return False
    k_gtc = 0 if ioc else k
    k_ioc = k if ioc else 0
    qc, gtc = st[N_QC] + st[N_YOUNG_GTC] + k_gtc, st[N_GTC] + k_gtc
    if not _within(qc, gtc, cfg[C.gtc_cancel_min_orders], cfg[C.gtc_cancel_max] * m):
        return False
    expired, ioc_all = st[N_EXP] + st[N_OPEN_IOC] + k_ioc, st[N_IOC] + k_ioc
    if not _within(expired, ioc_all, cfg[C.expire_min_orders], cfg[C.expire_max] * m):
        return False
    if not _within(st[N_DUST] + (k if dust else 0), n, cfg[C.dust_min_orders], cfg[C.dust_max] * m):
        return False
    if cfg[C.orders_10s_max] > 0.0 and st[H_NEXT] - st[H_10S] + k > cfg[C.orders_10s_max] * m:
        return False
    if cfg[C.orders_1m_max] > 0.0 and st[H_NEXT] - st[H_1M] + k > cfg[C.orders_1m_max] * m:
        return False
    if cfg[C.orders_1d_max] > 0.0 and st[H_NDAY] + k > cfg[C.orders_1d_max] * m:
        return False
    return True


@njit(cache=True, _nrt=False)
def qr_allowed(st, cfg, now_ns, n_new, tif, qty, notional):
    """How many of `n_new` orders (each with this tif, base `qty` and quote `notional`) may go out now.

    The largest k such that for every j <= k, j new orders plus the worst ending of every open one
    keeps each ratio that applies, and each order count, below threshold x (1 - margin). With the
    rules disabled, all n_new. For a batch of unlike orders pass the largest qty and the smallest
    notional: the answer is then conservative.
    """
    if cfg[C.enabled] == 0.0:
        return n_new
    sf = st.view(np.float64)
    _advance(st, sf, now_ns)
    dust = notional < sf[F_DUST]
    ioc = tif != GTC
    for k in range(n_new + 1):
        if not _ok(st, sf, cfg, k, ioc, qty, notional, dust):
            return max(k - 1, 0)
    return n_new


class QuantRulesTracker:
    """The live adapter's view of the rules for one symbol: orders keyed by client id, over the compiled state."""

    def __init__(self, rules: QuantRules, cap: int | None = None, state: np.ndarray | None = None):
        """Over a fresh state, or over `state` (the one a `Decider`'s gate reads: `Decider.qr_state`)."""
        self.rules = rules
        self.cfg = rules.as_array()
        self.st = new_qr_state(rules, cap) if state is None else state
        self._ids: dict[str, int] = {}

    def placed(self, client_id: str, now_ns: int, tif: str, qty: float, notional: float) -> None:
        """An order went out (tif: a Binance timeInForce, GTX for post-only)."""
        try:
            code = TIFS[tif]
        except KeyError:
            raise LiveError(f"unknown timeInForce {tif!r}; expected one of {', '.join(TIFS)}") from None
        self._ids[client_id] = int(qr_new(self.st, now_ns, code, float(qty), float(notional)))
        if len(self._ids) > 2 * int(self.st[H_CAP]):  # forget ids whose records have left every window
            tail = int(self.st[H_TAIL])
            self._ids = {k: v for k, v in self._ids.items() if v >= tail}

    def filled(self, client_id: str, now_ns: int, qty: float, notional: float) -> None:
        """A fill of `qty` (base) worth `notional` (quote); unknown ids are ignored."""
        rec = self._ids.get(client_id)
        if rec is not None:
            qr_fill(self.st, rec, now_ns, float(qty), float(notional))

    def ended(self, client_id: str, now_ns: int, status: str) -> None:
        """The order is done (a Binance status: CANCELED, EXPIRED, REJECTED, FILLED); unknown ids are ignored."""
        rec = self._ids.pop(client_id, None)
        if rec is None:
            return
        try:
            how = ENDS[status]
        except KeyError:
            raise LiveError(f"unknown order status {status!r}; expected one of {', '.join(ENDS)}") from None
        qr_end(self.st, rec, now_ns, how)

    def ratios(self, now_ns: int) -> dict[str, float]:
        """The OUT values now (NaN where a ratio does not apply yet)."""
        out = np.empty(len(OUT))
        qr_ratios(self.st, self.cfg, now_ns, out)
        return dict(zip(OUT, out.tolist(), strict=True))

    def allowed(self, now_ns: int, n_new: int, tif: str, qty: float, notional: float) -> int:
        """How many of n_new like orders may go out now (qr_allowed)."""
        return int(qr_allowed(self.st, self.cfg, now_ns, n_new, TIFS[tif], float(qty), float(notional)))

    @property
    def overflow(self) -> int:
        """Records dropped from the ring while a window still needed them (0 when the ring is large enough)."""
        return int(self.st[H_OVERFLOW])
