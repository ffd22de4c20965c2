"""The one decision step: what it skips when a driver says it may, and what it never skips."""

from __future__ import annotations

import numpy as np
from numba import njit

from grinder.book.l2 import EMPTY
from grinder.core.decision import Decider, Order
from grinder.core.diff import diff_scratch
from grinder.core.gates import REASONS, GateConfig
from grinder.core.step import decision_step, fresh_gates, step_is_idle
from grinder.core.strategy import get, kernel_handle

GRID = get("static_grid")
PARAMS = GRID.validate({"levels": 3, "interval": 1.0, "half_spread": 2.0, "order_qty": 0.1, "max_position": 1.0})
TICK, LOT = 0.1, 0.001


class Driver:
    """The arrays a driver keeps between steps (the engine's names), and one step over them."""

    def __init__(self, kernel=GRID.kernel, gates: GateConfig | None = None, n: int = GRID.max_targets):
        self.kernel = kernel_handle(kernel)  # a first-class function: the step's cached compilation serves it
        self.params = np.array(GRID.vector(PARAMS))
        self.state = np.zeros(64)
        self.gates = fresh_gates(gates)
        self.targets = (np.zeros(n, np.int8), np.zeros(n, np.int64), np.zeros(n), np.zeros(n, np.int64),
                        np.zeros(n, np.int8))  # fmt: skip
        self.prev = (np.zeros(n, np.int8), np.zeros(n, np.int64), np.zeros(n))
        self.out_cancel, self.out_place = np.zeros(32, np.int64), np.zeros(n, np.int64)
        self.blocked = np.zeros(len(REASONS), np.int64)
        self.scratch, self.stamp, self.last_nt = diff_scratch(n), 0, -1

    def step(self, orders: list[Order], synced=True, call_kernel=True, orders_changed=True, compare=False,
             bid=1000_0, ask=1000_1, position=0.0, equity=0.0):  # fmt: skip
        m = len(orders)
        side = np.array([o.side for o in orders] + [0], np.int8)
        px = np.array([o.price_ticks for o in orders] + [0], np.int64)
        qty = np.array([o.leaves for o in orders] + [0.0])
        status = np.array([o.status for o in orders] + [0], np.int8)
        req = np.array([o.request for o in orders] + [0], np.int8)
        live, slots = np.ones(m + 1, np.bool_), np.arange(m + 1, dtype=np.int64)
        mid = (bid + ask) / 2 * TICK
        on, cfg, state, qr_on, qr_cfg, qr_state = self.gates
        nt, nc, npl, self.ntk, diffed, self.flatten = decision_step(self.kernel, self.params, self.state,
                                                      (synced, call_kernel, orders_changed, compare, on, qr_on),
                                                      (1_000, bid, ask, 1.0, 1.0, TICK, LOT, position, equity, mid,
                                                       np.empty(0), np.zeros((0, 4))),
                                                      (m, self.last_nt, self.stamp + 1), side, px, qty, side, px,
                                                      status, req, live, np.zeros(m + 1, np.int64), slots,
                                                      self.targets, *self.prev, self.out_cancel, self.out_place, cfg,
                                                      state, qr_cfg, qr_state, self.blocked, self.scratch)  # fmt: skip
        self.npl = npl
        if diffed:
            self.stamp += 1
        self.last_nt = nt
        place = [(int(self.targets[0][j]), int(self.targets[1][j])) for j in self.out_place[:npl]]
        return nt, sorted(int(px[i]) for i in self.out_cancel[:nc]), place, diffed


def resting(place) -> list[Order]:
    return [Order(s, p, 0.1) for s, p in place]


def test_the_step_never_skipping_is_the_decider():
    d, live = Driver(), Decider(GRID, PARAMS)
    orders: list[Order] = []
    for bid in (1000_0, 1000_0, 1002_0, 999_0, 999_0):
        nt, cancels, place, _ = d.step(orders, bid=bid, ask=bid + 1)
        intents = live.decide(1_000, bid, bid + 1, 1.0, 1.0, TICK, LOT, 0.0, 0.0, (bid + 0.5) * TICK, orders)
        assert nt == intents.targets and cancels == sorted(orders[i].price_ticks for i in intents.cancel)
        assert place == [(s, p) for s, p, _, _ in intents.place]
        orders = [o for o in orders if o.price_ticks not in cancels] + resting(place)


