"""Where the backtest engine's time goes: samples per compiled function, and per source line of the loop.

perf cannot name numba's JIT code, so this script runs the grid sweep's sets over one dataset
under `perf record` in a child process that compiles the engine afresh with debug information,
writes down where each compiled function starts, and keeps the loop's object code. The parent
then gives every sample in JIT code to the function whose code it falls in (the nearest start
below it) and maps the samples inside the loop, `grinder.sim.engine._loop` with the steps inlined
into it, to source lines with `addr2line`: each sample to the innermost line of Grinder's code.
Numba's own compile time is not sampled: recording starts after a first run.

Needs `perf` (Debian package linux-perf) and `addr2line` (binutils). Run:
`.venv/bin/python bench/engine_profile.py [--window btcusdt_20240808 | --events 1000000] [--seconds 20]`.
"""

from __future__ import annotations

import argparse
import bisect
import collections
import gc
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from real_windows import REPO, WINDOWS  # noqa: E402

INTERVAL_TICKS, HALF_SPREAD_TICKS = (2, 10, 30, 50), (1, 10, 40, 80)  # 16 sets across sweep_speed's grid


def _lines_in_their_files() -> None:
    """Make numba's debug information name the file of each line of code inlined from another module.

    numba marks the code of an `inline="always"` function with its line numbers alone, as if they
    were lines of the function it is inlined into; the loop's steps come from several modules, so
    each location here gets a scope in the file its line belongs to, and addr2line names that file.
    """
    from numba.core import debuginfo, lowering

    lower_inst = lowering.Lower.lower_inst

    def lower_inst_in_file(self, inst):
        self.debuginfo.grinder_file = self.loc.filename
        return lower_inst(self, inst)

    add_location = debuginfo.DIBuilder._add_location

    def add_location_in_file(self, line):
        path = getattr(self, "grinder_file", None)
        if not path or path == self.filepath or not self.subprograms:
            return add_location(self, line)
        scopes = self.__dict__.setdefault("grinder_scopes", {})
        key = (path, id(self.subprograms[-1]))
        if key not in scopes:
            file = self.module.add_debug_info("DIFile", {"directory": os.path.dirname(path),
                                                         "filename": os.path.basename(path)})  # fmt: skip
            scopes[key] = self.module.add_debug_info(
                "DILexicalBlockFile", {"scope": self.subprograms[-1], "file": file, "discriminator": 0}
            )
        return self.module.add_debug_info("DILocation", {"line": line, "column": 1, "scope": scopes[key]})

    lowering.Lower.lower_inst = lower_inst_in_file
    debuginfo.DIBuilder._add_location = add_location_in_file


