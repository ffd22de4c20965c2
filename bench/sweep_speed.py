"""Sweep throughput: parameter sets x events per second, Grinder's sweep against hftbacktest run once per set.

Same run, same data, same strategy: hftbacktest's grid example (20 levels a side, 10 ms entry and
response latency, risk-averse queue, no partial fills, fees 0.0002/0.0005, a decision every 100 ms,
hftbacktest's local clock offset and first event as the decision clock origin, as in
bench/agreement.py) over a grid of parameter sets: grid interval x half spread (8 x 8 = 64 sets),
x order quantity (x 4 = 256 sets; the 64 are the 256's sets at the base quantity). The sets are
written once in ticks; hftbacktest reads them as ticks, Grinder's static_grid as quote currency
(ticks x tick size, the same float product hftbacktest computes).

- hftbacktest 2.4.4 (its own venv, bench/peers/) runs `hftbacktest_grid.py --sweep-file` in a fresh
  process per sweep size: the event array is loaded once, the strategy JIT-compiled once (reported
  apart, not timed), then every set is a full run: a fresh backtester built on the array, the loop,
  the final state. Its time is the best of `--peer-repeat` passes over all sets.
- Grinder runs `grinder.sweep.study.run_study` on one window with workers = CPU count, in a fresh
  process per sweep size (so each peak RSS belongs to one sweep size). Its time is one whole study:
  loading the tape, preparing the replay once, every set's backtest, the ranking; best of `--repeat`
  studies after `--warmups` untimed studies of the same grid (kernels loaded from numba's cache,
  vectorbt imported, and the process's heaps grown to the size the study keeps reusing, decision
  016: the one-off costs, reported apart like hftbacktest's JIT; hftbacktest's heaps settle in its
  first set). Two, because after one the next study still faulted in 7,000-17,000 fresh pages
  (after two, mostly a few hundred, at times a few thousand); every study's page faults are in
  the JSON. The same studies run again with 1 worker.
- A third Grinder process (`--no-profile` skips it) times every set of the smallest sweep alone,
  single-threaded, at 100 ms and 1 s decision steps, and fits per-run, per-decision, per-order and
  per-fill costs: where Grinder's time goes.

Datasets: real windows (default btcusdt_20240808, ingested as bench/agreement.py does) and a
synthetic set (`--events`, default 1 M; 0 skips it) written for both engines as in
bench/backtest_speed.py. Every set's fill count, final position and fees are compared between the
engines. Prints a table and writes bench/out/sweep_speed.json. Run:
`.venv/bin/python bench/sweep_speed.py [--sets 64 256] [--window NAME ...] [--events N] [--repeat N]`.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from agreement import PEERS, window_tape  # noqa: E402
from backtest_speed import PEER_PY, SYNTH, SYNTH_SYMBOL, SYNTH_VENUE, make_synthetic, spawn  # noqa: E402
from real_windows import REPO, WINDOWS  # noqa: E402

# The grid, in ticks. 64 sets: interval x half spread at the base quantity; 128/192/256 add quantities.
INTERVAL_TICKS = (2, 5, 10, 15, 20, 30, 40, 50)
HALF_SPREAD_TICKS = (1, 5, 10, 20, 30, 40, 60, 80)
QTY_FACTORS = (1, 0.5, 2, 3)  # x the dataset's base order quantity; the first is the 64-set grid's
LEVELS = 20
WINDOW_QTY, WINDOW_MAX_POSITION = 0.1, 5.0  # the tutorial's, as in bench/agreement.py


def grid_ticks(n: int) -> tuple[tuple, tuple, tuple]:
    """Axes (interval ticks, half-spread ticks, quantity factors) of an n-set grid, n = k*k (k <= 8) or 64*q."""
    if n % 64 == 0 and 1 <= n // 64 <= len(QTY_FACTORS):
        return INTERVAL_TICKS, HALF_SPREAD_TICKS, QTY_FACTORS[: n // 64]
    k = math.isqrt(n)
    if k * k != n or not 1 <= k <= 8:
        raise SystemExit(f"--sets {n}: use a square up to 64 (4, 16, 36, ...) or 64, 128, 192, 256")
    pick = np.linspace(0, 7, k).round().astype(int)
    return tuple(INTERVAL_TICKS[i] for i in pick), tuple(HALF_SPREAD_TICKS[i] for i in pick), QTY_FACTORS[:1]


def make_sets(n: int, base_qty: float, max_position: float) -> list[dict]:
    """The n parameter sets in hftbacktest's terms, in the order of Grinder's grid (last axis fastest)."""
    iv, hs, qf = grid_ticks(n)
    return [
        {
            "grid_num": LEVELS,
            "grid_interval_ticks": i,
            "half_spread_ticks": h,
            "order_qty": round(base_qty * f, 12),
            "max_position": max_position,
        }
        for i, h, f in itertools.product(iv, hs, qf)
    ]


def minor_faults() -> int:
    """Minor page faults of this process so far (every thread)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def vm_hwm_mb() -> float:
    """This process's peak RSS so far (VmHWM), MB."""
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("VmHWM:")) / 1024


