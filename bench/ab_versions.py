"""Two checkouts of Grinder timed alternately in one process: the engine's speed before and after a change.

On a shared machine a process's speed drifts by tens of percent within minutes, so two benches run
one after the other cannot tell a 10 % change from noise (decision 030). Here both versions are
imported into one process, each from its own checkout under its own module objects and a fresh
numba cache (so nothing compiled for one is loaded for the other), and the same work alternates
between them, A then B, then B then A, keeping each one's best time:

- `study`: `run_study` over the sweep bench's grid (bench/sweep_speed.py's `grid_ticks`: 8 grid
  intervals x 8 half spreads, x order quantities for 128-256 sets) on one real window, with `--workers` threads;
- `sets`: every set's `run_backtest` alone on one thread, the sum of each set's best.

It prints B/A, the ratio of times (below 1: B is faster). A checkout against itself reads within
1 %. Each version ingests the window into its own scratch lake with its own bench/agreement.py.
Run, with the base commit checked out beside this tree:

    git worktree add /tmp/base <commit>
    .venv/bin/python bench/ab_versions.py /tmp/base [--new .] [--sets 64 256] [--rounds 7] [--workers 2]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from sweep_speed import LEVELS, WINDOW_MAX_POSITION, WINDOW_QTY, grid_ticks  # the sweep bench's grid (no numba)

PACKAGES = ("grinder", "strategies", "live", "agreement", "real_windows", "backtest_speed", "sweep_speed")
BASE_PATH = list(sys.path)  # what each checkout's own paths go in front of


def _mount(root: Path) -> None:
    """Import this checkout's live/ and strategies/ as grinder.live and grinder.strategies, as an install
    does, rather than the installed tree's (older checkouts import them as top-level packages too)."""
    import importlib.util

    import grinder

    for sub in ("live", "strategies"):
        spec = importlib.util.spec_from_file_location(
            f"grinder.{sub}", root / sub / "__init__.py", submodule_search_locations=[str(root / sub)]
        )
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
        setattr(grinder, sub, module)


class Version:
    """One checkout, imported: its loaders, the grid for each sweep size, and the timed work."""

    def __init__(self, root: Path, window: str, lake: Path, sizes: list[int], workers: int):
        for name in [m for m in sys.modules if m.split(".")[0] in PACKAGES]:
            del sys.modules[name]  # the other checkout's modules: this one imports its own
        sys.path[:] = [str(root), str(root / "bench"), *BASE_PATH]
        _mount(root)
        from agreement import window_tape
        from real_windows import WINDOWS

        import grinder.sim.backtest as bt
        from grinder.data.tape import load_tape
        from grinder.strategies.static_grid import STRATEGY
        from grinder.sweep.folds import Window
        from grinder.sweep.spec import expand
        from grinder.sweep.study import Selection, run_study

        self.root = root
        window_tape(window, lake)
        symbol = WINDOWS[window][1]
        self.load = lambda *_: load_tape(lake / window, "binance-usdm", symbol, release_buffers=False, bbo=False)
        tape = self.load()
        tick = tape.instrument.tick_size
        venue = bt.VenueConfig(entry_latency_ns=10_000_000, response_latency_ns=10_000_000, step_ns=100_000_000,
                               maker_fee=0.0002, taker_fee=0.0005)  # fmt: skip
        start = int(tape.ts_exch[0])
        win = Window("all", start, int(tape.ts_exch[-1]) + 1, "in")
        sel = Selection(lake, "", "")
        fixed = {"levels": LEVELS, "max_position": WINDOW_MAX_POSITION}

        def axes(n: int) -> dict:
            iv, hs, qf = grid_ticks(n)
            return {"interval": [tick * x for x in iv], "half_spread": [tick * x for x in hs],
                    "order_qty": [round(WINDOW_QTY * f, 12) for f in qf]}  # fmt: skip

        self.studies = {}
        for n in sizes:
            grid = expand(STRATEGY, axes(n), fixed)
            self.studies[n] = lambda g=grid: run_study(sel, g, [win], venue, workers=workers, load=self.load)
        rep = bt.prepare(tape, venue)
        blocks = bt.row_blocks(tape, rep)
        vecs = [STRATEGY.vector(p) for p in expand(STRATEGY, axes(64), fixed).sets]
        self.runs = [
            (lambda v=v: bt.run_backtest(tape, STRATEGY, v, venue, start_ns=start, replay=rep, blocks=blocks))
            for v in vecs
        ]
        # Compiled (or loaded) and warmed before any timing: two studies, two passes over the sets.
        for f in list(self.studies.values()) * 2 + self.runs * 2:
            f()


def best_alternating(a, b, rounds: int) -> tuple[float, float]:
    """Best seconds of a() and b(), called in turn (A B, then B A), `rounds` times each."""
    best = [float("inf"), float("inf")]
    for r in range(rounds):
        for k in (0, 1) if r % 2 == 0 else (1, 0):
            t0 = time.perf_counter()
            (a, b)[k]()
            best[k] = min(best[k], time.perf_counter() - t0)
    return best[0], best[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("base", type=Path, help="checkout A (the version before)")
    ap.add_argument("--new", type=Path, default=Path(__file__).resolve().parents[1], help="checkout B (default: this)")
    ap.add_argument("--window", default="btcusdt_20240808")
    ap.add_argument("--sets", type=int, nargs="+", default=[64, 256], choices=[64, 128, 192, 256])
    ap.add_argument("--rounds", type=int, default=7, help="timings of each version, alternating (best is kept)")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="study threads")
    a = ap.parse_args()
    for root in (a.base, a.new):
        if not (root / "grinder" / "sim" / "engine.py").is_file():
            raise SystemExit(f"{root}: not a Grinder checkout (no grinder/sim/engine.py)")
    scratch = Path(tempfile.mkdtemp(prefix="grinder_ab_"))
    os.environ["NUMBA_CACHE_DIR"] = str(scratch / "numba")  # before numba is imported: nothing shared
    t0 = time.perf_counter()
    va = Version(a.base.resolve(), a.window, scratch / "lake_a", a.sets, a.workers)
    vb = Version(a.new.resolve(), a.window, scratch / "lake_b", a.sets, a.workers)
    print(f"A = {va.root}\nB = {vb.root}\n{a.window}, {a.rounds} rounds, set-up {time.perf_counter() - t0:.0f} s")
    for n in a.sets:
        ta, tb = best_alternating(va.studies[n], vb.studies[n], a.rounds)
        print(f"study {n:>3} sets, {a.workers} workers: A {ta * 1e3:8.1f} ms  B {tb * 1e3:8.1f} ms  B/A {tb / ta:.3f}")
    sa = sb = 0.0
    for ra, rb in zip(va.runs, vb.runs, strict=True):
        x, y = best_alternating(ra, rb, a.rounds)
        sa, sb = sa + x, sb + y
    print(f"sets    {len(va.runs):>3} alone, 1 thread:  A {sa * 1e3:8.1f} ms  B {sb * 1e3:8.1f} ms  B/A {sb / sa:.3f}")


if __name__ == "__main__":
    main()
