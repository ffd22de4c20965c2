"""Quote refresh (diff.refresh_into): a time to live replaces old quotes, a refresh distance keeps near ones;
in the engine and in the Decider alike."""

from __future__ import annotations

import numpy as np

from grinder.core.decision import Decider, Order
from grinder.core.diff import REQ_CANCEL, REQ_NONE, ST_NEW, ST_NONE, diff_quotes_into, diff_scratch, refresh_into
from grinder.core.gates import GateConfig
from grinder.core.strategy import get
from grinder.sim.backtest import run_backtest
from tests.sim.test_engine import BOOK, MS, VENUE, moving_bid, one_quote, tape


def refresh_py(targets, orders, now=1_000, ttl=0, near=0):
    """targets [(side, px)], orders [(side, px, status, req, placed)] -> (cancels, places) after the refresh."""
    t = np.array(targets, np.int64).reshape(-1, 2)
    o = np.array(orders, np.int64).reshape(-1, 5)
    oc, op = np.empty(len(o), np.int64), np.empty(len(t), np.int64)
    live, slots, scratch = np.ones(len(o), np.bool_), np.arange(len(o)), diff_scratch(len(t))
    args = (t[:, 0], t[:, 1], len(t), o[:, 0], o[:, 1], o[:, 2], o[:, 3], live)
    nc, npl = diff_quotes_into(*args, slots, len(o), oc, op, scratch, 1)
    nc, npl = refresh_into(*args, o[:, 4], slots, len(o), oc, nc, op, npl, scratch, 1, now, ttl, near)
    return oc[:nc].tolist(), op[:npl].tolist()


def test_a_quote_past_its_time_to_live_is_cancelled_and_its_target_waits_for_the_cancel():
    orders = [(1, 100, ST_NEW, REQ_NONE, 100), (1, 99, ST_NEW, REQ_NONE, 900), (1, 98, ST_NEW, REQ_NONE, 0)]
    assert refresh_py([(1, 100), (1, 99), (1, 98)], orders, ttl=500) == ([0], [])
    assert refresh_py([(1, 100), (1, 99), (1, 98)], orders) == ([], [])  # no time to live: they stay
    # Not resting, or a request already in flight: not cancelled again.
    pending = [(1, 100, ST_NONE, REQ_NONE, 100), (1, 99, ST_NEW, REQ_CANCEL, 100)]
    assert refresh_py([(1, 100), (1, 99)], pending, ttl=500) == ([], [])


def test_a_quote_near_its_target_stays_one_for_one_and_a_far_one_is_replaced():
    orders = [(1, 100, ST_NEW, REQ_NONE, 900), (1, 96, ST_NEW, REQ_NONE, 900), (-1, 104, ST_NEW, REQ_NONE, 900)]
    targets = [(1, 101), (1, 99), (-1, 103)]
    # Within 1 tick: 100 stands for 101 (first found), 104 for 103; 96 is 3 from 99: replaced.
    assert refresh_py(targets, orders, near=1) == ([1], [1])
    assert refresh_py(targets, orders) == ([0, 1, 2], [0, 1, 2])
    # A side never stands for the other, and a stale quote never stays.
    assert refresh_py([(-1, 100)], [(1, 100, ST_NEW, REQ_NONE, 900)], near=5) == ([0], [0])
    assert refresh_py([(1, 101)], [(1, 100, ST_NEW, REQ_NONE, 100)], ttl=500, near=5) == ([0], [0])


def test_the_engine_replaces_an_old_quote_and_the_rules_count_it():
    # One bid at 98 from 100 ms; with a 300 ms time to live it is cancelled and placed again.
    params = np.array([1, 98, 1, 0], np.float64)
    t = tape(BOOK + [(1000, 0, -1, 105, 1)])
    plain = run_backtest(t, one_quote, params, VENUE)
    ttl = run_backtest(t, one_quote, params, VENUE, gates=GateConfig(quote_ttl_ms=300))
    assert (plain.counters["placed"], plain.counters["cancelled"]) == (1, 0)
    assert ttl.counters["cancelled"] >= 2 and ttl.counters["placed"] == ttl.counters["cancelled"] + 1
    assert ttl.qrules_max["orders_10s"] > plain.qrules_max["orders_10s"]


def test_the_engine_keeps_a_quote_within_the_refresh_distance():
    # The bid's target moves from 97 to 96 at 250 ms: replaced without a distance, kept within 1 tick.
    params = np.array([97, 96, 1, 250 * MS], np.float64)
    t = tape(BOOK + [(1000, 0, -1, 105, 1)])
    assert run_backtest(t, moving_bid, params, VENUE).counters["cancelled"] == 1
    kept = run_backtest(t, moving_bid, params, VENUE, gates=GateConfig(refresh_ticks=1))
    assert (kept.counters["cancelled"], kept.counters["placed"]) == (0, 1)
    assert run_backtest(t, moving_bid, np.array([97, 95, 1, 250 * MS]), VENUE,
                        gates=GateConfig(refresh_ticks=1)).counters["cancelled"] == 1  # fmt: skip


def test_the_decider_refreshes_as_the_engine_does():
    grid = get("static_grid")
    p = grid.validate({"levels": 1, "interval": 1.0, "half_spread": 0.5, "order_qty": 0.1, "max_position": 1.0})
    d = Decider(grid, p, gates=GateConfig(quote_ttl_ms=300))
    first = d.decide(0, 999, 1001, 1.0, 1.0, 1.0, 0.001, 0.0, 0.0, 1000.0, [])
    orders = [Order(s, px, q, placed_ns=0 if k else 50 * MS) for k, (s, px, q, _) in enumerate(first.place)]
    later = d.decide(400 * MS, 999, 1001, 1.0, 1.0, 1.0, 0.001, 0.0, 0.0, 1000.0, orders)
    assert later.cancel == [0] and later.place == []  # the old one goes; its target waits for the cancel
