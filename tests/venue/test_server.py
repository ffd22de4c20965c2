"""The emulator through the real ccxt.pro binanceusdm client over loopback: books, orders, user stream, faults."""

from __future__ import annotations

import asyncio
from pathlib import Path

import ccxt
import pytest

from grinder.data.tape import load_tape
from grinder.live.client import GrinderBinance, client_options
from grinder.venue.auth import Credentials
from grinder.venue.server import VenueServer
from tests.conftest import REPO

SYMBOL = "BTC/USDT:USDT"
CREDS = Credentials("test-key", "test-secret")


@pytest.fixture(scope="module")
def tape():
    return load_tape(Path(REPO / "data" / "sample" / "lake"), "binance-usdm", "BTCUSDT")


def client(port: int, secret: str = CREDS.secret) -> GrinderBinance:
    """The adapter's ccxt.pro client (binanceusdm plus taps) pointed at the emulator on `port`."""
    return GrinderBinance(client_options(f"http://127.0.0.1:{port}", CREDS.api_key, secret))


def scenario(tape, body, speed: float = 50.0, prerows: int = 0):
    """Run `body(server, ccxt client)` against a fresh emulator, replay started after `prerows` rows."""

    async def main():
        srv = VenueServer(tape, CREDS, speed=speed)
        srv.preroll()
        if prerows:
            await srv.run_replay(until_row=srv.row + prerows)
        port = await srv.start()
        ex = client(port)
        try:
            return await body(srv, ex)
        finally:
            await ex.close()
            await srv.stop()

    return asyncio.run(main())


def test_markets_and_a_streamed_book_equal_the_venues_book(tape):
    async def body(srv, ex):
        m = await ex.load_markets()
        assert (
            list(m) == [SYMBOL] and m[SYMBOL]["precision"]["price"] == 0.1 and m[SYMBOL]["limits"]["cost"]["min"] == 100
        )
        await ex.watch_order_book(SYMBOL)  # snapshot; then diffs with U / u / pu
        replay = asyncio.create_task(srv.run_replay(until_row=srv.row + 3000))
        while not replay.done():
            ob = await asyncio.wait_for(ex.watch_order_book(SYMBOL), 10)
        await replay
        await asyncio.sleep(0.2)  # the last updates reach the client
        ob = ex.orderbooks[SYMBOL]
        bids, asks = srv.x.depth(20)
        assert [(round(p / 0.1), q) for p, q in ob["bids"][:20]] == [(p, pytest.approx(q)) for p, q in bids]
        assert [(round(p / 0.1), q) for p, q in ob["asks"][:20]] == [(p, pytest.approx(q)) for p, q in asks]
        assert ob["nonce"] == srv.update_id

    scenario(tape, body)


def test_orders_round_trip_and_the_user_stream_reports_them(tape):
    async def body(srv, ex):
        await ex.load_markets()
        bb, _ = srv.x.best()
        watch = asyncio.create_task(ex.watch_orders(SYMBOL))
        await asyncio.sleep(0.3)
        o = await ex.create_order(SYMBOL, "limit", "buy", 0.002, (bb - 50) * 0.1,
                                  {"postOnly": True, "clientOrderId": "grinder_static_grid:BTCUSDT:1"})  # fmt: skip
        assert o["status"] == "open" and o["postOnly"] and o["clientOrderId"] == "grinder_static_grid:BTCUSDT:1"
        seen = await asyncio.wait_for(watch, 5)
        assert seen[-1]["clientOrderId"] == "grinder_static_grid:BTCUSDT:1" and seen[-1]["status"] == "open"
        assert [x["id"] for x in await ex.fetch_open_orders(SYMBOL)] == [o["id"]]
        got = await ex.fetch_order(None, SYMBOL, {"clientOrderId": "grinder_static_grid:BTCUSDT:1"})
        assert got["id"] == o["id"]
        assert (await ex.cancel_order(o["id"], SYMBOL))["status"] == "canceled"
        assert await ex.fetch_open_orders(SYMBOL) == []
        with pytest.raises(ccxt.OrderNotFound):
            await ex.cancel_order(o["id"], SYMBOL)
        with pytest.raises(ccxt.InvalidOrder):  # post-only that would take
            await ex.create_order(SYMBOL, "limit", "buy", 0.002, (bb + 100) * 0.1, {"postOnly": True})

    scenario(tape, body)


def test_a_resting_order_fills_and_position_and_balance_follow(tape):
    async def body(srv, ex):
        await ex.load_markets()
        bb, ba = srv.x.best()
        trades = asyncio.create_task(ex.watch_my_trades(SYMBOL))
        await asyncio.sleep(0.3)
        await ex.create_order(SYMBOL, "limit", "buy", 0.002, bb * 0.1, {"postOnly": True, "clientOrderId": "f1"})
        await ex.create_order(SYMBOL, "limit", "sell", 0.002, ba * 0.1, {"postOnly": True, "clientOrderId": "f2"})
        replay = asyncio.create_task(srv.run_replay())
        fills = await asyncio.wait_for(trades, 60)
        replay.cancel()
        f = fills[0]
        assert f["takerOrMaker"] == "maker" and f["amount"] == 0.002 and round(f["price"] / 0.1) in (bb, ba)
        pos = srv.x.position()[0]
        positions = await ex.fetch_positions([SYMBOL])
        assert sum((p["contracts"] or 0) * (1 if p["side"] == "long" else -1) for p in positions) == pytest.approx(pos)
        bal = await ex.fetch_balance()
        assert bal["USDT"]["total"] == pytest.approx(srv.x.wallet() + srv.x.unrealized(), abs=1e-6)

    scenario(tape, body, speed=200.0)


