"""A sweep as `grinder sweep` runs it, as one call: windows, memory check, search or grid, ranking,
baseline, sweep folder, and the MLflow parent run with the best sets re-run as child runs.

`grinder sweep` parses its options, calls `sweep_job` and prints the outcome; a notebook calls it
with the same arguments and gets the same sweep folder, digests and MLflow runs.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from grinder.core.depth import needed_levels
from grinder.errors import ConfigError
from grinder.progress import Progress
from grinder.settings import default_lake, parse_time, read_settings, venue_and_gates
from grinder.sweep.lifecycle import check as check_signals
from grinder.sweep.lifecycle import signals_raise


@dataclass(frozen=True)
class SweepOutcome:
    """What a sweep job left: its folder, summary (summary.json) and study, and its MLflow parent run.

    `study.results` holds every set's metrics per window and `study.ranking` the ranked sets;
    `child_runs` counts the MLflow child runs of the best sets; `tracking_s` is the time MLflow took
    (its import, the runs, the child backtests); `estimate_bytes` the memory estimate checked
    before the sweep started.
    """

    folder: Path
    summary: dict
    study: Any
    mlflow_run_id: str | None
    child_runs: int
    tracking_s: float
    estimate_bytes: int


def sweep_job(
    strategy: str,
    *,
    grid: Mapping[str, Any] | None = None,
    params: Mapping[str, Any] | None = None,
    config: Path | None = None,
    symbol: str = "BTCUSDT",
    venue: str = "binance-usdm",
    start: str | int | None = None,
    end: str | int | None = None,
    train: float | None = None,
    walk_forward: int = 0,
    fold_by: str = "time",
    min_events: int = 1_000,
    memory_limit: str | None = None,
    rank_by: str = "equity",
    rules_ok: bool = False,
    workers: int | None = None,
    cluster: str | None = None,
    children: int = 3,
    search: str | None = None,
    trials: int = 64,
    seed: int = 0,
    study_name: str | None = None,
    resume: bool = False,
    child_reports: bool = False,
    track: bool = True,
    mlruns: Path | None = None,
    report: bool = True,
    out_dir: Path = Path("sweeps"),
    cache: bool = False,
    root: Path | None = None,
    progress: Progress | None = None,
) -> SweepOutcome:
    """Backtest every parameter set of `grid` (or `trials` sets a TPE `search` picks) over shared tapes.

    `grid` maps a parameter to its values (a spec string such as "1,2,3", "0.5:2:0.5", "lin:a:b:n",
    or a list), on top of the TOML `config`'s `[sweep]` table; `params` fixes others, on top of its
    `[strategy]` table. Windows: the selection `start`..`end` of `venue`/`symbol` split by `train`
    (in-sample fraction) or `walk_forward` folds, cut by covered `fold_by` ('time' or 'events'),
    never across a coverage gap; windows under `min_events` are not run. Sets are ranked by
    `rank_by` (out of sample when there is a test window). Writes a sweep folder under `out_dir`;
    with `track`, an MLflow parent run with the best `children` sets re-run over the whole
    selection as child runs. The options are `grinder sweep`'s (docs/sweeps.md).
    """
    from grinder.core.strategy import get
    from grinder.data.coverage import clip_spans, covering, lake_spans
    from grinder.data.tape import load_tape
    from grinder.sim.backtest import LatencySeries
    from grinder.sweep.folder import sweep_id, write_sweep
    from grinder.sweep.folds import count_in, coverage_folds
    from grinder.sweep.memory import available_bytes, check_fits, peak_rss_bytes
    from grinder.sweep.memory import estimate as sweep_memory
    from grinder.sweep.spec import expand
    from grinder.sweep.study import LOWER_IS_BETTER, RANKABLE, Selection, run_study

    progress = progress or Progress()
    root = Path(root) if root is not None else default_lake()
    strat = get(strategy)
    if strat.signals:  # its signals come from a model per window, which a sweep does not take
        raise ConfigError(f"strategy {strat.name} reads a model's forecast; a sweep does not run models: "
                          "backtest it with --model (grinder ml promote compares it out of sample)")  # fmt: skip
    if rank_by not in RANKABLE:
        raise ConfigError(f"unknown ranking metric {rank_by!r}; choose from {', '.join(RANKABLE)}")
    if workers is not None and workers < 1:
        raise ConfigError(f"--workers must be at least 1, got {workers}")
    cfg = read_settings(config, ("strategy", "sweep", "venue", "gates"), params)
    cfg["strategy"] = _typed(strat, cfg["strategy"])  # 0.1 and "0.1" are one setting, and recorded as one
    cfg["sweep"].update(grid or {})
    if search is not None and search != "tpe":
        raise ConfigError(f"unknown search {search!r}; available: tpe")
    if search is None and (study_name is not None or resume):
        raise ConfigError("--study and --resume go with --search tpe (a grid keeps no study)")
    g = expand(strat, cfg["sweep"], cfg["strategy"]) if search is None else None
    venue_cfg, gates_cfg = venue_and_gates(cfg)
    latency = LatencySeries.for_venue(venue_cfg)  # a bad latency file fails before any data is read
    lo, hi = parse_time(start), parse_time(end)
    if children < 0:
        raise ConfigError(f"--children must be >= 0, got {children}")
    spec = {
        "strategy": strat.name,
        "grid": {k: str(v) for k, v in cfg["sweep"].items()},
        "search": search,
        "fixed": cfg["strategy"],
        "symbol": symbol,
        "venue": venue,
        "train": train,
        "walk_forward": walk_forward,
        "rank_by": rank_by,
        "rules_ok": rules_ok,
    }
    out_dir = Path(out_dir)
    with contextlib.ExitStack() as stack:
        # SIGTERM and SIGINT unwind the sweep (its MLflow run ends FAILED, nothing half-written stays).
        stack.enter_context(signals_raise())
        client = None
        if cluster is not None:
            from grinder.sweep.cluster import connect

            with progress.stage(f"connecting to {cluster}"):
                client = connect(cluster)
            stack.callback(client.close)
            root = root.resolve()  # workers resolve paths on their own machine
        t0 = time.perf_counter()
        with progress.stage("reading the data span"):
            whole = load_tape(root, venue, symbol, lo, hi, cache=cache)
        # Windows are cut within the spans that hold data, never across a gap (decision 022).
        spans = clip_spans(lake_spans(root, venue, symbol), lo, hi)
        times = whole.ts_exch[whole.start :]
        folds = coverage_folds(spans, times, train, walk_forward, fold_by, min_events)
        windows = folds.windows
        for w, n in folds.refused:
            progress.warn(f"window {w.name} holds {n:,} events (< --min-events {min_events:,}): not run or ranked")
        est = sweep_memory(
            # A window's tape holds the book from its span's start (the snapshot), not only its own rows.
            [(count_in(times, covering(spans, w.start_ns).start_ns, w.end_ns), w.end_ns - w.start_ns)
             for w in windows],
            [(count_in(times, s.start_ns, s.end_ns), s.end_ns - s.start_ns) for s in spans],
            len(whole), len(g) if g is not None else trials, 0 if cluster else workers or os.cpu_count() or 1,
            children if track else 0, venue_cfg.step_ns,
        )  # fmt: skip
        check_fits(est, available_bytes(memory_limit))
        sel = Selection(root, venue, symbol, lo, hi, cache)
        stored = None
        if search is not None:
            from grinder.sweep.search import search_sets

            one = len(windows) == 1 and lo is None and hi is None
            stored = _open_search_study(spec, seed, workers, windows, venue_cfg, gates_cfg, rank_by, study_name,
                                        resume, mlruns) if track or study_name or resume else None  # fmt: skip
            with progress.stage(f"searching {trials} trials (TPE, in sample)"):
                g = search_sets(strat, cfg["sweep"], cfg["strategy"], windows,
                                lambda w: whole if one else load_tape(root, venue, symbol, w.start_ns, w.end_ns,
                                                                      cache=cache),
                                venue_cfg, gates_cfg, latency, rank_by, rank_by in LOWER_IS_BETTER, trials, seed,
                                workers, study=stored)  # fmt: skip
        parent = None
        t_track = time.perf_counter()  # what tracking adds: MLflow's import, the runs, the child backtests
        if track:
            from grinder.sweep.lifecycle import fail_orphaned_sweeps, process_tags, raise_pending
            from grinder.track.mlflow_store import default_root, open_store, sweep_run
            from grinder.track.provenance import data_fingerprint

            fingerprint = data_fingerprint(whole)
            # Sweeps killed outright (SIGKILL, the OOM killer) left their runs RUNNING: fail them now.
            for run_id in fail_orphaned_sweeps(*open_store(mlruns or default_root())):
                progress.warn(f"sweep run {run_id} was left RUNNING by a process that is gone: marked FAILED")
            # From here on a failure marks the sweep's MLflow run FAILED (never left RUNNING).
            # Tagged like its child backtests, so `tags.strategy = ...` finds the sweep beside them.
            tags = {"strategy": strat.name, "venue": venue, "symbol": symbol, "data_fingerprint": fingerprint,
                    **process_tags()}  # fmt: skip
            parent = stack.enter_context(sweep_run(mlruns or default_root(), f"sweep-{strat.name}-{symbol}", spec,
                                                   tags=tags))  # fmt: skip
            stack.enter_context(raise_pending())  # a signal whose exception was dropped still fails the run
        t_track = time.perf_counter() - t_track
        # A window that starts before the selection's first row and ends after its last is the
        # selection itself: reuse the tape already loaded.
        loader = None
        if len(windows) == 1 and windows[0].start_ns <= whole.ts_exch[0] and windows[0].end_ns > whole.ts_exch[-1]:
            loader = lambda s, w: whole  # noqa: E731
        settle = whole.instrument.settle
        total = len(g) * len(windows)
        with progress.count(f"sweeping {len(g):,} parameter sets x {len(windows)} window(s)", total) as update:
            done: dict[str, int] = {}  # sets done per window (a window's count restarts at 0)

            def tick(w: str, d: int, _n: int) -> None:
                done[w] = d
                if update is not None:
                    update(sum(done.values()), total)

            study = run_study(sel, g, windows, venue_cfg, gates_cfg, latency, rank_by, workers, loader,
                              progress=tick, client=client, rules_ok=rules_ok)  # fmt: skip
        seconds = round(time.perf_counter() - t0, 3)
        from grinder.sweep.decide import annualised_note, decision_summary, run_baseline

        with progress.stage("running the baseline (the static grid's defaults) on the same windows"):
            base = run_baseline(sel, windows, venue_cfg, gates_cfg, latency, rank_by, workers, loader)
        summary = {
            "strategy": strat.name,
            "axes": list(g.axes),
            "grid": {k: v for k, v in g.axes.items()},
            "fixed": cfg["strategy"],
            "venue": venue_cfg.model_dump(),
            "gates": gates_cfg.model_dump(),
            "selection": {
                "root": str(root),
                "venue": venue,
                "symbol": symbol,
                "start": _text(start),
                "end": _text(end),
            },  # fmt: skip
            "windows": [w.__dict__ for w in windows],
            "coverage": [{"start_ns": s.start_ns, "end_ns": s.end_ns} for s in spans],
            "fold_by": fold_by,
            "refused_windows": [{**w.__dict__, "events": n} for w, n in folds.refused],
            "memory": {"estimate_mb": round(est.total / 2**20), "peak_rss_mb": round(peak_rss_bytes() / 2**20)},
            "sets": len(g),
            "search": None
            if search is None
            else {
                "sampler": search,
                "trials": trials,
                "seed": seed,
                "study": None if stored is None else stored.study_name,
            },
            "backtests": len(g) * len(windows),
            "events": int(study.results.groupby("window")["events"].first().sum()),
            "rank_by": rank_by,
            "rank_key": study.ranking.attrs["rank_key"],
            "lower_is_better": rank_by in LOWER_IS_BETTER,
            "rules_ok": rules_ok,
            "sets_within_rules": _sets_within_rules(study.ranking),
            "settle": settle,
            "best": study.ranking.head(5).to_dict(orient="records"),
            "sweep_id": sweep_id(study),
            "cluster": cluster,
            "seconds": seconds,
        }
        summary |= decision_summary(study.ranking, base, list(g.axes), rank_by, settle)
        summary["annualised_note"] = annualised_note(summary["windows"], rank_by)
        check_signals()  # no sweep folder after a signal whose exception was dropped
        with progress.stage("writing the sweep folder and report"):
            folder = write_sweep(out_dir, f"{strat.name}-{symbol}", study, summary, report=report)
        if summary["warning"]:
            progress.warn(summary["warning"])
        if summary["annualised_note"] and rank_by == "sharpe":
            progress.warn(summary["annualised_note"])
        child_runs = 0
        if parent is not None:
            t1 = time.perf_counter()
            child_runs = _track_sweep(parent, folder, study, summary, g, spans,
                                      lambda s: load_tape(root, venue, symbol, s.start_ns, s.end_ns, cache=cache),
                                      venue_cfg, gates_cfg, latency, children, fingerprint, report and child_reports,
                                      progress)  # fmt: skip
            t_track += time.perf_counter() - t1
        return SweepOutcome(folder, summary, study, None if parent is None else parent.run_id, child_runs,
                            t_track if parent is not None else 0.0, est.total)  # fmt: skip


def _typed(strat, values: dict) -> dict:
    """Fixed parameters as the strategy's parameter model types them; a value it refuses stays as given
    (expanding the grid names it)."""
    from pydantic import TypeAdapter, ValidationError

    fields = strat.params.model_fields
    typed = {}
    for name, value in values.items():
        try:
            typed[name] = TypeAdapter(fields[name].annotation).validate_python(value) if name in fields else value
        except ValidationError:
            typed[name] = value
    return typed


def _text(t: str | int | None) -> str | None:
    """A start or end as the summary records it: as given (a command line gives text)."""
    return None if t is None else str(t)


def _open_search_study(spec, seed, workers, windows, venue_cfg, gates_cfg, rank_by, name, resume, mlruns):
    """The TPE study in <mlruns>/optuna.db for this search (new, or resumed with --resume); see docs/sweeps.md."""
    from grinder.sweep.storage import open_study, study_name
    from grinder.sweep.study import LOWER_IS_BETTER
    from grinder.track.mlflow_store import default_root

    # Everything that decides which trials are asked: same settings, same study name.
    search_spec = {**spec, "seed": seed, "batch": max(1, workers or os.cpu_count() or 1),
                   "windows": [w.__dict__ for w in windows], "venue_settings": venue_cfg.model_dump(),
                   "gates": gates_cfg.model_dump()}  # fmt: skip
    direction = "minimize" if rank_by in LOWER_IS_BETTER else "maximize"
    return open_study(mlruns or default_root(), name or study_name(search_spec), search_spec, direction, resume)


def _track_sweep(parent, folder, study, summary, g, spans, load, venue_cfg, gates_cfg, latency, children, fingerprint,
                 report, progress) -> int:  # fmt: skip
    """Log the sweep's files and best metrics on its parent run; re-run the best sets in full as child runs
    (returns how many).

    The best sets are re-run over each covered span of the selection (`load(span)` gives its tape),
    one child run per set and span: a backtest never spans a gap, so its memory follows the data,
    not the calendar time between captures (decision 022).
    """
    from grinder.sim.backtest import decision_inputs, prepare, row_blocks, run_backtest
    from grinder.sim.run_folder import summarize, write_run

    for name in ("results.parquet", "ranking.parquet", "summary.json", "report.html"):
        if (folder / name).exists():
            parent.log_artifact(folder / name)
    best = study.ranking.iloc[0]
    key = summary["rank_key"]
    parent.log_metrics({"sets": summary["sets"], "backtests": summary["backtests"], f"best_{key}": best[key],
                        "seconds": summary["seconds"],
                        "sets_within_rules": summary.get("sets_within_rules")})  # fmt: skip
    chosen = study.ranking
    if summary.get("rules_ok"):  # --rules-ok: only sets that kept the quantitative rules become child runs
        chosen = chosen[chosen["rules_ok"] == True]  # noqa: E712
    strat = g.strategy
    runs = 0
    run_ids: dict[str, str] = {}  # run folder name -> MLflow run id, linked from the sweep's report
    with progress.stage(f"re-running the best {children} sets over the {len(spans)} covered span(s) of the selection"):
        for k, span in enumerate(spans, start=1):
            tape = load(span)
            replay = prepare(tape, venue_cfg)  # one replay and block summary serve every child run of the span
            blocks = row_blocks(tape, replay)
            decisions = decision_inputs(tape, replay, venue_cfg, span.start_ns,
                                        needed_levels(strat.depth_levels, gates_cfg))  # fmt: skip
            selection = {**summary["selection"], "start_ns": span.start_ns, "end_ns": span.end_ns}
            for rank, set_no in enumerate(chosen["set"].head(children).tolist(), start=1):
                params = g.sets[set_no]
                res = run_backtest(tape, strat, strat.vector(params), venue_cfg, start_ns=span.start_ns, replay=replay,
                                   gates=gates_cfg, latency=latency, blocks=blocks, decisions=decisions)  # fmt: skip
                meta = {"strategy": strat.name, "params": params.model_dump(), "venue": venue_cfg.model_dump(),
                        "gates": gates_cfg.model_dump(), "selection": selection, "events": len(tape),
                        "seconds": {"load": 0.0, "prepare": 0.0, "backtest": 0.0},
                        "sweep": {"sweep_id": summary["sweep_id"], "set": set_no, "rank": rank}}  # fmt: skip
                name = f"rank{rank}-set{set_no}" + (f"-span{k}" if len(spans) > 1 else "")
                run_dir = write_run(folder / "best", name, res, summarize(res, meta, strat.modes), report=report)
                del res
                run_ids[run_dir.name] = parent.log_child(
                    run_dir,
                    fingerprint=fingerprint,
                    tags={
                        "sweep_rank": str(rank),
                        "sweep_set": str(set_no),
                        "sweep_span": str(k),
                        "sweep_rules_ok": str(_set_rules_ok(study.ranking, set_no)),
                    },
                )
                runs += 1
            del tape, replay, blocks, decisions
    if runs and (folder / "report.html").exists():
        from grinder.report.sweep_html import link_best_runs

        link_best_runs(folder, run_ids)  # the report was written before these runs existed
        parent.log_artifact(folder / "report.html")
    return runs


def _sets_within_rules(ranking) -> int | None:
    """How many swept sets kept Binance's quantitative rules in every window (None: not tracked)."""
    if "rules_ok" not in ranking or ranking["rules_ok"].isna().any():
        return None
    return int(ranking["rules_ok"].astype(bool).sum())


def _set_rules_ok(ranking, set_no: int):
    """Whether a swept set kept Binance's quantitative rules in every window (None: not tracked)."""
    if "rules_ok" not in ranking:
        return None
    return ranking.loc[ranking["set"] == set_no, "rules_ok"].iloc[0]
