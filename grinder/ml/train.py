"""`grinder ml train` as one call: dataset, walk-forward folds against a naive baseline, the final model, MLflow.

`train_job` builds the training table (`grinder.ml.dataset`), fits one xgboost model per purged,
embargoed walk-forward fold (`grinder.ml.folds`) and scores it and a naive baseline on the fold's
test samples, then fits the final model on every sample. Only then does it touch the MLflow store:
one run in the experiment `grinder-ml` (params, per-fold metrics, importance, the model) and a new
version of the registered model, whose tags (`VERSION_TAGS`) say what it was trained on. Bad input
fails before the store is opened, so nothing is logged or registered.

The objective follows the label's task: reg:squarederror (fwd_rv, markouts), binary:logistic
(fills), multi:softprob over the three regimes (fwd_regime). Training is deterministic: a fixed
seed and one thread unless `nthread` is given (tests compare `model_sha256` of two trainings).
"""

from __future__ import annotations

import json
import math
import time
import warnings
from collections.abc import Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from grinder.errors import ConfigError, TrackingError
from grinder.features.spec import NS_PER_S, FeatureSet
from grinder.ml.dataset import Dataset, build_dataset
from grinder.ml.folds import walk_forward_folds
from grinder.ml.labels import BINARY, MULTICLASS, N_REGIMES, REGRESSION, LabelSpec
from grinder.ml.model import booster_sha256
from grinder.progress import Progress
from grinder.settings import default_lake, parse_time

EXPERIMENT = "grinder-ml"
# The experiment tag MLflow 3's UI reads to open the runs view (not the GenAI view); the values it
# knows are in its ExperimentKind enum: genai_development, custom_model_development, ...
EXPERIMENT_KIND = ("mlflow.experimentKind", "custom_model_development")
MODEL_ARTIFACT = "model"  # the MLflow model's name (mlflow.xgboost flavor, UBJSON booster)
# Tags on each registered model version; the model loader reads them by these names.
VERSION_TAGS = ("feature_set", "feature_set_version", "label", "label_spec", "label_spec_version",
                "data_fingerprint", "train_start_ns", "train_end_ns", "objective", "model_sha256")  # fmt: skip
OBJECTIVES = {REGRESSION: "reg:squarederror", BINARY: "binary:logistic", MULTICLASS: "multi:softprob"}
METRICS = {REGRESSION: ("rmse", "mae", "r2"), BINARY: ("logloss", "auc"), MULTICLASS: ("mlogloss", "accuracy")}
# Defaults under any --xgb values; small trees and a slow rate suit a few thousand noisy rows.
DEFAULT_XGB: dict[str, Any] = {"max_depth": 4, "eta": 0.05, "subsample": 0.8, "colsample_bytree": 0.8,
                               "min_child_weight": 5, "tree_method": "hist", "nthread": 1}  # fmt: skip
DEFAULT_ROUNDS = 200
ROUNDS_KEY = "num_boost_round"
# Set from the label and the --seed option, never from --xgb: the metrics and the tags depend on them.
RESERVED = {"objective": "the label's task", "num_class": "the label's task", "seed": "--seed (seed=)"}
PANDAS_RANGE_WARNING = r"Operation with range is deprecated"
EPS = 1e-15  # probabilities are clipped to [EPS, 1 - EPS] in log losses, as sklearn's


@dataclass(frozen=True)
class FoldResult:
    """One walk-forward fold: its samples, the model's and the baseline's metrics on its test samples."""

    index: int
    train_samples: int
    test_samples: int
    purged: int
    embargoed: int
    test_start_ns: int
    test_end_ns: int
    metrics: dict[str, float]
    baseline: dict[str, float]


@dataclass(frozen=True)
class TrainOutcome:
    """What a training left: the folds' figures, the final model's importance and identity, and where it is."""

    label: str
    objective: str
    folds: list[FoldResult]
    mean: dict[str, float]  # the folds' mean of each metric
    baseline_mean: dict[str, float]
    importance: dict[str, float]  # the final model's total gain per feature, in FeatureSet order (0: unused)
    samples: int
    dropped: int
    train_start_ns: int
    train_end_ns: int
    data_fingerprint: str
    feature_set_version: str
    label_spec_version: str
    model_sha256: str
    run_id: str
    model_name: str
    model_version: str
    model_uri: str
    features_from: str = "computed"  # or "store:<part key>": read from the lake's feature store


