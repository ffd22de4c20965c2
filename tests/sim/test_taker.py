"""Taker orders walking the exchange side's book (grinder.sim.taker) against books built row by row."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from grinder.book.l2 import ASK, BID, EMPTY, apply_row, best_ticks, level, new_book
from grinder.sim.replay import NO_KEYS, NO_QTY, _level_index, book_levels, build_replay, level_key
from grinder.sim.taker import (
    MARKET_BUY,
    MARKET_SELL,
    TAKE_EXHAUSTED,
    TAKE_FILLED,
    TAKE_OUT_FULL,
    TAKE_TABLE_FULL,
    touch_before,
    walk_book,
    walk_cost,
)
from tests.sim.test_engine import tape as hand_tape

REPO = Path(__file__).resolve().parents[2]
# (t_ms, kind, side, price, qty): kind 0 diff, 1 snapshot level, 2 reset, 3 trade.
BOOK = [(0, 2, 0, 0, 0), (0, 1, 1, 99, 5), (0, 1, 1, 98, 5), (0, 1, 1, 97, 2),
        (0, 1, -1, 101, 1), (0, 1, -1, 102, 2), (0, 1, -1, 103, 4), (0, 1, -1, 105, 3)]  # fmt: skip


class Table:
    """A caller's consumed-depth table: level keys, quantities taken, and their count."""

    def __init__(self, size=16):
        self.key, self.qty, self.n = np.zeros(size, np.int64), np.zeros(size), np.zeros(1, np.int64)


class Book:
    """A tape's replay (or a chunk's index and starting book) and walks on it."""

    def __init__(self, t, start=0, init=(NO_KEYS, NO_QTY), local=None):
        self.t = t
        self.rep = build_replay(t, t.ts_local if local is None else local)
        cols = (np.ascontiguousarray(a[start:]) for a in (t.kind, t.side, t.price_ticks))
        self.index = _level_index(*cols)
        self.qty = np.ascontiguousarray(t.qty[start:])
        self.start, self.init = start, init

    def touch(self, row, side):
        """The touch before whole-tape row `row`."""
        return touch_before(self.rep.best_bid, self.rep.best_ask, side, row)

    def walk(self, row, side, limit, want, table=None, cap=16, commit=True, avail=False):
        """(fills as [(price, qty)], filled, status) of a walk before whole-tape row `row`."""
        table = table or Table()
        px, qs = np.zeros(cap, np.int64), np.zeros(cap)
        av = np.zeros(cap if avail else 0)
        n, filled, status = walk_book(*self.index, self.qty, *self.init, row - self.start, side, self.touch(row, side),
                                      limit, want, table.key, table.qty, table.n, px, qs, av, commit)  # fmt: skip
        fills = list(zip(px[:n].tolist(), qs[:n].tolist(), strict=True))
        return (fills, filled, status, av[:n]) if avail else (fills, filled, status)


def test_a_buy_walks_the_asks_up_to_its_limit_at_each_levels_price():
    b = Book(hand_tape(BOOK + [(5, 0, -1, 110, 1)]))
    row = len(BOOK)
    assert b.walk(row, 1, 104, 10.0) == ([(101, 1.0), (102, 2.0), (103, 4.0)], 7.0, TAKE_EXHAUSTED)
    assert b.walk(row, 1, 102, 2.5) == ([(101, 1.0), (102, 1.5)], 2.5, TAKE_FILLED)  # stops inside the 2nd level
    assert b.walk(row, 1, 100, 1.0) == ([], 0.0, TAKE_EXHAUSTED)  # the limit is below the touch
    assert b.walk(row, 1, 103, 0.0) == ([], 0.0, TAKE_FILLED)


def test_a_market_sell_goes_through_every_bid():
    b = Book(hand_tape(BOOK + [(5, 0, -1, 110, 1)]))
    assert b.walk(len(BOOK), -1, MARKET_SELL, 100.0) == ([(99, 5.0), (98, 5.0), (97, 2.0)], 12.0, TAKE_EXHAUSTED)
    assert b.walk(len(BOOK), 1, MARKET_BUY, 100.0)[0] == [(101, 1.0), (102, 2.0), (103, 4.0), (105, 3.0)]


