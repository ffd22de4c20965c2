"""LakeChunks serves exactly the rows load_tape returns for the same selection, a date partition at a time."""

from __future__ import annotations

import numpy as np
import pytest

from grinder.data.chunks import LakeChunks
from grinder.data.lake import Lake
from grinder.data.synth import synth_batch
from grinder.data.tape import load_tape
from grinder.errors import ConfigError, DataError
from tests.conftest import REPO

S = 1_000_000_000
T0 = 1_704_067_200 * S  # 2024-01-01
COLS = ("ts_exch", "ts_local", "kind", "side", "price_ticks", "qty", "flags")


@pytest.fixture(scope="module")
def lake(tmp_path_factory):
    """Captures on three days, one of them across midnight after a gap (a span whose reset's local
    time is the earliest of rows on two days), with gaps between them."""
    root = tmp_path_factory.mktemp("lake")
    lake = Lake(root)
    for i, (n, minutes) in enumerate([(20_000, 0), (15_000, 23 * 60 + 30), (200_000, 23 * 60 + 50),
                                      (30_000, 48 * 60 + 5)]):  # fmt: skip
        lake.write(synth_batch(n, seed=i + 1, start_ns=T0 + minutes * 60 * S), [], key=f"capture{i}")
    return root


def same_rows(root, venue, symbol, start, end, chunk_ns=3600 * S, chunk_rows=1 << 19):
    tape = load_tape(root, venue, symbol, start, end)
    chunks = list(LakeChunks(root, venue, symbol, start, end, chunk_ns, chunk_rows).chunks())
    assert all(len(c.ts_exch) for c in chunks)  # none empty
    times = list(LakeChunks(root, venue, symbol, start, end, chunk_ns, chunk_rows).chunks(times_only=True))
    assert [c.end_ns for c in times] == [c.end_ns for c in chunks]
    for name in ("ts_exch", "ts_local"):  # the same rows, gap resets included, in another order within a time
        assert np.array_equal(np.sort(np.concatenate([getattr(c, name) for c in times])), np.sort(getattr(tape, name)))
    for c in chunks[:-1]:
        assert c.end_ns is not None and (len(c.ts_exch) == 0 or c.ts_exch[-1] <= c.end_ns)
    assert chunks[-1].end_ns is None
    for name in COLS:
        got = np.concatenate([getattr(c, name) for c in chunks])
        assert got.dtype == getattr(tape, name).dtype and np.array_equal(got, getattr(tape, name)), name
    return chunks


@pytest.mark.parametrize("chunk_min", [60, 7, 24 * 60])
@pytest.mark.parametrize(
    "start_min, end_min",
    [(None, None), (10, None), (23 * 60 + 55, None), (24 * 60 + 5, 48 * 60 + 10), (None, 24 * 60 + 1), (60, 120)],
)
def test_chunks_are_the_rows_of_load_tape(lake, start_min, end_min, chunk_min):
    start = None if start_min is None else T0 + start_min * 60 * S
    end = None if end_min is None else T0 + end_min * 60 * S
    if (start, end) == (T0 + 60 * 60 * S, T0 + 120 * 60 * S):
        with pytest.raises(DataError, match="no book or trade rows"):
            list(LakeChunks(lake, "synthetic", "SYNTHUSDT", start, end).chunks())
        return
    chunks = same_rows(lake, "synthetic", "SYNTHUSDT", start, end, chunk_min * 60 * S)
    if start is None and end is None and chunk_min == 24 * 60:
        assert len(chunks) == 3  # one per date partition


def test_the_real_sample_in_chunks():
    same_rows(REPO / "data" / "sample" / "lake", "binance-usdm", "BTCUSDT", None, None)


def test_an_empty_range_is_refused(lake):
    with pytest.raises(ConfigError, match="empty time range"):
        LakeChunks(lake, "synthetic", "SYNTHUSDT", T0 + S, T0)


