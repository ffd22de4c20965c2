"""The venue emulator's server: the part of Binance USDT-M futures' REST and WebSocket API ccxt uses.

One symbol, replayed from a tape at `speed` times real time (`VenueServer.run_replay`) or stepped
through exchange time by a driver (`advance_to`), matched by `grinder.venue.exchange.Exchange`.
Public: exchangeInfo, time, depth snapshots, the diff depth stream (U / u / pu) and trade / aggTrade
streams. Private (HMAC-signed, `grinder.venue.auth`): order create / cancel / query, open orders,
cancel all, countdown cancel-all (the dead-man's switch, on the wall clock), leverage brackets, position
risk, account, listenKey and the user stream (ORDER_TRADE_UPDATE, ACCOUNT_UPDATE). Orders: post-only
limits (GTX), immediate-or-cancel limits and market orders (both taker orders that walk the book at
once, reduce-only or not). Paths and message shapes follow docs/venue-protocol.md, measured against
ccxt 4.5. Market data times are the tape's; signature timestamps are checked against the wall clock,
as the real venue does. Not modelled: funding (the backtester settles it, so balances drift apart
across a settlement), margin and leverage, and other orders (GTC / FOK limits are refused with
-1115, stop and take-profit types with -1116).

At the end of the tape the server stays up with the book frozen, or replays it again (`run_tape`).
The fault knobs (`grinder.venue.faults.Faults`) are read and set over `/admin/faults`, for
loopback peers only (docs/venue-protocol.md, section 8); its Prometheus metrics (orders accepted and
rejected, fills, faults injected, replay lag: `grinder.venue.metrics`) are at `/metrics`, loopback
peers only too.
"""

from __future__ import annotations

import asyncio
import json
import math
import secrets
import time

from aiohttp import WSMsgType, web
from prometheus_client import generate_latest

from grinder.book.l2 import EMPTY
from grinder.data.tape import Tape
from grinder.venue.auth import Credentials, check_signed
from grinder.venue.exchange import BAD_PARAM, BAD_SIDE, NOT_REQUIRED, Exchange, OrderEvent, Rejected
from grinder.venue.faults import Faults, loopback_peer
from grinder.venue.metrics import CONTENT_TYPE, venue_registry
from grinder.venue.order_log import CHANGING, FENCE_HEADER, OrderLog, check_fencing, token_of
from grinder.venue.wire import Wire, ms

BATCH_END = 1  # Tape.flags bit: the last row of one depth update
# Where a signed request's parameters are kept for the order log (a typed key where aiohttp has them).
_PARAMS = web.RequestKey("grinder_params", dict) if hasattr(web, "RequestKey") else "grinder_params"


def api_urls(base_url: str) -> dict:
    """ccxt's `urls['api']` for binanceusdm pointed at a Binance-compatible venue at base_url (http or https)."""
    h = base_url.rstrip("/")
    api = {k: h + p for k, p in (("fapiPublic", "/fapi/v1"), ("fapiPublicV2", "/fapi/v2"),
           ("fapiPublicV3", "/fapi/v3"), ("fapiPrivate", "/fapi/v1"), ("fapiPrivateV2", "/fapi/v2"),
           ("fapiPrivateV3", "/fapi/v3"), ("fapiData", "/futures/data"))}  # fmt: skip
    api["ws"] = {"linear": h.replace("http://", "ws://").replace("https://", "wss://") + "/ws"}
    return api


