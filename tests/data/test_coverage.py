"""Coverage: spans of exchange time that hold data, from times and from a lake of real captures."""

from __future__ import annotations

import gzip

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from grinder.data.coverage import (
    DEFAULT_MAX_GAP_NS,
    Span,
    clip_spans,
    covering,
    lake_spans,
    merge_spans,
    spans_of_times,
)
from grinder.data.ingest.binance import parse_binance
from grinder.data.instruments import resolve_instrument
from grinder.data.lake import Lake
from grinder.errors import ConfigError, DataError
from tests.conftest import write_capture

S = 1_000_000_000


def test_a_gap_longer_than_the_limit_starts_a_new_span():
    ts = np.array([0, 5, 10, 10 + 61 * S, 10 + 62 * S], np.int64)
    assert spans_of_times(ts, 60 * S) == [Span(0, 11, 3), Span(10 + 61 * S, 10 + 62 * S + 1, 2)]
    assert spans_of_times(ts, 61 * S) == [Span(0, 10 + 62 * S + 1, 5)]  # a gap of exactly the limit joins
    assert spans_of_times(ts[::-1], 60 * S) == spans_of_times(ts, 60 * S)  # any order
    assert spans_of_times(np.empty(0, np.int64)) == []
    with pytest.raises(ConfigError, match="max_gap_ns must be >= 0"):
        spans_of_times(ts, -1)


@given(st.lists(st.integers(0, 10**12), min_size=1, max_size=300), st.integers(0, 10**11))
def test_spans_hold_every_time_and_are_separated_by_more_than_the_gap(times, gap):
    ts = np.array(times, np.int64)
    spans = spans_of_times(ts, gap)
    assert sum(s.events for s in spans) == len(ts)
    for s in spans:
        assert s.start_ns < s.end_ns
        assert ((ts >= s.start_ns) & (ts < s.end_ns)).sum() == s.events
    for a, b in zip(spans, spans[1:], strict=False):
        assert b.start_ns - (a.end_ns - 1) > gap  # last row of one to first row of the next
    assert merge_spans(spans, gap) == spans  # already as merged as they get


def test_merge_and_clip():
    a, b, c = Span(0, 10, 4), Span(15, 20, 2), Span(100, 200, 7)
    assert merge_spans([c, b, a], 10) == [Span(0, 20, 6), c]
    assert merge_spans([a, Span(5, 8, None)], 10) == [Span(0, 10, None)]  # overlap; unknown count stays unknown
    assert clip_spans([a, c], 5, 150) == [Span(5, 10, None), Span(100, 150, None)]
    assert clip_spans([a, c], None, None) == [a, c]
    assert clip_spans([a, c], 20, 90) == []
    assert covering([a, c], 9) == a and covering([a, c], 10) is None and covering([a, c], 150) == c


@pytest.fixture(scope="module")
def lake(real_dir, tmp_path_factory):
    """Three real BTCUSDT captures, each cut to its first 4,000 lines (snapshot kept), in one lake."""
    tmp = tmp_path_factory.mktemp("coverage")
    root = tmp / "lake"
    inst = resolve_instrument("binance-usdm", "BTCUSDT")
    for name in ("btcusdt_20230404.dat.gz", "btcusdt_20240718.gz", "btcusdt_20240808.gz"):
        with gzip.open(real_dir / name, "rb") as f:
            lines = [f.readline() for _ in range(4_000)]
        path = write_capture(tmp / name, lines)
        Lake(root).write(parse_binance([path], inst), [path])
    return root


def test_lake_spans_are_the_captures_with_their_book_rows(lake):
    spans = lake_spans(lake, "binance-usdm", "BTCUSDT")
    assert len(spans) == 3  # 16 months of calendar time, three captures of a few seconds to minutes
    days = [np.datetime64(s.start_ns, "ns").astype("datetime64[D]").astype(str) for s in spans]
    assert days == ["2023-04-04", "2024-07-18", "2024-08-08"]
    for s in spans:
        assert 0 < s.duration_ns < 10 * 60 * S and s.events > 1_000
    import pyarrow.parquet as pq

    book = pq.read_table(lake / "book", columns=["ts_exch"]).column("ts_exch").to_numpy()
    assert sum(s.events for s in spans) == len(book)
    assert min(s.start_ns for s in spans) == book.min() and max(s.end_ns for s in spans) == book.max() + 1
    assert lake_spans(lake, "binance-usdm", "NOPEUSDT") == []
    # A tighter limit splits a capture at its longest silence; the default does not.
    assert len(lake_spans(lake, "binance-usdm", "BTCUSDT", max_gap_ns=50_000_000)) > 3
    assert DEFAULT_MAX_GAP_NS == 60 * S


def test_a_damaged_part_file_is_named(lake, tmp_path):
    import shutil

    root = tmp_path / "lake"
    shutil.copytree(lake, root)
    part = next((root / "book").rglob("*.parquet"))
    part.write_bytes(b"not parquet")
    with pytest.raises(DataError, match="cannot read book times") as e:
        lake_spans(root, "binance-usdm", "BTCUSDT")
    assert str(part) in str(e.value)