def test_bad_signature_is_refused_as_binance_does(tape):
    async def body(srv, ex):
        bad = client(int(str(ex.urls["api"]["fapiPublic"]).split(":")[2].split("/")[0]), secret="wrong")
        try:
            await bad.load_markets()
            with pytest.raises(ccxt.AuthenticationError):
                await bad.fetch_open_orders(SYMBOL)
        finally:
            await bad.close()

    scenario(tape, body)


def test_a_sequence_gap_fails_the_book_and_the_next_watch_resyncs(tape):
    async def body(srv, ex):
        await ex.load_markets()
        await ex.watch_order_book(SYMBOL)
        srv.faults.seq_gap = True
        replay = asyncio.create_task(srv.run_replay(until_row=srv.row + 2000))
        with pytest.raises(ccxt.ChecksumError):
            while True:
                await asyncio.wait_for(ex.watch_order_book(SYMBOL), 10)
        await replay
        ob = await asyncio.wait_for(ex.watch_order_book(SYMBOL), 10)  # resubscribe + a new snapshot
        assert ob["nonce"] == srv.update_id
        bids, asks = srv.x.depth(5)
        assert [round(p / 0.1) for p, _ in ob["bids"][:5]] == [p for p, _ in bids]
        assert [round(p / 0.1) for p, _ in ob["asks"][:5]] == [p for p, _ in asks]
        assert sum(1 for m, p in srv.faults.requests if p == "/fapi/v1/depth") == 2

    scenario(tape, body)


def test_rate_limit_server_errors_and_a_lost_create_reply(tape):
    async def body(srv, ex):
        await ex.load_markets()
        bb, _ = srv.x.best()
        px = (bb - 50) * 0.1
        srv.faults.http_status, srv.faults.http_count, srv.faults.retry_after_s = 429, 1, 2
        with pytest.raises(ccxt.DDoSProtection):
            await ex.create_order(SYMBOL, "limit", "buy", 0.002, px, {"postOnly": True, "clientOrderId": "r1"})
        srv.faults.http_status, srv.faults.http_count = 503, 1
        with pytest.raises(ccxt.ExchangeNotAvailable):
            await ex.create_order(SYMBOL, "limit", "buy", 0.002, px, {"postOnly": True, "clientOrderId": "r1"})
        assert await ex.fetch_open_orders(SYMBOL) == []  # refused requests left nothing behind
        srv.faults.lose_create_replies = 1
        with pytest.raises(ccxt.NetworkError):
            await ex.create_order(SYMBOL, "limit", "buy", 0.002, px, {"postOnly": True, "clientOrderId": "lost1"})
        found = await ex.fetch_order(None, SYMBOL, {"clientOrderId": "lost1"})  # the order exists: look it up
        assert found["status"] == "open"
        with pytest.raises(ccxt.ExchangeError, match="-4116"):  # sending it again cannot make a second one
            await ex.create_order(SYMBOL, "limit", "buy", 0.002, px, {"postOnly": True, "clientOrderId": "lost1"})
        assert len(await ex.fetch_open_orders(SYMBOL)) == 1

    scenario(tape, body)


def test_a_stepped_replay_streams_every_row_up_to_its_time_and_matches_orders_there(tape):
    async def body(srv, ex):
        await ex.load_markets()
        await ex.watch_order_book(SYMBOL)  # synced on the snapshot
        t = int(tape.ts_exch[srv.row]) + 2_000_000_000
        u = await srv.advance_to(t)
        assert u == srv.update_id > 1000 and srv.now_ns == t
        assert tape.ts_exch[srv.row - 1] <= t < tape.ts_exch[srv.row]  # every row up to t, none after
        while ex.orderbooks[SYMBOL]["nonce"] != u:  # each update sent reaches the client
            await asyncio.wait_for(ex.watch_order_book(SYMBOL), 10)
        ob, (bids, asks) = ex.orderbooks[SYMBOL], srv.x.depth(20)
        assert [(round(p / 0.1), q) for p, q in ob["bids"][:20]] == [(p, pytest.approx(q)) for p, q in bids]
        assert [(round(p / 0.1), q) for p, q in ob["asks"][:20]] == [(p, pytest.approx(q)) for p, q in asks]
        bb, _ = srv.x.best()
        await ex.create_order(SYMBOL, "limit", "buy", 0.002, (bb - 50) * 0.1, {"postOnly": True, "clientOrderId": "s1"})
        assert srv.x.find(client_id="s1").created_ns == t  # the venue stands at t until the next step
        assert await srv.advance_to(t) == u and srv.now_ns == t  # nothing more to stream

    scenario(tape, body)


def test_the_order_history_lists_every_order_from_an_id_on_or_the_most_recent(tape):
    async def body(srv, ex):
        await ex.load_markets()
        bb, _ = srv.x.best()
        placed = []
        for n in range(5):
            o = await ex.create_order(SYMBOL, "limit", "buy", 0.002, (bb - 50 - n) * 0.1,
                                      {"postOnly": True, "clientOrderId": f"h{n}"})  # fmt: skip
            placed.append(o["id"])
        await ex.cancel_order(placed[1], SYMBOL)  # closed orders are history too
        assert [o["clientOrderId"] for o in await ex.fetch_orders(SYMBOL)] == [f"h{n}" for n in range(5)]
        assert [o["clientOrderId"] for o in await ex.fetch_orders(SYMBOL, None, 2)] == ["h3", "h4"]
        after = await ex.fetch_orders(SYMBOL, None, 2, {"orderId": placed[1]})  # from that id on, oldest first
        assert [(o["clientOrderId"], o["status"]) for o in after] == [("h1", "canceled"), ("h2", "open")]
        assert await ex.fetch_orders(SYMBOL, None, None, {"orderId": int(placed[-1]) + 1}) == []

    scenario(tape, body)
