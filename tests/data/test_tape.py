"""Round trip ingest -> Parquet -> tape, and time-window selection."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from grinder.book.check import replay_check
from grinder.data.coverage import DEFAULT_MAX_GAP_NS
from grinder.data.ingest.binance import parse_binance
from grinder.data.instruments import resolve_instrument
from grinder.data.lake import Lake
from grinder.data.tape import BATCH_END, EV_TRADE, load_tape
from grinder.errors import ConfigError, DataError
from tests.conftest import write_capture

BTC = resolve_instrument("binance-usdm", "BTCUSDT")


@pytest.fixture(scope="module")
def lake(real_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("lake")
    path = real_dir / "btcusdt_20240808.gz"
    batch = parse_binance([path], BTC)
    Lake(root).write(batch, [path])
    return root, batch


def test_round_trip_gives_the_same_events(lake):
    root, batch = lake
    tape = load_tape(root, "binance-usdm", "BTCUSDT")
    book, trades = batch.tables["book"].to_pandas(), batch.tables["trades"].to_pandas()
    assert len(tape) == len(book) + len(trades)
    is_trade = tape.kind == EV_TRADE
    # Each table's rows come back in their own order, values unchanged.
    for col, tcol in (
        ("ts_exch", "ts_exch"),
        ("ts_local", "ts_local"),
        ("price", "price"),
        ("qty", "qty"),
        ("side", "side"),
    ):
        assert np.array_equal(getattr(tape, tcol)[~is_trade], book[col].to_numpy())
        assert np.array_equal(getattr(tape, tcol)[is_trade], trades[col].to_numpy())
    assert np.array_equal(tape.kind[~is_trade], book["kind"].to_numpy())
    assert np.array_equal(tape.ref[~is_trade], book["update_id"].to_numpy())
    assert np.array_equal(tape.ref[is_trade], trades["trade_id"].to_numpy())
    # Merged in exchange-time order; ticks agree with prices.
    assert (np.diff(tape.ts_exch) >= 0).all()
    assert np.array_equal(tape.price_ticks, np.rint(tape.price / 0.1).astype(np.int64))
    # A message's rows end with exactly one BATCH_END; every trade is its own batch.
    uid = book["update_id"].to_numpy()
    assert (tape.flags[~is_trade] & BATCH_END).sum() == 1 + (uid[1:] != uid[:-1]).sum()
    assert (tape.flags[is_trade] & BATCH_END).all()
    bbo = batch.tables["bbo"].to_pandas()
    assert np.array_equal(tape.bbo.update_id, bbo["update_id"].to_numpy())
    assert np.array_equal(tape.bbo.bid_price, bbo["bid_price"].to_numpy())


def test_the_merge_gives_the_same_tape_in_any_number_of_parts(lake):
    import pyarrow.parquet as pq

    from grinder.data.tape import _BOOK_COLS, _TRADE_COLS, _merge

    root, _ = lake
    tables = {t: pq.read_table(next((root / t).rglob("*.parquet"))) for t in ("book", "trades")}
    cols = [tables["book"].column(c).to_numpy().astype(d) for c, d in _BOOK_COLS.items()]
    cols += [tables["trades"].column(c).to_numpy().astype(d) for c, d in _TRADE_COLS.items()]
    one = _merge(*cols, 0.1, 1)
    for parts in (2, 3, 7):
        assert all(np.array_equal(a, b) for a, b in zip(one, _merge(*cols, 0.1, parts), strict=True))


def test_keeping_arrow_s_buffers_or_skipping_the_bbo_loads_the_same_events(lake):
    root, _ = lake
    a = load_tape(root, "binance-usdm", "BTCUSDT")
    b = load_tape(root, "binance-usdm", "BTCUSDT", release_buffers=False)
    c = load_tape(root, "binance-usdm", "BTCUSDT", release_buffers=False, bbo=False)
    for name in ("ts_exch", "ts_local", "kind", "side", "price", "price_ticks", "qty", "ref", "flags"):
        assert np.array_equal(getattr(a, name), getattr(b, name))
        assert np.array_equal(getattr(a, name), getattr(c, name))
    assert np.array_equal(a.bbo.bid_price, b.bbo.bid_price) and len(a.bbo) > 0
    assert len(c.bbo) == 0 and list(c.bbo.columns) == list(a.bbo.columns)
    assert c.start == a.start and c.instrument == a.instrument


def test_window_starts_from_the_last_snapshot_so_the_book_is_whole(lake):
    root, _ = lake
    full = load_tape(root, "binance-usdm", "BTCUSDT")
    start = int(full.ts_exch[0] + 100e9)
    end = int(full.ts_exch[0] + 200e9)
    win = load_tape(root, "binance-usdm", "BTCUSDT", start, end)
    assert win.ts_exch[win.start] >= start and win.ts_exch[win.start - 1] < start
    assert win.ts_exch[-1] < end
    assert win.kind[0] == 2  # warm-up begins at the snapshot's reset
    assert (win.bbo.ts_exch >= start).all() and (win.bbo.ts_exch < end).all()
    check = replay_check(win)
    assert check.crossed == 0 and check.bbo_checked > 0 and check.bbo_matched == check.bbo_checked


def test_empty_selection_is_a_clear_error(lake):
    root, _ = lake
    with pytest.raises(DataError, match="no book or trade rows"):
        load_tape(root, "binance-usdm", "BTCUSDT", 0, 1_000_000_000)
    with pytest.raises(DataError, match="no data for binance-usdm/DOGEUSDT"):
        load_tape(root, "binance-usdm", "DOGEUSDT")
    with pytest.raises(ConfigError, match="empty time range"):
        load_tape(root, "binance-usdm", "BTCUSDT", 10, 5)


def test_tape_cache_returns_equal_read_only_maps_and_follows_new_ingests(real_dir, tmp_path):
    root = tmp_path / "lake"
    path = real_dir / "btcusdt_20240808.gz"
    Lake(root).write(parse_binance([path], BTC), [path])
    start = None
    built = load_tape(root, "binance-usdm", "BTCUSDT", start, None, cache=True)
    again = load_tape(root, "binance-usdm", "BTCUSDT", start, None, cache=True)
    assert isinstance(again.ts_exch, np.memmap) and not again.ts_exch.flags.writeable
    for c in ("ts_exch", "ts_local", "kind", "side", "price", "price_ticks", "qty", "ref", "flags"):
        assert np.array_equal(getattr(built, c), getattr(again, c)), c
    assert np.array_equal(built.bbo.bid_qty, again.bbo.bid_qty) and again.instrument == built.instrument
    # A cached tape is whole: asking it without the bbo changes nothing.
    assert np.array_equal(
        load_tape(root, "binance-usdm", "BTCUSDT", cache=True, bbo=False).bbo.bid_qty, built.bbo.bid_qty
    )
    assert replay_check(again) == replay_check(built)
    entries = list((root / "_tapes").iterdir())
    assert len(entries) == 1
    # A new ingest of the instrument drops its cached tapes; the next load rebuilds from the lake.
    Lake(root).write(parse_binance([path], BTC.model_copy(update={"maker_fee": 0.0001})), [path])
    assert not any((root / "_tapes").iterdir())
    fresh = load_tape(root, "binance-usdm", "BTCUSDT", cache=True)
    assert fresh.instrument.maker_fee == 0.0001 and not isinstance(fresh.ts_exch, np.memmap)


def test_a_tape_survives_pickling(tmp_path):
    """Tapes travel to worker processes (sweeps, Dask) by pickle."""
    import pickle

    from grinder.data.lake import Lake
    from grinder.data.synth import synth_batch
    from grinder.data.tape import load_tape

    Lake(tmp_path).write(synth_batch(5_000, seed=3), [])
    tape = load_tape(tmp_path, "synthetic", "SYNTHUSDT")
    back = pickle.loads(pickle.dumps(tape))
    assert (back.price_ticks == tape.price_ticks).all() and back.funding.columns.keys() == tape.funding.columns.keys()
    assert len(back.bbo) == len(tape.bbo) and back.instrument == tape.instrument


def test_a_second_writer_of_a_cached_tape_keeps_the_entry_readers_have_open(tmp_path):
    """Sweep workers and Dask workers can build the same cache entry at once (seen in CI)."""
    from grinder.data import tape_cache
    from grinder.data.synth import synth_batch

    root = tmp_path / "lake"
    Lake(root).write(synth_batch(5_000, seed=3), [], key="s")
    tape = load_tape(root, "synthetic", "SYNTHUSDT")
    key = tape_cache.cache_key(root, "synthetic", "SYNTHUSDT", None, None)
    tape_cache.save(tape, root, key)
    reader = tape_cache.open_cached(root, key)
    tape_cache.save(tape, root, key)  # the racing writer: its copy is dropped, the open entry stays
    assert np.array_equal(reader.ts_exch, tape.ts_exch) and np.array_equal(reader.funding.ts_exch, tape.funding.ts_exch)
    assert len(list(tape_cache.cache_root(root).iterdir())) == 1  # no temporary folder left behind
    next(tape_cache.cache_root(root).glob("*/qty.npy")).unlink()  # damaged (or removed while opening)
    assert tape_cache.open_cached(root, key) is None
    assert np.array_equal(load_tape(root, "synthetic", "SYNTHUSDT", cache=True).qty, tape.qty)  # rebuilt


def test_a_cached_tape_that_fails_to_write_leaves_nothing_behind(tmp_path, monkeypatch):
    from grinder.data import tape_cache
    from grinder.data.synth import synth_batch

    root = tmp_path / "lake"
    Lake(root).write(synth_batch(2_000, seed=4), [], key="s")
    real_save, calls = np.save, []

    def full_disk(path, arr, *a, **kw):
        calls.append(path)
        if len(calls) == 3:  # the disk fills up on the third column
            raise OSError(28, "No space left on device")
        return real_save(path, arr, *a, **kw)

    monkeypatch.setattr(tape_cache.np, "save", full_disk)
    with pytest.raises(OSError, match="No space left"):
        load_tape(root, "synthetic", "SYNTHUSDT", cache=True)
    assert len(calls) == 3 and list(tape_cache.cache_root(root).iterdir()) == []  # no entry, no temp folder
    monkeypatch.setattr(tape_cache.np, "save", real_save)
    assert len(load_tape(root, "synthetic", "SYNTHUSDT", cache=True)) > 0  # the next load builds it
    assert len(list(tape_cache.cache_root(root).iterdir())) == 1


def test_the_instrument_is_read_once_per_version_of_its_file(real_lines, tmp_path, monkeypatch):
    import grinder.data.tape as tape_mod

    root = tmp_path / "lake"
    path = write_capture(tmp_path / "btcusdt_x.gz", real_lines)
    Lake(root).write(parse_binance([path], BTC), [path])
    reads = []
    real = tape_mod.pq.ParquetFile
    monkeypatch.setattr(tape_mod.pq, "ParquetFile", lambda p, *a, **k: reads.append(p) or real(p, *a, **k))
    first = tape_mod.read_instrument(root, "binance-usdm", "BTCUSDT")
    assert tape_mod.read_instrument(root, "binance-usdm", "BTCUSDT") is first and len(reads) == 1
    # A new ingest replaces the file: the next read sees the new instrument.
    Lake(root).write(parse_binance([path], BTC.model_copy(update={"maker_fee": 0.0001})), [path])
    again = tape_mod.read_instrument(root, "binance-usdm", "BTCUSDT")
    assert again.maker_fee == 0.0001 and first.maker_fee != 0.0001 and len(reads) == 2
    (root / "instruments").rename(tmp_path / "gone")
    with pytest.raises(DataError, match="no data for binance-usdm/BTCUSDT"):
        tape_mod.read_instrument(root, "binance-usdm", "BTCUSDT")


def test_a_window_after_midnight_reads_back_to_the_snapshot_the_day_before_once(tmp_path, monkeypatch):
    """The start's day holds no reset: the book comes from the previous day's snapshot, and no file is read twice."""
    import grinder.data.tape as tape_mod
    from grinder.data.synth import synth_batch
    from grinder.data.tape import BOOK_RESET

    midnight = 1_704_153_600_000_000_000  # 2024-01-02
    batch = synth_batch(60_000, seed=4, start_ns=midnight - 60_000_000_000)  # one snapshot, a minute before
    Lake(tmp_path).write(batch, sources=[], key="synth:midnight")
    book_days = sorted(p.name for p in tmp_path.glob("book/*/*/date=*"))
    assert book_days == ["date=2024-01-01", "date=2024-01-02"]
    full = load_tape(tmp_path, "synthetic", "SYNTHUSDT")
    assert (full.kind == BOOK_RESET).sum() == 1 and full.ts_exch[0] < midnight < full.ts_exch[-1]

    read: list[str] = []
    parts = tape_mod._read_parts

    def counted(files, cols):
        read.extend(str(f) for f in files if "/book/" in str(f))
        return parts(files, cols)

    monkeypatch.setattr(tape_mod, "_read_parts", counted)
    start = midnight + 30_000_000_000
    win = load_tape(tmp_path, "synthetic", "SYNTHUSDT", start)
    assert len(read) == 2 and len(set(read)) == 2  # each day's book file, once
    book = win.kind != EV_TRADE
    whole = full.kind != EV_TRADE
    np.testing.assert_array_equal(win.ts_exch[book], full.ts_exch[whole])  # from the snapshot on
    assert win.kind[0] == BOOK_RESET and win.ts_exch[win.start] >= start > win.ts_exch[win.start - 1]
    assert replay_check(win).crossed == 0


# --- Coverage gaps (decision 021): a capture's data is never joined to an older capture's book ---

SNAP_2024_NS = 1_721_347_022_750 * 1_000_000  # btcusdt_20240718's snapshot (T)


@pytest.fixture(scope="module")
def gap_lake(real_dir, tmp_path_factory):
    from tests.sim.test_backtest_real import two_capture_lake

    return two_capture_lake(tmp_path_factory.mktemp("gap") / "lake", real_dir)


def test_a_start_in_a_coverage_gap_reads_no_book_from_before_it(gap_lake):
    start = int(np.datetime64("2024-07-18T23:57", "ns").astype(np.int64))
    win = load_tape(gap_lake, "binance-usdm", "BTCUSDT", start)
    # Before: the warm-up reached back to the 2023 capture's snapshot, 15 months earlier.
    assert win.ts_exch[0] == SNAP_2024_NS and win.kind[0] == 2 and win.start == 0
    # Inside the 2024 capture the warm-up still starts from its snapshot.
    later = load_tape(gap_lake, "binance-usdm", "BTCUSDT", SNAP_2024_NS + 30 * 10**9)
    assert later.ts_exch[0] == SNAP_2024_NS and later.kind[0] == 2 and later.start > 0
    assert replay_check(later).unsynced == ()


def test_a_tape_across_a_coverage_gap_has_a_reset_before_the_later_capture(gap_lake, lake):
    from grinder.data.tape import GAP_RESET_REF

    tape = load_tape(gap_lake, "binance-usdm", "BTCUSDT")
    (g,) = np.flatnonzero(tape.ref == GAP_RESET_REF)
    assert tape.kind[g] == 2 and tape.side[g] == 0 and tape.flags[g] == BATCH_END
    assert tape.ts_exch[g - 1] < SNAP_2024_NS - 10**15 and tape.ts_exch[g] == tape.ts_exch[g + 1]
    assert tape.ts_local[g] == tape.ts_local[g:].min()  # first in local order too
    # The 2024 rows are replayed on an empty, unsynced book until the 2024 snapshot.
    check = replay_check(tape)
    assert check.crossed == 0 and check.bbo_matched == check.bbo_checked > 0
    # One capture: no reset added.
    one = load_tape(lake[0], "binance-usdm", "BTCUSDT")
    assert not (one.ref == GAP_RESET_REF).any()


def test_a_span_without_a_snapshot_before_the_start_gives_an_unsynced_book(tmp_path):
    """A start in a later span whose snapshot rows are missing: no rows of the earlier span, and no sync."""
    import pyarrow.compute as pc

    from grinder.data.lake import IngestBatch
    from grinder.data.synth import synth_batch

    t0 = 1_704_067_200_000_000_000
    a = synth_batch(20_000, seed=1, start_ns=t0)
    Lake(tmp_path).write(a, sources=[], key="a")
    end_a = int(pc.max(a.tables["book"]["ts_exch"]).as_py())
    b = synth_batch(20_000, seed=2, start_ns=end_a + 300 * 10**9)  # 5 minutes later, same day
    book = b.tables["book"]
    diffs = book.filter(pc.equal(book["kind"], 0))  # its reset and snapshot lost
    Lake(tmp_path).write(IngestBatch(b.fmt, b.instrument, {**b.tables, "book": diffs}, b.report), [], key="b")
    first_b = int(pc.min(diffs["ts_exch"]).as_py())
    start = first_b + 10 * 10**9
    win = load_tape(tmp_path, "synthetic", "SYNTHUSDT", start)
    assert win.ts_exch[0] == first_b  # from the span's start, not from the earlier span's snapshot
    (u,) = replay_check(win, start).unsynced
    assert u.from_ns == start and not u.resynced and u.to_ns == int(win.ts_exch[-1]) + 1


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 3 * DEFAULT_MAX_GAP_NS), min_size=1, max_size=40), st.integers(0, 2**40))
def test_resets_go_exactly_before_the_rows_that_begin_a_span(steps, t0):
    from grinder.data.tape import GAP_RESET_REF, _reset_at_gaps

    ts = t0 + np.cumsum(np.array(steps, np.int64))
    n = len(ts)
    rng = np.random.default_rng(len(steps))
    loc = ts + rng.integers(-5, 5, n)
    cols = (ts, loc, np.full(n, 3, np.int8), np.ones(n, np.int8), np.ones(n), np.ones(n, np.int64), np.ones(n),
            np.arange(n, dtype=np.int64), np.ones(n, np.uint8))  # fmt: skip
    out = _reset_at_gaps(cols)
    added = out[7] == GAP_RESET_REF
    for a, b in zip(out, cols, strict=True):  # the rows themselves unchanged, in order
        assert a.dtype == b.dtype and np.array_equal(a[~added], b)
    begins = np.flatnonzero(np.diff(ts) > DEFAULT_MAX_GAP_NS) + 1
    at = np.flatnonzero(added)
    assert np.array_equal(at - np.arange(len(at)), begins)  # one before each row that begins a span
    assert (out[2][added] == 2).all() and (out[3][added] == 0).all() and np.array_equal(out[0][added], ts[begins])
    for k, i in enumerate(begins):
        span_end = begins[k + 1] if k + 1 < len(begins) else n
        assert out[1][at[k]] == loc[i:span_end].min()


def test_parts_of_tables_read_without_seq_are_put_back_in_time_order():
    """bbo and funding are read without their seq column; interleaving parts used to fail the sort."""
    import pyarrow as pa

    from grinder.data.tape import _combine

    later, earlier = pa.table({"ts_exch": [5, 6], "bid_price": [1.0, 2.0]}), pa.table({"ts_exch": [1, 5]})
    t = _combine([later, earlier.append_column("bid_price", pa.array([3.0, 4.0]))])
    assert t.column("ts_exch").to_pylist() == [1, 5, 5, 6] and t.column("bid_price").to_pylist() == [3.0, 1.0, 4.0, 2.0]
