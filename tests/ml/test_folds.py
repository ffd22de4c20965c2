"""Walk-forward folds: no training label window touches its test fold, the embargo holds, folds in time order."""

from __future__ import annotations

import re

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from grinder.errors import ConfigError
from grinder.ml.folds import walk_forward_folds

S = 1_000_000_000


@st.composite
def cases(draw):
    steps = draw(st.lists(st.sampled_from([1, 2, 5, 10, 100, 3600]), min_size=40, max_size=400))
    ts = np.cumsum(np.array(steps, np.int64) * (S // 2))
    return ts, draw(st.integers(1, 30)) * S // 2, draw(st.integers(1, 5)), draw(st.sampled_from([0, S, 7 * S, 60 * S]))


@given(cases())
def test_folds_purge_embargo_and_order(case):
    ts, h, k, embargo = case
    try:
        folds = walk_forward_folds(ts, h, k, embargo, min_train=5, min_test=5)
    except ConfigError as e:
        assert "fewer than the minimum 5" in e.message
        return
    assert [f.index for f in folds] == list(range(k))
    tested = np.concatenate([f.test for f in folds])
    assert np.array_equal(tested, np.arange(len(ts) - len(tested), len(ts)))  # the test folds tile the end
    for f, g in zip(folds, folds[1:], strict=False):
        assert f.test_end_ns < g.test_start_ns or f.test[-1] + 1 == g.test[0]  # in time order, one after the other
    for f in folds:
        a, b = f.test_start_ns, f.test_end_ns
        assert (a, b) == (ts[f.test[0]], ts[f.test[-1]])
        t = ts[f.train]
        assert (t < a).all()  # training precedes its test fold
        assert not ((t < b) & (t + h >= a)).any()  # no label window (t, t + h] touches [a, b]
        assert not ((t >= a - embargo) & (t <= b + embargo)).any()  # the embargo
        # Nothing else is dropped: every earlier sample outside purge and embargo is trained on.
        earlier = np.arange(f.test[0])
        dropped = np.setdiff1d(earlier, f.train)
        assert ((ts[dropped] + h >= a) | (ts[dropped] >= a - embargo)).all()
        assert len(dropped) == f.purged + f.embargoed


def test_known_layout():
    ts = np.arange(12, dtype=np.int64) * S  # 0..11 s, 3 folds: blocks of 3
    folds = walk_forward_folds(ts, 2 * S, 3, min_train=1, min_test=1)
    assert [f.test.tolist() for f in folds] == [[3, 4, 5], [6, 7, 8], [9, 10, 11]]
    # Fold 0 tests on [3 s, 5 s]: the samples at 1 and 2 s look into it (purged); fold 1: 4 and 5 s.
    assert [f.train.tolist() for f in folds] == [[0], [0, 1, 2, 3], [0, 1, 2, 3, 4, 5, 6]]
    assert [(f.purged, f.embargoed) for f in folds] == [(2, 0), (2, 0), (2, 0)]
    wide = walk_forward_folds(np.arange(16, dtype=np.int64) * S, 2 * S, 3, embargo_ns=3 * S, min_train=1, min_test=1)
    assert [f.train.tolist() for f in wide] == [[0], [0, 1, 2, 3, 4], list(range(9))]  # 3 s before each test fold
    assert [(f.purged, f.embargoed) for f in wide] == [(2, 1), (2, 1), (2, 1)]
    with pytest.raises(ConfigError, match="fold 0 of 3 trains on 0 samples after purging 2 and embargoing 1, fewer "
                                          "than the minimum 1"):  # fmt: skip
        walk_forward_folds(ts, 2 * S, 3, embargo_ns=3 * S, min_train=1, min_test=1)


@pytest.mark.parametrize(
    "args, message",
    [
        (
            (np.arange(30) * S, S, 3),
            "fold 0 of 3 tests on 8 samples, fewer than the minimum 20 (30 samples in 4 blocks)",
        ),  # fmt: skip
        (
            (np.arange(100) * S, S, 3),
            "fold 0 of 3 trains on 24 samples after purging 1 and embargoing 0, fewer than the minimum 50",
        ),  # fmt: skip
        ((np.arange(100) * S, S, 0), "folds must be at least 1, got 0"),
        ((np.arange(100) * S, 0, 3), "horizon must be positive"),
        ((np.arange(100)[::-1] * S, S, 3), "sorted"),
    ],
)
def test_bad_input_names_the_figure(args, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        walk_forward_folds(*args)
