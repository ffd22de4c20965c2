"""A backtest as `grinder backtest` runs it, as one call: settings, tape, run, run folder, MLflow run.

`grinder backtest` parses its options, calls `backtest_job` and prints the outcome; a notebook
calls it with the same arguments and gets the same run folder, digest and MLflow run.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from grinder.errors import ConfigError
from grinder.progress import Progress
from grinder.settings import default_lake, parse_time, read_settings, venue_and_gates
from grinder.sim.backtest import BacktestResult


@dataclass(frozen=True)
class BacktestOutcome:
    """What a backtest job left: its run folder, its summary (summary.json), the result arrays and the MLflow run."""

    run_dir: Path
    summary: dict
    result: BacktestResult
    mlflow_run_id: str | None


def backtest_job(
    strategy: str,
    *,
    symbol: str = "BTCUSDT",
    venue: str = "binance-usdm",
    start: str | int | None = None,
    end: str | int | None = None,
    params: Mapping[str, Any] | None = None,
    config: Path | None = None,
    venue_settings: Mapping[str, Any] | None = None,
    report: bool = True,
    capital: float | None = None,
    cache: bool = False,
    track: bool = True,
    mlruns: Path | None = None,
    out_dir: Path = Path("runs"),
    root: Path | None = None,
    progress: Progress | None = None,
    model: str | None = None,
    chunked: bool = False,
) -> BacktestOutcome:
    """Backtest `strategy` (a name in strategies/) on the lake's `venue`/`symbol` from `start` to `end`.

    Settings: the TOML `config`'s `[strategy]`, `[venue]` and `[gates]` tables, with `params` and
    `venue_settings` (VenueConfig's fields, in its units; None values are ignored) on top. Writes a
    run folder under `out_dir` and, with `track`, an MLflow run in `mlruns` (default: $GRINDER_MLRUNS
    or ./mlruns). `capital` (settle currency) scales the report's return statistics. `model` (a registry
    URI, models:/NAME@ALIAS or models:/NAME/VERSION, in the `mlruns` store) drives a strategy that
    reads signals: resolved once to a version, which the summary and the digest name. `chunked` reads
    and runs the selection an hour of exchange time at a time (grinder.sim.chunked): memory follows
    the hour's Parquet row groups; the result, digest and data fingerprint are the whole selection's.
    """
    from grinder.core.strategy import compile_kernel, get
    from grinder.data.tape import load_tape
    from grinder.sim.backtest import LatencySeries, prepare, run_backtest
    from grinder.sim.replay_cache import cache_root

    progress = progress or Progress()
    root = Path(root) if root is not None else default_lake()
    strat = get(strategy)
    if capital is not None and not capital > 0:
        raise ConfigError(f"--capital must be positive, got {capital}")
    cfg = read_settings(config, ("strategy", "venue", "gates"), params, venue_settings)
    chosen = strat.validate(cfg["strategy"])
    venue_cfg, gates_cfg = venue_and_gates(cfg)
    latency = LatencySeries.for_venue(venue_cfg)  # a bad latency file fails before any data is read
    lo, hi = parse_time(start), parse_time(end)
    store = mlruns or _default_mlruns()
    if chunked and (cache or model is not None):
        which = "--cache" if cache else "--model"
        raise ConfigError(f"--chunked reads the lake an hour at a time: it takes no {which}")
    loaded = _model_for(strat, model, store)  # a missing or mismatched model fails before any data is read
    if chunked:
        res, events, fingerprint, seconds = _chunked(root, venue, symbol, lo, hi, strat, chosen, venue_cfg, gates_cfg,
                                                    latency, progress)  # fmt: skip
        return _finish(strat, chosen, venue_cfg, gates_cfg, root, venue, symbol, start, end, events, seconds, capital,
                       None, res, out_dir, report, progress, track, store, lambda: fingerprint)  # fmt: skip
    t0 = time.perf_counter()
    tape = load_tape(root, venue, symbol, lo, hi, cache=cache, bbo=False)  # a backtest never reads the BBO table
    t1 = time.perf_counter()
    with progress.stage(f"compiling {strat.name} and preparing {len(tape):,} events"):
        kernel = compile_kernel(strat.kernel)
        replay = prepare(tape, venue_cfg, cache_root(root) if cache else None)
    signals = None
    if loaded is not None:
        from grinder.ml.signals import model_signals

        with progress.stage(f"predicting with {loaded.uri} at every decision"):
            signals = model_signals(tape, replay, venue_cfg, loaded, start_ns=lo or 0)
    t2 = time.perf_counter()
    with progress.count(f"backtesting {strat.name} on {venue}/{symbol}", max(1, len(tape))) as update:
        res = run_backtest(tape, kernel, strat.vector(chosen), venue_cfg, strat.max_targets, start_ns=lo or 0,
                           replay=replay, gates=gates_cfg, latency=latency, progress=update,
                           signals=signals)  # fmt: skip
    t3 = time.perf_counter()
    seconds = {"load": round(t1 - t0, 3), "prepare": round(t2 - t1, 3), "backtest": round(t3 - t2, 3)}
    return _finish(strat, chosen, venue_cfg, gates_cfg, root, venue, symbol, start, end, len(tape), seconds, capital,
                   loaded, res, out_dir, report, progress, track, store, lambda: _fingerprint(tape))  # fmt: skip


def _fingerprint(tape) -> str:
    from grinder.track.provenance import data_fingerprint

    return data_fingerprint(tape)


def _chunked(root, venue, symbol, lo, hi, strat, chosen, venue_cfg, gates_cfg, latency, progress):
    """The backtest over LakeChunks: (result, exchange rows, data fingerprint, seconds)."""
    from grinder.core.strategy import compile_kernel
    from grinder.data.chunks import LakeChunks
    from grinder.sim.chunked import run_chunked
    from grinder.track.provenance import EVENT_COLUMNS, TapeFingerprint

    source = LakeChunks(root, venue, symbol, lo, hi)
    fp = TapeFingerprint()
    t0 = time.perf_counter()
    with progress.stage(f"compiling {strat.name} and reading the selection's times, an hour at a time"):
        kernel = compile_kernel(strat.kernel)
        source.instrument  # noqa: B018 - a missing instrument fails here, before the passes
    with progress.count(f"backtesting {strat.name} on {venue}/{symbol}, an hour at a time", 1) as update:
        res = run_chunked(source, kernel, strat.vector(chosen), venue_cfg, strat.max_targets, start_ns=lo or 0,
                          gates=gates_cfg, latency=latency, progress=update,
                          on_chunk=lambda c: fp.add({n: getattr(c, n) for n in EVENT_COLUMNS}))  # fmt: skip
    seconds = {"load": 0.0, "prepare": 0.0, "backtest": round(time.perf_counter() - t0, 3)}
    events = res.counters["exchange_events"]
    return res, events, fp.hexdigest(source.instrument, source.funding_parts()), seconds


def _finish(strat, chosen, venue_cfg, gates_cfg, root, venue, symbol, start, end, events, seconds, capital, loaded, res,
            out_dir, report, progress, track, store, fingerprint) -> BacktestOutcome:  # fmt: skip
    """Write the run folder and, with `track`, the MLflow run (`fingerprint()` gives the data's)."""
    from grinder.sim.run_folder import summarize, write_run

    meta = {
        "strategy": strat.name,
        "params": chosen.model_dump(),
        "venue": venue_cfg.model_dump(),
        "gates": gates_cfg.model_dump(),
        "selection": {"root": str(root), "venue": venue, "symbol": symbol, "start": _text(start), "end": _text(end)},
        "events": events,
        "seconds": seconds,
    }
    if capital is not None:
        meta["capital"] = capital
    if loaded is not None:
        meta["model"] = loaded.summary()
    summary = summarize(res, meta, strat.modes)
    with progress.stage("writing the run folder and report"):
        run_dir = write_run(Path(out_dir), f"{strat.name}-{symbol}", res, summary, report=report)
    _warn_about(summary, progress)
    run_id = None
    if track:
        from grinder.track.mlflow_store import log_backtest

        with progress.stage("recording the run in MLflow"):
            run_id = log_backtest(run_dir, fingerprint=fingerprint(), root=store)
    return BacktestOutcome(run_dir, summary, res, run_id)


def _default_mlruns() -> Path:
    from grinder.track.mlflow_store import default_root

    return default_root()


def _model_for(strat, model: str | None, mlruns: Path):
    """The model a strategy reads its signals from, loaded and checked against what it reads; None without."""
    if not strat.signals:
        if model is not None:
            raise ConfigError(f"strategy {strat.name} reads no signals; --model {model} has nothing to drive")
        return None
    if model is None:
        raise ConfigError(f"strategy {strat.name} reads a model's {', '.join(strat.signals)} forecast: give "
                          "--model models:/NAME@champion (or models:/NAME/VERSION)")  # fmt: skip
    from grinder.ml.model import load_model

    loaded = load_model(model, mlruns)
    check_model_fits(strat, loaded)
    return loaded


def check_model_fits(strat, loaded) -> None:
    """A model drives a strategy only if its label is the one the strategy reads and it gives one output per signal."""
    if len(strat.signals) != loaded.width or not loaded.label.startswith(strat.signals[0]):
        raise ConfigError(f"{loaded.uri} predicts {loaded.label} ({loaded.width} output(s)); strategy {strat.name} "
                          f"reads {', '.join(strat.signals)}")  # fmt: skip


def _text(t: str | int | None) -> str | None:
    """A start or end as the summary records it: as given (a command line gives text)."""
    return None if t is None else str(t)


def _warn_about(summary: dict, progress: Progress) -> None:
    """The run's warnings: coverage gaps jumped with a position held, Binance's quantitative rules broken."""
    cur = summary.get("settle", "")
    gaps = summary.get("coverage_gaps") or []
    held = [g for g in gaps if g["position"] != 0]
    if gaps:
        days = ", ".join(f"{g['seconds'] / 86_400:.1f} d" for g in gaps)
        carried = (f"; a position was held across {len(held)} of them, which moved equity by "
                   f"{sum(g['equity_change'] for g in held):+.4f} {cur} with no data to trade on: backtest each "
                   "span alone (--start/--end, `grinder data check`)") if held else ""  # fmt: skip
        progress.warn(f"the run jumped {len(gaps)} coverage gap(s) ({days}){carried}")
    rules = summary.get("quant_rules") or {}
    if rules.get("rules_ok") is False:
        m = rules["metrics"]
        worst = "; ".join(f"{k} {m[k]['max']:.4g} (limit {m[k]['threshold']:.4g})" for k in rules["breaches"])
        gated = "" if summary["counters"].get("blocked_quant_rules") else \
            " ([gates] quant_rules = true keeps new orders within them)"  # fmt: skip
        progress.warn(f"this run breaks Binance's quantitative trading rules: {worst}{gated}")
