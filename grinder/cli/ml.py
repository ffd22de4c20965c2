"""`grinder ml`: models of the market's near future, trained on the lake (grinder.ml does the work)."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Annotated

import typer

from grinder.cli.common import DEFAULT_ROOT, ConsoleProgress, MlrunsOpt, RootOpt, clean_errors, out, when
from grinder.errors import ConfigError
from grinder.settings import pairs, read_toml, validated

app = typer.Typer(
    help="Machine learning on the lake: train models of labels, promote them by alias (docs/ml.md).",
    no_args_is_help=True,
)

_UNITS = {"ns": 1, "us": 1_000, "ms": 1_000_000, "s": 1_000_000_000, "m": 60_000_000_000, "h": 3_600_000_000_000}


def duration_ns(option: str, text: str) -> int:
    """A duration as ns: `500ms`, `1s`, `1.5m`, `2h`, or bare digits (ns); ConfigError names the option."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ns|us|ms|s|m|h)?\s*", text)
    if not m:
        raise ConfigError(f"{option} {text!r}: expected a duration such as 500ms, 1s, 5m or a number of ns")
    ns = float(m.group(1)) * _UNITS[m.group(2) or "ns"]
    if not math.isfinite(ns) or ns >= 2**63:
        raise ConfigError(f"{option} {text!r}: longer than int64 ns")
    return int(round(ns))


@app.command("train")
@clean_errors
def train(
    label: Annotated[str, typer.Option(help="Target label, e.g. fwd_rv_10s, markout_bid_1m, fill_ask_d1_10s.")],
    symbol: Annotated[str, typer.Option(help="Symbol.")] = "BTCUSDT",
    venue: Annotated[str, typer.Option(help="Venue.")] = "binance-usdm",
    start: Annotated[str | None, typer.Option(help="Start (ISO 8601 UTC or ns).")] = None,
    end: Annotated[str | None, typer.Option(help="End, exclusive.")] = None,
    every: Annotated[str, typer.Option(help="Sample interval within coverage: 500ms, 1s, 5m.")] = "1s",
    folds: Annotated[int, typer.Option(help="Walk-forward folds (purged by the label's horizon).")] = 3,
    embargo: Annotated[str, typer.Option(help="Gap between each fold's training samples and its test fold.")] = "0s",
    xgb: Annotated[
        list[str] | None,
        typer.Option("--xgb", help="xgboost parameter KEY=VALUE (repeat); num_boost_round=N sets the trees."),
    ] = None,
    seed: Annotated[int, typer.Option(help="xgboost's seed (same seed and data, same model).")] = 0,
    config: Annotated[
        Path | None, typer.Option(help="TOML with \\[features] (FeatureSet) and \\[labels] (LabelSpec) tables.")
    ] = None,
    name: Annotated[str | None, typer.Option(help="Registered model name (default grinder-LABEL).")] = None,
    mlruns: MlrunsOpt = None,
    root: RootOpt = DEFAULT_ROOT,
) -> None:
    """Train an xgboost model of a label: walk-forward folds against a naive baseline, then register it in MLflow."""
    from grinder.features.spec import FeatureSet
    from grinder.ml.labels import LabelSpec
    from grinder.ml.train import train_job

    tables = read_toml(config) if config is not None else {}
    unknown = sorted(set(tables) - {"features", "labels"})
    if unknown:
        raise ConfigError(f"unknown table(s) {', '.join(unknown)}; expected features, labels", str(config))
    for k, v in tables.items():
        if not isinstance(v, dict):
            raise ConfigError(f"{k} must be a table", str(config))
    fs = validated("features", FeatureSet, tables.get("features", {}))
    spec = validated("labels", LabelSpec, tables.get("labels", {}))
    done = train_job(label, symbol=symbol, venue=venue, start=start, end=end, feature_set=fs, label_spec=spec,
                     every_ns=duration_ns("--every", every), folds=folds, embargo_ns=duration_ns("--embargo", embargo),
                     xgb_params=pairs(xgb, "--xgb"), seed=seed, name=name, mlruns=mlruns, root=root,
                     progress=ConsoleProgress())  # fmt: skip
    kept = done.samples - done.dropped
    out.print(
        f"{done.label} on {venue}/{symbol}: {kept:,} samples every {every} ({done.dropped:,} dropped: label window "
        f"not whole), {when(done.train_start_ns)} to {when(done.train_end_ns)}; {done.objective}",
        highlight=False,
    )
    names = list(done.mean)
    head = "  ".join(f"{m + ' (baseline)':>21}" for m in names)
    out.print(f"  {'fold':>4} {'train':>7} {'test':>6} {'purged':>6} {'embargoed':>9}  {head}", highlight=False)
    for f in done.folds:
        figures = "  ".join(f"{f.metrics[m]:>10.4g} ({f.baseline[m]:>8.4g})" for m in names)
        row = f"{f.index:>4} {f.train_samples:>7,} {f.test_samples:>6,} {f.purged:>6,} {f.embargoed:>9,}"
        out.print(f"  {row}  {figures}", highlight=False)
    means = "  ".join(f"{done.mean[m]:>10.4g} ({done.baseline_mean[m]:>8.4g})" for m in names)
    out.print(f"  {'mean':>4} {'':>7} {'':>6} {'':>6} {'':>9}  {means}", highlight=False)
    out.print(f"  registered models:/{done.model_name}/{done.model_version}", highlight=False)
    out.print(f"  mlflow run: {done.run_id}  model sha256 {done.model_sha256}", highlight=False)
    out.print(f"  features: {done.features_from}", highlight=False)


