"""Search instead of a full grid: Optuna's TPE sampler proposes parameter sets, judged in sample only.

The axes use the grid syntax, read as search spaces: `a:b:step` an int or float range with that
step, `lin:a:b:n` a continuous range, `log:a:b:n` a log-scaled one, a list a categorical choice.
Trials are asked in batches of `workers` and run together over the in-sample windows' shared
tapes (`grinder.sweep.runner`); the objective is the ranking metric's in-sample mean. The sets it
tried then go through the same study as a grid (every window, out-of-sample included), so a search
is ranked out of sample like any sweep and never sees the out-of-sample windows while searching.
With a fixed seed the same data gives the same trials.

A study can live in an Optuna storage (`grinder.sweep.storage`) and be resumed: each trial's
sampler is seeded from (seed, trial number) and batches start at multiples of the batch size, so a
study stopped after N trials (a multiple of the batch, or within TPE's random first trials) and
resumed to N + M asks exactly the trials a fresh N + M study asks, and never re-runs a finished one.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable

import numpy as np

from grinder.core.gates import GateConfig
from grinder.core.strategy import Strategy
from grinder.data.tape import Tape
from grinder.errors import ConfigError, DataError
from grinder.sim.backtest import LatencySeries, VenueConfig, prepare
from grinder.sweep.folds import Window
from grinder.sweep.runner import WindowRun, run_window
from grinder.sweep.spec import Grid, _number, parse_axis


def _distribution(axis: str, spec):
    """An Optuna distribution for one axis spec."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    if isinstance(spec, str) and spec.strip().startswith(("lin:", "log:")):
        values = parse_axis(axis, spec)  # validates the spec
        lo, hi = float(min(values)), float(max(values))
        if lo == hi:
            raise ConfigError(f"search axis {axis}: the range {spec!r} is a single value")
        return FloatDistribution(lo, hi, log=spec.strip().startswith("log:"))
    if isinstance(spec, str) and ":" in spec:
        parse_axis(axis, spec)
        lo, hi, step = (_number(p, axis) for p in spec.split(":"))
        hi = lo + math.floor((hi - lo) / step + 1e-9) * step
        if all(isinstance(x, int) for x in (lo, hi, step)):
            return IntDistribution(lo, hi, step=step)
        return FloatDistribution(float(lo), float(hi), step=float(step))
    return CategoricalDistribution(parse_axis(axis, spec))


