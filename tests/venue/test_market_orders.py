"""Market orders at the emulator: the matching core's walk; Binance's replies, refusals and user stream over ccxt."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import ccxt
import pytest

from grinder.venue.exchange import EXPIRED, FILLED, Exchange, Rejected
from tests.venue.test_exchange import INST, venue
from tests.venue.test_server import CREDS, SYMBOL, scenario, tape  # noqa: F401 - tape is a fixture

# ---- the matching core ----


def test_a_market_order_walks_every_level_at_its_price_with_the_taker_fee_until_filled():
    x = venue()  # bids 99 x 5, 98 x 5; asks 101 x 5, 102 x 5
    evs = x.take("m", 1, None, 7.0, False, 1)
    assert [e.exec_type for e in evs] == ["NEW", "TRADE", "TRADE"] and evs[-1].status == FILLED
    assert [(e.last_price_ticks, e.last_qty) for e in evs[1:]] == [(101, 5.0), (102, 2.0)]
    assert [e.fee for e in evs[1:]] == [pytest.approx(505 * 0.0005), pytest.approx(204 * 0.0005)]
    o = evs[0].order
    assert o.type == "MARKET" and o.price_ticks == 0 and o.takes and o.quote_filled == pytest.approx(709.0)
    assert x.position()[0] == 7.0 and x.open_orders() == []


def test_a_market_order_that_runs_out_of_book_expires_with_what_it_took():
    x = venue()
    evs = x.take("m", -1, None, 12.0, False, 1)
    assert [(e.last_price_ticks, e.last_qty) for e in evs if e.exec_type == "TRADE"] == [(99, 5.0), (98, 5.0)]
    assert evs[-1].exec_type == "EXPIRED" and evs[-1].status == EXPIRED and evs[-1].filled == 10.0


def test_a_market_order_on_an_empty_side_expires_unfilled():
    x = Exchange(INST)
    for kind, side, px, q in [(2, 0, 0, 0), (1, 1, 99, 5)]:  # bids only
        x.on_row(kind, side, px, q, 0)
    evs = x.take("m", 1, None, 3.0, False, 1)
    assert [e.exec_type for e in evs] == ["NEW", "EXPIRED"] and evs[-1].filled == 0.0 and x.position()[0] == 0.0


def test_a_market_order_is_refused_as_binance_refuses_it():
    x = venue()
    for qty in (0.0, -1.0, 1.5, float("nan")):  # not a positive whole number of lots
        with pytest.raises(Rejected) as e:
            x.take("m", 1, None, qty, False, 1)
        assert e.value.code == -1111
    with pytest.raises(Rejected) as e:
        x.take("m", -1, None, 1.0, True, 1)  # flat: nothing to reduce
    assert e.value.code == -2022
    assert x.orders == {}  # nothing of a refused order stays
    # The minimum notional at the touch the order takes; reduce-only orders are exempt.
    y = Exchange(INST.model_copy(update={"min_notional": 150.0}))
    for kind, side, px, q in [(2, 0, 0, 0), (1, 1, 99, 5), (1, -1, 101, 5)]:
        y.on_row(kind, side, px, q, 0)
    with pytest.raises(Rejected) as e:
        y.take("small", 1, None, 1.0, False, 1)  # 1 x 101 < 150
    assert e.value.code == -4164
    assert y.take("long", 1, None, 2.0, False, 1)[-1].status == FILLED  # 202 >= 150
    assert y.take("ro", -1, None, 1.0, True, 2)[-1].status == FILLED  # 99 < 150, but reduce-only


def test_a_reduce_only_market_order_is_cut_to_the_position():
    x = venue()
    x.take("long", 1, None, 3.0, False, 1)
    with pytest.raises(Rejected):
        x.take("more", 1, None, 1.0, True, 2)  # a buy would grow the long
    evs = x.take("close", -1, None, 10.0, True, 3)
    assert evs[0].order.qty == 3.0 and evs[-1].status == FILLED and x.position()[0] == 0.0


def test_the_market_walk_cap_stops_a_market_order_that_many_ticks_from_the_touch():
    assert venue().take("a", 1, None, 8.0, False, 1)[-1].status == FILLED  # no cap: 101 and 102
    assert venue(market_walk_ticks=1).take("b", 1, None, 8.0, False, 1)[-1].status == FILLED  # 102: touch + 1
    capped = _venue_with_gap(market_walk_ticks=1)  # asks 101, 103: 103 is 2 ticks from the touch
    evs = capped.take("c", 1, None, 8.0, False, 1)
    assert [(e.last_price_ticks, e.last_qty) for e in evs if e.exec_type == "TRADE"] == [(101, 5.0)]
    assert evs[-1].status == EXPIRED


def _venue_with_gap(**kw) -> Exchange:
    x = Exchange(INST, **kw)
    for kind, side, px, q in [(2, 0, 0, 0), (1, 1, 99, 5), (1, -1, 101, 5), (1, -1, 103, 5)]:
        x.on_row(kind, side, px, q, 0)
    return x


# ---- over ccxt: Binance's replies, refusals and user stream ----


async def _user_stream(port: int, into: list[dict]) -> None:
    """Collect the raw user-stream messages (as Binance sends them) into `into`."""
    base = f"http://127.0.0.1:{port}"
    async with aiohttp.ClientSession() as s:
        async with s.post(f"{base}/fapi/v1/listenKey", headers={"X-MBX-APIKEY": CREDS.api_key}) as r:
            key = (await r.json())["listenKey"]
        async with s.ws_connect(f"ws://127.0.0.1:{port}/private/ws?listenKey={key}") as ws:
            async for msg in ws:
                into.append(json.loads(msg.data))


def test_a_market_order_over_ccxt_replies_like_binance_and_streams_one_taker_trade_per_level(tape):  # noqa: F811
    async def body(srv, ex):
        await ex.load_markets()
        port = srv._runner.addresses[0][1]
        raw: list[dict] = []
        stream = asyncio.create_task(_user_stream(port, raw))
        await asyncio.sleep(0.3)
        (_, q0), (_, q1) = srv.x.depth(2)[1]  # the two best asks
        qty = round(q0 + min(q1, 0.002), 3)  # the whole best level and some of the next: two levels
        o = await ex.create_order(SYMBOL, "market", "buy", qty, None, {"newClientOrderId": "mkt1"})
        await asyncio.sleep(0.3)
        stream.cancel()
        info = o["info"]
        assert info["type"] == info["origType"] == "MARKET" and info["status"] == "FILLED" and info["price"] == "0"
        assert o["status"] == "closed" and o["filled"] == pytest.approx(qty)
        assert float(info["cumQuote"]) == pytest.approx(float(info["avgPrice"]) * qty, rel=1e-6)
        updates = [m["o"] for m in raw if m.get("e") == "ORDER_TRADE_UPDATE" and m["o"]["c"] == "mkt1"]
        trades = [u for u in updates if u["x"] == "TRADE"]
        assert [u["x"] for u in updates] == ["NEW", "TRADE", "TRADE"] and len({u["L"] for u in trades}) == 2
        assert all(u["m"] is False and u["o"] == "MARKET" and float(u["n"]) > 0 for u in trades)  # taker, fee paid
        assert sum(float(u["l"]) for u in trades) == pytest.approx(qty) and updates[-1]["X"] == "FILLED"
        assert srv.x.position()[0] == pytest.approx(qty)
        # Reduce-only, larger than the position: cut to it, and flat after.
        o = await ex.create_order(
            SYMBOL, "market", "sell", 50.0, None, {"newClientOrderId": "mkt2", "reduceOnly": True}
        )
        assert o["filled"] == pytest.approx(qty) and o["info"]["reduceOnly"] is True and srv.x.position()[0] == 0.0

    scenario(tape, body)


def test_market_orders_binance_refuses_are_refused_with_its_codes(tape):  # noqa: F811
    async def body(srv, ex):
        await ex.load_markets()
        ex.exceptions["exact"].update(ex.exceptions["linear"]["exact"])  # as make_client does: the venue's classes
        with pytest.raises(ccxt.InvalidOrder, match="-2022"):  # flat: nothing to reduce
            await ex.create_order(SYMBOL, "market", "sell", 0.002, None, {"reduceOnly": True})
        with pytest.raises(ccxt.InvalidOrder, match="-4164"):  # below the minimum notional (100 USDT)
            await ex.create_order(SYMBOL, "market", "buy", 0.001, None)
        bad = {"symbol": "BTCUSDT", "type": "MARKET", "quantity": "0.002"}
        for params, code in (({**bad, "side": "UP"}, -1117), ({**bad, "side": "BUY", "quantity": "0.0025"}, -1111),
                             ({**bad, "side": "BUY", "price": "60000"}, -1106),
                             ({**bad, "side": "BUY", "timeInForce": "IOC"}, -1106),
                             ({**bad, "side": "BUY", "type": "STOP_MARKET"}, -1116)):  # fmt: skip
            with pytest.raises(ccxt.BadRequest, match=str(code)):
                await ex.fapiPrivatePostOrder(params)
        assert srv.x.orders == {} and srv.orders_rejected[-2022] == 1

    scenario(tape, body)


def test_a_market_order_on_an_empty_side_of_the_emulators_book_expires(tape):  # noqa: F811
    async def body(srv, ex):
        await ex.load_markets()
        srv.x.on_row(2, 0, 0, 0.0, srv.now_ns)  # the book cleared: both sides empty
        srv.x.on_row(1, 1, 600_000, 1.0, srv.now_ns)  # a bid comes back, no ask
        o = await ex.create_order(SYMBOL, "market", "buy", 0.002, None, {"newClientOrderId": "empty"})
        assert o["status"] == "expired" and o["filled"] == 0.0 and o["info"]["status"] == "EXPIRED"
        assert srv.x.position()[0] == 0.0

    scenario(tape, body)
