"""Backtest speed: one grid backtest's events/s in Grinder and in hftbacktest, on the same data and settings.

Datasets: a seeded synthetic set (`synth_batch`, 6 M events by default) and the four real Binance
windows. Strategy and venue are hftbacktest's grid example, as in bench/agreement.py: 20 levels a
side, interval 10 ticks, half spread 20 ticks, 10 ms entry and response latency, risk-averse queue,
no partial fills, fees 0.0002/0.0005, a decision every 100 ms. hftbacktest 2.4.4 runs in its own
venv (bench/peers/) and Grinder in this one, each in a fresh child process per dataset, so each
peak RSS belongs to one engine. Both loops are the best of 5; Grinder's once-per-tape `prepare`
is timed apart and also counted in a second ratio. Grinder's replay is then stored in a replay cache
(`load_or_prepare` with a cache folder, decision 006) and opened again from it: that time, with every
page of the maps read once, and the loop on those maps (best of 5, same digest) give a third ratio,
what a process pays when another one already prepared the tape. The synthetic events reach hftbacktest as an npz
in its event layout whose local times are Grinder's corrected local times, so both engines see
the same feed latency; fills are compared one for one as in bench/agreement.py. They can differ on the
synthetic set, whose sweeps are frequent: hftbacktest's example uses the price tick as order id
on both sides, so it cannot post a sell where a buy that has filled (fill not yet received) still
sits in its local order dict, while Grinder identifies a quote by side and price and posts it.

Grinder keeps compiled kernels on disk: its synthetic run happens twice, first in a process whose
NUMBA_CACHE_DIR is empty (it compiles), then in a second process on that same cache (it loads).
Their first-call times show what a fresh process pays. hftbacktest's strategy is compiled in every
process (its JIT warm-up is reported alongside).

Prints a table and writes bench/out/backtest_speed.json. Run:
`.venv/bin/python bench/backtest_speed.py [--events N] [--seed S] [--window NAME ...] [--no-real]`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from agreement import PEERS, compare, grinder_settings, peer, run_grinder, window_tape  # noqa: E402
from real_windows import REPO, WINDOWS  # noqa: E402

SYNTH = "synthetic"  # dataset name; also the peer's output prefix
SYNTH_VENUE, SYNTH_SYMBOL = "synthetic", "SYNTHUSDT"
PEER_PY = PEERS / ".venv-hftbacktest" / "bin" / "python"


def hftbacktest_events(tape, local: np.ndarray) -> tuple[np.ndarray, bool]:
    """The tape as an hftbacktest event array with local times `local`, and whether rows had to be split.

    A reset and the snapshot after it become a DEPTH_CLEAR per side (price = that side's deepest
    snapshot level, as hftbacktest's converters write it) before that side's snapshot rows. Rows
    carry EXCH_EVENT|LOCAL_EVENT when local time never decreases in exchange order; otherwise every
    row appears twice, EXCH-only in exchange order then LOCAL-only in (stable) local order, which
    is the order Grinder's local side uses.
    """
    from grinder.data.ingest.hftbacktest import (
        BUY_EVENT,
        DEPTH_CLEAR_EVENT,
        DEPTH_EVENT,
        DEPTH_SNAPSHOT_EVENT,
        EVENT_DTYPE,
        EXCH_EVENT,
        LOCAL_EVENT,
        SELL_EVENT,
        TRADE_EVENT,
    )
    from grinder.data.schema import BOOK_RESET, BOOK_SNAPSHOT, SIDE_ASK, SIDE_BID
    from grinder.data.tape import EV_TRADE

    n = len(tape)
    kind, side = tape.kind, tape.side
    ev = np.full(n, DEPTH_EVENT, np.uint64)
    ev[kind == BOOK_SNAPSHOT] = DEPTH_SNAPSHOT_EVENT
    ev[kind == EV_TRADE] = TRADE_EVENT
    ev |= np.where(side > 0, np.uint64(BUY_EVENT), np.uint64(SELL_EVENT))
    rows = np.zeros(n, EVENT_DTYPE)
    rows["exch_ts"] = tape.ts_exch
    rows["local_ts"] = local
    rows["px"] = tape.price
    rows["qty"] = tape.qty
    at, clears = [], []
    for r in np.flatnonzero(kind == BOOK_RESET):
        end = r + 1
        while end < n and kind[end] == BOOK_SNAPSHOT and tape.ref[end] == tape.ref[r]:
            end += 1
        if end == r + 1:
            # hftbacktest has no "clear everything" row; synthetic data never has a bare reset.
            raise ValueError(f"reset at row {r} is not followed by a snapshot")
        ev[r] = 0  # dropped below
        for s, flag in ((SIDE_BID, BUY_EVENT), (SIDE_ASK, SELL_EVENT)):
            levels = r + 1 + np.flatnonzero(side[r + 1 : end] == s)
            if levels.size:
                first = levels[0]
                at.append(first)
                clears.append((DEPTH_CLEAR_EVENT | flag, tape.ts_exch[first], local[first], tape.price[levels[-1]]))
    rows["ev"] = ev
    if at:
        c = np.zeros(len(at), EVENT_DTYPE)
        c["ev"], c["exch_ts"], c["local_ts"], c["px"] = (np.array(x) for x in zip(*clears, strict=True))
        rows = np.insert(rows, at, c)
    rows = rows[rows["ev"] != 0]
    if np.all(np.diff(rows["local_ts"]) >= 0):
        rows["ev"] |= np.uint64(EXCH_EVENT | LOCAL_EVENT)
        return rows, False
    loc = rows[np.argsort(rows["local_ts"], kind="stable")]
    rows["ev"] |= np.uint64(EXCH_EVENT)
    loc["ev"] |= np.uint64(LOCAL_EVENT)
    return np.concatenate([rows, loc]), True


def make_synthetic(tmp: Path, events: int, seed: int) -> dict:
    """Generate the synthetic set into a lake under `tmp`, export it for hftbacktest; returns its facts."""
    from grinder.data.lake import Lake
    from grinder.data.synth import synth_batch
    from grinder.data.tape import EV_TRADE, load_tape
    from grinder.sim.backtest import corrected_local_times

    root, npz = tmp / "synth-lake", tmp / f"{SYNTH}.npz"
    t0 = time.perf_counter()
    Lake(root).write(synth_batch(events, seed=seed, venue=SYNTH_VENUE, symbol=SYNTH_SYMBOL), [], key=f"{seed}:{events}")
    gen_s = time.perf_counter() - t0
    tape = load_tape(root, SYNTH_VENUE, SYNTH_SYMBOL)
    local = corrected_local_times(tape)
    t0 = time.perf_counter()
    data, split = hftbacktest_events(tape, local)
    np.savez(npz, data=data)  # uncompressed: hftbacktest's np.load then costs no inflate time
    export_s = time.perf_counter() - t0
    trades = tape.price[tape.kind == EV_TRADE]
    return {
        "lake": str(root),
        "npz": str(npz),
        "npz_mb": npz.stat().st_size / 2**20,
        "events": len(tape),
        "hftbacktest_rows": len(data),
        "local_order_split": split,
        "local_clock_offset_ns": int(local[0] - tape.ts_local[0]),
        "hours": float(tape.ts_exch[-1] - tape.ts_exch[0]) / 3.6e12,
        "trade_price_range": [float(trades.min()), float(trades.max())],
        "tick_size": tape.instrument.tick_size,
        "lot_size": tape.instrument.lot_size,
        "min_notional": tape.instrument.min_notional,
        "generate_and_write_s": gen_s,
        "export_s": export_s,
    }


# Runs a script as __main__ and reports the process's peak RSS (VmHWM) as it exits. ru_maxrss would
# not do: Linux folds the parent's high-water mark into the child's at fork + exec, so every child of
# this (large) process would report at least this process's peak.
_PEAK_WRAPPER = """
import runpy, sys
sys.argv = sys.argv[1:]
try:
    runpy.run_path(sys.argv[0], run_name="__main__")
finally:
    hwm = [line.split()[1] for line in open("/proc/self/status") if line.startswith("VmHWM:")][0]
    print(f"\\npeak_rss_kb {hwm}", flush=True)
"""


def spawn(python: Path, script: Path, args: list[str], log: Path, env: dict | None = None) -> float:
    """Run `script` with `args` in a fresh `python` process (output to `log`); returns its peak RSS in MB."""
    with open(log, "w") as fh:
        rc = subprocess.run([str(python), "-c", _PEAK_WRAPPER, str(script), *args], stdout=fh, stderr=fh, env=env)
    if rc.returncode:
        sys.exit(f"{script} {' '.join(args)} failed ({rc.returncode}):\n{log.read_text()[-4000:]}")
    peak = [line for line in log.read_text().splitlines() if line.startswith("peak_rss_kb ")][-1]
    return int(peak.split()[1]) / 1024


def run_peer(name: str, extra: list[str], out: Path) -> dict:
    """hftbacktest's grid on one dataset in a fresh process; its summary plus the process's peak RSS."""
    rss = spawn(PEER_PY, PEERS / "hftbacktest_grid.py", ["--out", str(out), *extra], out / f"{name}.log")
    s = json.loads((out / f"{name}_summary.json").read_text())
    return {"summary": s, "peak_rss_mb": rss}


def run_grinder_child(name: str, lake: Path, peer_out: Path, cache: Path, offset: int | None) -> dict:
    """Grinder's measurement of one dataset in a fresh process on numba cache `cache`; its report."""
    result = peer_out / f"{name}_grinder.json"
    args = ["--child", name, "--lake", str(lake), "--peer-out", str(peer_out), "--result", str(result)]
    args += [] if offset is None else ["--offset", str(offset)]
    env = {**os.environ, "NUMBA_CACHE_DIR": str(cache)}
    rss = spawn(Path(sys.executable), Path(__file__), args, peer_out / f"{name}_grinder.log", env)
    return {**json.loads(result.read_text()), "peak_rss_mb": rss}


def child(name: str, lake: Path, peer_out: Path, offset: int | None, result: Path) -> None:
    """In a fresh process: load the tape, run Grinder like bench/agreement.py, time every first call."""
    t0 = time.perf_counter()
    import grinder.sim.backtest  # noqa: F401 - the engine is compiled (or its cache loaded) on import
    import grinder.strategies.static_grid  # noqa: F401
    from grinder.data.tape import load_tape

    import_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    tape = window_tape(name, lake) if name in WINDOWS else load_tape(lake, SYNTH_VENUE, SYNTH_SYMBOL)
    load_s = time.perf_counter() - t0
    s, pf = peer(name, peer_out, False)  # hftbacktest already ran: this only reads its outputs
    if offset is not None:
        # The export already shifted the npz's local times by this much (hftbacktest adds nothing).
        s["conversion"]["local_ts_offset_added_ns"] = offset
    replays = peer_out / f"{name}-replays-{os.getpid()}"  # empty: the first load_or_prepare stores
    try:
        r, gf = run_grinder(tape, s, replays)
    finally:
        shutil.rmtree(replays, ignore_errors=True)
    c = compare(name, s, pf, r, gf)
    c.update(
        **end_to_end(name, lake, s, r.digest),
        events=len(tape),
        tape_mb=tape.nbytes / 2**20,
        import_s=import_s,
        load_s=load_s,
        first_run_s=r._first_s,
        counters=r.counters,
    )
    result.write_text(json.dumps(c, default=str))


def end_to_end(name: str, lake: Path, s: dict, digest: str, repeat: int = 5) -> dict:
    """Grinder runs from the lake, each as `grinder backtest` does one; seconds, and every run's digest must
    be `digest` (the measured run's).

    `end_to_end_s`: best of `repeat` runs of load_tape (without the BBO table a backtest never reads),
    prepare and run_backtest. Then as `grinder backtest --cache` does them, with the lake's tape and replay
    caches (decisions 005, 006) emptied first: `end_to_end_first_cached_s`, the first run, which builds and
    stores both; `end_to_end_cached_s`, the best of `repeat` later runs, which open them as memory maps.
    The caches are removed afterwards."""
    from grinder.data import tape_cache
    from grinder.data.tape import load_tape
    from grinder.sim import replay_cache
    from grinder.sim.backtest import prepare, run_backtest
    from grinder.strategies.static_grid import static_grid

    params, venue, start = grinder_settings(s)
    p = params.as_array()
    if name in WINDOWS:
        where = (lake / name, "binance-usdm", WINDOWS[name][1])
    else:
        where = (lake, SYNTH_VENUE, SYNTH_SYMBOL)
    caches = (tape_cache.cache_root(where[0]), replay_cache.cache_root(where[0]))

    def once(cached: bool) -> float:
        t0 = time.perf_counter()
        tape = load_tape(*where, bbo=False, cache=cached)
        replay = prepare(tape, venue, caches[1] if cached else None)
        r = run_backtest(tape, static_grid, p, venue, start_ns=start, replay=replay)
        took = time.perf_counter() - t0
        if r.digest != digest:
            raise AssertionError(f"{name}: an end-to-end run's digest differs from the measured run's")
        return took

    for d in caches:
        shutil.rmtree(d, ignore_errors=True)
    try:
        out = {"end_to_end_s": min(once(False) for _ in range(repeat))}
        out["end_to_end_first_cached_s"] = once(True)
        out["end_to_end_cached_s"] = min(once(True) for _ in range(repeat))
    finally:
        for d in caches:
            shutil.rmtree(d, ignore_errors=True)
    return out


def row(name: str, hft: dict, g: dict) -> dict:
    """One line of the table: speeds, their ratios, memory and agreement of both engines on a dataset."""
    t = hft["summary"]["timing"]
    hft_eps, g_eps = g["events_per_s"]  # each engine's own event count (they differ by a few rows at most)
    g_loop, prep = g["grinder_loop_s"], g["grinder_prepare_s"]
    loop_c, prep_c = g["grinder_loop_cached_s"], g["grinder_prepare_cached_s"]
    hft_e2e_eps = hft_eps * t["loop_wall_s"] / (t["npz_load_s"] + t["loop_wall_s"])
    return {
        "dataset": name,
        "events": g["events"],
        "hftbacktest_source_events": t["source_events"],
        "hftbacktest_rows": t["rows_processed"],
        "hftbacktest_loop_s": t["loop_wall_s"],
        "hftbacktest_loop_s_all": t["loop_wall_s_all"],  # run-to-run spread: a busy 2-core machine shows here
        "grinder_loop_s": g_loop,
        "hftbacktest_events_per_s": hft_eps,
        "grinder_events_per_s": g_eps,
        "ratio": g_eps / hft_eps,
        "grinder_prepare_s": prep,
        "ratio_with_prepare": g_eps * g_loop / (g_loop + prep) / hft_eps,
        # One backtest from the data on disk for both: Grinder's load_tape + prepare + run_backtest (best of
        # 5, after the measured run) against hftbacktest's npz load (once, in its process) + its best loop.
        "grinder_end_to_end_s": g["end_to_end_s"],
        "hftbacktest_npz_load_s": t["npz_load_s"],
        # Each engine's events per second from disk to result; events as each engine counts them.
        "ratio_end_to_end": (g_eps * g_loop / g["end_to_end_s"]) / hft_e2e_eps,
        # The same from Grinder's on-disk caches, which a first `grinder backtest --cache` run writes, as
        # hftbacktest's npz is written once by its converter (neither one-off step is counted here; the
        # first run's time is reported).
        "grinder_end_to_end_first_cached_s": g["end_to_end_first_cached_s"],
        "grinder_end_to_end_cached_s": g["end_to_end_cached_s"],
        "ratio_end_to_end_cached": (g_eps * g_loop / g["end_to_end_cached_s"]) / hft_e2e_eps,
        # The replay from the cache: opened and paged in; counted with the same loop as the ratios above.
        # The loop on the read-only maps is timed too (after the first, so on a warmer process).
        "grinder_prepare_store_s": g["grinder_prepare_store_s"],
        "grinder_prepare_cached_s": prep_c,
        "ratio_with_cached_prepare": g_eps * g_loop / (g_loop + prep_c) / hft_eps,
        "grinder_loop_cached_s": loop_c,
        "ratio_loop_cached": g_eps * g_loop / loop_c / hft_eps,
        "hftbacktest_peak_rss_mb": hft["peak_rss_mb"],
        "grinder_peak_rss_mb": g["peak_rss_mb"],
        "hftbacktest_jit_warmup_s": t["jit_warmup_s"],
        # What a fresh process pays before the loop runs at speed: compiled kernels loaded from disk.
        "grinder_warmup_s": g["import_s"] + g["first_run_s"] - g_loop,
        "grinder_first_run_s": g["first_run_s"],
        "fills": (g["hftbacktest_fills"], g["grinder_fills"]),
        "matched": g["matched"],
        "matched_share": g["matched_share"],
        "position": g["position"],
        "balance": g["balance"],
        "fees": g["fees"],
        "first_only_hftbacktest": g["first_only_hftbacktest"],
        "first_only_grinder": g["first_only_grinder"],
    }


def print_table(rows: list[dict]) -> None:
    """The speed and memory table, one line per dataset."""
    print(
        f"{'':<29}{'M events/s':^20}{'':<42}{'replay cache':^18}{'peak RSS MB':^15}{'warm-up s':^15}{'fills':^15}\n"
        f"{'dataset':<18}{'events':>11}{'hftbt':>10}{'Grinder':>10}{'ratio':>7}{'prep s':>8}{'w/ prep':>12}"
        f"{'e2e':>7}{'cached':>8}{'prep s':>8}{'w/ prep':>10}"
        f"{'hftbt':>7}{'Grinder':>8}{'hftbt':>7}{'Grinder':>8}{'hftbt/Grinder':>15}{'matched':>9}"
    )
    for r in rows:
        fills = f"{r['fills'][0]}/{r['fills'][1]}"
        print(
            f"{r['dataset']:<18}{r['events']:>11,}{r['hftbacktest_events_per_s'] / 1e6:>10.1f}"
            f"{r['grinder_events_per_s'] / 1e6:>10.1f}{r['ratio']:>6.1f}x{r['grinder_prepare_s']:>8.2f}"
            f"{r['ratio_with_prepare']:>11.2f}x{r['ratio_end_to_end']:>6.2f}x{r['ratio_end_to_end_cached']:>7.2f}x"
            f"{r['grinder_prepare_cached_s']:>8.3f}{r['ratio_with_cached_prepare']:>9.2f}x"
            f"{r['hftbacktest_peak_rss_mb']:>7.0f}{r['grinder_peak_rss_mb']:>8.0f}"
            f"{r['hftbacktest_jit_warmup_s']:>7.1f}{r['grinder_warmup_s']:>8.1f}{fills:>15}{r['matched_share']:>9.1%}"
        )


def compile_report(cold: dict, warm: dict, hft: dict) -> dict:
    """Grinder's first calls in a fresh process, cold vs warm numba cache; printed and returned."""
    stages = [
        ("import (engine compiled on import)", "import_s"),
        ("load_tape", "load_s"),
        ("prepare", "grinder_prepare_s"),
        ("first run_backtest", "first_run_s"),
    ]
    print("\nGrinder's first calls in a fresh process, synthetic set (NUMBA_CACHE_DIR empty, then primed by it):")
    print(f"  {'stage':<36}{'cold s':>9}{'warm s':>9}")
    for label, k in stages:
        print(f"  {label:<36}{cold[k]:>9.2f}{warm[k]:>9.2f}")
    total = {w: sum(d[k] for _, k in stages) for w, d in (("cold", cold), ("warm", warm))}
    print(f"  {'total':<36}{total['cold']:>9.2f}{total['warm']:>9.2f}")
    compile_s = total["cold"] - total["warm"]
    print(
        f"  compile (cold - warm): {compile_s:.1f} s, paid once per machine and code version; a warm first "
        f"run_backtest is {warm['first_run_s']:.2f} s vs {warm['grinder_loop_s']:.2f} s steady. "
        f"Peak RSS cold {cold['peak_rss_mb']:.0f} MB, warm {warm['peak_rss_mb']:.0f} MB.\n"
        f"  hftbacktest compiles its strategy in every process (no disk cache): JIT warm-up on a 20,000-row "
        f"prefix {hft['summary']['timing']['jit_warmup_s']:.1f} s.\n"
        f"  Replay cache (warm): storing a replay (build + synced write) {warm['grinder_prepare_store_s']:.2f} s "
        f"once; opening it again and reading every page {warm['grinder_prepare_cached_s']:.3f} s, against "
        f"{warm['grinder_prepare_s']:.2f} s to prepare it; the loop on the maps {warm['grinder_loop_cached_s']:.2f} s "
        f"(timed after the in-memory one, {warm['grinder_loop_s']:.2f} s), same digest."
    )
    keys = [k for _, k in stages] + [
        "grinder_loop_s",
        "peak_rss_mb",
        "grinder_prepare_store_s",
        "grinder_prepare_cached_s",
        "grinder_loop_cached_s",
    ]
    return {
        "cold": {k: cold[k] for k in keys},
        "warm": {k: warm[k] for k in keys},
        "total_s": total,
        "compile_s": compile_s,
        "hftbacktest_jit_warmup_s": hft["summary"]["timing"]["jit_warmup_s"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=6_000_000, help="synthetic events (book rows + trades)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--order-qty", type=float, default=0.01, help="synthetic set: 0.01 at ~50,000 is ~500 USDT")
    ap.add_argument("--max-position", type=float, help="synthetic set (default: 50 orders, as 5 / 0.1 on the windows)")
    ap.add_argument("--window", action="append", choices=list(WINDOWS), help="real windows (default: all)")
    ap.add_argument("--no-real", action="store_true", help="synthetic set only")
    ap.add_argument("--keep", action="store_true", help="keep the scratch directory (lakes, npz, logs)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--lake", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--peer-out", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--offset", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        child(a.child, a.lake, a.peer_out, a.offset, a.result)
        return

    max_pos = a.max_position if a.max_position is not None else round(50 * a.order_qty, 12)
    subprocess.run(["bash", str(PEERS / "setup_hftbacktest.sh")], check=True, stdout=subprocess.DEVNULL)
    tmp = Path(tempfile.mkdtemp(prefix="grinder-speed-"))
    out, cache = tmp / "out", tmp / "numba-cache"
    out.mkdir()
    cache.mkdir()  # empty: the first Grinder child compiles every kernel into it
    results: dict = {"host": {"python": platform.python_version(), "cpus": os.cpu_count()}}
    rows = []
    try:
        t0 = time.perf_counter()
        syn = make_synthetic(tmp, a.events, a.seed)
        paths = ("lake", "npz")  # scratch, gone after the run
        results["synthetic"] = {k: v for k, v in syn.items() if k not in paths}
        results["synthetic"].update(seed=a.seed, order_qty=a.order_qty, max_position=max_pos)
        print(
            f"synthetic: {syn['events']:,} events over {syn['hours']:.1f} h (seed {a.seed}), prices "
            f"{syn['trade_price_range'][0]:.1f}-{syn['trade_price_range'][1]:.1f}; order qty {a.order_qty} "
            f"(~{a.order_qty * syn['trade_price_range'][0]:.0f} USDT, min notional {syn['min_notional']:g}), max "
            f"position {max_pos}; generated and written in {syn['generate_and_write_s']:.1f} s; hftbacktest npz "
            f"{syn['hftbacktest_rows']:,} rows, {syn['npz_mb']:.0f} MB, "
            f"{'rows split (local order differs)' if syn['local_order_split'] else 'every row EXCH|LOCAL'}, "
            f"local clock offset {syn['local_clock_offset_ns']} ns",
            flush=True,
        )
        peer_args = ["--npz", syn["npz"], "--tick-size", str(syn["tick_size"]), "--lot-size", str(syn["lot_size"])]
        peer_args += ["--name", SYNTH, "--order-qty", str(a.order_qty), "--max-position", str(max_pos)]
        hft = run_peer(SYNTH, peer_args, out)
        print(f"  hftbacktest done ({hft['summary']['timing']['loop_wall_s']:.2f} s loop)", flush=True)
        lake, offset = Path(syn["lake"]), syn["local_clock_offset_ns"]
        cold = run_grinder_child(SYNTH, lake, out, cache, offset)
        warm = run_grinder_child(SYNTH, lake, out, cache, offset)
        print(f"  Grinder done (cold and warm numba cache, {warm['grinder_loop_s']:.2f} s loop)", flush=True)
        rows.append(row(SYNTH, hft, warm))
        results["compile"] = compile_report(cold, warm, hft)

        windows = [] if a.no_real else a.window or list(WINDOWS)
        lake = tmp / "lake"
        for w in windows:
            window_tape(w, lake)  # ingest here, so the measured child only loads the tape
            hft = run_peer(w, ["--window", w], out)
            rows.append(row(w, hft, run_grinder_child(w, lake, out, cache, None)))
            print(f"  {w} done", flush=True)
        results["wall_s"] = time.perf_counter() - t0
    finally:
        if a.keep:
            print(f"scratch kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    print(
        "\nOne backtest, same data and strategy; loops best of 5 (hftbacktest: fresh backtester each, build "
        "excluded; Grinder: after its once-per-tape prepare, timed apart). ratio = Grinder events/s over "
        "hftbacktest's; 'w/ prep' counts prepare in Grinder's time; 'e2e' is one backtest from the data on disk "
        "for both (Grinder: load_tape without the BBO table + prepare + run_backtest, best of 5; hftbacktest: npz "
        "load + its best loop); 'cached' is the same Grinder run as `grinder backtest --cache` makes it "
        "once the lake's tape and replay caches exist (best of 5 after the first run, which stores them: its time "
        "is in the JSON), as hftbacktest's npz exists once its converter ran. "
        "RSS = each engine's process peak (VmHWM). "
        "Warm-up = what a fresh process pays before its loop runs at speed: hftbacktest JIT-compiles its strategy "
        "(every process), Grinder loads its kernels from the primed on-disk cache (import + first run - loop). "
        "Replay cache: Grinder's replay opened from the cache another process stored (key hashed, maps opened, "
        "every page read once), and the ratio counting it with the same loop (the loop on the maps gives the same "
        "digest; its time is in the JSON as grinder_loop_cached_s)."
    )
    print_table(rows)
    for r in rows:
        if r["matched"] != max(r["fills"]):
            print(
                f"{r['dataset']}: {max(r['fills']) - r['matched']} fills differ; position {r['position']}, "
                f"balance {r['balance']}, fees {r['fees']}\n  first only in hftbacktest: {r['first_only_hftbacktest']}"
                f"\n  first only in Grinder:     {r['first_only_grinder']}"
            )
    print(f"total wall time {results['wall_s']:.0f} s")
    results["rows"] = rows
    (REPO / "bench" / "out").mkdir(exist_ok=True)
    (REPO / "bench" / "out" / "backtest_speed.json").write_text(json.dumps(results, indent=1, default=str))


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    main()
