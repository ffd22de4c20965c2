"""Search instead of a full grid: Optuna's TPE sampler proposes parameter sets, judged in sample only.

The axes use the grid syntax, read as search spaces: `a:b:step` an int or float range with that
step, `lin:a:b:n` a continuous range, `log:a:b:n` a log-scaled one, a list a categorical choice.
Trials are asked in batches of `workers` and run together over the in-sample windows' shared
tapes (`grinder.sweep.runner`); the objective is the ranking metric's in-sample mean. The sets it
tried then go through the same study as a grid (every window, out-of-sample included), so a search
is ranked out of sample like any sweep and never sees the out-of-sample windows while searching.
With a fixed seed the same data gives the same trials.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable

import numpy as np

from grinder.core.gates import GateConfig
from grinder.core.strategy import Strategy
from grinder.data.errors import DataError
from grinder.data.tape import Tape
from grinder.sim.backtest import LatencySeries, VenueConfig, prepare
from grinder.sweep.folds import Window
from grinder.sweep.runner import run_window
from grinder.sweep.spec import Grid, _number, parse_axis


def _distribution(axis: str, spec):
    """An Optuna distribution for one axis spec."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    if isinstance(spec, str) and spec.strip().startswith(("lin:", "log:")):
        values = parse_axis(axis, spec)  # validates the spec
        lo, hi = float(min(values)), float(max(values))
        if lo == hi:
            raise DataError(f"search axis {axis}: the range {spec!r} is a single value")
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
) -> Grid:
    """Run a TPE search over the in-sample windows; returns the distinct sets tried, in trial order, as a Grid."""
    import optuna

    if trials < 1:
        raise DataError(f"--trials must be at least 1, got {trials}")
    if not axes:
        raise DataError("empty search space: give at least one axis (NAME=SPEC, or a [sweep] table)")
    unknown = sorted(set(axes) - set(strategy.params.model_fields))
    if unknown:
        raise DataError(f"unknown parameter(s) {', '.join(unknown)} for strategy {strategy.name}")
    space = {name: _distribution(name, spec) for name, spec in axes.items()}
    ins = [w for w in windows if w.sample == "in"]
    tapes = {w.name: load(w) for w in ins}
    replays = {w.name: prepare(tapes[w.name], venue) for w in ins}
    optuna.logging.set_verbosity(logging.WARNING)
    study = optuna.create_study(direction="minimize" if lower_is_better else "maximize",
                                sampler=optuna.samplers.TPESampler(seed=seed))  # fmt: skip
    batch = max(1, workers or os.cpu_count() or 1)
    seen: dict[tuple, object] = {}
    done = 0
    while done < trials:
        asked = [study.ask(space) for _ in range(min(batch, trials - done))]
        sets = []
        for t in asked:
            # Stepped floats come back as lo + k * step with float error: 2.8000000000000003 -> 2.8.
            params = {k: round(v, 12) if isinstance(v, float) else v for k, v in t.params.items()}
            try:
                sets.append(strategy.validate({**fixed, **params}))
            except DataError:
                sets.append(None)  # an invalid combination (e.g. two bounds crossing): pruned
        valid = [s for s in sets if s is not None]
        scores = np.zeros(len(valid))
        for w in ins:
            if valid:
                run = run_window(tapes[w.name], strategy, valid, venue, gates, start_ns=w.start_ns, latency=latency,
                                 replay=replays[w.name], workers=workers)  # fmt: skip
                scores += np.array([_score(r, rank_by) for r in run.rows]) / len(ins)
        k = 0
        for t, s in zip(asked, sets, strict=True):
            if s is None:
                study.tell(t, state=optuna.trial.TrialState.PRUNED)
                continue
            value = float(scores[k])
            k += 1
            study.tell(t, value if math.isfinite(value) else None,
                       state=None if math.isfinite(value) else optuna.trial.TrialState.FAIL)  # fmt: skip
            seen.setdefault(tuple(sorted(t.params.items())), s)
        done += len(asked)
    if not seen:
        raise DataError("every searched parameter set was invalid for the strategy")
    values = list(seen.values())
    names = list(axes)
    return Grid(strategy, {n: sorted({getattr(p, n) for p in values}, key=repr) for n in names}, fixed, values)


def _score(row: dict, rank_by: str) -> float:
    v = row.get(rank_by)
    if v is None:
        raise DataError(f"the search cannot optimise {rank_by!r}: use a per-backtest metric such as equity")
    return float(v)
