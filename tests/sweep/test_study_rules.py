"""Ranking with --rules-ok: sets that kept Binance's quantitative rules in every window first, the others marked."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from grinder.errors import ConfigError
from grinder.report.sweep_html import write_sweep_report
from grinder.sweep.study import StudyResult, rank


def results(rules_ok: list) -> pd.DataFrame:
    """Four sets over a train and a test window; equity rises with the set number, so set 3 is best."""
    rows = []
    for w, sample in (("train", "in"), ("test", "out")):
        for s in range(4):
            rows.append({"set": s, "window": w, "sample": sample, "spread": 1.0 + s, "equity": 10.0 * s,
                         "qr_ufr_max": 0.5 + 0.1 * s + (0.05 if w == "test" else 0.0), "qr_gtc_cancel_max": math.nan,
                         "rules_ok": rules_ok[s] if w == "test" else True})  # fmt: skip
    return pd.DataFrame(rows)


def test_without_the_flag_the_ranking_only_marks_breaching_sets():
    r = rank(results([True, False, True, False]), ["spread"], "equity")
    assert r["set"].tolist() == [3, 2, 1, 0]
    assert r["rules_ok"].tolist() == [False, True, False, True]
    # Each rule's worst value over the set's windows: the test window's here.
    assert r["qr_ufr_max"].tolist() == pytest.approx([0.85, 0.75, 0.65, 0.55])
    assert np.isnan(r["qr_gtc_cancel_max"].to_numpy(np.float64)).all()


def test_with_the_flag_sets_within_the_rules_rank_first():
    r = rank(results([True, False, True, False]), ["spread"], "equity", rules_ok=True)
    assert r["set"].tolist() == [2, 0, 3, 1]  # a breach in any window puts a set after every compliant one
    assert r["rank"].tolist() == [1, 2, 3, 4] and r["rules_ok"].tolist() == [True, True, False, False]
    assert r.attrs["rules_ok"] is True


def test_the_flag_needs_every_backtest_to_have_tracked_the_rules():
    frame = results([True, None, True, True])
    assert rank(frame, ["spread"], "equity")["rules_ok"].tolist() == [True, True, None, True]
    with pytest.raises(ConfigError, match="--rules-ok: the backtests recorded no quantitative-rules series"):
        rank(frame, ["spread"], "equity", rules_ok=True)


def test_the_sweep_report_shows_the_rules_column(tmp_path):
    ranking = rank(results([True, False, True, False]), ["spread"], "equity", rules_ok=True)
    study = StudyResult(pd.DataFrame(), ranking, "equity", {})
    summary = {"axes": ["spread"], "strategy": "static_grid", "selection": {"venue": "binance-usdm", "symbol": "X"},
               "sets": 4, "windows": [{"name": "train", "sample": "in"}, {"name": "test", "sample": "out"}],
               "lower_is_better": False, "backtests": 8, "seconds": 1.0, "rules_ok": True,
               "sets_within_rules": 2}  # fmt: skip
    page = write_sweep_report(tmp_path, study, summary).read_text()
    assert "sets within Binance&#x27;s quantitative rules first (--rules-ok)" in page
    assert "<th>rules_ok</th>" in page and "<th>qr_ufr_max</th>" in page
