"""A sweep's decision aids: the all-sets-lost warning, in vs out of sample, fANOVA importance, baselines."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from grinder.sweep.decide import annualised_note, baselines, importance, in_vs_out, losing_warning

finite = st.floats(-1e6, 1e6, allow_nan=False)


@given(st.lists(st.one_of(finite, st.just(float("nan"))), min_size=1, max_size=20), st.booleans())
def test_the_warning_is_given_exactly_when_every_set_with_a_result_lost(equity, out_of_sample):
    col = "equity_out" if out_of_sample else "equity_in"
    ranking = pd.DataFrame({"set": range(len(equity)), "equity_in": equity, col: equity})
    got = losing_warning(ranking, "USDT")
    results = [e for e in equity if not np.isnan(e)]
    assert (got is not None) == (bool(results) and max(results) < 0)
    if got:
        assert f"every one of the {len(results)} parameter sets lost money" in got
        assert ("out of sample" in got) == out_of_sample and "USDT" in got


def test_importance_finds_the_parameter_that_matters():
    rng = np.random.default_rng(1)
    a, b, c = rng.uniform(0, 1, 64), rng.uniform(0, 1, 64), rng.choice(["x", "y"], 64)
    ranking = pd.DataFrame({"set": range(64), "a": a, "b": b, "c": c, "equity_out": 10 * a**2 + 0.01 * b,
                            "flat": np.full(64, 1.0)})  # fmt: skip
    got = importance(ranking, ["a", "b", "c"], "equity_out", lower_is_better=False)
    assert set(got) == {"a", "b", "c"} and got["a"] > 0.9 and sum(got.values()) == pytest.approx(1.0)
    assert importance(ranking, ["a", "b"], "flat", False) == {}  # nothing varies: nothing to attribute
    assert importance(ranking.assign(a=1.0, b=2, c="x"), ["a", "b", "c"], "equity_out", False) == {}
    ranking.loc[:61, "equity_out"] = np.nan
    assert set(importance(ranking, ["a", "b"], "equity_out", False)) == {"a", "b"}  # two finite sets suffice


def test_in_vs_out_says_where_the_best_in_sample_set_lands():
    ranking = pd.DataFrame({"set": [0, 1, 2, 3], "equity_in": [4.0, 3.0, 2.0, 1.0],
                            "equity_out": [-1.0, 2.0, 1.0, 0.5], "max_drawdown_in": [1.0, 2.0, 3.0, 4.0],
                            "max_drawdown_out": [4.0, 3.0, 2.0, 1.0]})  # fmt: skip
    eq, dd = in_vs_out(ranking, ["equity", "max_drawdown", "sharpe"])
    assert eq["best_in_rank_out"] == 4 and eq["positive_in"] == 1.0 and eq["positive_out"] == 0.75
    assert eq["spearman"] == pytest.approx(-0.2)  # ranks 4 3 2 1 against 1 4 3 2
    assert dd["best_in_rank_out"] == 4 and dd["spearman"] == pytest.approx(-1.0)  # lower is better for drawdowns
    assert in_vs_out(ranking.drop(columns=["equity_out", "max_drawdown_out"]), ["equity"]) == []


def test_baselines_put_the_default_grid_and_flat_beside_the_best_set():
    ranking = pd.DataFrame({"rank": [1, 2], "set": [5, 3], "equity_in": [1.0, 2.0], "equity_out": [0.5, np.inf]})
    base = pd.DataFrame({"set": [0], "equity_in": [-3.0], "equity_out": [np.nan]})
    rows = baselines(base, ranking, ["equity"])
    assert [r["name"] for r in rows] == ["static_grid defaults (static_grid.toml)", "flat (no trading)", "best set (5)"]
    assert rows[0] == {"name": rows[0]["name"], "equity_in": -3.0, "equity_out": None}  # NaN is not a number to show
    assert rows[1]["equity_out"] == 0.0 and rows[2]["equity_out"] == 0.5


def test_annualised_figures_are_flagged_on_windows_shorter_than_thirty_days():
    day = 86_400 * 10**9
    short = [{"start_ns": 0, "end_ns": 6 * 60 * 10**9}, {"start_ns": 0, "end_ns": 2 * day}]
    note = annualised_note(short, "equity")
    assert note.startswith("sharpe is annualised from windows of at most 2 days 00:00:00, under the 30 days")
    assert annualised_note(short, "sharpe").startswith("sharpe (the ranking's metric) is annualised")
    assert annualised_note([{"start_ns": 0, "end_ns": 30 * day}], "sharpe") is None
    assert annualised_note([], "sharpe") is None
