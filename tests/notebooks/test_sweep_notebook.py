"""notebooks/sweep.ipynb, run by a Jupyter kernel (nbclient), equals `grinder sweep` with the same settings: the same
sweep folder (ranking, digests, sweep id) and the same MLflow parent and child runs."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd

from tests.cli.test_cli import SWEEP, grinder, sample  # noqa: F401 - the sample lake fixture
from tests.conftest import REPO
from tests.notebooks.runner import run_notebook

NOTEBOOK = REPO / "notebooks" / "sweep.ipynb"
# What differs between two runs of one sweep: how long it took, the memory it peaked at, where it ran.
VARIES = {"seconds", "memory"}
PROCESS_TAGS = ("mlflow.", "sweep_pid", "run_dir")  # who ran it, and where its folder went


STAMP = re.compile(r"\d{8}T\d{6}Z-")  # a folder's creation time, in front of its name


def _files(folder) -> dict[str, str]:
    """Each file under a folder by its path without creation times, to its path."""
    return {STAMP.sub("", p.relative_to(folder).as_posix()): p for p in folder.rglob("*") if p.is_file()}


def _folder(parent):
    (folder,) = parent.iterdir()
    return folder


def _summary(path) -> dict:
    return {k: v for k, v in json.loads(path.read_text()).items() if k not in VARIES}


def _runs(store):
    from grinder.track.mlflow_store import open_store

    client, exp = open_store(store)
    runs = client.search_runs([exp])
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = sorted((r for r in runs if r is not parent), key=lambda r: r.data.tags["sweep_rank"])
    return parent, children


def _tags(run) -> dict:
    return {k: v for k, v in run.data.tags.items() if not k.startswith(PROCESS_TAGS)}


def test_the_notebook_sweeps_as_the_command_does(sample, kernels, tmp_path):  # noqa: F811
    r = grinder("sweep", "static_grid", "--root", sample, *SWEEP, "--train", "0.6", "--children", "2",
                "--mlruns", tmp_path / "cli-mlruns", "--out", tmp_path / "cli")  # fmt: skip
    assert r.returncode == 0, r.stderr
    parameters = {"root": sample, "out_dir": tmp_path / "nb", "mlruns": tmp_path / "nb-mlruns"}
    probe = {"folder": "done.folder", "sweep_id": "done.summary['sweep_id']", "run_id": "done.mlflow_run_id"}
    done = run_notebook(NOTEBOOK, parameters, kernels, tmp_path / "work", probe).values
    cli, nb = _folder(tmp_path / "cli"), _folder(tmp_path / "nb")
    assert Path(done["folder"]) == nb

    # The folder: the same files, summary, ranking and results; the best sets' runs with the same digests.
    files, twins = _files(cli), _files(nb)
    assert sorted(files) == sorted(twins)
    assert _summary(cli / "summary.json") == _summary(nb / "summary.json")
    assert json.loads((cli / "summary.json").read_text())["sweep_id"] == done["sweep_id"]
    for table in ("ranking.parquet", "results.parquet"):
        a, b = pd.read_parquet(cli / table), pd.read_parquet(nb / table)
        pd.testing.assert_frame_equal(a.drop(columns=[c for c in a if "seconds" in c]),
                                      b.drop(columns=[c for c in b if "seconds" in c]))  # fmt: skip
    best = [name for name in files if name.startswith("best/") and name.endswith("/summary.json")]
    assert len(best) == 2
    for name in best:
        assert json.loads(files[name].read_text())["digest"] == json.loads(twins[name].read_text())["digest"]

    # MLflow: one parent run with the same parameters, metrics and tags, and the same child runs.
    (p_cli, k_cli), (p_nb, k_nb) = _runs(tmp_path / "cli-mlruns"), _runs(tmp_path / "nb-mlruns")
    assert p_nb.info.run_id == done["run_id"] and p_cli.info.status == p_nb.info.status == "FINISHED"
    assert p_cli.data.params == p_nb.data.params
    assert {k: v for k, v in p_cli.data.metrics.items() if k != "seconds"} == \
        {k: v for k, v in p_nb.data.metrics.items() if k != "seconds"}  # fmt: skip
    assert _tags(p_cli) == _tags(p_nb)
    assert len(k_cli) == len(k_nb) == 2
    for a, b in zip(k_cli, k_nb, strict=True):
        assert a.data.tags["digest"] == b.data.tags["digest"]
        assert a.data.params == b.data.params and _tags(a) == _tags(b)
