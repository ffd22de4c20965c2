"""The ccxt.pro client the adapter, paper mode and the recorder talk through, and where its secrets come from.

`GrinderBinance` is ccxt.pro's binanceusdm with additions that change nothing it sends (but a
presigned request's timestamp) or parses: *taps*, callables that see every raw market message
(depth diffs, trades, REST depth snapshots) with its local receive time; monotonic timestamps of
the last depth update received and of the first request sent after `arm_probe()` (the
decision-latency probe's two ends); and one *presigned* order request, built and signed by ccxt
ahead of a decision's tick and sent by the matching create or cancel (decision 014). The recorder
writes what the taps see; paper mode matches orders against it.
"""

from __future__ import annotations

import inspect
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from urllib.parse import urlsplit

import ccxt.pro as ccxtpro

from grinder.data.instruments import Instrument, known_instruments, resolve_instrument
from grinder.errors import ConfigError
from grinder.live.config import LiveConfig
from grinder.live.guard import check_order_venue, parse_api_url
from grinder.live.leader import FENCE_HEADER
from grinder.venue.server import api_urls
from grinder.venue.wire import decimals_of

MARKET_EVENTS = ("depthUpdate", "trade")
# Where ccxt's sandbox switch points binanceusdm (ccxt 4.5): testnet mode without api_url talks to these only.
TESTNET_HOSTS = frozenset(
    ("testnet.binancefuture.com fstream.binancefuture.com dstream.binancefuture.com testnet.binance.vision "
     "stream.testnet.binance.vision ws-api.testnet.binance.vision").split()
)  # fmt: skip

Tap = Callable[[int, dict], None]  # (local receive time ns since the epoch, raw message)

# A presigned request older than this is not used, or, if it got this old waiting for ccxt's rate
# limiter, is signed again: Binance refuses a timestamp older than the recvWindow ccxt sends (10 s),
# and a request meant for one tick belongs to that tick.
PRESIGNED_MAX_AGE_NS = 50_000_000
# ccxt's endpoint descriptors (path, api, method, rate-limit config), as its implicit methods use them
_POST_ORDER = inspect.getattr_static(ccxtpro.binanceusdm, "fapiPrivatePostOrder")
_DELETE_ORDER = inspect.getattr_static(ccxtpro.binanceusdm, "fapiPrivateDeleteOrder")


@dataclass(frozen=True)
class Presigned:
    """An order request ccxt built and signed ahead (`sign`'s url, method, headers, body), for one call."""

    # The call it is for: ("create", symbol, side, amount, price, client id) or ("cancel", symbol, client id).
    key: tuple
    endpoint: object  # the ccxt endpoint (its path, api, method and rate-limit config)
    params: dict
    market: dict
    request: dict
    signed_ns: int  # time.perf_counter_ns()


class _Prewarmed(Exception):
    """Raised by `fetch` during a prewarm: the request was built and signed, and is not sent."""


