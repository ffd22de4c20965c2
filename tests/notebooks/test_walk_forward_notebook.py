"""notebooks/walk_forward.ipynb, run by a Jupyter kernel: its sweep is walk-forward, and its in- against
out-of-sample tables agree with the sweep folder's results."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from tests.cli.test_cli import sample  # noqa: F401 - the sample lake fixture
from tests.conftest import REPO
from tests.notebooks.runner import run_notebook

NOTEBOOK = REPO / "notebooks" / "walk_forward.ipynb"
PROBE = {
    "folder": "done.folder",
    "run_id": "done.mlflow_run_id",
    "per_fold": "per_fold.reset_index().to_dict(orient='records')",
    "ranked_sets": "done.study.ranking['set'].tolist()",
    "scatter_points": "len(fig.data[0].x)",
}


def test_the_notebook_sweeps_walk_forward_and_ranks_in_against_out_of_sample(sample, kernels, tmp_path):  # noqa: F811
    from grinder.track.mlflow_store import open_store

    parameters = {"root": sample, "out_dir": tmp_path / "sweeps", "mlruns": tmp_path / "mlruns"}
    nb = run_notebook(NOTEBOOK, parameters, kernels, tmp_path / "work", PROBE).values
    folder = Path(nb["folder"])
    assert folder.parent == tmp_path / "sweeps"
    summary = json.loads((folder / "summary.json").read_text())
    results = pd.read_parquet(folder / "results.parquet")

    # Three folds over the one span of the sample: in-sample part k, then out of sample part k + 1.
    windows = summary["windows"]
    assert [(w["name"], w["sample"]) for w in windows] == [
        (f"wf{k}-{part}", sample_) for k in (1, 2, 3) for part, sample_ in (("train", "in"), ("test", "out"))
    ]
    for train, test in zip(windows[::2], windows[1::2], strict=True):
        assert train["end_ns"] == test["start_ns"]
    for a, b in zip(windows[1::2], windows[3::2], strict=False):
        assert a["end_ns"] == b["start_ns"]  # the out-of-sample windows tile the end of the data
    assert set(results["window"]) == {w["name"] for w in windows} and len(results) == 6 * len(windows)

    # The ranking: by the mean equity over the out-of-sample windows, best first, ties to the lower set.
    out = results[results["sample"] == "out"].groupby("set")["equity"].mean()
    assert nb["ranked_sets"] == sorted(out.index, key=lambda s: (-out[s], s))
    assert nb["scatter_points"] == 6

    # Per fold: the in-sample winner, read off the folder's results, and where it lands out of sample.
    assert [row["fold"] for row in nb["per_fold"]] == ["wf1", "wf2", "wf3"]
    for row in nb["per_fold"]:
        ins = results[results["window"] == f"{row['fold']}-train"].set_index("set")["equity"]
        outs = results[results["window"] == f"{row['fold']}-test"].set_index("set")["equity"]
        best = min(s for s in ins.index if ins[s] == ins.max())
        assert row["best in sample"] == best
        assert row["its equity in"] == pytest.approx(ins[best]) and row["its equity out"] == pytest.approx(outs[best])
        assert row["its rank out"] == 1 + int((outs > outs[best]).sum())
        assert -1 <= row["rank correlation"] <= 1

    # MLflow: the sweep's parent run, walk-forward, with its best set re-run as one child run.
    client, exp = open_store(tmp_path / "mlruns")
    runs = client.search_runs([exp])
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert parent.info.run_id == nb["run_id"] and parent.info.status == "FINISHED"
    assert parent.data.params["spec.walk_forward"] == "3"
    (child,) = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == nb["run_id"]]
    assert child.data.tags["sweep_set"] == str(nb["ranked_sets"][0])
