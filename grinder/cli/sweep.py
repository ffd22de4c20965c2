"""`grinder sweep`: a parameter sweep (grinder.sweep.job does the work) and the export of one of its sets."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from grinder.cli.common import (
    DEFAULT_ROOT,
    ConsoleProgress,
    MlrunsOpt,
    RootOpt,
    StrategyArg,
    TrackOpt,
    clean_errors,
    default_command,
    out,
)
from grinder.settings import pairs

app = typer.Typer(cls=default_command("run"), no_args_is_help=True,
                  help="Sweep a strategy (grinder sweep STRATEGY ...), or export a set of a sweep.")  # fmt: skip


@app.command("run")
@clean_errors
def sweep(
    strategy: StrategyArg,
    grid: Annotated[
        list[str] | None,
        typer.Option("--grid", "-g", help="Swept parameter NAME=SPEC: 1,2,3 | 0.5:2:0.5 | lin:lo:hi:n"),
    ] = None,
    param: Annotated[list[str] | None, typer.Option("--param", "-p", help="Fixed parameter NAME=VALUE.")] = None,
    config: Annotated[
        Path | None, typer.Option(help="TOML with \\[strategy], \\[sweep], \\[venue], \\[gates].")
    ] = None,
    symbol: Annotated[str, typer.Option(help="Symbol.")] = "BTCUSDT",
    venue: Annotated[str, typer.Option(help="Venue.")] = "binance-usdm",
    start: Annotated[str | None, typer.Option(help="Start (ISO 8601 UTC or ns).")] = None,
    end: Annotated[str | None, typer.Option(help="End, exclusive.")] = None,
    train: Annotated[
        float | None, typer.Option(help="In-sample fraction of the span; the rest is out of sample.")
    ] = None,
    walk_forward: Annotated[int, typer.Option(help="Walk-forward folds (rolling in/out-of-sample windows).")] = 0,
    fold_by: Annotated[
        str, typer.Option(help="Cut windows by covered time ('time') or by event count ('events').")
    ] = "time",
    min_events: Annotated[
        int, typer.Option(help="Windows with fewer events are not run or ranked (listed in summary.json).")
    ] = 1_000,
    memory_limit: Annotated[
        str | None,
        typer.Option(
            help="Memory the sweep may use, e.g. 24G (default: $GRINDER_MEMORY_LIMIT, else "
            "MemAvailable); a sweep estimated above it is refused."
        ),  # fmt: skip
    ] = None,
    rank_by: Annotated[
        str, typer.Option(help="Metric to rank sets by (out of sample when there is a test window).")
    ] = "equity",
    rules_ok: Annotated[
        bool,
        typer.Option(
            "--rules-ok/--no-rules-ok",
            help="Rank first the sets that kept Binance's quantitative rules in every window; mark the others.",
        ),
    ] = False,
    workers: Annotated[int | None, typer.Option(help="Backtests run at once (default: CPU count).")] = None,
    cluster: Annotated[
        str | None, typer.Option(help="Dask scheduler tcp://host:port; workers must see the same lake path.")
    ] = None,
    children: Annotated[int, typer.Option(help="Best sets re-run over the whole selection as MLflow child runs.")] = 3,
    search: Annotated[
        str | None, typer.Option(help="Search instead of the full grid: 'tpe' (Optuna), in-sample objective.")
    ] = None,
    trials: Annotated[int, typer.Option(help="With --search: parameter sets to try.")] = 64,
    seed: Annotated[int, typer.Option(help="With --search: sampler seed (same seed, same trials).")] = 0,
    study_name: Annotated[
        str | None,
        typer.Option(
            "--study",
            help="With --search: the study's name in <mlruns>/optuna.db (default: made from the search's settings).",
        ),  # fmt: skip
    ] = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="With --search: continue the stored study; --trials is its total.")
    ] = False,
    child_reports: Annotated[
        bool, typer.Option("--child-reports/--no-child-reports", help="Write report.html in each MLflow child run.")
    ] = False,
    track: TrackOpt = True,
    mlruns: MlrunsOpt = None,
    report: Annotated[bool, typer.Option("--report/--no-report", help="Write report.html.")] = True,
    out_dir: Annotated[Path, typer.Option("--out", help="Folder for sweep folders.")] = Path("sweeps"),
    cache: Annotated[
        bool,
        typer.Option("--cache/--no-cache", help="Keep each window's tape and replay on disk in the lake for reuse."),
    ] = False,
    root: RootOpt = DEFAULT_ROOT,
) -> None:
    """Backtest every parameter set of a grid over shared tapes; rank in- vs out-of-sample; write a sweep folder."""
    from grinder.sweep.job import sweep_job
    from grinder.sweep.memory import peak_rss_bytes

    params, axes = pairs(param, "--param"), pairs(grid, "--grid", "SPEC")
    done = sweep_job(strategy, grid=axes, params=params, config=config, symbol=symbol, venue=venue, start=start,
                     end=end, train=train, walk_forward=walk_forward, fold_by=fold_by, min_events=min_events,
                     memory_limit=memory_limit, rank_by=rank_by, rules_ok=rules_ok, workers=workers, cluster=cluster,
                     children=children, search=search, trials=trials, seed=seed, study_name=study_name, resume=resume,
                     child_reports=child_reports, track=track, mlruns=mlruns, report=report, out_dir=out_dir,
                     cache=cache, root=root, progress=ConsoleProgress())  # fmt: skip
    summary, ranking = done.summary, done.study.ranking
    key, names = summary["rank_key"], summary["axes"]
    out.print(f"sweep of {summary['strategy']} on {venue}/{symbol}: {summary['sets']:,} sets x "
              f"{len(summary['windows'])} window(s) in {summary['seconds']:.2f} s")  # fmt: skip
    twin = f"{rank_by}_in" if key.endswith("_out") else None  # the same metric in sample, never another one
    for r in ranking.head(5).to_dict(orient="records"):
        vals = "  ".join(f"{a}={r[a]}" for a in names)
        other = f"  {twin} {r[twin]:.6g}" if twin else ""
        breach = "  (breaks the quantitative rules)" if r.get("rules_ok") is False else ""
        out.print(f"  #{r['rank']} set {r['set']}: {vals}  {key} {r[key]:.6g}{other}{breach}")
    out.print(f"  sweep id {summary['sweep_id']}")
    out.print(f"  sweep folder: {done.folder}")
    if report:
        out.print(f"  report: {done.folder / 'report.html'}")
    if done.mlflow_run_id is not None:
        out.print(f"  mlflow run: {done.mlflow_run_id} ({done.child_runs} child runs; "
                  f"tracking {done.tracking_s:.2f} s)")  # fmt: skip
    out.print(f"  peak RSS {peak_rss_bytes() / 2**20:,.0f} MB (estimated {done.estimate_bytes / 2**20:,.0f} MB)")


@app.command("export")
@clean_errors
def sweep_export(
    folder: Annotated[Path, typer.Argument(help="A sweep folder (sweeps/<stamp>-<strategy>-<symbol>-<id>).")],
    rank: Annotated[int | None, typer.Option(help="Export the set at this rank (default 1).")] = None,
    set_no: Annotated[int | None, typer.Option("--set", help="Export the set with this number instead.")] = None,
    out_dir: Annotated[Path | None, typer.Option("--out", help="Folder for the two files (default: FOLDER).")] = None,
    mode: Annotated[str, typer.Option(help="The live config's mode: paper, testnet or live.")] = "paper",
    api_url: Annotated[str | None, typer.Option(help="The live config's venue URL (default: Binance).")] = None,
    state_dir: Annotated[Path | None, typer.Option(help="The live config's state folder.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace existing files.")] = False,
) -> None:
    """Write one set of a sweep as a `grinder backtest --config` TOML and a `grinder live --config` TOML."""
    from grinder.sweep.export import export_set

    chosen, back, live_path = export_set(folder, out_dir, rank, set_no, force, mode, api_url, state_dir)
    out.print(f"set {chosen.set} (rank {chosen.rank}) of {chosen.strategy}: "
              + "  ".join(f"{k}={v}" for k, v in chosen.params.items()))  # fmt: skip
    out.print(f"  backtest config: {back}")
    out.print(f"  live config: {live_path}")
