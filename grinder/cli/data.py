"""`grinder data`: ingest vendor files into the lake, list it, query it with SQL, generate data, check a book;
list and refresh the instrument snapshots."""

from __future__ import annotations

import json
import re
import sys
import time
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from grinder.cli.common import DEFAULT_ROOT, ConsoleProgress, RootOpt, clean_errors, err, out, span, when
from grinder.errors import ConfigError, DataError
from grinder.settings import parse_time

app = typer.Typer(help="Market data: ingest, list, query, generate, verify; instrument rules.", no_args_is_help=True)
InstrumentsOpt = Annotated[
    Path | None,
    typer.Option("--instruments", help="Folder of refreshed instrument snapshots (env GRINDER_INSTRUMENTS)."),
]


class Format(StrEnum):
    binance = "binance"
    tardis = "tardis"
    hftbacktest = "hftbacktest"


# Tardis names its files <exchange>_<data type>_<YYYY-MM-DD>_<SYMBOL>.csv.gz; its Binance exchanges are ours.
_TARDIS_NAME = re.compile(r"([a-z0-9-]+)_[A-Za-z0-9_]+?_\d{4}-\d{2}-\d{2}_([A-Za-z0-9_.-]+?)\.csv(?:\.gz)?")
_TARDIS_VENUES = {"binance-futures": "binance-usdm", "binance-delivery": "binance-coinm"}
# A COIN-M contract at the start of a file name: btcusd_perp_20240808.gz, BTCUSD_PERP-trades-2024-08-08.csv.
_COINM_NAME = re.compile(r"([a-z0-9]+usd)_(perp|\d{6})(?=[_.-]|$)")


def _guess_symbol(paths: list[Path], venue: str) -> str | None:
    """The symbol a file name names, for `venue`; a ConfigError if the name says another venue."""
    name = paths[0].name
    m = _TARDIS_NAME.fullmatch(name)
    if m:
        said = _TARDIS_VENUES.get(m.group(1))
        if said is not None and venue in _TARDIS_VENUES.values() and said != venue:
            raise ConfigError(f"{name} is a Tardis {m.group(1)} file, a {said} contract: pass --venue {said}")
        return m.group(2).upper()
    m = _COINM_NAME.match(name.lower())
    if m:
        return f"{m.group(1)}_{m.group(2)}".upper()
    m = re.match(r"([a-z0-9]+?)[_-]", name.lower())
    if not m:
        return None
    symbol = m.group(1).upper()
    # COIN-M captures named after the pair (btcusd_20240808.gz) hold its perpetual.
    return symbol + "_PERP" if venue == "binance-coinm" and re.fullmatch(r"[A-Z0-9]+USD", symbol) else symbol


def _line(text: str) -> None:
    """One line on stdout as written: never wrapped (grep), no rich markup (paths and sources may hold brackets)."""
    out.print(text, soft_wrap=True, markup=False, highlight=False)


