"""Streaming ingest: rows/s and peak RSS on a generated Tardis CSV and a generated Binance capture.

Ingest reads files in bounded chunks and writes lake parts as it goes (decision 045), so peak RSS
should not grow with the file. This writes a Tardis `incremental_book_L2` CSV of `--gb` GB
(default 2) and a Binance capture of `--binance-gb` GB (default: the same) into a temporary folder,
ingests each into a fresh lake in its own process (`grinder.data.ingest.parse` + `Lake.write`, as
`grinder data ingest` does), and prints rows, seconds, rows/s and that process's peak RSS. Each
file is also ingested at a tenth of its size, to show how peak RSS grows with the input.

Run: `.venv/bin/python bench/ingest_memory.py --gb 1` (needs ~3x the size free in --tmp).
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

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

T0_US = 1_723_075_200_000_000  # 2024-08-08 00:00:00 UTC, µs
MID = 600_000  # ticks of 0.1: 60,000.0
HEADER = "exchange,symbol,timestamp,local_timestamp,is_snapshot,side,price,amount\n"
ROWS_PER_MSG = 4
LEVELS = 50


def _decimal(units: np.ndarray, places: int) -> pa.Array:
    """Non-negative integers in units of 10**-places as decimal text ("61800.2")."""
    units = pa.array(units)
    scale = 10**places
    whole = pc.cast(pc.divide(units, scale), pa.string())
    frac = pc.utf8_lpad(
        pc.cast(pc.subtract(units, pc.multiply(pc.divide(units, scale), scale)), pa.string()), places, "0"
    )
    return pc.binary_join_element_wise(whole, frac, ".")


def tardis_rows(first_msg: int, n_msgs: int, rng: np.random.Generator, snapshot: bool) -> bytes:
    """CSV text of book messages first_msg .. first_msg + n_msgs (4 rows each; bids below, asks
    above a fixed mid, so the book never crosses), after a 50-level snapshot when `snapshot`."""
    parts = []
    if snapshot:
        k = np.arange(1, LEVELS + 1)
        ticks = np.concatenate([MID - k, MID + k])
        side = ["bid"] * LEVELS + ["ask"] * LEVELS
        lots = rng.integers(1, 5000, ticks.size)
        n = ticks.size
        ts = np.full(n, T0_US + first_msg * 1000)
        parts.append((ts, ts + 5000, ["true"] * n, side, ticks, lots))
    m = np.arange(first_msg, first_msg + n_msgs)
    ts = np.repeat(T0_US + m * 1000 + 1, ROWS_PER_MSG)
    n = ts.size
    is_bid = np.tile([True, True, False, False], n_msgs)
    depth = rng.integers(1, LEVELS + 1, n)
    ticks = np.where(is_bid, MID - depth, MID + depth)
    lots = rng.integers(0, 5000, n)  # 0 removes the level
    parts.append((ts, ts + 5000, ["false"] * n, np.where(is_bid, "bid", "ask"), ticks, lots))
    out = []
    for ts, loc, snap, side, ticks, lots in parts:
        cols = [
            pa.array(["binance-futures"] * len(ts)),
            pa.array(["BTCUSDT"] * len(ts)),
            pc.cast(pa.array(ts), pa.string()),
            pc.cast(pa.array(loc), pa.string()),
            pa.array(snap),
            pa.array(side),
            _decimal(ticks, 1),
            _decimal(lots, 3),
        ]
        lines = pc.binary_join_element_wise(*cols, ",")
        out.append("\n".join(lines.to_pylist()).encode() + b"\n")
    return b"".join(out)


def write_tardis(path: Path, nbytes: int, seed: int = 0) -> int:
    """Write a Tardis book CSV of about `nbytes` bytes; returns its data rows."""
    rng = np.random.default_rng(seed)
    rows = msg = 0
    per = 50_000
    with open(path, "wb") as f:
        f.write(HEADER.encode())
        size = len(HEADER)
        while size < nbytes:
            # A fresh snapshot every ~10 blocks, as a recorder's resync would.
            snap = msg % (per * 10) == 0
            block = tardis_rows(msg, per, rng, snap)
            f.write(block)
            size += len(block)
            rows += per * ROWS_PER_MSG + (2 * LEVELS if snap else 0)
            msg += per
    return rows


def write_binance(path: Path, nbytes: int, seed: int = 0) -> int:
    """Write a plain-text Binance capture of about `nbytes` bytes (a REST snapshot, then diffs
    that continue it); returns its book rows (price levels, snapshot included)."""
    rng = np.random.default_rng(seed)
    t_ms = T0_US // 1000
    uid = 1_000_000
    k = np.arange(1, LEVELS + 1)

    def lv(ticks, lots) -> str:
        return ",".join(
            f'["{t // 10}.{t % 10}","{q // 1000}.{q % 1000:03d}"]' for t, q in zip(ticks, lots, strict=True)
        )

    rows = 2 * LEVELS
    with open(path, "wb") as f:
        bids, asks = lv(MID - k, rng.integers(1, 5000, LEVELS)), lv(MID + k, rng.integers(1, 5000, LEVELS))
        first = f'{t_ms * 1000} {{"lastUpdateId":{uid},"E":{t_ms},"T":{t_ms},"bids":[{bids}],"asks":[{asks}]}}\n'
        f.write(first.encode())
        size = len(first)
        while size < nbytes:
            lines = []
            d = rng.integers(1, LEVELS + 1, (20_000, 4)).tolist()
            q = rng.integers(0, 5000, (20_000, 4)).tolist()
            for i in range(20_000):
                t_ms += 1
                u0, uid = uid, uid + 3
                b = lv([MID - d[i][0], MID - d[i][1]], q[i][:2])
                a = lv([MID + d[i][2], MID + d[i][3]], q[i][2:])
                lines.append(
                    f'{t_ms * 1000 + 5} {{"stream":"btcusdt@depth@0ms","data":{{"e":"depthUpdate","E":{t_ms},'
                    f'"T":{t_ms},"s":"BTCUSDT","U":{u0 + 1},"u":{uid},"pu":{u0},"b":[{b}],"a":[{a}]}}}}\n'
                )
            block = "".join(lines).encode()
            f.write(block)
            size += len(block)
            rows += 20_000 * 4
    return rows


def child(fmt: str, path: str, root: str) -> None:
    """Ingest one file as `grinder data ingest` does; print rows, seconds and this process's peak RSS."""
    from grinder.data.ingest import parse
    from grinder.data.instruments import resolve_instrument
    from grinder.data.lake import Lake

    inst = resolve_instrument("binance-usdm", "BTCUSDT")
    t0 = time.perf_counter()
    manifest = Lake(root).write(parse(fmt, [Path(path)], inst), [Path(path)])
    dt = time.perf_counter() - t0
    rows = sum(manifest["report"]["rows"].values())
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"rows": rows, "seconds": dt, "peak_rss_mb": peak}))


