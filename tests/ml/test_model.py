"""load_model: an alias resolved once to a pinned version, refusals of what a driver must not feed, the same
prediction for one row as for a batch, and a model-driven backtest naming its model in summary and digest."""

from __future__ import annotations

import json

import numpy as np
import pytest

from grinder.errors import ConfigError, TrackingError
from grinder.features import FeatureSet
from grinder.features.offline import compute_features
from grinder.ml.model import ModelRef, load_model
from grinder.sim.job import backtest_job
from grinder.track.mlflow_store import open_store
from tests.ml.test_train import job

from .conftest import SYMBOL, VENUE

GRID = {"interval": 5.0, "half_spread": 2.0, "order_qty": 0.002, "max_position": 0.02}


@pytest.fixture(scope="module")
def store(tmp_path_factory, sample_lake):
    mlruns = tmp_path_factory.mktemp("mlruns")
    job(sample_lake, mlruns, name="vol")  # version 1
    job(sample_lake, mlruns, name="vol", seed=1)  # version 2: another booster
    job(sample_lake, mlruns, label="fill_bid_d1_10s", name="fills")
    client, _ = open_store(mlruns)
    client.set_registered_model_alias("vol", "champion", "1")
    return mlruns


def test_an_alias_is_resolved_once_to_a_pinned_version(store):
    m = load_model("models:/vol@champion", store)
    assert (m.uri, m.alias, m.label, m.width) == ("models:/vol/1", "champion", "fwd_rv_10s", 1)
    client, _ = open_store(store)
    client.set_registered_model_alias("vol", "champion", "2")
    try:
        assert m.uri == "models:/vol/1"  # the loaded model stays what it was
        assert load_model("models:/vol@champion", store).model_sha256 != m.model_sha256
    finally:
        client.set_registered_model_alias("vol", "champion", "1")


def test_one_row_predicts_as_in_a_batch(store, sample_tape):
    m = load_model("models:/vol/1", store)
    x = compute_features(sample_tape, m.feature_set).values.T[::97]
    batch = m.predict(x)
    assert batch.shape == (x.shape[0], 1) and np.isfinite(batch).all()
    one = np.vstack([m.predict(x[i : i + 1]) for i in range(x.shape[0])])
    assert np.array_equal(one, batch)  # the live adapter's one row equals the backtest's batch, bit for bit
    with pytest.raises(ConfigError, match="feature columns"):
        m.predict(x[:, :3])


@pytest.mark.parametrize("uri", ["vol", "models:/vol", "models:/vol@", "models:/vol/one", "runs:/abc/model"])
def test_a_malformed_uri_is_refused(uri):
    with pytest.raises(ConfigError, match="expected models:/NAME@ALIAS or models:/NAME/VERSION"):
        ModelRef.parse(uri)


def test_unknown_versions_and_aliases_are_refused(store):
    with pytest.raises(ConfigError, match="no version 9 of registered model 'vol'"):
        load_model("models:/vol/9", store)
    with pytest.raises(ConfigError, match="no alias 'challenger'"):
        load_model("models:/vol@challenger", store)


def test_a_model_of_another_feature_set_or_without_its_tags_is_refused(store):
    client, _ = open_store(store)
    mv = client.get_model_version("vol", "2")
    kept = dict(mv.tags)
    try:
        # The kernel "changed": the declaration the tag holds no longer hashes to the version trained on.
        client.set_model_version_tag("vol", "2", "feature_set", json.dumps(FeatureSet(levels=3).model_dump()))
        with pytest.raises(ConfigError, match="the feature kernel changed.*retrain"):
            load_model("models:/vol/2", store)
        client.delete_model_version_tag("vol", "2", "feature_set")
        with pytest.raises(TrackingError, match="lacks the tag.*feature_set"):
            load_model("models:/vol/2", store)
    finally:
        for k, v in kept.items():
            client.set_model_version_tag("vol", "2", k, v)
    assert load_model("models:/vol/2", store).version == "2"


def test_a_backtest_names_its_model_and_another_model_changes_the_digest(store, sample_lake, tmp_path):
    def run(model):
        return backtest_job("ml_grid", symbol=SYMBOL, venue=VENUE, root=sample_lake, params=GRID, model=model,
                            mlruns=store, out_dir=tmp_path, report=False, track=False).summary  # fmt: skip

    one, two = run("models:/vol@champion"), run("models:/vol/2")
    assert one["model"]["uri"] == "models:/vol/1" and one["model"]["alias"] == "champion"
    assert two["model"]["uri"] == "models:/vol/2"
    assert one["digest"] != two["digest"]
    assert run("models:/vol/1")["digest"] == one["digest"]  # the version, not the way it was reached


def test_a_model_must_fit_the_strategy(store, sample_lake, tmp_path):
    kw = {"symbol": SYMBOL, "venue": VENUE, "root": sample_lake, "mlruns": store, "out_dir": tmp_path,
          "report": False, "track": False}  # fmt: skip
    with pytest.raises(ConfigError, match="predicts fill_bid_d1_10s"):
        backtest_job("ml_grid", params=GRID, model="models:/fills/1", **kw)
    with pytest.raises(ConfigError, match="give --model"):
        backtest_job("ml_grid", params=GRID, **kw)
    with pytest.raises(ConfigError, match="reads no signals"):
        backtest_job("static_grid", params=GRID, model="models:/vol/1", **kw)
    assert not any(tmp_path.iterdir())  # refused before any run folder
