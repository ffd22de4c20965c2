"""The once-per-tape replay agrees with a book rebuilt row by row."""

from __future__ import annotations

import numpy as np

from grinder.book.l2 import ASK, BID, EMPTY, apply_row, best_ticks, new_book, qty_at
from grinder.data.lake import Lake
from grinder.data.synth import synth_batch
from grinder.data.tape import load_tape
from grinder.sim.replay import prepare_replay, qty_before


def test_replay_matches_a_live_book(tmp_path):
    Lake(tmp_path).write(synth_batch(30_000, seed=5), [], key="t")
    tape = load_tape(tmp_path, "synthetic", "SYNTHUSDT")
    local = tape.ts_local + 2_000_000
    rep, order = prepare_replay(tape, local)
    rng = np.random.default_rng(0)
    queries = {int(i): rng.integers(-50, 50, 4) for i in rng.choice(len(tape), 200, replace=False)}
    hdr, wq, ok, oq = new_book()
    for i in range(len(tape)):
        if i in queries:
            # State with rows [0, i) applied: quantities anywhere near the market.
            mid = best_ticks(hdr, BID) if best_ticks(hdr, BID) != EMPTY else tape.price_ticks[i]
            for d in queries[i]:
                for code, s in ((1, BID), (-1, ASK)):
                    p = int(mid + d)
                    got = qty_before(
                        rep.level_rows, rep.level_keys, rep.reset_rows, rep.reset_sides, tape.qty, code, p, i
                    )
                    assert got == qty_at(hdr, wq, ok, oq, s, p), (i, code, p)
        if tape.kind[i] <= 1:
            s = BID if tape.side[i] > 0 else ASK
            assert rep.prev_qty[i] == qty_at(hdr, wq, ok, oq, s, tape.price_ticks[i])
        if tape.kind[i] != 3:
            ok, oq = apply_row(hdr, wq, ok, oq, tape.kind[i], tape.side[i], tape.price_ticks[i], tape.qty[i])
        assert rep.best_bid[i] == best_ticks(hdr, BID) and rep.best_ask[i] == best_ticks(hdr, ASK)
    # The local view is the same book applied in local-time order.
    assert (np.diff(rep.local_ts) >= 0).all() and np.array_equal(rep.local_ts, local[order])
    hdr, wq, ok, oq = new_book()
    for j, i in enumerate(order):
        if tape.kind[i] != 3:
            ok, oq = apply_row(hdr, wq, ok, oq, tape.kind[i], tape.side[i], tape.price_ticks[i], tape.qty[i])
        assert rep.local_best_bid[j] == best_ticks(hdr, BID) and rep.local_best_ask[j] == best_ticks(hdr, ASK)
