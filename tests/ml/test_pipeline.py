"""The whole path from an empty MLflow store, through the command line: features stored in the lake, a model
trained on them and registered, judged out of sample and promoted (or refused), and a backtest by alias."""

from __future__ import annotations

import shutil

from grinder.ml.registry import alias_version
from grinder.track.mlflow_store import open_store
from tests.cli.test_cli import grinder
from tests.conftest import REPO

TRAIN_END, OOS = "2024-08-08T23:57:00", ("2024-08-08T23:57:30", "2024-08-08T23:59:30")
GRID = ("-p", "interval=5", "-p", "half_spread=2", "-p", "order_qty=0.002", "-p", "max_position=0.02")


def ok(*args, cwd):
    r = grinder(*args, cwd=cwd)
    assert r.returncode == 0, r.stderr
    return r.stdout


def sha_of(stdout: str) -> str:
    return stdout.split("model sha256 ")[1].split()[0]


def test_features_train_register_promote_backtest(tmp_path):
    for name in ("lake", "fresh"):
        shutil.copytree(REPO / "data" / "sample" / "lake", tmp_path / name)
    store = tmp_path / "mlruns"
    assert not store.exists()
    train = ("ml", "train", "--label", "fwd_rv_10s", "--every", "500ms", "--end", TRAIN_END, "--folds", "2",
             "--xgb", "num_boost_round=30", "--name", "vol", "--mlruns", str(store))  # fmt: skip
    stored = ok("ml", "features", "--every", "500ms", "--end", TRAIN_END, "--root", "lake", cwd=tmp_path)
    assert "part " in stored and "features/version=" in stored
    # The features are a lake table: the DuckDB catalog queries them.
    q = ok("data", "query", "--root", "lake", "--format", "csv",
           "SELECT count(*) AS n, count(DISTINCT version) AS v FROM features", cwd=tmp_path)  # fmt: skip
    assert q.split() == ["n,v", f"{stored.split()[0].replace(',', '')},1"]
    trained = ok(*train, "--root", "lake", cwd=tmp_path)
    assert "features: store:" in trained  # read back from the store ...
    again = ok(*train, "--root", "fresh", "--mlruns", str(tmp_path / "other"), cwd=tmp_path)
    assert "features: computed" in again
    assert sha_of(trained) == sha_of(again)  # ... as the same float64 values: the same model
    r = grinder("ml", "promote", "vol", "--version", "1", "--start", OOS[0], "--end", OOS[1], "--root", "lake",
                "--mlruns", str(store), "--out", "runs", "--no-report", *GRID, cwd=tmp_path)  # fmt: skip
    assert r.returncode in (0, 5), r.stderr
    client, _ = open_store(store)
    champion = alias_version(client, "vol", "champion")
    assert (champion == "1") == (r.returncode == 0)  # promoted exactly when the gate said so
    alias = "champion" if champion else "challenger"
    out = ok("backtest", "ml_grid", "--model", f"models:/vol@{alias}", "--root", "lake", "--mlruns", str(store),
             "--start", OOS[0], "--end", OOS[1], "--no-report", "--out", "runs", *GRID, cwd=tmp_path)  # fmt: skip
    assert "model models:/vol/1" in out
