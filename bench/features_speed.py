"""Feature computation speed: the offline pass (events/s) and the online update's cost per event.

On the real Binance windows (ingested into a scratch lake, as bench/agreement.py does): the
offline pass `compute_features` over the whole tape, best of 5 after a warm-up call (compilation
excluded), as tape events/s and update points/s (message ends and trades: where the update runs);
then the online updater as the live adapter calls it, from Python, once per update point of a
replay of the same tape (the book applied with `grinder.book.l2.apply_row` outside the timing):
each call timed alone, mean / p50 / p99 ns, and the `read` after it.
Prints a table and writes bench/out/features_speed.json. Run:
`.venv/bin/python bench/features_speed.py [--window NAME ...] [--online-events N] [--keep]`.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from agreement import window_tape  # noqa: E402
from real_windows import REPO, WINDOWS  # noqa: E402

OUT = REPO / "bench" / "out" / "features_speed.json"


def offline(tape, fs) -> dict:
    from grinder.data.tape import BATCH_END
    from grinder.features import compute_features

    compute_features(tape, fs)  # compile (or load the cache) and warm the pages
    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        compute_features(tape, fs)
        times.append(time.perf_counter() - t0)
    best = min(times)
    points = int(np.count_nonzero(tape.flags & BATCH_END))
    return {"events": len(tape), "update_points": points, "best_s": best,
            "events_per_s": len(tape) / best, "points_per_s": points / best}  # fmt: skip


def online(tape, fs, limit: int) -> dict:
    """Per-call cost of OnlineFeatures' update and read over the first `limit` update points."""
    from grinder.book.l2 import apply_row, new_book
    from grinder.data.tape import BATCH_END, EV_TRADE
    from grinder.features import OnlineFeatures

    on = OnlineFeatures(fs)
    hdr, wq, ok, oq = new_book()
    out = np.empty(len(fs.names))
    upd, rd = [], []
    synced = False
    clock = time.perf_counter_ns
    rows = zip(tape.ts_exch.tolist(), tape.kind.tolist(), tape.side.tolist(), tape.price_ticks.tolist(),
               tape.qty.tolist(), tape.flags.tolist(), strict=True)  # fmt: skip
    for ts, kind, side, ticks, qty, flags in rows:
        if kind != EV_TRADE:
            ok, oq = apply_row(hdr, wq, ok, oq, kind, side, ticks, qty)
            synced = True if kind == 1 else False if kind == 2 else synced
        if not flags & BATCH_END:
            continue
        t0 = clock()
        if kind == EV_TRADE:
            on.on_trade(ts, side, qty)
        else:
            on.on_book(ts, hdr, wq, ok, oq, synced)
        t1 = clock()
        on.read(ts, out)
        t2 = clock()
        upd.append(t1 - t0)
        rd.append(t2 - t1)
        if len(upd) >= limit:
            break
    u, r = np.array(upd[100:]), np.array(rd[100:])  # the first calls resolve the dispatcher's types
    return {"calls": len(u), "update_mean_ns": float(u.mean()), "update_p50_ns": float(np.percentile(u, 50)),
            "update_p99_ns": float(np.percentile(u, 99)), "read_mean_ns": float(r.mean()),
            "read_p99_ns": float(np.percentile(r, 99))}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--window", action="append", choices=list(WINDOWS), help="real windows (default: all)")
    ap.add_argument("--online-events", type=int, default=200_000, help="update points timed online per window")
    ap.add_argument("--keep", action="store_true", help="keep the scratch lake")
    a = ap.parse_args()

    from grinder.features import FeatureSet

    fs = FeatureSet()
    tmp = Path(tempfile.mkdtemp(prefix="grinder_features_"))
    results = {"feature_set": fs.declaration(), "version": fs.version, "machine": platform.machine(),
               "python": platform.python_version(), "windows": {}}  # fmt: skip
    try:
        for w in a.window or list(WINDOWS):
            tape = window_tape(w, tmp / "lake")
            results["windows"][w] = {"offline": offline(tape, fs), "online": online(tape, fs, a.online_events)}
            print(f"  {w} done", flush=True)
    finally:
        if a.keep:
            print(f"scratch kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    print(f"\nfeature set {fs.version[:12]}: {len(fs.names)} features, levels {fs.levels}")
    head = f"{'window':<18}{'events':>11}{'points':>10}{'offline s':>11}{'Mev/s':>8}{'Mpts/s':>8}"
    head += f"{'upd mean':>10}{'p50':>7}{'p99':>7}{'read':>7}  (online, ns per call)"
    print(head)
    for w, r in results["windows"].items():
        o, n = r["offline"], r["online"]
        print(f"{w:<18}{o['events']:>11,}{o['update_points']:>10,}{o['best_s']:>11.3f}{o['events_per_s'] / 1e6:>8.1f}"
              f"{o['points_per_s'] / 1e6:>8.2f}{n['update_mean_ns']:>10.0f}{n['update_p50_ns']:>7.0f}"
              f"{n['update_p99_ns']:>7.0f}{n['read_mean_ns']:>7.0f}")  # fmt: skip
    OUT.parent.mkdir(exist_ok=True)
    OUT.write_text(json.dumps(results, indent=2) + "\n")
    print(f"written {OUT.relative_to(REPO)}")


if __name__ == "__main__":
    main()
