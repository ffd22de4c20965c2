"""Paper mode: live market data from the venue, orders filled locally by the backtester's venue model.

`PaperBinance` is the adapter's ccxt client with its order side replaced. Market data (markets,
the order book, trades) comes from the venue as usual; every raw depth diff, depth snapshot and
trade it receives is also applied, in arrival order, to a local `grinder.venue.exchange.Exchange`
(the emulator's matching core: the backtester's queue and fill rules, post-only, the venue's
filters and error codes). Creates, cancels, queries, open orders, positions and the user stream
are answered from that local venue, as the venue's JSON parsed by ccxt's own parsers, so the
adapter, the port and reconciliation run unchanged. No private request ever leaves: `sign`
refuses them, and paper mode needs no API key.

The local book follows the venue's sequence rules: diffs older than the snapshot are skipped, the
first one must bridge it, every later one must continue the previous (`pu`). On a break the local
book is cleared (no fills) until ccxt fetches the next snapshot. Not modelled: the trip to the
venue (orders rest from the moment they are sent), funding, margin.
"""

from __future__ import annotations

import asyncio
import contextlib
import json

import ccxt

from grinder.data.schema import BOOK_DIFF, BOOK_RESET, BOOK_SNAPSHOT, SIDE_ASK, SIDE_BID
from grinder.live.client import GrinderBinance, market_instrument
from grinder.venue.exchange import BAD_PARAM, BAD_SIDE, NOT_REQUIRED, TRADE_KIND, Exchange, OrderEvent, Rejected
from grinder.venue.wire import Wire

MS = 1_000_000
PUBLIC_APIS = ("public", "fapiPublic", "fapiPublicV2", "fapiPublicV3", "fapiData")  # what paper may call


