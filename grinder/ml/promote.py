"""Promotion through the registry's aliases: a version becomes `champion` only by beating it out of sample.

`promote_job(NAME, V, start=, end=)` points `challenger` at V (by default it judges whatever
`challenger` already points to, e.g. set in the MLflow UI), then runs the gate: two backtests of a
model-driven strategy on one window [start, end) that shares no time with the data V was trained
on (its tags: first and last sample, and the label's horizon after the last), with the same
parameters, venue and gates:

- the challenger: the strategy driven by `models:/NAME/V`;
- the baseline: the same strategy driven by the current champion's version, or, with no champion
  yet, the static grid (`strategies/static_grid.py`) with the grid parameters the two share
  (levels, interval, half_spread, order_qty, max_position).

Both are recorded as MLflow backtest runs tagged `promotion_of=NAME/V` and `promotion_role`
(challenger or baseline). V is promoted only if it is strictly better on the metric (METRICS says
which way is better); a tie, or a value that is not a number, refuses: the champion stays. Either
way the verdict and its evidence go on V's tags (see below); a promotion then moves
`champion` to V (and removes `challenger`), and a refusal raises `PromotionRefused` (exit code 5),
the champion unchanged. `rollback_job(NAME)` moves `champion` back to the version the current one
replaced. `grinder.ml.registry` holds the alias helpers and reads the record back.

Tags on the judged version, under the verdict's prefix (`promoted.` or `refused.`, so a refusal
of a champion keeps the evidence that made it one): `metric`, `challenger_value`,
`baseline_value`, `baseline` (models:/NAME/V or static_grid), `challenger_run_id`,
`baseline_run_id`, `challenger_digest`, `baseline_digest`, `start_ns`, `end_ns`, `window` (the
same, ISO 8601 UTC), `strategy`, `venue`, `symbol`; beside them `promoted_at` (UTC) and
`previous_champion` (a version or "none"), or `refused_at`, and `promotion`, the latest event.
"""

from __future__ import annotations

import json
import math
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from grinder.errors import ConfigError, GrinderError, TrackingError
from grinder.ml import registry as reg
from grinder.progress import Progress
from grinder.settings import parse_time, read_settings

EXIT_REFUSED = 5  # the exit code of a challenger the gate refused (2 is bad input)
# The metrics a gate may judge on: +1 when higher is better, -1 when lower is; read from the run.
METRICS = {
    "equity": (+1, "final equity (realized + unrealized - fees - funding), settle currency"),
    "realized": (+1, "realized PnL of closed trades, settle currency"),
    "max_drawdown": (-1, "deepest fall of equity below its running peak, settle currency"),
}
BASELINE_STRATEGY = "static_grid"
# The tags that say what data a version was trained on (grinder.ml.train writes them).
TRAIN_TAGS = ("train_start_ns", "train_end_ns", "label_spec", "label")


class PromotionRefused(GrinderError):
    """The gate judged the challenger no better than the baseline: the champion is unchanged (`outcome` says why)."""

    exit_code = EXIT_REFUSED

    def __init__(self, message: str, outcome: PromoteOutcome):
        super().__init__(message)
        self.outcome = outcome


@dataclass(frozen=True)
class GateRun:
    """One of a gate's two backtests: what drove it, its metric value, its digest and where it is recorded."""

    role: str  # "challenger" or "baseline"
    driver: str  # models:/NAME/V, or the static grid's strategy name
    strategy: str
    value: float
    digest: str
    mlflow_run_id: str
    run_dir: Path


@dataclass(frozen=True)
class PromoteOutcome:
    """A gate's verdict: the version judged, both runs, and the champion before and after (None: none)."""

    name: str
    version: str
    metric: str
    start_ns: int
    end_ns: int
    challenger: GateRun
    baseline: GateRun
    promoted: bool
    previous_champion: str | None
    champion: str | None
    at: str  # UTC ISO 8601

    @property
    def verdict(self) -> str:
        return "promoted" if self.promoted else "refused"


@dataclass(frozen=True)
class RollbackOutcome:
    """A rollback: `champion` moved from one version back to the one it had replaced."""

    name: str
    from_version: str
    to_version: str
    at: str


