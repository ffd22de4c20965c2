"""Hand-made Parquet lake against Delta Lake (`deltalake`) for the book table of each real window.

For each window: ingest it into a Grinder lake (lz4, journaled commit), write the same book table
as a Delta table (lz4 and the same column encodings, one commit), then time reading the whole book
table back into Arrow both ways (best of --repeat, after one warm read) and sum the bytes on
disk. Decision 019 records the figures. Needs `deltalake` in the venv (not a Grinder dependency):
`.venv/bin/pip install deltalake && .venv/bin/python bench/lake_format.py`.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from real_windows import REAL, REPO, WINDOWS  # noqa: E402


def _bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file() and p.name != ".lock")


def _best(fn, repeat: int) -> float:
    fn()  # warm: page cache and imports
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def bench_window(name: str, work: Path, repeat: int) -> dict:
    import pyarrow.parquet as pq
    from deltalake import ColumnProperties, DeltaTable, WriterProperties, write_deltalake

    from grinder.data.ingest.binance import parse_binance
    from grinder.data.instruments import resolve_instrument
    from grinder.data.lake import Lake, column_encodings
    from grinder.data.schema import MARKET_TABLES

    files, symbol = WINDOWS[name]
    paths = [REAL / f for f in files]
    batch = parse_binance(paths, resolve_instrument("binance-usdm", symbol))
    book = batch.tables["book"].cast(MARKET_TABLES["book"])
    lake = work / f"{name}-lake"
    t0 = time.perf_counter()
    Lake(lake).write(batch, paths)
    lake_write = time.perf_counter() - t0
    parts = sorted((lake / "book").rglob("*.parquet"))

    day = book.column("ts_exch").to_numpy() // 86_400_000_000_000
    import numpy as np
    import pyarrow as pa

    dated = book.append_column("date", pa.array(np.datetime_as_string(day.astype("datetime64[D]"))))
    delta = work / f"{name}-delta"
    t0 = time.perf_counter()
    # The lake's encodings (decision 017), so the comparison is of formats, not of encodings.
    enc = column_encodings(book.schema)
    props = {c: ColumnProperties(dictionary_enabled=False, encoding=e) for c, e in enc["column_encoding"].items()}
    props |= {c: ColumnProperties(dictionary_enabled=True) for c in enc["use_dictionary"]}
    write_deltalake(
        delta,
        dated,
        partition_by=["date"],
        writer_properties=WriterProperties(compression="LZ4_RAW", column_properties=props),
    )
    delta_write = time.perf_counter() - t0

    def read_lake():
        # What load_tape does: each known part file read directly, no dataset discovery.
        return pa.concat_tables(pq.ParquetFile(p).read() for p in parts)

    def read_delta():
        return DeltaTable(delta).to_pyarrow_table(columns=book.column_names)

    assert read_lake().num_rows == read_delta().num_rows == book.num_rows
    return {
        "book_rows": book.num_rows,
        "lake_read_s": _best(read_lake, repeat),
        "delta_read_s": _best(read_delta, repeat),
        "lake_book_bytes": sum(p.stat().st_size for p in parts),
        "delta_bytes": _bytes(delta),
        "lake_write_s": lake_write,
        "delta_write_s": delta_write,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in WINDOWS:
            out[name] = r = bench_window(name, Path(tmp), args.repeat)
            print(
                f"{name}: {r['book_rows']:>9,} book rows | read lake {r['lake_read_s'] * 1e3:6.1f} ms, "
                f"delta {r['delta_read_s'] * 1e3:6.1f} ms ({r['delta_read_s'] / r['lake_read_s']:.2f}x) | "
                f"bytes lake {r['lake_book_bytes'] / 1e6:5.2f} MB, delta {r['delta_bytes'] / 1e6:5.2f} MB | "
                f"write lake (all tables) {r['lake_write_s']:.2f} s, delta (book) {r['delta_write_s']:.2f} s",
                flush=True,
            )
    dest = REPO / "bench" / "out" / "lake_format.json"
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(json.dumps(out, indent=1))
    print(f"wrote {dest}")


if __name__ == "__main__":
    main()
