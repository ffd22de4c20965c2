"""The sweep report: its tables, in sample against out of sample, each set over its windows, links to the best
sets' runs, units, and a page that opens offline."""

from __future__ import annotations

import json
import re
import warnings

import numpy as np
import pandas as pd
import pytest

from grinder.report.sweep_html import (
    RUNS_BEGIN,
    RUNS_END,
    _ranges_figure,
    _rows_table,
    find_best_runs,
    link_best_runs,
    write_sweep_report,
)
from grinder.sweep.study import StudyResult, rank

T0 = 1_723_161_600_000_000_000
WALK_FORWARD = [("wf1-train", "in"), ("wf1-test", "out"), ("wf2-train", "in"), ("wf2-test", "out")]


def test_a_figure_a_row_does_not_have_is_an_empty_cell_not_nan():
    rows = pd.DataFrame([{"set": "a", "sharpe": 1.25}, {"set": "b", "sharpe": None}, {"set": None, "sharpe": 2}])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # pandas warned on fillna("") over a float column
        page = _rows_table(rows)
    assert "nan" not in page.lower() and "None" not in page
    assert page.count("<td></td>") == 2 and "<td class='num'>1.25</td>" in page


def equity_of(s: int, w: int) -> float:
    """Set s's equity in window w: rises with the set, and the windows disagree (window 1 loses for every set)."""
    return 10.0 * s - (25.0 if w == 1 else 0.0) + w


def study_of(windows: list[tuple[str, str]], sets: int = 6) -> tuple[StudyResult, dict]:
    """A StudyResult and summary.json as `grinder sweep` makes them, for `sets` sets over the given windows."""
    rows = []
    for w, (name, sample) in enumerate(windows):
        for s in range(sets):
            rows.append({"set": s, "window": name, "sample": sample, "start_ns": T0 + w, "end_ns": T0 + w + 1,
                         "events": 1_000, "half_spread": 1.0 + s % 3, "interval": 1 + s // 3,
                         "equity": equity_of(s, w), "max_drawdown": 5.0, "fills": 10 + s,
                         "sharpe": 0.1 * s})  # fmt: skip
    results = pd.DataFrame(rows)
    ranking = rank(results, ["half_spread", "interval"], "equity")
    grid = T0 + np.arange(5, dtype=np.int64) * 1_000_000_000
    curves = {name: (grid, np.cumsum(np.ones((5, sets)), axis=0)) for name, _ in windows}
    study = StudyResult(results, ranking, "equity", curves)
    summary = {"strategy": "static_grid", "axes": ["half_spread", "interval"], "sets": sets,
               "selection": {"venue": "binance-usdm", "symbol": "BTCUSDT"},
               "windows": [{"name": n, "sample": s} for n, s in windows], "lower_is_better": False,
               "backtests": sets * len(windows), "seconds": 1.0, "settle": "USDT", "sweep_id": "ab" * 32}  # fmt: skip
    return study, summary


def figure_json(page: str, title: str) -> dict:
    """The plotly figure whose layout title starts with `title`, from the page's Plotly.newPlot calls."""
    for m in re.finditer(r'Plotly\.newPlot\(\s*"[^"]+",\s*(\[.*?\]),\s*(\{.*?\}),\s*\{"displaylogo"', page, re.S):
        layout = json.loads(m.group(2))
        if layout.get("title", {}).get("text", "").startswith(title):
            return {"data": json.loads(m.group(1)), "layout": layout}
    raise AssertionError(f"no figure titled {title!r}")


def test_walk_forward_sweep_has_the_in_out_scatter_and_each_sets_range(tmp_path):
    study, summary = study_of(WALK_FORWARD)
    page = write_sweep_report(tmp_path, study, summary).read_text()
    fig = figure_json(page, "equity: in sample against out of sample")
    sets = next(t for t in fig["data"] if t["name"] == "parameter sets")
    assert len(sets["text"]) == 6  # one point per set
    diagonal = next(t for t in fig["data"] if t["name"] == "out = in")
    assert diagonal["x"] == diagonal["y"]
    assert fig["layout"]["xaxis"]["title"]["text"] == "equity, in sample (mean over its windows) (USDT)"
    assert fig["layout"]["yaxis"]["title"]["text"] == "equity, out of sample (mean over its windows) (USDT)"
    assert "no out-of-sample window" not in page
    fig = figure_json(page, "equity of the best 6 sets in each window")
    assert fig["layout"]["yaxis"]["title"]["text"] == "equity in a window (USDT)"
    assert fig["layout"]["xaxis"]["ticktext"][0] == "#1 set 5"  # best first
    assert "Windows: 2 in-sample, 2 out-of-sample." in page


def test_ranges_run_from_the_lowest_to_the_highest_window_of_each_sample():
    study, summary = study_of(WALK_FORWARD)
    fig, _ = _ranges_figure(study.results, study.ranking, "equity", summary)
    for sample, (a, b) in (("in sample", (0, 2)), ("out of sample", (1, 3))):
        mean = next(t for t in fig.data if t.name.startswith(f"{sample}: mean"))
        lo, hi = np.minimum(equity_of(5, a), equity_of(5, b)), np.maximum(equity_of(5, a), equity_of(5, b))
        assert mean.y[0] == pytest.approx((lo + hi) / 2)  # set 5, ranked first
        assert mean.y[0] + mean.error_y.array[0] == pytest.approx(hi)
        assert mean.y[0] - mean.error_y.arrayminus[0] == pytest.approx(lo)
        each = next(t for t in fig.data if t.name == f"{sample}: each window")
        assert len(each.y) == 12  # 6 sets x 2 windows


