"""`grinder` command line: the imperative shell around the data layer (and, later, backtests)."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import sys
import time
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table
from typer.core import TyperGroup

from grinder.data.errors import DataError
from grinder.sweep.lifecycle import Interrupted, signals_raise
from grinder.sweep.lifecycle import check as check_signals

app = typer.Typer(
    help="Grinder: grid trading research on crypto perpetual futures.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(help="Market data: ingest, list, query, generate, verify.", no_args_is_help=True)
app.add_typer(data_app, name="data")
venue_app = typer.Typer(help="The local Binance USDT-M venue emulator (for testing the live adapter).",
                        no_args_is_help=True)  # fmt: skip
app.add_typer(venue_app, name="venue")


class _SweepGroup(TyperGroup):
    """`grinder sweep STRATEGY ...` runs a sweep (the `run` command); `grinder sweep export FOLDER` exports a set."""

    def parse_args(self, ctx, args):
        if args and args[0] not in self.commands and args[0] not in ctx.help_option_names:
            args = ["run", *args]  # the sweep itself needs no command name, as before `export` existed
        return super().parse_args(ctx, args)


sweep_app = typer.Typer(cls=_SweepGroup, no_args_is_help=True,
                        help="Sweep a strategy (grinder sweep STRATEGY ...), or export a set of a sweep.")  # fmt: skip
app.add_typer(sweep_app, name="sweep")

# Piped output is not wrapped at 80 columns: tables stay one row per line for grep and diff.
out = Console(width=None if sys.stdout.isatty() else 200)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 200)

DEFAULT_ROOT = Path(os.environ.get("GRINDER_LAKE", "data/lake"))
RootOpt = Annotated[Path, typer.Option("--root", help="Lake folder (env GRINDER_LAKE).")]
TrackOpt = Annotated[bool, typer.Option("--track/--no-track", help="Record the run in MLflow (docs/tracking.md).")]
MlrunsOpt = Annotated[
    Path | None, typer.Option("--mlruns", help="MLflow store folder (default: $GRINDER_MLRUNS or ./mlruns).")
]


def _clean_errors(fn):
    """Turn expected failures into one line on stderr and exit code 2, never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except DataError as e:
            err.print(f"[red]error:[/red] {e}", markup=True, highlight=False, soft_wrap=True)
            # 2 unless the error says otherwise (live.venue_watch.VenueDown: 3, a session the venue ended).
            raise typer.Exit(getattr(e, "exit_code", 2)) from None
        except ValidationError as e:
            first = e.errors()[0]
            loc = ".".join(str(x) for x in first["loc"])
            err.print(f"[red]error:[/red] invalid {loc}: {first['msg']}", highlight=False, soft_wrap=True)
        except Interrupted as e:  # a signal stopped the command (grinder.sweep.lifecycle)
            err.print(f"[red]error:[/red] {e}", markup=True, highlight=False, soft_wrap=True)
            raise typer.Exit(e.exit_code) from None
        raise typer.Exit(2)

    return wrapper


class Format(StrEnum):
    binance = "binance"
    tardis = "tardis"
    hftbacktest = "hftbacktest"


def _guess_symbol(paths: list[Path]) -> str | None:
    m = re.match(r"([a-z0-9]+?)[_-]", paths[0].name.lower())
    return m.group(1).upper() if m else None


@data_app.command("ingest")
@_clean_errors
def ingest(
    fmt: Annotated[Format, typer.Argument(help="Input format.")],
    paths: Annotated[list[Path], typer.Argument(help="Files, in order (later files continue earlier ones).")],
    root: RootOpt = DEFAULT_ROOT,
    venue: Annotated[str, typer.Option(help="Venue name in the lake.")] = "binance-usdm",
    symbol: Annotated[str | None, typer.Option(help="Symbol (default: from the file name).")] = None,
    tick_size: Annotated[float | None, typer.Option(help="Override the tick size (quote per base).")] = None,
    lot_size: Annotated[float | None, typer.Option(help="Override the lot size (base).")] = None,
    min_notional: Annotated[float | None, typer.Option(help="Override the min notional (quote).")] = None,
    contract: Annotated[str | None, typer.Option(help="linear or inverse.")] = None,
    maker_fee: Annotated[float | None, typer.Option(help="Maker fee as a fraction (0.0002 = 2 bp).")] = None,
    taker_fee: Annotated[float | None, typer.Option(help="Taker fee as a fraction.")] = None,
    compression: Annotated[str, typer.Option(help="Parquet compression: lz4 (fast), zstd (small).")] = "lz4",
) -> None:
    """Parse vendor files, validate every row and write them to the lake atomically."""
    from grinder.data.ingest import parse
    from grinder.data.instruments import resolve_instrument
    from grinder.data.lake import Lake

    for p in paths:
        if not p.is_file():
            raise DataError("no such file", str(p))
    symbol = symbol or _guess_symbol(paths)
    if not symbol:
        raise DataError("cannot tell the symbol from the file name: pass --symbol")
    inst = resolve_instrument(
        venue,
        symbol.upper(),
        dict(
            tick_size=tick_size,
            lot_size=lot_size,
            min_notional=min_notional,
            contract=contract,
            maker_fee=maker_fee,
            taker_fee=taker_fee,
        ),
    )
    lake = Lake(root, compression)
    t0 = time.perf_counter()
    with err.status(f"ingesting {len(paths)} file(s) as {fmt.value} {inst.venue}/{inst.symbol}"):
        batch = parse(fmt.value, paths, inst)
        manifest = lake.write(batch, paths)
    dt = time.perf_counter() - t0
    rep = manifest["report"]
    total = sum(rep["rows"].values())
    out.print(
        f"ingested {inst.venue}/{inst.symbol} into {root}: {total:,} rows in {dt:.2f} s "
        f"({total / dt:,.0f} rows/s), group {manifest['group']}"
    )
    for t, n in rep["rows"].items():
        out.print(f"  {t:8s} {n:>12,}")
    for reason, n in rep["skipped"].items():
        out.print(f"  skipped {n:,}: {reason}")
    for g in rep["gaps"]:
        out.print(f"  [yellow]gap[/yellow] {g}")
    for note in rep["notes"]:
        out.print(f"  note: {note}")


