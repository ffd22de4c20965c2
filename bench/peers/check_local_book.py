#!/usr/bin/env python3
"""Compare the book hftbacktest's *local* side shows the strategy with a correctly synced book.

Runs inside the peer venv after ``hftbacktest_grid.py`` has cached ``bench/peers/data/<window>.npz``::

    bench/peers/.venv-hftbacktest/bin/python bench/peers/check_local_book.py [--window NAME ...]

At every 100 ms step (same clock as the grid run: first event time + k * step) it compares the
local best bid/ask hftbacktest reports with a reference book rebuilt from the raw file the way
``../shared/data/real/README.md`` prescribes (buffer diffs until the snapshot, drop diffs with
``u < lastUpdateId``, apply the rest in file order), stamped with the same corrected local clock.
It also replays the converter's rows of each side (EXCH rows in exchange-time order, LOCAL rows in
local-time order) and compares every level within ``--band-ticks`` of the top with the reference
book on the same clock at the same instants.
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
from pathlib import Path

import numpy as np
from hftbacktest import BacktestAsset, HashMapMarketDepthBacktest
from numba import njit

sys.path.insert(0, str(Path(__file__).resolve().parent))
from hftbacktest_grid import DEFAULT_DATA_DIR, DEFAULT_RAW_DIR, WINDOWS  # noqa: E402


@njit
def _local_tob(hbt, step_ns, out):
    n = 0
    while hbt.elapse(step_ns) == 0:
        d = hbt.depth(0)
        out[n, 0] = hbt.current_timestamp
        out[n, 1] = d.best_bid_tick
        out[n, 2] = d.best_ask_tick
        n += 1
    return n


class Book:
    def __init__(self, tick):
        self.tick = tick
        self.bids: dict[int, float] = {}
        self.asks: dict[int, float] = {}

    def apply(self, side, levels):
        book = self.bids if side == "b" else self.asks
        for px, qty in levels:
            t = round(float(px) / self.tick)
            if float(qty) == 0.0:
                book.pop(t, None)
            else:
                book[t] = float(qty)

    def tob(self):
        return (max(self.bids) if self.bids else None, min(self.asks) if self.asks else None)


def reference_steps(paths, unit, tick, offset_ns, step_ts):
    """Top of book of the correctly synced book after all messages with corrected local ts <= step."""
    book = Book(tick)
    pending = []
    synced = False
    last_u = None
    lid = None
    out = np.full((len(step_ts), 2), -1, np.int64)
    si = 0
    cur = (None, None)
    gaps = 0

    def emit_until(ts):
        nonlocal si
        while si < len(step_ts) and step_ts[si] < ts:
            if synced and cur[0] is not None and cur[1] is not None:
                out[si] = cur
            si += 1

    for path in paths:
        with gzip.open(path, "rb") as fh:
            for line in fh:
                sp = line.index(b" ")
                ts = int(line[:sp]) * (1000 if unit == "us" else 1) + offset_ns
                emit_until(ts)
                msg = json.loads(line[sp + 1 :])
                d = msg.get("data")
                if d is None:
                    if "lastUpdateId" in msg and not synced:
                        lid = msg["lastUpdateId"]
                        book.apply("b", msg["bids"])
                        book.apply("a", msg["asks"])
                        synced = True
                        for p in pending:
                            if p["u"] < lid:
                                continue
                            if last_u is not None and p["pu"] != last_u:
                                gaps += 1
                            book.apply("b", p["b"])
                            book.apply("a", p["a"])
                            last_u = p["u"]
                        pending = []
                        cur = book.tob()
                    continue
                if d.get("e") != "depthUpdate":
                    continue
                if not synced:
                    pending.append(d)
                    continue
                if d["u"] < lid:
                    continue
                if last_u is not None and d["pu"] != last_u:
                    gaps += 1
                book.apply("b", d["b"])
                book.apply("a", d["a"])
                last_u = d["u"]
                cur = book.tob()
    emit_until(np.iinfo(np.int64).max)
    return out, gaps


def side_check(data, paths, unit, tick, times, band_ticks, clock, offset_ns):
    """Replays the converter's EXCH (clock="exch") or LOCAL (clock="local") rows in row order and
    the reference book (file order; a message counts from its T, resp. its corrected local receive
    time) and compares all levels within ``band_ticks`` of the best prices at each of ``times``."""
    from hftbacktest.types import (
        BUY_EVENT,
        DEPTH_CLEAR_EVENT,
        DEPTH_EVENT,
        DEPTH_SNAPSHOT_EVENT,
        EXCH_EVENT,
        LOCAL_EVENT,
    )

    # Reference snapshots of the band at each time.
    ref_states = {}
    book = Book(tick)
    pending, synced, lid = [], False, None
    ti = 0
    msgs = []
    for path in paths:
        with gzip.open(path, "rb") as fh:
            for line in fh:
                sp = line.index(b" ")
                loc = int(line[:sp]) * (1000 if unit == "us" else 1) + offset_ns
                msg = json.loads(line[sp + 1 :])
                d = msg.get("data")
                if d is None and "lastUpdateId" in msg:
                    msgs.append(("S", msg["T"] * 1_000_000 if clock == "exch" else loc, msg))
                elif d is not None and d.get("e") == "depthUpdate":
                    msgs.append(("D", d["T"] * 1_000_000 if clock == "exch" else loc, d))

    def band(b):
        bb, ba = b.tob()
        if bb is None or ba is None:
            return None
        return (
            tuple(sorted((k, v) for k, v in b.bids.items() if k >= bb - band_ticks)),
            tuple(sorted((k, v) for k, v in b.asks.items() if k <= ba + band_ticks)),
            bb,
            ba,
        )

    # Reference: snapshot applied when it arrives in the file, diffs synced as in README; a
    # message's effect is visible from its T on (T is non-decreasing in u order).
    for kind, t, m in msgs:
        while ti < len(times) and times[ti] < t:
            if synced:
                ref_states[ti] = band(book)
            ti += 1
        if kind == "S":
            if not synced:
                lid = m["lastUpdateId"]
                book.apply("b", m["bids"])
                book.apply("a", m["asks"])
                synced = True
                for p in pending:
                    if p["u"] >= lid:
                        book.apply("b", p["b"])
                        book.apply("a", p["a"])
                pending = []
            continue
        if not synced:
            pending.append(m)
        elif m["u"] >= lid:
            book.apply("b", m["b"])
            book.apply("a", m["a"])
    while ti < len(times):
        ref_states[ti] = band(book) if synced else None
        ti += 1

    # hftbacktest exchange side.
    flag = EXCH_EVENT if clock == "exch" else LOCAL_EVENT
    ex = data[(data["ev"] & flag) != 0]
    hb = Book(tick)
    ti = 0
    mismatches = []
    n_cmp = 0
    evs, tss, pxs, qtys = ex["ev"], ex["exch_ts" if clock == "exch" else "local_ts"], ex["px"], ex["qty"]
    for i in range(len(ex)):
        t = int(tss[i])
        while ti < len(times) and times[ti] < t:
            r = ref_states.get(ti)
            if r is not None:
                n_cmp += 1
                if band(hb) != r:
                    mismatches.append(int(times[ti]))
            ti += 1
        kind = int(evs[i]) & 0xFF
        side = "b" if int(evs[i]) & BUY_EVENT else "a"
        if kind == DEPTH_CLEAR_EVENT:
            upto = round(float(pxs[i]) / tick)
            if side == "b":
                hb.bids = {k: v for k, v in hb.bids.items() if k < upto}
            else:
                hb.asks = {k: v for k, v in hb.asks.items() if k > upto}
        elif kind in (DEPTH_EVENT, DEPTH_SNAPSHOT_EVENT):
            hb.apply(side, [(pxs[i], qtys[i])])
    return n_cmp, mismatches


def check(name, args):
    spec = WINDOWS[name]
    meta = json.loads((args.data_dir / f"{name}.meta.json").read_text())
    data = np.load(args.data_dir / f"{name}.npz")["data"]
    asset = (
        BacktestAsset()
        .data([data])
        .linear_asset(1.0)
        .constant_order_latency(0, 0)
        .risk_adverse_queue_model()
        .no_partial_fill_exchange()
        .trading_value_fee_model(0.0, 0.0)
        .tick_size(spec["tick_size"])
        .lot_size(spec["lot_size"])
    )
    hbt = HashMapMarketDepthBacktest([asset])
    buf = np.zeros((200_000, 3), np.int64)
    n = _local_tob(hbt, args.step_ns, buf)
    hbt.close()
    local = buf[:n]
    paths = [args.raw_dir / f for f in spec["files"]]
    ref, gaps = reference_steps(
        paths, spec["local_ts_unit"], spec["tick_size"], meta["local_ts_offset_added_ns"], local[:, 0]
    )
    valid = ref[:, 0] >= 0
    diff = valid & ((local[:, 1] != ref[:, 0]) | (local[:, 2] != ref[:, 1]))
    first_valid = int(np.argmax(valid)) if valid.any() else None
    res = {
        "window": name,
        "steps": int(n),
        "steps_with_reference_book": int(valid.sum()),
        "first_synced_step_ts": int(local[first_valid, 0]) if first_valid is not None else None,
        "steps_local_tob_differs": int(diff.sum()),
        "sequence_gaps": gaps,
    }
    res["band_ticks"] = args.band_ticks
    for clock in ("exch", "local"):
        n_cmp, mism = side_check(
            data,
            paths,
            spec["local_ts_unit"],
            spec["tick_size"],
            local[:, 0],
            args.band_ticks,
            clock,
            meta["local_ts_offset_added_ns"],
        )
        res[f"{clock}_side_band_steps_compared"] = n_cmp
        res[f"{clock}_side_band_steps_differing"] = len(mism)
        if mism:
            res[f"{clock}_side_band_first_differing_ts"] = mism[:5]
            res[f"{clock}_side_band_last_differing_ts"] = mism[-1]
    if diff.any():
        idx = np.flatnonzero(diff)
        res["first_differing_steps"] = [
            {
                "ts": int(local[i, 0]),
                "hbt_bid_tick": int(local[i, 1]),
                "hbt_ask_tick": int(local[i, 2]),
                "ref_bid_tick": int(ref[i, 0]),
                "ref_ask_tick": int(ref[i, 1]),
            }
            for i in idx[:5]
        ]
        res["last_differing_step_ts"] = int(local[idx[-1], 0])
    return res


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--window", action="append", choices=sorted(WINDOWS))
    p.add_argument("--raw-dir", type=Path, default=DEFAULT_RAW_DIR)
    p.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    p.add_argument("--step-ns", type=int, default=100_000_000)
    p.add_argument(
        "--band-ticks",
        type=int,
        default=300,
        help="exchange-side levels compared around the top (default: %(default)s)",
    )
    p.add_argument("--json", type=Path, help="also write the results here")
    args = p.parse_args(argv)
    results = [check(w, args) for w in (args.window or list(WINDOWS))]
    for r in results:
        print(json.dumps(r))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