def test_a_sweep_without_out_of_sample_says_so_instead_of_the_scatter(tmp_path):
    study, summary = study_of([("all", "in")])
    page = write_sweep_report(tmp_path, study, summary).read_text()
    assert "This sweep has no out-of-sample window" in page
    with pytest.raises(AssertionError, match="no figure"):
        figure_json(page, "equity: in sample against out of sample")
    assert "One window per sample (in: 1): no range across windows to show." in page
    study, summary = study_of([("train", "in"), ("test", "out")])  # --train: the scatter, one window a sample
    page = write_sweep_report(tmp_path, study, summary).read_text()
    figure_json(page, "equity: in sample against out of sample")
    assert "One window per sample (in: 1, out: 1)" in page


def best_run(folder, name: str, set_no: int, report: bool = True, sweep_id: str = "ab" * 32):
    d = folder / "best" / name
    d.mkdir(parents=True)
    (d / "summary.json").write_text(json.dumps({"sweep": {"sweep_id": sweep_id, "set": set_no, "rank": 1}}))
    if report:
        (d / "report.html").write_text("<html></html>")
    return d


def test_best_sets_link_to_their_run_folders_and_mlflow_runs(tmp_path):
    study, summary = study_of(WALK_FORWARD)
    best_run(tmp_path, "20261207T000000Z-rank1-set5-aaaaaaaa", 5)
    best_run(tmp_path, "20261207T000000Z-rank2-set4-bbbbbbbb", 4, report=False)
    best_run(tmp_path, "20261207T000000Z-rank1-set0-cccccccc", 0, sweep_id="cd" * 32)  # another sweep's: ignored
    runs = find_best_runs(tmp_path, summary["sweep_id"])
    assert set(runs) == {5, 4}
    page = write_sweep_report(tmp_path, study, summary, run_ids={"20261207T000000Z-rank1-set5-aaaaaaaa": "f00d"})
    page = page.read_text()
    section = page[page.index(RUNS_BEGIN) : page.index(RUNS_END)]
    assert "<a href='best/20261207T000000Z-rank1-set5-aaaaaaaa/report.html'>" in section
    assert "<a href='best/20261207T000000Z-rank2-set4-bbbbbbbb/'>" in section and "no report.html" in section
    assert "f00d" in section and "not recorded" in section  # set 4's run id was not given
    assert "half_spread=3.0, interval=2" in section  # set 5's parameters
    assert "cccccccc" not in section


def test_links_are_added_once_the_child_runs_exist(tmp_path):
    study, summary = study_of(WALK_FORWARD)
    study.results.to_parquet(tmp_path / "results.parquet")
    study.ranking.to_parquet(tmp_path / "ranking.parquet")
    (tmp_path / "summary.json").write_text(json.dumps(summary))
    page = write_sweep_report(tmp_path, study, summary).read_text()
    assert "No run folders of the best sets under best/" in page
    best_run(tmp_path, "20261207T000000Z-rank1-set5-aaaaaaaa", 5)
    after = link_best_runs(tmp_path, {"20261207T000000Z-rank1-set5-aaaaaaaa": "f00d"}).read_text()
    assert "No run folders" not in after and "best/20261207T000000Z-rank1-set5-aaaaaaaa/report.html" in after
    assert after.replace(after[after.index(RUNS_BEGIN) : after.index(RUNS_END)], "") == page.replace(
        page[page.index(RUNS_BEGIN) : page.index(RUNS_END)], ""
    )  # nothing else changed


def test_sweep_report_units_and_offline(tmp_path):
    study, summary = study_of(WALK_FORWARD)
    page = write_sweep_report(tmp_path, study, summary).read_text()
    assert not re.search(r"<script[^>]*\bsrc\s*=", page, re.I)
    assert page.count("plotly.js v") == 1  # the full library (heatmap, parallel coordinates), inline once
    fig = figure_json(page, "Equity of the best 5 sets, window wf1-train")
    assert fig["layout"]["xaxis"]["title"]["text"] == "time (UTC)"
    assert fig["layout"]["yaxis"]["title"]["text"] == "equity (USDT)"
    fig = figure_json(page, "equity_out by half_spread and interval")
    assert fig["data"][0]["colorbar"]["title"]["text"] == "equity_out (USDT)"


def test_the_annualised_note_is_shown_when_the_sweep_has_one(tmp_path):
    study, summary = study_of(WALK_FORWARD)
    summary["annualised_note"] = "sharpe is annualised from windows of at most 0 days 00:06:00"
    page = write_sweep_report(tmp_path, study, summary).read_text()
    assert "<b>Note:</b> sharpe is annualised from windows of at most 0 days 00:06:00." in page
    summary["annualised_note"] = None
    assert "<b>Note:</b>" not in write_sweep_report(tmp_path, study, summary).read_text()