def train_job(
    label: str,
    *,
    symbol: str = "BTCUSDT",
    venue: str = "binance-usdm",
    start: str | int | None = None,
    end: str | int | None = None,
    feature_set: FeatureSet | None = None,
    label_spec: LabelSpec | None = None,
    every_ns: int = NS_PER_S,
    folds: int = 3,
    embargo_ns: int = 0,
    xgb_params: Mapping[str, Any] | None = None,
    seed: int = 0,
    name: str | None = None,
    mlruns: Path | None = None,
    root: Path | None = None,
    progress: Progress | None = None,
) -> TrainOutcome:
    """Train a model of `label` on the lake's `venue`/`symbol` from `start` to `end`, log it and register it.

    Samples every `every_ns` within coverage; `folds` walk-forward folds with an embargo of
    `embargo_ns`; `xgb_params` over `DEFAULT_XGB` (values may be text, as a command line gives
    them; `num_boost_round` is the number of trees, default 200). Registers a new version of
    `name` (default `grinder-<label>`) in the MLflow store `mlruns` (default: $GRINDER_MLRUNS or ./mlruns).
    """
    progress = progress or Progress()
    fs = feature_set or FeatureSet()
    spec = label_spec or LabelSpec()
    info = spec.info(label)
    params, rounds = booster_params(info.task, xgb_params, seed)
    # xgboost checks its parameters only when it trains: one round on two rows of zeros, before any data is read.
    _fit(params, 1, np.zeros((2, len(fs.names))), np.zeros(2), fs.names)
    model_name = name or f"grinder-{label}"
    if not model_name.strip() or any(c in model_name for c in "/:"):
        raise ConfigError(f"--name {model_name!r}: a registered model's name is not empty and has no '/' or ':'")
    root = Path(root) if root is not None else default_lake()
    lo, hi = parse_time(start), parse_time(end)
    with progress.stage(f"features and labels of {venue}/{symbol}"):
        data = build_dataset(root, venue, symbol, lo, hi, fs, spec, every_ns, (label,))
    plan = walk_forward_folds(data.ts, info.horizon_ns, folds, embargo_ns)
    y = data.label(label)
    results = []
    with progress.stage(f"fitting {folds} walk-forward fold(s) of {len(data):,} samples"):
        for f in plan:
            booster = _fit(params, rounds, data.x[f.train], y[f.train], fs.names)
            pred = _predict(booster, data.x[f.test], fs.names)
            naive = baseline(info.task, y[f.train], len(f.test))
            results.append(FoldResult(f.index, len(f.train), len(f.test), f.purged, f.embargoed, f.test_start_ns,
                                      f.test_end_ns, score(info.task, y[f.test], pred),
                                      score(info.task, y[f.test], naive)))  # fmt: skip
    with progress.stage("fitting the final model on every sample"):
        final = _fit(params, rounds, data.x, y, fs.names)
    gain = final.get_score(importance_type="gain")
    importance = {n: float(gain.get(n, 0.0)) for n in fs.names}
    sha = booster_sha256(final)
    mean = {m: _mean([r.metrics[m] for r in results]) for m in METRICS[info.task]}
    base_mean = {m: _mean([r.baseline[m] for r in results]) for m in METRICS[info.task]}
    tags = {
        "feature_set": json.dumps(fs.model_dump()),
        "feature_set_version": fs.version,
        "label": label,
        "label_spec": json.dumps(spec.model_dump()),
        "label_spec_version": spec.version,
        "data_fingerprint": data.data_fingerprint,
        "train_start_ns": str(int(data.ts[0])),
        "train_end_ns": str(int(data.ts[-1])),
        "objective": params["objective"],
        "model_sha256": sha,
    }
    selection = {"lake": str(root), "venue": venue, "symbol": symbol, "start": start, "end": end}
    with progress.stage("logging and registering the model in MLflow"):
        run_id, version, uri = _log_and_register(
            mlruns, model_name, final, data, fs, spec, label, params, rounds,
            {"every_ns": every_ns, "folds": folds, "embargo_ns": embargo_ns, "seed": seed} | selection,
            results, mean, base_mean, importance, tags,
        )  # fmt: skip
    return TrainOutcome(label, params["objective"], results, mean, base_mean, importance, data.samples, data.dropped,
                        int(data.ts[0]), int(data.ts[-1]), data.data_fingerprint, fs.version, spec.version, sha,
                        run_id, model_name, version, uri, data.features_from)  # fmt: skip


def booster_params(task: str, given: Mapping[str, Any] | None, seed: int) -> tuple[dict[str, Any], int]:
    """(xgboost params, boosting rounds) for a label task: `DEFAULT_XGB`, then `given` (text read as numbers), then
    the objective and seed."""
    params = dict(DEFAULT_XGB)
    rounds = DEFAULT_ROUNDS
    for key, value in (given or {}).items():
        if key in RESERVED:
            raise ConfigError(f"--xgb {key}: set by {RESERVED[key]}, not by --xgb")
        v = _value(value)
        if key == ROUNDS_KEY:
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ConfigError(f"--xgb {ROUNDS_KEY}={value}: must be a whole number >= 1")
            rounds = v
        else:
            params[key] = v
    params |= {"objective": OBJECTIVES[task], "seed": int(seed)}
    if task == MULTICLASS:
        params["num_class"] = N_REGIMES
    return params, rounds


