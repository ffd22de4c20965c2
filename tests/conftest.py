"""Shared fixtures: where the real captures live, and small helpers to cut test files from them."""

from __future__ import annotations

import contextlib
import gzip
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

# Hypothesis's deadline and its slow-input check time each example: on a busy machine they fail
# tests whose property holds. Properties are checked here, never speed (bench/ does that).
settings.register_profile("grinder", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("grinder")

REPO = Path(__file__).resolve().parents[1]
REAL = Path(os.environ.get("GRINDER_REAL_DATA", REPO.parent / "shared" / "data" / "real" / "binance-usdm"))

# Real windows and the facts verified on them (../shared/data/real/README.md).
WINDOWS = {
    "btcusdt_20230404": (["btcusdt_20230404.dat.gz", "btcusdt_20230405.dat.gz"], "BTCUSDT", 322_682, 12_935),
    "btcusdt_20240718": (["btcusdt_20240718.gz", "btcusdt_20240719.gz"], "BTCUSDT", 400_859, 10_701),
    "btcusdt_20240808": (["btcusdt_20240808.gz"], "BTCUSDT", 443_521, 21_313),
    "ethusdt_20240718": (["ethusdt_20240718.gz", "ethusdt_20240719.gz"], "ETHUSDT", 355_138, 13_655),
}


@pytest.fixture(scope="session")
def real_dir() -> Path:
    """Folder of the real Binance captures; the suite fails loudly if it is missing."""
    if not (REAL / "btcusdt_20240808.gz").is_file():
        pytest.fail(f"real captures not found at {REAL} (set GRINDER_REAL_DATA)")
    return REAL


@pytest.fixture(scope="session")
def real_lines(real_dir) -> list[bytes]:
    """The first 3000 lines of btcusdt_20240808 (snapshot at line 55)."""
    out = []
    with gzip.open(real_dir / "btcusdt_20240808.gz", "rb") as f:
        for _ in range(3000):
            out.append(f.readline())
    return out


def write_capture(path: Path, lines: list[bytes]) -> Path:
    """Write capture lines to a gzip file."""
    with gzip.open(path, "wb") as f:
        f.writelines(line if line.endswith(b"\n") else line + b"\n" for line in lines)
    return path


# ------------------------------------------------------------------------------ numba's cache, warmed

# A session of at least this many tests starts tests/numba_warmup.py beside it (a few tests pay for
# their own compilation, as before: the warm-up would compile what they never reach).
WARMUP_MIN_TESTS = 100


def pytest_configure(config):
    """Start compiling numba's kernels into its cache on the other core (tests/numba_warmup.py says why);
    $GRINDER_TEST_WARMUP=0 turns it off."""
    if (config.option.collectonly or os.environ.get("GRINDER_TEST_WARMUP") == "0"
            or os.environ.get("NUMBA_DISABLE_JIT") == "1" or hasattr(config, "workerinput")):  # fmt: skip
        return
    work = Path(tempfile.mkdtemp(prefix="grinder-numba-warmup-"))
    ready = work / "ready"
    script = Path(__file__).with_name("numba_warmup.py")
    proc = subprocess.Popen([sys.executable, str(script), str(work / "w"), str(ready)], cwd=work,
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)  # fmt: skip
    config._grinder_warmup = (proc, work, ready)


def pytest_collection_finish(session):
    """Collection has compiled the engine's `run` (the test modules import it): the warm-up may go on
    to the kernels that need it, or stops if the session is too small to use them."""
    warmup = getattr(session.config, "_grinder_warmup", None)
    if warmup is None:
        return
    if len(session.items) < WARMUP_MIN_TESTS:
        _stop_warmup(session.config)
    else:
        warmup[2].touch()


def pytest_unconfigure(config):
    _stop_warmup(config)


def _stop_warmup(config):
    """End the warm-up and the command it runs (its own process group), then remove its folder. (One that
    ended on its own left no command running: subprocess.run waits for, or kills, each.)"""
    warmup = getattr(config, "_grinder_warmup", None)
    if warmup is None:
        return
    config._grinder_warmup = None
    proc, work, _ready = warmup
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=10)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    shutil.rmtree(work, ignore_errors=True)


def _session_env(name: str, value: str):
    """Set an environment variable for the whole test session, then put back what was there."""
    old = os.environ.get(name)
    os.environ[name] = value
    yield
    if old is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = old


@pytest.fixture(scope="session", autouse=True)
def mlflow_store_outside_the_repo(tmp_path_factory):
    """Commands run by tests record MLflow runs in a temporary store, never in the repository's mlruns/."""
    root = tmp_path_factory.mktemp("mlruns")
    for _ in _session_env("GRINDER_MLRUNS", str(root)):
        yield root


@pytest.fixture(scope="session", autouse=True)
def instrument_snapshots_outside_the_repo(tmp_path_factory):
    """Lookups see the bundled instrument snapshot only: a `grinder data instruments --refresh` a developer
    ran in the checkout (data/instruments/) must not change what the tests ingest and backtest."""
    root = tmp_path_factory.mktemp("instruments")
    for _ in _session_env("GRINDER_INSTRUMENTS", str(root)):
        yield root