def search_sets(
    strategy: Strategy,
    axes: dict,
    fixed: dict,
    windows: list[Window],
    load: Callable[[Window], Tape],
    venue: VenueConfig,
    gates: GateConfig | None,
    latency: LatencySeries | None,
    rank_by: str,
    lower_is_better: bool,
    trials: int,
    seed: int = 0,
    workers: int | None = None,
    study=None,
) -> Grid:
    """Run a TPE search over the in-sample windows; returns the distinct sets tried, in trial order, as a Grid.

    `trials` is the study's total: a `study` (an optuna.Study, e.g. resumed from a storage) that
    already holds finished trials only runs the missing ones. Without one, an in-memory study.
    """
    import optuna

    if trials < 1:
        raise ConfigError(f"--trials must be at least 1, got {trials}")
    if not axes:
        raise ConfigError("empty search space: give at least one axis (NAME=SPEC, or a [sweep] table)")
    unknown = sorted(set(axes) - set(strategy.params.model_fields))
    if unknown:
        raise ConfigError(f"unknown parameter(s) {', '.join(unknown)} for strategy {strategy.name}")
    from grinder.sweep.study import RANKABLE

    if rank_by not in RANKABLE:
        raise ConfigError(f"the search cannot optimise {rank_by!r}; choose from {', '.join(RANKABLE)}")
    space = {name: _distribution(name, spec) for name, spec in axes.items()}
    optuna.logging.set_verbosity(logging.WARNING)
    direction = "minimize" if lower_is_better else "maximize"
    if study is None:
        study = optuna.create_study(direction=direction)
    elif study.direction.name.lower() != direction:
        raise DataError(f"study {study.study_name!r} was made to {study.direction.name.lower()}, not to {direction}")
    # A trial that an interrupted run asked but never told is marked FAIL and counts as tried.
    _forget_running(study)
    batch = max(1, workers or os.cpu_count() or 1)
    ins = [w for w in windows if w.sample == "in"]
    tapes: dict = {}
    replays: dict = {}
    done = len(study.get_trials(deepcopy=False))
    while done < trials:
        if not tapes:  # only a study with trials left to run reads data
            tapes = {w.name: load(w) for w in ins}
            replays = {w.name: prepare(tapes[w.name], venue) for w in ins}
        # Batches start at multiples of `batch` and each trial gets a sampler seeded by its number: what
        # a trial asks depends on (seed, its number, the trials told before its batch) only, not on
        # where an earlier run stopped. (TPE's first trials are random and ignore the history.)
        n = min(batch - done % batch, trials - done)
        asked = []
        for k in range(done, done + n):
            study.sampler = optuna.samplers.TPESampler(seed=(seed * 1_000_003 + k) % 2**32)
            asked.append(study.ask(space))
        sets = [_validated(strategy, fixed, t.params) for t in asked]
        valid = [s for s in sets if s is not None]
        scores = np.zeros(len(valid))
        counts = np.zeros(len(valid))
        for w in ins:
            if valid:
                run = run_window(tapes[w.name], strategy, valid, venue, gates, start_ns=w.start_ns, latency=latency,
                                 replay=replays[w.name], workers=workers)  # fmt: skip
                v = window_metric(run, rank_by)
                ok = np.isfinite(v)
                scores += np.where(ok, v, 0.0)
                counts += ok
        with np.errstate(invalid="ignore", divide="ignore"):
            means = scores / counts  # the in-sample mean the ranking uses, NaN windows left out
        k = 0
        for t, s in zip(asked, sets, strict=True):
            if s is None:
                study.tell(t, state=optuna.trial.TrialState.PRUNED)
                continue
            value = float(means[k])
            k += 1
            study.tell(t, value if math.isfinite(value) else None,
                       state=None if math.isfinite(value) else optuna.trial.TrialState.FAIL)  # fmt: skip
        done += n
    seen: dict[tuple, object] = {}
    for t in sorted(study.get_trials(deepcopy=False), key=lambda t: t.number)[:trials]:
        if t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL) and t.params:
            s = _validated(strategy, fixed, t.params)
            if s is not None:
                seen.setdefault(tuple(sorted(t.params.items())), s)
    if not seen:
        raise ConfigError("every searched parameter set was invalid for the strategy")
    values = list(seen.values())
    names = list(axes)
    return Grid(strategy, {n: sorted({getattr(p, n) for p in values}, key=repr) for n in names}, fixed, values)


def _validated(strategy: Strategy, fixed: dict, params: dict):
    """The strategy's parameter model for a trial's params, or None for an invalid combination (pruned)."""
    # Stepped floats come back as lo + k * step with float error: 2.8000000000000003 -> 2.8.
    params = {k: round(v, 12) if isinstance(v, float) else v for k, v in params.items()}
    try:
        return strategy.validate({**fixed, **params})
    except ConfigError:
        return None  # e.g. two bounds crossing


def _forget_running(study) -> None:
    """Mark trials left RUNNING by an interrupted process FAIL, so a resumed study does not count them."""
    import optuna

    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        study._storage.set_trial_state_values(t._trial_id, optuna.trial.TrialState.FAIL)


def window_metric(run: WindowRun, rank_by: str) -> np.ndarray:
    """Every set's value of a rankable metric in one window, computed as the results table computes it."""
    from grinder.sweep.study import sharpe_of

    if rank_by == "sharpe":
        return np.asarray(sharpe_of(run.grid_ns, run.equity), np.float64)
    if rank_by == "return_over_drawdown":
        equity = np.array([r["equity"] for r in run.rows], np.float64)
        drawdown = np.array([r["max_drawdown"] for r in run.rows], np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(drawdown > 0, equity / drawdown, np.nan)
    return np.array([float(r[rank_by]) for r in run.rows], np.float64)
