"""Reconciliation rollout modes: each mode's plan and actions against the emulator, flatten reduce-only and bounded."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from grinder.live.client_ids import ClientOrderId
from grinder.live.config import LiveConfig
from grinder.live.reconcile import Mismatch
from grinder.live.rollout import MODES, flatten_price, flatten_qty, flattenable, make_plan
from tests.live.test_adapter import session
from tests.venue.test_server import SYMBOL, tape  # noqa: F401 - tape is a fixture

# An order a dead instance of this strategy and symbol left resting (another epoch, an id of our shape).
ORPHAN = str(ClientOrderId("static_grid", "BTCUSDT", 7, "Zzzzz"))
HAND_QTY = 0.004  # the position opened by hand before the adapter starts
FOUND = [Mismatch("orphan", "o1", "buy 0.002 @ 1"), Mismatch("missing", "m1", "not open at the venue"),
         Mismatch("position_drift", None, "adapter 0, venue 0.004")]  # fmt: skip


def fast_probe() -> dict:
    """A short watch for other instances at start, where the config has one (live.instance)."""
    return {"instance_probe_s": 0.3} if "instance_probe_s" in LiveConfig.model_fields else {}


async def plant(srv, other):
    """An orphan of ours resting far from the touch, and a long position opened by hand (an IOC buy)."""
    bb, ba = srv.x.best()
    await other.create_order(SYMBOL, "limit", "buy", 0.002, (bb - 20_000) * 0.1,
                             {"postOnly": True, "clientOrderId": ORPHAN})  # fmt: skip
    await other.create_order(SYMBOL, "limit", "buy", HAND_QTY, (ba + 100) * 0.1, {"timeInForce": "IOC"})
    assert srv.x.position()[0] == pytest.approx(HAND_QTY)


def flattens(srv) -> list:
    """The reduce-only orders the venue took (only a flatten sends one)."""
    return [o for o in srv.x.orders.values() if o.reduce_only]


# ---- the plan, pure ----


def test_detect_only_plans_nothing_and_every_other_mode_plans_the_same_actions():
    plans = {m: make_plan("e-1", m, FOUND, HAND_QTY, 0.003, 0.001) for m in MODES}
    assert plans["detect_only"].actions == () and plans["detect_only"].findings == tuple(FOUND)
    kinds = {m: [(a.kind, a.client_id, a.side, a.qty) for a in p.actions] for m, p in plans.items() if p.actions}
    assert len(set(map(tuple, kinds.values()))) == 1  # the same actions in every mode that plans
    assert kinds["plan_only"] == [("cancel_orphan", "o1", None, 0.0), ("flatten", None, "sell", pytest.approx(0.003))]
    then = {m: [a.then for a in p.actions] for m, p in plans.items()}
    assert then == {"detect_only": [], "plan_only": ["plan_only"] * 2, "blocked": ["blocked"] * 2,
                    "execute_cancel_all": ["execute", "not_in_mode"],
                    "execute_flatten": ["execute", "execute"]}  # fmt: skip


def test_an_unknown_mode_is_refused_by_the_config_and_the_planner(tmp_path):
    with pytest.raises(ValueError, match="rollout"):
        LiveConfig(strategy="static_grid", params={}, symbol="BTCUSDT", rollout="execute_everything")
    with pytest.raises(ValueError, match="unknown rollout mode"):
        make_plan("e-1", "execute_everything", FOUND, 0.0, 1.0, 0.001)
    assert LiveConfig(strategy="static_grid", params={}, symbol="BTCUSDT").rollout == "execute_cancel_all"


@settings(max_examples=200, deadline=None)
@given(close=st.floats(-10, 10), max_qty=st.floats(0, 10), lot=st.sampled_from([0.001, 0.01, 1.0]))
def test_a_flatten_is_whole_lots_never_above_its_bound_nor_the_position(close, max_qty, lot):
    q = flatten_qty(close, max_qty, lot)
    assert 0.0 <= q <= min(abs(close), max_qty) + 1e-9
    assert abs(q / lot - round(q / lot)) < 1e-6


@settings(max_examples=200, deadline=None)
@given(drift=st.floats(-10, 10), venue=st.floats(-10, 10))
def test_only_the_part_of_a_drift_a_reduce_only_order_can_close_is_flattened(drift, venue):
    f = flattenable(drift, venue)
    assert abs(f) <= min(abs(drift), abs(venue)) + 1e-12
    assert f == 0.0 or (f > 0) == (drift > 0) == (venue > 0)  # towards flat, never past it, never opening
    assert abs(venue - f) <= abs(venue) + 1e-12


@settings(max_examples=200, deadline=None)
@given(
    bid=st.floats(100, 100_000),
    spread=st.integers(1, 50),
    bps=st.floats(0.1, 1000),
    tick=st.sampled_from([0.1, 0.5, 1]),
)
def test_a_flattens_price_is_on_the_grid_and_never_further_through_than_its_bound(bid, spread, bps, tick):
    bid = round(bid / tick) * tick
    ask = bid + spread * tick
    sell, buy = flatten_price("sell", bid, ask, tick, bps), flatten_price("buy", bid, ask, tick, bps)
    assert sell >= bid * (1 - bps / 1e4) - 1e-6 and sell <= bid + 1e-6
    assert buy <= ask * (1 + bps / 1e4) + 1e-6 and buy >= ask - 1e-6
    assert abs(sell / tick - round(sell / tick)) < 1e-6 and abs(buy / tick - round(buy / tick)) < 1e-6


# ---- each mode against the emulator ----


@pytest.mark.parametrize("mode", MODES)
def test_each_rollout_mode_does_exactly_what_it_says_with_an_orphan_and_a_drift_planted(tape, tmp_path, mode):  # noqa: F811
    adapter, srv, mid_run, _left, events = asyncio.run(
        session(tape, tmp_path, 6.0, plant, rollout=mode, max_flatten_qty=0.003, **fast_probe())
    )
    plans = [e for e in events if e["event"] == "reconcile_plan"]
    assert plans and len({p["plan_id"] for p in plans}) == len(plans)  # one per cycle, ids unique
    first = plans[0]
    assert first["mode"] == mode
    assert {(f["kind"], f["client_id"]) for f in first["findings"]} >= {("orphan", ORPHAN), ("position_drift", None)}
    acts = [e for e in events if e["event"] == "plan_action"]
    blocked = [e for e in events if e["event"] == "plan_blocked"]
    by_id = {p["plan_id"]: p for p in plans}
    for e in acts + blocked:  # every result names the plan it carries out
        assert e["plan_id"] in by_id
    for e in acts:
        assert e["kind"] in {a["kind"] for a in by_id[e["plan_id"]]["actions"] if a["then"] == "execute"}
    looks = [ids for t, ids in mid_run.timeline if t > first["ts_ns"]]  # the venue, after the first plan
    assert looks
    still_there = all(ORPHAN in ids for ids in looks)
    if mode == "detect_only":
        assert first["actions"] == [] and not acts and not blocked
    else:
        planned = {(a["kind"], a.get("client_id"), a.get("side"), round(a.get("qty", 0), 9))
                   for a in first["actions"]}  # fmt: skip
        assert planned == {("cancel_orphan", ORPHAN, None, 0), ("flatten", None, "sell", 0.003)}
    if mode in ("detect_only", "plan_only", "blocked"):
        assert still_there and not acts and not flattens(srv)
    if mode == "blocked":
        assert blocked[0]["plan_id"] == first["plan_id"] and blocked[0]["counts"] == {"cancel_orphan": 1, "flatten": 1}
        assert blocked[-1]["total"]["cancel_orphan"] >= 1
    elif mode in ("execute_cancel_all", "execute_flatten"):
        assert ORPHAN not in looks[-1] and not blocked  # the last look before the stop
        (cancel,) = [e for e in acts if e["kind"] == "cancel_orphan" and e["client_id"] == ORPHAN]
        assert cancel == {**cancel, "plan_id": first["plan_id"], "client_id": ORPHAN, "result": "cancelled"}
    if mode == "execute_cancel_all":
        assert [a["then"] for a in first["actions"] if a["kind"] == "flatten"] == ["not_in_mode"]
        assert not flattens(srv) and not any(e["event"] == "flatten" for e in events)
    if mode == "execute_flatten":
        (sent,) = [e for e in events if e["event"] == "flatten"]  # once: the drift is closed, not chased
        (done,) = [e for e in acts if e["kind"] == "flatten"]
        (order,) = flattens(srv)
        assert sent["plan_id"] == done["plan_id"] == first["plan_id"] and sent["client_id"] == order.client_id
        assert sent["reduce_only"] and order.tif == "IOC" and order.side == -1
        assert order.qty == pytest.approx(0.003) and order.qty < HAND_QTY  # bounded by max_flatten_qty
        assert done["result"] == "sent" and done["filled"] == pytest.approx(order.filled)
        assert adapter.rollout.plans == len(plans)


def test_a_flatten_never_goes_beyond_the_daily_budget(tape, tmp_path):  # noqa: F811
    # The notional cap is below one flatten's (0.003 BTC is worth far more than 10 USDT).
    adapter, srv, _mid, _left, events = asyncio.run(
        session(
            tape,
            tmp_path,
            2.5,
            plant,
            rollout="execute_flatten",
            max_flatten_qty=0.003,
            max_notional_per_day=10.0,
            **fast_probe(),
        )  # fmt: skip
    )
    refused = [e for e in events if e["event"] == "plan_action" and e["kind"] == "flatten"]
    assert refused and all(e["result"] == "refused" and "notional" in e["reason"] for e in refused)
    assert not flattens(srv) and not any(e["event"] == "flatten" for e in events)


def test_a_flatten_without_a_size_bound_sends_nothing(tape, tmp_path):  # noqa: F811
    _adapter, srv, _mid, _left, events = asyncio.run(
        session(tape, tmp_path, 2.0, plant, rollout="execute_flatten", **fast_probe())  # max_flatten_qty 0
    )
    refused = [e for e in events if e["event"] == "plan_action" and e["kind"] == "flatten"]
    assert refused and all(e["result"] == "refused" and "max_flatten_qty" in e["reason"] for e in refused)
    assert not flattens(srv)
