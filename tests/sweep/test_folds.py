"""Train/test and walk-forward windows: cover the span (or its covered parts), never a gap, test after train."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from grinder.data.coverage import Span
from grinder.errors import ConfigError, DataError
from grinder.sweep.folds import count_in, coverage_folds, make_folds

S = 1_000_000_000
DAY = 86_400 * S


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
    with pytest.raises(ConfigError, match=message):
        make_folds(*args)


# Three spans of data across a year and more of calendar time (like the real captures' lake).
SPANS = [Span(0, 500 * S), Span(400 * DAY, 400 * DAY + 480 * S), Span(500 * DAY, 500 * DAY + 340 * S)]


def _times(spans, per_s=100):
    return np.concatenate([np.arange(s.start_ns, s.end_ns, S // per_s, dtype=np.int64) for s in spans])


def _within_one_span(w, spans):
    return any(s.start_ns <= w.start_ns < w.end_ns <= s.end_ns for s in spans)


def test_walk_forward_over_gappy_coverage_never_spans_a_gap_and_no_window_is_empty():
    times = _times(SPANS)
    f = coverage_folds(SPANS, times, walk_forward=3)
    assert f.refused == []
    assert all(_within_one_span(w, SPANS) for w in f.windows)
    assert all(count_in(times, w.start_ns, w.end_ns) > 0 for w in f.windows)
    # Covered time is shared out as make_folds shares a span: 4 parts of 330 s each.
    for name in ("wf1-train", "wf1-test", "wf2-train", "wf2-test", "wf3-train", "wf3-test"):
        parts = [w for w in f.windows if w.name.split(".")[0] == name]
        assert sum(w.end_ns - w.start_ns for w in parts) == pytest.approx(330 * S, abs=2)
    assert [w.name for w in f.windows][:3] == ["wf1-train", "wf1-test.1", "wf1-test.2"]
    # Calendar-time folds (the old cut) put whole windows inside the gaps.
    old = make_folds(SPANS[0].start_ns, SPANS[-1].end_ns, None, 3)
    assert any(count_in(times, w.start_ns, w.end_ns) == 0 for w in old)


def test_folds_by_events_hold_equal_event_counts():
    spans = [Span(0, 100 * S), Span(10 * DAY, 10 * DAY + 400 * S)]
    times = np.concatenate([_times(spans[:1], per_s=400), _times(spans[1:], per_s=100)])  # same events, 4x denser
    f = coverage_folds(spans, times, train=0.5, by="events")
    (tr,), (te,) = [[w for w in f.windows if w.sample == s] for s in ("in", "out")]
    assert (tr.start_ns, tr.end_ns, te.start_ns, te.end_ns) == (0, 100 * S, 10 * DAY, 10 * DAY + 400 * S)
    assert count_in(times, tr.start_ns, tr.end_ns) == count_in(times, te.start_ns, te.end_ns) == 40_000
    by_time = coverage_folds(spans, times, train=0.5)  # by covered time the first half ends inside span 2
    assert [w.name for w in by_time.windows] == ["train.1", "train.2", "test"]


def test_windows_with_too_few_events_are_refused_and_an_empty_fold_is_an_error():
    spans = [Span(0, 1000 * S), Span(10 * DAY, 10 * DAY + 2 * S)]
    times = _times(spans)
    f = coverage_folds(spans, times, train=0.5, min_events=500)
    assert [w.name for w in f.windows] == ["train", "test.1"]
    assert [(w.name, n) for w, n in f.refused] == [("test.2", 200)]
    with pytest.raises(ConfigError, match=r"window wf1-train holds 200 events, fewer than the minimum 1,000"):
        coverage_folds([Span(0, 10 * S)], _times([Span(0, 10 * S)], per_s=40), walk_forward=1)
    with pytest.raises(DataError, match="no covered time"):
        coverage_folds([], times)
    with pytest.raises(ConfigError, match="unknown fold basis 'calendar'"):
        coverage_folds(spans, times, by="calendar")
    with pytest.raises(ConfigError, match="do not fit in 3 events"):
        coverage_folds([Span(0, 10)], np.arange(3), walk_forward=5, by="events", min_events=1)


@given(
    gaps=st.lists(st.integers(2 * 60, 10**6), min_size=0, max_size=4),
    lens=st.lists(st.integers(30, 3_000), min_size=5, max_size=5),
    k=st.integers(0, 4),
    train=st.one_of(st.none(), st.floats(0.3, 0.8)),
    by=st.sampled_from(["time", "events"]),
)
def test_coverage_folds_stay_inside_spans_and_keep_out_of_sample_after_in_sample(gaps, lens, k, train, by):
    spans, t = [], 10**15
    for gap, n in zip([0, *gaps], lens, strict=False):
        t += gap * S
        spans.append(Span(t, t + n * S))
        t += n * S
    times = _times(spans, per_s=10)
    try:
        f = coverage_folds(spans, times, train, k, by, min_events=1)
    except ConfigError as e:
        assert "fewer than the minimum" in str(e) or "do not fit" in str(e)
        return
    assert all(_within_one_span(w, spans) for w in f.windows)
    assert all(count_in(times, w.start_ns, w.end_ns) >= 1 for w in f.windows)
    for fold in {w.name.split("-")[0] for w in f.windows if k}:
        ins = [w for w in f.windows if w.name.startswith(fold + "-") and w.sample == "in"]
        outs = [w for w in f.windows if w.name.startswith(fold + "-") and w.sample == "out"]
        if ins and outs:
            assert max(w.end_ns for w in ins) <= min(w.start_ns for w in outs)
