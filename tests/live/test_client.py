"""The adapter's ccxt client: its direct post-only request is the one ccxt's create_order builds; presigned requests."""

from __future__ import annotations

import asyncio

import grinder.live.client as live_client
from tests.venue.test_server import SYMBOL, scenario, tape  # noqa: F401 - tape is a fixture


def test_the_post_only_request_is_the_one_create_order_would_send(tape):  # noqa: F811
    async def body(srv, ex):
        await ex.load_markets()
        m = ex.market(SYMBOL)
        for side, amount, price in (("buy", 0.002, 61801.0), ("sell", 0.0129, 61809.96), ("buy", 1.0, 0.1 * 3)):
            cid = "grinder_x:BTCUSDT:1"
            ours = ex._post_only_request(m, side, amount, price, cid)
            theirs = ex.create_order_request(
                SYMBOL, "limit", side, amount, price, {"postOnly": True, "clientOrderId": cid}
            )
            assert ours == theirs, (side, amount, price)

    scenario(tape, body)


class _Sent(Exception):
    """Raised by the recording fetch: the request got as far as the connection."""


def _recording(ex) -> list:
    """Replace `ex.fetch` (the HTTP call) with one that records its arguments and raises `_Sent`."""
    sent: list = []

    async def fetch(url, method="GET", headers=None, body=None):
        sent.append((url, method, dict(headers or {}), body))
        raise _Sent

    ex.fetch = fetch
    return sent


async def _call(coro) -> None:
    try:
        await coro
    except _Sent:
        pass


def test_a_presigned_request_is_the_one_the_call_would_sign_and_serves_that_call_once(tape, monkeypatch):  # noqa: F811
    async def body(srv, ex):
        await ex.load_markets()
        await ex.load_time_difference()  # ccxt's timestamp offset: the same for both paths
        monkeypatch.setattr(ex, "nonce", lambda: 1_700_000_000_000)  # one timestamp: equal signatures
        sent = _recording(ex)
        cid = "grinder_x:BTCUSDT:7"
        create = (SYMBOL, "buy", 0.002, 61801.0, cid)
        await _call(ex.create_post_only(*create))  # signed now, the ordinary way
        ex.presign_post_only(*create)
        await _call(ex.create_post_only(*create))  # the presigned one
        assert ex.presigned_sent == 1 and sent[0] == sent[1]
        assert "signature=" in sent[1][3] and f"newClientOrderId={cid.replace(':', '%3A')}" in sent[1][3]
        await _call(ex.cancel_by_client_id(SYMBOL, cid))
        ex.presign_cancel(SYMBOL, cid)
        await _call(ex.cancel_by_client_id(SYMBOL, cid))
        assert ex.presigned_sent == 2 and sent[2] == sent[3] and sent[3][1] == "DELETE"
        # Once only; not for another call; not once it is old.
        ex.presign_post_only(*create)
        await _call(ex.create_post_only(*create))
        await _call(ex.create_post_only(*create))
        assert ex.presigned_sent == 3 and len(sent) == 6
        ex.presign_post_only(*create)
        await _call(ex.create_post_only(SYMBOL, "buy", 0.002, 61801.1, cid))  # another price
        await _call(ex.create_post_only(*create))  # the presigned one went with the call it did not fit
        ex.presign_cancel(SYMBOL, cid)
        monkeypatch.setattr(live_client, "PRESIGNED_MAX_AGE_NS", -1)
        await _call(ex.cancel_by_client_id(SYMBOL, cid))
        assert ex.presigned_sent == 3 and len(sent) == 9

    scenario(tape, body)


def test_a_presigned_order_is_accepted_by_the_venue_and_spends_the_rate_limiters_weight(tape, monkeypatch):  # noqa: F811
    async def body(srv, ex):
        costs: list = []

        async def counting(cost=None):  # ccxt's limiter, without its waits (cost 4 at 50 ms a unit)
            costs.append(cost)

        monkeypatch.setattr(ex, "throttle", counting)
        await ex.load_markets()
        ex.enableRateLimit = True  # as against Binance
        bb, _ = srv.x.best()
        price = (bb - 50) * 0.1
        ex.presign_post_only(SYMBOL, "buy", 0.002, price, "grinder_x:BTCUSDT:8")
        o = await ex.create_post_only(SYMBOL, "buy", 0.002, price, "grinder_x:BTCUSDT:8")
        assert o["clientOrderId"] == "grinder_x:BTCUSDT:8" and len(srv.x.open_orders()) == 1
        ex.presign_cancel(SYMBOL, "grinder_x:BTCUSDT:8")
        await ex.cancel_by_client_id(SYMBOL, "grinder_x:BTCUSDT:8")
        assert srv.x.open_orders() == [] and ex.presigned_sent == 2
        o = await ex.create_post_only(SYMBOL, "buy", 0.002, price, "grinder_x:BTCUSDT:9")  # signed as it goes
        await ex.cancel_by_client_id(SYMBOL, "grinder_x:BTCUSDT:9")
        assert costs == [4, 1, 4, 1]  # ccxt's weights of the two endpoints, spent either way

        async def slow(cost=None):  # the limiter holding the request back past the age limit
            costs.append(cost)
            await asyncio.sleep(0.06)

        monkeypatch.setattr(ex, "throttle", slow)
        ex.presign_post_only(SYMBOL, "buy", 0.002, price, "grinder_x:BTCUSDT:10")
        signed = ex._presigned.request["body"]
        o = await ex.create_post_only(SYMBOL, "buy", 0.002, price, "grinder_x:BTCUSDT:10")
        assert o["clientOrderId"] == "grinder_x:BTCUSDT:10" and ex.presigned_sent == 2  # signed again ...
        assert ex.last_request_body != signed and "newClientOrderId=grinder_x" in ex.last_request_body  # ... fresh
        assert costs[-1] == 4

    scenario(tape, body)