def _fmt_ns(ns: int) -> str:
    import datetime as dt

    return dt.datetime.fromtimestamp(ns / 1e9, dt.UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


@data_app.command("ls")
@_clean_errors
def ls(root: RootOpt = DEFAULT_ROOT) -> None:
    """Venues, symbols, dates, row counts and time spans in the lake."""
    from grinder.data.catalog import Catalog

    rows = Catalog(root).summary()
    if not rows:
        raise DataError(f"the lake at {root} holds no data (ingest some with `grinder data ingest`)")
    t = Table(title=f"lake {root}")
    for c in ("venue", "symbol", "date", "table", "rows", "first (UTC)", "last (UTC)", "span s"):
        t.add_column(c, justify="right" if c in ("rows", "span s") else "left")
    for r in rows:
        t.add_row(
            r["venue"],
            r["symbol"],
            r["date"],
            r["tbl"],
            f"{r['rows']:,}",
            _fmt_ns(r["first_ns"]),
            _fmt_ns(r["last_ns"]),
            f"{(r['last_ns'] - r['first_ns']) / 1e9:,.1f}",
        )
    out.print(t)


class OutFormat(StrEnum):
    table = "table"
    csv = "csv"
    json = "json"


@data_app.command("query")
@_clean_errors
def query(
    sql: Annotated[str, typer.Argument(help="SQL over views book, trades, bbo, funding, instruments.")],
    root: RootOpt = DEFAULT_ROOT,
    fmt: Annotated[OutFormat, typer.Option("--format", help="Output format.")] = OutFormat.table,
    limit: Annotated[int, typer.Option(help="Rows to print in table format.", min=1)] = 50,
) -> None:
    """Run SQL with DuckDB over the Parquet lake in place."""
    from grinder.data.catalog import Catalog

    cat = Catalog(root)  # kept open: its lock must outlast the reading of `rel`
    rel = cat.query(sql)
    if rel is None:
        return
    if fmt is OutFormat.table:
        rows = rel.limit(limit + 1).fetchall()
        t = Table()
        for c in rel.columns:
            t.add_column(c)
        for r in rows[:limit]:
            t.add_row(*("" if v is None else str(v) for v in r))
        out.print(t)
        if len(rows) > limit:
            out.print(f"(first {limit} rows; use --limit or --format csv for more)")
    else:
        df = rel.df()
        sys.stdout.write(df.to_csv(index=False) if fmt is OutFormat.csv else df.to_json(orient="records", lines=True))


@data_app.command("synth")
@_clean_errors
def synth(
    events: Annotated[int, typer.Option(help="Book rows + trades to generate.", min=1000)] = 1_000_000,
    seed: Annotated[int, typer.Option(help="Random seed (same seed, same data).", min=0)] = 0,
    symbol: Annotated[str, typer.Option(help="Symbol name.")] = "SYNTHUSDT",
    venue: Annotated[str, typer.Option(help="Venue name.")] = "synthetic",
    root: RootOpt = DEFAULT_ROOT,
) -> None:
    """Generate seeded synthetic L2 + trades with regimes (quiet, trend, toxic) into the lake."""
    from grinder.data.lake import Lake
    from grinder.data.synth import synth_batch

    t0 = time.perf_counter()
    with err.status(f"generating {events:,} events"):
        batch = synth_batch(events, seed=seed, symbol=symbol, venue=venue)
        manifest = Lake(root).write(batch, [], key=f"synth:{events}:{seed}")
    total = sum(manifest["report"]["rows"].values())
    out.print(f"generated {venue}/{symbol} seed {seed}: {total:,} rows in {time.perf_counter() - t0:.2f} s into {root}")


def _parse_time(s: str | None) -> int | None:
    if s is None:
        return None
    if s.isdigit():
        return int(s)
    import numpy as np

    try:
        return int(np.datetime64(s.replace("Z", ""), "ns").astype("int64"))
    except ValueError:
        raise DataError(f"cannot read time {s!r}: use ISO 8601 (2024-08-08T23:55) or nanoseconds") from None


@data_app.command("check")
@_clean_errors
def check(
    symbol: Annotated[str, typer.Option(help="Symbol.")],
    venue: Annotated[str, typer.Option(help="Venue.")] = "binance-usdm",
    start: Annotated[str | None, typer.Option(help="Start (ISO 8601 UTC or ns).")] = None,
    end: Annotated[str | None, typer.Option(help="End, exclusive.")] = None,
    root: RootOpt = DEFAULT_ROOT,
) -> None:
    """Rebuild the book from the lake and verify it: never crossed, equal to the venue's best bid/ask.

    Also lists the coverage gaps the window touches and the spans in which the book is not synced
    (before a snapshot, after a reset or a gap: a backtest neither decides nor quotes there).
    """
    from grinder.book.check import replay_check
    from grinder.data.coverage import lake_spans
    from grinder.data.tape import load_tape

    lo, hi = _parse_time(start), _parse_time(end)
    t0 = time.perf_counter()
    tape = load_tape(root, venue, symbol, lo, hi)
    t1 = time.perf_counter()
    r = replay_check(tape, lo)
    t2 = time.perf_counter()
    out.print(f"{venue}/{symbol}: {len(tape):,} events loaded in {t1 - t0:.2f} s, replayed in {t2 - t1:.2f} s")
    out.print(f"  book messages applied: {r.batches:,}; crossed: {r.crossed}; max levels held: {r.max_levels:,}")
    out.print(f"  best bid/ask equal to the venue's: {r.bbo_matched:,} of {r.bbo_checked:,}")
    if r.crossed or r.bbo_matched != r.bbo_checked:
        raise DataError(f"book check failed: {r}")
    spans = lake_spans(root, venue, symbol)
    gaps = [
        (a.end_ns, b.start_ns)
        for a, b in zip(spans, spans[1:], strict=False)
        if (lo is None or b.start_ns > lo) and (hi is None or a.end_ns < hi)
    ]
    for g0, g1 in gaps:
        out.print(f"  coverage gap: {_when(g0)} -> {_when(g1)} ({_span(g1 - g0)}): no data")
    for u in r.unsynced:
        until = _when(u.to_ns) if u.resynced else f"{_when(u.to_ns)} (end of data, never resynced)"
        out.print(f"  book unsynced: {_when(u.from_ns)} -> {until} ({_span(u.duration_ns)}): {u.why}")
    unsynced_ns = sum(u.duration_ns for u in r.unsynced)
    # Data without a start begins before its first snapshot (trades come first): that lead-in is
    # reported but is not a flaw; a requested start on an unsynced book is.
    lead_in = lo is None and r.unsynced and r.unsynced[0].from_ns == int(tape.ts_exch[0]) and r.unsynced[0].resynced
    flaws = r.unsynced[1:] if lead_in else r.unsynced
    clean = not gaps and not flaws
    out.print("  clean: the book is synced from its first snapshot on" if clean else
              f"  not clean: {len(gaps)} coverage gap(s), book unsynced for {_span(unsynced_ns)}")  # fmt: skip
    out.print(
        json.dumps(
            {
                "events": len(tape),
                "crossed": r.crossed,
                "bbo_checked": r.bbo_checked,
                "bbo_matched": r.bbo_matched,
                "coverage_gaps": len(gaps),
                "unsynced_spans": len(r.unsynced),
                "unsynced_ns": unsynced_ns,
                "clean": clean,
            }
        )
    )


def _when(ns: int) -> str:
    """An exchange time (ns) as ISO 8601 UTC to the millisecond."""
    import numpy as np

    return str(np.datetime64(int(ns), "ns").astype("datetime64[ms]"))


def _span(ns: int) -> str:
    """A duration (ns) in the largest unit that keeps it readable."""
    s = ns / 1e9
    return f"{s:.3f} s" if s < 3600 else f"{s / 3600:.1f} h" if s < 3 * 86400 else f"{s / 86400:.1f} days"


def _settings(config: Path | None, tables: tuple[str, ...], param: list[str] | None, venue_over: dict) -> dict:
    """Settings from a TOML file's tables, then -p NAME=VALUE and venue options on top (None = not given)."""
    import math
    import tomllib

    cfg: dict = {t: {} for t in tables}
    if config is not None:
        if not config.is_file():
            raise DataError("no such file", str(config))
        try:
            loaded = tomllib.loads(config.read_bytes().decode("utf-8"))
        except UnicodeDecodeError:
            # A gzip or other binary file: TOML is UTF-8 text.
            raise DataError("not a TOML text file (not UTF-8: binary or compressed?)", str(config)) from None
        except tomllib.TOMLDecodeError as e:
            raise DataError(f"not valid TOML: {e}", str(config)) from None
        unknown = sorted(set(loaded) - set(tables))
        if unknown:
            expected = ", ".join(f"[{t}]" for t in tables)
            raise DataError(f"unknown table(s) {', '.join(unknown)}; expected {expected}", str(config))
        for k, v in loaded.items():
            if not isinstance(v, dict):
                raise DataError(f"[{k}] must be a table", str(config))
            cfg[k] = dict(v)
    for item in param or []:
        name, eq, value = item.partition("=")
        if not eq or not name:
            raise DataError(f"--param {item!r}: expected NAME=VALUE")
        cfg["strategy"][name.strip()] = value.strip()
    ms = 1_000_000
    for key, value in venue_over.items():
        if value is None:
            continue
        if key.endswith("_ns"):
            if not (math.isfinite(value) and abs(value * ms) < 2**63):
                option = "--" + key[:-3].replace("_", "-") + "-ms"
                raise DataError(f"{option}: {value} is not a finite number of ms within int64 ns")
            value = int(round(value * ms))
        elif isinstance(value, Path):
            value = str(value)
        cfg["venue"][key] = value
    return cfg


def _validated(table: str, model, values: dict):
    """A settings model built from a table's values, with errors naming the table and field."""
    try:
        return model(**values)
    except ValidationError as e:
        first = e.errors()[0]
        raise DataError(f"{table}: {'.'.join(str(x) for x in first['loc'])}: {first['msg']}") from None


def _venue_and_gates(cfg: dict):
    """VenueConfig and GateConfig from settings, with errors naming the table and field."""
    from grinder.core.gates import GateConfig
    from grinder.sim.backtest import VenueConfig

    return _validated("venue", VenueConfig, cfg["venue"]), _validated("gates", GateConfig, cfg["gates"])


@app.command("backtest")
@_clean_errors
def backtest(
    strategy: Annotated[str, typer.Argument(help="Strategy name (a module in strategies/ defining STRATEGY).")],
    symbol: Annotated[str, typer.Option(help="Symbol.")] = "BTCUSDT",
    venue: Annotated[str, typer.Option(help="Venue.")] = "binance-usdm",
    start: Annotated[str | None, typer.Option(help="Start (ISO 8601 UTC or ns).")] = None,
    end: Annotated[str | None, typer.Option(help="End, exclusive.")] = None,
    param: Annotated[list[str] | None, typer.Option("--param", "-p", help="Strategy parameter NAME=VALUE.")] = None,
    config: Annotated[Path | None, typer.Option(help="TOML file with [strategy], [venue], [gates] tables.")] = None,
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
    track: TrackOpt = True,
    mlruns: MlrunsOpt = None,
    out_dir: Annotated[Path, typer.Option("--out", help="Folder for run folders.")] = Path("runs"),
    root: RootOpt = DEFAULT_ROOT,
) -> None:
    """Backtest a strategy on a lake selection; writes a run folder (summary, fills, steps, HTML report)."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from grinder.core.strategy import compile_kernel, get
    from grinder.data.tape import load_tape
    from grinder.sim.backtest import LatencySeries, prepare, run_backtest
    from grinder.sim.replay_cache import cache_root
    from grinder.sim.run_folder import summarize, write_run

    strat = get(strategy)
    if capital is not None and not capital > 0:
        raise DataError(f"--capital must be positive, got {capital}")
    venue_over = {
        "entry_latency_ns": entry_latency_ms,
        "response_latency_ns": response_latency_ms,
        "step_ns": step_ms,
        "queue": queue,
        "partial_fills": partial_fills,
        "latency_file": latency_file,
    }
    cfg = _settings(config, ("strategy", "venue", "gates"), param, venue_over)
    params = strat.validate(cfg["strategy"])
    venue_cfg, gates_cfg = _venue_and_gates(cfg)
    latency = LatencySeries.for_venue(venue_cfg)  # a bad latency file fails before any data is read
    t0 = time.perf_counter()
    tape = load_tape(root, venue, symbol, _parse_time(start), _parse_time(end), cache=cache)
    t1 = time.perf_counter()
    with err.status(f"compiling {strat.name} and preparing {len(tape):,} events"):
        kernel = compile_kernel(strat.kernel)
        replay = prepare(tape, venue_cfg, cache_root(root) if cache else None)
    t2 = time.perf_counter()
    with Progress(
        TextColumn(f"backtesting {strat.name} on {venue}/{symbol}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TimeRemainingColumn(),
        console=err,
        transient=True,
        disable=not err.is_terminal,
    ) as bar:
        task = bar.add_task("run", total=max(1, len(tape)))
        res = run_backtest(
            tape,
            kernel,
            strat.vector(params),
            venue_cfg,
            strat.max_targets,
            start_ns=_parse_time(start) or 0,
            replay=replay,
            gates=gates_cfg,
            latency=latency,
            progress=(lambda done, total: bar.update(task, completed=done)) if err.is_terminal else None,
        )
    t3 = time.perf_counter()
    meta = {
        "strategy": strat.name,
        "params": params.model_dump(),
        "venue": venue_cfg.model_dump(),
        "gates": gates_cfg.model_dump(),
        "selection": {"root": str(root), "venue": venue, "symbol": symbol, "start": start, "end": end},
        "events": len(tape),
        "seconds": {"load": round(t1 - t0, 3), "prepare": round(t2 - t1, 3), "backtest": round(t3 - t2, 3)},
    }
    if capital is not None:
        meta["capital"] = capital
    summary = summarize(res, meta, strat.modes)
    with err.status("writing the run folder and report"):
        run_dir = write_run(out_dir, f"{strat.name}-{symbol}", res, summary, report=report)
    print_summary(summary, run_dir, report)
    if track:
        from grinder.track.mlflow_store import default_root, log_backtest
        from grinder.track.provenance import data_fingerprint

        with err.status("recording the run in MLflow"):
            run_id = log_backtest(run_dir, fingerprint=data_fingerprint(tape), root=mlruns or default_root())
        out.print(f"  mlflow run: {run_id}")


@sweep_app.command("run")
@_clean_errors
def sweep(
    strategy: Annotated[str, typer.Argument(help="Strategy name (a module in strategies/ defining STRATEGY).")],
    grid: Annotated[
        list[str] | None, typer.Option("--grid", "-g", help="Swept parameter NAME=SPEC: 1,2,3 | 0.5:2:0.5 | lin:a:b:n")
    ] = None,
    param: Annotated[list[str] | None, typer.Option("--param", "-p", help="Fixed parameter NAME=VALUE.")] = None,
    config: Annotated[Path | None, typer.Option(help="TOML with [strategy], [sweep], [venue], [gates].")] = None,
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

    strat = get(strategy)
    if rank_by not in RANKABLE:
        raise DataError(f"unknown ranking metric {rank_by!r}; choose from {', '.join(RANKABLE)}")
    if workers is not None and workers < 1:
        raise DataError(f"--workers must be at least 1, got {workers}")
    cfg = _settings(config, ("strategy", "sweep", "venue", "gates"), param, {})
    for item in grid or []:
        name, eq, value = item.partition("=")
        if not eq or not name.strip():
            raise DataError(f"--grid {item!r}: expected NAME=SPEC")
        cfg["sweep"][name.strip()] = value.strip()
    if search is not None and search != "tpe":
        raise DataError(f"unknown search {search!r}; available: tpe")
    if search is None and (study_name is not None or resume):
        raise DataError("--study and --resume go with --search tpe (a grid keeps no study)")
    g = expand(strat, cfg["sweep"], cfg["strategy"]) if search is None else None
    venue_cfg, gates_cfg = _venue_and_gates(cfg)
    latency = LatencySeries.for_venue(venue_cfg)  # a bad latency file fails before any data is read
    lo, hi = _parse_time(start), _parse_time(end)
    if children < 0:
        raise DataError(f"--children must be >= 0, got {children}")
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
    with contextlib.ExitStack() as stack:
        # SIGTERM and SIGINT unwind the sweep (its MLflow run ends FAILED, nothing half-written stays).
        stack.enter_context(signals_raise())
        client = None
        if cluster is not None:
            from grinder.sweep.cluster import connect

            with err.status(f"connecting to {cluster}"):
                client = connect(cluster)
            stack.callback(client.close)
            root = root.resolve()  # workers resolve paths on their own machine
        t0 = time.perf_counter()
        with err.status("reading the data span"):
            whole = load_tape(root, venue, symbol, lo, hi, cache=cache)
        # Windows are cut within the spans that hold data, never across a gap (decision 022).
        spans = clip_spans(lake_spans(root, venue, symbol), lo, hi)
        times = whole.ts_exch[whole.start :]
        folds = coverage_folds(spans, times, train, walk_forward, fold_by, min_events)
        windows = folds.windows
        for w, n in folds.refused:
            err.print(f"warning: window {w.name} holds {n:,} events (< --min-events {min_events:,}): not run or ranked",
                      highlight=False, soft_wrap=True)  # fmt: skip
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
            with err.status(f"searching {trials} trials (TPE, in sample)"):
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
                err.print(f"warning: sweep run {run_id} was left RUNNING by a process that is gone: marked FAILED",
                          highlight=False, soft_wrap=True)  # fmt: skip
            # From here on a failure marks the sweep's MLflow run FAILED (never left RUNNING).
            tags = {"data_fingerprint": fingerprint, **process_tags()}
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
        with err.status(f"sweeping {len(g):,} parameter sets x {len(windows)} window(s)") as status:
            study = run_study(sel, g, windows, venue_cfg, gates_cfg, latency, rank_by, workers, loader,
                              progress=lambda w, d, n: status.update(f"window {w}: {d:,}/{n:,} sets"),
                              client=client, rules_ok=rules_ok)  # fmt: skip
        seconds = round(time.perf_counter() - t0, 3)
        from grinder.sweep.decide import decision_summary, run_baseline

        with err.status("running the baseline (the static grid's defaults) on the same windows"):
            base = run_baseline(sel, windows, venue_cfg, gates_cfg, latency, rank_by, workers, loader)
        summary = {
            "strategy": strat.name,
            "axes": list(g.axes),
            "grid": {k: v for k, v in g.axes.items()},
            "fixed": cfg["strategy"],
            "venue": venue_cfg.model_dump(),
            "gates": gates_cfg.model_dump(),
            "selection": {"root": str(root), "venue": venue, "symbol": symbol, "start": start, "end": end},
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
        check_signals()  # no sweep folder after a signal whose exception was dropped
        with err.status("writing the sweep folder and report"):
            folder = write_sweep(out_dir, f"{strat.name}-{symbol}", study, summary, report=report)
        key = summary["rank_key"]
        out.print(
            f"sweep of {strat.name} on {venue}/{symbol}: {len(g):,} sets x {len(windows)} window(s) in {seconds:.2f} s"
        )
        twin = f"{rank_by}_in" if key.endswith("_out") else None  # the same metric in sample, never another one
        for r in study.ranking.head(5).to_dict(orient="records"):
            vals = "  ".join(f"{a}={r[a]}" for a in g.axes)
            other = f"  {twin} {r[twin]:.6g}" if twin else ""
            breach = "  (breaks the quantitative rules)" if r.get("rules_ok") is False else ""
            out.print(f"  #{r['rank']} set {r['set']}: {vals}  {key} {r[key]:.6g}{other}{breach}")
        if summary["warning"]:
            err.print(f"warning: {summary['warning']}", highlight=False, soft_wrap=True)
        out.print(f"  sweep id {summary['sweep_id']}")
        out.print(f"  sweep folder: {folder}")
        if report:
            out.print(f"  report: {folder / 'report.html'}")
        if parent is not None:
            t1 = time.perf_counter()
            _track_sweep(parent, folder, study, summary, g, spans,
                         lambda s: load_tape(root, venue, symbol, s.start_ns, s.end_ns, cache=cache), venue_cfg,
                         gates_cfg, latency, children, fingerprint, report and child_reports)  # fmt: skip
            t_track += time.perf_counter() - t1
            out.print(f"  mlflow run: {parent.run_id} ({min(children, len(g)) * len(spans)} child runs; "
                      f"tracking {t_track:.2f} s)")  # fmt: skip
        out.print(f"  peak RSS {peak_rss_bytes() / 2**20:,.0f} MB (estimated {est.total / 2**20:,.0f} MB)")


@sweep_app.command("export")
@_clean_errors
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
                 report) -> None:  # fmt: skip
    """Log the sweep's files and best metrics on its parent run; re-run the best sets in full as child runs.

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
    with err.status(f"re-running the best {children} sets over the {len(spans)} covered span(s) of the selection"):
        for k, span in enumerate(spans, start=1):
            tape = load(span)
            replay = prepare(tape, venue_cfg)  # one replay and block summary serve every child run of the span
            blocks = row_blocks(tape, replay)
            decisions = decision_inputs(tape, replay, venue_cfg, span.start_ns)
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
                parent.log_child(
                    run_dir,
                    fingerprint=fingerprint,
                    tags={
                        "sweep_rank": str(rank),
                        "sweep_set": str(set_no),
                        "sweep_span": str(k),
                        "sweep_rules_ok": str(_set_rules_ok(study.ranking, set_no)),
                    },
                )
            del tape, replay, blocks, decisions


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


@app.command("portfolio")
@_clean_errors
def portfolio(
    strategy: Annotated[str, typer.Argument(help="Strategy name (a module in strategies/ defining STRATEGY).")],
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
        Path | None, typer.Option(help="TOML: [strategy], [symbols.SYMBOL] overrides, [venue], [gates], [prefilter].")
    ] = None,
    venue: Annotated[str, typer.Option(help="Venue.")] = "binance-usdm",
    start: Annotated[str | None, typer.Option(help="Start (default: when every candidate has data).")] = None,
    end: Annotated[str | None, typer.Option(help="End, exclusive (default: the last common moment).")] = None,
    report: Annotated[bool, typer.Option("--report/--no-report", help="Write report.html.")] = True,
    out_dir: Annotated[Path, typer.Option("--out", help="Folder for portfolio folders.")] = Path("portfolios"),
    root: RootOpt = DEFAULT_ROOT,
) -> None:
    """Rank candidates on a look-back, trade the top K after it, split a budget by drawdown; write a folder."""
    import numpy as np

    from grinder.core.strategy import get
    from grinder.data.catalog import Catalog
    from grinder.portfolio.allocator import DrawdownRule
    from grinder.portfolio.folder import portfolio_id, write_portfolio
    from grinder.portfolio.prefilter import PrefilterRules
    from grinder.portfolio.study import run_portfolio

    strat = get(strategy)
    cands = [x.strip() for x in symbols.split(",") if x.strip()]
    if not cands:
        raise DataError("--symbols: no candidate symbols")
    if k < 1:
        raise DataError(f"--k must be at least 1, got {k}")
    cfg = _settings(config, ("strategy", "symbols", "venue", "gates", "prefilter"), param, {})
    unknown = sorted(set(cfg["symbols"]) - set(cands))  # [symbols."VENUE/SYMBOL"] for other venues
    if unknown:
        raise DataError(f"[symbols] names symbol(s) that are not candidates: {', '.join(unknown)}")
    params = {}
    for sym in cands:
        override = cfg["symbols"].get(sym, {})
        if not isinstance(override, dict):
            raise DataError(f"[symbols.{sym}] must be a table")
        try:
            params[sym] = strat.validate({**cfg["strategy"], **override})
        except DataError as e:
            raise DataError(f"{sym}: {e}") from None
    venue_cfg, gates_cfg = _venue_and_gates(cfg)
    rules = _validated("prefilter", PrefilterRules, cfg["prefilter"])
    rule = _validated("allocator", DrawdownRule, {"max_drawdown": max_drawdown, "floor": floor})
    spans = {}
    for r in Catalog(root).summary():
        name = r["symbol"] if r["venue"] == venue else f"{r['venue']}/{r['symbol']}"
        if name in cands and r["tbl"] in ("book", "trades"):
            lo_, hi_ = spans.get(name, (r["first_ns"], r["last_ns"]))
            spans[name] = (min(lo_, r["first_ns"]), max(hi_, r["last_ns"]))
    missing = [c for c in cands if c not in spans]
    if missing:
        raise DataError(f"no data for {', '.join(missing)} on {venue} in {root}")
    lo = _parse_time(start) or max(a for a, _ in spans.values())
    hi = _parse_time(end) or min(b for _, b in spans.values()) + 1
    if hi <= lo:
        raise DataError("the candidates have no time in common (or --end is not after --start)")
    look = int((lookback_s * 1e9) if lookback_s is not None else (hi - lo) // 3)
    t0 = time.perf_counter()
    with err.status(f"ranking {len(cands)} candidates and backtesting the top {k}"):
        run = run_portfolio(root, venue, cands, strat, params.__getitem__, lo, hi, look, k, budget, rule, venue_cfg,
                            gates_cfg, rules)  # fmt: skip
    seconds = round(time.perf_counter() - t0, 3)
    first = next(iter(run.results.values()))
    summary = {
        "strategy": strat.name,
        "venue_name": venue,
        "candidates": cands,
        "picks": list(run.selection.symbols),
        "excluded": dict(run.selection.excluded),
        "params": {s: params[s].model_dump() for s in run.selection.symbols},
        "venue": venue_cfg.model_dump(),
        "gates": gates_cfg.model_dump(),
        "prefilter": rules.model_dump(),
        "rule": rule.model_dump(),
        "budget": budget,
        "settle": first.settle,
        "start": str(np.datetime64(lo, "ns")),
        "trade_start": str(np.datetime64(run.trade_start_ns, "ns")),
        "end": str(np.datetime64(hi, "ns")),
        "lookback_s": look / 1e9,
        "equity": float(run.portfolio.equity[-1]),
        "max_drawdown": run.portfolio.max_drawdown,
        "full_size_equity": float(run.full_equity[-1].sum()),
        "digests": {s: r.digest for s, r in run.results.items()},
        "portfolio_id": portfolio_id(run),
        "seconds": seconds,
    }
    with err.status("writing the portfolio folder and report"):
        folder = write_portfolio(out_dir, f"{strat.name}-k{k}", run, summary, report=report)
    out.print(f"portfolio of {strat.name}: chose {', '.join(summary['picks'])} of {len(cands)} in {seconds:.2f} s")
    for sym, why in run.selection.excluded:
        out.print(f"  excluded {sym}: {why}")
    out.print(
        f"  equity {summary['equity']:.4f} {summary['settle']} (full size {summary['full_size_equity']:.4f}), "
        f"max drawdown {summary['max_drawdown']:.4f}"
    )
    out.print(f"  portfolio id {summary['portfolio_id']}")
    out.print(f"  portfolio folder: {folder}")
    if report:
        out.print(f"  report: {folder / 'report.html'}")


@app.command("ui")
@_clean_errors
def ui(
    mlruns: MlrunsOpt = None,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.")] = 5000,
) -> None:
    """Start the MLflow UI on the tracking store (one worker); Ctrl-C stops it."""
    from grinder.track.mlflow_store import default_root, serve_ui

    root = mlruns or default_root()
    if not (root / "mlflow.db").exists():
        raise DataError("no MLflow store here yet (run a backtest or a sweep first)", str(root))
    out.print(f"MLflow UI on http://{host}:{port} (store {root}); Ctrl-C stops it")
    code = serve_ui(root, host, port)
    if code:
        raise typer.Exit(code)


def print_summary(summary: dict, run_dir: Path, report: bool = True) -> None:
    """One screen of results: what ran, what it did, where the files are."""
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
    out.print(f"  digest {summary['digest']}")
    gaps = summary.get("coverage_gaps") or []
    held = [g for g in gaps if g["position"] != 0]
    if gaps:
        days = ", ".join(f"{g['seconds'] / 86_400:.1f} d" for g in gaps)
        carried = (f"; a position was held across {len(held)} of them, which moved equity by "
                   f"{sum(g['equity_change'] for g in held):+.4f} {cur} with no data to trade on: backtest each "
                   "span alone (--start/--end, `grinder data check`)") if held else ""  # fmt: skip
        err.print(f"warning: the run jumped {len(gaps)} coverage gap(s) ({days}){carried}", highlight=False,
                  soft_wrap=True)  # fmt: skip
    rules = summary.get("quant_rules") or {}
    if rules.get("rules_ok") is False:
        m = rules["metrics"]
        worst = "; ".join(f"{k} {m[k]['max']:.4g} (limit {m[k]['threshold']:.4g})" for k in rules["breaches"])
        gated = " ([gates] quant_rules = true keeps new orders within them)" if not c.get("blocked_quant_rules") else ""
        err.print(f"warning: this run breaks Binance's quantitative trading rules: {worst}{gated}", highlight=False,
                  markup=False, soft_wrap=True)  # fmt: skip
    out.print(f"  run folder: {run_dir}")
    if report:
        out.print(f"  report: {run_dir / 'report.html'}")


def _fault_options(fn):
    """Give a command a `--fault-NAME` option for every knob of `grinder.venue.faults.Faults` (its **faults).

    The knobs are declared once, in `Faults`; the command receives them as fault_NAME keywords.
    """
    import inspect

    from grinder.venue.faults import Faults

    sig = inspect.signature(fn)
    params = [p for p in sig.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
    for name, (typ, default, text) in Faults.knobs().items():
        flag = "--fault-" + name.replace("_", "-")
        opt = typer.Option(flag, help=text) if typ is bool else typer.Option(flag, help=text, min=0)
        params.append(inspect.Parameter(f"fault_{name}", inspect.Parameter.KEYWORD_ONLY, default=default,
                                        annotation=Annotated[typ, opt]))  # fmt: skip
    fn.__signature__ = sig.replace(parameters=params)
    return fn


@venue_app.command("serve")
@_clean_errors
@_fault_options
def venue_serve(
    symbol: Annotated[str, typer.Option(help="Symbol.")] = "BTCUSDT",
    venue: Annotated[str, typer.Option(help="Venue of the data in the lake.")] = "binance-usdm",
    start: Annotated[str | None, typer.Option(help="Start (ISO 8601 UTC or ns).")] = None,
    end: Annotated[str | None, typer.Option(help="End, exclusive.")] = None,
    speed: Annotated[float, typer.Option(help="Replay speed, x real time.")] = 1.0,
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1 (0: any free port).", min=0, max=65535)] = 0,
    balance: Annotated[float, typer.Option(help="Starting wallet, USDT.")] = 10_000.0,
    loop: Annotated[
        bool, typer.Option("--loop", help="At the end of the data, replay it again from its first book (time goes on).")
    ] = False,
    root: RootOpt = DEFAULT_ROOT,
    **faults,
) -> None:
    """Replay a selection as a Binance USDT-M venue on 127.0.0.1 until SIGTERM / Ctrl-C.

    At the end of the data it stays up (the book frozen, orders still taken and cancellable) or,
    with --loop, replays it again. The API key and secret clients must sign with come from
    GRINDER_VENUE_API_KEY and GRINDER_VENUE_SECRET (never from the command line). The --fault-*
    knobs can also be set while it runs: POST /admin/faults a JSON object (loopback only).
    """
    import asyncio
    import signal

    from grinder.data.tape import load_tape
    from grinder.venue.auth import Credentials
    from grinder.venue.server import VenueServer

    key, secret = os.environ.get("GRINDER_VENUE_API_KEY", ""), os.environ.get("GRINDER_VENUE_SECRET", "")
    if not key or not secret:
        raise DataError("set GRINDER_VENUE_API_KEY and GRINDER_VENUE_SECRET: the credentials clients must sign with")
    if speed <= 0:
        raise DataError(f"--speed must be > 0, got {speed}")
    tape = load_tape(root, venue, symbol, _parse_time(start), _parse_time(end))
    if len(tape) == 0:
        raise DataError(f"no events for {venue}/{symbol} in {root} in that span")
    srv = VenueServer(tape, Credentials(key, secret), speed=speed, balance=balance)
    try:
        srv.faults.set({k.removeprefix("fault_"): v for k, v in faults.items()})
    except ValueError as e:
        raise DataError(f"--fault-*: {e}") from None
    if loop and srv.loop_row() is None:
        raise DataError(f"--loop: {venue}/{symbol} in that span has no book snapshot to start again from")

    def at_end(s: VenueServer) -> None:
        when = _when(s.now_ns)
        if loop:
            out.print(f"end of the data at {when}: replaying it again from its first book (loop {s.loops + 1})")
        else:
            out.print(f"end of the data at {when}: the venue stays up with the book frozen; orders are still "
                      f"taken and cancellable (SIGTERM / Ctrl-C stops it)")  # fmt: skip

    async def serve() -> None:
        srv.preroll()
        try:
            bound = await srv.start(port)
        except OSError as e:
            why = os.strerror(e.errno) if e.errno else str(e)  # asyncio's own text repeats the address
            raise DataError(f"--port {port}: cannot listen on 127.0.0.1:{port}: {why}") from None
        stop = asyncio.Event()
        ev_loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            ev_loop.add_signal_handler(sig, stop.set)
        on = [k for k, v in srv.faults.values().items() if v]
        out.print(f"venue {venue}/{symbol} on http://127.0.0.1:{bound} (ws://127.0.0.1:{bound}/ws), "
                  f"{len(tape):,} events at {speed:g}x{', looping' if loop else ''}"
                  f"{'; faults: ' + ', '.join(on) if on else ''}")  # fmt: skip
        replay = asyncio.create_task(srv.run_tape(loop, at_end))
        waiter = asyncio.create_task(stop.wait())
        await asyncio.wait({replay, waiter}, return_when=asyncio.FIRST_COMPLETED)
        if replay.done() and replay.exception() is not None:
            waiter.cancel()
            await srv.stop()
            raise replay.exception()  # a replay that broke is not a venue that stays up
        await waiter  # the data ended: up until stopped
        out.print("stopping")
        replay.cancel()
        await srv.stop()

    asyncio.run(serve())


class _LiveGroup(TyperGroup):
    """`grinder live --config X` runs the adapter (the `run` command); `grinder live kill --config X` stops it."""

    def parse_args(self, ctx, args):
        if args and args[0] not in self.commands and args[0] not in ctx.help_option_names:
            args = ["run", *args]  # running needs no command name, as before `kill` existed
        return super().parse_args(ctx, args)


live_app = typer.Typer(cls=_LiveGroup, no_args_is_help=True,
                       help="Run a strategy live (grinder live --config X); stop it (grinder live kill).")  # fmt: skip
app.add_typer(live_app, name="live")


@live_app.command("run")
@_clean_errors
def live(
    config: Annotated[Path, typer.Option(help="TOML: strategy, symbol, mode, api_url, state_dir, ... and [params].")],
) -> None:
    """Run a strategy live on one symbol until SIGTERM / Ctrl-C, then cancel its orders and exit.

    Credentials come from GRINDER_API_KEY / GRINDER_API_SECRET (or *_FILE); every action is
    appended to <state_dir>/audit.jsonl. Exit 4 (one line naming them) when orders of ours may be
    left on the venue after stop_timeout_s.
    """
    import asyncio
    import signal

    import grinder
    from live.adapter import LiveAdapter
    from live.audit import AuditLog
    from live.client import credentials, make_client
    from live.config import load_config
    from live.kill import write_kill
    from live.shutdown import EXIT_ORDERS_LEFT

    cfg = load_config(config)

    def early_kill(*_) -> None:  # SIGUSR1 before the adapter's own handler: the kill file, not death
        with contextlib.suppress(OSError):
            cfg.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            write_kill(cfg.state_dir, "SIGUSR1")

    signal.signal(signal.SIGUSR1, early_kill)  # the default action would end the process un-killed
    if grinder.early_kill:  # one came while the command was loading (grinder/__init__.py held it)
        early_kill()
    key, secret = ("", "") if cfg.mode == "paper" else credentials()  # paper sends no signed request
    ex = make_client(cfg, key, secret)

    async def go() -> None:
        cfg.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)  # the state is the operator's only
        # Fsynced by the adapter's housekeeping between decisions, not on a timer of its own.
        audit = AuditLog(cfg.state_dir / "audit.jsonl", secrets=(key, secret), max_delay_s=None)
        try:
            adapter = LiveAdapter(cfg, ex, audit)
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, adapter.stop)
            loop.add_signal_handler(signal.SIGUSR1, adapter.request_kill)  # the kill switch (live.kill)
            out.print(f"{cfg.strategy} on {cfg.symbol} ({cfg.mode}); audit {cfg.state_dir / 'audit.jsonl'}")
            # Never exit 0 when orders of ours may still rest (live.shutdown): one line says which.
            try:
                await adapter.run()
            except DataError as e:  # the session ended (venue down, ...): its line says what was left too
                left = adapter.stop_outcome
                if left is None or left.clean:
                    raise
                merged = DataError(f"{e}; {left.message()}")
                merged.exit_code = getattr(e, "exit_code", 2)
                raise merged from None
            except Exception:  # a crash (exit 1, its traceback): what was left is said first all the same
                if adapter.stop_outcome is not None and not adapter.stop_outcome.clean:
                    err.print(f"error: {adapter.stop_outcome.message()}", highlight=False, markup=False,
                              soft_wrap=True)  # fmt: skip
                raise
            left = adapter.stop_outcome
            pnl = "unknown" if adapter.pnl is None else f"{adapter.pnl:+.4f} {adapter.market['settle']}"
            out.print(f"stopped: {adapter.decisions} decisions, position {adapter.position:g}, PnL {pnl}")
            if left is not None and not left.clean:
                err.print(f"error: {left.message()}", highlight=False, markup=False, soft_wrap=True)
                raise typer.Exit(EXIT_ORDERS_LEFT)
        finally:
            audit.close()
            await ex.close()

    asyncio.run(go())


