"""MLflow from the command line: an empty store, a small sweep, then the parent, children, metrics and artifacts."""

from __future__ import annotations

import json

from tests.cli.test_cli import GRID, SWEEP, grinder, sample  # noqa: F401 - the sample lake fixture


def client_for(root):
    from grinder.track.mlflow_store import open_store

    return open_store(root)


def test_sweep_is_one_parent_run_with_its_best_sets_as_children(sample, tmp_path):  # noqa: F811
    store = tmp_path / "mlruns"
    r = grinder("sweep", "static_grid", "--root", sample, *SWEEP, "--train", "0.6", "--children", "2",
                "--mlruns", store, "--out", tmp_path / "sw")  # fmt: skip
    assert r.returncode == 0, r.stderr
    parent_id = r.stdout.split("mlflow run: ")[1].split()[0]
    client, exp = client_for(store)
    parent = client.get_run(parent_id)
    assert parent.info.status == "FINISHED" and parent.data.metrics["sets"] == 4
    assert "best_equity_out" in parent.data.metrics
    arts = {a.path for a in client.list_artifacts(parent_id)}
    assert {"results.parquet", "ranking.parquet", "summary.json", "report.html"} <= arts
    kids = client.search_runs([exp], f"tags.mlflow.parentRunId = '{parent_id}'")
    assert len(kids) == 2 and all(k.info.status == "FINISHED" for k in kids)
    folder = next((tmp_path / "sw").iterdir())
    best = json.loads((folder / "summary.json").read_text())["best"][0]
    top = next(k for k in kids if k.data.tags["sweep_rank"] == "1")
    assert top.data.tags["sweep_set"] == str(best["set"]) and float(top.data.params["p.interval"]) == best["interval"]
    child_summary = json.loads(next((folder / "best").glob("*rank1-set*/summary.json")).read_text())
    assert top.data.tags["digest"] == child_summary["digest"]
    arts = {a.path for a in client.list_artifacts(top.info.run_id)}
    assert {"summary.json", "fills.parquet", "steps.parquet"} <= arts and "report.html" not in arts  # --child-reports
    assert "tracking " in r.stdout


def test_a_backtest_is_one_run_with_its_digest_and_data_fingerprint(sample, tmp_path):  # noqa: F811
    store = tmp_path / "mlruns"
    r = grinder("backtest", "static_grid", "--root", sample, *GRID, "--no-report", "--mlruns", store,
                "--out", tmp_path / "runs")  # fmt: skip
    assert r.returncode == 0, r.stderr
    run_id = r.stdout.split("mlflow run: ")[1].split()[0]
    run = client_for(store)[0].get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.tags["digest"] == r.stdout.split("digest ")[1].split()[0]
    assert len(run.data.tags["data_fingerprint"]) == 64 and "fills" in run.data.metrics


def test_a_sweep_that_fails_is_marked_failed(sample, tmp_path):  # noqa: F811
    from distributed import LocalCluster

    store = tmp_path / "mlruns"
    # A Dask scheduler without workers: the sweep's run is open when the study finds no one to run it
    # (a selection starting before the data no longer fails: windows are cut within the data).
    with LocalCluster(n_workers=0, dashboard_address=":0", host="127.0.0.1") as lc:
        r = grinder("sweep", "static_grid", "--root", sample, *SWEEP, "--train", "0.5", "--cluster",
                    lc.scheduler_address, "--mlruns", store, "--out", tmp_path / "sw",
                    env={"GRINDER_WORKER_TIMEOUT_S": "1"})  # fmt: skip
    assert r.returncode == 2 and "Traceback" not in r.stderr and "has no workers" in r.stderr, r.stderr
    client, exp = client_for(store)
    runs = client.search_runs([exp])
    assert [x.info.status for x in runs] == ["FAILED"]
    assert not (tmp_path / "sw").exists()


def test_ui_without_a_store_says_so(tmp_path):
    r = grinder("ui", "--mlruns", tmp_path / "none")
    assert r.returncode == 2 and "no MLflow store here yet" in r.stderr and "Traceback" not in r.stderr