# ---------------------------------------------------------------------------------------------
# Grinder, in a child process
# ---------------------------------------------------------------------------------------------
def _lake_selection(a) -> tuple[Path, str, str]:
    """(lake root, venue, symbol) of the child's dataset."""
    if a.dataset in WINDOWS:
        return a.lake / a.dataset, "binance-usdm", WINDOWS[a.dataset][1]
    return a.lake, SYNTH_VENUE, SYNTH_SYMBOL


def _grinder_setup(a):
    """Tape loader, strategy grid, venue and window of a child, as the peer's summary `a.peer_json` set them."""
    from grinder.data.tape import load_tape
    from grinder.sim.backtest import VenueConfig
    from grinder.strategies.static_grid import STRATEGY
    from grinder.sweep.folds import Window
    from grinder.sweep.spec import expand

    peer = json.loads(a.peer_json.read_text())
    st, conv = peer["settings"], peer["conversion"]
    sets = json.loads(a.sets_file.read_text())

    if a.dataset in WINDOWS:
        window_tape(a.dataset, a.lake)  # ingested into the lake on first use
    where = _lake_selection(a)

    def load():
        # As run_study's own loader reads a window (Arrow's freed buffers kept for the next load, no bbo).
        return load_tape(*where, release_buffers=False, bbo=False)

    tape = load()
    tick = tape.instrument.tick_size
    if tick != st["tick_size"]:
        raise SystemExit(f"tick size {tick} differs from hftbacktest's {st['tick_size']}")
    axes = {
        "interval": list(dict.fromkeys(tick * s["grid_interval_ticks"] for s in sets)),
        "half_spread": list(dict.fromkeys(tick * s["half_spread_ticks"] for s in sets)),
        "order_qty": list(dict.fromkeys(s["order_qty"] for s in sets)),
    }
    fixed = {"levels": sets[0]["grid_num"], "max_position": sets[0]["max_position"]}
    grid = expand(STRATEGY, axes, fixed)
    for p, s in zip(grid.sets, sets, strict=True):  # the same sets, in the same order, as hftbacktest's
        want = (s["grid_num"], tick * s["grid_interval_ticks"], tick * s["half_spread_ticks"], s["order_qty"])
        if (p.levels, p.interval, p.half_spread, p.order_qty) != want or p.max_position != s["max_position"]:
            raise SystemExit(f"grid set {p} is not hftbacktest's {s}")
    offset = a.offset if a.offset is not None else conv["local_ts_offset_added_ns"]
    venue = VenueConfig(
        entry_latency_ns=st["order_latency"]["entry_ns"],
        response_latency_ns=st["order_latency"]["response_ns"],
        step_ns=st["step_ns"],
        local_clock_offset_ns=offset,
        maker_fee=st["fee_model"]["maker"],
        taker_fee=st["fee_model"]["taker"],
    )
    start = int(conv["first_exch_ts"])
    window = Window("all", start, max(int(tape.ts_exch[-1]), start) + 1, "in")
    return tape, load, grid, venue, window


