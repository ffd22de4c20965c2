"""Ledger arithmetic (linear and inverse) by hand, and its invariants over random fill sequences."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from grinder.core.ledger import AVG_ENTRY, CASH, FEES, POSITION, REALIZED, book_fill, equity, new_ledger, unrealized


def test_linear_round_trip_by_hand():
    led = new_ledger()
    fee = book_fill(led, 1, 100.0, 2.0, 0.001, False, 1.0)
    assert fee == pytest.approx(0.2) and led[POSITION] == 2.0 and led[AVG_ENTRY] == 100.0 and led[CASH] == -200.0
    book_fill(led, 1, 110.0, 2.0, 0.0, False, 1.0)
    assert led[AVG_ENTRY] == pytest.approx(105.0)
    assert unrealized(led, 120.0, False, 1.0) == pytest.approx(60.0)
    book_fill(led, -1, 120.0, 6.0, 0.0, False, 1.0)  # sell 4 closes at +15 each, 2 more open a short at 120
    assert led[REALIZED] == pytest.approx(60.0) and led[POSITION] == -2.0 and led[AVG_ENTRY] == 120.0
    assert equity(led, 120.0, 1.5, False, 1.0) == pytest.approx(60.0 - 0.2 - 1.5)


def test_inverse_round_trip_by_hand():
    # 1000 contracts of 100 USD: long at 20,000, sold at 25,000 -> 100,000 x (1/20,000 - 1/25,000) = 1 BTC.
    led = new_ledger()
    fee = book_fill(led, 1, 20_000.0, 1000.0, 0.0005, True, 100.0)
    assert fee == pytest.approx(5.0 * 0.0005)  # 100,000 USD = 5 BTC notional
    assert unrealized(led, 25_000.0, True, 100.0) == pytest.approx(1.0)
    book_fill(led, 1, 30_000.0, 1000.0, 0.0, True, 100.0)
    # Average entry of an inverse position is harmonic: 2000 / (1000/20k + 1000/30k) = 24,000.
    assert led[AVG_ENTRY] == pytest.approx(24_000.0)
    book_fill(led, -1, 24_000.0, 2000.0, 0.0, True, 100.0)
    assert led[REALIZED] == pytest.approx(0.0, abs=1e-12) and led[POSITION] == 0.0
    # A short gains coin when the price falls.
    book_fill(led, -1, 25_000.0, 1000.0, 0.0, True, 100.0)
    assert unrealized(led, 20_000.0, True, 100.0) == pytest.approx(100_000 * (1 / 20_000 - 1 / 25_000))


fills = st.lists(st.tuples(st.sampled_from([1, -1]), st.integers(1, 2000), st.integers(1, 50)), min_size=1, max_size=60)


@settings(max_examples=200, deadline=None)
@given(fills=fills, mark=st.integers(500, 2000), inverse=st.booleans())
def test_cash_plus_marked_position_is_realized_plus_unrealized(fills, mark, inverse):
    cs = 10.0 if inverse else 1.0
    led = new_ledger()
    pos = 0.0
    fees = 0.0
    for side, px_ticks, lots in fills:
        px, qty = px_ticks * 0.5 + 100.0, lots * 0.25
        fees += book_fill(led, side, px, qty, 0.0002, inverse, cs)
        pos += side * qty
    mark_px = mark * 0.5 + 100.0
    assert led[POSITION] == pytest.approx(pos, abs=1e-9)
    assert led[FEES] == pytest.approx(fees)
    marked = led[CASH] + (-pos * cs / mark_px if inverse else pos * mark_px)
    assert marked == pytest.approx(led[REALIZED] + unrealized(led, mark_px, inverse, cs), rel=1e-9, abs=1e-7)
    assert equity(led, mark_px, 0.0, inverse, cs) == pytest.approx(marked - fees, rel=1e-9, abs=1e-7)
    # The average entry of an open position lies within the prices that built it.
    if led[POSITION] != 0.0:
        prices = [p * 0.5 + 100.0 for _, p, _ in fills]
        assert min(prices) - 1e-9 <= led[AVG_ENTRY] <= max(prices) + 1e-9


@settings(max_examples=100, deadline=None)
@given(fills=fills, inverse=st.booleans())
def test_closing_everything_realizes_all_of_the_pnl(fills, inverse):
    cs = 10.0 if inverse else 1.0
    led = new_ledger()
    for side, px_ticks, lots in fills:
        book_fill(led, side, px_ticks * 0.5 + 100.0, lots * 0.25, 0.0, inverse, cs)
    if led[POSITION] != 0.0:
        book_fill(led, -1 if led[POSITION] > 0 else 1, 321.0, abs(led[POSITION]), 0.0, inverse, cs)
    assert led[POSITION] == 0.0
    assert led[CASH] == pytest.approx(led[REALIZED], rel=1e-9, abs=1e-7)
    assert np.isfinite(led).all()
