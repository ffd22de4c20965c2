"""Promotion by registry alias: a version becomes champion only by beating it out of sample, and loaders follow.

Models are trained once (grinder.ml.train) on the first minutes of the bundled sample into a store
that each test copies; every gate runs on the minutes after them. Deterministic verdicts come
from a "storm" model: no trees that move its output (eta 0), a constant forecast of 50 bps/sqrt(s),
so ml_grid pauses at every decision and never quotes (no drawdown), while any strategy that
quotes pays fees on its fills and draws down.
"""

from __future__ import annotations

import math
import shutil

import pytest
from typer.testing import CliRunner

from grinder.cli.main import app
from grinder.errors import ConfigError, TrackingError
from grinder.ml import registry as reg
from grinder.ml.promote import EXIT_REFUSED, PromotionRefused, check_out_of_sample, promote_job, rollback_job
from grinder.ml.train import train_job
from grinder.settings import parse_time
from grinder.sim.job import backtest_job
from tests.ml.conftest import SYMBOL, VENUE

TRAIN = ("2024-08-08T23:54:16", "2024-08-08T23:56:00")
OOS = ("2024-08-08T23:57:00", "2024-08-08T23:59:00")
GRID = {"interval": 5.0, "half_spread": 2.0, "order_qty": 0.01, "max_position": 0.1}
CLI_GRID = [x for k, v in GRID.items() for x in ("-p", f"{k}={v}")]
NAME, LABEL = "rv", "fwd_rv_10s"
STORM = {"num_boost_round": 1, "eta": 0, "base_score": 50}


@pytest.fixture(scope="module")
def trained(tmp_path_factory, sample_lake):
    """A store with rv v1 (a fitted fwd_rv model), rv v2 (the storm model) and fills v1 (a fill-probability model)."""
    store = tmp_path_factory.mktemp("promote") / "mlruns"
    small = {"start": TRAIN[0], "end": TRAIN[1], "every_ns": 250_000_000, "folds": 1, "mlruns": store,
             "root": sample_lake}  # fmt: skip
    fitted = train_job(LABEL, name=NAME, xgb_params={"num_boost_round": 20}, **small)
    storm = train_job(LABEL, name=NAME, xgb_params=STORM, **small)
    fills = train_job("fill_bid_d0_10s", name="fills", xgb_params={"num_boost_round": 5}, **small)
    assert (fitted.model_version, storm.model_version, fills.model_version) == ("1", "2", "1")
    return store


@pytest.fixture
def store(trained, tmp_path):
    """A copy of the trained store for one test (the boosters stay where training put them: only read)."""
    dst = tmp_path / "mlruns"
    shutil.copytree(trained, dst)
    return dst


@pytest.fixture
def gate(sample_lake, tmp_path, store):
    """promote_job's settings for the out-of-sample window."""
    return {"start": OOS[0], "end": OOS[1], "root": sample_lake, "venue": VENUE, "symbol": SYMBOL, "params": GRID,
            "mlruns": store, "out_dir": tmp_path / "runs", "report": False}  # fmt: skip