def test_interleaved_ingests_of_one_day_in_chunks(tmp_path):
    """Two ingests whose rows interleave in one date partition, some at equal times: the chunks' rows
    are load_tape's, in (time, arrival) order, wherever the slices cut."""
    lake = Lake(tmp_path)
    lake.write(synth_batch(40_000, seed=1, start_ns=T0), [], key="a")
    lake.write(synth_batch(40_000, seed=2, start_ns=T0 + 20 * S), [], key="b")  # overlaps the first
    tape = load_tape(tmp_path, "synthetic", "SYNTHUSDT")
    assert (np.diff(tape.ts_exch) == 0).any()
    for chunk_s in (7, 61, 3600):
        same_rows(tmp_path, "synthetic", "SYNTHUSDT", None, None, chunk_s * S)


def test_chunk_ns_must_be_positive(lake):
    with pytest.raises(ConfigError, match="chunk_ns must be a positive whole number of nanoseconds"):
        LakeChunks(lake, "synthetic", "SYNTHUSDT", chunk_ns=0)


def test_a_pass_holds_only_the_current_days_part_files(lake, monkeypatch):
    """Decoded row groups are kept for the next slice of the same day, never for days already passed
    (a 200 M-event run held every part file's last row groups: 5.2 GB)."""
    from grinder.data import chunks

    held = []
    real = chunks._Parts.rows

    def spy(self, files, cols, lo, hi):
        out = real(self, files, cols, lo, hi)
        held.append({f.parent.name for f in self._last} | {f.parent.name for f in self._open})
        return out

    monkeypatch.setattr(chunks._Parts, "rows", spy)
    list(LakeChunks(lake, "synthetic", "SYNTHUSDT", chunk_ns=3600 * S).chunks())
    assert held and max(len(days) for days in held) == 1  # one date partition at a time
    assert len(set().union(*held)) == 3


@pytest.mark.parametrize("chunk_rows", [1, 997, 50_000])
def test_chunks_of_at_most_chunk_rows_are_the_rows_of_load_tape(lake, chunk_rows):
    """Slices of more rows are cut where the time changes, both passes alike; rows of one time stay together."""
    chunks = same_rows(lake, "synthetic", "SYNTHUSDT", None, None, 3600 * S, chunk_rows)
    ts = np.concatenate([c.ts_exch for c in chunks])
    assert len(chunks) > len(ts) // max(chunk_rows, 20_000)
    for c in chunks:
        assert len(c.ts_exch) <= chunk_rows or (c.ts_exch == c.ts_exch[0]).all()
    for a, b in zip(chunks[:-1], chunks[1:], strict=True):
        assert a.ts_exch[-1] <= a.end_ns < b.ts_exch[0]


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "100"])
def test_chunk_rows_must_be_a_positive_whole_number(lake, bad):
    with pytest.raises(ConfigError, match="chunk_rows must be a positive whole number"):
        LakeChunks(lake, "synthetic", "SYNTHUSDT", chunk_rows=bad)


def test_settlements_found_a_day_at_a_time_are_those_of_the_whole_series(tmp_path):
    """Funding rows on three days: a settlement published on one day and due on the next before any of
    its rows, a row exactly at a settlement, times before the first row and after the last (not
    known): LakeChunks.funding, a day at a time, gives settlements_of over the whole series."""
    import dataclasses as dc

    import pyarrow as pa

    from grinder.data.schema import FUNDING
    from grinder.sim.backtest import funding_settlements, settlements_of

    day = 24 * 60
    rows = [  # (minute from T0, rate, mark, next settlement minute)
        (-5, 0.1, 100.0, -10),  # a settlement before the first row: not known
        (10, 0.2, 101.0, 8 * 60),
        (8 * 60, 0.3, 102.0, 16 * 60),  # exactly at the settlement: its mark, the earlier rate
        (day - 1, 0.4, 103.0, day + 30),  # due on the next day, before that day's first row
        (day + 60, 0.5, 104.0, 2 * day + 8 * 60),
        (2 * day + 8 * 60, 0.6, 105.0, 2 * day + 8 * 60),
        (2 * day + 9 * 60, 0.7, 106.0, 3 * day),  # after the last row: not known
    ]
    fund = pa.table(
        {
            "ts_exch": [T0 + m * 60 * S for m, *_ in rows],
            "ts_local": [T0 + m * 60 * S + 7 for m, *_ in rows],
            "seq": list(range(len(rows))),
            "mark_price": [mk for _, _, mk, _ in rows],
            "index_price": [mk for _, _, mk, _ in rows],
            "funding_rate": [r for _, r, _, _ in rows],
            "next_funding_ts": [T0 + n * 60 * S for *_, n in rows],
        },
        schema=FUNDING,
    )
    batch = synth_batch(3_000, seed=4, start_ns=T0)
    Lake(tmp_path).write(dc.replace(batch, tables={**batch.tables, "funding": fund}), [], key="funding")
    src = LakeChunks(tmp_path, "synthetic", "SYNTHUSDT")
    want = settlements_of(src.funding_series)
    assert len(want[0]) == 4
    got = src.funding()
    for a, b in zip(got, want, strict=True):
        assert a.dtype == b.dtype and np.array_equal(a, b)
    assert got[1].tolist() == [0.2, 0.3, 0.4, 0.5] and got[2].tolist() == [102.0, 102.0, 103.0, 105.0]
    whole = funding_settlements(load_tape(tmp_path, "synthetic", "SYNTHUSDT"))
    assert all(np.array_equal(a, b) for a, b in zip(got, whole, strict=True))
    for start in (T0 + 9 * 60 * S, T0 + (day + 2 * 60) * 60 * S):  # a window cuts the series too
        s = LakeChunks(tmp_path, "synthetic", "SYNTHUSDT", start)
        assert all(np.array_equal(a, b) for a, b in zip(s.funding(), settlements_of(s.funding_series), strict=True))


