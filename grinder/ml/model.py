"""A registered model as the drivers use it: resolved from the registry once, pinned, checked, predicting on arrays.

`load_model("models:/NAME@champion", mlruns)` resolves the alias to one version (what a backtest and
a live session then keep, whatever the alias points to later), reads the version's tags that
`grinder ml train` wrote (the feature set, the label, the booster's hash) and the booster from the
version's logged model in the store's artifact folder. It refuses, with the model named, a version
whose booster's bytes do not hash to its `model_sha256` tag, or whose feature set this code computes
under another version hash (the kernel changed since it was trained): a model is only ever fed the
features it was trained on. `predict` runs the booster over a feature matrix, the same call for a
whole backtest and for one live decision.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from grinder.errors import ConfigError, TrackingError
from grinder.features.spec import FeatureSet

# models:/NAME@ALIAS or models:/NAME/VERSION (MLflow's registry URIs)
_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[A-Za-z0-9_-]+)|/(?P<version>\d+))$")
# The model-version tags `grinder ml train` writes and a driver needs.
REQUIRED_TAGS = ("feature_set", "feature_set_version", "label", "model_sha256", "objective")


@dataclass(frozen=True)
class ModelRef:
    """A registry URI parsed: the model's name and either an alias or a version."""

    name: str
    alias: str | None
    version: str | None

    @classmethod
    def parse(cls, uri: str) -> ModelRef:
        m = _URI.match(uri.strip())
        if m is None:
            raise ConfigError(f"model {uri!r}: expected models:/NAME@ALIAS or models:/NAME/VERSION")
        return cls(m["name"], m["alias"], m["version"])


@dataclass(frozen=True)
class LoadedModel:
    """One registered model version, pinned: its booster, the features it reads and the label it predicts.

    `width` is the number of outputs per row (1 for a regression or a binary probability, the
    classes for a regime model); `source` names it exactly (name, version, booster hash, feature-set
    hash) and is what enters a run's digest.
    """

    name: str
    version: str
    alias: str | None
    run_id: str
    label: str
    objective: str
    feature_set: FeatureSet
    model_sha256: str
    tags: dict[str, str]
    booster: Any  # xgboost.Booster

    @property
    def uri(self) -> str:
        """The pinned URI: the version, not the alias it was reached by."""
        return f"models:/{self.name}/{self.version}"

    @property
    def source(self) -> str:
        return f"{self.uri} sha256={self.model_sha256} features={self.feature_set.version}"

    @property
    def width(self) -> int:
        n = int(self.booster.attr("num_class") or 0) if self.objective.startswith("multi:") else 0
        return n or 1

    def predict(self, features: np.ndarray) -> np.ndarray:
        """Outputs for feature rows (float64 [n, len(feature_set.names)], in its column order): float64 [n, width]."""
        x = np.ascontiguousarray(features, np.float64)
        if x.ndim != 2 or x.shape[1] != len(self.feature_set.names):
            raise ConfigError(f"{self.uri}: needs {len(self.feature_set.names)} feature columns, got shape {x.shape}")
        if x.shape[0] == 0:
            return np.empty((0, self.width))
        # Prediction in float32 like every xgboost path; float64 out so the kernels read one type.
        y = self.booster.inplace_predict(x, validate_features=False)
        return np.asarray(y, np.float64).reshape(x.shape[0], self.width)

    def summary(self) -> dict:
        """What a run records of the model it used."""
        return {"uri": self.uri, "alias": self.alias, "run_id": self.run_id, "label": self.label,
                "objective": self.objective, "model_sha256": self.model_sha256,
                "feature_set_version": self.feature_set.version}  # fmt: skip


def booster_sha256(booster) -> str:
    """SHA-256 (hex) of the booster's raw UBJSON bytes: the model's identity (`model_sha256`)."""
    return hashlib.sha256(bytes(booster.save_raw("ubj"))).hexdigest()


def load_model(uri: str, mlruns: Path) -> LoadedModel:
    """The model version `uri` names in the store at `mlruns`, checked (see the module docstring)."""
    from grinder.track.mlflow_store import open_store

    ref = ModelRef.parse(uri)
    client, _ = open_store(mlruns)
    mv = _version(client, ref, uri)
    tags = dict(mv.tags or {})
    missing = [t for t in REQUIRED_TAGS if t not in tags]
    if missing:
        raise TrackingError(f"{uri} (version {mv.version}) lacks the tag(s) {', '.join(missing)}: "
                            "register models with `grinder ml train`", str(mlruns))  # fmt: skip
    try:
        fs = FeatureSet(**json.loads(tags["feature_set"]))
    except Exception as e:  # a damaged or foreign tag
        raise TrackingError(f"{uri} (version {mv.version}): unreadable feature_set tag: {e}", str(mlruns)) from None
    if fs.version != tags["feature_set_version"]:
        raise ConfigError(
            f"models:/{ref.name}/{mv.version} was trained on features {tags['feature_set_version'][:12]}, but this "
            f"code computes that feature set as {fs.version[:12]} (the feature kernel changed): retrain it"
        )
    booster = _booster(client, mv, uri, mlruns)
    digest = booster_sha256(booster)
    if digest != tags["model_sha256"]:
        raise TrackingError(f"models:/{ref.name}/{mv.version}: the stored booster hashes to {digest[:12]}, "
                            f"its model_sha256 tag says {tags['model_sha256'][:12]}", str(mlruns))  # fmt: skip
    return LoadedModel(ref.name, str(mv.version), ref.alias, mv.run_id or "", tags["label"], tags["objective"], fs,
                       digest, tags, booster)  # fmt: skip


def _version(client, ref: ModelRef, uri: str):
    from mlflow.exceptions import MlflowException

    try:
        if ref.alias is not None:
            return client.get_model_version_by_alias(ref.name, ref.alias)
        return client.get_model_version(ref.name, ref.version)
    except MlflowException as e:
        what = f"alias {ref.alias!r}" if ref.alias else f"version {ref.version}"
        raise ConfigError(f"{uri}: no {what} of registered model {ref.name!r} ({e.error_code})") from None


def _booster(client, mv, uri: str, mlruns: Path):
    """The xgboost booster of a version's logged model, read from the store's artifact folder."""
    import xgboost as xgb
    import yaml

    model_id = getattr(mv, "model_id", None) or str(mv.source).rsplit("/", 1)[-1]
    try:
        where = client.get_logged_model(model_id).artifact_location
    except Exception as e:
        raise TrackingError(f"{uri}: its logged model {model_id} is not in the store: {e}", str(mlruns)) from None
    folder = Path(where.removeprefix("file://"))
    try:
        flavor = yaml.safe_load((folder / "MLmodel").read_text())["flavors"]["xgboost"]
        booster = xgb.Booster()
        booster.load_model(str(folder / flavor["data"]))
    except (OSError, KeyError, TypeError, ValueError, xgb.core.XGBoostError) as e:  # ValueError: an undecodable file
        raise TrackingError(f"{uri}: cannot read its xgboost model in {folder}: {e}", str(mlruns)) from None
    booster.set_param({"nthread": 1})  # one row per live decision: threads cost more than they give
    return booster