class GrinderBinance(ccxtpro.binanceusdm):
    """binanceusdm with taps on the raw market feed and timestamps for the latency probe."""

    def __init__(self, config: dict | None = None):
        super().__init__(config or {})
        self.taps: list[Tap] = []
        self.depth_arrival_ns = 0  # time.perf_counter_ns() when the last depth update arrived
        self.first_request_ns = 0  # time.perf_counter_ns() of the first order request since arm_probe()
        self._prewarming = False
        self._presigned: Presigned | None = None
        self.presigned_sent = 0  # requests that left presigned
        self.order_events = 0  # user-stream order updates (ORDER_TRADE_UPDATE) handled so far
        # Leader election (live.leader): with one, every request that changes the venue is fenced in `fetch`.
        self.fence = None

    def handle_message(self, client, message):  # noqa: D102 - ccxt's hook, called for every WebSocket message
        if isinstance(message, dict):
            event = message.get("e")
            if self.taps and event in MARKET_EVENTS:
                now = time.time_ns()
                for tap in self.taps:
                    tap(now, message)
            # Stamped after the taps: their work (the recorder's, paper mode's local venue) is the
            # venue's side of the wire, not the adapter's reaction time.
            if event == "depthUpdate":
                self.depth_arrival_ns = time.perf_counter_ns()
            elif event == "ORDER_TRADE_UPDATE":
                self.order_events += 1
        return super().handle_message(client, message)

    async def request(self, path, api=None, method="GET", params=None, config=None):  # noqa: D102 - ccxt's
        response = await super().request(path, api or ["public"], method, params or {}, config or {})
        # The REST depth snapshot ccxt syncs the diff stream from: the taps need it to sync too.
        if self.taps and path == "depth" and isinstance(response, dict) and "lastUpdateId" in response:
            now = time.time_ns()
            for tap in self.taps:
                tap(now, response)
        return response

    async def fetch(self, url, method="GET", headers=None, body=None):  # noqa: D102 - ccxt's HTTP call
        if self._prewarming:
            raise _Prewarmed
        if self.fence is not None and method != "GET" and not _user_stream_key(method, url):
            # Every request that changes the venue (orders, cancels, cancel-all, the countdown) leaves only
            # under a lease this process can trust, and carries its fencing token; nothing is awaited
            # between this check and the HTTP call (decision 041: what is left is aiohttp's own path, and
            # the connection it may have to make first is fenced again in _connect_fenced).
            fence = self.fence  # `fence()` raises Fenced (and audits it) unless the lease is trusted now
            token = fence.token if fence.valid() else fence.fence(f"{method} {_path(url)}")
            headers = {**(headers or {}), FENCE_HEADER: str(token)}
        self.mark_request()
        return await super().fetch(url, method, headers, body)

    def open(self, lazy=False):  # noqa: D102 - ccxt's: makes its aiohttp session (and connector) on first use
        super().open(lazy)
        c = self.tcp_connector
        if c is not None and "connect" not in vars(c):
            # The fence looks again once aiohttp has a connection for the request, the last step before it is
            # written (decision 041): a new one (DNS, TCP, TLS) can take up to ccxt's timeout, long enough for
            # the lease to run out and a new leader to act.
            c.connect = partial(_connect_fenced, c.connect, self)

    def _post_only_request(self, market: dict, side: str, amount: float, price: float, client_id: str) -> dict:
        # What create_order sends for a post-only limit order (docs/venue-protocol.md); quantities are
        # truncated and prices rounded to the market's steps, as ccxt does.
        lot, tick = float(market["precision"]["amount"]), float(market["precision"]["price"])
        lots, ticks = math.floor(amount / lot + 1e-9), round(price / tick)
        return {"symbol": market["id"], "side": side.upper(), "newClientOrderId": client_id,
                "newOrderRespType": "RESULT", "type": "LIMIT", "quantity": _plain(lots * lot, lot),
                "price": _plain(ticks * tick, tick), "timeInForce": "GTX"}  # fmt: skip

    async def create_post_only(self, symbol: str, side: str, amount: float, price: float, client_id: str) -> dict:
        """A post-only limit order, as ccxt's `create_order` would send it, through its signed endpoint.

        `create_order`'s generic handling of options and precision is skipped (decision 012); the
        request, the signature, the error classes and the parsed order are ccxt's all the same. The
        request presigned for exactly this call, if there is one, is sent instead of signing now.
        """
        pre = self._take_presigned(("create", symbol, side, amount, price, client_id))
        if pre is not None:
            return self.parse_order(await self._send_presigned(pre), pre.market)
        market = self.market(symbol)
        response = await self.fapiPrivatePostOrder(self._post_only_request(market, side, amount, price, client_id))
        return self.parse_order(response, market)

    async def cancel_by_client_id(self, symbol: str, client_id: str) -> dict:
        """Cancel by client order id through ccxt's signed endpoint (what `cancel_order` sends); presigned if it was."""
        pre = self._take_presigned(("cancel", symbol, client_id))
        if pre is not None:
            return self.parse_order(await self._send_presigned(pre), pre.market)
        market = self.market(symbol)
        response = await self.fapiPrivateDeleteOrder({"symbol": market["id"], "origClientOrderId": client_id})
        return self.parse_order(response, market)

    def presign_post_only(self, symbol: str, side: str, amount: float, price: float, client_id: str) -> None:
        """Have ccxt build and sign now the request `create_post_only` with these arguments will send.

        Kept for one call, and for PRESIGNED_MAX_AGE_NS; a later presign replaces it. The request is
        ccxt's (`sign` on its endpoint), with a timestamp from now instead of from the send.
        """
        market = self.market(symbol)
        params = self._post_only_request(market, side, amount, price, client_id)
        self._presign(("create", symbol, side, amount, price, client_id), _POST_ORDER, params, market)

    def presign_cancel(self, symbol: str, client_id: str) -> None:
        """Have ccxt build and sign now the request `cancel_by_client_id(symbol, client_id)` will send."""
        market = self.market(symbol)
        params = {"symbol": market["id"], "origClientOrderId": client_id}
        self._presign(("cancel", symbol, client_id), _DELETE_ORDER, params, market)

    def _presign(self, key: tuple, endpoint, params: dict, market: dict) -> None:
        self._presigned = None
        if not self.apiKey:
            return
        # What fetch2 signs for this endpoint (its per-call options are not used by these requests).
        request = self.sign(endpoint.path, endpoint.api, endpoint.method, dict(params))
        self._presigned = Presigned(key, endpoint, params, market, request, time.perf_counter_ns())

    def drop_presigned(self) -> None:
        """Forget the presigned request, if any (its decision has gone by)."""
        self._presigned = None

    def _take_presigned(self, key: tuple) -> Presigned | None:
        pre, self._presigned = self._presigned, None
        if pre is None or pre.key != key or time.perf_counter_ns() - pre.signed_ns > PRESIGNED_MAX_AGE_NS:
            return None
        return pre

    async def _send_presigned(self, pre: Presigned):
        # fetch2's steps around its signature, in its order: the rate limiter, then ccxt's record of the
        # request, then the HTTP call (whose errors ccxt maps to its classes as for any request).
        e, r = pre.endpoint, pre.request
        if self.enableRateLimit:
            await self.throttle(self.calculate_rate_limiter_cost(e.api, e.method, e.path, pre.params, e.config))
            if time.perf_counter_ns() - pre.signed_ns > PRESIGNED_MAX_AGE_NS:  # the limiter held it back
                r = self.sign(e.path, e.api, e.method, dict(pre.params))
        self.set_last_rest_request_timestamp()
        self.set_last_request(r)
        if r is pre.request:
            self.presigned_sent += 1
        return await self.fetch(r["url"], r["method"], r["headers"], r["body"])

    def prewarm(self, symbol: str, price: float, amount: float) -> None:
        """Run a create's and a cancel's whole path up to the connection, sending nothing: it is in the CPU's caches.

        Both go through the same calls as real ones (`create_post_only`, `cancel_by_client_id`:
        ccxt's endpoint, request, fetch2 and sign) until `fetch`, which stops them. Nothing in that
        path waits, so each runs to the stop in one step, outside the event loop. The rate limiter is
        off meanwhile (a throwaway must not spend the venue's request weight), and ccxt's record of
        the last request is put back.
        """
        if not self.apiKey:
            return
        kept = (self.enableRateLimit, self.last_request_url, self.last_request_headers, self.last_request_body,
                self.lastRestRequestTimestamp)  # fmt: skip
        self.enableRateLimit, self._prewarming = False, True
        try:
            create = partial(self.create_post_only, symbol, "buy", amount, price, "w")
            for path in (create, partial(self.cancel_by_client_id, symbol, "w")):
                coro = path()
                try:
                    coro.send(None)
                except _Prewarmed:
                    continue
                coro.close()
                raise RuntimeError("prewarm: the order path waited before reaching fetch")
        finally:
            self._prewarming = False
            (self.enableRateLimit, self.last_request_url, self.last_request_headers, self.last_request_body,
             self.lastRestRequestTimestamp) = kept  # fmt: skip

    def arm_probe(self) -> None:
        """Forget the last request time: the next request sent is stamped in `first_request_ns`."""
        self.first_request_ns = 0

    def mark_request(self) -> None:
        """A request leaves now (the HTTP call is handed to the connection; paper: the local venue is called)."""
        if not self.first_request_ns:
            self.first_request_ns = time.perf_counter_ns()


