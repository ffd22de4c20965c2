"""A sweep's memory: the estimate made before it runs, the memory the machine has, the peak it used.

The estimate is a model: bytes per event of a loading window (its tape, Arrow's read buffers and
its replay), per decision step of each running set, child run and the shared local view, plus
fixed parts; the constants below are in bytes, and how the measured ones were taken is in
decision 022. Decision steps grow with the calendar time a backtest spans, which is why windows
are cut within coverage (decision 022).
"""

from __future__ import annotations

import os
import re
import resource
from dataclasses import dataclass
from pathlib import Path

from grinder.errors import ConfigError

BASE_BYTES = 600 * 2**20  # the process with numba, pyarrow, duckdb, vectorbt loaded and the engine compiled
WINDOW_BYTES_PER_EVENT = 400  # tape + replay + Arrow's buffers while a window loads
TAPE_BYTES_PER_EVENT = 64  # a loaded tape kept for the whole sweep (the selection's)
SHARED_BYTES_PER_STEP = 40  # the local view at each decision, shared by a window's sets
SET_BYTES_PER_STEP = 24  # one running set's equity record (ts, mid, equity)
CHILD_BYTES_PER_STEP = 88  # one child run's full step record
FILL_BUFFER_BYTES = 20 * 2**20  # one running backtest's fill buffers (FILL_CAP rows)
GRID_BYTES_PER_SET = 2_000 * 8 + 1_024  # a set's equity curve on the grid and its results row, per window
LIMIT_ENV = "GRINDER_MEMORY_LIMIT"


@dataclass(frozen=True)
class Estimate:
    """Estimated peak bytes of a sweep and its largest part."""

    total: int
    windows: int  # the largest window with its sets running
    children: int  # the largest child re-run
    results: int


def steps_of(start_ns: int, end_ns: int, step_ns: int) -> int:
    """Decision steps a backtest over [start_ns, end_ns) records (the engine's capacity)."""
    return max(1, (end_ns - start_ns) // step_ns + 2)


def estimate(
    windows: list[tuple[int, int]],
    spans: list[tuple[int, int]],
    total_events: int,
    sets: int,
    workers: int,
    children: int,
    step_ns: int,
) -> Estimate:
    """Peak bytes of a sweep: `windows` and child-run `spans` as (events, duration ns) pairs."""
    win = max((WINDOW_BYTES_PER_EVENT * ev + steps_of(0, d, step_ns) * (SHARED_BYTES_PER_STEP
               + min(workers, sets) * SET_BYTES_PER_STEP) + min(workers, sets) * FILL_BUFFER_BYTES
               for ev, d in windows), default=0)  # fmt: skip
    child = 0
    if children:
        # Children run one after the other; the previous result is alive while the next one runs.
        child = max((WINDOW_BYTES_PER_EVENT * ev + 2 * (steps_of(0, d, step_ns) * CHILD_BYTES_PER_STEP
                     + FILL_BUFFER_BYTES) for ev, d in spans), default=0)  # fmt: skip
    results = GRID_BYTES_PER_SET * sets * len(windows)
    total = BASE_BYTES + TAPE_BYTES_PER_EVENT * total_events + results + max(win, child)
    return Estimate(total, win, child, results)


def parse_bytes(text: str) -> int:
    """'24G', '512M', '1.5g', '2000000' -> bytes (binary units)."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([kmgt]?)i?b?\s*", text.lower())
    if not m:
        raise ConfigError(f"memory size {text!r}: expected a number with an optional K, M, G or T")
    return int(float(m.group(1)) * 1024 ** " kmgt".index(m.group(2) or " "))


def available_bytes(limit: str | None = None, meminfo: Path = Path("/proc/meminfo")) -> int:
    """Memory a sweep may use: `limit`, else $GRINDER_MEMORY_LIMIT, else the kernel's MemAvailable."""
    limit = limit if limit is not None else os.environ.get(LIMIT_ENV)
    if limit:
        return parse_bytes(limit)
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 2**62  # no /proc (not Linux): no refusal


def gb(n: int) -> str:
    """Bytes as GB with one decimal."""
    return f"{n / 2**30:.1f} GB"


def check_fits(est: Estimate, available: int) -> None:
    """Refuse a sweep whose estimate exceeds the memory available, with both figures."""
    if est.total > available:
        raise ConfigError(
            f"the sweep needs ~{gb(est.total)}, {gb(available)} available; use --start/--end, fewer --workers, "
            f"fewer --children or a coarser decision step (largest window {gb(est.windows)}, children "
            f"{gb(est.children)}); --memory-limit overrides the limit"
        )


def peak_rss_bytes() -> int:
    """This process's peak resident memory so far: VmHWM of its own address space.

    Not getrusage's ru_maxrss: Linux carries that over an exec from the image that forked it, so
    a sweep started by a large process (a test runner) would report the parent's peak (decision 022).
    """
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
