"""Out of sample on the real captures: the ML grid against the static and adaptive grids, walk-forward.

For each fold a volatility model (`fwd_rv_10s`) is trained on the data before the test window only
(`grinder.ml.train.train_job`, logged and registered in MLflow), the ML grid's thresholds are set from
the training labels alone (their 30th, 80th and 98th percentiles), and then the three strategies
are backtested on the test window with the same grid (`backtest_job`, each an MLflow run tagged
`research=ml_walk_forward`, `fold`). Folds:

- BTCUSDT, across days: train on every window before the test window (2023-04-04, then also
  2024-07-18), test on the next (2024-07-18, then 2024-08-08).
- ETHUSDT, one window: train on its first 60 %, test on the rest after a 60 s embargo.

The grid is sized from the test window's first mid (interval 1 bps, half spread 0.5 bps, about
200 USDT a quote, ten quotes of position at most), the same for the three strategies.

    python research/ml_walk_forward.py --lake /tmp/real-lake --mlruns mlruns --out docs/ml-results.json

Windows missing from the lake are ingested from ../shared/data/real (or $GRINDER_REAL_DATA) first.
Prints one markdown table, and writes every figure as JSON to --out.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
REAL = Path(os.environ.get("GRINDER_REAL_DATA", REPO.parent / "shared" / "data" / "real" / "binance-usdm"))
VENUE = "binance-usdm"
LABEL = "fwd_rv_10s"
EVERY_NS = 250_000_000
S = 1_000_000_000
# Capture files of each window, in order (later files continue earlier ones), by symbol.
CAPTURES = {
    "BTCUSDT": [["btcusdt_20230404.dat.gz", "btcusdt_20230405.dat.gz"], ["btcusdt_20240718.gz", "btcusdt_20240719.gz"],
                ["btcusdt_20240808.gz"]],
    "ETHUSDT": [["ethusdt_20240718.gz", "ethusdt_20240719.gz"]],
}  # fmt: skip


def ingest(lake: Path) -> None:
    """Every capture window into the lake (rows are kept once, so a second run writes nothing)."""
    from grinder.data.coverage import lake_spans
    from grinder.data.ingest.binance import parse_binance
    from grinder.data.instruments import resolve_instrument
    from grinder.data.lake import Lake

    for symbol, windows in CAPTURES.items():
        if len(lake_spans(lake, VENUE, symbol)) >= len(windows):
            continue
        for files in windows:
            paths = [REAL / f for f in files]
            Lake(lake).write(parse_binance(paths, resolve_instrument(VENUE, symbol)), paths)


def folds(lake: Path) -> list[dict]:
    """(symbol, train end, test start, test end) of each fold, from the lake's coverage spans."""
    from grinder.data.coverage import lake_spans

    out = []
    btc = lake_spans(lake, VENUE, "BTCUSDT")
    for k in range(1, len(btc)):
        out.append({"name": f"BTCUSDT-{k}", "symbol": "BTCUSDT", "train_end": btc[k - 1].end_ns,
                    "test_start": btc[k].start_ns, "test_end": btc[k].end_ns})  # fmt: skip
    (eth,) = lake_spans(lake, VENUE, "ETHUSDT")
    cut = eth.start_ns + int(0.6 * eth.duration_ns)
    out.append({"name": "ETHUSDT-1", "symbol": "ETHUSDT", "train_end": cut, "test_start": cut + 60 * S,
                "test_end": eth.end_ns})  # fmt: skip
    return out


def grid_for(lake: Path, symbol: str, start_ns: int, end_ns: int) -> dict:
    """The grid every strategy of a fold uses, sized from the test window's first mid."""
    from grinder.data.instruments import resolve_instrument
    from grinder.data.tape import load_tape

    tape = load_tape(lake, VENUE, symbol, start_ns, min(end_ns, start_ns + 30 * S))
    mid = float(np.nanmedian(tape.price[tape.kind == 3]))  # the first 30 s of trades
    lot = resolve_instrument(VENUE, symbol).lot_size
    qty = max(lot, round(200.0 / mid / lot) * lot)
    return {"levels": 10, "interval": round(mid * 1e-4, 2), "half_spread": round(mid * 0.5e-4, 2),
            "order_qty": qty, "max_position": 10 * qty}  # fmt: skip


