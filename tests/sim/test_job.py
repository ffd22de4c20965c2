"""`backtest_job`, the call a notebook makes, against `grinder backtest` with the same settings."""

from __future__ import annotations

import json

import pytest

from grinder import ConfigError, backtest_job
from tests.cli.test_cli import GRID, grinder, sample  # noqa: F401 - the sample lake fixture

PARAMS = dict(p.split("=") for p in GRID[1::2])


def _summary(run_dir) -> dict:
    return {k: v for k, v in json.loads((run_dir / "summary.json").read_text()).items() if k != "seconds"}


def test_the_job_runs_the_backtest_the_command_runs(sample, tmp_path):  # noqa: F811
    r = grinder("backtest", "static_grid", "--root", sample, *GRID, "--step-ms", "50", "--no-report", "--no-track",
                "--out", tmp_path / "cli")  # fmt: skip
    assert r.returncode == 0, r.stderr
    (cli,) = (tmp_path / "cli").iterdir()
    # Numbers as a notebook writes them, the step in VenueConfig's own unit (ns).
    done = backtest_job("static_grid", root=sample, params={k: float(v) for k, v in PARAMS.items()},
                        venue_settings={"step_ns": 50_000_000}, report=False, track=False,
                        out_dir=tmp_path / "nb")  # fmt: skip
    assert done.mlflow_run_id is None and done.run_dir.parent == tmp_path / "nb"
    assert done.summary["digest"] == r.stdout.split("digest ")[1].split()[0] == done.result.digest
    assert _summary(done.run_dir) == _summary(cli)


def test_bad_settings_fail_before_any_data_is_read(tmp_path):
    with pytest.raises(ConfigError, match="venue: queue"):
        backtest_job("static_grid", root=tmp_path / "no-lake", params=PARAMS, venue_settings={"queue": "fifo"},
                     track=False, out_dir=tmp_path)  # fmt: skip
    assert list(tmp_path.iterdir()) == []


def test_the_same_run_twice_in_one_second_gets_two_folders(tmp_path):
    from grinder.sim.run_folder import atomic_folder

    made = []
    for _ in range(3):  # within one second: the stamp is the same, so is the digest
        with atomic_folder(tmp_path, "grid", "abcdef0123") as (tmp, final):
            (tmp / "summary.json").write_text("{}")
        made.append(final)
    assert len({p.name for p in made}) == 3 and all((p / "summary.json").exists() for p in made)
    assert not list(tmp_path.glob(".*.tmp"))
