"""What a sweep's ranking says for a decision: in vs out of sample, parameter importance, baselines, a warning.

Pure functions over the ranking table (one row per set, `<metric>_in` / `<metric>_out` columns) and
the baseline's ranking; the CLI puts their results in summary.json, the report and on the terminal.
"""

from __future__ import annotations

import math
import tomllib
from pathlib import Path

import numpy as np
import pandas as pd

from grinder.errors import ConfigError

BASELINE_STRATEGY = "static_grid"
BASELINE_FILE = "static_grid.toml"  # hftbacktest's grid example: the baseline's parameters, in strategies/


def baseline_params() -> dict:
    """The static grid's default parameters: the [strategy] table of strategies/static_grid.toml."""
    from grinder import strategies

    path = Path(next(iter(strategies.__path__))) / BASELINE_FILE
    try:
        return dict(tomllib.loads(path.read_text())["strategy"])
    except (OSError, KeyError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(f"cannot read the baseline's [strategy] table: {e}", str(path)) from None


def run_baseline(sel, windows, venue, gates, latency, rank_by: str, workers=None, load=None) -> pd.DataFrame | None:
    """The static grid's defaults run on the sweep's windows with its venue and gates: a one-row ranking.

    None when those parameters do not validate (a changed strategy): the report then shows flat only.
    """
    from grinder.core.strategy import get
    from grinder.sweep.spec import Grid
    from grinder.sweep.study import run_study

    strat = get(BASELINE_STRATEGY)
    try:
        params = strat.validate(baseline_params())
    except ConfigError:
        return None
    grid = Grid(strat, {}, {}, [params])
    return run_study(sel, grid, windows, venue, gates, latency, rank_by, workers, load).ranking


def decision_summary(ranking: pd.DataFrame, base: pd.DataFrame | None, axes: list[str], rank_by: str,
                     settle: str = "") -> dict:  # fmt: skip
    """What summary.json and the report hold for a decision: in vs out, importance, baselines, warning."""
    from grinder.sweep.study import LOWER_IS_BETTER

    lower = rank_by in LOWER_IS_BETTER
    metrics = list(dict.fromkeys([rank_by, "equity", "sharpe", "max_drawdown"]))
    keys = [f"{rank_by}_{s}" for s in ("out", "in") if f"{rank_by}_{s}" in ranking]
    return {
        "in_vs_out": in_vs_out(ranking, metrics),
        "importance": {k: importance(ranking, axes, k, lower) for k in keys},
        "baselines": baselines(base, ranking, metrics),
        "warning": losing_warning(ranking, settle),
    }


def annualised_note(windows: list[dict], rank_by: str) -> str | None:
    """A one-line note when the windows are too short for annualised figures (report.stats.ANNUALISE_MIN_S):
    `sharpe` then ranks sets, but its value extrapolates minutes or days to a year. None otherwise."""
    from grinder.report.stats import ANNUALISE_MIN_S

    if not windows:
        return None
    longest = max(int(w["end_ns"]) - int(w["start_ns"]) for w in windows) / 1e9
    if longest >= ANNUALISE_MIN_S:
        return None
    span = pd.Timedelta(seconds=round(longest))
    ranked = " (the ranking's metric)" if rank_by == "sharpe" else ""
    return (f"sharpe{ranked} is annualised from windows of at most {span}, under the {ANNUALISE_MIN_S // 86_400} "
            "days annualised figures need to mean much: it orders sets, its values are no yearly figures; "
            "equity and max_drawdown are per window")  # fmt: skip


def sample_of(ranking: pd.DataFrame, metric: str) -> str:
    """'out' when the ranking has out-of-sample columns, else 'in': the sample a decision is judged on."""
    return "out" if f"{metric}_out" in ranking else "in"


def in_vs_out(ranking: pd.DataFrame, metrics: list[str]) -> list[dict]:
    """Per metric: how well in-sample values predict out-of-sample ones, over the sets with both finite.

    `spearman`: rank correlation of in vs out; `positive_in` / `positive_out`: share of sets above 0;
    `best_in_rank_out`: where the best in-sample set lands out of sample (1 = also best). Empty
    without an out-of-sample window.
    """
    rows = []
    for m in metrics:
        a, b = f"{m}_in", f"{m}_out"
        if a not in ranking or b not in ranking:
            continue
        x, y = ranking[a].to_numpy(np.float64), ranking[b].to_numpy(np.float64)
        ok = np.isfinite(x) & np.isfinite(y)
        row = {"metric": m, "sets": int(ok.sum()), "spearman": None, "positive_in": None, "positive_out": None,
               "best_in_rank_out": None}  # fmt: skip
        if ok.sum() >= 1:
            row["positive_in"] = float((x[ok] > 0).mean())
            row["positive_out"] = float((y[ok] > 0).mean())
            lower = m in _lower()
            best_in = np.flatnonzero(ok)[np.argmin(x[ok]) if lower else np.argmax(x[ok])]
            outs = y[ok]
            row["best_in_rank_out"] = int(((outs < y[best_in]) if lower else (outs > y[best_in])).sum()) + 1
        if ok.sum() >= 3 and np.ptp(x[ok]) > 0 and np.ptp(y[ok]) > 0:
            row["spearman"] = float(pd.Series(x[ok]).rank().corr(pd.Series(y[ok]).rank()))
        rows.append(row)
    return rows


def importance(ranking: pd.DataFrame, axes: list[str], key: str, lower_is_better: bool, seed: int = 0) -> dict:
    """Each swept parameter's share of the variance of `key` over the sets (Optuna's fANOVA), largest first.

    Every set becomes a finished Optuna trial (`optuna.trial.create_trial`) with its swept values and
    its `key` value, so grids and searches are judged alike. Sets without a finite value are left out;
    axes with a single value carry no information and are left out. Empty when fewer than two sets or
    no varying axis remain.
    """
    import optuna
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    values = ranking[key].to_numpy(np.float64)
    ok = np.isfinite(values)
    dists = {}
    for a in axes:
        col = ranking[a][ok]
        uniq = pd.unique(col)
        if len(uniq) < 2:
            continue
        if pd.api.types.is_integer_dtype(col):
            dists[a] = IntDistribution(int(col.min()), int(col.max()))
        elif pd.api.types.is_float_dtype(col):
            dists[a] = FloatDistribution(float(col.min()), float(col.max()))
        else:
            dists[a] = CategoricalDistribution(sorted(uniq.tolist(), key=repr))
    if ok.sum() < 2 or not dists or np.ptp(values[ok]) == 0:
        return {}
    rows = ranking[ok]
    trials = [
        optuna.trial.create_trial(params={a: _native(r[a]) for a in dists}, distributions=dists, value=float(r[key]))
        for _, r in rows.iterrows()
    ]
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="minimize" if lower_is_better else "maximize")
    study.add_trials(trials)
    evaluator = optuna.importance.FanovaImportanceEvaluator(seed=seed)
    got = optuna.importance.get_param_importances(study, evaluator=evaluator, normalize=True)
    return {k: float(v) for k, v in got.items()}