def promote_job(
    name: str,
    version: str | int | None = None,
    *,
    start: str | int,
    end: str | int,
    root: Path | None = None,
    venue: str = "binance-usdm",
    symbol: str = "BTCUSDT",
    strategy: str = "ml_grid",
    params: Mapping[str, Any] | None = None,
    config: Path | None = None,
    venue_settings: Mapping[str, Any] | None = None,
    metric: str = "equity",
    report: bool = True,
    mlruns: Path | None = None,
    out_dir: Path = Path("runs"),
    progress: Progress | None = None,
) -> PromoteOutcome:
    """Judge version `version` of registered model `name` (default: the one `challenger` points to)
    against the champion (or the static grid) on [start, end) and promote it if it wins (module docstring).

    `strategy`, `params`, `config` and `venue_settings` are the strategy's settings as `backtest_job`
    takes them, shared by both runs; `metric` is one of METRICS. Returns the outcome of a promotion;
    raises PromotionRefused (with the outcome) for a refusal, ConfigError for a request that cannot be
    judged (nothing changed then).
    """
    from grinder.core.strategy import get
    from grinder.ml.model import load_model
    from grinder.sim.job import check_model_fits
    from grinder.track.mlflow_store import default_root

    progress = progress or Progress()
    store = Path(mlruns) if mlruns is not None else default_root()
    if metric not in METRICS:
        raise ConfigError(f"unknown metric {metric!r}; known: {', '.join(METRICS)}")
    lo, hi = parse_time(start), parse_time(end)
    if lo is None or hi is None or not lo < hi:
        raise ConfigError(f"the gate's window needs a start before its end, got {start!r} .. {end!r}")
    strat = get(strategy)
    if not strat.signals:
        raise ConfigError(f"strategy {strat.name} reads no model's signals: a gate needs a model-driven strategy")
    client = reg.open_registry(store)
    if version is None:
        version = reg.alias_version(client, name, reg.CHALLENGER)
        if version is None:
            raise ConfigError(f"registered model {name!r} has no {reg.CHALLENGER!r} alias: give --version, or set "
                              "the alias in the MLflow UI")  # fmt: skip
    version = str(reg.get_version(client, name, version).version)
    uri = f"models:/{name}/{version}"
    challenger = load_model(uri, store)  # refuses a damaged booster or a changed feature kernel
    check_model_fits(strat, challenger)
    check_out_of_sample(uri, challenger.tags, lo, hi)
    champion = reg.alias_version(client, name, reg.CHAMPION)
    settings = read_settings(config, ("strategy", "venue", "gates"), params, venue_settings)
    chosen = strat.validate(settings["strategy"])
    if champion is not None:
        held = load_model(f"models:/{name}/{champion}", store)
        check_model_fits(strat, held)
        if _overlaps(held.uri, held.tags, lo, hi):  # an in-sample champion is favoured: the gate is only harder to pass
            progress.warn(f"the window overlaps the training data of the champion, models:/{name}/{champion}")
        baseline_params = None
    else:
        baseline_params = static_params(chosen.model_dump())
    reg.set_alias(client, name, reg.CHALLENGER, version)
    # One folder per gate, a folder per role in it: a version judged against itself gives two runs
    # of one digest, whose run folders would otherwise share a name.
    folder = Path(out_dir) / f"{reg.utc_now().replace('-', '').replace(':', '')}-promote-{name}-v{version}"
    common = {"symbol": symbol, "venue": venue, "start": start, "end": end, "venue_settings": venue_settings,
              "report": report, "mlruns": store, "root": root, "progress": progress}  # fmt: skip
    tags = {"promotion_of": f"{name}/{version}", "promotion_metric": metric}
    # No stage around the runs: backtest_job shows its own (a console shows one at a time).
    ran = _gate_run("challenger", uri, strat.name, metric, client, tags, model=uri, params=params, config=config,
                    out_dir=folder / "challenger", **common)  # fmt: skip
    if champion is not None:
        base_uri = f"models:/{name}/{champion}"
        base = _gate_run("baseline", base_uri, strat.name, metric, client, tags, model=base_uri, params=params,
                         config=config, out_dir=folder / "baseline", **common)  # fmt: skip
    else:
        with tempfile.TemporaryDirectory() as temp:
            base_config = _baseline_config(settings, baseline_params, Path(temp)) if config is not None else None
            base = _gate_run("baseline", BASELINE_STRATEGY, BASELINE_STRATEGY, metric, client, tags, model=None,
                             params=None if base_config else baseline_params, config=base_config,
                             out_dir=folder / "baseline", **common)  # fmt: skip
    direction = METRICS[metric][0]
    won = math.isfinite(ran.value) and math.isfinite(base.value) and direction * (ran.value - base.value) > 0
    at = reg.utc_now()
    verdict = "promoted" if won else "refused"
    evidence = {
        "metric": metric,
        "challenger_value": repr(ran.value),
        "baseline_value": repr(base.value),
        "baseline": base.driver,
        "challenger_run_id": ran.mlflow_run_id,
        "baseline_run_id": base.mlflow_run_id,
        "challenger_digest": ran.digest,
        "baseline_digest": base.digest,
        "start_ns": lo,
        "end_ns": hi,
        "window": _window(lo, hi),
        "strategy": strat.name,
        "venue": venue,
        "symbol": symbol,
    }
    # Under the verdict's prefix: a later refusal of a champion (judged against itself, say) keeps
    # the evidence that made it champion.
    record = {f"{verdict}.{k}": v for k, v in evidence.items()} | {reg.STATUS: verdict, reg.event_tag(verdict): at}
    outcome = PromoteOutcome(name, version, metric, lo, hi, ran, base, won, champion,
                             version if won else champion, at)  # fmt: skip
    if not won:
        reg.tag_version(client, name, version, record)
        raise PromotionRefused(f"{uri} refused: {metric} {ran.value:.6g} is not better than {base.value:.6g} of "
                               f"{base.driver} on {_window(lo, hi)}; the champion stays "
                               f"{'version ' + champion if champion else 'unset'}", outcome)  # fmt: skip
    # The evidence first: a promotion interrupted before the alias moved shows as promoted but not
    # champion, never as a champion without its evidence.
    reg.tag_version(client, name, version, record | {reg.PREVIOUS_CHAMPION: champion or reg.NONE})
    if champion is not None and champion != version:
        reg.tag_version(client, name, champion, {reg.STATUS: "replaced", reg.event_tag("replaced"): at,
                                                 "replaced_by": version})  # fmt: skip
    reg.make_champion(client, name, version, "promote", at)
    reg.clear_alias(client, name, reg.CHALLENGER)  # decided: the challenger is the champion now
    return outcome