def test_equal_targets_on_unchanged_orders_are_not_diffed_but_changed_orders_are():
    d = Driver()
    _, _, place, _ = d.step([])
    orders = resting(place)
    assert len(orders) == 6
    assert d.step(orders, orders_changed=False, compare=True) == (6, [], [], False)
    # One quote filled away: the driver says the orders changed, and the diff puts it back.
    nt, cancels, place, diffed = d.step(orders[1:], orders_changed=True, compare=True)
    assert (nt, cancels, diffed) == (6, [], True) and place == [(orders[0].side, orders[0].price_ticks)]


def test_a_step_that_may_not_call_the_kernel_keeps_the_last_targets():
    d = Driver()
    _, _, place, _ = d.step([])
    before = d.state.copy()
    # The book moved two intervals, but the driver knows the kernel's answer stands (its band).
    assert d.step(resting(place), call_kernel=False, orders_changed=False, bid=1002_0, ask=1002_1) == (6, [], [], False)
    assert (d.state == before).all()


def test_an_unsynced_book_cancels_every_quote_without_calling_the_kernel():
    d = Driver()
    _, _, place, _ = d.step([])
    before = d.state.copy()
    nt, cancels, new, diffed = d.step(resting(place), synced=False, bid=EMPTY, ask=EMPTY)
    assert (nt, new, diffed) == (0, [], True) and cancels == sorted(p for _, p in place)
    assert (d.state == before).all()


@njit(cache=True)
def too_many(
    params,
    state,
    now,
    bb,
    ba,
    bq,
    aq,
    tick,
    lot,
    pos,
    sig,
    depth,
    o_side,
    o_px,
    o_qty,
    m,
    t_side,
    t_px,
    t_qty,
    t_level,
    t_kind,
):
    return t_side.shape[0] + 1


def test_a_kernel_count_out_of_range_comes_back_before_any_intent():
    d = Driver(kernel=too_many)
    nt, cancels, place, diffed = d.step([Order(1, 999_0, 0.1)])
    assert nt == GRID.max_targets + 1 and (cancels, place, diffed) == ([], [], False)


def test_gates_act_on_the_step_with_the_equity_given():
    d = Driver(gates=GateConfig(max_daily_loss=5.0))
    _, _, place, _ = d.step([], equity=100.0)
    assert len(place) == 6 and not d.blocked.any()
    nt, cancels, place, _ = d.step([], equity=94.0)  # 6 below the day's start: the kill blocks every place
    assert (nt, cancels, place) == (6, [], []) and d.blocked[REASONS.index("daily_loss")] == 6


def test_a_step_the_driver_may_skip_does_nothing():
    """Whenever step_is_idle says so, the step returns the last targets (none on an unsynced book),
    no intent, no diff, and leaves every array as it was: skipping it changes nothing."""
    for gates in (None, GateConfig(max_position=1.0)):
        for synced in (True, False):
            for call_kernel in (True, False):
                for orders_changed in (True, False):
                    d = Driver(gates=gates)
                    _, _, place, _ = d.step([])
                    orders = resting(place)
                    on, _, _, qr_on, _, _ = d.gates
                    if not step_is_idle(synced, call_kernel, orders_changed, on, qr_on, d.last_nt):
                        continue
                    before = [a.copy() for a in (d.state, *d.targets, *d.prev, d.out_cancel, d.out_place, d.blocked)]
                    last = d.last_nt
                    nt, cancels, new, diffed = d.step(orders, synced=synced, call_kernel=call_kernel,
                                                      orders_changed=orders_changed, compare=True)  # fmt: skip
                    assert (nt, cancels, new, diffed) == ((last if synced else 0), [], [], False)
                    after = (d.state, *d.targets, *d.prev, d.out_cancel, d.out_place, d.blocked)
                    assert all((a == b).all() for a, b in zip(before, after, strict=True))
    # Never idle when anything could act: a gate, the rules' gate, changed orders, or a kernel to call.
    assert not step_is_idle(True, False, False, True, False, 6)
    assert not step_is_idle(True, False, False, False, True, 6)
    assert not step_is_idle(True, False, True, False, False, 6)
    assert not step_is_idle(True, True, False, False, False, 6)
    assert not step_is_idle(False, False, False, False, False, 6)  # unsynced with quotes: cancel them