def thresholds(lake: Path, symbol: str, end_ns: int) -> dict:
    """The ML grid's tighten, widen and pause forecasts: percentiles of the training labels only."""
    from grinder.features.spec import FeatureSet
    from grinder.ml.dataset import build_dataset
    from grinder.ml.labels import LabelSpec

    data = build_dataset(lake, VENUE, symbol, None, end_ns, FeatureSet(), LabelSpec(), EVERY_NS, (LABEL,))
    lo, hi, top = np.percentile(data.label(LABEL), [30, 80, 98])
    return {"tighten_vol": float(lo), "widen_vol": float(hi), "pause_vol": float(max(top, hi))}


def run_fold(lake: Path, mlruns: Path, out_dir: Path, fold: dict) -> dict:
    from grinder.ml.train import train_job
    from grinder.sim.job import backtest_job

    sym = fold["symbol"]
    trained = train_job(LABEL, symbol=sym, venue=VENUE, end=fold["train_end"], every_ns=EVERY_NS, folds=3,
                        embargo_ns=10 * S, name=f"research-{sym.lower()}-vol", mlruns=mlruns, root=lake)  # fmt: skip
    uri = f"models:/{trained.model_name}/{trained.model_version}"
    grid = grid_for(lake, sym, fold["test_start"], fold["test_end"])
    ml = grid | thresholds(lake, sym, fold["train_end"])
    tags = {"research": "ml_walk_forward", "fold": fold["name"]}
    row = {"fold": fold["name"], "symbol": sym, "test_s": (fold["test_end"] - fold["test_start"]) / S,
           "model": uri, "train_samples": trained.samples,
           "model_rmse": trained.mean.get("rmse"), "baseline_rmse": trained.baseline_mean.get("rmse"),
           "grid": grid, "ml_thresholds": {k: ml[k] for k in ("tighten_vol", "widen_vol", "pause_vol")}}  # fmt: skip
    for strategy, params, model in (("static_grid", grid, None), ("adaptive_grid", grid, None),
                                    ("ml_grid", ml, uri)):  # fmt: skip
        done = backtest_job(strategy, symbol=sym, venue=VENUE, start=fold["test_start"], end=fold["test_end"],
                            params=params, report=False, mlruns=mlruns, out_dir=out_dir, root=lake,
                            model=model)  # fmt: skip
        s = done.summary
        if done.mlflow_run_id:
            from grinder.track.mlflow_store import open_store

            client, _ = open_store(mlruns)
            for k, v in tags.items():
                client.set_tag(done.mlflow_run_id, k, v)
        row[strategy] = {"equity": s["equity"], "fees": s["fees"], "fills": s["fills"],
                         "realized": s["realized"], "position": s["position"], "digest": s["digest"],
                         "mode_share": s.get("mode_share"), "run_id": done.mlflow_run_id}  # fmt: skip
    return row


def table(rows: list[dict]) -> str:
    lines = ["| fold | test | model RMSE (naive) | static equity (fees, fills) | adaptive | ML grid |",
             "|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        cells = [f"{r[s]['equity']:+.2f} ({r[s]['fees']:.2f}, {r[s]['fills']})"
                 for s in ("static_grid", "adaptive_grid", "ml_grid")]  # fmt: skip
        lines.append(f"| {r['fold']} | {r['test_s']:.0f} s | {r['model_rmse']:.3f} ({r['baseline_rmse']:.3f}) | "
                     + " | ".join(cells) + " |")  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lake", type=Path, required=True, help="lake holding (or to receive) the real windows")
    ap.add_argument("--mlruns", type=Path, default=REPO / "mlruns")
    ap.add_argument("--out", type=Path, help="write every figure as JSON here")
    args = ap.parse_args()
    ingest(args.lake)
    with tempfile.TemporaryDirectory() as runs:
        rows = [run_fold(args.lake, args.mlruns, Path(runs), f) for f in folds(args.lake)]
    print(table(rows))
    if args.out:
        args.out.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
