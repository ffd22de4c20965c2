"""`grinder portfolio` (top K of candidates under a drawdown allocator; grinder.portfolio.job does the work)
and `grinder ui` (the MLflow UI on the tracking store)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from grinder.cli.common import DEFAULT_ROOT, ConsoleProgress, MlrunsOpt, RootOpt, StrategyArg, clean_errors, out
from grinder.errors import TrackingError
from grinder.settings import pairs


@clean_errors
def portfolio(
    strategy: StrategyArg,
    symbols: Annotated[str, typer.Option(help="Candidates, comma-separated: SYMBOL (on --venue) or VENUE/SYMBOL.")],
    k: Annotated[int, typer.Option(help="How many symbols to trade (top K of the prefilter).")] = 3,
    lookback_s: Annotated[
        float | None, typer.Option(help="Prefilter look-back from the start, seconds (default: a third of the span).")
    ] = None,
    budget: Annotated[float, typer.Option(help="Total risk budget, settle currency, split equally.")] = 10_000.0,
    max_drawdown: Annotated[
        float, typer.Option(help="A pick's budget reaches the floor at this drawdown / budget.")
    ] = 0.2,
    floor: Annotated[float, typer.Option(help="Smallest budget fraction a pick keeps.")] = 0.0,
    param: Annotated[list[str] | None, typer.Option("--param", "-p", help="Strategy parameter NAME=VALUE.")] = None,
    config: Annotated[
        Path | None,
        typer.Option(help="TOML: \\[strategy], \\[symbols.SYMBOL] overrides, \\[venue], \\[gates], \\[prefilter]."),
    ] = None,
    venue: Annotated[str, typer.Option(help="Venue.")] = "binance-usdm",
    start: Annotated[str | None, typer.Option(help="Start (default: when every candidate has data).")] = None,
    end: Annotated[str | None, typer.Option(help="End, exclusive (default: the last common moment).")] = None,
    report: Annotated[bool, typer.Option("--report/--no-report", help="Write report.html.")] = True,
    out_dir: Annotated[Path, typer.Option("--out", help="Folder for portfolio folders.")] = Path("portfolios"),
    root: RootOpt = DEFAULT_ROOT,
) -> None:
    """Rank candidates on a look-back, trade the top K after it, split a budget by drawdown; write a folder."""
    from grinder.portfolio.job import portfolio_job

    done = portfolio_job(strategy, symbols.split(","), k=k, lookback_s=lookback_s, budget=budget,
                         max_drawdown=max_drawdown, floor=floor, params=pairs(param, "--param"), config=config,
                         venue=venue, start=start, end=end, report=report, out_dir=out_dir, root=root,
                         progress=ConsoleProgress())  # fmt: skip
    summary, folder = done.summary, done.folder
    out.print(f"portfolio of {summary['strategy']}: chose {', '.join(summary['picks'])} of "
              f"{len(summary['candidates'])} in {summary['seconds']:.2f} s")  # fmt: skip
    for sym, why in summary["excluded"].items():
        out.print(f"  excluded {sym}: {why}")
    out.print(
        f"  equity {summary['equity']:.4f} {summary['settle']} (full size {summary['full_size_equity']:.4f}), "
        f"max drawdown {summary['max_drawdown']:.4f}"
    )
    out.print(f"  portfolio id {summary['portfolio_id']}")
    out.print(f"  portfolio folder: {folder}")
    if report:
        out.print(f"  report: {folder / 'report.html'}")


@clean_errors
def ui(
    mlruns: MlrunsOpt = None,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.")] = 5000,
) -> None:
    """Start the MLflow UI on the tracking store (one worker); Ctrl-C or SIGTERM stops it and its server."""
    from grinder.track.mlflow_store import default_root, serve_ui

    root = mlruns or default_root()
    if not (root / "mlflow.db").exists():
        raise TrackingError("no MLflow store here yet (run a backtest or a sweep first)", str(root))
    out.print(f"MLflow UI on http://{host}:{port} (store {root}); Ctrl-C stops it")
    code = serve_ui(root, host, port)
    if code:
        raise typer.Exit(code)