@app.command("ingest")
@clean_errors
def ingest(
    fmt: Annotated[Format, typer.Argument(help="Input format.")],
    paths: Annotated[list[Path], typer.Argument(help="Files, in order (later files continue earlier ones).")],
    root: RootOpt = DEFAULT_ROOT,
    venue: Annotated[str, typer.Option(help="Venue name in the lake.")] = "binance-usdm",
    symbol: Annotated[str | None, typer.Option(help="Symbol (default: from the file name).")] = None,
    tick_size: Annotated[float | None, typer.Option(help="Override the tick size (quote per base).")] = None,
    lot_size: Annotated[float | None, typer.Option(help="Override the lot size (base).")] = None,
    min_notional: Annotated[float | None, typer.Option(help="Override the min notional (quote).")] = None,
    contract: Annotated[str | None, typer.Option(help="linear or inverse (a Binance venue fixes it).")] = None,
    contract_size: Annotated[
        float | None, typer.Option(help="Quote per contract of an inverse contract no snapshot lists (COIN-M).")
    ] = None,
    maker_fee: Annotated[float | None, typer.Option(help="Maker fee as a fraction (0.0002 = 2 bp).")] = None,
    taker_fee: Annotated[float | None, typer.Option(help="Taker fee as a fraction.")] = None,
    fee_tier: Annotated[int, typer.Option(help="VIP tier of the venue's fee schedule.", min=0)] = 0,
    instruments: InstrumentsOpt = None,
    compression: Annotated[str, typer.Option(help="Parquet compression: lz4 (fast), zstd (small).")] = "lz4",
) -> None:
    """Parse vendor files, validate every row and write them to the lake atomically.

    The rules come from the newest instrument snapshot listing the symbol (`grinder data instruments`).
    """
    from grinder.data.ingest import parse
    from grinder.data.instruments import VENUES, find, resolve_instrument
    from grinder.data.lake import Lake

    for p in paths:
        if not p.is_file():
            raise DataError("no such file", str(p))
    symbol = symbol or _guess_symbol(paths, venue)
    if not symbol:
        raise ConfigError("cannot tell the symbol from the file name: pass --symbol")
    overrides = dict(
        tick_size=tick_size,
        lot_size=lot_size,
        min_notional=min_notional,
        contract=contract,
        contract_size=contract_size,
        maker_fee=maker_fee,
        taker_fee=taker_fee,
    )
    inst = resolve_instrument(venue, symbol.upper(), overrides, fee_tier=fee_tier, directory=instruments)
    snap = find(inst.venue, inst.symbol, instruments)
    given = [k for k, v in overrides.items() if v is not None]
    lake = Lake(root, compression)
    t0 = time.perf_counter()
    # The files are parsed as one capture (later files continue earlier ones) while `lake.write` writes
    # them: the bar counts the bytes of the files read (compressed, for gzip), so its total is known up
    # front; it ends once the write has committed.
    size = sum(p.stat().st_size for p in paths)
    with ConsoleProgress().count(f"ingesting {len(paths)} file(s) as {fmt.value} {inst.venue}/{inst.symbol}",
                                 size) as update:  # fmt: skip
        if update is not None:
            update(0, size)
        batch = parse(fmt.value, paths, inst, progress=update)
        manifest = lake.write(batch, paths)
        if update is not None:
            update(size, size)
    dt = time.perf_counter() - t0
    rep = manifest["report"]
    total = sum(rep["rows"].values())
    out.print(
        f"ingested {inst.venue}/{inst.symbol} into {root}: {total:,} rows in {dt:.2f} s "
        f"({total / dt:,.0f} rows/s), group {manifest['group']}"
    )
    rules = f"the {snap.label()}" if snap else "the command line"
    if snap is None and inst.venue in VENUES and not {"maker_fee", "taker_fee"} <= set(given):
        rules += f" and the {inst.venue} fee schedule at VIP {fee_tier}"
    if snap and given:
        rules += " and --" + ", --".join(k.replace("_", "-") for k in given)
    _line(f"  rules: {inst.contract}, tick {inst.tick_size:g}, lot {inst.lot_size:g}"
          f"{f', contract size {inst.contract_size:g}' if inst.contract == 'inverse' else ''}, "
          f"settled in {inst.settle or '?'}, fees {inst.maker_fee:g}/{inst.taker_fee:g} from {rules}")  # fmt: skip
    for t, n in rep["rows"].items():
        out.print(f"  {t:8s} {n:>12,}")
    for reason, n in rep["skipped"].items():
        out.print(f"  skipped {n:,}: {reason}")
    for g in rep["gaps"]:
        out.print(f"  [yellow]gap[/yellow] {g}")
    for note in rep["notes"]:
        out.print(f"  note: {note}")


@app.command("instruments")
@clean_errors
def instruments_cmd(
    venue: Annotated[str | None, typer.Option(help="binance-usdm or binance-coinm (default: both).")] = None,
    symbol: Annotated[str | None, typer.Option(help="A symbol, or a pattern (BTC*, *USD_PERP).")] = None,
    refresh: Annotated[
        bool, typer.Option("--refresh", help="Fetch the venue's exchangeInfo through ccxt; write a new dated snapshot.")
    ] = False,
    url: Annotated[
        str | None, typer.Option(help="With --refresh: a Binance-compatible server (the emulator) instead of Binance.")
    ] = None,
    instruments: InstrumentsOpt = None,
) -> None:
    """List the contracts Grinder has rules for, or refresh them from the venue.

    Rules come from dated exchangeInfo snapshots: the bundled one and those --refresh writes to
    --instruments ($GRINDER_INSTRUMENTS, else data/instruments). The newest listing a symbol wins.
    """
    from fnmatch import fnmatchcase

    from grinder.data.instruments import VENUES, snapshots
    from grinder.data.instruments import refresh as do_refresh

    if venue is not None and venue not in VENUES:
        raise ConfigError(f"--venue {venue}: instrument snapshots are kept for {', '.join(VENUES)}")
    if url is not None and not refresh:
        raise ConfigError("--url is where --refresh fetches from: pass --refresh too")
    if refresh:
        if url is not None and venue is None:
            raise ConfigError("--url serves one venue's API: pass --venue binance-usdm or --venue binance-coinm")
        if symbol is not None:
            raise ConfigError("--refresh takes every contract of the venue: drop --symbol")
        for v in [venue] if venue else list(VENUES):
            with err.status(f"fetching the exchangeInfo of {v}"):
                r = do_refresh(v, url, instruments)
            _line(f"refreshed {v}: {len(r.snapshot.rows):,} contracts as of {r.snapshot.taken}, written to {r.path}")
            if r.previous is not None:
                _line(f"  against the {r.previous.label()}: {len(r.new):,} new, {len(r.changed):,} changed, "
                      f"{len(r.gone):,} not listed (their rules stay those of older snapshots)")  # fmt: skip
            for why, n in r.skipped.items():
                _line(f"  skipped {n:,}: {why}")
        return
    snaps = snapshots(instruments)
    pattern = symbol.upper() if symbol else "*"
    t = Table()
    for c in ("venue", "symbol", "contract", "status", "tick", "lot", "min notional", "size", "settle",
              "maker", "taker", "snapshot"):  # fmt: skip
        t.add_column(c, justify="right" if c in ("tick", "lot", "min notional", "size", "maker", "taker") else "left")
    n = 0
    for v, vs in snaps.items():
        if venue is not None and v != venue:
            continue
        for s in vs:
            _line(f"{s.label()}: {len(s.rows):,} contracts; {s.source}")
        if vs:
            f = vs[0].fees
            tiers = "  ".join(f"VIP{i} {m * 100:.4f}%/{tk * 100:.4f}%" for i, (m, tk) in enumerate(f.vip))
            _line(f"  fees (maker/taker) of {v}, {f.schedule}, as of {f.as_of}: {tiers}")
        seen: set[str] = set()
        for s in vs:
            for sym in sorted(s.rows):
                if sym in seen or not fnmatchcase(sym, pattern):
                    continue
                seen.add(sym)
                i, row = s.instrument(sym), s.rows[sym]
                t.add_row(v, sym, i.contract, row[0] or "-", row[5], row[6], row[7],
                          row[8] if i.contract == "inverse" else "", i.settle, f"{i.maker_fee:g}", f"{i.taker_fee:g}",
                          s.taken[:10])  # fmt: skip
                n += 1
    if n == 0:
        where = venue or " or ".join(VENUES)
        raise ConfigError(f"no contract of {where} matches {pattern}: refresh the snapshots with "
                          f"`grinder data instruments --refresh`")  # fmt: skip
    out.print(t)