def _cli(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def _client(store):
    return reg.open_registry(store)


def _tags(store, version, name=NAME):
    return dict(reg.get_version(_client(store), name, version).tags)


def _judge(version, **kw):
    """promote_job's outcome, promoted or refused."""
    try:
        return promote_job(NAME, version, **kw)
    except PromotionRefused as e:
        return e.outcome


def _assert_recorded(store, outcome):
    """The version's tags and the two MLflow runs hold what the outcome says."""
    client = _client(store)
    tags = _tags(store, outcome.version)
    p = outcome.verdict + "."
    assert tags[reg.STATUS] == outcome.verdict and tags[reg.event_tag(outcome.verdict)] == outcome.at
    assert tags[p + "metric"] == outcome.metric
    assert (tags[p + "start_ns"], tags[p + "end_ns"]) == (str(parse_time(OOS[0])), str(parse_time(OOS[1])))
    for run in (outcome.challenger, outcome.baseline):
        role = run.role
        assert float(tags[f"{p}{role}_value"]) == run.value or math.isnan(run.value)
        assert tags[f"{p}{role}_run_id"] == run.mlflow_run_id and tags[f"{p}{role}_digest"] == run.digest
        logged = client.get_run(run.mlflow_run_id).data
        assert logged.tags["promotion_of"] == f"{NAME}/{outcome.version}" and logged.tags["promotion_role"] == role
        assert logged.tags["digest"] == run.digest and logged.tags["strategy"] == run.strategy
        assert logged.metrics[outcome.metric] == pytest.approx(run.value)
    assert tags[p + "baseline"] == outcome.baseline.driver


def test_the_first_promotion_is_judged_against_the_static_grid(store, gate):
    outcome = _judge("1", **gate)
    assert outcome.baseline.driver == outcome.baseline.strategy == "static_grid"
    assert outcome.challenger.driver == f"models:/{NAME}/1" and outcome.previous_champion is None
    # Whichever way it went, the verdict is the recorded values' (strictly better equity wins).
    assert outcome.promoted == (outcome.challenger.value > outcome.baseline.value)
    _assert_recorded(store, outcome)
    client = _client(store)
    if outcome.promoted:
        assert reg.alias_version(client, NAME, reg.CHAMPION) == "1"
        assert reg.alias_version(client, NAME, reg.CHALLENGER) is None
        assert _tags(store, "1")[reg.PREVIOUS_CHAMPION] == reg.NONE
        assert reg.champion_origin(client, NAME) == ("1", "promote")
    else:
        assert reg.alias_version(client, NAME, reg.CHAMPION) is None
        assert reg.alias_version(client, NAME, reg.CHALLENGER) == "1"  # judged, kept for another window
    # The static grid ran with ml_grid's grid parameters.
    logged = client.get_run(outcome.baseline.mlflow_run_id).data.params
    assert {k: float(logged[f"p.{k}"]) for k in GRID} == GRID


def test_a_config_file_gives_both_runs_its_venue_and_gates(store, gate, tmp_path):
    cfg = tmp_path / "ml_grid.toml"
    cfg.write_text("[strategy]\ninterval = 5.0\nhalf_spread = 2.0\norder_qty = 0.01\nmax_position = 0.1\n"
                   "skew = 0.5\n[venue]\nstep_ns = 200000000\n[gates]\nmax_open_orders = 30\n")  # fmt: skip
    outcome = _judge("1", **gate | {"params": None, "config": cfg})
    client = _client(store)
    ours = client.get_run(outcome.challenger.mlflow_run_id).data.params
    theirs = client.get_run(outcome.baseline.mlflow_run_id).data.params
    assert outcome.baseline.strategy == "static_grid" and "p.skew" not in theirs and ours["p.skew"] == "0.5"
    for logged in (ours, theirs):
        assert logged["venue.step_ns"] == "200000000" and logged["gates.max_open_orders"] == "30"
        assert {k: float(logged[f"p.{k}"]) for k in GRID} == GRID


def test_promotion_moves_the_champion_and_a_backtest_by_alias_follows_it(store, gate, sample_lake, tmp_path):
    client = _client(store)
    by_alias = {"start": OOS[0], "end": OOS[1], "root": sample_lake, "params": GRID, "mlruns": store,
                "out_dir": tmp_path / "bt", "report": False, "track": False,
                "model": f"models:/{NAME}@champion"}  # fmt: skip
    client.set_registered_model_alias(NAME, reg.CHAMPION, "1")  # as the MLflow UI does: no gate
    first = backtest_job("ml_grid", **by_alias)  # loaders take it all the same
    assert first.summary["model"]["uri"] == f"models:/{NAME}/1" and first.summary["model"]["alias"] == "champion"
    r = _cli("ml", "models", "--mlruns", store)
    assert r.exit_code == 0, r.output
    feature_hash = _tags(store, "1")["feature_set_version"][:12]
    assert f"  v1    champion              {LABEL}           features {feature_hash}  champion, set by hand (no gate " \
        "evidence)" in r.stdout  # fmt: skip
    assert "  v2    -" in r.stdout and "never judged" in r.stdout and r.stdout.startswith("fills\n")
    # The storm model never quotes: no drawdown; version 1 quotes, pays fees, draws down.
    outcome = promote_job(NAME, "2", metric="max_drawdown", **gate)
    assert outcome.baseline.driver == f"models:/{NAME}/1" and outcome.baseline.value > 0
    assert outcome.challenger.value == 0.0 and outcome.promoted
    assert (outcome.previous_champion, outcome.champion) == ("1", "2")
    _assert_recorded(store, outcome)
    assert reg.alias_version(client, NAME, reg.CHAMPION) == "2"
    assert reg.alias_version(client, NAME, reg.CHALLENGER) is None
    assert _tags(store, "2")[reg.PREVIOUS_CHAMPION] == "1"
    assert _tags(store, "1")[reg.STATUS] == "replaced" and _tags(store, "1")["replaced_by"] == "2"
    second = backtest_job("ml_grid", **by_alias)
    assert second.summary["model"]["uri"] == f"models:/{NAME}/2"
    assert second.summary["digest"] != first.summary["digest"]
    assert second.summary["fills"] == 0  # the storm model paused every decision
    # The gate's challenger run is this backtest (same model, params, window): the same digest.
    assert second.summary["digest"] == outcome.challenger.digest

    r = _cli("ml", "rollback", NAME, "--mlruns", store)
    assert r.exit_code == 0, r.output
    assert "champion back to version 1 (was version 2)" in r.stdout
    assert reg.alias_version(client, NAME, reg.CHAMPION) == "1"
    assert reg.champion_origin(client, NAME) == ("1", "rollback")
    assert _tags(store, "2")[reg.STATUS] == "rolled back" and _tags(store, "2")["rolled_back_to"] == "1"
    assert _tags(store, "1")[reg.STATUS] == "reinstated"
    third = backtest_job("ml_grid", **by_alias)
    assert third.summary["digest"] == first.summary["digest"]
    events = [(e.version, e.event) for e in reg.history(client, NAME)]
    assert events == [("2", "promoted"), ("1", "replaced"), ("2", "rolled back"), ("1", "reinstated")]
    r = _cli("ml", "models", "--mlruns", store)
    assert r.exit_code == 0, r.output
    rows = {line.split()[0]: line for line in r.stdout.splitlines() if line.startswith("  v")}
    assert "champion " in rows["v1"] and "champion again by a rollback" in rows["v1"]
    assert "rolled back" in rows["v2"] and "champion back to version 1" in rows["v2"]

    # Version 1 was champion by hand: it replaced nothing the record knows of.
    r = _cli("ml", "rollback", NAME, "--mlruns", store)
    assert r.exit_code == 2 and "version 1, replaced no earlier champion: nothing to roll back to" in r.stderr
    assert reg.alias_version(client, NAME, reg.CHAMPION) == "1"


def test_a_tie_refuses_and_leaves_the_champion(store, gate):
    client = _client(store)
    promote_job(NAME, "2", metric="max_drawdown", **gate)  # over the static grid, which draws down
    assert reg.alias_version(client, NAME, reg.CHAMPION) == "2"
    promoted = {k: v for k, v in _tags(store, "2").items() if k.startswith("promoted")}
    # Version 2 judged against itself, the champion: equal drawdowns (none), equal runs.
    r = _cli("ml", "promote", NAME, "--version", "2", "--metric", "max_drawdown", "--start", OOS[0], "--end", OOS[1],
             "--root", gate["root"], "--mlruns", store, "--out", gate["out_dir"], "--no-report", *CLI_GRID)  # fmt: skip
    assert r.exit_code == EXIT_REFUSED, r.output
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: models:/{NAME}/2 refused: max_drawdown 0 is not better "
                                                   f"than 0 of models:/{NAME}/2"), r.stderr  # fmt: skip
    assert "champion: version 2 (unchanged)" in r.stdout
    assert reg.alias_version(client, NAME, reg.CHAMPION) == "2"
    assert reg.champion_origin(client, NAME) == ("2", "promote")
    tags = _tags(store, "2")
    assert tags[reg.STATUS] == "refused" and tags["refused_at"] > tags["promoted_at"]
    assert float(tags["refused.challenger_value"]) == float(tags["refused.baseline_value"]) == 0.0
    assert tags["refused.challenger_digest"] == tags["refused.baseline_digest"]
    for role in ("challenger", "baseline"):
        logged = client.get_run(tags[f"refused.{role}_run_id"]).data.tags
        assert logged["promotion_of"] == f"{NAME}/2" and logged["promotion_role"] == role
    # The refusal kept the evidence that made version 2 champion.
    assert {k: v for k, v in tags.items() if k.startswith("promoted")} == promoted