def _value(v: Any) -> Any:
    """A parameter from the command line's text: an int, a float, true/false, or the text itself."""
    if not isinstance(v, str):
        return v
    low = v.strip().lower()
    if low in ("true", "false"):
        return low == "true"
    for kind in (int, float):
        try:
            return kind(v)
        except ValueError:
            pass
    return v


def _fit(params: dict, rounds: int, x: np.ndarray, y: np.ndarray, names: tuple[str, ...]):
    """An xgboost Booster; xgboost's refusals and unused-parameter warnings as ConfigError."""
    import xgboost as xgb

    try:
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            booster = xgb.train(params, xgb.DMatrix(x, label=y, feature_names=list(names)), rounds)
    except xgb.core.XGBoostError as e:
        raise ConfigError(f"xgboost refused the parameters: {_first_line(e)}") from None
    for w in seen:
        text = str(w.message)
        if "are not used" in text:
            unused = text[text.index("{") + 1 : text.index("}")].replace('"', "").strip()
            raise ConfigError(f"--xgb {unused}: not an xgboost parameter of this booster")
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return booster


def _predict(booster, x: np.ndarray, names: tuple[str, ...]) -> np.ndarray:
    """The booster's predictions for rows `x`: values, P(1), or class probabilities [n, 3], by objective."""
    import xgboost as xgb

    return booster.predict(xgb.DMatrix(x, feature_names=list(names)))


def _first_line(e: BaseException) -> str:
    """An error's first line, without the "[time] file.cc:line: " xgboost puts before its message."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    return lines[0].split(": ", 1)[-1] if lines and lines[0].startswith("[") else (lines[0] if lines else "")


def baseline(task: str, y_train: np.ndarray, n: int) -> np.ndarray:
    """The naive prediction for n test samples from the training labels alone.

    Regression: the training mean. Binary and multiclass: the training frequency of each class with
    one pseudo-count per class (Laplace), so a class training never saw is not given probability 0
    (a log loss of 35 per sample would flatter every model). A model that does not beat it has
    learnt nothing usable from the features.
    """
    if task == REGRESSION:
        return np.full(n, float(np.mean(y_train)))
    if task == BINARY:
        return np.full(n, (float(np.sum(y_train)) + 1.0) / (len(y_train) + 2.0))
    counts = np.bincount(y_train.astype(np.int64), minlength=N_REGIMES)[:N_REGIMES] + 1.0
    return np.tile(counts / counts.sum(), (n, 1))


def score(task: str, y: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """The task's metrics of `pred` against `y` (`METRICS`): regression values, P(1), or class probabilities [n, 3]."""
    if task == REGRESSION:
        err = pred - y
        sst = float(np.sum((y - y.mean()) ** 2))
        r2 = 1.0 - float(np.sum(err**2)) / sst if sst > 0 else math.nan
        return {"rmse": float(np.sqrt(np.mean(err**2))), "mae": float(np.mean(np.abs(err))), "r2": r2}
    if task == BINARY:
        p = np.clip(pred, EPS, 1 - EPS)
        return {"logloss": float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))), "auc": auc(y, pred)}
    k = y.astype(np.int64)
    p = np.clip(pred[np.arange(len(k)), k], EPS, 1.0)
    return {"mlogloss": float(-np.mean(np.log(p))), "accuracy": float(np.mean(np.argmax(pred, axis=1) == k))}


def auc(y: np.ndarray, p: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney, ties counted half); NaN when y holds one class only."""
    pos = y == 1
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos == 0 or n_neg == 0:
        return math.nan
    _, inv, counts = np.unique(p, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    ranks = (ends - (counts - 1) / 2.0)[inv]  # average 1-based rank of each tie group
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def _mean(values: list[float]) -> float:
    """Mean over the folds, NaN folds (an AUC of a one-class fold) left out; NaN if none is left."""
    v = [x for x in values if not math.isnan(x)]
    return float(np.mean(v)) if v else math.nan


@contextmanager
def _tracking_uri(uri: str):
    """MLflow's process-wide tracking URI as `uri` for the block (mlflow.xgboost.log_model reads it), then as before."""
    import mlflow

    before = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(before)


def _pip_requirement() -> str:
    """The installed xgboost distribution pinned (xgboost-cpu here), so MLflow need not infer it in a subprocess."""
    import importlib.metadata as md

    import xgboost as xgb

    dist = (md.packages_distributions().get("xgboost") or ["xgboost"])[0]
    return f"{dist}=={xgb.__version__}"


