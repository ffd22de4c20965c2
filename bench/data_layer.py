"""Data-layer benchmark: ingest and loader throughput, with peak memory, on real and synthetic data.

Each measurement runs in its own process so peak RSS belongs to it alone; compiled kernels are
warmed first (their on-disk cache makes that a load, not a compile). Prints a table and writes
bench/out/data_layer.json. Run: `make bench` (or `.venv/bin/python bench/data_layer.py`).

Targets (issue 2): ingest >= 1 M price-level rows/s, loader >= 50 M rows/s into numpy.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from real_windows import REAL, REPO, WINDOWS  # noqa: E402


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def stage_ingest_real(root: Path) -> dict:
    """Ingest every real window twice (into two lakes) and report the second pass: the first one
    loads compiled kernels and lets the VM back its memory, as a long-running process would."""
    from grinder.data.ingest.binance import parse_binance
    from grinder.data.instruments import resolve_instrument
    from grinder.data.lake import Lake

    out = {}
    for attempt in ("first", "second"):
        for name, (files, symbol) in WINDOWS.items():
            paths = [REAL / f for f in files]
            inst = resolve_instrument("binance-usdm", symbol)
            t0 = time.perf_counter()
            batch = parse_binance(paths, inst)
            t1 = time.perf_counter()
            Lake(root if attempt == "second" else root.with_name(root.name + "-first")).write(batch, paths)
            t2 = time.perf_counter()
            rows = sum(batch.report.rows.values())
            out[name] = {"rows": rows, "book_rows": batch.report.rows["book"], "parse_s": t1 - t0, "write_s": t2 - t1}
    out["peak_rss_mb"] = _peak_mb()
    return out


def stage_synth(root: Path, events: int) -> dict:
    from grinder.data.lake import Lake
    from grinder.data.synth import synth_batch

    t0 = time.perf_counter()
    batch = synth_batch(events, seed=7)
    t1 = time.perf_counter()
    Lake(root).write(batch, [], key=f"bench:{events}")
    t2 = time.perf_counter()
    return {
        "rows": sum(batch.report.rows.values()),
        "gen_s": t1 - t0,
        "write_s": t2 - t1,
        "peak_rss_mb": _peak_mb(),
    }


def stage_ingest_tardis(root: Path, csv_dir: Path) -> dict:
    from grinder.data.ingest.tardis import parse_tardis
    from grinder.data.lake import Lake
    from grinder.data.tape import read_instrument

    inst = read_instrument(root, "synthetic", "SYNTHUSDT")
    paths = sorted(csv_dir.glob("*.csv"))
    parse_tardis(paths, inst)  # first pass: the VM backs the memory the parse needs
    t0 = time.perf_counter()
    batch = parse_tardis(paths, inst)
    t1 = time.perf_counter()
    Lake(root / "tardis").write(batch, paths)
    t2 = time.perf_counter()
    rows = sum(batch.report.rows.values())
    return {
        "rows": rows,
        "book_rows": batch.report.rows["book"],
        "parse_s": t1 - t0,
        "write_s": t2 - t1,
        "peak_rss_mb": _peak_mb(),
    }


def stage_load(root: Path, venue: str, symbol: str) -> dict:
    """Build the tape from Parquet: once cold (first in the process), then the best of three."""
    import numpy as np

    from grinder.data import tape as tape_mod
    from grinder.data.tape import load_tape

    z, zi = np.zeros(1, np.int64), np.zeros(1, np.int8)
    f = np.ones(1)
    tape_mod._merge(z, z, z, z, zi, zi, f, f, z, z, z, z, zi, f, f, 0.1, 1)  # load the compiled merge
    t0 = time.perf_counter()
    tape = load_tape(root, venue, symbol)
    cold = time.perf_counter() - t0
    n = _tape_rows(tape)
    del tape
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        tape = load_tape(root, venue, symbol)
        best = min(best, time.perf_counter() - t0)
        del tape
    load_tape(root, venue, symbol, cache=True)  # leaves the cached tape for stage_load_cached
    return {"rows": n, "cold_s": cold, "warm_s": best, "peak_rss_mb": _peak_mb()}


def stage_load_cached(root: Path, venue: str, symbol: str) -> dict:
    """Open the cached tape in a fresh process and read every value of every column once."""
    import numpy as np

    from grinder.data.tape import load_tape

    t0 = time.perf_counter()
    tape = load_tape(root, venue, symbol, cache=True)
    opened = time.perf_counter() - t0
    assert isinstance(tape.ts_exch, np.memmap), "expected a cache hit"
    cols = (
        [
            getattr(tape, c)
            for c in ("ts_exch", "ts_local", "kind", "side", "price", "price_ticks", "qty", "ref", "flags")
        ]
        + list(tape.bbo.columns.values())
        + list(tape.funding.columns.values())
    )
    total = sum(int(np.asarray(c).view(np.uint8).sum(dtype=np.uint64)) for c in cols)  # touch every page
    touched = time.perf_counter() - t0
    return {
        "rows": _tape_rows(tape),
        "open_s": opened,
        "read_s": touched,
        "checksum": total % 997,
        "peak_rss_mb": _peak_mb(),
    }


def _tape_rows(tape) -> int:
    """Rows loaded into numpy: tape events plus the BBO and funding series."""
    return len(tape) + len(tape.bbo) + len(tape.funding)


def _child(stage: str, *args: str) -> dict:
    r = subprocess.run([sys.executable, __file__, "--stage", stage, *args], capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"stage {stage} failed:\n{r.stderr}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def _export_tardis(root: Path, csv_dir: Path) -> None:
    """Write the synthetic lake out as Tardis CSV files, the format a user would bring."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as pcsv

    from grinder.data.catalog import Catalog

    cat = Catalog(root)
    book = cat.query("select ts_exch, ts_local, kind, side, price, qty from book").to_arrow_table()
    keep = pc.not_equal(book["kind"], 2)
    book = book.filter(keep)
    us = lambda c: pc.divide(c, 1000)  # noqa: E731
    csv_dir.mkdir(parents=True, exist_ok=True)
    n = book.num_rows
    pcsv.write_csv(
        pa.table(
            {
                "exchange": pa.array(["synthetic"] * n),
                "symbol": pa.array(["SYNTHUSDT"] * n),
                "timestamp": us(book["ts_exch"]),
                "local_timestamp": us(book["ts_local"]),
                "is_snapshot": pc.equal(book["kind"], 1),
                "side": pc.if_else(pc.equal(book["side"], 1), "bid", "ask"),
                "price": book["price"],
                "amount": book["qty"],
            }
        ),
        csv_dir / "synthetic_incremental_book_L2_SYNTHUSDT.csv",
        write_options=pcsv.WriteOptions(quoting_style="none"),
    )
    tr = cat.query("select ts_exch, ts_local, trade_id, side, price, qty from trades").to_arrow_table()
    n = tr.num_rows
    pcsv.write_csv(
        pa.table(
            {
                "exchange": pa.array(["synthetic"] * n),
                "symbol": pa.array(["SYNTHUSDT"] * n),
                "timestamp": us(tr["ts_exch"]),
                "local_timestamp": us(tr["ts_local"]),
                "id": tr["trade_id"],
                "side": pc.if_else(pc.equal(tr["side"], 1), "buy", "sell"),
                "price": tr["price"],
                "amount": tr["qty"],
            }
        ),
        csv_dir / "synthetic_trades_SYNTHUSDT.csv",
        write_options=pcsv.WriteOptions(quoting_style="none"),
    )


