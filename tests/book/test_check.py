"""replay_check's unsynced spans: where the book is not synced, from when to when, and why."""

from __future__ import annotations

import numpy as np

from grinder.book.check import WHY_GAP, WHY_NO_SNAPSHOT, WHY_RESET, replay_check
from grinder.data.instruments import Instrument
from grinder.data.tape import GAP_RESET_REF, Series, Tape

MS = 1_000_000
INST = Instrument(venue="test", symbol="TESTUSDT", tick_size=1.0, lot_size=1.0)
SNAP = [(2, 0, 0, 0), (1, 1, 99, 5), (1, -1, 101, 5)]  # reset, then a snapshot of one level a side


def tape(rows, start=0):
    """rows: (t_ms, kind, side, price, qty[, ref])."""
    ts = np.array([r[0] * MS for r in rows], np.int64)
    none = np.empty(0, np.int64)
    prices = {c: np.empty(0) for c in ("bid_price", "bid_qty", "ask_price", "ask_qty")}
    bbo = Series({"ts_exch": none, "update_id": none} | prices)
    return Tape(
        INST, ts, ts.copy(), np.array([r[1] for r in rows], np.int8), np.array([r[2] for r in rows], np.int8),
        np.array([r[3] for r in rows], float), np.array([r[3] for r in rows], np.int64),
        np.array([r[4] for r in rows], float), np.array([r[5] if len(r) > 5 else i for i, r in enumerate(rows)]),
        np.ones(len(rows), np.uint8), bbo, Series({"ts_exch": none}), start=start,
    )  # fmt: skip


def at(t, rows):
    return [(t, *r) for r in rows]


def test_each_unsynced_span_is_reported_with_its_reason():
    rows = [(0, 3, 1, 100, 1), (5, 0, 1, 99, 2)]  # a trade and a diff before any snapshot
    rows += at(10, SNAP) + [(20, 0, 1, 98, 1)]
    rows += [(30, 2, 0, 0, 0), (35, 3, -1, 99, 1)] + at(40, SNAP)  # a sequence break, resynced at 40 ms
    rows += [(70_000, 2, 0, 0, 0, GAP_RESET_REF), (70_001, 3, 1, 100, 1)]  # another capture, never synced
    r = replay_check(tape(rows))
    got = [(u.from_ns // MS, u.to_ns // MS, u.why, u.resynced) for u in r.unsynced]
    assert got == [
        (0, 10, WHY_NO_SNAPSHOT, True),
        (30, 40, WHY_RESET, True),
        (70_000, 70_001, WHY_GAP, False),
    ]  # to: one ns past the last row
    assert r.crossed == 0


def test_a_reset_and_its_snapshot_at_one_time_are_no_span_and_a_window_start_counts():
    rows = at(0, SNAP) + [(10, 0, 1, 98, 1)] + at(20, SNAP) + [(30, 3, 1, 100, 1)]
    assert replay_check(tape(rows)).unsynced == ()
    # A window starting at 5 ms on a tape whose book rows begin after it: unsynced from the start.
    late = tape([(8, 3, 1, 100, 1)] + at(12, SNAP))
    (u,) = replay_check(late, 5 * MS).unsynced
    assert (u.from_ns, u.to_ns, u.why) == (5 * MS, 12 * MS, WHY_NO_SNAPSHOT)
    # A window that starts after a sequence break carries the break's reason and its own start.
    rows = at(0, SNAP) + [(10, 2, 0, 0, 0), (15, 3, 1, 100, 1), (18, 3, 1, 100, 1)] + at(25, SNAP)
    (u,) = replay_check(tape(rows, start=5), 16 * MS).unsynced
    assert (u.from_ns, u.to_ns, u.why) == (16 * MS, 25 * MS, WHY_RESET)
