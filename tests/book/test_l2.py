"""Property tests of the L2 book kernels against a plain dict model."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from grinder.book.l2 import (
    ASK,
    BID,
    EMPTY,
    best_qty,
    best_ticks,
    clear_side,
    grow,
    level,
    new_book,
    qty_at,
    set_level,
)

ops = st.lists(
    st.one_of(
        st.tuples(
            st.just("set"), st.sampled_from([BID, ASK]), st.integers(1, 60), st.sampled_from([0.0, 0.5, 1.0, 3.0])
        ),
        st.tuples(st.just("clear"), st.sampled_from([BID, ASK]), st.just(0), st.just(0.0)),
    ),
    max_size=200,
)


@settings(max_examples=300, deadline=None)
@given(ops)
def test_book_matches_dict_model(operations):
    keys, qty, n = new_book(4)
    model = {BID: {}, ASK: {}}
    for op, s, p, q in operations:
        if op == "clear":
            clear_side(n, s)
            model[s].clear()
            continue
        if set_level(keys, qty, n, s, p, q) == 1:
            keys, qty = grow(keys, qty)
            assert set_level(keys, qty, n, s, p, q) == 0
        if q > 0:
            model[s][p] = q
        else:
            model[s].pop(p, None)
        for side in (BID, ASK):
            m = model[side]
            assert n[side] == len(m)
            # Levels are kept sorted with the best last, and no level holds zero.
            k = keys[side, : n[side]]
            assert (np.diff(k) > 0).all()
            assert (qty[side, : n[side]] > 0).all()
            best = (max(m) if side == BID else min(m)) if m else EMPTY
            assert best_ticks(keys, n, side) == best
            assert best_qty(qty, n, side) == (m[best] if m else 0.0)
            for price in (p, p + 1, 30):
                assert qty_at(keys, qty, n, side, price) == m.get(price, 0.0)
            ordered = sorted(m, reverse=side == BID)
            for depth in range(len(ordered) + 1):
                px, q2 = level(keys, qty, n, side, depth)
                if depth < len(ordered):
                    assert (px, q2) == (ordered[depth], m[ordered[depth]])
                else:
                    assert px == EMPTY


def test_full_book_reports_overflow_without_changing():
    keys, qty, n = new_book(2)
    assert set_level(keys, qty, n, BID, 10, 1.0) == 0
    assert set_level(keys, qty, n, BID, 11, 1.0) == 0
    assert set_level(keys, qty, n, BID, 12, 1.0) == 1
    assert n[BID] == 2 and best_ticks(keys, n, BID) == 11
    # Updating or deleting an existing level still works when full.
    assert set_level(keys, qty, n, BID, 11, 0.0) == 0 and best_ticks(keys, n, BID) == 10