def _report_load(label: str, root: Path, venue: str, symbol: str) -> dict:
    lp = _child("load", str(root), venue, symbol)
    lc = _child("load-cached", str(root), venue, symbol)
    n = lp["rows"]
    print(
        f"loader, {label}: {n:,} rows (tape + bbo + funding) into numpy\n"
        f"  from Parquet: first load {n / lp['cold_s'] / 1e6:.1f} M rows/s, repeated {n / lp['warm_s'] / 1e6:.1f} M "
        f"rows/s; peak RSS {lp['peak_rss_mb']:.0f} MB\n"
        f"  from the tape cache (fresh process, memory-mapped, every byte read once): "
        f"{n / lc['read_s'] / 1e6:.1f} M rows/s (open alone {lc['open_s'] * 1e3:.1f} ms); "
        f"peak RSS {lc['peak_rss_mb']:.0f} MB"
    )
    return {"parquet": lp, "cached": lc}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stage")
    ap.add_argument("--events", type=int, default=10_000_000)
    ap.add_argument("args", nargs="*")
    a = ap.parse_args()
    if a.stage:
        fn = {
            "ingest-real": stage_ingest_real,
            "synth": stage_synth,
            "ingest-tardis": stage_ingest_tardis,
            "load": stage_load,
            "load-cached": stage_load_cached,
        }[a.stage]
        args = (
            [Path(a.args[0])]
            + ([a.events] if a.stage == "synth" else [])
            + [Path(x) if not a.stage.startswith("load") else x for x in a.args[1:]]
        )
        print(json.dumps(fn(*args)))
        return

    tmp = Path(tempfile.mkdtemp(prefix="grinder-bench-"))
    results: dict = {"events": a.events}
    try:
        real, synth = tmp / "real", tmp / "synth"
        results["ingest_real"] = r = _child("ingest-real", str(real))
        rows = sum(v["rows"] for k, v in r.items() if k != "peak_rss_mb")
        book = sum(v["book_rows"] for k, v in r.items() if k != "peak_rss_mb")
        secs = sum(v["parse_s"] + v["write_s"] for k, v in r.items() if k != "peak_rss_mb")
        print(f"ingest, real Binance captures ({len(WINDOWS)} windows, parse + validate + write Parquet):")
        for k, v in r.items():
            if k != "peak_rss_mb":
                s = v["parse_s"] + v["write_s"]
                print(
                    f"  {k:18s} {v['rows']:>10,} rows  {s:6.2f} s  {v['rows'] / s / 1e6:5.2f} M rows/s  "
                    f"(parse {v['parse_s']:.2f} s, write {v['write_s']:.2f} s)"
                )
        print(
            f"  total              {rows:>10,} rows  {secs:6.2f} s  {rows / secs / 1e6:5.2f} M rows/s; "
            f"price-level rows {book / secs / 1e6:.2f} M/s; peak RSS {r['peak_rss_mb']:.0f} MB"
        )

        results["load_real"] = _report_load("real BTCUSDT (3 windows)", real, "binance-usdm", "BTCUSDT")

        results["synth"] = s = _child("synth", str(synth), "--events", str(a.events))
        print(
            f"synthetic {a.events:,} events: {s['rows']:,} rows generated in {s['gen_s']:.2f} s, written in "
            f"{s['write_s']:.2f} s; peak RSS {s['peak_rss_mb']:.0f} MB"
        )

        results["load_synth"] = _report_load(f"synthetic {a.events:,} events", synth, "synthetic", "SYNTHUSDT")

        csv_dir = tmp / "csv"
        _export_tardis(synth, csv_dir)
        results["ingest_tardis"] = it = _child("ingest-tardis", str(synth), str(csv_dir))
        s_ = it["parse_s"] + it["write_s"]
        print(
            f"ingest, synthetic as Tardis CSV: {it['rows']:,} rows in {s_:.2f} s = {it['rows'] / s_ / 1e6:.2f} M "
            f"rows/s (parse {it['parse_s']:.2f} s, write {it['write_s']:.2f} s); price-level rows "
            f"{it['book_rows'] / s_ / 1e6:.2f} M/s; peak RSS {it['peak_rss_mb']:.0f} MB"
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    out = REPO / "bench" / "out"
    out.mkdir(exist_ok=True)
    (out / "data_layer.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
