"""Hand-built tapes and books for the feature tests."""

from __future__ import annotations

import numpy as np

from grinder.book.l2 import apply_row, new_book
from grinder.data.instruments import Instrument
from grinder.data.tape import Series, Tape

S = 1_000_000_000
INST = Instrument(venue="test", symbol="TESTUSDT", tick_size=1.0, lot_size=0.001)


def tape(rows, funding=()):
    """rows: (t_ns, kind, side, price_ticks, qty, batch_end); funding: (t_ns, rate)."""
    ts = np.array([r[0] for r in rows], np.int64)
    none = np.empty(0, np.int64)
    prices = {c: np.empty(0) for c in ("bid_price", "bid_qty", "ask_price", "ask_qty")}
    f_ts = np.array([f[0] for f in funding], np.int64)
    fund = Series({"ts_exch": f_ts, "ts_local": f_ts, "funding_rate": np.array([f[1] for f in funding], float)})
    return Tape(
        INST, ts, ts.copy(), np.array([r[1] for r in rows], np.int8), np.array([r[2] for r in rows], np.int8),
        np.array([r[3] for r in rows], float), np.array([r[3] for r in rows], np.int64),
        np.array([r[4] for r in rows], float), np.arange(len(rows), dtype=np.int64),
        np.array([r[5] for r in rows], np.uint8), Series({"ts_exch": none} | prices), fund,
    )  # fmt: skip


def snapshot(t, bids, asks):
    """A reset then snapshot rows at t: bids/asks as [(price_ticks, qty)]; the last row ends the message."""
    rows = [(t, 2, 0, 0, 0.0, 0)]
    rows += [(t, 1, 1, p, q, 0) for p, q in bids] + [(t, 1, -1, p, q, 0) for p, q in asks]
    rows[-1] = rows[-1][:5] + (1,)
    return rows


def book(bids, asks):
    """l2 arrays holding the given levels: (hdr, wq, ok, oq)."""
    hdr, wq, ok, oq = new_book()
    for s, levels in ((1, bids), (-1, asks)):
        for p, q in levels:
            ok, oq = apply_row(hdr, wq, ok, oq, 0, s, p, q)
    return hdr, wq, ok, oq