def losing_warning(ranking: pd.DataFrame, settle: str = "") -> str | None:
    """A one-line warning when every set with a result lost money (equity < 0) in the judged sample, else None."""
    sample = sample_of(ranking, "equity")
    col = f"equity_{sample}"
    if col not in ranking:
        return None
    eq = ranking[col].to_numpy(np.float64)
    eq = eq[np.isfinite(eq)]
    if len(eq) == 0 or (eq >= 0).any():
        return None
    where = "out of sample" if sample == "out" else "in sample (there is no out-of-sample window)"
    unit = f" {settle}" if settle else ""
    return (f"every one of the {len(eq)} parameter sets lost money {where} (best {col} {eq.max():.4f}{unit}): "
            "doing nothing (flat, equity 0) beats them all")  # fmt: skip


def baselines(base: pd.DataFrame | None, ranking: pd.DataFrame, metrics: list[str]) -> list[dict]:
    """Rows to compare the best set with: the static grid's defaults (`base`: its ranking), flat (0), best set."""
    cols = [f"{m}_{s}" for m in metrics for s in ("in", "out") if f"{m}_{s}" in ranking]
    rows = []
    if base is not None and len(base):
        rows.append({"name": f"{BASELINE_STRATEGY} defaults ({BASELINE_FILE})",
                     **{c: _finite(base[c].iloc[0]) if c in base else None for c in cols}})  # fmt: skip
    flat = {"equity": 0.0, "realized": 0.0, "fees": 0.0, "max_drawdown": 0.0, "fills": 0.0}
    rows.append({"name": "flat (no trading)", **{c: flat.get(c.rsplit("_", 1)[0]) for c in cols}})
    rows.append({"name": f"best set ({int(ranking['set'].iloc[0])})",
                 **{c: _finite(ranking[c].iloc[0]) for c in cols}})  # fmt: skip
    return rows


def _lower() -> frozenset:
    from grinder.sweep.study import LOWER_IS_BETTER

    return LOWER_IS_BETTER


def _finite(v) -> float | None:
    v = float(v)
    return v if math.isfinite(v) else None


def _native(v):
    """numpy scalars as Python values (Optuna's distributions compare and serialise those)."""
    return v.item() if isinstance(v, np.generic) else v
