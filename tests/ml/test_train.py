"""train_job on the bundled sample: the registered version and its tags, the logged folds, determinism, bad input."""

from __future__ import annotations

import hashlib
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest

from grinder.errors import ConfigError
from grinder.features import FeatureSet
from grinder.ml import train as train_module
from grinder.ml.labels import LabelSpec
from grinder.ml.train import EXPERIMENT, VERSION_TAGS, auc, baseline, score, train_job
from grinder.track.mlflow_store import open_store, tracking_uri
from grinder.track.provenance import data_fingerprint

from .conftest import SYMBOL, VENUE

MS = 1_000_000
FAST = {"num_boost_round": "30"}  # as the command line gives it


def job(lake, mlruns, label="fwd_rv_10s", **kw):
    kw = {"every_ns": 500 * MS, "xgb_params": FAST} | kw
    return train_job(label, venue=VENUE, symbol=SYMBOL, root=lake, mlruns=mlruns, **kw)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return tmp_path_factory.mktemp("mlruns")


@pytest.fixture(scope="module")
def trained(sample_lake, store):
    assert not store.joinpath("mlflow.db").exists()  # an empty store
    return job(sample_lake, store)


def test_the_model_version_carries_what_it_was_trained_on(trained, store, sample_tape):
    assert (trained.model_name, trained.model_version) == ("grinder-fwd_rv_10s", "1")
    client, exp_id = open_store(store, EXPERIMENT)
    assert client.get_experiment(exp_id).tags["mlflow.experimentKind"] == "custom_model_development"
    mv = client.get_model_version("grinder-fwd_rv_10s", "1")
    assert set(mv.tags) == set(VERSION_TAGS)
    fs, spec = FeatureSet(), LabelSpec()
    assert json.loads(mv.tags["feature_set"]) == json.loads(json.dumps(fs.model_dump()))
    assert FeatureSet(**json.loads(mv.tags["feature_set"])).version == mv.tags["feature_set_version"] == fs.version
    assert LabelSpec(**json.loads(mv.tags["label_spec"])).version == mv.tags["label_spec_version"] == spec.version
    assert mv.tags["label"] == "fwd_rv_10s" and mv.tags["objective"] == "reg:squarederror"
    assert mv.tags["data_fingerprint"] == data_fingerprint(sample_tape) == trained.data_fingerprint
    span = (int(mv.tags["train_start_ns"]), int(mv.tags["train_end_ns"]))
    assert span == (trained.train_start_ns, trained.train_end_ns) and span[0] < span[1]
    assert trained.train_start_ns % (500 * MS) == 0 and trained.samples - trained.dropped > 600
    assert mv.run_id == trained.run_id

    import mlflow
    import mlflow.xgboost

    mlflow.set_tracking_uri(tracking_uri(store))
    booster = mlflow.xgboost.load_model("models:/grinder-fwd_rv_10s/1")
    assert hashlib.sha256(bytes(booster.save_raw("ubj"))).hexdigest() == mv.tags["model_sha256"]
    info = mlflow.models.get_model_info("models:/grinder-fwd_rv_10s/1")
    assert {"xgboost", "python_function"} <= set(info.flavors) and info.flavors["xgboost"]["model_format"] == "ubj"
    assert info.signature.inputs.input_names() == list(fs.names)
    assert booster.feature_names == list(fs.names)


def test_the_run_holds_the_folds_metrics_against_the_baseline(trained, store):
    client, _ = open_store(store, EXPERIMENT)
    run = client.get_run(trained.run_id)
    assert run.info.status == "FINISHED"
    for k in ("data_fingerprint", "feature_set_version", "label_spec_version", "label"):
        assert run.data.tags[k]
    assert run.data.tags["registered_model"] == "grinder-fwd_rv_10s/1"
    assert run.data.params["num_boost_round"] == "30" and run.data.params["xgb.nthread"] == "1"
    for m in ("rmse", "mae", "r2"):
        for key, per_fold in ((m, [f.metrics[m] for f in trained.folds]), (f"baseline_{m}", None)):
            hist = sorted(client.get_metric_history(trained.run_id, key), key=lambda x: x.step)
            assert [h.step for h in hist] == [0, 1, 2]
            if per_fold is not None:
                assert [h.value for h in hist] == pytest.approx(per_fold)
        assert run.data.metrics[f"mean_{m}"] == pytest.approx(np.mean([f.metrics[m] for f in trained.folds]))
        assert run.data.metrics[f"mean_baseline_{m}"] == pytest.approx(trained.baseline_mean[m])
    # The training mean as a baseline: its r2 on a later fold is at most about 0, and it is not the model's.
    assert all(f.baseline["r2"] <= 0.05 for f in trained.folds)
    assert [f.metrics["rmse"] for f in trained.folds] != [f.baseline["rmse"] for f in trained.folds]
    kept = trained.samples - trained.dropped
    for f in trained.folds:  # every sample before a test fold is trained on, purged (10 s at 500 ms) or embargoed
        assert (f.purged, f.embargoed) == (20, 0)
        assert f.train_samples + f.purged == kept - sum(g.test_samples for g in trained.folds[f.index :])
    (store / "dl").mkdir()
    path = client.download_artifacts(trained.run_id, "feature_importance.json", str(store / "dl"))
    importance = json.loads(Path(path).read_text())
    assert list(importance) == list(FeatureSet().names) and sum(importance.values()) > 0
    assert run.data.metrics["importance_gain.rv_1s"] == pytest.approx(importance["rv_1s"])
    assert importance["funding_rate"] == 0.0  # no funding in the sample: never split on


