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
COLS = ("ts_exch", "ts_local", "kind", "side", "price_ticks", "qty")


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


def same_rows(root, venue, symbol, start, end, chunk_ns=3600 * S):
    tape = load_tape(root, venue, symbol, start, end)
    chunks = list(LakeChunks(root, venue, symbol, start, end, chunk_ns).chunks())
    assert all(len(c.ts_exch) for c in chunks)  # none empty
    times = list(LakeChunks(root, venue, symbol, start, end, chunk_ns).chunks(times_only=True))
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
