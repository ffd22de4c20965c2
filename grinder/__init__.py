"""Grinder: research framework for grid trading and passive market making on crypto perpetuals."""

import signal as _signal
import sys as _sys

__version__ = "0.1.0"

# `grinder live` takes SIGUSR1 as its kill switch (live.kill). The signal's default action ends a
# process at once, and the handler that writes the kill file needs the config, read a second later
# (imports): until then a SIGUSR1 is held here, the earliest code the process runs, and
# `grinder live` honours it once the config is read. Only for that command: a library import keeps
# the default.
early_kill: list[int] = []
if _sys.argv[1:2] == ["live"] and hasattr(_signal, "SIGUSR1"):
    _signal.signal(_signal.SIGUSR1, lambda signum, _frame: early_kill.append(signum))

# The public API, imported on first use (a bare `import grinder`, as `grinder live` does before its
# config is read, stays light): what a strategy author writes against, and what a notebook calls.
_API = {
    # writing a strategy (docs/strategies.md)
    "Strategy": "grinder.core.strategy",
    "ParamVector": "grinder.core.params",
    "EMPTY": "grinder.book.l2",
    "BAND_MIN_STATE": "grinder.core.strategy",
    "STRATEGY_SIG": "grinder.core.strategy",
    # what a target is (out_kind) and the book's depth columns (depth), docs/strategies.md
    "QUOTE": "grinder.core.order_kind",
    "IOC": "grinder.core.order_kind",
    "MARKET": "grinder.core.order_kind",
    "REDUCE_ONLY": "grinder.core.order_kind",
    "BID_TICKS": "grinder.core.depth",
    "BID_QTY": "grinder.core.depth",
    "ASK_TICKS": "grinder.core.depth",
    "ASK_QTY": "grinder.core.depth",
    # running one
    "get_strategy": ("grinder.core.strategy", "get"),
    "load_tape": "grinder.data.tape",
    "VenueConfig": "grinder.sim.backtest",
    "GateConfig": "grinder.core.gates",
    "run_backtest": "grinder.sim.backtest",
    # what the commands do, as calls (a notebook gets the same folders, digests and MLflow runs)
    "backtest_job": "grinder.sim.job",
    "sweep_job": "grinder.sweep.job",
    "portfolio_job": "grinder.portfolio.job",
    "Progress": "grinder.progress",
    # models (docs/ml.md): train, judge and promote, roll back, load a pinned version
    "train_job": "grinder.ml.train",
    "promote_job": "grinder.ml.promote",
    "rollback_job": "grinder.ml.promote",
    "load_model": "grinder.ml.model",
    "FeatureSet": "grinder.features.spec",
    "compute_features": "grinder.features.offline",
    # errors (each names its culprit; docs/architecture.md)
    "GrinderError": "grinder.errors",
    "ConfigError": "grinder.errors",
    "DataError": "grinder.errors",
}
__all__ = sorted(_API)


def __getattr__(name: str):
    try:
        where = _API[name]
    except KeyError:
        raise AttributeError(f"module 'grinder' has no attribute {name!r}") from None
    import importlib

    module, attr = where if isinstance(where, tuple) else (where, name)
    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value  # looked up once
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_API])
