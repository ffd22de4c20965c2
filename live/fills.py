"""The fills an order update from the user stream reports, each with its price and the commission the venue charged.

ccxt.pro's binanceusdm keeps each order's trades (`order["trades"]`: id, price, amount, fee) as
ORDER_TRADE_UPDATE events arrive, so an update read late, after several fills, still lists every
one. An order ccxt did not hold when its fill arrived (its NEW event was missed), and the paper
client, which hands over one update per event, carry no trades: the update's own last fill
stands for them (Binance's `t` trade id, `L` price, `l` quantity, `n` / `N` commission). Fills
are named by trade id, so the caller books each once however often an order is reported.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Fill:
    """One trade of an order of ours: price quote per base, qty base units (or contracts), commission."""

    trade_id: str
    price: float
    qty: float
    fee: float  # commission charged, in `fee_currency`
    fee_currency: str | None


def fills_of(order: dict) -> list[Fill]:
    """The fills an order update (a ccxt order dict from watch_orders) reports, oldest first."""
    trades = order.get("trades") or []
    if trades:
        return [Fill(str(t["id"]), float(t["price"]), float(t["amount"]), *_fee(t.get("fee"))) for t in trades]
    info = order.get("info") or {}
    qty = float(info.get("l") or 0.0)
    if info.get("x") != "TRADE" or qty <= 0.0:
        return []
    # The raw commission: ccxt's parsed `fee` drops one that is not above 0 (a maker rebate).
    fee = float(info.get("n") or 0.0)
    return [Fill(str(info.get("t")), float(info["L"]), qty, fee, info.get("N") if fee else None)]


def _fee(fee: dict | None) -> tuple[float, str | None]:
    if not fee or fee.get("cost") is None:
        return 0.0, None
    return float(fee["cost"]), fee.get("currency")
