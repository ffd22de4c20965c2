"""The emulated venue's matching: the backtester's fill rules, applied event by event, and its refusals."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from grinder.data.instruments import Instrument
from grinder.venue.exchange import CANCELED, FILLED, NEW, PARTIALLY_FILLED, Exchange, Rejected

INST = Instrument(venue="test", symbol="TESTUSDT", tick_size=1.0, lot_size=1.0, maker_fee=0.0002, taker_fee=0.0005,
                  min_notional=5.0)  # fmt: skip
BOOK = [(2, 0, 0, 0), (1, 1, 99, 5), (1, 1, 98, 5), (1, -1, 101, 5), (1, -1, 102, 5)]


def venue(**kw) -> Exchange:
    x = Exchange(INST, **kw)
    for kind, side, px, q in BOOK:
        assert x.on_row(kind, side, px, q, 0) == []
    return x


def feed(x: Exchange, rows, t=1):
    out = []
    for kind, side, px, q in rows:
        out += x.on_row(kind, side, px, q, t)
    return out


def test_the_book_is_replayed_and_served_best_first():
    x = venue()
    assert x.best() == (99, 101) and x.top() == (5.0, 5.0)
    assert x.depth(5) == ([(99, 5.0), (98, 5.0)], [(101, 5.0), (102, 5.0)])
    assert x.depth(1) == ([(99, 5.0)], [(101, 5.0)])


def test_risk_averse_queue_fills_once_the_queue_ahead_has_traded():
    x = venue()
    assert x.create("a", 1, 99, 1.0, "GTX", 1).status == NEW
    assert feed(x, [(3, -1, 99, 3), (3, -1, 99, 2)]) == []  # 5 traded ahead of us
    (ev,) = feed(x, [(3, -1, 99, 1)])
    assert ev.exec_type == "TRADE" and ev.status == FILLED and ev.last_qty == 1.0 and ev.last_price_ticks == 99
    assert x.position()[0] == 1.0 and ev.fee == pytest.approx(99 * 0.0002)
    assert x.wallet() == pytest.approx(10_000 - 99 * 0.0002)


def test_depth_drops_only_cap_the_queue_ahead():
    x = venue()
    x.create("a", 1, 99, 1.0, "GTX", 1)
    assert feed(x, [(0, 1, 99, 1), (3, -1, 99, 1)]) == []
    assert len(feed(x, [(3, -1, 99, 1)])) == 1


def test_price_through_and_trade_through_fill_at_our_price():
    x = venue()
    x.create("a", 1, 98, 1.0, "GTX", 1)
    (ev,) = feed(x, [(0, -1, 98, 2)])  # the best ask drops onto our bid
    assert ev.last_price_ticks == 98 and ev.status == FILLED
    y = venue()
    y.create("b", -1, 102, 1.0, "GTX", 1)
    (ev,) = feed(y, [(3, 1, 103, 1)])  # a buy trade above our ask
    assert ev.last_price_ticks == 102 and y.position()[0] == -1.0


def test_partial_fills_take_the_traded_quantity_beyond_the_queue():
    x = venue(partial_fills=True)
    x.create("a", 1, 99, 4.0, "GTX", 1)
    (ev,) = feed(x, [(3, -1, 99, 7)])  # 5 ahead, 2 for us
    assert ev.last_qty == 2.0 and ev.status == PARTIALLY_FILLED and x.open_orders()[0].leaves == 2.0
    (ev,) = feed(x, [(3, -1, 99, 5)])
    assert ev.status == FILLED and x.open_orders() == []


@pytest.mark.parametrize(
    ("args", "code"),
    [(("c", 1, 101, 1.0, "GTX"), -5022), (("c", -1, 99, 1.0, "GTX"), -5022), (("c", 1, 99, 0.5, "GTX"), -1111),
     (("c", 1, 2, 1.0, "GTX"), -4164), (("a", 1, 97, 1.0, "GTX"), -4116)],
)  # fmt: skip
def test_refused_orders_carry_the_venue_error_and_change_nothing(args, code):
    x = venue()
    x.create("a", 1, 98, 1.0, "GTX", 1)
    with pytest.raises(Rejected) as e:
        x.create(*args, 2)
    assert e.value.code == code and [o.client_id for o in x.open_orders()] == ["a"]


def test_cancel_by_either_id_and_unknown_orders():
    x = venue()
    a = x.create("a", 1, 98, 1.0, "GTX", 1).order
    x.create("b", 1, 97, 1.0, "GTX", 1)
    assert x.cancel(2, order_id=a.order_id).status == CANCELED
    assert x.cancel(3, client_id="b").status == CANCELED and x.open_orders() == []
    assert x.find(client_id="a").status == CANCELED  # still known, closed
    for kw in ({"order_id": a.order_id}, {"client_id": "zzz"}):
        with pytest.raises(Rejected) as e:
            x.cancel(4, **kw)
        assert e.value.code == -2011
    with pytest.raises(Rejected) as e:
        x.find(client_id="zzz")
    assert e.value.code == -2013


def test_only_post_only_orders_and_valid_client_ids_are_taken():
    x = venue()
    for tif in ("GTC", "IOC", "FOK"):
        with pytest.raises(Rejected) as e:
            x.create("a", 1, 98, 1.0, tif, 1)
        assert e.value.code == -1115
    for bad in ("", "has space", "x" * 37):
        with pytest.raises(Rejected) as e:
            x.create(bad, 1, 98, 1.0, "GTX", 1)
        assert e.value.code == -4015
    assert x.open_orders() == []


def test_a_client_id_is_unique_among_open_orders_only_as_on_binance():
    x = venue()
    first = x.create("a", 1, 98, 1.0, "GTX", 1).order
    x.cancel(2, client_id="a")
    again = x.create("a", 1, 97, 1.0, "GTX", 3).order  # the first one is closed: allowed
    assert again.order_id != first.order_id and x.find(client_id="a").order_id == again.order_id


def test_a_reset_and_snapshot_mid_session_keep_our_place_in_the_queue():
    x = venue()
    x.create("a", 1, 99, 1.0, "GTX", 1)
    feed(x, [(2, 0, 0, 0), (1, 1, 99, 5), (1, 1, 98, 5), (1, -1, 101, 5), (1, -1, 102, 5)])  # the capture resyncs
    assert feed(x, [(3, -1, 99, 5)]) == []  # still 5 ahead of us
    assert len(feed(x, [(3, -1, 99, 1)])) == 1


def test_events_keep_the_order_as_it_was_when_they_happened():
    x = venue(partial_fills=True)
    x.create("a", 1, 99, 4.0, "GTX", 1)
    (first,) = feed(x, [(3, -1, 99, 7)])
    (second,) = feed(x, [(3, -1, 99, 5)])
    assert (first.filled, second.filled) == (2.0, 4.0) and first.order.filled == 4.0


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.tuples(st.just("create"), st.sampled_from("abcd"), st.sampled_from([1, -1]), st.integers(90, 110)),
            st.tuples(st.just("cancel"), st.sampled_from("abcd")),
            st.tuples(
                st.just("row"),
                st.sampled_from([1, 3]),
                st.sampled_from([1, -1]),
                st.integers(90, 110),
                st.sampled_from([0.0, 1.0, 5.0]),
            ),  # fmt: skip
        ),
        max_size=40,
    ),
    st.booleans(),
)
def test_the_open_orders_are_exactly_those_whose_status_is_open(ops, partial):
    """The venue walks its open orders only (not every order it ever took): they must stay in step with the states."""
    x = venue(partial_fills=partial)
    t = 1
    for op in ops:
        t += 1
        try:
            if op[0] == "create":
                x.create(op[1], op[2], op[3], 2.0, "GTX", t)
            elif op[0] == "cancel":
                x.cancel(t, client_id=op[1])
            else:
                x.on_row(op[1], op[2], op[3], op[4], t)
        except Rejected:
            pass
        open_ = sorted((o for o in x.orders.values() if o.status in (NEW, PARTIALLY_FILLED)), key=lambda o: o.order_id)
        assert x.open_orders() == open_


def test_an_ioc_takes_the_book_level_by_level_up_to_its_price_and_the_rest_expires():
    x = venue()
    evs = x.take("t", 1, 101, 7.0, False, 1)  # only 101 is within the limit: 5 of 7 filled
    assert [e.exec_type for e in evs] == ["NEW", "TRADE", "EXPIRED"]
    assert evs[1].last_qty == 5.0 and evs[1].last_price_ticks == 101 and evs[1].fee == pytest.approx(505 * 0.0005)
    assert evs[-1].status == "EXPIRED" and evs[-1].filled == 5.0 and x.position()[0] == 5.0
    evs = x.take("u", 1, 102, 7.0, False, 2)  # two levels, each at its own price
    assert [e.last_price_ticks for e in evs if e.exec_type == "TRADE"] == [101, 102] and evs[-1].status == FILLED
    assert x.open_orders() == []  # an IOC never rests


def test_a_reduce_only_ioc_never_opens_or_grows_a_position():
    x = venue()
    with pytest.raises(Rejected) as e:
        x.take("r", -1, 98, 1.0, True, 1)  # flat: nothing to reduce
    assert e.value.code == -2022 and x.position()[0] == 0.0
    x.take("long", 1, 102, 3.0, False, 1)
    with pytest.raises(Rejected):
        x.take("r2", 1, 102, 1.0, True, 2)  # a buy would grow a long
    evs = x.take("r3", -1, 98, 10.0, True, 3)  # clipped to the position
    assert evs[0].order.qty == 3.0 and evs[0].order.reduce_only and x.position()[0] == 0.0


@settings(max_examples=50, deadline=None)
@given(pos=st.integers(1, 10), qty=st.integers(1, 20), limit=st.integers(95, 99))
def test_a_reduce_only_sell_ends_between_flat_and_where_it_started(pos, qty, limit):
    x = venue()
    x.take("long", 1, 102, float(pos), False, 1)
    x.take("r", -1, limit, float(qty), True, 2)
    assert 0.0 <= x.position()[0] <= pos