def test_an_empty_side_or_no_book_fills_nothing():
    b = Book(hand_tape([(0, 2, 0, 0, 0), (0, 1, 1, 99, 5), (1, 0, -1, 101, 1), (2, 0, -1, 101, 0), (3, 3, 1, 99, 1)]))
    assert b.touch(0, 1) == EMPTY and b.walk(0, 1, MARKET_BUY, 1.0) == ([], 0.0, TAKE_EXHAUSTED)  # row 0: no book
    assert b.walk(3, 1, MARKET_BUY, 1.0) == ([(101, 1.0)], 1.0, TAKE_FILLED)
    assert b.touch(4, 1) == EMPTY and b.walk(4, 1, MARKET_BUY, 1.0) == ([], 0.0, TAKE_EXHAUSTED)  # asks all gone
    assert b.walk(4, -1, MARKET_SELL, 1.0) == ([(99, 1.0)], 1.0, TAKE_FILLED)


def test_a_reset_before_the_row_clears_its_side_and_an_unsynced_book_fills_nothing():
    rows = BOOK + [(5, 2, -1, 0, 0), (6, 1, -1, 110, 2), (7, 0, 1, 96, 1)]
    b = Book(hand_tape(rows))
    n = len(BOOK)
    assert b.walk(n + 1, -1, MARKET_SELL, 1.0) == ([], 0.0, TAKE_EXHAUSTED)  # reset: unsynced until a snapshot
    assert b.walk(n + 2, 1, MARKET_BUY, 9.0) == ([(110, 2.0)], 2.0, TAKE_EXHAUSTED)  # 101..105 were cleared
    assert b.walk(n + 2, -1, MARKET_SELL, 20.0)[0] == [(99, 5.0), (98, 5.0), (97, 2.0)]  # bids were not reset
    assert b.walk(n + 3, -1, MARKET_SELL, 20.0)[0] == [(99, 5.0), (98, 5.0), (97, 2.0), (96, 1.0)]


def test_rows_from_the_row_on_are_not_visible():
    rows = BOOK + [(5, 0, -1, 101, 0), (6, 0, -1, 102, 7), (7, 0, -1, 100, 1)]
    b = Book(hand_tape(rows))
    n = len(BOOK)
    assert b.walk(n, 1, 102, 9.0)[0] == [(101, 1.0), (102, 2.0)]
    assert b.walk(n + 1, 1, 102, 9.0)[0] == [(102, 2.0)]
    assert b.walk(n + 2, 1, 102, 9.0)[0] == [(102, 7.0)]
    assert b.walk(n + 3, 1, 102, 9.0)[0] == [(100, 1.0), (102, 7.0)]


def test_depth_our_fills_took_is_not_taken_again_in_the_same_book_state():
    b = Book(hand_tape(BOOK + [(5, 0, -1, 110, 1)]))
    row, t = len(BOOK), Table()
    assert b.walk(row, 1, MARKET_BUY, 2.0, t) == ([(101, 1.0), (102, 1.0)], 2.0, TAKE_FILLED)
    assert t.n[0] == 2 and t.key[:2].tolist() == [level_key(-1, 101), level_key(-1, 102)]
    assert t.qty[:2].tolist() == [1.0, 1.0]
    # A what-if reads the table and leaves it as it was.
    assert b.walk(row, 1, MARKET_BUY, 2.0, t, commit=False) == ([(102, 1.0), (103, 1.0)], 2.0, TAKE_FILLED)
    assert t.n[0] == 2 and t.qty[:2].tolist() == [1.0, 1.0]
    assert b.walk(row, 1, MARKET_BUY, 2.0, t) == ([(102, 1.0), (103, 1.0)], 2.0, TAKE_FILLED)
    assert b.walk(row, -1, MARKET_SELL, 1.0, t) == ([(99, 1.0)], 1.0, TAKE_FILLED)  # one table serves both sides
    assert t.n[0] == 4
    t.n[0] = 0  # the next market row: the book state changed
    assert b.walk(row + 1, 1, MARKET_BUY, 2.0, t)[0] == [(101, 1.0), (102, 1.0)]


def test_float_dust_neither_fills_nor_stays_behind():
    b = Book(hand_tape([(0, 2, 0, 0, 0), (0, 1, 1, 99, 1), (0, 1, -1, 101, 0.3), (0, 1, -1, 102, 1), (5, 3, 1, 1, 1)]))
    t = Table()
    assert b.walk(4, 1, MARKET_BUY, 0.1, t)[0] == [(101, 0.1)]
    fills, filled, status = b.walk(4, 1, MARKET_BUY, 0.2, t)
    # 0.3 - 0.1 is a hair below 0.2: the level is used up, the order done, with no sliver from 102.
    assert fills == [(101, 0.3 - 0.1)] and status == TAKE_FILLED and filled == pytest.approx(0.2, rel=1e-15)
    assert t.qty[0] == 0.3  # recorded as used up
    assert b.walk(4, 1, MARKET_BUY, 0.5, t)[0] == [(102, 0.5)]


