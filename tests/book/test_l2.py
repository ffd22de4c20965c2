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
    n_levels,
    new_book,
    qty_at,
    set_level,
    top_levels,
)
from grinder.core.depth import ASK_QTY, ASK_TICKS, BID_QTY, BID_TICKS, fill_depth

# A 64-tick window over prices 1..600 exercises the overflow tier and re-centring constantly.
prices = st.one_of(st.integers(250, 350), st.integers(1, 600))
ops = st.lists(
    st.one_of(
        st.tuples(st.just("set"), st.sampled_from([BID, ASK]), prices, st.sampled_from([0.0, 0.5, 1.0, 3.0])),
        st.tuples(st.just("clear"), st.sampled_from([BID, ASK]), st.just(0), st.just(0.0)),
    ),
    max_size=250,
)


def _check(book, model):
    hdr, wq, ok, oq = book
    for side in (BID, ASK):
        m = model[side]
        assert n_levels(hdr, side) == len(m)
        best = (max(m) if side == BID else min(m)) if m else EMPTY
        assert best_ticks(hdr, side) == best
        assert best_qty(hdr, wq, ok, oq, side) == (m[best] if m else 0.0)
        ordered = sorted(m, reverse=side == BID)
        for depth in range(len(ordered) + 1):
            px, q = level(hdr, wq, ok, oq, side, depth)
            if depth < len(ordered):
                assert (px, q) == (ordered[depth], m[ordered[depth]]), (side, depth)
            else:
                assert px == EMPTY
        # One walk gives what `level` gives depth by depth; fill_depth (what strategies see) the same.
        for n in (0, 1, 3, len(ordered) + 2):
            out_px, out_q = np.zeros(n, np.int64), np.zeros(n)
            k = top_levels(hdr, wq, ok, oq, side, out_px, out_q)
            assert k == min(n, len(ordered))
            assert list(zip(out_px[:k].tolist(), out_q[:k].tolist(), strict=True)) == [(x, m[x]) for x in ordered[:k]]
    depth = np.full((4, 4), -1.0)
    fill_depth(hdr, wq, ok, oq, depth)
    for side, pc, qc in ((BID, BID_TICKS, BID_QTY), (ASK, ASK_TICKS, ASK_QTY)):
        ordered = sorted(model[side], reverse=side == BID)[:4]
        assert depth[: len(ordered), pc].tolist() == [float(x) for x in ordered]
        assert depth[: len(ordered), qc].tolist() == [model[side][x] for x in ordered]
        assert np.isnan(depth[len(ordered) :, pc]).all() and (depth[len(ordered) :, qc] == 0.0).all()


@settings(max_examples=300, deadline=None)
@given(ops)
def test_book_matches_dict_model(operations):
    hdr, wq, ok, oq = new_book(window=64, overflow=4)
    model = {BID: {}, ASK: {}}
    for op, s, p, q in operations:
        if op == "clear":
            clear_side(hdr, wq, ok, oq, s)
            model[s].clear()
        else:
            while set_level(hdr, wq, ok, oq, s, p, q) == 1:
                ok, oq = grow(hdr, ok, oq)
            if q > 0:
                model[s][p] = q
            else:
                model[s].pop(p, None)
        for price in (p, p + 1, 300, 5):
            for side in (BID, ASK):
                assert qty_at(hdr, wq, ok, oq, side, price) == model[side].get(price, 0.0)
        _check((hdr, wq, ok, oq), model)


def test_snapshot_then_far_updates_keep_the_best_exact():
    hdr, wq, ok, oq = new_book(window=128, overflow=8)
    model = {BID: {}, ASK: {}}
    for i in range(100):  # a snapshot: 100 levels a side around 10_000
        for side, p in ((BID, 10_000 - i), (ASK, 10_001 + i)):
            while set_level(hdr, wq, ok, oq, side, p, 1.0 + i) == 1:
                ok, oq = grow(hdr, ok, oq)
            model[side][p] = 1.0 + i
    for side, p in ((BID, 5), (ASK, 90_000), (BID, 9_000)):  # far levels
        while set_level(hdr, wq, ok, oq, side, p, 2.0) == 1:
            ok, oq = grow(hdr, ok, oq)
        model[side][p] = 2.0
    for i in range(100):  # the market sweeps down through every bid level, one at a time
        set_level(hdr, wq, ok, oq, BID, 10_000 - i, 0.0)
        del model[BID][10_000 - i]
        _check((hdr, wq, ok, oq), model)