def child_sweep(a) -> None:
    """Grinder's sweeps of one size: an untimed warm-up study of the grid, then `a.repeat` studies per worker count."""
    t0 = time.perf_counter()
    import grinder.sim.backtest  # noqa: F401 - the engine's kernels load from numba's cache on import
    import grinder.sweep.runner as runner
    from grinder.sweep.spec import Grid
    from grinder.sweep.study import Selection, run_study

    import_s = time.perf_counter() - t0
    hwm = {"after_import": vm_hwm_mb()}
    tape, load, grid, venue, window = _grinder_setup(a)
    events = len(tape)
    hwm["after_setup"] = vm_hwm_mb()  # + the tape, loaded once to check the grid against it
    del tape  # each study loads its own, inside the timed call
    marks: dict[str, float] = {}

    def timed_load(_sel, _w):
        marks["load0"] = time.perf_counter()
        tape = load()
        marks["load1"] = time.perf_counter()
        return tape

    # The replay is built inside run_window; time it by wrapping the name run_window calls.
    prepare = getattr(runner, "prepare", None)
    if prepare is not None:

        def timed_prepare(*args, **kw):
            marks["prep0"] = time.perf_counter()
            rep = prepare(*args, **kw)
            marks["prep1"] = time.perf_counter()
            return rep

        runner.prepare = timed_prepare

    def progress(_name: str, done: int, total: int) -> None:
        if done == total:
            marks["runs1"] = time.perf_counter()

    sel = Selection(a.lake, "", "")  # the loader ignores it

    def study(g, workers: int) -> dict:
        marks.clear()
        f0 = minor_faults()
        t0 = time.perf_counter()
        res = run_study(sel, g, [window], venue, workers=workers, load=timed_load, progress=progress)
        t1 = time.perf_counter()
        total = t1 - t0
        split = {"total_s": total, "page_faults": minor_faults() - f0, "load_s": marks["load1"] - marks["load0"]}
        if "prep1" in marks:
            split["prepare_s"] = marks["prep1"] - marks["prep0"]
            split["runs_s"] = marks["runs1"] - marks["prep1"]  # row blocks, every set's backtest and metrics
        split["rank_s"] = t1 - marks["runs1"]  # results table, Sharpe ratios, ranking
        split["other_s"] = total - sum(v for k, v in split.items() if k.endswith("_s") and k != "total_s")
        split["_res"] = res
        return split

    warmups = []
    for _ in range(a.warmups):
        w = study(grid, os.cpu_count() or 1)
        warmups.append({"s": w["total_s"], "page_faults": w["page_faults"]})
    hwm["after_warmup"] = vm_hwm_mb()

    runs, digests, table_mb, sets_out = {}, None, 0.0, None
    # The same studies over a lake whose tape and replay caches were built by an untimed study first
    # (`grinder sweep --cache`): hftbacktest's npz, built once before its timing, is the counterpart.
    from grinder.data.tape import load_tape
    from grinder.sweep import study as study_mod

    croot, cvenue, csymbol = _lake_selection(a)
    study_prepare = study_mod.prepare

    def cached_study(g, workers: int) -> dict:
        marks.clear()

        def load_cached(_sel, _w):
            marks["load0"] = time.perf_counter()
            tape = load_tape(croot, cvenue, csymbol, cache=True)
            marks["load1"] = time.perf_counter()
            return tape

        def prep(*args, **kw):
            marks["prep0"] = time.perf_counter()
            rep = study_prepare(*args, **kw)
            marks["prep1"] = time.perf_counter()
            return rep

        study_mod.prepare = prep
        try:
            t0 = time.perf_counter()
            res = run_study(Selection(croot, cvenue, csymbol, cache=True), g, [window], venue, workers=workers,
                            load=load_cached, progress=progress)  # fmt: skip
            t1 = time.perf_counter()
        finally:
            study_mod.prepare = study_prepare
        split = {
            "total_s": t1 - t0,
            "load_s": marks["load1"] - marks["load0"],
            "prepare_s": marks["prep1"] - marks["prep0"],
        }
        split["runs_s"] = marks["runs1"] - marks["prep1"]
        split["rank_s"] = t1 - marks["runs1"]
        split["other_s"] = split["total_s"] - sum(v for k, v in split.items() if k != "total_s")
        split["_res"] = res
        return split

    for workers in dict.fromkeys([os.cpu_count() or 1, 1]):
        passes = []
        for _ in range(a.repeat):
            s = study(grid, workers)
            res = s.pop("_res")
            d = list(res.results["digest"])
            if digests is None:
                digests = d
                table_mb = (
                    res.results.memory_usage(deep=True).sum()
                    + res.ranking.memory_usage(deep=True).sum()
                    + sum(t.nbytes + e.nbytes for t, e in res.equity.values())
                ) / 2**20
                cols = ["fills", "position", "fees", "equity", "placed", "cancelled", "rejected", "expired"]
                sets_out = res.results[cols].to_dict(orient="records")
            elif d != digests:
                raise SystemExit(f"workers={workers}: a study's digests differ from the first study's")
            del res
            passes.append(s)
        runs[str(workers)] = passes
        hwm[f"after_workers_{workers}"] = vm_hwm_mb()
    cached_study(Grid(grid.strategy, grid.axes, grid.fixed, grid.sets[:2]), os.cpu_count() or 1)  # builds the caches
    cached = []
    for _ in range(a.repeat):
        s = cached_study(grid, os.cpu_count() or 1)
        res = s.pop("_res")
        if list(res.results["digest"]) != digests:
            raise SystemExit("a study over the cached tape and replay gives other digests than one without")
        del res
        cached.append(s)
    hwm["after_cached"] = vm_hwm_mb()
    out = {
        "events": events,
        "sets": len(grid),
        "import_s": import_s,
        "warmup_s": sum(w["s"] for w in warmups),
        "warmups": warmups,
        "workers": runs,
        "cached": cached,
        "results_table_mb": table_mb,
        "vm_hwm_mb": hwm,
        "set_results": sets_out,
    }
    a.result.write_text(json.dumps(out, default=float))


