"""A sweep on the command line as a decision: same-metric top 5, warning, baselines, importance, stored studies."""

from __future__ import annotations

import json

from tests.cli.test_cli import SWEEP, grinder, sample  # noqa: F401 - the sample lake fixture

SEARCH = ["-g", "interval=0.5:3:0.5", "-g", "half_spread=lin:0.5:4:8", "-p", "order_qty=0.1", "-p", "max_position=5"]


def test_a_losing_grid_is_flagged_and_compared_with_its_baselines(sample, tmp_path):  # noqa: F811
    r = grinder("sweep", "static_grid", "--root", sample, *SWEEP, "--train", "0.6", "--no-track", "--out",
                tmp_path / "sw")  # fmt: skip
    assert r.returncode == 0, r.stderr
    top = [x for x in r.stdout.splitlines() if x.strip().startswith("#")]
    assert len(top) == 4 and all("equity_out" in x and "equity_in" in x for x in top)
    folder = next((tmp_path / "sw").iterdir())
    summary = json.loads((folder / "summary.json").read_text())
    assert all(b["equity_out"] < 0 for b in summary["best"])  # the sample loses for every set of this grid ...
    assert "every one of the 4 parameter sets lost money out of sample" in r.stderr  # ... and says so
    assert summary["warning"] in r.stderr and "Warning:" in (folder / "report.html").read_text()
    names = [b["name"] for b in summary["baselines"]]
    assert names[0].startswith("static_grid defaults") and names[1] == "flat (no trading)"
    assert summary["baselines"][1]["equity_out"] == 0.0 and summary["baselines"][0]["equity_out"] is not None
    assert set(summary["importance"]["equity_out"]) == {"interval", "half_spread"}
    assert [x["metric"] for x in summary["in_vs_out"]][0] == "equity"
    page = (folder / "report.html").read_text()
    assert "In sample against out of sample" in page and "Parameter importance" in page


def test_tpe_ranks_by_sharpe_and_its_study_is_stored_and_resumed(sample, tmp_path):  # noqa: F811
    args = [
        "sweep",
        "static_grid",
        "--root",
        sample,
        *SEARCH,
        "--train",
        "0.6",
        "--search",
        "tpe",
        "--trials",
        "6",
        "--rank-by",
        "sharpe",
        "--workers",
        "2",
        "--children",
        "0",
        "--no-report",
        "--mlruns",
        tmp_path / "ml",
    ]
    r = grinder(*args, "--out", tmp_path / "a")
    assert r.returncode == 0, r.stderr
    top = [x for x in r.stdout.splitlines() if x.strip().startswith("#")]
    assert top and all("sharpe_out" in x and "sharpe_in" in x and "equity" not in x for x in top)
    summary = json.loads((next((tmp_path / "a").iterdir()) / "summary.json").read_text())
    # Minutes-long windows: the annualised Sharpe ranks sets but is said to be no yearly figure.
    assert summary["annualised_note"].startswith("sharpe (the ranking's metric) is annualised from windows of at most")
    assert "sharpe (the ranking's metric) is annualised" in r.stderr
    name = summary["search"]["study"]
    assert name.startswith("static_grid-BTCUSDT-") and (tmp_path / "ml" / "optuna.db").is_file()
    again = grinder(*args, "--out", tmp_path / "b")
    assert again.returncode == 2 and "already holds 6 trials: pass --resume" in again.stderr
    assert "Traceback" not in again.stderr and not (tmp_path / "b").exists()
    resumed = grinder(*args, "--resume", "--out", tmp_path / "c")  # nothing left to run: the same sets
    assert resumed.returncode == 0, resumed.stderr
    sid = [x.stdout.split("sweep id ")[1].split()[0] for x in (r, resumed)]
    assert sid[0] == sid[1]
    missing = grinder(*args, "--resume", "--study", "nope", "--out", tmp_path / "d")
    assert missing.returncode == 2 and "no study 'nope' to resume" in missing.stderr