def child(a) -> None:
    """Load the data, run once (compiles), dump addresses and object code, then loop until killed."""
    sys.path.insert(0, str(REPO))
    import warnings

    from numba.core.errors import NumbaDebugInfoWarning
    from numba.core.registry import CPUDispatcher

    warnings.simplefilter("ignore", NumbaDebugInfoWarning)  # numba's own helpers have no source to point at
    _lines_in_their_files()

    import grinder.sim.backtest as bt
    import grinder.sim.engine as engine
    from grinder.strategies.static_grid import STRATEGY
    from grinder.sweep.spec import expand

    if a.window:
        from agreement import window_tape

        tape, qty, max_pos = window_tape(a.window, a.out / "lake"), 0.1, 5.0
    else:
        from backtest_speed import SYNTH_SYMBOL, SYNTH_VENUE

        from grinder.data.lake import Lake
        from grinder.data.synth import synth_batch
        from grinder.data.tape import load_tape

        root = a.out / "synth"
        Lake(root).write(synth_batch(a.events, seed=1, venue=SYNTH_VENUE, symbol=SYNTH_SYMBOL), [], key="profile")
        tape, qty, max_pos = load_tape(root, SYNTH_VENUE, SYNTH_SYMBOL), 0.01, 0.5
    tick = tape.instrument.tick_size
    venue = bt.VenueConfig(entry_latency_ns=10_000_000, response_latency_ns=10_000_000, maker_fee=0.0002)
    rep = bt.prepare(tape, venue)
    start = int(tape.ts_exch[0])
    # The sets run as a sweep runs them (runner.run_window: shared inputs, only the equity recorded).
    kw = {"start_ns": start, "replay": rep, "blocks": bt.row_blocks(tape, rep),
          "decisions": bt.decision_inputs(tape, rep, venue, start),
          "latency": bt.LatencySeries.for_venue(venue), "record": "equity"}  # fmt: skip
    axes = {"interval": [tick * i for i in INTERVAL_TICKS], "half_spread": [tick * h for h in HALF_SPREAD_TICKS],
            "order_qty": [qty]}  # fmt: skip
    grid = expand(STRATEGY, axes, {"levels": 20, "max_position": max_pos})
    bt.run_backtest(tape, STRATEGY, STRATEGY.vector(grid.sets[0]), venue, **kw)  # compiles everything
    loop = engine._loop  # compiled with the steps inlined into it, when run was compiled
    cres = loop.overloads[loop.signatures[0]]
    (a.out / "run.o").write_bytes(cres.library._get_compiled_object())
    starts = []
    for obj in gc.get_objects():
        if isinstance(obj, CPUDispatcher):
            for c in obj.overloads.values():
                name = f"{obj.py_func.__module__}.{obj.py_func.__qualname__}"
                for sym, tag in ((c.fndesc.llvm_func_name, ""), (c.fndesc.llvm_cfunc_wrapper_name, " (C wrapper)")):
                    try:
                        starts.append(f"{c.library.get_pointer_to_function(sym)} {name}{tag}")
                    except Exception:  # noqa: BLE001, S112 - wrappers that were never built
                        continue
    run_addr = cres.library.get_pointer_to_function(cres.fndesc.llvm_func_name)
    (a.out / "starts.txt").write_text("\n".join([f"{run_addr} RUN", *starts]))
    (a.out / "ready").write_text(str(len(grid.sets)))
    runs = 0
    while True:
        for p in grid.sets:
            bt.run_backtest(tape, STRATEGY, STRATEGY.vector(p), venue, **kw)
            runs += 1
            (a.out / "runs").write_text(str(runs))


