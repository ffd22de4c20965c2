"""Train/test and walk-forward windows: cover the span, never overlap wrongly, out-of-sample after in-sample."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from grinder.data.errors import DataError
from grinder.sweep.folds import make_folds


def test_single_window_and_split():
    assert [(w.name, w.sample) for w in make_folds(0, 100)] == [("all", "in")]
    tr, te = make_folds(0, 100, train=0.7)
    assert (tr.start_ns, tr.end_ns, tr.sample) == (0, 70, "in") and (te.start_ns, te.end_ns, te.sample) == (
        70,
        100,
        "out",
    )


@given(start=st.integers(0, 10**18), span=st.integers(10**6, 10**15), k=st.integers(1, 12),
       train=st.one_of(st.none(), st.floats(0.2, 0.9)))  # fmt: skip
def test_walk_forward_folds(start, span, k, train):
    ws = make_folds(start, start + span, train, k)
    assert len(ws) == 2 * k
    ins, outs = ws[0::2], ws[1::2]
    for i, o in zip(ins, outs, strict=True):
        assert i.sample == "in" and o.sample == "out"
        assert i.start_ns < i.end_ns == o.start_ns < o.end_ns  # test follows train directly
    assert ins[0].start_ns == start and outs[-1].end_ns == start + span
    for a, b in zip(outs, outs[1:], strict=False):
        assert a.end_ns == b.start_ns  # out-of-sample windows tile the end of the span


@pytest.mark.parametrize(
    "args,message",
    [
        ((5, 5), "empty time span"),
        ((0, 10, 1.0), "between 0 and 1"),
        ((0, 10, None, -1), ">= 0"),
        ((0, 3, None, 5), "do not fit"),
    ],  # fmt: skip
)
def test_bad_folds(args, message):
    with pytest.raises(DataError, match=message):
        make_folds(*args)