@pytest.mark.parametrize("chunk_rows", [1 << 19, 997])
@pytest.mark.parametrize("start_min, end_min", [(None, None), (23 * 60 + 55, None), (24 * 60 + 5, 48 * 60 + 10)])
def test_time_facts_from_the_spans_pass_are_those_of_a_pass_over_the_chunks(lake, chunk_rows, start_min, end_min):
    """LakeChunks finds its TimeFacts in the pass that finds the coverage spans: the same as reading its
    time chunks once more (gap resets, their local times and the cuts of chunk_rows included)."""
    from grinder.data.chunks import time_facts_of

    start = None if start_min is None else T0 + start_min * 60 * S
    end = None if end_min is None else T0 + end_min * 60 * S
    src = LakeChunks(lake, "synthetic", "SYNTHUSDT", start, end, chunk_rows=chunk_rows)
    fused = src.time_facts()
    again = time_facts_of(LakeChunks(lake, "synthetic", "SYNTHUSDT", start, end, chunk_rows=chunk_rows).chunks(True))
    assert fused == again
    assert fused.rows == len(load_tape(lake, "synthetic", "SYNTHUSDT", start, end))


def test_a_book_message_across_a_slice_boundary_ends_where_the_whole_tape_says(tmp_path):
    """A message (one update_id) whose first rows are just before midnight and the rest after: its last
    row before the cut is not its end (BATCH_END), as in load_tape; the chunked fingerprint stays the
    whole tape's (found by a hostile review)."""
    import dataclasses as dc

    import pyarrow as pa

    from grinder.track.provenance import EVENT_COLUMNS, TapeFingerprint, data_fingerprint

    batch = synth_batch(3_000, seed=1, start_ns=T0)
    book = batch.tables["book"]
    ts = book.column("ts_exch").to_numpy().copy()
    uid = book.column("update_id").to_numpy()
    first = np.flatnonzero(uid == uid[0])
    assert len(first) > 10
    ts[first[: len(first) // 2]] = T0 - 1_000_000  # half the first snapshot 1 ms before midnight
    book = book.set_column(book.schema.get_field_index("ts_exch"), "ts_exch", pa.array(ts, pa.int64()))
    Lake(tmp_path).write(dc.replace(batch, tables={**batch.tables, "book": book}), [], key="straddle")
    for chunk_rows in (1 << 19, 50):
        chunks = same_rows(tmp_path, "synthetic", "SYNTHUSDT", None, None, 3600 * S, chunk_rows)
        fp = TapeFingerprint()
        for c in chunks:
            fp.add({n: getattr(c, n) for n in EVENT_COLUMNS})
        src = LakeChunks(tmp_path, "synthetic", "SYNTHUSDT")
        assert fp.hexdigest(src.instrument, src.funding_parts()) == data_fingerprint(
            load_tape(tmp_path, "synthetic", "SYNTHUSDT")
        )