def _log_and_register(mlruns, model_name, booster, data: Dataset, fs, spec, label, params, rounds, settings,
                      results, mean, base_mean, importance, tags) -> tuple[str, str, str]:  # fmt: skip
    """One MLflow run (params, metrics, artifacts, the model) and a new registered version: (run id, version, uri)."""
    from grinder.track.mlflow_store import SQLITE_BUSY_S, default_root, open_store, tracking_uri
    from grinder.track.provenance import git_commit

    root = Path(mlruns) if mlruns is not None else default_root()
    client, exp_id = open_store(root, EXPERIMENT)
    import mlflow
    import mlflow.xgboost
    import pandas as pd
    from mlflow.entities import Metric, Param
    from mlflow.models import infer_signature

    try:
        client.set_experiment_tag(exp_id, *EXPERIMENT_KIND)
        run_params = {"label": label, "objective": params["objective"], ROUNDS_KEY: rounds}
        run_params |= {f"xgb.{k}": v for k, v in params.items() if k != "objective"}
        run_params |= {k: v for k, v in settings.items() if v is not None}
        run_params |= {f"features.{k}": v for k, v in fs.model_dump().items()}
        run_params |= {f"labels.{k}": v for k, v in spec.model_dump().items()}
        metrics = []
        now = int(time.time() * 1000)
        for r in results:
            figures = r.metrics | {f"baseline_{k}": v for k, v in r.baseline.items()}
            figures |= {"train_samples": r.train_samples, "test_samples": r.test_samples, "purged": r.purged,
                        "embargoed": r.embargoed}  # fmt: skip
            metrics += [Metric(k, float(v), now, r.index) for k, v in figures.items()]
        totals = {f"mean_{k}": v for k, v in mean.items()} | {f"mean_baseline_{k}": v for k, v in base_mean.items()}
        totals |= {"samples": data.samples, "dropped_nan_labels": data.dropped}
        totals |= {f"importance_gain.{k}": v for k, v in importance.items()}
        metrics += [Metric(k, float(v), now, 0) for k, v in totals.items()]
        commit = git_commit(Path(__file__).resolve().parents[2])
        run_tags = {"kind": "ml_train", "venue": settings["venue"], "symbol": settings["symbol"]}
        run_tags |= {k: tags[k] for k in ("label", "data_fingerprint", "feature_set_version", "label_spec_version")}
        run_tags["features_from"] = data.features_from  # "computed", or the feature store's part
        run_tags |= {"git_commit": commit} if commit else {}
        x = pd.DataFrame(data.x, columns=list(fs.names))
        example = x.iloc[:5]
        uri = tracking_uri(root) + f"?timeout={SQLITE_BUSY_S}"  # the store's own client waits as long
        with (
            _tracking_uri(uri),
            mlflow.start_run(experiment_id=exp_id, run_name=f"train-{label}", tags=run_tags) as run,
        ):  # the run ends FINISHED, or FAILED on any exception
            run_id = run.info.run_id
            client.log_batch(run_id, metrics=metrics, params=[Param(k, _text(v)) for k, v in run_params.items()])
            client.log_dict(run_id, importance, "feature_importance.json")
            client.log_dict(run_id, [asdict(r) for r in results], "folds.json")
            pin = _pip_requirement()
            # From every row, not the example's five: a column is optional only if it is NaN somewhere.
            signature = infer_signature(x, _predict(booster, data.x, fs.names))
            with warnings.catch_warnings():
                # MLflow 3.17 compares an example's columns with a range, which pandas 3 deprecates; harmless.
                warnings.filterwarnings("ignore", message=PANDAS_RANGE_WARNING, module=r"mlflow\.")
                info = mlflow.xgboost.log_model(
                    booster, name=MODEL_ARTIFACT, signature=signature, input_example=example, pip_requirements=[pin]
                )
            version = _register(client, model_name, info, run_id, tags)
            client.set_tag(run_id, "registered_model", f"{model_name}/{version}")
    except Exception as e:  # MLflow, SQLAlchemy and file errors alike: the store did not take the model
        raise TrackingError(f"cannot log or register the model: {type(e).__name__}: {_first_line(e)}", str(root)) from e
    return run_id, version, info.model_uri


def _register(client, model_name: str, info, run_id: str, tags: dict[str, str]) -> str:
    """A new version of `model_name` (created if new) for the logged model, with `tags` on the version; its number."""
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import RESOURCE_ALREADY_EXISTS, ErrorCode

    try:
        client.create_registered_model(model_name)
    except MlflowException as e:
        if e.error_code != ErrorCode.Name(RESOURCE_ALREADY_EXISTS):
            raise
    mv = client.create_model_version(model_name, info.model_uri, run_id=run_id, tags=tags, model_id=info.model_id)
    return str(mv.version)


def _text(v: Any) -> str:
    """A param's value as MLflow stores it: text as is, anything else as JSON."""
    return v if isinstance(v, str) else json.dumps(v, default=str)
