"""The quantitative rules over a backtest: each metric's worst value, when, how long past its threshold.

A backtest's `result.qrules` holds the rules' values sampled at each decision (grinder.core.qrules.OUT
plus "ts"): NaN where a ratio did not apply yet. Decisions are `step_ns` apart except across the
coverage gaps the decision clock skips (decision 025), so a share of decisions is a share of covered time.
"""

from __future__ import annotations

import math

import numpy as np

from grinder.core.qrules import OUT, RATIOS, QuantRules
from grinder.core.step import quant_rules


def rules_of(gates) -> QuantRules:
    """The rules a backtest ran with: its gates' `quant_rules_file` (GateConfig or dict), else the shipped ones."""
    path = gates.get("quant_rules_file") if isinstance(gates, dict) else getattr(gates, "quant_rules_file", "")
    return quant_rules(path or "")


def has_series(res) -> bool:
    """Whether a result holds the rules' values at every step (record="all")."""
    return "ts" in (getattr(res, "qrules", None) or {})


def breached(name: str, values: np.ndarray, threshold: float) -> np.ndarray:
    """Where a metric breaks its rule: a ratio at or above its threshold, a count above its limit (0: none)."""
    v = np.asarray(values, np.float64)
    if name in RATIOS:
        return np.greater_equal(v, threshold, where=~np.isnan(v), out=np.zeros(v.shape, bool))
    if threshold <= 0:
        return np.zeros(v.shape, bool)
    return np.greater(v, threshold, where=~np.isnan(v), out=np.zeros(v.shape, bool))


def qr_summary(qrules: dict, rules: QuantRules) -> dict:
    """Per metric: threshold, max, the time of the max (ns), share of decisions in breach, share where it
    applied; and `rules_ok` with the list of metrics in `breaches`."""
    ts = np.asarray(qrules["ts"], np.int64)
    thr = rules.thresholds()
    mins = rules.min_orders()
    metrics, breaches = {}, []
    for name in OUT:
        v = np.asarray(qrules[name], np.float64)
        known = ~np.isnan(v)
        bad = breached(name, v, thr[name])
        entry = {"threshold": thr[name] if (name in RATIOS or thr[name] > 0) else None, "max": None, "max_at_ns": None,
                 "share_breached": float(bad.mean()) if len(v) else 0.0,
                 "share_applied": float(known.mean()) if len(v) else 0.0}  # fmt: skip
        if name in mins:
            entry["min_orders"] = mins[name]
        if known.any():
            i = int(np.nanargmax(v))
            entry["max"], entry["max_at_ns"] = float(v[i]), int(ts[i])
        if bad.any():
            breaches.append(name)
        metrics[name] = entry
    return {"version": rules.version, "margin": rules.margin, "rules_ok": not breaches, "breaches": breaches,
            "metrics": metrics}  # fmt: skip


QR_COLUMNS = tuple(f"qr_{n}_max" for n in OUT) + ("rules_ok",)


def qr_metrics(res, rules: QuantRules) -> dict:
    """A sweep row's columns: the largest value of each metric over the run and whether it kept every rule.

    From the result's `qrules_max` (kept whatever it records), else its per-step series; NaN and
    None when it has neither.
    """
    worst = dict(getattr(res, "qrules_max", None) or {})
    if not worst and has_series(res):
        worst = {n: float(np.nanmax(v)) if np.isfinite(v).any() else math.nan for n, v in res.qrules.items()
                 if n in OUT for v in [np.asarray(v, np.float64)]}  # fmt: skip
    if not worst:
        return {**{c: math.nan for c in QR_COLUMNS[:-1]}, "rules_ok": None}
    thr = rules.thresholds()
    ok = not any(bool(breached(n, np.array([worst.get(n, math.nan)]), thr[n])[0]) for n in OUT)
    return {**{f"qr_{n}_max": float(worst.get(n, math.nan)) for n in OUT}, "rules_ok": ok}
