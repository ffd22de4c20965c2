"""research/static_vs_adaptive.py on the bundled sample: both grids' walk-forward sweeps in MLflow, with the
walk-forward results logged on them as the sweep folders' results give them."""

from __future__ import annotations

import subprocess
import sys

import pandas as pd
import pytest

from tests.cli.test_cli import sample  # noqa: F401 - the sample lake fixture
from tests.conftest import REPO

SCRIPT = REPO / "research" / "static_vs_adaptive.py"


def _script(*args, cwd):
    return subprocess.run([sys.executable, SCRIPT, *map(str, args)], capture_output=True, text=True, cwd=cwd,
                          timeout=1800)  # fmt: skip


def test_static_vs_adaptive_logs_both_walk_forward_sweeps(sample, tmp_path):  # noqa: F811
    from grinder.track.mlflow_store import open_store

    work = tmp_path / "work"
    work.mkdir()
    r = _script("--root", sample, "--walk-forward", "2", "-g", "interval=1,2", "-g", "half_spread=2",
                "--mlruns", tmp_path / "mlruns", "--out", tmp_path / "sweeps", cwd=work)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert not any(work.iterdir())  # everything went under --out and --mlruns

    client, exp = open_store(tmp_path / "mlruns")
    runs = client.search_runs([exp])
    parents = {r.info.run_name: r for r in runs if "mlflow.parentRunId" not in r.data.tags}
    assert sorted(parents) == ["sweep-adaptive_grid-BTCUSDT", "sweep-static_grid-BTCUSDT"]
    static, adaptive = parents["sweep-static_grid-BTCUSDT"], parents["sweep-adaptive_grid-BTCUSDT"]
    assert static.data.tags["comparison"] == adaptive.data.tags["comparison"]
    assert static.data.tags["compared_with"] == adaptive.info.run_id
    assert adaptive.data.tags["compared_with"] == static.info.run_id
    for name, parent in parents.items():
        strategy = name.split("-")[1]
        assert parent.info.status == "FINISHED"
        assert parent.data.params["spec.strategy"] == strategy and parent.data.params["spec.walk_forward"] == "2"
        children = [c for c in runs if c.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
        assert len(children) == 1 and children[0].info.status == "FINISHED"
        assert children[0].data.tags["strategy"] == strategy

        # The walk-forward result, from the sweep folder: per fold the in-sample winner's out-of-sample equity.
        (folder,) = (tmp_path / "sweeps").glob(f"*-{strategy}-BTCUSDT-*")
        results = pd.read_parquet(folder / "results.parquet")
        expected = []
        for fold in ("wf1", "wf2"):
            ins = results[results["window"] == f"{fold}-train"].set_index("set")["equity"]
            outs = results[results["window"] == f"{fold}-test"].set_index("set")["equity"]
            expected.append(outs[min(s for s in ins.index if ins[s] == ins.max())])
        history = client.get_metric_history(parent.info.run_id, "wf_equity")
        assert [m.step for m in history] == [1, 2]
        assert [m.value for m in history] == pytest.approx(expected)
        assert parent.data.metrics["wf_equity_mean"] == pytest.approx(sum(expected) / 2)
        assert f"{strategy}: sweep folder {folder}; MLflow run {parent.info.run_id}" in r.stdout


def test_static_vs_adaptive_refuses_bad_settings_in_one_line(sample, tmp_path):  # noqa: F811
    r = _script("--root", sample, "-g", "nope=1,2", "--mlruns", tmp_path / "mlruns", "--out", tmp_path / "sweeps",
                cwd=tmp_path)  # fmt: skip
    assert r.returncode == 2, r.stdout + r.stderr
    assert r.stderr.startswith("error: ") and "nope" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "sweeps").exists()