def test_promote_without_a_version_judges_what_the_ui_put_under_challenger(store, gate):
    client = _client(store)
    with pytest.raises(ConfigError, match=f"registered model '{NAME}' has no 'challenger' alias"):
        promote_job(NAME, **gate)
    client.set_registered_model_alias(NAME, reg.CHALLENGER, "2")  # the MLflow UI's action
    outcome = promote_job(NAME, metric="max_drawdown", **gate)
    assert outcome.version == "2" and outcome.promoted and outcome.baseline.driver == "static_grid"
    assert reg.alias_version(client, NAME, reg.CHAMPION) == "2"


def test_a_window_overlapping_training_is_refused_before_anything_runs(store, gate):
    client = _client(store)
    tags = _tags(store, "1")
    last_label_ns = int(tags["train_end_ns"]) + 10 * 10**9  # the last sample's 10 s label window
    with pytest.raises(ConfigError, match="overlaps the training data of models:/rv/1"):
        check_out_of_sample("models:/rv/1", tags, last_label_ns, last_label_ns + 60 * 10**9)
    check_out_of_sample("models:/rv/1", tags, last_label_ns + 1, last_label_ns + 60 * 10**9)  # just after: fine
    check_out_of_sample("models:/rv/1", tags, 0, int(tags["train_start_ns"]))  # before, end exclusive: fine
    r = _cli("ml", "promote", NAME, "--version", "1", "--start", "2024-08-08T23:55:30", "--end", OOS[1],
             "--root", gate["root"], "--mlruns", store, "--out", gate["out_dir"], *CLI_GRID)  # fmt: skip
    assert r.exit_code == 2, r.output
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and "overlaps the training data of models:/rv/1" in lines[0]
    assert "the gate must be out of sample" in lines[0]
    assert reg.alias_version(client, NAME, reg.CHALLENGER) is None  # refused before any change
    assert reg.STATUS not in _tags(store, "1")
    assert not gate["out_dir"].exists()


