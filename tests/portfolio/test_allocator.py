"""The drawdown allocator: known answers, then invariants (bounds, monotone in drawdown, causal, no redistribution)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from pydantic import ValidationError

from grinder.errors import ConfigError, DataError
from grinder.portfolio.allocator import (
    DrawdownRule,
    allocate,
    base_budgets,
    budget_fraction,
    combine,
    drawdown_budgets,
)
from grinder.portfolio.curves import drawdown

RULE = DrawdownRule(max_drawdown=0.2, floor=0.0)


def test_base_budgets_equal_or_weighted():
    assert base_budgets(900.0, 3).tolist() == [300.0, 300.0, 300.0]
    assert base_budgets(1000.0, 3, np.array([1.0, 3.0, 0.0])).tolist() == [250.0, 750.0, 0.0]
    with pytest.raises(ConfigError, match="total budget must be a positive number"):
        base_budgets(0.0, 2)
    with pytest.raises(ConfigError, match="one number per symbol"):
        base_budgets(1.0, 2, np.array([1.0]))
    with pytest.raises(ConfigError, match="not all zero"):
        base_budgets(1.0, 2, np.array([0.0, 0.0]))
    with pytest.raises(ConfigError, match="non-negative"):
        base_budgets(1.0, 2, np.array([-1.0, 2.0]))


def test_budget_fraction_is_linear_down_to_the_floor():
    dd = np.array([0.0, 0.05, 0.1, 0.2, 0.5, -0.1])
    assert budget_fraction(dd, RULE) == pytest.approx([1.0, 0.75, 0.5, 0.0, 0.0, 1.0])
    assert budget_fraction(dd, DrawdownRule(max_drawdown=0.2, floor=0.25)) == pytest.approx(
        [1.0, 0.75, 0.5, 0.25, 0.25, 1.0]
    )
    with pytest.raises(ValidationError, match="max_drawdown"):
        DrawdownRule(max_drawdown=0)
    with pytest.raises(ValidationError, match="floor"):
        DrawdownRule(floor=1.5)


def test_known_budgets_and_portfolio():
    # Two symbols, 1000 quote: 500 each. A rises to 10, falls to -40 (drawdown 50 = 10 % of 500), recovers.
    eq = np.array([[0.0, 0.0], [10.0, -20.0], [-40.0, -20.0], [20.0, 30.0], [0.0, 30.0]])
    p = allocate(eq, 1000.0, RULE)
    assert p.base.tolist() == [500.0, 500.0]
    # B: drawdown 20 = 4 % of 500 -> 80 %; it never recovers its peak of 0 until row 3.
    assert p.budgets[:, 0] == pytest.approx([500.0, 500.0, 250.0, 500.0, 400.0])
    assert p.budgets[:, 1] == pytest.approx([500.0, 400.0, 400.0, 500.0, 500.0])
    # Increments times the budget fraction set one row earlier.
    a = np.cumsum([0.0, 10.0 * 1.0, -50.0 * 1.0, 60.0 * 0.5, -20.0 * 1.0])
    b = np.cumsum([0.0, -20.0 * 1.0, 0.0 * 0.8, 50.0 * 0.8, 0.0 * 1.0])
    assert p.symbol_equity[:, 0] == pytest.approx(a)
    assert p.symbol_equity[:, 1] == pytest.approx(b)
    assert p.equity == pytest.approx(a + b)
    assert p.drawdown == pytest.approx(np.maximum.accumulate(a + b) - (a + b))
    assert p.max_drawdown == pytest.approx(60.0)  # peak 0 at row 0, -60 at row 2
    assert p.equity[0] == 0.0


def test_weights_set_base_budgets_and_drawdown_is_read_against_them():
    eq = np.array([[0.0, 0.0], [-10.0, -10.0]])
    b = drawdown_budgets(eq, 1000.0, DrawdownRule(max_drawdown=0.1), weights=np.array([0.9, 0.1]))
    # A: 10 of 900 -> 1.1 % of 10 %; B: 10 of 100 -> the whole 10 %.
    assert b[1] == pytest.approx([900.0 * (1 - (10 / 900) / 0.1), 0.0])


def test_a_symbol_with_zero_weight_adds_nothing():
    eq = np.array([[0.0, 0.0], [5.0, 100.0], [7.0, -50.0]])
    p = allocate(eq, 100.0, RULE, weights=np.array([1.0, 0.0]))
    assert p.budgets[:, 1].tolist() == [0.0, 0.0, 0.0]
    assert p.symbol_equity[:, 1].tolist() == [0.0, 0.0, 0.0]
    assert p.equity == pytest.approx([0.0, 5.0, 7.0])


def test_bad_input_is_a_clear_error():
    with pytest.raises(DataError, match="2-D"):
        drawdown_budgets(np.zeros(3), 1.0)
    with pytest.raises(DataError, match="NaN or infinite"):
        drawdown_budgets(np.array([[0.0], [np.nan]]), 1.0)
    with pytest.raises(DataError, match="must match equity"):
        combine(np.zeros((3, 2)), np.zeros((3, 1)), np.ones(2))
    with pytest.raises(DataError, match="non-negative"):
        combine(np.zeros((2, 1)), -np.ones((2, 1)), np.ones(1))


# ---- invariants ----

curves = st.integers(1, 40).flatmap(
    lambda t: st.integers(1, 5).flatmap(
        lambda n: arrays(np.float64, (t, n), elements=st.floats(-1e4, 1e4, allow_nan=False, allow_subnormal=False))
    )
)
rules = st.builds(DrawdownRule, max_drawdown=st.floats(1e-3, 2.0), floor=st.floats(0.0, 1.0))
totals = st.floats(1.0, 1e7)


@settings(max_examples=300, deadline=None)
@given(curves, totals, rules)
def test_budgets_are_bounded(eq, total, rule):
    b = drawdown_budgets(eq, total, rule)
    base = total / eq.shape[1]
    assert (b >= 0).all()
    assert (b <= base * (1 + 1e-12)).all()
    assert (b >= rule.floor * base * (1 - 1e-12)).all()
    assert (b.sum(axis=1) <= total * (1 + 1e-12)).all()
    assert b[0] == pytest.approx(np.full(eq.shape[1], base))  # no drawdown yet at the first grid time


@settings(max_examples=300, deadline=None)
@given(curves, totals, rules)
def test_budget_is_non_increasing_in_the_symbols_drawdown(eq, total, rule):
    b = drawdown_budgets(eq, total, rule)
    dd = drawdown(eq)
    for j in range(eq.shape[1]):
        order = np.lexsort((b[:, j], dd[:, j]))  # by drawdown, then budget: equal drawdowns need equal budgets
        assert (np.diff(b[order, j]) <= 1e-9 * total).all()


@settings(max_examples=300, deadline=None)
@given(curves, totals, rules, st.data())
def test_future_equity_changes_nothing_before_it(eq, total, rule, data):
    t = data.draw(st.integers(0, eq.shape[0] - 1))
    future = data.draw(arrays(np.float64, eq[t + 1 :].shape, elements=st.floats(-1e4, 1e4, allow_nan=False)))
    changed = eq.copy()
    changed[t + 1 :] = future
    p, q = allocate(eq, total, rule), allocate(changed, total, rule)
    assert np.array_equal(p.budgets[: t + 1], q.budgets[: t + 1])
    assert np.array_equal(p.equity[: t + 1], q.equity[: t + 1])
    assert np.array_equal(p.drawdown[: t + 1], q.drawdown[: t + 1])


@settings(max_examples=200, deadline=None)
@given(curves, totals, rules, st.data())
def test_budgets_freed_by_one_symbol_go_nowhere(eq, total, rule, data):
    j = data.draw(st.integers(0, eq.shape[1] - 1))
    other = eq.copy()
    other[:, j] = data.draw(arrays(np.float64, eq.shape[0], elements=st.floats(-1e4, 1e4, allow_nan=False)))
    b, c = drawdown_budgets(eq, total, rule), drawdown_budgets(other, total, rule)
    keep = np.arange(eq.shape[1]) != j
    assert np.array_equal(b[:, keep], c[:, keep])


@settings(max_examples=200, deadline=None)
@given(curves, totals)
def test_a_floor_of_one_keeps_full_size(eq, total):
    p = allocate(eq, total, DrawdownRule(floor=1.0))
    assert p.equity == pytest.approx((eq - eq[0]).sum(axis=1), abs=1e-6)
    assert (p.drawdown >= 0).all() and p.equity[0] == 0.0