async def _connect_fenced(connect, ex: GrinderBinance, req, *args, **kwargs):
    """aiohttp's connector.connect for `ex`'s session, then the fence once more for a request that carries a token."""
    conn = await connect(req, *args, **kwargs)
    token = req.headers.get(FENCE_HEADER)
    if token is not None and ex.fence is not None:
        try:
            ex.fence.recheck(token, f"{req.method} {req.url.path}")
        except BaseException:
            conn.release()  # nothing was written on it: back to the pool
            raise
    return conn


def _user_stream_key(method: str, url: str) -> bool:
    """The user stream's listenKey taken or kept alive (POST, PUT): what every instance sends, leader or not.

    The key is the account's (Binance hands every caller the one active key), so a DELETE, which
    closes it under the leader's user stream too, is fenced like any other venue-changing request.
    """
    return method in ("POST", "PUT") and _path(url).endswith("/listenKey")


def _path(url: str) -> str:
    """A request URL's path, without the query (which holds the signature)."""
    return urlsplit(url).path


def _plain(value: float, step: float) -> str:
    """A number on a step's grid as ccxt writes it: the step's decimals, no trailing zeros."""
    text = f"{value:.{decimals_of(step)}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def market_instrument(market: dict, venue: str = "binance-usdm") -> Instrument:
    """A ccxt market as an Instrument: the venue's tick, lot and min notional; fees built in, else the venue's."""
    cost = (market.get("limits") or {}).get("cost") or {}
    rules: dict = {
        "tick_size": float(market["precision"]["price"]),
        "lot_size": float(market["precision"]["amount"]),
        "min_notional": float(cost.get("min") or 0.0),
    }
    if (venue, market["id"]) not in known_instruments():
        rules |= {
            "contract": "inverse" if market.get("inverse") else "linear",
            "base": market.get("base") or "",
            "quote": market.get("quote") or "",
            "maker_fee": float(market.get("maker") or 0.0),
            "taker_fee": float(market.get("taker") or 0.0),
        }
    return resolve_instrument(venue, market["id"], rules)