def test_training_is_deterministic_and_the_seed_matters(trained, sample_lake, store):
    again = job(sample_lake, store)
    assert again.model_version == "2" and again.model_sha256 == trained.model_sha256
    assert [f.metrics for f in again.folds] == [f.metrics for f in trained.folds]
    other = job(sample_lake, store, seed=1, name="grinder-seed-1")
    assert other.model_sha256 != trained.model_sha256 and other.model_version == "1"


@pytest.mark.parametrize(
    "label, objective, metrics",
    [("fill_bid_d1_10s", "binary:logistic", {"logloss", "auc"}), ("fwd_regime_10s", "multi:softprob",
                                                                   {"mlogloss", "accuracy"})],
)  # fmt: skip
def test_the_objective_follows_the_label(label, objective, metrics, sample_lake, store):
    done = job(sample_lake, store, label, xgb_params={"num_boost_round": 10})
    assert done.objective == objective and set(done.mean) == metrics
    client, _ = open_store(store, EXPERIMENT)
    assert client.get_model_version(f"grinder-{label}", "1").tags["objective"] == objective
    if "auc" in metrics:
        assert all(f.baseline["auc"] == 0.5 for f in done.folds)  # a constant ranks nothing


def test_metrics_and_baselines_by_hand():
    assert auc(np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8])) == 0.75
    assert auc(np.array([0, 1, 1]), np.array([0.5, 0.5, 0.9])) == 0.75  # a tie counts half
    assert math.isnan(auc(np.array([1, 1]), np.array([0.2, 0.3])))
    r = score("regression", np.array([1.0, 2.0, 3.0]), np.array([1.0, 2.0, 5.0]))
    assert r == pytest.approx({"rmse": math.sqrt(4 / 3), "mae": 2 / 3, "r2": 1 - 4 / 2})
    assert baseline("binary", np.array([0.0, 0.0, 0.0]), 2).tolist() == [0.2, 0.2]  # (0 + 1) / (3 + 2)
    probs = baseline("multiclass", np.array([0.0, 0.0, 1.0]), 1)
    assert probs.tolist() == [[0.5, 1 / 3, 1 / 6]]
    m = score("multiclass", np.array([0.0, 2.0]), np.array([[0.5, 0.3, 0.2], [0.1, 0.1, 0.8]]))
    assert m == pytest.approx({"mlogloss": -(math.log(0.5) + math.log(0.8)) / 2, "accuracy": 1.0})


@pytest.mark.parametrize(
    "label, kw, message",
    [
        ("fwd_rv_3s", {}, "unknown label 'fwd_rv_3s'"),
        ("fwd_rv_10s", {"start": "2024-08-08T23:55:00", "end": "2024-08-08T23:55:30", "every_ns": 1000 * MS},
         "fold 0 of 3 tests on 5 samples, fewer than the minimum 20 (20 samples in 4 blocks)"),
        ("fwd_rv_1m", {"start": "2024-08-08T23:55:00", "end": "2024-08-08T23:55:45"},
         "label fwd_rv_1m: its horizon 1m is not shorter than the longest covered span of the selection (45.000 s)"),
        ("fwd_rv_10s", {"xgb_params": {"objective": "reg:absoluteerror"}}, "--xgb objective: set by the label's task"),
        ("fwd_rv_10s", {"xgb_params": {"max_dpeth": "3"}}, "--xgb max_dpeth: not an xgboost parameter"),
        ("fwd_rv_10s", {"xgb_params": {"max_depth": "deep"}}, "xgboost refused the parameters: Invalid Parameter "
                                                                "format for max_depth"),
        ("fwd_rv_10s", {"xgb_params": {"num_boost_round": "0"}}, "num_boost_round=0: must be a whole number >= 1"),
        ("fwd_rv_10s", {"name": "a/b"}, "--name 'a/b'"),
    ],
)  # fmt: skip
def test_bad_input_is_refused_before_the_store_is_touched(label, kw, message, sample_lake, tmp_path):
    with pytest.raises(ConfigError, match=re.escape(message)):
        job(sample_lake, tmp_path / "mlruns", label, **kw)
    assert not (tmp_path / "mlruns").exists()


def test_tags_are_named_as_the_loader_reads_them():
    assert VERSION_TAGS == (
        "feature_set", "feature_set_version", "label", "label_spec", "label_spec_version", "data_fingerprint",
        "train_start_ns", "train_end_ns", "objective", "model_sha256",
    )  # fmt: skip
    assert train_module.MODEL_ARTIFACT == "model"
