"""Drawdown allocator: per-symbol budgets that shrink as each symbol's drawdown deepens, and the portfolio they give.

Rule (decision 009): symbol i has a base budget b_i (the total split equally, or by weights). At
grid time t its drawdown d_i(t) is its running peak equity minus its equity, both since the first
grid time, read on its own full-size backtest curve; its budget is
b_i * max(floor, 1 - d_i(t) / (max_drawdown * b_i)). Budgets only shrink below the base and what a
symbol gives up is not handed to the others, so the sum never exceeds the total.

Portfolio: a backtest ran at one fixed size, taken to be the size of its base budget. A symbol's
allocated equity accrues each increment of that curve times budget / base in force before it
(the budget set at the previous grid time): PnL is assumed to scale linearly with size, and the
resizing between grid times to cost nothing (docs/portfolio.md says where that breaks).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from grinder.errors import ConfigError, DataError
from grinder.portfolio.curves import drawdown


class DrawdownRule(BaseModel):
    """How budgets shrink with drawdown: both as fractions of the symbol's base budget."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_drawdown: float = Field(0.2, gt=0, description="drawdown, fraction of base budget, where the budget hits floor")
    floor: float = Field(0.0, ge=0, le=1, description="fraction of its base budget a symbol always keeps")


@dataclass(frozen=True)
class Portfolio:
    """Budgets and equity of a drawdown-allocated portfolio on a time grid (T times, N symbols; quote currency)."""

    base: np.ndarray  # (N,) full budget of each symbol
    budgets: np.ndarray  # (T, N) budget in force at each grid time
    symbol_equity: np.ndarray  # (T, N) each symbol's PnL at its allocated size since the first grid time
    equity: np.ndarray  # (T,) portfolio PnL since the first grid time
    drawdown: np.ndarray  # (T,) running peak of `equity` minus `equity`

    @property
    def max_drawdown(self) -> float:
        """Deepest portfolio drawdown, quote currency."""
        return float(self.drawdown.max())


def _matrix(equity: np.ndarray, what: str = "equity") -> np.ndarray:
    a = np.asarray(equity, np.float64)
    if a.ndim != 2 or a.shape[0] < 1 or a.shape[1] < 1:
        raise DataError(f"{what} must be a 2-D (time x symbol) array with at least one row and column, got {a.shape}")
    if not np.isfinite(a).all():
        raise DataError(f"{what} has NaN or infinite values (align curves first: grinder.portfolio.curves)")
    return a


def base_budgets(total: float, n: int, weights: np.ndarray | None = None) -> np.ndarray:
    """Each of n symbols' full budget, quote: `total` split equally, or in proportion to non-negative `weights`."""
    if not (np.isfinite(total) and total > 0):
        raise ConfigError(f"total budget must be a positive number (quote currency), got {total}")
    if weights is None:
        return np.full(n, total / n)
    w = np.asarray(weights, np.float64)
    if w.shape != (n,):
        raise ConfigError(f"weights must hold one number per symbol ({n}), got shape {w.shape}")
    if not np.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
        raise ConfigError(f"weights must be finite, non-negative and not all zero, got {w.tolist()}")
    return total * w / w.sum()


def budget_fraction(dd_frac: np.ndarray, rule: DrawdownRule) -> np.ndarray:
    """Fraction of its base budget a symbol keeps at drawdown `dd_frac` (fraction of base): 1 at 0, linear to floor."""
    return np.maximum(rule.floor, 1.0 - np.maximum(dd_frac, 0.0) / rule.max_drawdown)


def drawdown_budgets(
    equity: np.ndarray, total: float, rule: DrawdownRule | None = None, weights: np.ndarray | None = None
) -> np.ndarray:
    """(time x symbol) budgets, quote, from full-size equity curves (settle = quote currency) on one grid.

    Causal: row t reads equity rows 0..t only. Each column depends on its own curve only.
    """
    rule = DrawdownRule() if rule is None else rule
    eq = _matrix(equity)
    base = base_budgets(total, eq.shape[1], weights)
    dd = drawdown(eq)
    with np.errstate(divide="ignore", invalid="ignore"):
        frac = np.where(base > 0, dd / base, 0.0)
    return base * budget_fraction(frac, rule)


def combine(equity: np.ndarray, budgets: np.ndarray, base: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(symbol equity (T, N), portfolio equity (T,)): increments of full-size curves times budget / base before them.

    Row 0 is 0 (PnL counts from the first grid time); the increment from t-1 to t is scaled by the
    budget set at t-1, which is all that was known when that step began. Symbols with base 0 add nothing.
    """
    eq = _matrix(equity)
    bud = _matrix(budgets, "budgets")
    base = np.asarray(base, np.float64)
    if bud.shape != eq.shape or base.shape != (eq.shape[1],):
        raise DataError(f"budgets {bud.shape} and base {base.shape} must match equity {eq.shape}")
    if (bud < 0).any() or (base < 0).any() or not np.isfinite(base).all():
        raise DataError("budgets and base budgets must be finite and non-negative")
    with np.errstate(divide="ignore", invalid="ignore"):
        scale = np.where(base > 0, bud / base, 0.0)
    scaled = np.zeros_like(eq)
    scaled[1:] = np.cumsum(np.diff(eq, axis=0) * scale[:-1], axis=0)
    return scaled, scaled.sum(axis=1)


def allocate(
    equity: np.ndarray, total: float, rule: DrawdownRule | None = None, weights: np.ndarray | None = None
) -> Portfolio:
    """Drawdown budgets for full-size curves `equity` (time x symbol, quote) and the portfolio they give."""
    eq = _matrix(equity)
    base = base_budgets(total, eq.shape[1], weights)
    budgets = drawdown_budgets(eq, total, rule, weights)
    sym, port = combine(eq, budgets, base)
    return Portfolio(base, budgets, sym, port, drawdown(port))
