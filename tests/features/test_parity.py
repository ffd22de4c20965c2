"""Feature parity: the offline pass equals the online updater fed event by event from a replay of the same tape.

The online side is driven the way paper mode and the emulator hold a live book: the venue's
`Exchange` applies each row of the real BTCUSDT sample, and at the end of each message (or trade)
the updater is called with that book's arrays.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from grinder.data.tape import BATCH_END, EV_TRADE, load_tape
from grinder.features import FeatureSet, OnlineFeatures, compute_features
from grinder.venue.exchange import Exchange

REPO = Path(__file__).resolve().parents[2]


def test_offline_equals_online_on_the_real_sample():
    tape = load_tape(REPO / "data" / "sample" / "lake", "binance-usdm", "BTCUSDT")
    fs = FeatureSet()
    rng = np.random.default_rng(7)
    at = np.sort(rng.integers(int(tape.ts_exch[0]), int(tape.ts_exch[-1]) + 1, 500))
    off = compute_features(tape, fs)
    off_at = compute_features(tape, fs, at)

    venue = Exchange(tape.instrument)
    on = OnlineFeatures(fs)
    got = np.empty((len(off), len(fs.names)))
    got_at = np.empty((len(at), len(fs.names)))
    synced, m, a = False, 0, 0
    rows = zip(
        tape.ts_exch.tolist(), tape.kind.tolist(), tape.side.tolist(), tape.price_ticks.tolist(),
        tape.qty.tolist(), tape.flags.tolist(), strict=True,
    )  # fmt: skip
    for ts, kind, side, ticks, qty, flags in rows:
        while a < len(at) and at[a] < ts:
            on.read(int(at[a]), got_at[a])
            a += 1
        venue.on_row(kind, side, ticks, qty, ts)
        if kind == 1:
            synced = True
        elif kind == 2:
            synced = False
        if flags & BATCH_END:
            if kind == EV_TRADE:
                on.on_trade(ts, side, qty)
            else:
                on.on_book(ts, venue.hdr, venue.wq, venue.ok, venue.oq, synced)
            on.read(ts, got[m])
            m += 1
    for k in range(a, len(at)):
        on.read(int(at[k]), got_at[k])

    assert m == len(off)
    for offline, online in ((off.values, got.T), (off_at.values, got_at.T)):
        assert np.array_equal(np.isnan(offline), np.isnan(online))
        diff = float(np.nanmax(np.abs(offline - online)))
        print(f"parity max abs diff: {diff!r} over {offline.size} values")
        assert diff <= 1e-9
        assert np.array_equal(offline, online, equal_nan=True)  # in fact bit for bit
    # the sample has no funding table: the column stays NaN; the book features are defined once synced
    assert np.isnan(off["funding_rate"]).all()
    assert np.isfinite(off["spread"][off.row >= np.argmax(tape.kind == 1) + 2000]).all()