@app.command("features")
@clean_errors
def features(
    symbol: Annotated[str, typer.Option(help="Symbol.")] = "BTCUSDT",
    venue: Annotated[str, typer.Option(help="Venue.")] = "binance-usdm",
    start: Annotated[str | None, typer.Option(help="Start (ISO 8601 UTC or ns).")] = None,
    end: Annotated[str | None, typer.Option(help="End, exclusive.")] = None,
    every: Annotated[str, typer.Option(help="Sample interval within coverage: 500ms, 1s, 5m.")] = "1s",
    config: Annotated[Path | None, typer.Option(help="TOML with a \\[features] (FeatureSet) table.")] = None,
    root: RootOpt = DEFAULT_ROOT,
) -> None:
    """Compute features every interval within coverage and store them in the lake (the `features` table);
    `grinder ml train` with the same selection and interval reads them from there."""
    from grinder.features.spec import FeatureSet
    from grinder.ml.dataset import store_features
    from grinder.settings import parse_time

    tables = read_toml(config) if config is not None else {}
    unknown = sorted(set(tables) - {"features"})
    if unknown:
        raise ConfigError(f"unknown table(s) {', '.join(unknown)}; expected features", str(config))
    fs = validated("features", FeatureSet, tables.get("features", {}))
    with ConsoleProgress().stage(f"features of {venue}/{symbol} every {every}"):
        parts, key, n = store_features(root, venue, symbol, parse_time(start), parse_time(end), fs,
                                       duration_ns("--every", every))  # fmt: skip
    out.print(f"{n:,} samples of {len(fs.names)} features, version {fs.version[:12]}, part {key}", highlight=False)
    for path in parts:
        out.print(f"  {path}", highlight=False)


@app.command("promote")
@clean_errors
def promote(
    name: Annotated[str, typer.Argument(help="Registered model name.")],
    start: Annotated[str, typer.Option(help="Start of the out-of-sample window (ISO 8601 UTC or ns).")],
    end: Annotated[str, typer.Option(help="End of the window, exclusive.")],
    version: Annotated[
        str | None, typer.Option(help="Version to judge (default: the one the `challenger` alias points to).")
    ] = None,
    metric: Annotated[str, typer.Option(help="Judged on: equity, realized or max_drawdown.")] = "equity",
    strategy: Annotated[str, typer.Option(help="Model-driven strategy both runs use.")] = "ml_grid",
    symbol: Annotated[str, typer.Option(help="Symbol.")] = "BTCUSDT",
    venue: Annotated[str, typer.Option(help="Venue.")] = "binance-usdm",
    param: Annotated[list[str] | None, typer.Option("--param", "-p", help="Strategy parameter NAME=VALUE.")] = None,
    config: Annotated[
        Path | None, typer.Option(help="TOML file with \\[strategy], \\[venue], \\[gates] tables.")
    ] = None,
    report: Annotated[bool, typer.Option("--report/--no-report", help="Write each run's report.html.")] = True,
    out_dir: Annotated[Path, typer.Option("--out", help="Folder for the two run folders.")] = Path("runs"),
    mlruns: MlrunsOpt = None,
    root: RootOpt = DEFAULT_ROOT,
) -> None:
    """Judge a version out of sample against the champion (or the static grid); make it champion if it wins.

    Exit code 5 when the gate refuses it (the champion stays), 2 for a request that cannot be judged.
    """
    from grinder.ml.promote import PromotionRefused, promote_job

    try:
        done = promote_job(name, version, start=start, end=end, root=root, venue=venue, symbol=symbol,
                           strategy=strategy, params=pairs(param, "--param"), config=config, metric=metric,
                           report=report, mlruns=mlruns, out_dir=out_dir, progress=ConsoleProgress())  # fmt: skip
    except PromotionRefused as e:
        _print_gate(e.outcome)
        raise
    _print_gate(done)


def _print_gate(o) -> None:
    """A gate's two runs and its verdict (grinder.ml.promote.PromoteOutcome)."""
    out.print(f"{o.name} version {o.version}: {o.verdict} on {o.metric}, {when(o.start_ns)} to {when(o.end_ns)}",
              highlight=False)  # fmt: skip
    for r in (o.challenger, o.baseline):
        out.print(f"  {r.role:<10} {r.driver:<24} {o.metric} {r.value:<12.6g} digest {r.digest[:16]}  "
                  f"mlflow run {r.mlflow_run_id}", highlight=False)  # fmt: skip
    before = f"version {o.previous_champion}" if o.previous_champion else "none"
    after = f"version {o.champion}" if o.champion else "none"
    out.print(f"  champion: {after}" + (f" (was {before})" if o.promoted else " (unchanged)"), highlight=False)


@app.command("rollback")
@clean_errors
def rollback(
    name: Annotated[str, typer.Argument(help="Registered model name.")],
    mlruns: MlrunsOpt = None,
) -> None:
    """Move the `champion` alias back to the version the current champion replaced."""
    from grinder.ml.promote import rollback_job

    done = rollback_job(name, mlruns=mlruns)
    out.print(f"{done.name}: champion back to version {done.to_version} (was version {done.from_version})",
              highlight=False)  # fmt: skip


@app.command("models")
@clean_errors
def models(mlruns: MlrunsOpt = None) -> None:
    """Registered models: each version's aliases, label, feature-set hash and promotion status."""
    from grinder.ml.registry import list_models, open_registry
    from grinder.track.mlflow_store import default_root

    found = list_models(open_registry(mlruns if mlruns is not None else default_root()))
    if not found:
        out.print("no registered models")
    for m in found:
        out.print(m.name, highlight=False)
        for v in m.versions:
            aliases = ",".join(v.aliases) or "-"
            # soft_wrap: a long status stays on its row, for grep
            out.print(f"  v{v.version:<4} {aliases:<21} {v.label:<20} features {v.feature_set_version[:12]}  "
                      f"{v.status}", highlight=False, soft_wrap=True)  # fmt: skip
