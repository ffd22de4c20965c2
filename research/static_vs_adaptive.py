"""Static grid against adaptive grid, walk-forward, on one lake selection; every sweep recorded in MLflow.

Both grids sweep the same axes (by default interval x half spread, quote currency) with the same
fixed parameters over the same walk-forward folds, through `grinder.sweep_job` with tracking on:
one MLflow parent run per grid, its best sets re-run over the whole selection as child runs. Then
per fold the set ranked first on the in-sample window is judged on the out-of-sample window that
follows: what following the walk-forward procedure would have earned. That is logged on each
grid's parent run (metric `wf_<rank_by>`, one step per fold, and `wf_<rank_by>_mean`; tags
`comparison` and `compared_with` pair the two runs) and printed side by side.

    .venv/bin/python research/static_vs_adaptive.py --root data/sample/lake --walk-forward 3
    .venv/bin/python research/static_vs_adaptive.py --start 2024-07-18T23:00 --end 2024-07-19T01:00 \\
        -g interval=0.5:2:0.5 -g half_spread=1,2,4 --rank-by sharpe --mlruns mlruns

Writes a sweep folder per grid under --out and the runs in the --mlruns store. Bad settings stop
with one `error:` line and exit code 2, as `grinder` commands do.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

import numpy as np
import pandas as pd

import grinder
from grinder.settings import default_lake, pairs

STRATEGIES = ("static_grid", "adaptive_grid")
# Axes and fixed parameters both grids take (the adaptive grid's controller stays at its defaults).
GRID = ["interval=1,2", "half_spread=1,2,4"]
FIXED = ["order_qty=0.1", "max_position=5"]


class Say(grinder.Progress):
    """Quiet stages; the sweeps' warnings (a window too small, every set losing money) as lines on stderr."""

    def warn(self, text: str) -> None:
        print(f"warning: {text}", file=sys.stderr)


def walk_forward(results: pd.DataFrame, rank_by: str, lower_is_better: bool) -> pd.DataFrame:
    """Per fold (`wf1`, `wf2`, ...): the set ranked first in sample and its `rank_by` in and out of sample.

    `results` is a sweep's per-set, per-window table (`SweepOutcome.study.results`). As in the
    sweep's ranking, NaN and infinite values (a flat equity can give a Sharpe ratio of inf) are left
    out, a window a coverage gap cut into pieces (`wf1-test.1`, `wf1-test.2`) counts as the mean of
    its pieces, and ties go to the lower set number. A fold with no finite in-sample value has no
    winner (set -1, NaN).
    """
    results = results.assign(
        fold=results["window"].str.split("-").str[0], value=results[rank_by].replace([np.inf, -np.inf], np.nan)
    )
    folds = []
    for fold, rows in results.groupby("fold", sort=True):
        means = rows.groupby(["sample", "set"])["value"].mean()
        ins, outs = means["in"].dropna().sort_index(), means["out"]
        if ins.empty:
            folds.append({"fold": fold, "set": -1, "in": np.nan, "out": np.nan})
            continue
        best = int(ins.idxmin() if lower_is_better else ins.idxmax())  # the first of ties: the lowest set
        folds.append({"fold": fold, "set": best, "in": float(ins[best]), "out": float(outs[best])})
    return pd.DataFrame(folds).set_index("fold")


def _params(axes: pd.DataFrame, set_no: int) -> str:
    """A set's swept values as `name=value ...` (-1: none)."""
    if set_no < 0:
        return "-"
    return " ".join(f"{a}={v:g}" if isinstance(v, float) else f"{a}={v}" for a, v in axes.loc[set_no].items())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", type=Path, default=None, help="lake folder (default $GRINDER_LAKE or data/lake)")
    ap.add_argument("--venue", default="binance-usdm")
    ap.add_argument("--symbol", default="BTCUSDT")
    ap.add_argument("--start", default=None, help="start (ISO 8601 UTC or ns)")
    ap.add_argument("--end", default=None, help="end, exclusive")
    ap.add_argument("--walk-forward", type=int, default=3, help="folds (default 3)")
    ap.add_argument("--fold-by", default="time", help="cut folds by covered 'time' or 'events'")
    ap.add_argument("--min-events", type=int, default=1_000, help="windows with fewer events are not run or ranked")
    ap.add_argument("--rank-by", default="equity", help="metric ranking the sets (default equity)")
    ap.add_argument("-g", "--grid", action="append", help=f"axis NAME=SPEC of both grids (default {' '.join(GRID)})")
    ap.add_argument("-p", "--param", action="append", help=f"fixed NAME=VALUE (default {' '.join(FIXED)})")
    ap.add_argument("--children", type=int, default=1, help="best sets re-run as MLflow child runs, per grid")
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--mlruns", type=Path, default=None, help="MLflow store (default $GRINDER_MLRUNS or ./mlruns)")
    ap.add_argument("--out", type=Path, default=Path("sweeps"), help="folder for the sweep folders")
    args = ap.parse_args(argv)
    try:
        compare(args)
    except grinder.GrinderError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


def compare(args: argparse.Namespace) -> None:
    """Sweep both grids walk-forward with the same settings, log the walk-forward results, print them."""
    from grinder.track.mlflow_store import default_root, open_store

    grid, fixed = pairs(args.grid or GRID, "-g", "SPEC"), pairs(args.param or FIXED, "-p")
    mlruns = args.mlruns or default_root()
    done = {}
    for name in STRATEGIES:
        print(f"sweeping {name} ({args.walk_forward} walk-forward folds) ...", flush=True)
        done[name] = grinder.sweep_job(
            name,
            grid=grid,
            params=fixed,
            symbol=args.symbol,
            venue=args.venue,
            start=args.start,
            end=args.end,
            walk_forward=args.walk_forward,
            fold_by=args.fold_by,
            min_events=args.min_events,
            rank_by=args.rank_by,
            children=args.children,
            workers=args.workers,
            mlruns=mlruns,
            out_dir=args.out,
            root=args.root or default_lake(),
            progress=Say(),
        )
    key = f"wf_{args.rank_by}"
    # One id per pair of runs (each invocation's), for finding both in the MLflow UI.
    comparison = hashlib.sha256("".join(d.mlflow_run_id for d in done.values()).encode()).hexdigest()[:16]
    client, _ = open_store(mlruns)
    table = {}
    for name, d in done.items():
        other = next(o for n, o in done.items() if n != name)
        folds = walk_forward(d.study.results, args.rank_by, d.summary["lower_is_better"])
        axes = d.study.ranking.set_index("set")[d.summary["axes"]]
        folds.insert(1, "params", [_params(axes, s) for s in folds["set"]])
        for step, value in enumerate(folds["out"], start=1):
            client.log_metric(d.mlflow_run_id, key, value, step=step)
        client.log_metric(d.mlflow_run_id, f"{key}_mean", float(folds["out"].mean()))
        client.set_tag(d.mlflow_run_id, "comparison", comparison)
        client.set_tag(d.mlflow_run_id, "compared_with", other.mlflow_run_id)
        table[name] = folds
        print(f"{name}: sweep folder {d.folder}; MLflow run {d.mlflow_run_id}")
    both = pd.concat(table, axis=1)
    print(f"\n{args.rank_by} of the in-sample winner per fold, in and out of sample (comparison {comparison}):")
    print(both.to_string())
    print("\nout of sample, mean over folds: " + "  ".join(f"{n} {t['out'].mean():.4f}" for n, t in table.items()))


if __name__ == "__main__":
    sys.exit(main())