def test_full_outputs_and_a_full_table_stop_the_walk_and_say_so():
    b = Book(hand_tape(BOOK + [(5, 0, -1, 110, 1)]))
    row, t = len(BOOK), Table()
    assert b.walk(row, 1, MARKET_BUY, 9.0, t, cap=2) == ([(101, 1.0), (102, 2.0)], 3.0, TAKE_OUT_FULL)
    assert t.n[0] == 2  # only what was written was taken
    assert b.walk(row, 1, MARKET_BUY, 1.0, Table(), cap=1) == ([(101, 1.0)], 1.0, TAKE_FILLED)  # exactly full
    small = Table(1)
    assert b.walk(row, 1, MARKET_BUY, 9.0, small) == ([(101, 1.0)], 1.0, TAKE_TABLE_FULL)
    # A what-if needs no room.
    assert b.walk(row, 1, MARKET_BUY, 9.0, small, commit=False) == ([(102, 2.0), (103, 4.0), (105, 3.0)], 9.0,
                                                                     TAKE_FILLED)  # fmt: skip


def test_walk_cost_gives_slippage_against_the_touch_and_the_share_of_depth_taken():
    b = Book(hand_tape(BOOK + [(5, 0, -1, 110, 1)]))
    row = len(BOOK)
    fills, filled, _, avail = b.walk(row, 1, MARKET_BUY, 4.0, avail=True)
    assert fills == [(101, 1.0), (102, 2.0), (103, 1.0)] and avail.tolist() == [1.0, 2.0, 4.0]
    px, qs = np.array([p for p, _ in fills]), np.array([q for _, q in fills])
    slip, share = walk_cost(px, qs, avail, len(fills), 1, b.touch(row, 1))
    assert slip == pytest.approx(1.0) and share == pytest.approx(4 / 7)  # VWAP 102 against 101
    fills, _, _, avail = b.walk(row, -1, 98, 7.0, avail=True)
    px, qs = np.array([p for p, _ in fills]), np.array([q for _, q in fills])
    slip, share = walk_cost(px, qs, avail, len(fills), -1, b.touch(row, -1))
    assert slip == pytest.approx(2 / 7) and share == pytest.approx(0.7)  # VWAP (5*99 + 2*98)/7 against 99
    assert walk_cost(px, qs, avail, 0, -1, 99) == (0.0, 0.0)


# --- Random tapes against a book rebuilt row by row with grinder.book.l2 ---

PRICES = [7, 96, 97, 98, 99, 100, 101, 102, 103, 104, 900]  # near and far levels (the far ones: l2's overflow)
SIDES = st.sampled_from([1, -1])
LEVEL = st.tuples(st.sampled_from(PRICES), st.integers(1, 6))
SIDE_LEVELS = st.lists(LEVEL, min_size=1, max_size=8)  # one side of the first snapshot
SNAPSHOT = st.tuples(st.just(1), SIDES, st.sampled_from(PRICES), st.integers(1, 6))
DIFF = st.tuples(st.just(0), SIDES, st.sampled_from(PRICES), st.integers(0, 6))  # 0 deletes the level
RESET = st.tuples(st.just(2), st.sampled_from([1, -1, 0]), st.just(0), st.just(0))
TRADE = st.tuples(st.just(3), SIDES, st.sampled_from(PRICES), st.integers(1, 3))
ROWS = st.one_of(SNAPSHOT, SNAPSHOT, SNAPSHOT, DIFF, DIFF, DIFF, DIFF, RESET, TRADE)  # mostly a synced book that moves
# A walk: its side, limit (an offset from the touch in ticks, or None for a market order) and two
# quantities wanted in a row (quarters: the arithmetic is exact, so fills compare exactly).
WALKS = st.tuples(SIDES, st.one_of(st.none(), st.integers(-1, 8)), st.integers(1, 60), st.integers(1, 60))


def reference_book(t, row):
    """The l2 book after rows [0, row) (a small window: far levels in overflow), and whether it is synced."""
    hdr, wq, ok, oq = new_book(64, 4)
    synced = False
    for i in range(row):
        ok, oq = apply_row(hdr, wq, ok, oq, t.kind[i], t.side[i], t.price_ticks[i], t.qty[i])
        synced = True if t.kind[i] == 1 else False if t.kind[i] == 2 else synced
    return (hdr, wq, ok, oq), synced