def child_profile(a) -> None:
    """Every set alone, one thread, at 100 ms and 1 s steps: per-run, per-decision, per-order, per-fill costs."""
    import grinder.sim.backtest as bt

    tape, _load, grid, venue, window = _grinder_setup(a)
    obs = []
    for step in (venue.step_ns, venue.step_ns * 10):
        v = venue.model_copy(update={"step_ns": step})
        t0 = time.perf_counter()
        rep = bt.prepare(tape, v)
        prep_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        blocks = bt.row_blocks(tape, rep)
        blocks_s = time.perf_counter() - t0
        for p in grid.sets:
            vec = grid.strategy.vector(p)
            best = float("inf")
            for _ in range(a.repeat):
                t0 = time.perf_counter()
                r = bt.run_backtest(tape, grid.strategy, vec, v, start_ns=window.start_ns, replay=rep, blocks=blocks)
                best = min(best, time.perf_counter() - t0)
            c = r.counters
            obs.append(
                {
                    "step_ns": step,
                    "s": best,
                    "decisions": c["decisions"],
                    "orders": c["placed"] + c["cancelled"],
                    "fills": c["fills"],
                }
            )
        if step == venue.step_ns:
            # The floor of a run: no decision before the data ends, so no order; every block of rows is
            # skipped and what remains is the event walk plus run_backtest's own work (Python, funding, digest).
            after = int(max(tape.ts_exch[-1], rep.local_ts[-1])) + 1
            floor = float("inf")
            for _ in range(5):
                t0 = time.perf_counter()
                r = bt.run_backtest(tape, grid.strategy, vec, v, start_ns=after, replay=rep, blocks=blocks)
                floor = min(floor, time.perf_counter() - t0)
            floor_decisions = r.counters["decisions"]
        del rep, blocks
    x = np.array([[1.0, o["decisions"], o["orders"], o["fills"]] for o in obs])
    y = np.array([o["s"] for o in obs])
    coef, *_ = np.linalg.lstsq(x, y, rcond=None)
    fit = x @ coef
    at100 = [o for o in obs if o["step_ns"] == venue.step_ns]
    mean = lambda k: float(np.mean([o[k] for o in at100]))  # noqa: E731
    t_mean = mean("s")
    parts = {
        "per_run": coef[0],
        "decisions": coef[1] * mean("decisions"),
        "orders": coef[2] * mean("orders"),
        "fills": coef[3] * mean("fills"),
    }
    out = {
        "events": len(tape),
        "sets": len(grid),
        "prepare_s": prep_s,
        "row_blocks_s": blocks_s,
        "fit": {
            "per_run_ms": coef[0] * 1e3,
            "per_run_ns_per_event": coef[0] / len(tape) * 1e9,
            "per_decision_us": coef[1] * 1e6,
            "per_order_action_us": coef[2] * 1e6,
            "per_fill_us": coef[3] * 1e6,
            "r2": 1 - float(np.sum((y - fit) ** 2) / np.sum((y - y.mean()) ** 2)),
        },
        "step_100ms": {
            "mean_s": t_mean,
            "min_s": min(o["s"] for o in at100),
            "max_s": max(o["s"] for o in at100),
            "mean_decisions": mean("decisions"),
            "mean_orders": mean("orders"),
            "mean_fills": mean("fills"),
            "share": {k: v / t_mean for k, v in parts.items()},
        },
        "no_decision_run_s": floor,
        "no_decision_run_decisions": floor_decisions,
        "step_1s_mean_s": float(np.mean([o["s"] for o in obs if o["step_ns"] != venue.step_ns])),
        "observations": obs,
    }
    a.result.write_text(json.dumps(out, default=float))


