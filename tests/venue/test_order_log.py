"""The emulator's order log: venue-changing requests with their fencing token, at /admin/orders, and its check."""

from __future__ import annotations

import aiohttp

from grinder.venue.order_log import OrderLog, check_fencing
from tests.venue.test_server import SYMBOL, scenario, tape  # noqa: F401 - a fixture


def test_every_venue_changing_request_is_logged_with_its_token_and_result(tape):  # noqa: F811
    async def body(srv, ex):
        await ex.load_markets()
        bb, _ = srv.x.best()
        price = (bb - 100) * 0.1
        ex.headers = {"X-Grinder-Fence": "7"}  # ccxt sends its `headers` with every request
        await ex.create_order(SYMBOL, "limit", "buy", 0.002, price, {"postOnly": True, "clientOrderId": "a1"})
        await ex.fetch_open_orders(SYMBOL)  # a read: not logged
        ex.headers = {"X-Grinder-Fence": "9"}
        await ex.create_order(SYMBOL, "limit", "buy", 0.002, price, {"postOnly": True, "clientOrderId": "a2"})
        ex.headers = {}
        await ex.cancel_order(None, SYMBOL, {"origClientOrderId": "a2"})
        port = ex.urls["api"]["fapiPrivate"].rsplit("/fapi", 1)[0]
        async with aiohttp.ClientSession() as s, s.get(f"{port}/admin/orders") as r:
            return r.status, await r.json()

    status, got = scenario(tape, body)
    assert status == 200
    rows = [(e["method"], e["client_id"], e["token"], e["result"], e.get("overlap")) for e in got["entries"]]
    assert rows == [("POST", "a1", 7, "accepted", []), ("POST", "a2", 9, "accepted", [7]),
                    ("DELETE", "a2", None, "accepted", None)]  # fmt: skip
    # a2 was taken while a1 (token 7) rested: two leaders' orders live at once.
    assert got["check"] == {"actions": 3, "stale": 0, "double": 1, "unfenced": 1}


def test_the_check_counts_stale_tokens_in_arrival_order_and_client_ids_taken_twice():
    log = OrderLog()
    log.record("POST", "/fapi/v1/order", "x1", 5, 200, "accepted", [])
    log.record("POST", "/fapi/v1/countdownCancelAll", None, 6, 200, "accepted")
    log.record("DELETE", "/fapi/v1/order", "x1", 5, 400, "rejected -2011")  # an older leader, after a newer one
    log.record("POST", "/fapi/v1/order", "x1", 6, 200, "accepted", [])  # the same client id again
    c = check_fencing(log.entries)
    assert [e["seq"] for e in c.stale] == [2] and [e["seq"] for e in c.double] == [3]
    assert c.as_dict() == {"actions": 4, "stale": 1, "double": 1, "unfenced": 0}
