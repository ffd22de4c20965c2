"""One decision at a time from plain Python (the live adapter's way): kernel, diff and gates together."""

from __future__ import annotations

from grinder.core.decision import Decider, Order
from grinder.core.diff import REQ_CANCEL
from grinder.core.gates import GateConfig
from grinder.core.strategy import get

GRID = get("static_grid")
PARAMS = GRID.validate({"levels": 3, "interval": 1.0, "half_spread": 2.0, "order_qty": 0.1, "max_position": 1.0})
TICK, LOT = 0.1, 0.001


def view(d: Decider, bid: int, ask: int, orders, position=0.0):
    mid = (bid + ask) / 2 * TICK
    return d.decide(1_000, bid, ask, 1.0, 1.0, TICK, LOT, position, 0.0, mid, orders)


def test_first_decision_places_the_grid_then_nothing_while_it_rests():
    d = Decider(GRID, PARAMS)
    first = view(d, 1000_0, 1000_1, [])  # mid 1000.05
    assert first.cancel == [] and first.targets == 6
    assert [(s, p) for s, p, _, _ in first.place] == [(1, 9980), (1, 9970), (1, 9960), (-1, 10030), (-1, 10040),
                                                       (-1, 10050)]  # fmt: skip
    assert [lvl for *_, lvl in first.place] == [-1, -2, -3, 1, 2, 3]
    resting = [Order(s, p, q) for s, p, q, _ in first.place]
    again = view(d, 1000_0, 1000_1, resting)
    assert again.cancel == [] and again.place == []


def test_mid_moves_two_intervals_cancels_the_stale_levels_and_places_new_ones():
    d = Decider(GRID, PARAMS)
    resting = [Order(s, p, q) for s, p, q, _ in view(d, 1000_0, 1000_1, []).place]
    moved = view(d, 1002_0, 1002_1, resting)  # mid 1002.05: bids 1000, 999, 998; asks 1005, 1006, 1007
    assert sorted(resting[i].price_ticks for i in moved.cancel) == [9960, 9970, 10030, 10040]
    assert sorted(p for _, p, _, _ in moved.place) == [9990, 10000, 10060, 10070]
    # An order with a cancel already in flight is not cancelled twice.
    pending = [
        Order(o.side, o.price_ticks, o.leaves, request=REQ_CANCEL if o.price_ticks == 9960 else 0) for o in resting
    ]
    again = view(Decider(GRID, PARAMS), 1002_0, 1002_1, pending).cancel
    assert sorted(pending[i].price_ticks for i in again) == [9970, 10030, 10040]


def test_gates_keep_their_state_between_decisions():
    d = Decider(GRID, PARAMS, GateConfig(rate_capacity=4, rate_per_s=0.0))
    first = view(d, 1000_0, 1000_1, [])
    assert len(first.place) == 4 and first.blocked == {"rate_limit": 2}
    second = view(d, 1000_0, 1000_1, [Order(s, p, q) for s, p, q, _ in first.place])
    assert second.place == [] and second.blocked == {"rate_limit": 2}  # the bucket is empty and never refills


def test_more_orders_than_its_buffers_and_a_fresh_decider_agree():
    wide = GRID.validate({"levels": 30, "interval": 1.0, "half_spread": 2.0, "order_qty": 0.1, "max_position": 9.0})
    d = Decider(GRID, wide)
    first = view(d, 1000_0, 1000_1, [])
    resting = [Order(s, p, q) for s, p, q, _ in first.place]
    assert len(resting) == 60  # more than the 16 orders the buffers start with
    moved = view(d, 1003_0, 1003_1, resting)
    fresh = view(Decider(GRID, wide), 1003_0, 1003_1, resting)
    assert moved.cancel == fresh.cancel and moved.place == fresh.place and len(moved.cancel) == 6
    assert view(d, 1000_0, 1000_1, resting[:3]).cancel == []  # fewer orders again: stale buffer rows unseen


def test_a_kernel_asking_for_more_targets_than_it_may_is_refused_by_name():
    import pytest
    from numba import njit

    from grinder.core.strategy import Strategy
    from grinder.errors import ConfigError

    @njit
    def greedy(params, state, now_ns, bb, ba, bq, aq, tick, lot, position, signals, depth,
               o_side, o_px, o_qty, n_open, out_side, out_px, out_qty, out_level, out_kind):  # fmt: skip
        return out_side.shape[0] + 1

    s = Strategy("greedy", GRID.params, greedy, max_targets=4)
    with pytest.raises(ConfigError, match=r"greedy: strategy kernel returned 5 targets; it may ask for 0 to 4"):
        view(Decider(s, PARAMS), 1000_0, 1000_1, [])


def test_a_decision_taken_ahead_changes_nothing_until_adopted_and_then_is_the_decision():
    gates = GateConfig(rate_capacity=4, rate_per_s=0.0)  # a gate whose state each decision spends
    ahead, now = Decider(GRID, PARAMS, gates), Decider(GRID, PARAMS, gates)
    args = (1_000, 1000_0, 1000_1, 1.0, 1.0, TICK, LOT, 0.0, 0.0, 1000.05, [])
    before = (ahead.state.copy(), ahead.gate_state.copy(), ahead.last_targets)
    taken = ahead.decide_ahead(*args)
    assert (ahead.state == before[0]).all() and (ahead.gate_state == before[1]).all()
    assert ahead.last_targets == before[2] == ()  # not even the targets it asked for are left behind
    expected = now.decide(*args)
    assert taken.intents == expected and len(expected.place) == 4  # the rate gate held 2 of 6 back
    assert ahead.adopt(taken) == expected
    assert (ahead.state == now.state).all() and (ahead.gate_state == now.gate_state).all()
    assert ahead.last_targets == now.last_targets and len(now.last_targets) == 6
    resting = [Order(s, p, q) for s, p, q, _ in expected.place]
    nxt = (2_000, 1000_0, 1000_1, 1.0, 1.0, TICK, LOT, 0.0, 0.0, 1000.05, resting)
    assert ahead.decide(*nxt) == now.decide(*nxt)  # the bucket both spent stays spent: 2 still held back
    dropped = Decider(GRID, PARAMS, gates)
    dropped.decide_ahead(*args)  # never adopted: the next decision sees a full bucket
    assert dropped.decide(*args) == expected
