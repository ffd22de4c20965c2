"""The emulated venue's matching core: one symbol's book, our orders in its queues, one account.

The book is replayed from a tape row by row (`on_row`); orders arrive from the API (`create`,
`cancel`). Fill rules are the backtester's (grinder.sim.engine), applied as events come instead of
in one compiled pass: a resting buy fills at its own price in full when the best ask drops to it
(price-through) or a sell trade prints below it (trade-through), and at its price once the queue
ahead of it has traded (`grinder.sim.queue`, risk-averse or probabilistic), in full or, with
partial fills on, by the traded quantity beyond the queue in whole lots. Orders are post-only
(GTX): one that would cross on arrival is rejected; one breaking the filters (tick, lot, minimum
notional) is rejected with the venue's error code. The other kinds taken are taker orders (`take`,
reduce-only or not): an immediate-or-cancel limit order and a market order, filled against the
displayed depth at once, level by level, with the taker fee. Money goes through `grinder.core.ledger`.

Everything here is synchronous and deterministic; the server (`grinder.venue.server`) owns the
clock, the sockets and the faults. Prices are int64 ticks inside, quantities base units.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from grinder.book.l2 import ASK, BID, EMPTY, apply_row, best_qty, best_ticks, level, n_levels, new_book, qty_at
from grinder.core.ledger import AVG_ENTRY, CASH, FEES, POSITION, REALIZED, book_fill, new_ledger, unrealized
from grinder.data.instruments import Instrument
from grinder.sim.queue import PROB_POWER, RISK_AVERSE, filled_qty, on_depth, on_trade

NEW, PARTIALLY_FILLED, FILLED, CANCELED, EXPIRED = "NEW", "PARTIALLY_FILLED", "FILLED", "CANCELED", "EXPIRED"
TRADE_KIND = 3

# Binance error codes the core returns (code, message).
POST_ONLY_REJECTED = (-5022, "Due to the order could not be executed as maker, the Post Only order will be rejected.")
UNKNOWN_ORDER = (-2011, "Unknown order sent.")
ORDER_NOT_FOUND = (-2013, "Order does not exist.")
DUPLICATE_CLIENT_ID = (-4116, "ClientOrderId is duplicated.")
BAD_PRICE = (-4014, "Price not increased by tick size.")
BAD_QTY = (-1111, "Precision is over the maximum defined for this asset.")
MIN_NOTIONAL = (-4164, "Order's notional must be no smaller than {} (unless you choose reduce only).")
BAD_PARAM = (-1102, "A mandatory parameter was not sent, was empty/null, or malformed.")
BAD_CLIENT_ID = (-4015, "Client order id is not valid.")
# The backtester models post-only quotes only; other orders are refused rather than mis-filled.
POST_ONLY_ONLY = (-1115, "Invalid timeInForce: this venue emulator takes post-only (GTX) limit orders only.")
REDUCE_ONLY_REJECTED = (-2022, "ReduceOnly Order is rejected.")
BAD_SIDE = (-1117, "Invalid side.")
NOT_REQUIRED = (-1106, "Parameter '{}' sent when not required.")
_CLIENT_ID = re.compile(r"[.A-Z:/a-z0-9_-]{1,36}")


class Rejected(Exception):
    """A request the emulated venue refuses, with Binance's code and message (and the HTTP status)."""

    def __init__(self, code: int, msg: str, http_status: int = 400):
        super().__init__(f"{code}: {msg}")
        self.code, self.msg, self.http_status = code, msg, http_status


@dataclass
class Order:
    """One order at the venue (prices in ticks, quantities in base units, times in ns)."""

    order_id: int
    client_id: str
    side: int  # +1 buy, -1 sell
    price_ticks: int
    qty: float
    tif: str
    status: str = NEW
    filled: float = 0.0
    quote_filled: float = 0.0  # sum of fill qty x price, for the average price
    front: float = 0.0  # queue ahead of us at our price, base units
    cum_trade: float = 0.0
    created_ns: int = 0
    updated_ns: int = 0
    reduce_only: bool = False
    type: str = "LIMIT"  # or MARKET (price_ticks 0: none)

    @property
    def takes(self) -> bool:
        """Whether it took liquidity (an IOC or a market order): its fills are the taker's."""
        return self.tif == "IOC" or self.type == "MARKET"

    @property
    def leaves(self) -> float:
        """Quantity not filled yet."""
        return self.qty - self.filled


