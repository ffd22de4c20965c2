"""Queue-position models: how much resting quantity is ahead of our order at its price level.

Each model keeps one float per order (`front`, base units ahead of us) and, for the
probabilistic model, the trade quantity seen at the level since the last depth change
(`cum_trade`). Quantities are base units; an order fills when `front` drops below zero by at
least half a lot (the same rounding rule as hftbacktest).
"""

from __future__ import annotations

from numba import njit

RISK_AVERSE = 0  # only trades at our price advance us; depth drops never help
PROB_POWER = 1  # a depth drop advances us with probability f(back) / (f(back) + f(front)), f(x) = x**n


@njit(cache=True, inline="always")
def on_trade(front: float, cum_trade: float, trade_qty: float) -> tuple[float, float]:
    """A trade at our price consumes the queue ahead of us."""
    return front - trade_qty, cum_trade + trade_qty


@njit(cache=True)
def on_depth(model: int, n: float, front: float, cum_trade: float, prev_qty: float, new_qty: float):
    """Level quantity changed from prev_qty to new_qty (base units); returns (front, cum_trade)."""
    if model == RISK_AVERSE:
        return min(front, new_qty), cum_trade
    # Trades at the level already moved us: do not count the same decrease twice.
    chg = prev_qty - new_qty - cum_trade
    if chg < 0.0:
        return min(front, new_qty), 0.0
    back = prev_qty - front
    fb = max(back, 0.0) ** n
    ff = max(front, 0.0) ** n
    prob = fb / (fb + ff) if fb + ff > 0.0 else 1.0
    est = front - (1.0 - prob) * chg + min(back - prob * chg, 0.0)
    return min(est, new_qty), 0.0


@njit(cache=True, inline="always")
def filled_qty(front: float, lot_size: float) -> float:
    """Quantity (base units) the queue model says has traded through our order, in whole lots."""
    if round(front / lot_size) < 0.0:
        return (-front // lot_size) * lot_size
    return 0.0
