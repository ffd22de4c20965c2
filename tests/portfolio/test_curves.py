"""Equity curves on one grid: the common span, last value carried forward, drawdown."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from grinder.errors import ConfigError, DataError
from grinder.portfolio.curves import align_equity, common_grid, drawdown, last_finite_at, max_drawdown


def test_common_grid_spans_the_overlap():
    a = np.array([10, 20, 30, 100])
    b = np.array([15, 50, 80])
    assert common_grid([a, b], 20).tolist() == [15, 35, 55, 75]
    assert common_grid([a], 100).tolist() == [10]
    with pytest.raises(DataError, match="do not overlap"):
        common_grid([np.array([0, 5]), np.array([10, 20])], 1)
    with pytest.raises(ConfigError, match="step_ns must be positive"):
        common_grid([a], 0)
    with pytest.raises(DataError, match="none of them empty"):
        common_grid([a, np.empty(0, np.int64)], 1)


def test_align_carries_the_last_finite_value_forward():
    ts = np.array([10, 20, 30, 40])
    eq = np.array([1.0, np.nan, 3.0, 4.0])
    other = (np.array([25]), np.array([-2.0]))
    out = align_equity([(ts, eq), other], np.array([5, 10, 15, 20, 29, 30, 100]))
    assert out[:, 0].tolist() == [0.0, 1.0, 1.0, 1.0, 1.0, 3.0, 4.0]  # NaN at 20 is skipped
    assert out[:, 1].tolist() == [0.0, 0.0, 0.0, 0.0, -2.0, -2.0, -2.0]
    nan_before = align_equity([(ts, eq)], np.array([0, 10]), before=np.nan)
    assert np.isnan(nan_before[0, 0]) and nan_before[1, 0] == 1.0
    all_nan = align_equity([(ts, np.full(4, np.nan))], np.array([50]))
    assert all_nan.tolist() == [[0.0]]


def test_align_rejects_bad_input():
    ts, eq = np.array([10, 20]), np.array([1.0, 2.0])
    with pytest.raises(DataError, match="increase strictly"):
        align_equity([(ts, eq)], np.array([5, 5]))
    with pytest.raises(DataError, match="non-empty 1-D"):
        align_equity([(ts, eq)], np.array([], np.int64))
    with pytest.raises(DataError, match="curve 0: ts are not in time order"):
        align_equity([(ts[::-1], eq)], np.array([5]))
    with pytest.raises(DataError, match="curve 1: ts and equity"):
        align_equity([(ts, eq), (ts, eq[:1])], np.array([5]))
    with pytest.raises(DataError, match="at least one"):
        align_equity([], np.array([5]))


def test_drawdown_is_running_peak_minus_equity_per_column():
    eq = np.array([[0.0, 5.0], [3.0, 4.0], [1.0, 6.0], [4.0, 2.0]])
    assert drawdown(eq).tolist() == [[0.0, 0.0], [0.0, 1.0], [2.0, 0.0], [0.0, 4.0]]
    assert drawdown(np.array([-1.0, -3.0, -2.0])).tolist() == [0.0, 2.0, 1.0]


VALUES = st.one_of(st.floats(-1e6, 1e6), st.just(np.nan))


@settings(max_examples=200, deadline=None)
@given(
    steps=st.lists(st.tuples(st.integers(0, 3), VALUES), max_size=40),
    grid=st.lists(st.integers(-5, 130), min_size=1, max_size=30, unique=True),
    before=st.sampled_from([0.0, -1.0]),
)
def test_the_compiled_passes_match_their_numpy_definitions(steps, grid, before):
    ts = np.cumsum([d for d, _ in steps]).astype(np.int64)  # non-decreasing, repeated times included
    eq = np.array([v for _, v in steps], np.float64)
    grid_ns = np.array(sorted(grid), np.int64)
    ok = np.isfinite(eq)
    i = np.searchsorted(ts[ok], grid_ns, "right") - 1
    want = np.where(i >= 0, eq[ok][np.maximum(i, 0)] if ok.any() else before, before)
    out = np.empty(len(grid_ns))
    last_finite_at(ts, eq, grid_ns, before, out)
    assert np.array_equal(out, want)
    finite = eq[~np.isnan(eq)]
    assert max_drawdown(eq) == (float(drawdown(finite).max()) if len(finite) else 0.0)