class PaperBinance(GrinderBinance):
    """One symbol's paper venue behind ccxt's binanceusdm interface (`symbol_id` as the venue spells it)."""

    def __init__(self, config: dict, symbol_id: str, balance: float = 10_000.0, partial_fills: bool = False):
        super().__init__(config)
        self.symbol_id = symbol_id
        self.paper_balance = balance
        self.partial_fills = partial_fills
        self.x: Exchange | None = None
        self.wire: Wire | None = None
        self.feed_ns = 0  # exchange time of the latest market message applied (ns)
        self.book_u: int | None = None  # u of the last diff applied; None: no synced book
        self.bridging = False  # a snapshot was applied; the first diff must bridge it
        self.held: list[dict] = []  # diffs received while there is no synced book (ccxt holds them too)
        self.rows_applied = 0
        self.gaps = 0
        self._updates: asyncio.Queue[list[OrderEvent]] = asyncio.Queue()
        self._trades_task: asyncio.Task | None = None
        self.taps.append(self._on_market)

    # ---- market data into the local venue ----
    async def load_markets(self, reload=False, params=None):  # noqa: D102 - ccxt's
        markets = await super().load_markets(reload, params or {})
        if self.x is None:
            m = next((m for m in self.markets.values() if m["id"] == self.symbol_id), None)
            if m is None:
                raise ccxt.BadSymbol(f"paper: the venue lists no market {self.symbol_id}")
            self.paper_market = m
            inst = market_instrument(m)
            self.x = Exchange(inst, balance=self.paper_balance, partial_fills=self.partial_fills)
            self.wire = Wire(inst)
        return markets

    def _ticks(self, price: str | float) -> int:
        return round(float(price) / self.x.instrument.tick_size)

    def _on_market(self, _local_ns: int, msg: dict) -> None:
        if self.x is None:
            return
        events: list[OrderEvent] = []
        if "lastUpdateId" in msg:  # a REST snapshot (ccxt fetched it for this symbol)
            self.feed_ns = max(self.feed_ns, int(msg.get("T") or msg.get("E") or 0) * MS)
            events += self.x.on_row(BOOK_RESET, 0, 0, 0.0, self.feed_ns)
            for side, levels in ((SIDE_BID, msg["bids"]), (SIDE_ASK, msg["asks"])):
                for p, q in levels:
                    events += self.x.on_row(BOOK_SNAPSHOT, side, self._ticks(p), float(q), self.feed_ns)
            self.book_u, self.bridging = int(msg["lastUpdateId"]), True
            self.rows_applied += 1 + len(msg["bids"]) + len(msg["asks"])
            held, self.held = self.held, []
            for m in held:  # diffs that arrived before the snapshot's reply, as ccxt replays them
                events += self._on_depth(m)  # (after a gap among them, the rest are held again)
        elif msg.get("s") != self.symbol_id:
            return
        elif msg["e"] == "depthUpdate":
            events += self._on_depth(msg)
        elif self.book_u is not None and msg.get("X", "MARKET") == "MARKET":
            # A trade (insurance-fund and ADL prints are not market trades); none fills while the
            # local book is not synced.
            self.feed_ns = max(self.feed_ns, int(msg["T"]) * MS)
            side = SIDE_ASK if msg["m"] else SIDE_BID  # buyer is maker: the aggressor sold
            events += self.x.on_row(TRADE_KIND, side, self._ticks(msg["p"]), float(msg["q"]), self.feed_ns)
            self.rows_applied += 1
        if events:
            self._updates.put_nowait(events)

    def _on_depth(self, msg: dict) -> list[OrderEvent]:
        if self.book_u is None:
            self.held.append(msg)  # no snapshot to sync from yet
            del self.held[:-1000]  # a venue that never answers the snapshot must not fill memory
            return []
        first, last, prev = int(msg["U"]), int(msg["u"]), int(msg["pu"])
        if last < self.book_u:
            return []  # older than the snapshot
        # As the ingest syncs (docs/data/binance-raw.md): the first diff covers the snapshot's id or
        # continues it exactly, every later one continues the previous.
        bridges = first <= self.book_u or prev == self.book_u
        if (self.bridging and not bridges) or (not self.bridging and prev != self.book_u):
            self.gaps += 1  # the book is wrong from here: clear it (no fills) until the next snapshot
            self.book_u = None
            return self.x.on_row(BOOK_RESET, 0, 0, 0.0, self.feed_ns)
        self.bridging, self.book_u = False, last
        self.feed_ns = max(self.feed_ns, int(msg["T"]) * MS)
        events: list[OrderEvent] = []
        for side, levels in ((SIDE_BID, msg["b"]), (SIDE_ASK, msg["a"])):
            for p, q in levels:
                events += self.x.on_row(BOOK_DIFF, side, self._ticks(p), float(q), self.feed_ns)
        self.rows_applied += len(msg["b"]) + len(msg["a"])
        return events

    async def _follow_trades(self) -> None:
        # Trades reach the local venue through the tap; this loop only keeps the subscription alive.
        while True:
            try:
                await self.watch_trades(self.paper_market["symbol"])
            except (ccxt.NetworkError, ccxt.ExchangeError):
                await asyncio.sleep(0.5)

    # ---- the order side, answered locally ----
    def sign(self, path, api=None, method="GET", params=None):  # noqa: D102 - ccxt's, before every request
        kind = (api or ["public"])[0] if isinstance(api, list) else api
        if kind not in PUBLIC_APIS or path == "listenKey":
            raise ccxt.NotSupported(f"paper mode sends no private request ({kind} {method} {path})")
        return super().sign(path, api or ["public"], method, params or {})

    def prewarm(self, symbol: str, price: float, amount: float) -> None:  # noqa: D102 - nothing is signed here
        return

    def _presign(self, key: tuple, endpoint, params: dict, market: dict) -> None:  # nothing is signed here either
        return

    def _raise(self, e: Rejected):
        cls = self.exceptions["exact"].get(str(e.code), ccxt.ExchangeError)
        raise cls(f"{self.id} {json.dumps({'code': e.code, 'msg': e.msg})}") from None

    def _check(self, symbol: str | None) -> None:
        if self.x is None:
            raise ccxt.ExchangeError("paper: load_markets() first")
        if symbol is not None and symbol not in (self.paper_market["symbol"], self.symbol_id):
            raise ccxt.BadSymbol(f"paper: only {self.paper_market['symbol']} is simulated, not {symbol}")

    def _emit(self, ev: OrderEvent) -> dict:
        self._updates.put_nowait([ev])
        return self.parse_order(self.wire.order(ev.order), self.paper_market)

    async def create_order(self, symbol, type, side, amount, price=None, params=None):  # noqa: A002, D102
        self._check(symbol)
        params = params or {}
        if type not in ("limit", "market") or (type == "limit") != (price is not None):
            self._raise(Rejected(-1116, "Invalid orderType."))
        if side not in ("buy", "sell"):
            self._raise(Rejected(*BAD_SIDE))
        cid = params.get("clientOrderId") or params.get("newClientOrderId") or f"paper-{self.x.next_id}"
        if type == "market":  # a strategy's taker: walks the local book at once, no price limit
            if "timeInForce" in params:
                self._raise(Rejected(NOT_REQUIRED[0], NOT_REQUIRED[1].format("timeInForce")))
            self.mark_request()
            try:
                events = self.x.take(cid, 1 if side == "buy" else -1, None, float(amount),
                                     bool(params.get("reduceOnly")), self.feed_ns)  # fmt: skip
            except Rejected as e:
                self._raise(e)
            self._updates.put_nowait(events)
            return self.parse_order(self.wire.order(events[0].order), self.paper_market)
        tif = "GTX" if params.get("postOnly") else params.get("timeInForce", "GTC")
        ticks = self._ticks(price)
        if abs(ticks * self.x.instrument.tick_size - float(price)) > 1e-9 * max(1.0, float(price)):
            self._raise(Rejected(-4014, "Price not increased by tick size."))
        self.mark_request()
        try:
            if tif == "IOC":  # a flatten (live.rollout) or a strategy's taker: filled at once against the local book
                events = self.x.take(cid, 1 if side == "buy" else -1, ticks, float(amount),
                                     bool(params.get("reduceOnly")), self.feed_ns)  # fmt: skip
                self._updates.put_nowait(events)
                return self.parse_order(self.wire.order(events[0].order), self.paper_market)
            ev = self.x.create(cid, 1 if side == "buy" else -1, ticks, float(amount), tif, self.feed_ns)
        except Rejected as e:
            self._raise(e)
        return self._emit(ev)

    async def create_post_only(self, symbol, side, amount, price, client_id):  # noqa: D102 - the local venue's
        params = {"postOnly": True, "clientOrderId": client_id}
        return await self.create_order(symbol, "limit", side, amount, price, params)

    async def cancel_by_client_id(self, symbol, client_id):  # noqa: D102
        return await self.cancel_order(None, symbol, {"clientOrderId": client_id})

    async def cancel_order(self, id, symbol=None, params=None):  # noqa: A002, D102
        self._check(symbol)
        params = params or {}
        cid = params.get("clientOrderId") or params.get("origClientOrderId")
        self.mark_request()
        try:
            ev = self.x.cancel(self.feed_ns, int(id) if id is not None else None, cid)
        except (Rejected, ValueError) as e:
            self._raise(e if isinstance(e, Rejected) else Rejected(*BAD_PARAM))
        return self._emit(ev)

    async def cancel_all_orders(self, symbol=None, params=None):  # noqa: D102 - the stop's first try (live.shutdown)
        self._check(symbol)
        self.mark_request()
        return [self._emit(self.x.cancel(self.feed_ns, o.order_id)) for o in self.x.open_orders()]

    async def fetch_order(self, id, symbol=None, params=None):  # noqa: A002, D102
        self._check(symbol)
        params = params or {}
        try:
            o = self.x.find(int(id) if id is not None else None, params.get("clientOrderId"))
        except Rejected as e:
            self._raise(e)
        return self.parse_order(self.wire.order(o), self.paper_market)

    async def fetch_open_orders(self, symbol=None, since=None, limit=None, params=None):  # noqa: D102
        self._check(symbol)
        return [self.parse_order(self.wire.order(o), self.paper_market) for o in self.x.open_orders()]

    async def fetch_positions(self, symbols=None, params=None):  # noqa: D102
        self._check(None)
        return [self.parse_position_risk(p, self.paper_market) for p in self.wire.position_risk(self.x, self.feed_ns)]

    async def fetch_balance(self, params=None):  # noqa: D102
        self._check(None)
        return self.parse_balance_custom(self.wire.account(self.x, self.feed_ns), "linear", None, False)

    async def watch_orders(self, symbol=None, since=None, limit=None, params=None):  # noqa: D102
        self._check(symbol)
        if self._trades_task is None or self._trades_task.done():
            self._trades_task = asyncio.create_task(self._follow_trades())
        events = await self._updates.get()
        while not self._updates.empty():
            events += self._updates.get_nowait()
        market = self.paper_market
        return [self.parse_ws_order(self.wire.order_update(ev)["o"], market) for ev in events]

    async def close(self) -> None:  # noqa: D102
        if self._trades_task is not None:
            self._trades_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._trades_task
        await super().close()
