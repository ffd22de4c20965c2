"""notebooks/ml_calibration.ipynb, run by a Jupyter kernel from an empty MLflow store: the feature store holds the
sample's features, the trained version is registered with its tags, the aliases and the version's evidence agree with
the verdict the notebook printed, and its backtest by alias equals `grinder backtest ml_grid --model models:/NAME/V`.

Run twice: as shipped (a fitted model; the verdict is whatever the gate finds, checked for consistency only) and with
a "storm" model (no tree moves its output, a constant forecast of 50 bps/sqrt(s): the ML grid pauses at every
decision and never quotes, while the static grid pays fees), which the gate promotes, so both branches of the
notebook run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.cli.test_cli import grinder, sample  # noqa: F401 - the sample lake fixture
from tests.conftest import REPO
from tests.notebooks.runner import run_notebook

NOTEBOOK = REPO / "notebooks" / "ml_calibration.ipynb"
NAME, LABEL = "grinder-fwd_rv_10s", "fwd_rv_10s"
VENUE, SYMBOL = "binance-usdm", "BTCUSDT"
STORM = {"num_boost_round": 1, "eta": 0, "base_score": 50}
PROBE = {
    "feature_set": "fs.version",
    "feature_rows": "len(features)",
    "feature_parts": "[str(p) for p in parts]",
    "read_back": "read_back",
    "stored_days": "per_day['rows'].tolist()",
    "label_rows": "len(lab)",
    "version": "version",
    "model_sha256": "trained.model_sha256",
    "run_id": "trained.run_id",
    "per_fold": "per_fold.reset_index().to_dict(orient='records')",
    "importance": "trained.importance",
    "train": "TRAIN",
    "oos": "OOS",
    "params": "params",
    "verdict": "gate.verdict",
    "gate": "{run.role: {'driver': run.driver, 'value': run.value, 'digest': run.digest, "
    "'run_id': run.mlflow_run_id, 'run_dir': run.run_dir} for run in (gate.challenger, gate.baseline)}",
    "alias": "alias",
    "backtest": "{'summary': summary, 'run_dir': by_alias.run_dir, 'run_id': by_alias.mlflow_run_id}",
    "aliases": "aliases",
}


def _stdout(nb) -> str:
    """Everything the notebook's cells printed."""
    return "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs
                   if o.get("name") == "stdout")  # fmt: skip


def _files(folder: Path) -> dict[str, tuple[int, int]]:
    """Each file under `folder` (but the lake's lock file) by its path: its size and modification time."""
    return {p.relative_to(folder).as_posix(): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in folder.rglob("*") if p.is_file() and p.name != ".lock"}  # fmt: skip


def _without_timings(summary: dict) -> dict:
    """A run's summary without what differs between two runs of one backtest: timings, and how the model was named."""
    out = {k: v for k, v in summary.items() if k not in ("seconds", "model")}
    return out | {"model": {k: v for k, v in summary["model"].items() if k != "alias"}}