def _fmt_ns(ns: int) -> str:
    import datetime as dt

    return dt.datetime.fromtimestamp(ns / 1e9, dt.UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


@app.command("ls")
@clean_errors
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


@app.command("query")
@clean_errors
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


@app.command("synth")
@clean_errors
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


@app.command("check")
@clean_errors
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
    lo, hi = parse_time(start), parse_time(end)
    # Three steps (load, replay, coverage), shown at once: the first check compiles the book (seconds).
    with ConsoleProgress().count(f"checking {venue}/{symbol}: load, replay, coverage", 3) as update:
        update = update or (lambda _done, _total: None)
        update(0, 3)
        from grinder.book.check import replay_check
        from grinder.data.coverage import lake_spans
        from grinder.data.tape import load_tape

        t0 = time.perf_counter()
        tape = load_tape(root, venue, symbol, lo, hi)
        t1 = time.perf_counter()
        update(1, 3)
        r = replay_check(tape, lo)
        t2 = time.perf_counter()
        update(2, 3)
        spans = lake_spans(root, venue, symbol)
        update(3, 3)
    out.print(f"{venue}/{symbol}: {len(tape):,} events loaded in {t1 - t0:.2f} s, replayed in {t2 - t1:.2f} s")
    out.print(f"  book messages applied: {r.batches:,}; crossed: {r.crossed}; max levels held: {r.max_levels:,}")
    out.print(f"  best bid/ask equal to the venue's: {r.bbo_matched:,} of {r.bbo_checked:,}")
    if r.crossed or r.bbo_matched != r.bbo_checked:
        raise DataError(f"book check failed: {r}")
    gaps = [
        (a.end_ns, b.start_ns)
        for a, b in zip(spans, spans[1:], strict=False)
        if (lo is None or b.start_ns > lo) and (hi is None or a.end_ns < hi)
    ]
    for g0, g1 in gaps:
        out.print(f"  coverage gap: {when(g0)} -> {when(g1)} ({span(g1 - g0)}): no data")
    for u in r.unsynced:
        until = when(u.to_ns) if u.resynced else f"{when(u.to_ns)} (end of data, never resynced)"
        out.print(f"  book unsynced: {when(u.from_ns)} -> {until} ({span(u.duration_ns)}): {u.why}")
    unsynced_ns = sum(u.duration_ns for u in r.unsynced)
    # Data without a start begins before its first snapshot (trades come first): that lead-in is
    # reported but is not a flaw; a requested start on an unsynced book is.
    lead_in = lo is None and r.unsynced and r.unsynced[0].from_ns == int(tape.ts_exch[0]) and r.unsynced[0].resynced
    flaws = r.unsynced[1:] if lead_in else r.unsynced
    clean = not gaps and not flaws
    out.print("  clean: the book is synced from its first snapshot on" if clean else
              f"  not clean: {len(gaps)} coverage gap(s), book unsynced for {span(unsynced_ns)}")  # fmt: skip
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
