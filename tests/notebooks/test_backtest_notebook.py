"""notebooks/backtest.ipynb, run by a Jupyter kernel, equals `grinder backtest` with the same settings for both grids:
the same digests and summaries; its reports and MLflow runs are where it says."""

from __future__ import annotations

import json
from pathlib import Path

from tests.cli.test_cli import grinder, sample  # noqa: F401 - the sample lake fixture
from tests.conftest import REPO
from tests.notebooks.runner import run_notebook

NOTEBOOK = REPO / "notebooks" / "backtest.ipynb"
CONFIG = REPO / "strategies" / "static_grid.toml"
GRIDS = ("static_grid", "adaptive_grid")
PROBE = {
    "run_dirs": "{name: run.run_dir for name, run in runs.items()}",
    "run_ids": "{name: run.mlflow_run_id for name, run in runs.items()}",
    "table": "summary.to_dict()",
    "equity_points": "[len(trace.y) for trace in fig.data]",
}


def _summary(run_dir: Path) -> dict:
    """A run's summary.json without its timings (what differs between two runs of one backtest)."""
    return {k: v for k, v in json.loads((run_dir / "summary.json").read_text()).items() if k != "seconds"}


def test_the_notebook_backtests_both_grids_as_the_command_does(sample, kernels, tmp_path):  # noqa: F811
    from grinder.track.mlflow_store import open_store

    parameters = {"root": sample, "config": CONFIG, "out_dir": tmp_path / "nb", "mlruns": tmp_path / "nb-mlruns"}
    nb = run_notebook(NOTEBOOK, parameters, kernels, tmp_path / "work", PROBE).values
    client, exp = open_store(tmp_path / "nb-mlruns")
    runs = {r.info.run_id: r for r in client.search_runs([exp])}
    assert sorted(runs) == sorted(nb["run_ids"].values())
    digests = set()
    for name in GRIDS:
        r = grinder("backtest", name, "--root", sample, "--config", CONFIG, "--no-report", "--no-track",
                    "--out", tmp_path / "cli" / name)  # fmt: skip
        assert r.returncode == 0, r.stderr
        (cli_dir,) = (tmp_path / "cli" / name).iterdir()
        run_dir = Path(nb["run_dirs"][name])
        assert run_dir.parent == tmp_path / "nb"
        mine, theirs = _summary(run_dir), _summary(cli_dir)
        assert mine == theirs
        digests.add(mine["digest"])
        # What the notebook shows is the run's: its digest, its report, its MLflow run.
        shown = nb["table"][name]
        assert (
            shown["digest"] == mine["digest"] and shown["fills"] == mine["fills"] and shown["equity"] == mine["equity"]
        )
        assert Path(shown["report"]) == run_dir / "report.html" and (run_dir / "report.html").stat().st_size > 0
        run = runs[shown["mlflow run"]]
        assert run.info.status == "FINISHED" and run.data.tags["digest"] == mine["digest"]
        assert run.data.tags["strategy"] == name
    assert len(digests) == 2  # two grids, two different runs
    # The equity plot: one line per grid, a point per decision step (100 ms over the sample's ~345 s).
    assert len(nb["equity_points"]) == 2 and all(3_000 < n < 4_000 for n in nb["equity_points"])
