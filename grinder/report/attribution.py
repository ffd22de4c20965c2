"""Where a market maker's money went: PnL attribution, markouts after fills, fills per grid level.

Money is in the settle currency, through the ledger's value function (grinder.core.ledger): the
value of a signed quantity q at price p is q * u(p) with u(p) = p (linear) or -contract_size / p
(inverse), so every formula below serves both contracts.

Attribution (cumulative, on the steps' time grid, and in total):

- spread capture of fill i: q_i * (u(m_i) - u(p_i)), q signed (+ buy, - sell); linear: buy
  (m - p) * qty, sell (p - m) * qty. m_i, "the mid at the fill", is the steps' mid at the last
  decision at or before the fill's exchange time (ts_exch): the mid the strategy last saw before
  the fill happened, with no look-ahead. The exchange book's mid at the fill is not in the run
  folder. A fill before any step with a mid is taken at its own price (no spread). Maker fills
  (resting quotes) only.
- taking: the same edge for taker fills (IOC and market orders, a flatten among them: fills whose
  `maker` is False), where it is a cost: half the spread and every level walked past the touch. Zero
  for a run whose fills are all maker (or whose fills record no `maker` column).
- inventory PnL: the position carried through mid moves, computed on its own (not as a residual):
  at step k, position[k-1] * (u(mid[k]) - u(mid[k-1])) for what the ledger held, plus, for each
  fill the ledger booked since step k-1 (ts_local in (ts[k-1], ts[k]]: the engine books a fill
  when its report arrives), q_i * (u(mid[k]) - u(m_i)), its carry from the fill's mid to now.
- fees: minus the ledger's fees (rebates come out positive).
- funding: minus the funding paid (settlements at or before the step).

With cash = -sum q_i * u(p_i) and value(position, mid) = sum q_i * u(mid), the five add up to the
ledger's equity, cash + value(position, mid) - fees - funding, at every step that has one. A step
without a mid (no two-sided book) has no equity in the steps; the attribution marks there at the
last mid before it, so its series stays continuous, and the identity resumes at the next mid.

Markouts: for each fill and horizon h (1 s, 10 s, 60 s), side * (mid(t + h) - price) with t the
fill's exchange time and mid(t + h) the steps' mid at the last decision at or before t + h; in bps
of the price and in the settle currency (q * (u(mid(t + h)) - u(p))). They include the spread
captured. A fill whose t + h is after the last step has no markout at h: it is left out, and counted.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

HORIZONS_S = (1, 10, 60)
COMPONENTS = ("spread", "taking", "inventory", "fees", "funding")


@dataclass(frozen=True)
class Attribution:
    """Cumulative components on the steps' grid (settle currency) and the fill mids they used."""

    ts: np.ndarray
    spread: np.ndarray  # maker fills
    taking: np.ndarray  # taker fills (a cost: negative)
    inventory: np.ndarray
    fees: np.ndarray  # minus fees paid
    funding: np.ndarray  # minus funding paid
    fill_mid: np.ndarray  # m_i of each fill (quote per base)

    @property
    def total(self) -> np.ndarray:
        """spread + taking + inventory + fees + funding at every step: the ledger's equity."""
        return self.spread + self.taking + self.inventory + self.fees + self.funding

    def totals(self) -> dict[str, float]:
        """Each component and their sum (equity) at the last step."""
        out = {k: float(getattr(self, k)[-1]) if len(self.ts) else 0.0 for k in COMPONENTS}
        out["equity"] = float(self.total[-1]) if len(self.ts) else 0.0
        return out


def unit_value(price, inverse: bool, contract_size: float):
    """u(p): the value of one unit at `price` (grinder.core.ledger.value with q = 1)."""
    price = np.asarray(price, np.float64)
    return -contract_size / price if inverse else price


