"""Reconciliation against the emulator: own orphans cancelled, foreign orders untouched, drift and missing logged."""

from __future__ import annotations

import json

from live.budget import BudgetLimits
from live.client_ids import ClientOrderId
from live.reconcile import check_orders, check_position, reconcile
from tests.live.test_port import run
from tests.venue.test_server import SYMBOL, tape  # noqa: F401 - tape is a fixture


def order(cid: str) -> dict:
    return {"clientOrderId": cid, "side": "buy", "amount": 0.002, "price": 1.0}


def test_orders_are_sorted_into_ours_unknown_missing_and_foreign():
    venue = [order("grinder_static_grid:BTCUSDT:1"), order("grinder_static_grid:BTCUSDT:2"),
             order("grinder_adaptive_grid:BTCUSDT:1"), order("grinder_static_grid:ETHUSDT:1"), order("web_77"),
             order("")]  # fmt: skip
    c = check_orders(
        {"grinder_static_grid:BTCUSDT:1", "grinder_static_grid:BTCUSDT:9"}, venue, "static_grid", "BTCUSDT"
    )
    assert [o["clientOrderId"] for o in c.orphans] == ["grinder_static_grid:BTCUSDT:2"]
    assert c.missing == ["grinder_static_grid:BTCUSDT:9"]
    assert len(c.foreign) == 4  # another strategy's, another symbol's, another tool's, none


def test_position_drift_is_half_a_lot_or_more():
    assert check_position(0.002, 0.002, 0.001) is None and check_position(0.0, 0.0004, 0.001) is None
    assert check_position(0.0, 0.002, 0.001).kind == "position_drift"


def test_reconcile_cancels_only_our_orphans_and_logs_every_mismatch(tape, tmp_path):  # noqa: F811
    async def body(srv, ex, p, clock):
        bb, _ = srv.x.best()
        for n, cid in enumerate(["grinder_static_grid:BTCUSDT:1", "grinder_static_grid:BTCUSDT:2", "web_77",
                                 "grinder_adaptive_grid:BTCUSDT:5"]):  # fmt: skip
            await ex.create_order(
                SYMBOL, "limit", "buy", 0.002, (bb - 10 - n) * 0.1, {"postOnly": True, "clientOrderId": cid}
            )
        expected = {"grinder_static_grid:BTCUSDT:1", str(ClientOrderId("static_grid", "BTCUSDT", 3))}
        found, pos = await reconcile(ex, p, p.audit, clock.now(), SYMBOL, "static_grid", "BTCUSDT", 0.001, expected,
                                     0.5)  # fmt: skip
        return found, pos, sorted(o.client_id for o in srv.x.open_orders())

    found, pos, left = run(tape, body, limits=BudgetLimits(10, 1e9), tmp=tmp_path)
    assert sorted((m.kind, m.client_id) for m in found) == [
        ("missing", "grinder_static_grid:BTCUSDT:3"), ("orphan", "grinder_static_grid:BTCUSDT:2"),
        ("position_drift", None)]  # fmt: skip
    assert pos == 0.0
    assert left == ["grinder_adaptive_grid:BTCUSDT:5", "grinder_static_grid:BTCUSDT:1", "web_77"]
    events = [json.loads(x)["event"] for x in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert events.count("mismatch") == 3 and "cancelled" in events
