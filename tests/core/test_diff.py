"""The diff from targets to intents, called one decision at a time from Python (as live will)."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from grinder.core.diff import (
    REQ_CANCEL,
    REQ_NEW,
    REQ_NONE,
    ST_FILLED,
    ST_NEW,
    ST_NONE,
    diff_quotes_into,
    diff_scratch,
    had_target,
)


def diff_quotes_py(targets: list[tuple[int, int]], orders: list[tuple[int, int, int, int]]):
    """One decision from Python lists: targets [(side, px)], orders [(side, px, status, req)] -> (cancels, places)."""
    t = np.array(targets, np.int64).reshape(-1, 2)
    o = np.array(orders, np.int64).reshape(-1, 4)
    oc, op = np.empty(len(o), np.int64), np.empty(len(t), np.int64)
    live, slots = np.ones(len(o), np.bool_), np.arange(len(o))
    nc, npl = diff_quotes_into(t[:, 0], t[:, 1], len(t), o[:, 0], o[:, 1], o[:, 2], o[:, 3], live, slots, len(o), oc,
                               op, diff_scratch(len(t)), 1)  # fmt: skip
    return oc[:nc].tolist(), op[:npl].tolist()


def test_cancels_stale_quotes_and_places_missing_ones():
    targets = [(1, 100), (1, 99), (-1, 102)]
    orders = [
        (1, 100, ST_NEW, REQ_NONE),  # wanted: stays
        (1, 98, ST_NEW, REQ_NONE),  # no longer wanted: cancel
        (1, 97, ST_NEW, REQ_CANCEL),  # cancel already in flight: not again
        (-1, 103, ST_NONE, REQ_NEW),  # not acknowledged yet: not cancellable
        (1, 99, ST_FILLED, REQ_NONE),  # still known (until cleared): no duplicate at 99
    ]
    cancel, place = diff_quotes_py(targets, orders)
    assert cancel == [1]
    assert place == [2]  # only the ask at 102 is missing


def test_same_price_on_the_other_side_is_a_different_quote():
    cancel, place = diff_quotes_py([(-1, 100)], [(1, 100, ST_NEW, REQ_NONE)])
    assert cancel == [0] and place == [0]


def naive_diff(targets, orders):
    """The definition, written out: what diff_quotes must return."""
    cancel = [
        i
        for i, (s, p, st, rq) in enumerate(orders)
        if st == ST_NEW and rq == REQ_NONE and (s, p) not in {(ts, tp) for ts, tp in targets}
    ]
    place = [j for j, (s, p) in enumerate(targets) if (s, p) not in {(os_, op) for os_, op, _, _ in orders}]
    return cancel, place


quote = st.tuples(st.sampled_from([1, -1]), st.integers(-5, 40))


@settings(max_examples=300, deadline=None)
@given(
    targets=st.lists(quote, max_size=40),  # a target listed twice is placed once per listing, or not at all
    orders=st.lists(
        st.tuples(
            st.sampled_from([1, -1]),
            st.integers(-5, 40),
            st.sampled_from([ST_NONE, ST_NEW, ST_FILLED]),
            st.sampled_from([REQ_NONE, REQ_NEW, REQ_CANCEL]),
        ),  # fmt: skip
        max_size=60,
    ),
)
def test_matches_the_definition(targets, orders):
    assert diff_quotes_py(targets, orders) == naive_diff(targets, orders)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.lists(st.tuples(st.sampled_from([1, -1]), st.integers(-5, 5)), max_size=12),
            st.lists(
                st.tuples(
                    st.sampled_from([1, -1]),
                    st.integers(-5, 5),
                    st.sampled_from([ST_NONE, ST_NEW, ST_FILLED]),
                    st.sampled_from([REQ_NONE, REQ_NEW, REQ_CANCEL]),
                ),
                max_size=12,
            ),
        ),
        min_size=1,
        max_size=6,
    )
)
def test_kept_tables_give_what_fresh_ones_give_call_after_call(calls):
    """The engine's tables live for a whole run: stale keys of earlier calls never count."""
    import numpy as np

    from grinder.core.diff import diff_quotes_into, diff_scratch

    scratch = diff_scratch(12)
    for stamp, (targets, orders) in enumerate(calls, start=1):
        t = np.array(targets, np.int64).reshape(-1, 2)
        o = np.array(orders, np.int64).reshape(-1, 4)
        oc, op = np.zeros(max(len(o), 1), np.int64), np.zeros(max(len(t), 1), np.int64)
        nc, npl = diff_quotes_into(t[:, 0].astype(np.int8), t[:, 1].copy(), len(t), o[:, 0].astype(np.int8),
                                   o[:, 1].copy(), o[:, 2].astype(np.int8), o[:, 3].astype(np.int8),
                                   np.ones(len(o), np.bool_), np.arange(len(o)), len(o), oc, op, scratch,
                                   stamp)  # fmt: skip
        assert (oc[:nc].tolist(), op[:npl].tolist()) == diff_quotes_py(targets, orders) == naive_diff(targets, orders)


def test_the_last_diff_s_targets_stay_readable_until_the_next_diff():
    scratch = diff_scratch(8)
    n = np.zeros(8, np.int64)
    side, px = np.array([1, 1, -1], np.int8), np.array([99, 98, 101], np.int64)
    args = (np.zeros(1, np.int8), np.zeros(1, np.int64), np.zeros(1, np.int8), np.zeros(1, np.int8),
            np.zeros(1, np.bool_), np.zeros(1, np.int64), 0, n, n)  # fmt: skip
    assert diff_quotes_into(side, px, 3, *args, scratch, 1) == (0, 3)
    assert [had_target(scratch, 1, 3, s, p) for s, p in [(1, 99), (1, 98), (-1, 101)]] == [True] * 3
    assert not had_target(scratch, 1, 3, -1, 99) and not had_target(scratch, 1, 3, 1, 101)
    diff_quotes_into(side[:1], px[:1], 1, *args, scratch, 2)
    assert had_target(scratch, 2, 1, 1, 99) and not had_target(scratch, 2, 1, 1, 98)