def marks(mid: np.ndarray) -> np.ndarray:
    """The price each step marks the position at: its mid, or without one (no two-sided book: the
    ledger records no equity there) the last mid before it; steps before the first mid take the first."""
    mid = np.asarray(mid, np.float64)
    ok = np.isfinite(mid) & (mid > 0)
    if not ok.any():
        return np.full(len(mid), np.nan)
    idx = np.maximum.accumulate(np.where(ok, np.arange(len(mid)), -1))
    return mid[np.where(idx >= 0, idx, np.flatnonzero(ok)[0])]


def attribute(steps: dict, fills: dict, funding: dict, inverse: bool = False,
              contract_size: float = 1.0) -> Attribution:  # fmt: skip
    """Cumulative spread, taking, inventory, fees and funding at every step (see the module docstring).

    steps: ts, mid, position, fees (the ledger's, per step); fills: ts_exch, ts_local, side, price,
    qty, and maker if recorded (else every fill is a maker's), in any order; funding: ts, amount
    (positive = paid).
    """
    ts = np.asarray(steps["ts"], np.int64)
    n = len(ts)
    mid = np.asarray(steps["mid"], np.float64)
    q = np.where(np.asarray(fills["side"]) > 0, 1.0, -1.0) * np.asarray(fills["qty"], np.float64)
    price = np.asarray(fills["price"], np.float64)
    m = fill_mids(ts, mid, np.asarray(fills["ts_exch"], np.int64), price)
    u = lambda p: unit_value(p, inverse, contract_size)  # noqa: E731
    # Step k books the fills whose reports arrived in (ts[k-1], ts[k]].
    booked = np.searchsorted(ts, np.asarray(fills["ts_local"], np.int64), "left")
    in_run = booked < n
    spread_i = q * (u(m) - u(price))
    maker = np.asarray(fills["maker"], np.bool_) if "maker" in fills else np.ones(len(q), np.bool_)
    spread = np.cumsum(np.bincount(booked[in_run], np.where(maker, spread_i, 0.0)[in_run], minlength=n))
    taking = np.cumsum(np.bincount(booked[in_run], np.where(maker, 0.0, spread_i)[in_run], minlength=n))
    um = u(marks(mid))
    pos = np.asarray(steps["position"], np.float64)
    carried = np.zeros(n)
    if n > 1:
        du = np.diff(um)
        carried[1:] = np.where(pos[:-1] != 0.0, pos[:-1] * du, 0.0)
    catch_i = np.where(in_run, q * (um[np.minimum(booked, n - 1)] - u(m)), 0.0)
    inventory = np.cumsum(carried + np.bincount(booked[in_run], catch_i[in_run], minlength=n))
    f_ts = np.asarray(funding["ts"], np.int64)
    f_at = np.searchsorted(ts, f_ts, "left")
    f_in = f_at < n
    paid = np.cumsum(np.bincount(f_at[f_in], np.asarray(funding["amount"], np.float64)[f_in], minlength=n))
    return Attribution(ts, spread, taking, inventory, -np.asarray(steps["fees"], np.float64), -paid, m)


def fill_mids(ts: np.ndarray, mid: np.ndarray, at: np.ndarray, fallback: np.ndarray) -> np.ndarray:
    """The steps' last valid mid at or before each time in `at`; `fallback` where there is none."""
    ok = np.isfinite(mid) & (mid > 0)
    vts, vmid = ts[ok], mid[ok]
    j = np.searchsorted(vts, at, "right") - 1
    return np.where(j >= 0, vmid[np.maximum(j, 0)] if len(vmid) else np.nan, fallback)


