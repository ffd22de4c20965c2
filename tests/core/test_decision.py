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
