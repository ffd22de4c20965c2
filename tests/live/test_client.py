"""The adapter's ccxt client: its direct post-only request is the one ccxt's create_order builds."""

from __future__ import annotations

import asyncio

from grinder.venue.server import VenueServer
from tests.venue.test_server import CREDS, SYMBOL, client, tape  # noqa: F401 - tape is a fixture


def test_the_post_only_request_is_the_one_create_order_would_send(tape):  # noqa: F811
    async def main():
        srv = VenueServer(tape, CREDS)
        port = await srv.start()
        ex = client(port)
        try:
            await ex.load_markets()
            m = ex.market(SYMBOL)
            for side, amount, price in (("buy", 0.002, 61801.0), ("sell", 0.0129, 61809.96), ("buy", 1.0, 0.1 * 3)):
                cid = "grinder_x:BTCUSDT:1"
                ours = ex._post_only_request(m, side, amount, price, cid)
                theirs = ex.create_order_request(
                    SYMBOL, "limit", side, amount, price, {"postOnly": True, "clientOrderId": cid}
                )
                assert ours == theirs, (side, amount, price)
        finally:
            await ex.close()
            await srv.stop()

    asyncio.run(main())
