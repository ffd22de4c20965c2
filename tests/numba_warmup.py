"""Compile numba's kernels into its on-disk cache on the second core while the test session runs.

On a fresh clone numba's cache (`cache=True`: __pycache__ beside each source, or $NUMBA_CACHE_DIR)
is empty, and the tests that first reach a kernel pay its compilation serially: minutes of it on a
2-core machine whose other core mostly waits. tests/conftest.py starts this script in the background
when the session starts; it runs the bundled sample through the same commands the tests run
(`grinder data ...`, `grinder backtest ...` whole and chunked, `grinder ml ...`), so the kernels are
compiled for the same argument types and land in the same cache the tests then load from.

It changes nothing the tests check: it only writes numba's cache (a kernel compiled twice gives the
same machine code; numba replaces cache files whole), and everything else it writes is in its own
temporary folder. Its failures are ignored (the tests compile what it did not). The main process
compiles the engine's `run` while it collects the tests (tests import grinder.sim.engine), so the
commands that import the engine wait for the session's collection to end (the `ready` file), then
load `run` from the cache instead of compiling it a second time.

Usage: python tests/numba_warmup.py WORK_DIR READY_FILE
"""

from __future__ import annotations

import gzip
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "data" / "sample" / "lake"
FIXTURES = REPO / "tests" / "fixtures"
REAL = Path(os.environ.get("GRINDER_REAL_DATA", REPO.parent / "shared" / "data" / "real" / "binance-usdm"))
GRID = ["-p", "interval=1", "-p", "half_spread=2", "-p", "order_qty=0.1", "-p", "max_position=5"]
WINDOW = ["--start", "2024-08-08T23:54", "--end", "2024-08-08T23:58:30"]
READY_WAIT_S = 900


def grinder(work: Path, env: dict, *args) -> None:
    quiet = subprocess.DEVNULL
    subprocess.run([sys.executable, "-m", "grinder", *map(str, args)], cwd=work, env=env, timeout=600, stdin=quiet,
                   stdout=quiet, stderr=quiet, check=False)  # fmt: skip


def wait_for(ready: Path) -> bool:
    """True once `ready` exists; False if the session that started us is gone or never gets there."""
    parent = os.getppid()
    deadline = time.monotonic() + READY_WAIT_S
    while time.monotonic() < deadline:
        if ready.exists():
            return True
        if os.getppid() != parent:
            return False
        time.sleep(0.5)
    return False


def main(work: Path, ready: Path) -> None:
    lake = work / "lake"
    shutil.copytree(SAMPLE, lake)  # `ml features` writes into its lake
    env = {k: v for k, v in os.environ.items() if k != "GRINDER_LAKE"}
    env["GRINDER_MLRUNS"] = str(work / "mlruns")
    env["GRINDER_INSTRUMENTS"] = str(work / "instruments")
    env["GRINDER_REAL_DATA"] = str(REAL)
    (work / "instruments").mkdir()
    out = work / "out"

    # Kernels outside the engine, in the order the suite first needs them, while the session collects.
    grinder(work, env, "data", "check", "--symbol", "BTCUSDT", "--root", lake)  # grinder.book, coverage
    if (REAL / "btcusdt_20240808.gz").is_file():  # the binance ingest kernels, on what tests/conftest.py cuts
        capture = work / "btcusdt_20240808.gz"
        with gzip.open(REAL / "btcusdt_20240808.gz", "rb") as src, gzip.open(capture, "wb") as dst:
            for _ in range(3000):
                dst.write(src.readline())
        grinder(work, env, "data", "ingest", "binance", capture, "--root", work / "ingested")
    grinder(work, env, "data", "synth", "--events", "50000", "--seed", "3", "--root", work / "synth")
    book = FIXTURES / "binance-futures_incremental_book_L2_2024-08-08_BTCUSDT.csv.gz"
    trades = FIXTURES / "binance-futures_trades_2024-08-08_BTCUSDT.csv.gz"
    grinder(work, env, "data", "ingest", "tardis", book, trades, "--symbol", "BTCUSDT", "--root", work / "tardis")
    grinder(work, env, "ml", "features", "--every", "1s", *WINDOW, "--root", lake)

    if not wait_for(ready):
        return
    # The engine's lazily compiled kernels: the whole run (with its report's vectorbt kernels), the
    # chunked run (begin, resume, finish: as long to compile as `run`), the other strategies, models.
    grinder(work, env, "backtest", "static_grid", "--root", lake, *GRID, "--no-track", "--out", out)
    grinder(work, env, "backtest", "static_grid", "--root", lake, *GRID, "--chunked", "--no-report", "--no-track",
            "--out", out)  # fmt: skip
    grinder(work, env, "backtest", "adaptive_grid", "--root", lake, *GRID, "--no-report", "--no-track", "--out", out)
    grinder(work, env, "ml", "train", "--label", "fwd_rv_10s", "--every", "1s", "--folds", "2", "--embargo", "10s",
            "--xgb", "max_depth=3", "--xgb", "num_boost_round=30", *WINDOW, "--root", lake)  # fmt: skip
    grinder(work, env, "backtest", "ml_grid", "--model", "models:/grinder-fwd_rv_10s/1", "--root", lake,
            "-p", "interval=5", "-p", "half_spread=2", "-p", "order_qty=0.002", "-p", "max_position=0.02",
            "--no-report", "--no-track", "--out", out)  # fmt: skip


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