@pytest.mark.parametrize("case", ["as shipped", "storm"])
def test_the_notebook_trains_judges_and_backtests_by_alias_as_the_store_says(sample, kernels, tmp_path, case):  # noqa: F811
    from grinder.data.tape import BATCH_END, load_tape
    from grinder.features.spec import FeatureSet
    from grinder.features.store import read_features, version_dir
    from grinder.ml import registry as reg
    from grinder.ml.train import VERSION_TAGS
    from grinder.settings import parse_time

    lake_before = _files(sample)
    parameters = {"root": sample, "feature_lake": tmp_path / "features", "out_dir": tmp_path / "runs",
                  "mlruns": tmp_path / "mlruns"}  # fmt: skip
    if case == "storm":
        parameters["xgb_params"] = STORM
    executed = run_notebook(NOTEBOOK, parameters, kernels, tmp_path / "work", PROBE)
    nb, printed = executed.values, _stdout(executed.nb)

    # Written under its parameters' paths only (the runner checked its working folder): the sample is as it was.
    assert _files(sample) == lake_before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["features", "mlruns", "runs", "work"]

    # 1. The feature store: the sample's features, one row per book message or trade, under the feature set's hash.
    fs = FeatureSet()
    assert nb["feature_set"] == fs.version and nb["read_back"] is True
    parts = [Path(p) for p in nb["feature_parts"]]
    assert parts and all(p.is_file() and version_dir(tmp_path / "features", fs.version) in p.parents for p in parts)
    stored = read_features(tmp_path / "features", fs.version, VENUE, SYMBOL)
    tape = load_tape(sample, VENUE, SYMBOL)
    assert len(stored) == nb["feature_rows"] == sum(nb["stored_days"]) == np.count_nonzero(tape.flags & BATCH_END)
    assert nb["label_rows"] > 1000  # a label row every 250 ms over the sample's ~345 s

    # 3. The registered version: what it was trained on, and the training run's figures as the notebook showed them.
    client = reg.open_registry(tmp_path / "mlruns")
    (mv,) = reg.versions(client, NAME)
    version = str(mv.version)
    assert version == nb["version"] == "1" and mv.run_id == nb["run_id"]
    tags = dict(mv.tags)
    assert set(VERSION_TAGS) <= set(tags)
    assert tags["label"] == LABEL and tags["objective"] == "reg:squarederror"
    assert tags["model_sha256"] == nb["model_sha256"] and tags["feature_set_version"] == fs.version
    train_lo, train_hi = (parse_time(t) for t in nb["train"])
    assert train_lo <= int(tags["train_start_ns"]) < int(tags["train_end_ns"]) < train_hi
    run = client.get_run(mv.run_id).data
    assert run.params["xgb.eta"] == ("0" if case == "storm" else "0.05")
    for metric in ("rmse", "mae", "r2"):
        for who, logged in (("model", metric), ("naive", f"baseline_{metric}")):
            history = {m.step: m.value for m in client.get_metric_history(mv.run_id, logged)}
            shown = {row["fold"]: row[f"{who} {metric}"] for row in nb["per_fold"]}
            assert history == pytest.approx(shown, nan_ok=True)
    assert len(nb["per_fold"]) == 3
    for feature, gain in nb["importance"].items():
        assert run.metrics[f"importance_gain.{feature}"] == pytest.approx(gain)

    # 4. The gate: the verdict printed is the one the version's tags and the aliases record.
    verdict = nb["verdict"]
    assert verdict in ("promoted", "refused") and f"verdict: {verdict} (models:/{NAME}/1 against static_grid" in printed
    if case == "storm":
        assert verdict == "promoted" and nb["gate"]["challenger"]["value"] == 0.0
    oos_lo, oos_hi = (parse_time(t) for t in nb["oos"])
    assert oos_lo > int(tags["train_end_ns"]) + 10 * 10**9  # after the last training label's window: out of sample
    p = verdict + "."
    assert tags[reg.STATUS] == verdict and tags[p + "metric"] == "equity" and tags[p + "baseline"] == "static_grid"
    assert (int(tags[p + "start_ns"]), int(tags[p + "end_ns"])) == (oos_lo, oos_hi)
    for role, shown in nb["gate"].items():
        assert tags[f"{p}{role}_digest"] == shown["digest"] and tags[f"{p}{role}_run_id"] == shown["run_id"]
        assert float(tags[f"{p}{role}_value"]) == shown["value"]
        assert Path(shown["run_dir"]).is_relative_to(tmp_path / "runs")
        logged = client.get_run(shown["run_id"]).data.tags
        assert logged["promotion_of"] == f"{NAME}/1" and logged["promotion_role"] == role
        assert logged["digest"] == shown["digest"]
    assert nb["gate"]["baseline"]["driver"] == "static_grid"
    ours, theirs = nb["gate"]["challenger"]["value"], nb["gate"]["baseline"]["value"]
    assert (verdict == "promoted") == (ours > theirs)
    champion = reg.alias_version(client, NAME, reg.CHAMPION)
    challenger = reg.alias_version(client, NAME, reg.CHALLENGER)
    assert nb["aliases"] == {"champion": champion, "challenger": challenger}
    if verdict == "promoted":
        # A first champion replaced none: the rollback says so and leaves it.
        assert (champion, challenger) == ("1", None) and reg.champion_origin(client, NAME) == ("1", "promote")
        assert tags[reg.PREVIOUS_CHAMPION] == reg.NONE
        assert "rollback refused: " in printed and "replaced no earlier champion" in printed
    else:
        assert (champion, challenger) == (None, "1")
        assert f"refused: models:/{NAME}/1 refused: equity" in printed and "the champion stays unset" in printed

    # 5. The backtest by alias: pinned to the version, the gate's challenger run again, and the command's.
    summary = nb["backtest"]["summary"]
    assert nb["alias"] == ("champion" if verdict == "promoted" else "challenger")
    assert summary["model"]["uri"] == f"models:/{NAME}/1" and summary["model"]["alias"] == nb["alias"]
    assert summary["model"]["model_sha256"] == tags["model_sha256"]
    assert summary["digest"] == nb["gate"]["challenger"]["digest"]
    run_dir = Path(nb["backtest"]["run_dir"])
    assert run_dir.parent == tmp_path / "runs" and json.loads((run_dir / "summary.json").read_text()) == summary
    assert client.get_run(nb["backtest"]["run_id"]).data.tags["digest"] == summary["digest"]
    assert sorted(p.name.split("-", 1)[1] for p in (tmp_path / "runs").iterdir()) == [
        f"ml_grid-{SYMBOL}-{summary['digest'][:8]}", f"promote-{NAME}-v1"]  # fmt: skip
    cli_params = [x for k, v in nb["params"].items() for x in ("-p", f"{k}={v!r}")]
    r = grinder("backtest", "ml_grid", "--model", f"models:/{NAME}/1", "--root", sample, "--start", nb["oos"][0],
                "--end", nb["oos"][1], *cli_params, "--no-report", "--no-track", "--mlruns", tmp_path / "mlruns",
                "--out", tmp_path / "cli")  # fmt: skip
    assert r.returncode == 0, r.stderr
    (cli_dir,) = (tmp_path / "cli").iterdir()
    theirs = json.loads((cli_dir / "summary.json").read_text())
    assert theirs["digest"] == summary["digest"] and theirs["model"]["alias"] is None
    assert _without_timings(theirs) == _without_timings(summary)
