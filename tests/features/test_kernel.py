"""The compiled update and read on hand-built books and trades: exact values and invariants."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from grinder.features import FeatureSet, OnlineFeatures
from grinder.features.kernel import side_depth

from .helpers import S, book

BIDS = [(99, 3.0), (98, 1.0), (90, 2.0)]
ASKS = [(101, 1.0), (102, 5.0), (110, 4.0)]


def row_of(fs, bids, asks, synced=True, ts=0):
    f = OnlineFeatures(fs)
    f.on_book(ts, *book(bids, asks), synced)
    return dict(zip(f.names, f.read(ts), strict=True))


def test_microprice_imbalance_and_spread_are_exact():
    r = row_of(FeatureSet(levels=2), BIDS, ASKS)
    assert r["spread"] == 2.0
    assert r["microprice_offset"] == 0.5  # (99*1 + 101*3) / 4 - 100, in ticks
    assert r["imbalance"] == -0.2  # (3 + 1 - 1 - 5) / 10
    assert row_of(FeatureSet(levels=1), BIDS, ASKS)["imbalance"] == 0.5
    assert row_of(FeatureSet(levels=10), BIDS, ASKS)["imbalance"] == (6.0 - 10.0) / 16.0  # fewer levels than N


def test_depth_reaches_levels_in_overflow():
    far = [(99, 1.0), (99 - 40_000, 7.0)]  # the second bid lies outside the dense window
    hdr, wq, ok, oq = book(far, [(101, 1.0)])
    assert side_depth(hdr, wq, ok, oq, 0, 2) == (1.0, 8.0)
    assert side_depth(hdr, wq, ok, oq, 0, 1) == (1.0, 1.0)


def test_book_features_are_nan_without_a_two_sided_synced_book():
    fs = FeatureSet()
    for bids, asks, synced in ((BIDS, [], True), ([], ASKS, True), (BIDS, ASKS, False), ([], [], True)):
        r = row_of(fs, bids, asks, synced)
        assert math.isnan(r["microprice_offset"]) and math.isnan(r["imbalance"]) and math.isnan(r["spread"])
        assert r["rv_1s"] == 0.0


def test_volatility_on_a_hand_series():
    fs = FeatureSet(vol_horizons_ns=(S,), flow_horizons_ns=(S,))
    f = OnlineFeatures(fs)
    f.on_book(0, *book([(99, 1.0)], [(101, 1.0)]), True)  # mid 100
    f.on_book(S, *book([(100, 1.0)], [(101, 1.0)]), True)  # mid 100.5
    r2 = math.log(201 / 200) ** 2
    assert f.read(S)[fs.names.index("rv_1s")] == pytest.approx(math.sqrt(r2) * 1e4, rel=1e-15)
    # two seconds later the sum has decayed by e^-2; the volatility by e^-1
    assert f.read(3 * S)[fs.names.index("rv_1s")] == pytest.approx(math.sqrt(r2 * math.exp(-2)) * 1e4, rel=1e-14)
    # an unsynced book breaks the chain: the next mid is no return
    f.on_book(3 * S, *book([], []), False)
    f.on_book(3 * S, *book([(200, 1.0)], [(202, 1.0)]), True)
    assert f.read(3 * S)[fs.names.index("rv_1s")] == pytest.approx(math.sqrt(r2 * math.exp(-2)) * 1e4, rel=1e-14)


def test_flow_imbalance_and_intensity_on_a_hand_series():
    fs = FeatureSet(vol_horizons_ns=(S,), flow_horizons_ns=(S, 2 * S))
    f = OnlineFeatures(fs)
    assert math.isnan(f.read(0)[fs.names.index("flow_imb_1s")])  # no trade yet
    assert f.read(0)[fs.names.index("intensity_1s")] == 0.0
    f.on_trade(0, 1, 2.0)
    f.on_trade(S // 2, -1, 1.0)
    r = dict(zip(fs.names, f.read(S), strict=True))
    buy, sell = 2.0 * math.exp(-1.0), math.exp(-0.5)
    assert r["flow_imb_1s"] == pytest.approx((buy - sell) / (buy + sell), rel=1e-14)
    assert r["intensity_1s"] == pytest.approx(math.exp(-1.0) + math.exp(-0.5), rel=1e-14)
    buy2, sell2 = 2.0 * math.exp(-0.5), math.exp(-0.25)
    assert r["flow_imb_2s"] == pytest.approx((buy2 - sell2) / (buy2 + sell2), rel=1e-14)
    assert r["intensity_2s"] == pytest.approx((math.exp(-0.5) + math.exp(-0.25)) / 2.0, rel=1e-14)


def test_a_late_stamp_does_not_grow_the_sums_and_reading_changes_nothing():
    fs = FeatureSet()
    f = OnlineFeatures(fs)
    f.on_trade(10 * S, 1, 1.0)
    before = f.read(11 * S).copy()
    f.read(100 * S)
    assert np.array_equal(f.read(11 * S), before, equal_nan=True)  # read leaves the state alone
    f.on_trade(5 * S, -1, 1.0)  # earlier than the last update: counted at 10 s, no decay
    r = dict(zip(fs.names, f.read(10 * S), strict=True))
    assert r["flow_imb_1s"] == 0.0 and r["intensity_1s"] == 2.0


def test_funding_is_the_last_rate():
    fs = FeatureSet()
    f = OnlineFeatures(fs)
    assert math.isnan(f.read(0)[-1])
    f.on_funding(S, 1e-4)
    f.on_funding(2 * S, -2e-4)
    assert f.read(3 * S)[-1] == -2e-4


prices = st.integers(1, 500)
qtys = st.floats(1e-6, 1e6, allow_nan=False, allow_infinity=False)


@st.composite
def books(draw):
    """A synced, uncrossed book with at least one level a side."""
    mid = draw(st.integers(1000, 100_000))
    bids = draw(st.dictionaries(st.integers(1, 600), qtys, min_size=1, max_size=20))
    asks = draw(st.dictionaries(st.integers(1, 600), qtys, min_size=1, max_size=20))
    return [(mid - d, q) for d, q in bids.items()], [(mid + d, q) for d, q in asks.items()]


@settings(max_examples=200, deadline=None)
@given(books(), st.integers(1, 30))
def test_book_invariants(bk, levels):
    r = row_of(FeatureSet(levels=levels), *bk)
    assert -1.0 <= r["imbalance"] <= 1.0
    assert r["spread"] >= 1.0
    assert abs(r["microprice_offset"]) <= r["spread"] / 2


events = st.lists(
    st.tuples(st.integers(0, 3 * S), st.sampled_from([1, -1]), qtys, st.booleans()), min_size=1, max_size=50
)


@settings(max_examples=200, deadline=None)
@given(events, st.integers(0, 10 * S))
def test_flow_and_volatility_invariants(evs, later):
    fs = FeatureSet()
    f = OnlineFeatures(fs)
    t = 0
    for dt, side, qty, move in evs:
        t += dt
        f.on_trade(t, side, qty)
        if move:
            m = 1000 + side * (t % 7)
            f.on_book(t, *book([(m - 1, qty)], [(m + 1, qty)]), True)
    r = dict(zip(fs.names, f.read(t + later), strict=True))
    for h in ("1s", "10s", "1m"):
        assert r[f"intensity_{h}"] >= 0.0
        assert r[f"rv_{h}"] >= 0.0
        x = r[f"flow_imb_{h}"]
        assert math.isnan(x) or -1.0 <= x <= 1.0
