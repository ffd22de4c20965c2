"""The sweep report's tables."""

from __future__ import annotations

import warnings

import pandas as pd

from grinder.report.sweep_html import _rows_table


def test_a_figure_a_row_does_not_have_is_an_empty_cell_not_nan():
    rows = pd.DataFrame([{"set": "a", "sharpe": 1.25}, {"set": "b", "sharpe": None}, {"set": None, "sharpe": 2}])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # pandas warned on fillna("") over a float column
        page = _rows_table(rows)
    assert "nan" not in page.lower() and "None" not in page
    assert page.count("<td></td>") == 2 and "<td class='num'>1.25</td>" in page