def credentials() -> tuple[str, str]:
    """API key and secret from GRINDER_API_KEY / GRINDER_API_SECRET, or *_FILE paths to files holding them."""
    out = []
    for name in ("GRINDER_API_KEY", "GRINDER_API_SECRET"):
        # Stripped as a file's content is: white space around a key is a paste slip, never part of it.
        value = os.environ.get(name, "").strip()
        path = os.environ.get(f"{name}_FILE", "")
        if not value and path:
            try:
                value = Path(path).read_text().strip()
            except OSError as e:
                raise ConfigError(f"{name}_FILE={path}: {e.strerror}") from None
        if not value:
            raise ConfigError(f"set {name} or {name}_FILE (secrets never come from the command line)")
        out.append(value)
    return out[0], out[1]


def client_options(api_url: str | None, key: str = "", secret: str = "") -> dict:
    """ccxt options for Binance (api_url None) or a Binance-compatible venue at api_url (the emulator)."""
    # ccxt's own throttle keeps a real venue's request weights; the emulator needs none (its faults test that).
    opts: dict = {"options": {"fetchCurrencies": False}, "enableRateLimit": not api_url}
    if key:
        opts |= {"apiKey": key, "secret": secret}
    if api_url:
        opts["urls"] = {"api": api_urls(api_url)}
    return opts


def make_client(cfg: LiveConfig, key: str = "", secret: str = "") -> GrinderBinance:
    """The client for the config: paper (no orders leave), the emulator, testnet, or Binance.

    Orders to anything but a loopback emulator need ALLOW_MAINNET_TRADE=1 and the symbol in the
    allowlist (`live.guard`), checked before the client exists. `api_url`, when set, is where every
    request goes in every mode (testnet included: ccxt's sandbox switch would move them to its own
    hosts); without it live mode talks to Binance and testnet mode to ccxt's testnet hosts. Which
    hosts the client ended up with is checked too: a ConfigError, never a request to another host.
    """
    venue = parse_api_url(cfg.api_url) if cfg.api_url else None
    opts = client_options(venue.base if venue else None, key, secret)
    if cfg.mode == "paper":
        from grinder.live.paper import PaperBinance  # paper builds on this module

        ex: GrinderBinance = PaperBinance(opts, cfg.symbol, cfg.paper_balance, cfg.paper_partial_fills)
    else:
        where = venue.base if venue else f"Binance {'testnet' if cfg.mode == 'testnet' else 'mainnet'}"
        check_order_venue(cfg.mode, cfg.symbol, cfg.mainnet_allowlist, where, venue is not None and venue.loopback)
        if not key or not secret:
            raise ConfigError(f"{cfg.mode} mode needs credentials (GRINDER_API_KEY / GRINDER_API_SECRET)")
        ex = GrinderBinance(opts)
    if venue is not None:
        # ccxt merges the options' URLs into its own: the endpoints not named there (spot, options,
        # the portfolio API...) would still point at Binance. Only the venue's are kept: a call to
        # any other endpoint fails in ccxt instead of leaving for another host.
        ex.urls["api"] = api_urls(venue.base)
    if cfg.mode == "testnet" and venue is None:
        ex.set_sandbox_mode(True)
    hosts = _hosts(ex.urls["api"])
    expected = {venue.host} if venue else TESTNET_HOSTS if cfg.mode == "testnet" else None
    if expected is not None and not hosts <= expected:
        raise ConfigError(f"the client would talk to {sorted(hosts - expected)}, not {sorted(expected)}: refusing")
    ex.exceptions["exact"].update(ex.exceptions["linear"]["exact"])  # the venue's error classes on any host
    return ex


def _hosts(urls: dict | str) -> set[str]:
    """Every host named in ccxt's (nested) `urls['api']`."""
    if isinstance(urls, str):
        return {(urlsplit(urls).hostname or "").lower()}
    return set().union(*(_hosts(v) for v in urls.values() if isinstance(v, dict | str)))