# ---------------------------------------------------------------------------------------------
# The parent: data, both engines per sweep size, the table
# ---------------------------------------------------------------------------------------------
def run_child(
    kind: str, dataset: str, lake: Path, sets: Path, peer_json: Path, offset, repeat: int, log: Path, warmups: int
):
    """A Grinder child (`sweep` or `profile`) in a fresh process; its result and peak RSS (MB)."""
    result = log.with_suffix(".json")
    args = ["--child", kind, "--dataset", dataset, "--lake", str(lake), "--sets-file", str(sets)]
    args += ["--peer-json", str(peer_json), "--result", str(result), "--repeat", str(repeat), "--warmups", str(warmups)]
    args += [] if offset is None else ["--offset", str(offset)]
    rss = spawn(Path(sys.executable), Path(__file__), args, log)
    return json.loads(result.read_text()), rss


def agreement(peer_sets: list[dict], grinder_sets: list[dict]) -> dict:
    """Sets whose fill count, final position and fees agree between the engines; the first few that do not."""
    same, differ = 0, []
    for i, (p, g) in enumerate(zip(peer_sets, grinder_sets, strict=True)):
        ok = (
            p["fills"] == g["fills"]
            and abs(p["position"] - g["position"]) < 1e-9
            and abs(p["fee"] - g["fees"]) <= 1e-9 * max(1.0, abs(p["fee"]))
        )
        same += ok
        if not ok and len(differ) < 5:
            differ.append(
                {
                    "set": i,
                    "params": p["params"],
                    "fills": (p["fills"], g["fills"]),
                    "position": (p["position"], g["position"]),
                    "fees": (p["fee"], g["fees"]),
                }
            )
    shown = [0, len(peer_sets) // 3, 2 * len(peer_sets) // 3, len(peer_sets) - 1]
    sample = [
        {
            "set": i,
            "params": peer_sets[i]["params"],
            "fills": (peer_sets[i]["fills"], grinder_sets[i]["fills"]),
            "position": (round(peer_sets[i]["position"], 9), round(grinder_sets[i]["position"], 9)),
        }
        for i in dict.fromkeys(shown)
    ]
    return {"agree": same, "sets": len(peer_sets), "first_differing": differ, "sample": sample}


def measure(name: str, n: int, data: dict, tmp: Path, a) -> dict:
    """Both engines' sweeps of n sets over one dataset, each in its own fresh process."""
    d = tmp / "out" / f"{name}-{n}"
    d.mkdir(parents=True)
    sets = make_sets(n, data["base_qty"], data["max_position"])
    sets_file = d / "sets.json"
    sets_file.write_text(json.dumps(sets))
    peer_args = ["--out", str(d), *data["peer_args"], "--sweep-file", str(sets_file), "--repeat", str(a.peer_repeat)]
    peer_rss = spawn(PEER_PY, PEERS / "hftbacktest_grid.py", peer_args, d / "hftbacktest.log")
    peer_json = d / f"{name}_sweep.json"
    peer = json.loads(peer_json.read_text())
    print(f"  {name}, {n} sets: hftbacktest {peer['timing']['total_s']:.2f} s", flush=True)
    g, g_rss = run_child(
        "sweep", name, data["lake"], sets_file, peer_json, data["offset"], a.repeat, d / "grinder.log", a.warmups
    )
    pt, workers = peer["timing"], g["workers"]
    best = {w: min(p, key=lambda s: s["total_s"]) for w, p in workers.items()}
    wmax = str(max(map(int, workers)))
    gb = best[wmax]
    peer_rate = n * pt["source_events"] / pt["total_s"]
    g_rate = n * g["events"] / gb["total_s"]
    spread = lambda xs: max(xs) / min(xs) - 1  # noqa: E731 - run-to-run noise of one measurement
    row = {
        "dataset": name,
        "sets": n,
        "events": g["events"],
        "hftbacktest_events": pt["source_events"],
        "hftbacktest_s": pt["total_s"],
        "hftbacktest_s_all": pt["total_s_all"],
        "hftbacktest_spread": spread(pt["total_s_all"]),
        "hftbacktest_build_s": pt["passes"][pt["best_pass"]]["build_s"],
        "hftbacktest_loop_s": pt["passes"][pt["best_pass"]]["loop_s"],
        "hftbacktest_read_close_s": pt["passes"][pt["best_pass"]]["read_close_s"],
        "hftbacktest_per_set_min_sum_s": pt["per_set_min_sum_s"],
        "hftbacktest_npz_load_s": pt["npz_load_s"],
        "hftbacktest_jit_warmup_s": pt["jit_warmup_s"],
        "hftbacktest_set_events_per_s": peer_rate,
        "grinder_workers": int(wmax),
        "grinder_s": gb["total_s"],
        "grinder_s_all": [s["total_s"] for s in workers[wmax]],
        "grinder_spread": spread([s["total_s"] for s in workers[wmax]]),
        "grinder_split": {k: v for k, v in gb.items() if k != "total_s"},
        "grinder_set_events_per_s": g_rate,
        "ratio": g_rate / peer_rate,
        # Grinder's backtests alone (no load, prepare or ranking) against hftbacktest's whole per-set runs.
        "ratio_runs_only": (n * g["events"] / gb["runs_s"]) / peer_rate if "runs_s" in gb else None,
        # The same study with the tape and replay read from the lake's caches (`grinder sweep --cache`).
        "grinder_cached_s": min(c["total_s"] for c in g["cached"]),
        "grinder_cached_split": {
            k: v for k, v in min(g["cached"], key=lambda c: c["total_s"]).items() if k != "total_s"
        },
        "grinder_cached_s_all": [c["total_s"] for c in g["cached"]],
        "ratio_cached": (n * g["events"] / min(c["total_s"] for c in g["cached"])) / peer_rate,
        "grinder_1_worker_s": best["1"]["total_s"],
        "grinder_1_worker_split": {k: v for k, v in best["1"].items() if k != "total_s"},
        "grinder_1_worker_s_all": [s["total_s"] for s in workers["1"]],
        "worker_speedup": best["1"]["total_s"] / gb["total_s"],
        "worker_speedup_runs": best["1"]["runs_s"] / gb["runs_s"] if "runs_s" in gb else None,
        "grinder_import_s": g["import_s"],
        "grinder_warmup_s": g["warmup_s"],
        "hftbacktest_peak_rss_mb": peer_rss,
        "grinder_peak_rss_mb": g_rss,
        "grinder_vm_hwm_mb": g["vm_hwm_mb"],
        "grinder_results_table_mb": g["results_table_mb"],
        "agreement": agreement(peer["sets"], g["set_results"]),
        "hftbacktest_sets_differing_between_passes": pt["sets_differing_between_passes"],
    }
    print(f"  {name}, {n} sets: Grinder {gb['total_s']:.2f} s ({row['ratio']:.1f}x); with cached tape and replay "
          f"{row['grinder_cached_s']:.2f} s ({row['ratio_cached']:.1f}x)", flush=True)  # fmt: skip
    if a.profile and n == min(a.sets):
        prof, _ = run_child(
            "profile", name, data["lake"], sets_file, peer_json, data["offset"], 2, d / "profile.log", a.warmups
        )
        row["grinder_profile"] = prof
    return row


def print_table(rows: list[dict]) -> None:
    print(
        "\nSweep throughput, same data and strategy: set x events per second (M). hftbacktest: one process, a full "
        "run per set (backtester built on the loaded array + loop), best of its passes, JIT warm-up excluded. "
        "Grinder: run_study on one window, workers = CPU count, loading the tape, preparing the replay once, all "
        "backtests and the ranking, best of its studies after untimed ones. Spread = (slowest - fastest) / "
        "fastest over the repeats. RSS = each process's peak (VmHWM), one process per engine and sweep size. "
        "agree = sets whose fill count, final position and fees are the same in both engines."
    )
    print(
        f"{'dataset':<18}{'sets':>5}{'events':>11}{'hftbt s':>9}{'spread':>7}{'M/s':>7}{'Grinder s':>10}{'spread':>7}"
        f"{'M/s':>8}{'ratio':>7}{'load':>6}{'prep':>6}{'runs':>6}{'rank':>6}{'1 wkr s':>8}{'x':>5}"
        f"{'RSS hftbt/Grinder MB':>21}{'agree':>9}"
    )
    for r in rows:
        sp = r["grinder_split"]
        agree = f"{r['agreement']['agree']}/{r['agreement']['sets']}"
        print(
            f"{r['dataset']:<18}{r['sets']:>5}{r['events']:>11,}{r['hftbacktest_s']:>9.2f}"
            f"{r['hftbacktest_spread']:>6.0%} {r['hftbacktest_set_events_per_s'] / 1e6:>6.1f}{r['grinder_s']:>10.2f}"
            f"{r['grinder_spread']:>6.0%} {r['grinder_set_events_per_s'] / 1e6:>7.1f}{r['ratio']:>6.1f}x"
            f"{sp['load_s']:>6.2f}{sp.get('prepare_s', float('nan')):>6.2f}{sp.get('runs_s', float('nan')):>6.2f}"
            f"{sp['rank_s']:>6.2f}{r['grinder_1_worker_s']:>8.2f}{r['worker_speedup']:>5.2f}"
            f"{r['hftbacktest_peak_rss_mb']:>11.0f} / {r['grinder_peak_rss_mb']:<7.0f}{agree:>9}"
        )
    print(
        "\nWith the tape and replay read from the lake's caches (grinder sweep --cache; built by an untimed study "
        "first, as hftbacktest's npz is built before its timing):"
    )
    for r in rows:
        sp = r["grinder_cached_split"]
        print(
            f"  {r['dataset']:<18}{r['sets']:>5} sets: {r['grinder_cached_s']:.2f} s, {r['ratio_cached']:.1f}x "
            f"hftbacktest (load {sp['load_s']:.3f}, prepare {sp['prepare_s']:.3f}, runs {sp['runs_s']:.2f}, "
            f"rank {sp['rank_s']:.2f} s)"
        )
    for r in rows:
        if r["agreement"]["first_differing"]:
            print(f"{r['dataset']}, {r['sets']} sets, first differing: {r['agreement']['first_differing'][:2]}")
    profiled = [r for r in rows if "grinder_profile" in r]
    if profiled:
        print(
            "\nWhere Grinder's backtest time goes (every set alone, one thread, 100 ms and 1 s steps; least squares "
            "s = per run + per decision + per order placed/cancelled + per fill):"
        )
        for r in profiled:
            p = r["grinder_profile"]
            f, s = p["fit"], p["step_100ms"]
            sh = s["share"]
            print(
                f"  {r['dataset']}: {s['mean_s'] * 1e3:.1f} ms a set on average ({s['min_s'] * 1e3:.1f}-"
                f"{s['max_s'] * 1e3:.1f}; 1 s steps {p['step_1s_mean_s'] * 1e3:.1f}); per run {f['per_run_ms']:.1f} ms "
                f"({f['per_run_ns_per_event']:.1f} ns/event), {f['per_decision_us']:.2f} us/decision, "
                f"{f['per_order_action_us']:.2f} us/order action, {f['per_fill_us']:.2f} us/fill (R2 {f['r2']:.2f}); "
                f"shares at 100 ms: per run {sh['per_run']:.0%}, decisions {sh['decisions']:.0%} "
                f"({s['mean_decisions']:.0f}), orders {sh['orders']:.0%} ({s['mean_orders']:.0f}), fills "
                f"{sh['fills']:.0%} ({s['mean_fills']:.0f}); a run without decisions (event walk, no orders, and "
                f"run_backtest's own work) {p['no_decision_run_s'] * 1e3:.1f} ms; prepare {p['prepare_s']:.2f} s, "
                f"row blocks {p['row_blocks_s'] * 1e3:.0f} ms"
            )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sets", type=int, nargs="+", default=[64, 256], help="sweep sizes (default: 64 256)")
    ap.add_argument("--window", action="append", choices=list(WINDOWS), help="real windows (default: btcusdt_20240808)")
    ap.add_argument("--events", type=int, default=1_000_000, help="synthetic events (0: no synthetic set)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--order-qty", type=float, default=0.01, help="synthetic set's base order quantity")
    ap.add_argument("--repeat", type=int, default=3, help="Grinder studies per worker count (best is reported)")
    ap.add_argument("--warmups", type=int, default=2, help="untimed Grinder studies before the timed ones")
    ap.add_argument("--peer-repeat", type=int, default=3, help="hftbacktest passes over all sets (best is reported)")
    ap.add_argument("--no-profile", dest="profile", action="store_false", help="skip Grinder's per-set profile")
    ap.add_argument("--keep", action="store_true", help="keep the scratch directory (lakes, npz, logs)")
    ap.add_argument("--child", choices=["sweep", "profile"], help=argparse.SUPPRESS)
    ap.add_argument("--dataset", help=argparse.SUPPRESS)
    ap.add_argument("--lake", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--sets-file", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--peer-json", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--offset", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        (child_sweep if a.child == "sweep" else child_profile)(a)
        return
    for n in a.sets:
        grid_ticks(n)  # a bad size stops here, before any data is read

    subprocess.run(["bash", str(PEERS / "setup_hftbacktest.sh")], check=True, stdout=subprocess.DEVNULL)
    tmp = Path(tempfile.mkdtemp(prefix="grinder-sweep-speed-"))
    results: dict = {
        "host": {"python": platform.python_version(), "cpus": os.cpu_count()},
        "grid_ticks": {"interval": INTERVAL_TICKS, "half_spread": HALF_SPREAD_TICKS, "qty_factors": QTY_FACTORS},
    }
    rows = []
    try:
        t0 = time.perf_counter()
        datasets = {}
        for w in a.window or ["btcusdt_20240808"]:
            lake = tmp / "lake"
            window_tape(w, lake)  # ingest here, so the measured children only load the tape
            datasets[w] = {
                "lake": lake,
                "peer_args": ["--window", w],
                "offset": None,  # hftbacktest's own, from its summary
                "base_qty": WINDOW_QTY,
                "max_position": WINDOW_MAX_POSITION,
            }
        if a.events:
            syn = make_synthetic(tmp, a.events, a.seed)
            results["synthetic"] = {k: v for k, v in syn.items() if k not in ("lake", "npz")}
            peer_args = ["--npz", syn["npz"], "--tick-size", str(syn["tick_size"]), "--lot-size", str(syn["lot_size"])]
            datasets[SYNTH] = {
                "lake": Path(syn["lake"]),
                "peer_args": [*peer_args, "--name", SYNTH],
                # The npz's local times already carry Grinder's correction (hftbacktest adds nothing).
                "offset": syn["local_clock_offset_ns"],
                "base_qty": a.order_qty,
                "max_position": round(50 * a.order_qty, 12),
            }
            print(f"synthetic: {syn['events']:,} events over {syn['hours']:.1f} h (seed {a.seed})", flush=True)
        for name, data in datasets.items():
            for n in a.sets:
                rows.append(measure(name, n, data, tmp, a))
        results["wall_s"] = time.perf_counter() - t0
    finally:
        if a.keep:
            print(f"scratch kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    print_table(rows)
    print(f"total wall time {results['wall_s']:.0f} s")
    results["rows"] = rows
    (REPO / "bench" / "out").mkdir(exist_ok=True)
    (REPO / "bench" / "out" / "sweep_speed.json").write_text(json.dumps(results, indent=1, default=float))


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    main()