class VenueServer:
    """An aiohttp application over one `Exchange`; `start()` binds 127.0.0.1 and returns the port."""

    def __init__(self, tape: Tape, creds: Credentials, speed: float = 1.0, balance: float = 10_000.0, **exchange_kw):
        if speed <= 0:
            raise ValueError(f"speed must be > 0, got {speed}")
        self.tape, self.creds, self.speed = tape, creds, speed
        self.inst = tape.instrument
        self.x = Exchange(self.inst, balance=balance, **exchange_kw)
        self.faults = Faults()
        self.wire = Wire(self.inst)
        self.px, self.qty = self.wire.px, self.wire.qty
        self.update_id = 0  # u of the last depth update applied
        self.now_ns = int(tape.ts_exch[0]) if len(tape) else 0  # the replay's exchange time
        self.row = 0  # next tape row
        # Added to the tape's exchange times: a looped replay carries time on (`rewind`), never back.
        self.ts_offset = 0
        self.loops = 0  # times the replay went back to the tape's first book (`rewind`)
        self._batch: list[int] = []  # rows of the depth update being read (streamed at its last row)
        self.order_updates = 0  # ORDER_TRADE_UPDATE messages sent on the user stream (to any socket)
        self.depth_subs: set[web.WebSocketResponse] = set()
        self.trade_subs: dict[str, set[web.WebSocketResponse]] = {"trade": set(), "aggTrade": set()}
        self.user_socks: dict[str, set[web.WebSocketResponse]] = {}
        self.listen_keys: set[str] = set()
        self.done = asyncio.Event()
        self.app = web.Application(middlewares=[self._faults_mw])
        r = self.app.router
        r.add_get("/fapi/v1/exchangeInfo", self.exchange_info)
        r.add_get("/fapi/v1/time", self.server_time)
        r.add_get("/fapi/v1/depth", self.depth)
        r.add_route("*", "/fapi/v1/listenKey", self.listen_key)
        r.add_post("/fapi/v1/order", self.create_order)
        r.add_delete("/fapi/v1/order", self.cancel_order)
        r.add_get("/fapi/v1/order", self.get_order)
        r.add_get("/fapi/v1/openOrders", self.open_orders)
        r.add_get("/fapi/v1/allOrders", self.all_orders)  # the order history (live.instance's probe)
        r.add_delete("/fapi/v1/allOpenOrders", self.cancel_all)
        r.add_post("/fapi/v1/countdownCancelAll", self.countdown_cancel_all)
        r.add_get("/fapi/v1/leverageBracket", self.leverage_bracket)
        for v in ("v2", "v3"):
            r.add_get(f"/fapi/{v}/positionRisk", self.position_risk)
            r.add_get(f"/fapi/{v}/account", self.account)
        r.add_get("/public/ws/{n}", self.public_ws)
        r.add_get("/market/ws/{n}", self.public_ws)
        r.add_get("/private/ws", self.private_ws)
        r.add_route("GET", "/admin/faults", self.admin_faults)
        r.add_route("POST", "/admin/faults", self.admin_faults)
        r.add_get("/admin/orders", self.admin_orders)
        r.add_get("/metrics", self.metrics_text)
        self._runner: web.AppRunner | None = None
        # The dead-man's switch (countdownCancelAll): one account, one symbol, so one timer. It runs
        # on the wall clock, as Binance's does and as the client re-arms it, whatever the replay speed.
        self._countdown: asyncio.TimerHandle | None = None
        self.countdown_ms = 0  # the last countdownTime set (0: none armed)
        self.countdowns_fired = 0  # times a countdown ran out and cancelled the symbol's open orders
        self._background: set[asyncio.Task] = set()
        # Counted for the metrics (grinder.venue.metrics reads them when scraped).
        self.orders_accepted = 0  # creates taken (post-only, IOC and market)
        self.orders_rejected: dict[int, int] = {}  # creates refused, by the venue's error code
        self.faults_injected: dict[str, int] = {}  # by knob: each time one changed an answer or a stream
        self.replay_lag_s = 0.0  # how far behind its schedule the replay streamed its last row
        self.metrics = venue_registry(self)
        # Every venue-changing request with its fencing token and result (grinder.venue.order_log).
        self.order_log = OrderLog()

    # ---- life cycle ----
    async def start(self, port: int = 0) -> int:
        """Serve on 127.0.0.1:port (0: a free port); returns the port."""
        self._runner = web.AppRunner(self.app, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", port)
        await site.start()
        return site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self) -> None:
        """Close every socket and the listener."""
        if self._countdown is not None:
            self._countdown.cancel()
        for ws in [*self.depth_subs, *self.trade_subs["trade"], *self.trade_subs["aggTrade"],
                   *(w for s in self.user_socks.values() for w in s)]:  # fmt: skip
            await ws.close()
        if self._runner is not None:
            await self._runner.cleanup()

    def preroll(self) -> None:
        """Apply rows up to the end of the first complete book (its snapshot), without streaming them."""
        t = self.tape
        seen_book = False
        while self.row < len(t):
            i = self.row
            self._apply(i)
            self.row += 1
            seen_book = seen_book or t.kind[i] in (1, 2)
            if seen_book and t.flags[i] & BATCH_END and t.kind[i] != 3:
                bb, ba = self.x.best()
                if bb != EMPTY and ba != EMPTY:
                    break
        self.update_id = 1000  # the snapshot's lastUpdateId; each streamed update takes the next ids

    async def run_replay(self, until_row: int | None = None) -> None:
        """Stream the tape from the current row at `speed` x real time; sets `done` at the end."""
        t = self.tape
        end = len(t) if until_row is None else min(until_row, len(t))
        if self.row >= end:
            self.done.set()
            return
        wall0, ts0 = time.monotonic(), int(t.ts_exch[self.row])
        while self.row < end:
            due = wall0 + (int(t.ts_exch[self.row]) - ts0) / 1e9 / self.speed
            delay = due - time.monotonic()
            self.replay_lag_s = max(0.0, -delay)
            if delay > 0:
                await asyncio.sleep(delay)
            await self._stream_row()
        await self._flush_batch()
        self.done.set()

    async def run_tape(self, loop: bool = False, on_end=None) -> None:
        """Replay the tape (`run_replay`); at its end go back to its first book and on (`loop`), or return.

        Returned, the server stays up with the book as the tape left it: orders are still taken,
        cancelled and listed, at the last exchange time. `on_end(self)` is called at every end of the
        tape. Looping never returns.
        """
        while True:
            await self.run_replay()
            if on_end is not None:
                on_end(self)
            if not loop:
                return
            self.rewind()

    def loop_row(self) -> int | None:
        """The tape's first book reset (where a loop starts again: the book rebuilt from scratch), or None."""
        resets = (self.tape.kind == 2).nonzero()[0]
        return int(resets[0]) if len(resets) else None

    def rewind(self) -> None:
        """Stand at the tape's first book reset again, exchange time 1 ms after the last row streamed.

        The update ids go on (clients see one unbroken stream): the reset and its snapshot go out as
        the levels they change. The book jumps back to the tape's start; resting orders it crosses fill.
        """
        first = self.loop_row()
        if first is None:
            raise ValueError("the tape has no book reset to loop from")
        self.ts_offset = self.now_ns + 1_000_000 - int(self.tape.ts_exch[first])
        self.row = first
        self.loops += 1
        self.done.clear()

    async def advance_to(self, ts_ns: int) -> int:
        """Stepped replay: stream every row up to exchange time `ts_ns` (inclusive) now, then stand at `ts_ns`.

        For a driver that holds the clock (live.parity's lock-step): the wall clock plays no part,
        and orders that arrive before the next call are matched at `ts_ns`, after every row up to
        it and before any later one (as the backtester with no latency). A depth update whose rows
        straddle `ts_ns` is streamed in two. Returns the id (u) of the last depth update sent.
        """
        t = self.tape
        while self.row < len(t) and int(t.ts_exch[self.row]) <= ts_ns:
            await self._stream_row()
        await self._flush_batch()
        self.now_ns = max(self.now_ns, int(ts_ns))
        if self.row >= len(t):
            self.done.set()
        return self.update_id

    async def _stream_row(self) -> None:
        """Apply the next row and stream it (a trade at once, a depth row with the rest of its update)."""
        t, i = self.tape, self.row
        self.now_ns = int(t.ts_exch[i]) + self.ts_offset
        self.row += 1
        if t.kind[i] == 3:
            # Applied before anything is awaited: an order created meanwhile comes after this row.
            fills = self.x.on_row(3, int(t.side[i]), int(t.price_ticks[i]), float(t.qty[i]), self.now_ns)
            await self._emit_trade(i)
            await self._emit_orders(fills)
        else:
            self._batch.append(i)
            if t.flags[i] & BATCH_END:
                await self._flush_batch()

    async def _flush_batch(self) -> None:
        batch, self._batch = self._batch, []
        if batch:
            await self._emit_depth(batch)

    def _apply(self, i: int) -> list[OrderEvent]:
        t = self.tape
        ts = int(t.ts_exch[i]) + self.ts_offset
        return self.x.on_row(int(t.kind[i]), int(t.side[i]), int(t.price_ticks[i]), float(t.qty[i]), ts)

    # ---- streams ----
    async def _send(self, socks, msg: dict) -> None:
        text = json.dumps(msg)
        for ws in list(socks):
            if ws.closed:
                socks.discard(ws)
                continue
            try:
                await ws.send_str(text)
            except (ConnectionResetError, RuntimeError):
                socks.discard(ws)

    def _injected(self, knob: str) -> None:
        self.faults_injected[knob] = self.faults_injected.get(knob, 0) + 1

    async def _drop_sockets(self) -> None:
        self.faults.drop_ws = False
        self._injected("drop_ws")
        socks = [*self.depth_subs, *self.trade_subs["trade"], *self.trade_subs["aggTrade"], *self._all_user_socks()]
        for ws in socks:
            await ws.close(code=1001, message=b"going away")

    async def _emit_depth(self, rows: list[int]) -> None:
        if self.faults.drop_ws:
            await self._drop_sockets()
        t = self.tape
        before = self.x.depth(1000) if any(t.kind[i] != 0 for i in rows) else None
        events: list[OrderEvent] = []
        for i in rows:
            events += self._apply(i)
        if before is None:
            bids = [[self.px(int(t.price_ticks[i])), self.qty(float(t.qty[i]))] for i in rows if t.side[i] > 0]
            asks = [[self.px(int(t.price_ticks[i])), self.qty(float(t.qty[i]))] for i in rows if t.side[i] < 0]
        else:  # a reset or snapshot in the capture: stream it as the levels it changed
            after = self.x.depth(1000)
            bids, asks = (
                [[self.px(p), self.qty(q)] for p, q in _changed(b, a)] for b, a in zip(before, after, strict=True)
            )
        prev = self.update_id
        self.update_id = prev + len(rows)
        msg = {"e": "depthUpdate", "E": ms(self.now_ns), "T": ms(self.now_ns), "s": self.inst.symbol,
               "U": prev + 1, "u": self.update_id, "pu": prev, "b": bids, "a": asks}  # fmt: skip
        if self.faults.seq_gap:
            self.faults.seq_gap = False  # this update is lost: the next one's pu will not match
            self._injected("seq_gap")
        else:
            await self._send(self.depth_subs, msg)
        await self._emit_orders(events)

    async def _emit_trade(self, i: int) -> None:
        t = self.tape
        px, q = self.px(int(t.price_ticks[i])), self.qty(float(t.qty[i]))
        base = {
            "E": ms(self.now_ns),
            "T": ms(self.now_ns),
            "s": self.inst.symbol,
            "p": px,
            "q": q,
            "m": bool(t.side[i] < 0),
        }
        await self._send(self.trade_subs["trade"], {"e": "trade", "t": int(t.ref[i]), "X": "MARKET", **base})
        tid = int(t.ref[i])
        await self._send(self.trade_subs["aggTrade"], {"e": "aggTrade", "a": tid, "f": tid, "l": tid, **base})

    async def _emit_orders(self, events: list[OrderEvent]) -> None:
        for ev in events:
            socks = self._all_user_socks()
            self.order_updates += bool(socks)
            await self._send(socks, self.wire.order_update(ev))
            if ev.exec_type == "TRADE":
                await self._send(self._all_user_socks(), self.wire.account_update(self.x, ev.ts_ns))

    def _all_user_socks(self) -> set:
        return {w for s in self.user_socks.values() for w in s}

    async def public_ws(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        sym = self.inst.symbol.lower()
        async for msg in ws:
            if msg.type != WSMsgType.TEXT:
                continue
            try:
                req = json.loads(msg.data)
                method, params, rid = req["method"], req.get("params", []), req["id"]
            except (ValueError, KeyError, TypeError):
                await ws.send_str(json.dumps({"error": {"code": 3, "msg": "Invalid JSON"}, "id": None}))
                continue
            targets = []
            for stream in params:
                if stream.startswith(f"{sym}@depth"):
                    targets.append(self.depth_subs)
                elif stream == f"{sym}@trade":
                    targets.append(self.trade_subs["trade"])
                elif stream == f"{sym}@aggTrade":
                    targets.append(self.trade_subs["aggTrade"])
                else:
                    targets = None
                    break
            if targets is None or method not in ("SUBSCRIBE", "UNSUBSCRIBE"):
                await ws.send_str(
                    json.dumps({"error": {"code": 2, "msg": "Invalid request: invalid stream"}, "id": rid})
                )
                continue
            for subs in targets:
                (subs.add if method == "SUBSCRIBE" else subs.discard)(ws)
            await ws.send_str(json.dumps({"result": None, "id": rid}))
        for subs in (self.depth_subs, *self.trade_subs.values()):
            subs.discard(ws)
        return ws

    async def private_ws(self, request: web.Request) -> web.StreamResponse:
        key = request.query.get("listenKey", "")
        if key not in self.listen_keys:
            return web.json_response({"code": -1125, "msg": "This listenKey does not exist."}, status=400)
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        self.user_socks.setdefault(key, set()).add(ws)
        async for _ in ws:
            pass  # the client sends nothing on the user stream
        self.user_socks.get(key, set()).discard(ws)
        return ws

    # ---- REST ----
    @web.middleware
    async def _faults_mw(self, request: web.Request, handler):
        if (request.method, request.path) not in CHANGING:
            return await self._faulty(request, handler)
        response = await self._faulty(request, handler)
        p = request.get(_PARAMS) or {}
        result = "accepted" if response.status in (200, 204) else f"http {response.status}"  # 204: a lost reply
        if response.status != 200 and isinstance(response, web.Response) and response.body is not None:
            try:
                result = f"rejected {json.loads(response.body)['code']}"
            except (ValueError, KeyError, TypeError):
                pass
        create = request.method == "POST" and request.path == "/fapi/v1/order" and result == "accepted"
        self.order_log.record(request.method, request.path, p.get("newClientOrderId") or p.get("origClientOrderId"),
                              token_of(request.headers.get(FENCE_HEADER)), response.status, result,
                              [o.client_id for o in self.x.open_orders()] if create else None)  # fmt: skip
        return response

    async def _faulty(self, request: web.Request, handler):
        if request.path.startswith("/admin/") or request.path == "/metrics":
            return await handler(request)  # the operator's, not a client's: no fault, not in `requests`
        f = self.faults
        f.requests.append((request.method, request.path))
        if f.slow_s > 0:
            self._injected("slow_s")
            await asyncio.sleep(f.slow_s)
        if f.depth_slow_s > 0 and request.path == "/fapi/v1/depth":
            self._injected("depth_slow_s")
            await asyncio.sleep(f.depth_slow_s)
        private = request.path.startswith("/fapi/") and request.path not in (
            "/fapi/v1/exchangeInfo", "/fapi/v1/time", "/fapi/v1/depth")  # fmt: skip
        if private and f.http_status and f.http_count > 0:
            f.http_count -= 1
            self._injected("http_status")
            headers = {"Retry-After": str(f.retry_after_s)} if f.retry_after_s else {}
            if f.http_status in (418, 429):
                body = {"code": -1003, "msg": "Too many requests; current limit is 2400 requests per minute."}
                return web.json_response(body, status=f.http_status, headers=headers)
            return web.Response(status=f.http_status, text="Service Unavailable", headers=headers)
        try:
            return await handler(request)
        except Rejected as e:
            if request.method == "POST" and request.path == "/fapi/v1/order":
                self.orders_rejected[e.code] = self.orders_rejected.get(e.code, 0) + 1
            return web.json_response({"code": e.code, "msg": e.msg}, status=e.http_status)

    async def admin_faults(self, request: web.Request) -> web.Response:
        """GET: the fault knobs' values; POST a JSON object of knob: value to set them (all or none).

        Loopback peers only (403 otherwise, whatever address the server is bound to); an unknown
        knob, a wrong type or range is a 400 naming it.
        """
        if not loopback_peer(request.remote):
            return web.json_response({"error": f"admin is for loopback peers only, not {request.remote}"}, status=403)
        if request.method == "POST":
            try:
                values = await request.json()
            except ValueError:
                return web.json_response({"error": "body: not JSON"}, status=400)
            if not isinstance(values, dict):
                return web.json_response({"error": "body: expected a JSON object of knob: value"}, status=400)
            try:
                self.faults.set(values)
            except ValueError as e:
                return web.json_response({"error": str(e)}, status=400)
        return web.json_response(self.faults.values())

    async def admin_orders(self, request: web.Request) -> web.Response:
        """GET: the order log (every venue-changing request, its fencing token and result) and its check's counts."""
        if not loopback_peer(request.remote):
            return web.json_response({"error": f"admin is for loopback peers only, not {request.remote}"}, status=403)
        entries = self.order_log.entries
        return web.json_response({"entries": entries, "check": check_fencing(entries).as_dict()})

    async def metrics_text(self, request: web.Request) -> web.Response:
        """Prometheus's text format of the venue's metrics (grinder.venue.metrics); loopback peers only (403)."""
        if not loopback_peer(request.remote):
            return web.json_response({"error": f"metrics are for loopback peers only, not {request.remote}"},
                                     status=403)  # fmt: skip
        return web.Response(body=generate_latest(self.metrics), headers={"Content-Type": CONTENT_TYPE})

    async def _signed(self, request: web.Request) -> dict[str, str]:
        body = (await request.text()) if request.method in ("POST", "PUT") else ""
        # The signature covers the query exactly as sent: percent-encoded, not decoded.
        query = request.rel_url.raw_query_string
        params, err = check_signed(self.creds, request.headers.get("X-MBX-APIKEY"), query, body,
                                   int(time.time() * 1000))  # fmt: skip
        if err is not None:
            raise Rejected(err[0], err[1], 401 if err[0] in (-2015, -1022) else 400)
        sym = params.get("symbol")
        if sym is not None and sym != self.inst.symbol:
            raise Rejected(-1121, "Invalid symbol.")
        request[_PARAMS] = params  # the order log names the client order id
        return params

    async def exchange_info(self, request: web.Request) -> web.Response:
        i = self.inst
        base = i.symbol[: -len("USDT")] if i.symbol.endswith("USDT") else i.symbol
        sym = {
            "symbol": i.symbol, "pair": i.symbol, "contractType": "PERPETUAL", "deliveryDate": 4133404800000,
            "onboardDate": 1569398400000, "status": "TRADING", "baseAsset": base, "quoteAsset": "USDT",
            "marginAsset": "USDT", "pricePrecision": self.wire.decimals, "quantityPrecision": self.wire.qty_decimals,
            "baseAssetPrecision": 8, "quotePrecision": 8,
            "filters": [
                {"filterType": "PRICE_FILTER", "minPrice": self.px(1), "maxPrice": "10000000", "tickSize": self.px(1)},
                {"filterType": "LOT_SIZE", "minQty": self.qty(i.lot_size), "maxQty": "100000",
                 "stepSize": self.qty(i.lot_size)},
                {"filterType": "MARKET_LOT_SIZE", "minQty": self.qty(i.lot_size), "maxQty": "100000",
                 "stepSize": self.qty(i.lot_size)},
                {"filterType": "MIN_NOTIONAL", "notional": f"{i.min_notional:g}"},
            ],
            "orderTypes": ["LIMIT", "MARKET", "STOP", "STOP_MARKET", "TAKE_PROFIT", "TAKE_PROFIT_MARKET",
                           "TRAILING_STOP_MARKET"],
            "timeInForce": ["GTC", "IOC", "FOK", "GTX", "GTD"],
        }  # fmt: skip
        return web.json_response({"timezone": "UTC", "serverTime": int(time.time() * 1000), "rateLimits": [],
                                  "exchangeFilters": [], "assets": [], "symbols": [sym]})  # fmt: skip

    async def server_time(self, request: web.Request) -> web.Response:
        return web.json_response({"serverTime": int(time.time() * 1000)})

    async def depth(self, request: web.Request) -> web.Response:
        if request.query.get("symbol") != self.inst.symbol:
            raise Rejected(-1121, "Invalid symbol.")
        try:
            limit = int(request.query.get("limit", "500"))
        except ValueError:
            raise Rejected(*BAD_PARAM) from None
        bids, asks = self.x.depth(max(1, min(limit, 1000)))
        return web.json_response({
            "lastUpdateId": self.update_id, "E": ms(self.now_ns), "T": ms(self.now_ns),
            "bids": [[self.px(p), self.qty(q)] for p, q in bids], "asks": [[self.px(p), self.qty(q)] for p, q in asks],
        })  # fmt: skip

    async def listen_key(self, request: web.Request) -> web.Response:
        if request.headers.get("X-MBX-APIKEY") != self.creds.api_key:
            raise Rejected(-2015, "Invalid API-key, IP, or permissions for action.", 401)
        if request.method == "POST":
            key = secrets.token_urlsafe(24)
            self.listen_keys.add(key)
            return web.json_response({"listenKey": key})
        if request.method == "PUT":  # keepalive: the account's key stays valid
            return web.json_response({})
        if request.method == "DELETE":  # the user stream ends
            for key in list(self.listen_keys):
                for ws in self.user_socks.pop(key, set()):
                    await ws.close()
            self.listen_keys.clear()
            return web.json_response({})
        raise web.HTTPMethodNotAllowed(request.method, ["POST", "PUT", "DELETE"])

    async def create_order(self, request: web.Request) -> web.Response:
        p = await self._signed(request)
        side = {"BUY": 1, "SELL": -1}.get(p.get("side", ""))
        if side is None:
            raise Rejected(*BAD_SIDE)
        kind = p.get("type")
        if kind not in ("LIMIT", "MARKET"):
            raise Rejected(-1116, "Invalid orderType.")
        cid = p.get("newClientOrderId") or f"venue-{secrets.token_hex(8)}"
        reduce_only = p.get("reduceOnly") == "true"
        try:
            if "symbol" not in p:
                raise KeyError("symbol")
            qty = float(p["quantity"])
            if not math.isfinite(qty):
                raise ValueError(p["quantity"])
            if kind == "LIMIT":
                price = float(p["price"])
                if not math.isfinite(price) or price <= 0:
                    raise ValueError(p["price"])
                tif = p.get("timeInForce", "GTC")
        except (KeyError, ValueError):
            raise Rejected(*BAD_PARAM) from None
        if kind == "MARKET":
            # Walks the book with no price limit (grinder.venue.exchange.take); the reply is its end (RESULT).
            for name in ("price", "timeInForce"):
                if name in p:
                    raise Rejected(NOT_REQUIRED[0], NOT_REQUIRED[1].format(name))
            events = self.x.take(cid, side, None, qty, reduce_only, self.now_ns)
            reply = self.wire.order(events[0].order)
            self.orders_accepted += 1
            await self._emit_orders(events)
            return self._reply(request, reply)
        ticks = round(price / self.inst.tick_size)
        if abs(ticks * self.inst.tick_size - price) > 1e-9 * max(1.0, price):
            raise Rejected(-4014, "Price not increased by tick size.")
        if tif == "IOC":  # a flatten or a strategy's taker: filled at once, the reply is its end (Binance's RESULT)
            events = self.x.take(cid, side, ticks, qty, reduce_only, self.now_ns)
            reply = self.wire.order(events[0].order)
        else:
            events = [self.x.create(cid, side, ticks, qty, tif, self.now_ns)]
            reply = self.wire.order(events[0].order)  # as created: NEW, whatever the replay does meanwhile
        self.orders_accepted += 1
        await self._emit_orders(events)
        return self._reply(request, reply)

    def _reply(self, request: web.Request, reply: dict) -> web.Response:
        """A create's reply, or (the fault) the connection dropped instead: accepted, but the reply never arrives."""
        if self.faults.lose_create_replies > 0:
            self.faults.lose_create_replies -= 1
            self._injected("lose_create_replies")
            request.transport.close()  # type: ignore[union-attr]
            return web.Response(status=204)
        return web.json_response(reply)

    def _order_of(self, p: dict[str, str]) -> tuple[int | None, str | None]:
        oid = p.get("orderId")
        cid = p.get("origClientOrderId")
        if oid is None and cid is None:
            raise Rejected(-1102, "Either orderId or origClientOrderId must be sent.")
        try:
            return (int(oid) if oid is not None else None), cid
        except ValueError:
            raise Rejected(*BAD_PARAM) from None

    async def cancel_order(self, request: web.Request) -> web.Response:
        p = await self._signed(request)
        oid, cid = self._order_of(p)
        ev = self.x.cancel(self.now_ns, oid, cid)
        reply = self.wire.order(ev.order)
        await self._emit_orders([ev])
        return web.json_response(reply)

    async def get_order(self, request: web.Request) -> web.Response:
        p = await self._signed(request)
        oid, cid = self._order_of(p)
        return web.json_response(self.wire.order(self.x.find(oid, cid)))

    async def open_orders(self, request: web.Request) -> web.Response:
        await self._signed(request)
        return web.json_response([self.wire.order(o) for o in self.x.open_orders()])

    async def all_orders(self, request: web.Request) -> web.Response:
        """Binance's allOrders: from `orderId` on (oldest first), else the most recent; `limit` (500, at most 1000)."""
        p = await self._signed(request)
        try:
            limit = min(max(int(p.get("limit", 500)), 1), 1000)
            start = int(p["orderId"]) if "orderId" in p else None
        except ValueError:
            raise Rejected(*BAD_PARAM) from None
        orders = list(self.x.orders.values())  # in order id order: ids grow as orders are taken
        orders = [o for o in orders if o.order_id >= start][:limit] if start is not None else orders[-limit:]
        return web.json_response([self.wire.order(o) for o in orders])

    async def countdown_cancel_all(self, request: web.Request) -> web.Response:
        """Arm (countdownTime ms > 0, from now: a later call replaces it) or cancel (0) the symbol's countdown.

        When it runs out every open order of the symbol is cancelled, ours and anyone's, with the
        user-stream events of a cancel-all.
        """
        p = await self._signed(request)
        try:
            if "symbol" not in p:
                raise KeyError("symbol")
            countdown_ms = int(p["countdownTime"])
            if countdown_ms < 0:
                raise ValueError(countdown_ms)
        except (KeyError, ValueError):
            raise Rejected(*BAD_PARAM) from None
        if self._countdown is not None:
            self._countdown.cancel()
            self._countdown = None
        self.countdown_ms = countdown_ms
        if countdown_ms:
            self._countdown = asyncio.get_running_loop().call_later(countdown_ms / 1000, self._countdown_runs_out)
        return web.json_response({"symbol": p["symbol"], "countdownTime": str(countdown_ms)})

    def _countdown_runs_out(self) -> None:
        self._countdown, self.countdown_ms = None, 0
        self.countdowns_fired += 1
        events = [self.x.cancel(self.now_ns, o.order_id) for o in self.x.open_orders()]  # at once, as one request
        task = asyncio.get_running_loop().create_task(self._emit_orders(events))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def cancel_all(self, request: web.Request) -> web.Response:
        await self._signed(request)
        events = [self.x.cancel(self.now_ns, o.order_id) for o in self.x.open_orders()]
        await self._emit_orders(events)
        return web.json_response({"code": 200, "msg": "The operation of cancel all open order is done."})

    async def leverage_bracket(self, request: web.Request) -> web.Response:
        await self._signed(request)
        return web.json_response([{"symbol": self.inst.symbol, "brackets": [
            {"bracket": 1, "initialLeverage": 20, "notionalCap": 10_000_000, "notionalFloor": 0,
             "maintMarginRatio": 0.004, "cum": 0}]}])  # fmt: skip

    async def position_risk(self, request: web.Request) -> web.Response:
        await self._signed(request)
        return web.json_response(self.wire.position_risk(self.x, self.now_ns))

    async def account(self, request: web.Request) -> web.Response:
        await self._signed(request)
        return web.json_response(self.wire.account(self.x, self.now_ns))


def _changed(before: list[tuple[int, float]], after: list[tuple[int, float]]) -> list[tuple[int, float]]:
    """Levels whose quantity differs between two depth lists (0 for levels that went away), by price."""
    a, b = dict(before), dict(after)
    return sorted((p, b.get(p, 0.0)) for p in set(a) | set(b) if a.get(p, 0.0) != b.get(p, 0.0))