def rollback_job(name: str, *, mlruns: Path | None = None) -> RollbackOutcome:
    """Move `champion` of registered model `name` back to the version the current champion replaced.

    ConfigError (nothing changed) when there is no champion, when it was set by hand (no record of
    what it replaced), when it replaced none, or when that version is gone or no longer loads.
    """
    from grinder.ml.model import load_model
    from grinder.track.mlflow_store import default_root

    store = Path(mlruns) if mlruns is not None else default_root()
    client = reg.open_registry(store)
    current, origin = reg.champion_origin(client, name)
    if current is None:
        raise ConfigError(f"registered model {name!r} has no champion: nothing to roll back")
    if origin == reg.HAND:
        raise ConfigError(f"the champion of {name!r}, version {current}, was set by hand, not by `grinder ml "
                          "promote`: no record of what it replaced; move the alias in the MLflow UI")  # fmt: skip
    tags = dict(reg.get_version(client, name, current).tags or {})
    previous = tags.get(reg.PREVIOUS_CHAMPION, reg.NONE)
    if previous == reg.NONE:
        raise ConfigError(f"the champion of {name!r}, version {current}, replaced no earlier champion: "
                          "nothing to roll back to")  # fmt: skip
    reg.get_version(client, name, previous)
    load_model(f"models:/{name}/{previous}", store)  # loaders must be able to use what becomes champion
    at = reg.utc_now()
    reg.tag_version(client, name, current, {reg.STATUS: "rolled back", reg.event_tag("rolled back"): at,
                                            "rolled_back_to": previous})  # fmt: skip
    reg.tag_version(client, name, previous, {reg.STATUS: "reinstated", reg.event_tag("reinstated"): at})
    reg.make_champion(client, name, previous, "rollback", at)
    return RollbackOutcome(name, current, previous, at)


