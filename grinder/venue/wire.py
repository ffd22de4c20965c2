"""Binance USDT-M futures JSON for one instrument, as the venue prints it (docs/venue-protocol.md).

Prices and quantities are decimal strings with the instrument's precision; times are
milliseconds. The emulator's server sends these over HTTP and WebSocket; paper mode
(`live.paper`) hands the same dicts to ccxt's own parsers, so both look to the adapter exactly
like the real venue.
"""

from __future__ import annotations

import numpy as np

from grinder.book.l2 import EMPTY
from grinder.data.instruments import Instrument
from grinder.venue.exchange import Exchange, Order, OrderEvent

SIDE = {1: "BUY", -1: "SELL"}


def ms(ns: int) -> int:
    """Nanoseconds to the venue's milliseconds."""
    return int(ns // 1_000_000)


def decimals_of(step: float) -> int:
    """Digits after the point a price or quantity step needs (0.1 -> 1, 0.001 -> 3, 1 -> 0)."""
    return max(0, -int(np.floor(np.log10(step) + 1e-9)))


class Wire:
    """The venue's JSON for one instrument's prices, quantities, orders, positions and account."""

    def __init__(self, inst: Instrument):
        self.inst = inst
        self.decimals = decimals_of(inst.tick_size)
        self.qty_decimals = decimals_of(inst.lot_size)

    def px(self, ticks: int) -> str:
        """A price in ticks as the venue prints it."""
        return f"{ticks * self.inst.tick_size:.{self.decimals}f}"

    def qty(self, q: float) -> str:
        """A quantity (base units) as the venue prints it."""
        return f"{q:.{self.qty_decimals}f}"

    def order_price(self, o: Order) -> str:
        """An order's limit price as the venue prints it ("0" for a market order)."""
        return "0" if o.type == "MARKET" else self.px(o.price_ticks)

    def order(self, o: Order) -> dict:
        """An order as REST returns it (create, cancel, query, open orders)."""
        avg = o.quote_filled / o.filled if o.filled > 0 else 0.0
        return {
            "orderId": o.order_id, "symbol": self.inst.symbol, "status": o.status, "clientOrderId": o.client_id,
            "price": self.order_price(o), "avgPrice": f"{avg:.{self.decimals + 2}f}", "origQty": self.qty(o.qty),
            "executedQty": self.qty(o.filled), "cumQty": self.qty(o.filled), "cumQuote": f"{o.quote_filled:.8f}",
            "timeInForce": o.tif, "type": o.type, "reduceOnly": o.reduce_only, "closePosition": False,
            "side": SIDE[o.side], "positionSide": "BOTH", "stopPrice": "0", "workingType": "CONTRACT_PRICE",
            "priceProtect": False, "origType": o.type, "priceMatch": "NONE", "selfTradePreventionMode": "NONE",
            "goodTillDate": 0, "time": ms(o.created_ns), "updateTime": ms(o.updated_ns),
        }  # fmt: skip

    def order_update(self, ev: OrderEvent) -> dict:
        """The user stream's ORDER_TRADE_UPDATE for one order event."""
        o = ev.order
        avg = ev.quote_filled / ev.filled if ev.filled > 0 else 0.0
        return {"e": "ORDER_TRADE_UPDATE", "E": ms(ev.ts_ns), "T": ms(ev.ts_ns), "o": {
            "s": self.inst.symbol, "c": o.client_id, "S": SIDE[o.side], "o": o.type, "f": o.tif,
            "q": self.qty(o.qty), "p": self.order_price(o), "ap": f"{avg:.{self.decimals + 2}f}", "sp": "0",
            "x": ev.exec_type, "X": ev.status, "i": o.order_id, "l": self.qty(ev.last_qty), "z": self.qty(ev.filled),
            "L": self.px(ev.last_price_ticks) if ev.last_qty else "0", "n": f"{ev.fee:.8f}", "N": "USDT",
            "T": ms(ev.ts_ns), "t": ev.trade_id, "b": "0", "a": "0", "m": not o.takes, "R": o.reduce_only,
            "wt": "CONTRACT_PRICE", "ot": o.type, "ps": "BOTH", "cp": False, "rp": f"{ev.realized:.8f}",
            "pP": False, "si": 0, "ss": 0}}  # fmt: skip

    def account_update(self, x: Exchange, ts_ns: int) -> dict:
        """The user stream's ACCOUNT_UPDATE after a fill: wallet and the symbol's position."""
        pos, entry, realized = x.position()
        wb = f"{x.wallet():.8f}"
        return {"e": "ACCOUNT_UPDATE", "E": ms(ts_ns), "T": ms(ts_ns), "a": {"m": "ORDER",
                "B": [{"a": "USDT", "wb": wb, "cw": wb, "bc": "0"}],
                "P": [{"s": self.inst.symbol, "pa": self.qty(pos), "ep": f"{entry:.8f}", "bep": f"{entry:.8f}",
                       "cr": f"{realized:.8f}", "up": f"{x.unrealized():.8f}", "mt": "cross", "iw": "0",
                       "ps": "BOTH", "ma": "USDT"}]}}  # fmt: skip

    def position_risk(self, x: Exchange, now_ns: int) -> list[dict]:
        """GET positionRisk (v2 and v3): the symbol's one-way position, marked at the mid."""
        pos, entry, _ = x.position()
        bb, ba = x.best()
        mark = (bb + ba) * 0.5 * self.inst.tick_size if bb != EMPTY and ba != EMPTY else entry
        return [{
            "symbol": self.inst.symbol, "positionSide": "BOTH", "positionAmt": self.qty(pos),
            "entryPrice": f"{entry:.8f}", "breakEvenPrice": f"{entry:.8f}", "markPrice": f"{mark:.8f}",
            "unRealizedProfit": f"{x.unrealized():.8f}", "liquidationPrice": "0", "isolatedMargin": "0",
            "notional": f"{pos * mark:.8f}", "marginAsset": "USDT", "isolatedWallet": "0", "initialMargin": "0",
            "maintMargin": "0", "positionInitialMargin": "0", "openOrderInitialMargin": "0", "adl": 0,
            "bidNotional": "0", "askNotional": "0", "updateTime": ms(now_ns),
        }]  # fmt: skip

    def account(self, x: Exchange, now_ns: int) -> dict:
        """GET account (v2 and v3): the USDT wallet with its unrealized PnL."""
        wb = x.wallet()
        up = x.unrealized()
        asset = {"asset": "USDT", "walletBalance": f"{wb:.8f}", "unrealizedProfit": f"{up:.8f}",
                 "marginBalance": f"{wb + up:.8f}", "maintMargin": "0", "initialMargin": "0",
                 "positionInitialMargin": "0", "openOrderInitialMargin": "0", "crossWalletBalance": f"{wb:.8f}",
                 "crossUnPnl": f"{up:.8f}", "availableBalance": f"{wb + up:.8f}", "maxWithdrawAmount": f"{wb:.8f}",
                 "updateTime": max(1, ms(now_ns))}  # fmt: skip
        return {"totalWalletBalance": f"{wb:.8f}", "availableBalance": f"{wb + up:.8f}", "assets": [asset],
                "positions": []}  # fmt: skip