@live_app.command("kill")
@_clean_errors
def live_kill(
    config: Annotated[Path, typer.Option(help="The running adapter's TOML (its state_dir is what is used).")],
    clear: Annotated[bool, typer.Option("--clear", help="Remove the kill file: the next start trades again.")] = False,
) -> None:
    """Kill switch: the adapter cancels everything, flattens if configured, and stays stopped until --clear.

    Writes <state_dir>/KILL, then sends SIGUSR1 to the adapter running on that folder (if any).
    """
    from live import kill
    from live.config import load_config

    cfg = load_config(config)
    if clear:
        had = kill.clear_kill(cfg.state_dir)
        out.print(f"cleared {kill.kill_path(cfg.state_dir)}" if had else f"no kill file in {cfg.state_dir}")
        return
    path, pid = kill.kill(cfg.state_dir)
    who = f"adapter pid {pid} signalled (SIGUSR1)" if pid is not None else "no adapter running on the folder"
    out.print(f"killed: {path} written; {who}; a start refuses until `grinder live kill --clear`")


@app.command("record")
@_clean_errors
def record(
    symbol: Annotated[str, typer.Option(help="Symbol as the venue names it (BTCUSDT).")],
    api_url: Annotated[
        str | None, typer.Option(help="Base URL of a Binance-compatible venue (default: Binance USDT-M).")
    ] = None,
    seconds: Annotated[float | None, typer.Option(help="Stop after N seconds (default: on SIGTERM).")] = None,
    out_dir: Annotated[Path, typer.Option("--out", help="Folder for the raw capture (.gz).")] = Path("data/raw"),
    lake: Annotated[Path, typer.Option("--lake", help="Lake to ingest into (env GRINDER_LAKE).")] = DEFAULT_ROOT,
    venue: Annotated[str, typer.Option(help="Venue name in the lake.")] = "binance-usdm",
    ingest_after: Annotated[bool, typer.Option("--ingest/--no-ingest", help="Ingest the recording when done.")] = True,
) -> None:
    """Record a venue's depth diffs, trades and snapshots as a raw capture, then ingest it (docs/data/recording.md).

    Public data: no API key. SIGTERM / Ctrl-C finish the recording cleanly.
    """
    import asyncio
    import math
    import signal

    from live.client import GrinderBinance, client_options, market_instrument
    from live.recorder import Recorder, ingest_recording

    if seconds is not None and not (math.isfinite(seconds) and seconds > 0):
        raise DataError(f"--seconds must be a positive number, got {seconds}")
    if api_url is not None and not re.fullmatch(r"https?://[^/\s]+/?", api_url):
        raise DataError(f"--api-url {api_url!r}: expected http(s)://host[:port]")
    # Checked before connecting: a folder that cannot be written would lose the whole recording.
    for what, folder in [("--out", out_dir)] + ([("--lake", lake)] if ingest_after else []):
        parent = next((p for p in (folder, *folder.parents) if p.exists()), Path("."))
        if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
            raise DataError(f"{what} {folder}: not a folder that can be created or written ({parent} is not)")
    symbol = symbol.upper()
    from grinder.data.instruments import check_name

    check_name("symbol", symbol)  # it names the capture file and the lake folders: one path part each
    check_name("venue", venue)
    ex = GrinderBinance(client_options(api_url))
    rec = Recorder(ex, symbol, out_dir)

    async def go():
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, rec.stop)
        try:
            host = api_url or "Binance USDT-M"
            until = f"for {seconds:g} s" if seconds is not None else "until SIGTERM / Ctrl-C"
            out.print(f"recording {symbol} from {host} into {out_dir} {until}")
            return await rec.run(seconds)
        finally:
            await ex.close()

    r = asyncio.run(go())
    out.print(f"recorded {r.lines:,} messages in {r.seconds:.1f} s: {r.depth:,} depth diffs, {r.trades:,} trades, "
              f"{r.snapshots:,} snapshots, {r.reconnects} reconnects")  # fmt: skip
    out.print(f"  raw capture: {r.path}")
    if r.min_lag_ns is not None and abs(r.min_lag_ns) > 60e9:
        # An emulator replays old exchange times: the backtester's clock estimate cannot bridge years.
        side = "ahead of" if r.min_lag_ns > 0 else "behind"
        out.print(f"  note: the local clock is {abs(r.min_lag_ns) / 1e9:,.0f} s {side} the venue's exchange times "
                  f"(a replay?); backtest with [venue] local_clock_offset_ns = {-r.min_lag_ns}")  # fmt: skip
    if not ingest_after:
        return
    inst = market_instrument(r.market, venue)
    t0 = time.perf_counter()
    try:
        with err.status(f"ingesting {r.path.name} as {inst.venue}/{inst.symbol}"):
            manifest = ingest_recording(r.path, lake, inst)
    except DataError as e:
        raise DataError(f"{e} (the recording is kept; ingest it later with `grinder data ingest binance`)") from None
    rep = manifest["report"]
    out.print(f"ingested into {lake}: {sum(rep['rows'].values()):,} rows in {time.perf_counter() - t0:.2f} s, "
              f"group {manifest['group']}")  # fmt: skip
    for t, n in rep["rows"].items():
        out.print(f"  {t:8s} {n:>12,}")
    for reason, n in rep["skipped"].items():
        out.print(f"  skipped {n:,}: {reason}")
    out.print(f"  gaps: {len(rep['gaps'])}")
    for g in rep["gaps"]:
        out.print(f"  [yellow]gap[/yellow] {g}")
    for note in rep["notes"]:
        out.print(f"  note: {note}")


def main() -> None:  # pragma: no cover
    """Entry point for `python -m grinder`."""
    app()