def check_out_of_sample(uri: str, tags: Mapping[str, str], start_ns: int, end_ns: int) -> None:
    """ConfigError unless [start_ns, end_ns) shares no time with the data the version was trained on.

    That data runs from its first sample (`train_start_ns`) to its last (`train_end_ns`) plus the
    label's horizon: the last sample's label looked that far ahead (`grinder.ml.labels`).
    """
    seen = training_range(uri, tags)
    if start_ns <= seen[1] and seen[0] < end_ns:
        raise ConfigError(f"the gate's window {_window(start_ns, end_ns)} overlaps the training data of {uri} "
                          f"({_window(*seen)}, labels included): the gate must be out of sample")  # fmt: skip


def training_range(uri: str, tags: Mapping[str, str]) -> tuple[int, int]:
    """(first, last) exchange ns of the data a version's training saw: its samples and their labels' windows."""
    from grinder.ml.labels import LabelSpec

    missing = [t for t in TRAIN_TAGS if t not in tags]
    if missing:
        raise ConfigError(f"{uri} lacks the tag(s) {', '.join(missing)}: no way to show the gate's window is out "
                          "of sample; register models with `grinder ml train`")  # fmt: skip
    try:
        first, last = int(tags["train_start_ns"]), int(tags["train_end_ns"])
        horizon = LabelSpec(**json.loads(tags["label_spec"])).info(tags["label"]).horizon_ns
    except (ValueError, TypeError, GrinderError) as e:
        raise ConfigError(f"{uri}: unreadable training range or label spec tags: {e}") from None
    return first, last + horizon


def _overlaps(uri: str, tags: Mapping[str, str], start_ns: int, end_ns: int) -> bool:
    """Whether [start_ns, end_ns) meets the data a version was trained on (False when its tags do not say)."""
    try:
        first, last = training_range(uri, tags)
    except ConfigError:
        return False
    return start_ns <= last and first < end_ns


def static_params(values: Mapping[str, Any]) -> dict[str, Any]:
    """The static grid's parameters out of a grid strategy's (those of the same name), checked."""
    from grinder.core.strategy import get

    static = get(BASELINE_STRATEGY)
    shared = {k: v for k, v in values.items() if k in static.params.model_fields}
    try:
        return static.validate(shared).model_dump()
    except ConfigError as e:
        raise ConfigError(f"no champion yet, so the baseline is the static grid, but its parameters do not follow "
                          f"from the strategy's: {e.message}") from None  # fmt: skip


def metric_value(metric: str, summary: Mapping[str, Any], steps: Mapping[str, Any]) -> float:
    """A run's value of `metric` (one of METRICS) from its summary and per-step records; NaN when undefined."""
    if metric == "max_drawdown":
        from grinder.portfolio.curves import max_drawdown

        return max_drawdown(steps["equity"]) if len(steps["equity"]) else math.nan
    value = summary.get(metric)
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else math.nan


def _gate_run(role: str, driver: str, strategy: str, metric: str, client, tags: dict, **kwargs) -> GateRun:
    """One backtest of the gate, recorded in MLflow and tagged with the promotion it serves."""
    from mlflow.entities import RunTag

    from grinder.sim.job import backtest_job

    done = backtest_job(strategy, track=True, **kwargs)
    run_id = done.mlflow_run_id or ""
    try:
        client.log_batch(run_id, tags=[RunTag(k, v) for k, v in (tags | {"promotion_role": role}).items()])
    except Exception as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise TrackingError(f"cannot tag the gate's {role} run {run_id}: {first}") from None
    value = metric_value(metric, done.summary, done.result.steps)
    return GateRun(role, driver, strategy, value, done.summary["digest"], run_id, done.run_dir)


def _baseline_config(settings: Mapping[str, Mapping], static: Mapping[str, Any], folder: Path) -> Path:
    """A TOML file with the static grid's parameters and the config file's [venue] and [gates] tables."""
    from grinder.sweep.export import to_toml

    path = folder / "baseline.toml"
    path.write_text(to_toml({"strategy": dict(static), "venue": dict(settings["venue"]),
                             "gates": dict(settings["gates"])}))  # fmt: skip
    return path


def _window(start_ns: int, end_ns: int) -> str:
    """[start, end) as ISO 8601 UTC to the millisecond."""
    import numpy as np

    a, b = (str(np.datetime64(int(t), "ns").astype("datetime64[ms]")) for t in (start_ns, end_ns))
    return f"{a}..{b}"
