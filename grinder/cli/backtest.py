"""`grinder backtest`: one strategy on one lake selection (grinder.sim.job does the work), and its summary."""

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
    ms_to_ns,
    out,
)
from grinder.settings import pairs


@clean_errors
def backtest(
    strategy: StrategyArg,
    symbol: Annotated[str, typer.Option(help="Symbol.")] = "BTCUSDT",
    venue: Annotated[str, typer.Option(help="Venue.")] = "binance-usdm",
    start: Annotated[str | None, typer.Option(help="Start (ISO 8601 UTC or ns).")] = None,
    end: Annotated[str | None, typer.Option(help="End, exclusive.")] = None,
    param: Annotated[list[str] | None, typer.Option("--param", "-p", help="Strategy parameter NAME=VALUE.")] = None,
    config: Annotated[
        Path | None, typer.Option(help="TOML file with \\[strategy], \\[venue], \\[gates] tables.")
    ] = None,
    entry_latency_ms: Annotated[float | None, typer.Option(help="Order entry latency, ms.")] = None,
    response_latency_ms: Annotated[float | None, typer.Option(help="Order response latency, ms.")] = None,
    latency_file: Annotated[Path | None, typer.Option(help="Latency series file (docs/data/latency.md).")] = None,
    step_ms: Annotated[float | None, typer.Option(help="Decision interval, ms.")] = None,
    queue: Annotated[str | None, typer.Option(help="Queue model: risk_averse or power.")] = None,
    partial_fills: Annotated[
        bool | None, typer.Option("--partial-fills/--no-partial-fills", help="Partial fills on or off.")
    ] = None,
    report: Annotated[bool, typer.Option("--report/--no-report", help="Write report.html.")] = True,
    capital: Annotated[
        float | None, typer.Option(help="Account capital (settle currency) for the report's return statistics.")
    ] = None,
    cache: Annotated[
        bool, typer.Option("--cache/--no-cache", help="Keep the tape and its replay on disk in the lake for reuse.")
    ] = False,
    chunked: Annotated[
        bool,
        typer.Option(
            "--chunked/--whole",
            help="Read and run the lake an hour at a time: memory follows the hour's row groups, not the "
            "selection; the same result (docs/backtest.md).",
        ),
    ] = False,
    track: TrackOpt = True,
    mlruns: MlrunsOpt = None,
    model: Annotated[
        str | None,
        typer.Option(help="Registered model driving a strategy that reads signals: models:/NAME@ALIAS or /VERSION."),
    ] = None,
    out_dir: Annotated[Path, typer.Option("--out", help="Folder for run folders.")] = Path("runs"),
    root: RootOpt = DEFAULT_ROOT,
) -> None:
    """Backtest a strategy on a lake selection; writes a run folder (summary, fills, steps, HTML report)."""
    from grinder.sim.job import backtest_job

    venue_settings = {
        "entry_latency_ns": ms_to_ns("--entry-latency-ms", entry_latency_ms),
        "response_latency_ns": ms_to_ns("--response-latency-ms", response_latency_ms),
        "step_ns": ms_to_ns("--step-ms", step_ms),
        "queue": queue,
        "partial_fills": partial_fills,
        "latency_file": latency_file,
    }
    done = backtest_job(strategy, symbol=symbol, venue=venue, start=start, end=end, params=pairs(param, "--param"),
                        config=config, venue_settings=venue_settings, report=report, capital=capital, cache=cache,
                        track=track, mlruns=mlruns, out_dir=out_dir, root=root, progress=ConsoleProgress(),
                        model=model, chunked=chunked)  # fmt: skip
    print_summary(done.summary, done.run_dir, report)
    if done.mlflow_run_id is not None:
        out.print(f"  mlflow run: {done.mlflow_run_id}")


def print_summary(summary: dict, run_dir: Path, report: bool = True) -> None:
    """One screen of results: what ran, what it did, where the files are (warnings went to stderr as it ran)."""
    cur = summary.get("settle", "")
    c = summary["counters"]
    blocked = sum(v for k, v in c.items() if k.startswith("blocked_"))
    out.print(
        f"{summary['strategy']} on {summary['selection']['venue']}/{summary['selection']['symbol']}: "
        f"{summary['events']:,} events in {summary['seconds']['backtest']:.2f} s "
        f"(+ {summary['seconds']['prepare']:.2f} s compile/prepare)"
    )
    out.print(
        f"  fills {summary['fills']:,}  placed {c['placed']:,}  cancelled {c['cancelled']:,}  "
        f"rejected {c['rejected']:,}  expired {c['expired']:,}  blocked {blocked:,}"
    )
    out.print(
        f"  position {summary['position']:.6g} @ {summary['avg_entry']:.6g}  realized {summary['realized']:.4f}  "
        f"unrealized {summary['unrealized']:.4f}  fees {summary['fees']:.4f}  funding {summary['funding_paid']:.4f}"
    )
    out.print(f"  equity {summary['equity']:.4f} {cur}")
    if summary.get("mode_share") and len(summary["mode_share"]) > 1:
        out.print("  modes " + "  ".join(f"{k} {v:.0%}" for k, v in summary["mode_share"].items()))
    if "model" in summary:
        out.print(f"  model {summary['model']['uri']} (features {summary['model']['feature_set_version'][:12]})")
    out.print(f"  digest {summary['digest']}")
    out.print(f"  run folder: {run_dir}")
    if report:
        out.print(f"  report: {run_dir / 'report.html'}")