def markouts(steps: dict, fills: dict, inverse: bool = False, contract_size: float = 1.0,
             horizons_s: tuple[int, ...] = HORIZONS_S) -> list[dict]:  # fmt: skip
    """Per horizon and side (buy, sell, all): fills measured, fills past the end, mean bps, mean and total settle."""
    ts = np.asarray(steps["ts"], np.int64)
    mid = np.asarray(steps["mid"], np.float64)
    t = np.asarray(fills["ts_exch"], np.int64)
    side = np.where(np.asarray(fills["side"]) > 0, 1.0, -1.0)
    qty = np.asarray(fills["qty"], np.float64)
    price = np.asarray(fills["price"], np.float64)
    last = int(ts[-1]) if len(ts) else np.iinfo(np.int64).min
    out = []
    for h in horizons_s:
        later = t + int(h) * 1_000_000_000
        future = fill_mids(ts, mid, later, np.full(len(t), np.nan))
        ok = (later <= last) & np.isfinite(future)
        bps = side * (future - price) / price * 1e4
        money = side * qty * (unit_value(np.where(ok, future, 1.0), inverse, contract_size)
                              - unit_value(price, inverse, contract_size))  # fmt: skip
        for name, which in (("buy", side > 0), ("sell", side < 0), ("all", np.ones(len(t), bool))):
            use = which & ok
            k = int(use.sum())
            out.append({
                "horizon_s": int(h), "side": name, "fills": k, "past_end": int((which & ~ok).sum()),
                "mean_bps": float(bps[use].mean()) if k else None,
                "mean_settle": float(money[use].mean()) if k else None,
                "total_settle": float(money[use].sum()) if k else 0.0,
            })  # fmt: skip
    return out


def per_level(fills: dict, covered_s: float) -> list[dict]:
    """Fills per grid level: count, buys, sells, quantity and rate per hour of covered market time."""
    level = np.asarray(fills["level"], np.int64)
    side = np.asarray(fills["side"])
    qty = np.asarray(fills["qty"], np.float64)
    rows = []
    for lv in np.unique(level):
        at = level == lv
        n = int(at.sum())
        rows.append({
            "level": int(lv), "fills": n, "buys": int((at & (side > 0)).sum()), "sells": int((at & (side < 0)).sum()),
            "qty": float(qty[at].sum()), "share": n / len(level),
            "per_hour": n / covered_s * 3600.0 if covered_s > 0 else None,
        })  # fmt: skip
    return rows


def summary_blocks(steps: dict, fills: dict, funding: dict, inverse: bool, contract_size: float) -> dict:
    """The summary's "attribution" (totals at the last step) and "markouts" blocks ({} without the columns)."""
    if not {"position", "fees"} <= set(steps) or not {"ts_local"} <= set(fills) or len(steps["ts"]) == 0:
        return {}
    a = attribute(steps, fills, funding, inverse, contract_size)
    totals = a.totals()
    totals["mid_at_fill"] = "steps' mid at the last decision at or before the fill's exchange time"
    return {"attribution": totals, "markouts": markouts(steps, fills, inverse, contract_size)}


# What attribution reads from a run folder, beyond what grinder.report.load checks.
STEPS_IN = ("ts", "mid", "position", "fees")
FILLS_IN = ("ts_exch", "ts_local", "side", "price", "qty")


def read_inputs(run_dir: Path) -> tuple[dict, dict, str]:
    """steps (ts, mid, position, fees) and fills (ts_exch, ts_local, side, price, qty, and level and maker
    when recorded) as the run wrote them; ({}, {}, why) when the folder lacks a column (a run recorded with
    only ts, mid and equity per step, or written before fills had ts_local)."""
    run_dir = Path(run_dir)
    out = []
    for name, want, extra in (("steps", STEPS_IN, ()), ("fills", FILLS_IN, ("level", "maker"))):
        path = run_dir / f"{name}.parquet"
        have = pq.read_schema(path).names
        missing = [c for c in want if c not in have]
        if missing:
            return {}, {}, f"{path.name} lacks {', '.join(missing)}, so there is no attribution."
        cols = [*want, *(c for c in extra if c in have)]
        table = pq.read_table(path, columns=cols)
        out.append({c: table.column(c).to_numpy() for c in cols})
    return out[0], out[1], ""
