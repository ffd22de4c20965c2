"""Fan a sweep window's parameter sets out to a Dask distributed cluster, in chunks.

Workers must see the same lake path and run the same Grinder code (strategies included): a task
carries only names, settings and parameter values, loads its window's tape itself (through the
tape cache, so the workers of one machine share it) and returns metric rows and equity columns.
Chunks are put back in set order, so the results, digests included, equal a local run's.
"""

from __future__ import annotations

import math
import os

import numpy as np

from grinder.errors import ConfigError, DataError
from grinder.sweep.folds import Window
from grinder.sweep.runner import WindowRun

CONNECT_TIMEOUT_S = float(os.environ.get("GRINDER_CONNECT_TIMEOUT_S", "10"))
# How long a sweep waits for a cluster with no worker to get one: a scheduler whose workers are
# gone (or never started) would otherwise hold the sweep's tasks for ever without a word.
WORKER_TIMEOUT_S = float(os.environ.get("GRINDER_WORKER_TIMEOUT_S", "30"))


def connect(address: str):
    """A dask.distributed Client for `address` (tcp://host:port), or a clear error if it does not answer."""
    from distributed import Client

    if not address.startswith(("tcp://", "tls://", "inproc://", "ws://", "wss://")):
        raise ConfigError(f"cluster address {address!r} must look like tcp://host:port")
    try:
        return Client(address, timeout=CONNECT_TIMEOUT_S, set_as_default=False)
    except (OSError, TimeoutError) as e:
        raise ConfigError(f"cluster {address} does not answer ({type(e).__name__}: {str(e).splitlines()[0]})") from None


def _chunk(root: str, venue: str, symbol: str, window: Window, strategy: str, values: list[dict], venue_cfg: dict,
           gates_cfg: dict) -> tuple[list[dict], np.ndarray, np.ndarray]:  # fmt: skip
    """One task on a worker: load the window, run the given parameter sets, return rows and equity."""
    from grinder.core.gates import GateConfig
    from grinder.core.strategy import get
    from grinder.data.tape import load_tape
    from grinder.sim.backtest import VenueConfig
    from grinder.sweep.runner import run_window

    strat = get(strategy)
    sets = [strat.validate(v) for v in values]
    tape = load_tape(root, venue, symbol, window.start_ns, window.end_ns, cache=True)
    # The venue's own latencies (constants or its latency_file, which workers must see at the same path).
    run = run_window(tape, strat, sets, VenueConfig(**venue_cfg), GateConfig(**gates_cfg), start_ns=window.start_ns,
                     workers=1)  # fmt: skip
    return run.rows, run.grid_ns, run.equity


def run_window_on_cluster(client, sel, window: Window, grid, venue, gates) -> WindowRun:
    """The same as runner.run_window over one window, computed by the cluster's workers."""
    n = len(grid.sets)
    n_workers = _workers(client)
    size = max(1, math.ceil(n / (2 * n_workers)))  # two chunks per worker: the slow one does not hold the rest
    values = [p.model_dump() for p in grid.sets]
    futures = [
        client.submit(
            _chunk,
            str(sel.root),
            sel.venue,
            sel.symbol,
            window,
            grid.strategy.name,
            values[i : i + size],
            venue.model_dump(),
            gates.model_dump(),
            pure=False,
        )  # fmt: skip
        for i in range(0, n, size)
    ]
    parts = _gather(client, futures)
    rows = [r for part in parts for r in part[0]]
    grid_ns = parts[0][1]
    if any(not np.array_equal(p[1], grid_ns) for p in parts):
        raise DataError(f"window {window.name}: workers saw different data (equity grids differ); is the lake shared?")
    return WindowRun(rows, grid_ns, np.concatenate([p[2] for p in parts], axis=1))


def _workers(client) -> int:
    """How many workers the cluster has; waits up to WORKER_TIMEOUT_S for one, else a clear error."""
    n = len(client.scheduler_info().get("workers", {}))
    if n:
        return n
    try:
        client.wait_for_workers(1, timeout=WORKER_TIMEOUT_S)
    except (TimeoutError, OSError):
        raise ConfigError(
            f"cluster {client.scheduler.address} has no workers (waited {WORKER_TIMEOUT_S:g} s); start some with "
            "`dask worker <address>` or drop --cluster"
        ) from None
    return max(1, len(client.scheduler_info().get("workers", {})))


def _gather(client, futures) -> list:
    """The futures' results; a clear error if every worker leaves while they run (instead of waiting for ever)."""
    from distributed import wait

    try:
        while True:
            try:
                with client.as_current():  # `wait` takes the current client; ours is not the default
                    wait(futures, timeout=WORKER_TIMEOUT_S)
                break
            except TimeoutError:
                _workers(client)  # slow tasks are fine while a worker is there to run them
        return client.gather(futures)
    except BaseException:
        client.cancel(futures)
        raise