def reference_walk(book, side, limit, want, taken):
    """Fills of a walk over the l2 book's levels best first, `taken` the depth earlier walks took."""
    s = ASK if side > 0 else BID
    fills, rem, d = [], want, 0
    while rem > 0:
        px, q = level(*book, s, d)
        d += 1
        if px == EMPTY or (side > 0 and px > limit) or (side < 0 and px < limit):
            break
        avail = q - taken.get(px, 0.0)
        if avail <= 0:
            continue
        take = min(avail, rem)
        fills.append((int(px), float(take)))
        taken[px] = taken.get(px, 0.0) + take
        rem -= take
    return fills


@settings(max_examples=150)
@given(SIDE_LEVELS, SIDE_LEVELS, st.lists(ROWS, max_size=40), st.data())
def test_walks_match_a_book_built_row_by_row(bids, asks, rows, data):
    # A reset, a snapshot (maybe crossed), then anything.
    rows = [(2, 0, 0, 0), *((1, 1, p, q) for p, q in bids), *((1, -1, p, q) for p, q in asks), *rows]
    t = hand_tape([(i, k, s, p, q / 2) for i, (k, s, p, q) in enumerate(rows)])
    whole = Book(t)
    n = len(t)
    after_snapshot = 1 + len(bids) + len(asks)
    row = data.draw(st.integers(after_snapshot, n) | st.integers(0, n), "row")
    start = data.draw(st.integers(0, row), "chunk start")
    # The same walks on a chunk of the tape from `start`, starting from the book rows [0, start) left.
    book, _ = reference_book(t, start)
    chunk = Book(t, start, book_levels(*book) if start else (NO_KEYS, NO_QTY))
    book, synced = reference_book(t, row)
    for side, offset, want1, want2 in data.draw(st.lists(WALKS, min_size=1, max_size=3), "walks"):
        s = ASK if side > 0 else BID
        touch = best_ticks(book[0], s) if synced else EMPTY
        assert whole.touch(row, side) == touch
        if offset is None:
            limit = MARKET_BUY if side > 0 else MARKET_SELL
        else:
            limit = (touch if touch != EMPTY else 100) + side * offset
        taken = {}
        tables = Table(), Table()
        for want in (want1 / 4, want2 / 4):  # two walks in one book state
            expected = reference_walk(book, side, limit, want, taken) if touch != EMPTY else []
            filled = sum(q for _, q in expected)
            status = TAKE_FILLED if filled == want else TAKE_EXHAUSTED
            for b, table in zip((whole, chunk), tables, strict=True):
                assert b.walk(row, side, limit, want, table) == (expected, filled, status)


def test_walks_on_the_real_sample_match_its_book():
    """Binance levels reach far from the market (the index hashes its keys): 64 levels deep, both sides."""
    from grinder.data.tape import load_tape
    from grinder.sim.backtest import corrected_local_times

    t = load_tape(REPO / "data" / "sample" / "lake", "binance-usdm", "BTCUSDT")
    b = Book(t, local=corrected_local_times(t))
    queries = set(np.random.default_rng(3).choice(len(t), 40, replace=False).tolist())
    hdr, wq, ok, oq = new_book()
    walked = 0
    for i in range(len(t)):
        if i in queries and b.rep.synced[i - 1]:
            for side, s in ((1, ASK), (-1, BID)):
                deep = [level(hdr, wq, ok, oq, s, d) for d in range(64)]
                assert b.walk(i, side, MARKET_BUY if side > 0 else MARKET_SELL, 1e9, Table(64), cap=64) == (
                    [(int(p), float(q)) for p, q in deep], sum(q for _, q in deep), TAKE_OUT_FULL)  # fmt: skip
                touch = b.touch(i, side)
                limit = touch + side * 20
                near = [(int(p), float(q)) for p, q in deep if (p - limit) * side <= 0]
                fills, filled, status = b.walk(i, side, limit, 1e9, Table(64), cap=64)
                assert (fills, status) == (near, TAKE_EXHAUSTED) and filled == pytest.approx(sum(q for _, q in near))
                walked += 1
        if t.kind[i] != 3:
            ok, oq = apply_row(hdr, wq, ok, oq, t.kind[i], t.side[i], t.price_ticks[i], t.qty[i])
    assert walked >= 60