@dataclass(frozen=True)
class OrderEvent:
    """A change to an order, as the user stream reports it (exec_type NEW, TRADE, CANCELED, EXPIRED)."""

    order: Order
    exec_type: str
    status: str
    ts_ns: int
    last_qty: float = 0.0
    last_price_ticks: int = 0
    fee: float = 0.0
    realized: float = 0.0
    trade_id: int = 0
    filled: float = 0.0  # the order's filled quantity and quote value right after this event (the
    quote_filled: float = 0.0  # order object itself keeps changing before the event is sent)

    def __post_init__(self) -> None:
        object.__setattr__(self, "filled", self.order.filled)
        object.__setattr__(self, "quote_filled", self.order.quote_filled)


@dataclass
class Exchange:
    """One symbol's emulated venue state; methods return the order events they cause, in order."""

    instrument: Instrument
    balance: float = 10_000.0  # wallet, settle currency
    queue_model: int = RISK_AVERSE
    queue_power: float = 2.0
    partial_fills: bool = False
    maker_fee: float | None = None
    # How far a market order may walk from the touch, in ticks (0: no bound; the sim's market_walk_ticks):
    # levels beyond it are not taken and the rest expires.
    market_walk_ticks: int = 0
    orders: dict[int, Order] = field(default_factory=dict)  # every order, in any state
    by_client: dict[str, int] = field(default_factory=dict)
    next_id: int = 1
    next_trade_id: int = 1

    def __post_init__(self) -> None:
        # The open ones, oldest first: every book row and trade goes through them, so a session's
        # closed orders (thousands an hour from a grid) must not be walked again and again.
        self.resting = {i: o for i, o in self.orders.items() if o.status in (NEW, PARTIALLY_FILLED)}
        self.hdr, self.wq, self.ok, self.oq = new_book()
        self.led = new_ledger()
        self.led[CASH] = self.balance
        self.fee_rate = self.instrument.maker_fee if self.maker_fee is None else self.maker_fee
        if self.queue_model not in (RISK_AVERSE, PROB_POWER):
            raise ValueError(f"unknown queue model {self.queue_model}")

    # ---- market data ----
    def best(self) -> tuple[int, int]:
        """(best bid, best ask) in ticks, EMPTY for an empty side."""
        return int(best_ticks(self.hdr, BID)), int(best_ticks(self.hdr, ASK))

    def depth(self, limit: int) -> tuple[list[tuple[int, float]], list[tuple[int, float]]]:
        """Up to `limit` (price ticks, qty) levels a side, best first."""
        out = []
        for s in (BID, ASK):
            n = min(limit, int(n_levels(self.hdr, s)))
            out.append([tuple(level(self.hdr, self.wq, self.ok, self.oq, s, d)) for d in range(n)])
        return out[0], out[1]

    def on_row(self, kind: int, side: int, price_ticks: int, qty: float, ts_ns: int) -> list[OrderEvent]:
        """Apply one tape row (book row or trade) and fill our orders it reaches."""
        if kind == TRADE_KIND:
            return self._on_trade(side, price_ticks, qty, ts_ns)
        s = BID if side > 0 else ASK
        prev = float(qty_at(self.hdr, self.wq, self.ok, self.oq, s, price_ticks)) if kind <= 1 else 0.0
        self.ok, self.oq = apply_row(self.hdr, self.wq, self.ok, self.oq, kind, side, price_ticks, qty)
        events: list[OrderEvent] = []
        # Only the level's own rows move a resting order's queue position (as in the backtester); a
        # reset clears the book, and the snapshot rows after it are the level's next rows.
        for o in self._resting():
            if kind <= 1 and o.price_ticks == price_ticks and (o.side > 0) == (side > 0):
                o.front, o.cum_trade = on_depth(self.queue_model, self.queue_power, o.front, o.cum_trade, prev, qty)
        bb, ba = self.best()
        for o in self._resting():
            # The best moved through our order on the other side: it fills at its own price.
            if (o.side > 0 and ba != EMPTY and ba <= o.price_ticks) or (
                o.side < 0 and bb != EMPTY and bb >= o.price_ticks
            ):
                events.append(self._fill(o, o.leaves, ts_ns))
        return events

    def _on_trade(self, side: int, price_ticks: int, qty: float, ts_ns: int) -> list[OrderEvent]:
        events = []
        lot = self.instrument.lot_size
        for o in self._resting():
            if o.side == side:
                continue  # an aggressor hits the other side
            through = price_ticks < o.price_ticks if o.side > 0 else price_ticks > o.price_ticks
            if through:
                events.append(self._fill(o, o.leaves, ts_ns))
            elif price_ticks == o.price_ticks:
                o.front, o.cum_trade = on_trade(o.front, o.cum_trade, qty)
                q = float(filled_qty(o.front, lot))
                if q > 0.0:
                    if self.partial_fills and q < o.leaves - 0.5 * lot:
                        o.front = 0.0
                        events.append(self._fill(o, q, ts_ns))
                    else:
                        events.append(self._fill(o, o.leaves, ts_ns))
        return events

    def _resting(self) -> list[Order]:
        return list(self.resting.values())  # a copy: fills close orders while callers walk it

    def _fill(self, o: Order, q: float, ts_ns: int) -> OrderEvent:
        inst = self.instrument
        before = self.led[REALIZED]
        fee = book_fill(self.led, o.side, o.price_ticks * inst.tick_size, q, self.fee_rate,
                        inst.contract == "inverse", inst.contract_size)  # fmt: skip
        o.filled += q
        o.quote_filled += q * o.price_ticks * inst.tick_size
        o.status = FILLED if o.leaves <= 0.5 * inst.lot_size else PARTIALLY_FILLED
        if o.status == FILLED:
            o.filled = o.qty
            del self.resting[o.order_id]
        o.updated_ns = ts_ns
        tid = self.next_trade_id
        self.next_trade_id += 1
        return OrderEvent(o, "TRADE", o.status, ts_ns, q, o.price_ticks, fee, float(self.led[REALIZED] - before), tid)

    # ---- orders ----
    def create(self, client_id: str, side: int, price_ticks: int, qty: float, tif: str, ts_ns: int) -> OrderEvent:
        """Place a limit order; raises Rejected for a refused one (nothing changes then)."""
        inst = self.instrument
        if tif != "GTX":
            raise Rejected(*POST_ONLY_ONLY)
        if not _CLIENT_ID.fullmatch(client_id):
            raise Rejected(*BAD_CLIENT_ID)
        if self.by_client.get(client_id) in self.resting:
            raise Rejected(*DUPLICATE_CLIENT_ID)  # Binance: unique among open orders
        lots = qty / inst.lot_size
        if qty <= 0 or abs(lots - round(lots)) > 1e-9:
            raise Rejected(*BAD_QTY)
        if qty * price_ticks * inst.tick_size < inst.min_notional * (1 - 1e-12):
            raise Rejected(MIN_NOTIONAL[0], MIN_NOTIONAL[1].format(f"{inst.min_notional:g}"))
        bb, ba = self.best()
        if (side > 0 and ba != EMPTY and price_ticks >= ba) or (side < 0 and bb != EMPTY and price_ticks <= bb):
            raise Rejected(*POST_ONLY_REJECTED)
        o = Order(self.next_id, client_id, side, int(price_ticks), float(qty), tif, created_ns=ts_ns, updated_ns=ts_ns)
        self.next_id += 1
        o.front = float(qty_at(self.hdr, self.wq, self.ok, self.oq, BID if side > 0 else ASK, o.price_ticks))
        self.orders[o.order_id] = self.resting[o.order_id] = o
        self.by_client[client_id] = o.order_id
        return OrderEvent(o, "NEW", NEW, ts_ns)

    def find(self, order_id: int | None = None, client_id: str | None = None) -> Order:
        """An order by venue id or client id (any state); Rejected -2013 if there is none."""
        oid = order_id if order_id is not None else self.by_client.get(client_id or "")
        if oid is None or oid not in self.orders:
            raise Rejected(*ORDER_NOT_FOUND)
        return self.orders[oid]

    def cancel(self, ts_ns: int, order_id: int | None = None, client_id: str | None = None) -> OrderEvent:
        """Cancel a resting order; Rejected -2011 if it is unknown or no longer open."""
        try:
            o = self.find(order_id, client_id)
        except Rejected:
            raise Rejected(*UNKNOWN_ORDER) from None
        if o.order_id not in self.resting:
            raise Rejected(*UNKNOWN_ORDER)
        o.status, o.updated_ns = CANCELED, ts_ns
        del self.resting[o.order_id]
        return OrderEvent(o, "CANCELED", CANCELED, ts_ns)

    def take(self, client_id: str, side: int, price_ticks: int | None, qty: float, reduce_only: bool,
             ts_ns: int) -> list[OrderEvent]:  # fmt: skip
        """A taker order: an immediate-or-cancel limit order up to `price_ticks`, or a market order (None).

        It takes the displayed depth level by level at each level's price and pays the taker fee
        (an IOC closes a position for the adapter's flatten; a strategy sends either kind); the
        replayed book does not lose what it took (the next rows are the recorded market's). A market
        order walks until it is filled or the side runs out (or `market_walk_ticks` from the touch).
        Reduce-only: clipped to the position and refused (-2022) when there is none on the other side;
        it is exempt from the minimum notional, which a market order is checked against at the touch
        it takes (an empty side: not checked, and it expires). Returns the order's events: NEW, a
        TRADE per level, then EXPIRED for a remainder.
        """
        inst = self.instrument
        market = price_ticks is None
        if not _CLIENT_ID.fullmatch(client_id):
            raise Rejected(*BAD_CLIENT_ID)
        lots = qty / inst.lot_size
        if not qty > 0 or abs(lots - round(lots)) > 1e-9:
            raise Rejected(*BAD_QTY)
        bb, ba = self.best()
        touch = ba if side > 0 else bb
        limit = price_ticks
        if market:
            limit = EMPTY if touch == EMPTY or not self.market_walk_ticks else touch + side * self.market_walk_ticks
        pos = float(self.led[POSITION])
        if reduce_only:
            if pos * side >= 0 or abs(pos) < 0.5 * inst.lot_size:
                raise Rejected(*REDUCE_ONLY_REJECTED)
            qty = min(qty, abs(pos))
        else:
            value_ticks = touch if market else price_ticks
            if value_ticks != EMPTY and qty * value_ticks * inst.tick_size < inst.min_notional * (1 - 1e-12):
                raise Rejected(MIN_NOTIONAL[0], MIN_NOTIONAL[1].format(f"{inst.min_notional:g}"))
        o = Order(self.next_id, client_id, side, 0 if market else int(price_ticks), float(qty),
                  "GTC" if market else "IOC", created_ns=ts_ns, updated_ns=ts_ns, reduce_only=reduce_only,
                  type="MARKET" if market else "LIMIT")  # fmt: skip
        self.next_id += 1
        self.orders[o.order_id] = o
        self.by_client[client_id] = o.order_id
        events = [OrderEvent(o, "NEW", NEW, ts_ns)]
        bids, asks = self.depth(1000)
        for px, avail in asks if side > 0 else bids:
            if o.leaves <= 0.5 * inst.lot_size:
                break
            if limit != EMPTY and (px > limit if side > 0 else px < limit):
                break
            q = min(o.leaves, round(avail / inst.lot_size) * inst.lot_size)
            if q <= 0.5 * inst.lot_size:
                continue
            before = self.led[REALIZED]
            fee = book_fill(self.led, side, px * inst.tick_size, q, inst.taker_fee, inst.contract == "inverse",
                            inst.contract_size)  # fmt: skip
            o.filled += q
            o.quote_filled += q * px * inst.tick_size
            o.status = FILLED if o.leaves <= 0.5 * inst.lot_size else PARTIALLY_FILLED
            tid = self.next_trade_id
            self.next_trade_id += 1
            events.append(OrderEvent(o, "TRADE", o.status, ts_ns, q, px, fee, float(self.led[REALIZED] - before), tid))
        if o.status != FILLED:
            o.status = EXPIRED
            events.append(OrderEvent(o, "EXPIRED", EXPIRED, ts_ns))
        return events

    def open_orders(self) -> list[Order]:
        """Orders still resting, oldest first."""
        return sorted(self._resting(), key=lambda o: o.order_id)

    # ---- account ----
    def position(self) -> tuple[float, float, float]:
        """(position base units, average entry price, realized PnL settle currency)."""
        return float(self.led[POSITION]), float(self.led[AVG_ENTRY]), float(self.led[REALIZED])

    def wallet(self) -> float:
        """Wallet balance: deposit plus realized PnL minus fees (settle currency), as Binance reports it."""
        return self.balance + float(self.led[REALIZED]) - float(self.led[FEES])

    def unrealized(self) -> float:
        """Unrealized PnL at the mid (settle currency; 0 without a two-sided book)."""
        bb, ba = self.best()
        if bb == EMPTY or ba == EMPTY:
            return 0.0
        inst = self.instrument
        mid = (bb + ba) * 0.5 * inst.tick_size
        return float(unrealized(self.led, mid, inst.contract == "inverse", inst.contract_size))

    def top(self) -> tuple[float, float]:
        """Quantities at the best bid and ask."""
        return float(best_qty(self.hdr, self.wq, self.ok, self.oq, BID)), float(
            best_qty(self.hdr, self.wq, self.ok, self.oq, ASK)
        )