@pytest.mark.parametrize(
    ("name", "version", "error", "message"),
    [
        (NAME, "9", ConfigError, "registered model 'rv' has no version 9"),
        ("nope", "1", ConfigError, "no registered model 'nope'"),
        # A fill-probability model cannot drive ml_grid, which reads a volatility forecast.
        ("fills", "1", ConfigError, r"models:/fills/1 predicts fill_bid_d0_10s \(1 output\(s\)\); strategy ml_grid "
                                    "reads fwd_rv_"),
    ],
)  # fmt: skip
def test_a_version_that_cannot_be_judged_changes_nothing(store, gate, name, version, error, message):
    with pytest.raises(error, match=message):
        promote_job(name, version, **gate)
    if name != "nope":
        client = _client(store)
        assert reg.alias_version(client, name, reg.CHALLENGER) is None
        assert reg.alias_version(client, name, reg.CHAMPION) is None
    assert not gate["out_dir"].exists()


def test_unknown_metric_and_empty_window_are_config_errors(gate):
    with pytest.raises(ConfigError, match="unknown metric 'sharpe'; known: equity, realized, max_drawdown"):
        promote_job(NAME, "1", **gate | {"metric": "sharpe"})
    with pytest.raises(ConfigError, match="needs a start before its end"):
        promote_job(NAME, "1", **gate | {"end": OOS[0]})


def test_a_damaged_model_hash_is_refused_by_every_loader(store, gate, sample_lake, tmp_path):
    client = _client(store)
    client.set_registered_model_alias(NAME, reg.CHAMPION, "1")
    promote_job(NAME, "2", metric="max_drawdown", **gate)  # over version 1, which is then damaged
    client.set_model_version_tag(NAME, "1", "model_sha256", "0" * 64)
    damaged = r"models:/rv/1: the stored booster hashes to \w{12}, its model_sha256 tag says 000000000000"
    with pytest.raises(TrackingError, match=damaged):
        promote_job(NAME, "1", **gate)
    with pytest.raises(TrackingError, match=damaged):
        rollback_job(NAME, mlruns=store)  # a rollback may not make it champion again
    assert reg.alias_version(client, NAME, reg.CHAMPION) == "2" and _tags(store, "2")[reg.STATUS] == "promoted"
    with pytest.raises(TrackingError, match=damaged):
        backtest_job("ml_grid", start=OOS[0], end=OOS[1], root=sample_lake, params=GRID, mlruns=store,
                     out_dir=tmp_path / "bt", track=False, model=f"models:/{NAME}/1")  # fmt: skip