def report(out: Path, data: Path, runs: int) -> None:
    """Samples per compiled function, and per line of the engine's loop."""
    lines = [ln for ln in (out / "starts.txt").read_text().splitlines() if ln]
    run_addr = int(lines[0].split()[0])
    starts = sorted({int(a): n for a, n in (ln.split(" ", 1) for ln in lines[1:])}.items())
    addrs = [s for s, _ in starts]
    script = subprocess.run(["perf", "script", "-i", str(data), "-F", "ip,dso"], capture_output=True, text=True,
                            check=True).stdout  # fmt: skip
    samples = []  # (ip, in anonymous executable memory: where numba's JIT code lives)
    for ln in script.splitlines():
        ip, _, dso = ln.strip().partition(" ")
        # perf names JIT memory "[JIT] tid N", "/tmp/perf-PID.map" or "[unknown]", by version and setup
        samples.append((int(ip, 16), any(m in dso for m in ("JIT", "/tmp/perf-", "unknown"))))
    other = "(not compiled by numba: Python, NumPy, the kernel's OS work)"
    by_fn: collections.Counter = collections.Counter()
    in_run: collections.Counter = collections.Counter()
    for ip, jit_code in samples:
        k = bisect.bisect_right(addrs, ip) - 1
        if not jit_code or k < 0 or ip - addrs[k] > 1 << 20:
            by_fn[other] += 1
            continue
        by_fn[starts[k][1]] += 1
        if starts[k][0] == run_addr:
            in_run[ip - run_addr] += 1
    total = len(samples)
    jit = total - by_fn[other]
    print(f"{total:,} samples over {runs} backtests; {jit / total:.0%} in numba-compiled code\n")
    print("share of compiled-code samples, by function:")
    for name, n in by_fn.most_common(16):
        if name != other:
            print(f"  {n / jit:6.1%}  {name}")
    offsets = sorted(in_run)
    a2l = subprocess.run(["addr2line", "-a", "-i", "-e", str(out / "run.o"), "-j", ".ltext", *map(hex, offsets)],
                         capture_output=True, text=True, check=True).stdout.splitlines()  # fmt: skip
    where: dict[int, list[str]] = {}
    cur = None
    for ln in a2l:
        if ln.startswith("0x"):
            cur = int(ln, 16)
            where[cur] = []
        elif cur is not None:
            where[cur].append(ln.split(" (")[0].replace(str(REPO) + "/", ""))
    by_line: collections.Counter = collections.Counter()
    for off, n in in_run.items():
        # addr2line -i lists the innermost frame first: the step's own line, wherever it was inlined from
        frames = [f for f in where.get(off, []) if f.startswith("grinder/")] or where.get(off, ["?"])
        by_line[frames[0]] += n
    sources: dict[str, list[str]] = {}
    n_run = sum(in_run.values())
    if not jit:
        raise SystemExit("engine_profile: no sample fell in numba's compiled code (perf could not see it)")
    print(f"\ninside grinder.sim.engine._loop ({n_run / jit:.0%} of compiled code), by innermost line:")
    for loc, n in by_line.most_common(25):
        path, _, num = loc.rpartition(":")
        if path not in sources:
            sources[path] = (REPO / path).read_text().splitlines() if (REPO / path).is_file() else []
        src = sources[path]
        text = src[int(num) - 1].strip()[:80] if num.isdigit() and 0 < int(num) <= len(src) else ""
        print(f"  {n / n_run:6.1%}  {loc:38} {text}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--window", choices=list(WINDOWS), help="a real window (default: the synthetic set)")
    ap.add_argument("--events", type=int, default=1_000_000, help="synthetic events (without --window)")
    ap.add_argument("--seconds", type=float, default=20.0, help="how long to sample")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        child(a)
        return
    for tool in ("perf", "addr2line"):
        if shutil.which(tool) is None:
            raise SystemExit(f"engine_profile: `{tool}` not found (apt-get install linux-perf binutils)")
    with tempfile.TemporaryDirectory(prefix="grinder-engine-profile-") as d:
        out = Path(d)
        # A fresh cache: code loaded from numba's cache has no object code or debug information to read.
        env = {**os.environ, "NUMBA_DEBUGINFO": "1", "NUMBA_CACHE_DIR": str(out / "numba-cache")}
        args = [sys.executable, __file__, "--child", "--out", str(out), "--events", str(a.events)]
        args += ["--window", a.window] if a.window else []
        proc = subprocess.Popen(args, env=env, cwd=REPO)
        try:
            while not (out / "ready").exists():
                if proc.poll() is not None:
                    raise SystemExit(f"engine_profile: the child exited with {proc.returncode} before it was ready")
                time.sleep(0.5)
            data = out / "perf.data"
            rec = subprocess.run(["perf", "record", "-q", "-F", "2000", "-p", str(proc.pid), "-o", str(data), "--",
                                  "sleep", str(a.seconds)], capture_output=True, text=True)  # fmt: skip
            if rec.returncode != 0 or not data.exists():
                raise SystemExit(f"engine_profile: perf record failed: {rec.stderr.strip()[:300]}")
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        runs_text = (out / "runs").read_text() if (out / "runs").exists() else ""
        runs = int(runs_text) if runs_text.isdigit() else 0  # empty if read while the child rewrote it
        report(out, data, runs)


if __name__ == "__main__":
    main()
