"""The ledger of one instrument: position, average entry, realized PnL, fees, cash — linear or inverse.

Shared by the backtest engine and the live adapter, so both book a fill the same way. State is a
float64 array (layout below) the caller keeps. Money is in the settle currency: quote for linear
contracts (USDT-M: PnL in USDT), base for inverse ones (COIN-M: a contract is worth
`contract_size` quote and PnL is in the coin). Quantities are base units for linear contracts and
contracts for inverse ones; prices are quote per base.

The value of a signed quantity q at price p is q * p (linear) or -q * contract_size / p (inverse):
an inverse long loses coin value as the price rises in coin terms, which is what makes its PnL
q * contract_size * (1 / entry - 1 / exit). With it, cash moves by -value(q, p) on a fill, and
cash + value(position, mark) = realized + unrealized at every moment; equity subtracts fees and
funding.
"""

from __future__ import annotations

import numpy as np
from numba import njit

POSITION, AVG_ENTRY, REALIZED, FEES, CASH, VOLUME, N_FILLS = range(7)
LEDGER_SIZE = 7


def new_ledger() -> np.ndarray:
    """A flat ledger: no position, no PnL."""
    return np.zeros(LEDGER_SIZE)


@njit(cache=True, inline="always")
def value(q: float, price: float, inverse: bool, contract_size: float) -> float:
    """Value of a signed quantity at `price`, settle currency (see the module docstring)."""
    if inverse:
        return -q * contract_size / price
    return q * price


@njit(cache=True, inline="always")
def notional(q: float, price: float, inverse: bool, contract_size: float) -> float:
    """Signed notional of q at price, settle currency: what fees and funding are charged on."""
    if inverse:
        return q * contract_size / price
    return q * price


@njit(cache=True, inline="always")
def quote_notional(q: float, price: float, inverse: bool, contract_size: float) -> float:
    """Signed notional in quote currency: what the venue's minimum-notional and gate limits read."""
    if inverse:
        return q * contract_size
    return q * price


@njit(cache=True, _nrt=False)
def book_fill(led, side: int, price: float, qty: float, fee_rate: float, inverse: bool, contract_size: float) -> float:
    """Book one fill (side +1 buy / -1 sell, price quote per base, qty > 0); returns its fee."""
    q = qty if side > 0 else -qty
    pos = led[POSITION]
    fee = abs(notional(qty, price, inverse, contract_size)) * fee_rate
    led[CASH] -= value(q, price, inverse, contract_size)
    led[FEES] += fee
    led[VOLUME] += abs(quote_notional(qty, price, inverse, contract_size))
    led[N_FILLS] += 1.0
    if pos == 0.0 or (pos > 0.0) == (q > 0.0):
        # Opening or adding: the average entry is weighted in the contract's own price space
        # (price for linear, 1/price for inverse), so realized PnL below is exact.
        new = pos + q
        if inverse:
            led[AVG_ENTRY] = abs(new) / (abs(pos) / led[AVG_ENTRY] + abs(q) / price) if pos != 0.0 else price
        else:
            led[AVG_ENTRY] = (abs(pos) * led[AVG_ENTRY] + abs(q) * price) / abs(new)
        led[POSITION] = new
        return fee
    closed = min(abs(q), abs(pos))
    sgn = 1.0 if pos > 0.0 else -1.0
    led[REALIZED] += sgn * (
        value(closed, price, inverse, contract_size) - value(closed, led[AVG_ENTRY], inverse, contract_size)
    )
    new = pos + q
    if abs(new) < 1e-12 * max(abs(pos), abs(q)):
        new = 0.0
    led[POSITION] = new
    if new == 0.0:
        led[AVG_ENTRY] = 0.0
    elif (new > 0.0) != (pos > 0.0):
        led[AVG_ENTRY] = price  # flipped through flat: the remainder opened at this fill
    return fee


@njit(cache=True, inline="always")
def unrealized(led, mark: float, inverse: bool, contract_size: float) -> float:
    """PnL of the open position marked at `mark`, settle currency."""
    pos = led[POSITION]
    if pos == 0.0:
        return 0.0
    return value(pos, mark, inverse, contract_size) - value(pos, led[AVG_ENTRY], inverse, contract_size)


@njit(cache=True, inline="always")
def equity(led, mark: float, funding_paid: float, inverse: bool, contract_size: float) -> float:
    """Cash plus the position marked at `mark`, minus fees and funding paid (settle currency)."""
    m = value(led[POSITION], mark, inverse, contract_size) if led[POSITION] != 0.0 else 0.0
    return led[CASH] + m - led[FEES] - funding_paid


@njit(cache=True, _nrt=False)
def gate_inputs(led, best_bid_ticks: int, best_ask_ticks: int, empty: int, tick: float, funding_paid: float,
                inverse: bool, contract_size: float) -> tuple[float, float, float]:  # fmt: skip
    """(mid, equity, unit notional) a decision's gates read, computed one way for the backtest and live.

    The mid is quote per base from the best bid and ask in ticks (0.0 without both sides, `empty` marks
    a missing side). Equity is `equity` marked at the mid, or without a mid realized PnL less fees and
    funding (settle currency). The unit notional is the quote value of one unit of position: the mid
    for linear contracts, the contract size for inverse ones.
    """
    if best_bid_ticks == empty or best_ask_ticks == empty:
        return 0.0, led[REALIZED] - led[FEES] - funding_paid, contract_size if inverse else 0.0
    mid = (best_bid_ticks + best_ask_ticks) * 0.5 * tick
    return mid, equity(led, mid, funding_paid, inverse, contract_size), contract_size if inverse else mid