def measure(fmt: str, path: Path, tmp: Path) -> dict:
    root = tmp / f"lake-{fmt}-{path.stat().st_size}"
    cmd = [sys.executable, __file__, "--child", fmt, str(path), str(root)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    shutil.rmtree(root, ignore_errors=True)
    r = json.loads(out.strip().splitlines()[-1])
    r["mb"] = path.stat().st_size / 1e6
    r["rows_per_s"] = r["rows"] / r["seconds"]
    return r


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gb", type=float, default=2.0, help="size of the Tardis CSV (GB)")
    ap.add_argument("--binance-gb", type=float, default=None, help="size of the Binance capture (GB; default --gb)")
    ap.add_argument("--tmp", default=None, help="folder for the generated files and lakes")
    ap.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        child(*a.child)
        return
    tmp = Path(tempfile.mkdtemp(prefix="ingest-memory-", dir=a.tmp))
    try:
        for fmt, gb, write, name in (
            ("tardis", a.gb, write_tardis, "book.csv"),
            ("binance", a.binance_gb if a.binance_gb is not None else a.gb, write_binance, "capture.txt"),
        ):
            for size in (gb / 10, gb):
                path = tmp / name
                t0 = time.perf_counter()
                write(path, int(size * 1e9))
                gen = time.perf_counter() - t0
                r = measure(fmt, path, tmp)
                print(
                    f"{fmt:8s} {r['mb']:9,.0f} MB {r['rows']:>13,} rows {r['seconds']:7.1f} s "
                    f"{r['rows_per_s']:>12,.0f} rows/s  peak RSS {r['peak_rss_mb']:7,.0f} MB  "
                    f"(generated in {gen:.0f} s)",
                    flush=True,
                )
                path.unlink()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
