"""compute_features on hand-built tapes: update points, sampling at times, funding, the book's sync."""

from __future__ import annotations

import math

import numpy as np
import pytest

from grinder.book.l2 import apply_row
from grinder.data import tape as tape_module
from grinder.errors import ConfigError
from grinder.features import FeatureSet, OnlineFeatures, compute_features, kernel

from .helpers import S, book, snapshot, tape

FS = FeatureSet(levels=2, vol_horizons_ns=(S,), flow_horizons_ns=(S,))


def rows():
    r = [(0, 3, 1, 100, 2.0, 1)]  # a trade before any snapshot
    r += snapshot(S // 10, [(99, 3.0), (98, 1.0)], [(101, 1.0), (102, 5.0)])
    r += [(S, 0, 1, 100, 1.0, 0), (S, 0, 1, 99, 0.0, 1)]  # one message: bid 99 -> 100
    r += [(S + S // 2, 3, -1, 100, 1.0, 1)]
    r += [(2 * S, 2, 0, 0, 0.0, 1)]  # a reset: unsynced from here
    return r


def test_one_sample_per_update_point_with_known_values():
    f = compute_features(tape(rows(), funding=[(S // 2, 1e-4)]), FS)
    assert f.row.tolist() == [0, 5, 7, 8, 9]  # the trade, each message's last row, the reset
    assert f.ts.tolist() == [0, S // 10, S, S + S // 2, 2 * S]
    assert math.isnan(f["spread"][0]) and f["spread"][1] == 2.0 and f["spread"][2] == 1.0
    assert f["microprice_offset"][1] == 0.5 and f["imbalance"][1] == -0.2
    assert f["imbalance"][2] == (1.0 + 1.0 - 1.0 - 5.0) / 8.0
    r2 = math.log(201 / 200) ** 2
    assert f["rv_1s"][2] == pytest.approx(math.sqrt(r2) * 1e4, rel=1e-15)
    assert math.isnan(f["spread"][4])  # after the reset
    assert np.isnan(f["funding_rate"][:2]).all() and (f["funding_rate"][2:] == 1e-4).all()
    assert f.version == FS.version


def test_sampling_at_times_sees_every_event_at_or_before_and_decays_to_the_time():
    t = tape(rows(), funding=[(S // 2, 1e-4)])
    at = np.array([-1, 0, S // 2, S, 3 * S], np.int64)
    f = compute_features(t, FS, at)
    assert f.ts.tolist() == at.tolist()
    assert f.row.tolist() == [-1, 0, 5, 7, 9]
    assert f["intensity_1s"][1] == 1.0  # the trade at 0 is in
    assert f["funding_rate"][2] == 1e-4  # funding at the very time is in
    assert f["intensity_1s"][4] == pytest.approx((math.exp(-1.5) + 1.0) * math.exp(-1.5), rel=1e-14)
    assert math.isnan(f["spread"][0]) and math.isnan(f["spread"][4])


def test_offline_equals_online_on_a_hand_tape():
    t = tape(rows(), funding=[(S // 2, 1e-4)])
    off = compute_features(t, FS)
    on = OnlineFeatures(FS)
    got = []
    pending = (S // 2, 1e-4)
    synced = False
    hdr, wq, ok, oq = book([], [])
    for ts, kind, side, p, q, end in rows():
        if pending and pending[0] <= ts:
            on.on_funding(*pending)
            pending = None
        if kind != 3:
            ok, oq = apply_row(hdr, wq, ok, oq, kind, side, p, q)
            synced = True if kind == 1 else False if kind == 2 else synced
        if end:
            if kind == 3:
                on.on_trade(ts, side, q)
            else:
                on.on_book(ts, hdr, wq, ok, oq, synced)
            got.append(on.read(ts).copy())
    assert np.array_equal(np.array(got).T, off.values, equal_nan=True)


def test_unsorted_sample_times_are_refused_in_one_line():
    with pytest.raises(ConfigError, match="sorted; first out of order at index 2"):
        compute_features(tape(rows()), FS, np.array([0, 5, 1]))


def test_unknown_feature_name():
    f = compute_features(tape(rows()), FS)
    with pytest.raises(KeyError, match="no feature named 'nope'"):
        f["nope"]


def test_the_kernel_reads_the_tapes_codes():
    assert (kernel.TRADE_ROW, kernel.BATCH_END) == (tape_module.EV_TRADE, tape_module.BATCH_END)
