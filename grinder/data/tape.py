"""The tape: one time-ordered struct-of-arrays of market events, ready for numba.

``load_tape`` reads a selection (venue, symbol, time range) from the lake and merges book rows
and trades by exchange time (ties broken by arrival order, ``seq``) in one compiled pass. Best
bid/ask and mark-price/funding series ride along as their own time-ordered arrays. When a
start time is given, the book rows are loaded from the last snapshot at or before it, so the
book is complete at ``start``; ``Tape.start`` is the first event inside the window.

A book never reaches across a coverage gap (decision 021): the warm-up stops at the start of the
coverage span holding ``start`` (`grinder.data.coverage`), and wherever the tape's rows are more
than `DEFAULT_MAX_GAP_NS` apart a full reset row is put before the later ones, so another
capture's data is never joined to an older capture's book: the book is unsynced from there until
that capture's snapshot.
"""

from __future__ import annotations

import os
import stat
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from numba import njit

from grinder.data import tape_cache
from grinder.data.coverage import DEFAULT_MAX_GAP_NS, gap_rows, spans_of_times
from grinder.data.instruments import Instrument
from grinder.data.lake import NS_PER_DAY, lake_reader, partition_dir
from grinder.data.schema import BOOK_RESET, SIDE_BOTH
from grinder.errors import ConfigError, DataError

# Event kinds on the tape: the book row kinds of grinder.data.schema, plus trades.
EV_TRADE = 3
_I64_MIN = np.iinfo(np.int64).min
# flags
BATCH_END = 1  # the book is consistent after this event (last row of an exchange message)


@dataclass(frozen=True)
class Series:
    """A named group of equal-length, time-ordered columns (best bid/ask, funding)."""

    columns: dict[str, np.ndarray]

    def __getattr__(self, name: str) -> np.ndarray:
        # Only called for names not found normally; `columns` itself is missing while unpickling.
        columns = self.__dict__.get("columns")
        if columns is None or name not in columns:
            raise AttributeError(name)
        return columns[name]

    def __len__(self) -> int:
        return len(self.columns["ts_exch"])


@dataclass(frozen=True)
class Tape:
    """Market events (book rows and trades) as parallel arrays, ordered by exchange time.

    Columns: ts_exch, ts_local (int64 ns), kind (int8: 0 diff, 1 snapshot, 2 reset, 3 trade),
    side (int8: +1 bid/buy aggressor, -1 ask/sell aggressor, 0 both), price (float64, quote per
    base), price_ticks (int64), qty (float64, base units), ref (int64: update id or trade id),
    flags (uint8: BATCH_END).
    """

    instrument: Instrument
    ts_exch: np.ndarray
    ts_local: np.ndarray
    kind: np.ndarray
    side: np.ndarray
    price: np.ndarray
    price_ticks: np.ndarray
    qty: np.ndarray
    ref: np.ndarray
    flags: np.ndarray
    bbo: Series
    funding: Series
    start: int = 0
    # The selection's start time, ns (0: none given). A backtest's decision clock starts there by
    # default, as `grinder backtest --start` and a sweep's windows start it.
    window_start_ns: int = 0

    def __len__(self) -> int:
        return len(self.ts_exch)

    @property
    def nbytes(self) -> int:
        """Memory held by the event columns."""
        return sum(
            a.nbytes
            for a in (self.ts_exch, self.ts_local, self.kind, self.side, self.price)
            + (self.price_ticks, self.qty, self.ref, self.flags)
        )


@njit(cache=True, inline="always")
def _book_first(b_ts, b_seq, i, t_ts, t_seq, j):
    """Whether book row i comes before trade j: by exchange time, then arrival order."""
    return b_ts[i] < t_ts[j] or (b_ts[i] == t_ts[j] and b_seq[i] <= t_seq[j])


@njit(cache=True)
def _split(b_ts, b_seq, t_ts, t_seq, k):
    """How many book rows are among the first k merged rows (merge-path binary search)."""
    nb, nt = b_ts.shape[0], t_ts.shape[0]
    lo, hi = max(0, k - nt), min(k, nb)
    while lo < hi:
        i = (lo + hi) // 2
        # Taking i book rows is too few if book row i still precedes trade k - i - 1.
        if _book_first(b_ts, b_seq, i, t_ts, t_seq, k - i - 1):
            lo = i + 1
        else:
            hi = i
    return lo


# Rows per part of the merge: above this a second thread pays for its start.
MERGE_PART_ROWS = 200_000


@njit(cache=True, nogil=True)
def _merge_part(
    b_ts, b_loc, b_seq, b_uid, b_kind, b_side, b_px, b_qty,
    t_ts, t_loc, t_seq, t_id, t_side, t_px, t_qty,
    inv_tick, k0, k1,
    ts, loc, kind, side, px, ticks, qty, ref, flags,
):  # fmt: skip
    """Write merged rows [k0, k1) of the tape columns (book rows and trades by (ts_exch, seq))."""
    nb, nt = b_ts.shape[0], t_ts.shape[0]
    i = _split(b_ts, b_seq, t_ts, t_seq, k0)
    j = k0 - i
    for k in range(k0, k1):
        if j >= nt or (i < nb and _book_first(b_ts, b_seq, i, t_ts, t_seq, j)):
            ts[k] = b_ts[i]
            loc[k] = b_loc[i]
            kind[k] = b_kind[i]
            side[k] = b_side[i]
            px[k] = b_px[i]
            qty[k] = b_qty[i]
            ref[k] = b_uid[i]
            flags[k] = 1 if i == nb - 1 or b_uid[i + 1] != b_uid[i] else 0
            i += 1
        else:
            ts[k] = t_ts[j]
            loc[k] = t_loc[j]
            kind[k] = 3
            side[k] = t_side[j]
            px[k] = t_px[j]
            qty[k] = t_qty[j]
            ref[k] = t_id[j]
            flags[k] = 1
            j += 1
        ticks[k] = np.int64(np.rint(px[k] * inv_tick))


def _merge(*args) -> tuple[np.ndarray, ...]:
    """Merge book rows and trades by (ts_exch, seq) into tape columns, in `parts` chunks on threads.

    args: the book's columns (_BOOK_COLS), the trades' (_TRADE_COLS), the tick size and the number
    of parts. The kernel releases the GIL, so a thread pool runs the parts side by side; numba's own
    parallel loop would leave its OpenMP workers spinning for milliseconds after every merge,
    on the cores the replay is built on next.
    """
    *cols, tick, parts = args
    n = cols[0].shape[0] + cols[len(_BOOK_COLS)].shape[0]  # book rows + trades
    out = tuple(np.empty(n, d) for d in (np.int64, np.int64, np.int8, np.int8, np.float64, np.int64, np.float64,
                                         np.int64, np.uint8))  # fmt: skip
    bounds = [(n * p // parts, n * (p + 1) // parts) for p in range(parts)]

    def part(k: tuple[int, int]) -> None:
        _merge_part(*cols, 1.0 / tick, k[0], k[1], *out)

    if parts == 1:
        part(bounds[0])
    else:
        with ThreadPoolExecutor(parts - 1, thread_name_prefix="grinder-merge") as pool:
            rest = [pool.submit(part, k) for k in bounds[1:]]
            part(bounds[0])
            for f in rest:
                f.result()
    return out


# `ref` of a reset put at a coverage gap: no exchange message carries it.
GAP_RESET_REF = -1


def _reset_at_gaps(cols: tuple[np.ndarray, ...]) -> tuple[np.ndarray, ...]:
    """The merged tape columns with a full reset before each row that begins a new coverage span.

    Its local time is the earliest of its span's, so in local order too it comes before every row
    of that span. A tape of one span comes back as it was (the same arrays).
    """
    ts, loc, kind, side, px, ticks, qty, ref, flags = cols
    at = gap_rows(ts, DEFAULT_MAX_GAP_NS)
    if not at.size:
        return cols
    ends = np.append(at[1:], len(ts))
    first_local = np.array([loc[a:b].min() for a, b in zip(at, ends, strict=True)], np.int64)  # one per span
    row = (ts[at], first_local, BOOK_RESET, SIDE_BOTH, 0.0, 0, 0.0, GAP_RESET_REF, BATCH_END)
    return tuple(np.insert(c, at, v).astype(c.dtype, copy=False) for c, v in zip(cols, row, strict=True))


def _day_of(partition: Path) -> int:
    """Days since the epoch of a `date=YYYY-MM-DD` partition folder."""
    return int(np.datetime64(partition.name[5:], "D").astype(np.int64))


def _files(root: Path, table: str, venue: str, symbol: str, lo_ns: int | None, hi_ns: int | None) -> list[Path]:
    base = root / partition_dir(table, venue, symbol, "x").parent
    if not base.is_dir():
        return []
    out = []
    for d in sorted(base.glob("date=*")):
        day = _day_of(d)
        if lo_ns is not None and (day + 1) * NS_PER_DAY <= lo_ns:
            continue
        if hi_ns is not None and day * NS_PER_DAY >= hi_ns:
            continue
        out.extend(sorted(d.glob("*.parquet")))
    return out


def _read(files: list[Path], schema_cols: list[str]) -> pa.Table:
    return _combine(_read_parts(files, schema_cols))


def _read_parts(files: list[Path], schema_cols: list[str]) -> list[pa.Table]:
    # ParquetFile reads one known file without read_table's dataset discovery (decision 033).
    return [pq.ParquetFile(f).read(columns=schema_cols, use_threads=True) for f in files]


def _combine(tables: list[pa.Table]) -> pa.Table | None:
    """Part files' tables as one, in (ts_exch, seq) order: the order of rows with equal keys kept.

    Parts from different ingests of one partition may interleave. Their rows are put in that order
    whenever they are not in it already (one vectorised check), so the rows of any time slice come
    out as they do in the whole partition (grinder.data.chunks reads a partition a slice of time at a time).
    """
    if not tables:
        return None
    t = pa.concat_tables(tables) if len(tables) > 1 else tables[0]
    if t.num_rows > 1:
        a = t.column("ts_exch").to_numpy()
        later, tied = a[1:] > a[:-1], a[1:] == a[:-1]
        keys = [("ts_exch", "ascending")]
        if "seq" in t.column_names:  # bbo and funding are read without seq: ordered by time alone (stable)
            q = t.column("seq").to_numpy()
            tied &= q[1:] >= q[:-1]
            keys.append(("seq", "ascending"))
        if not (later | tied).all():
            t = t.take(pc.sort_indices(t, keys))
    return t


def _rows(*tables: pa.Table | None) -> int:
    return sum(t.num_rows for t in tables if t is not None)


def _np(t: pa.Table | None, col: str, dtype) -> np.ndarray:
    if t is None:
        return np.empty(0, dtype)
    c = t.column(col)
    a = c.chunk(0).to_numpy() if c.num_chunks == 1 else c.to_numpy()
    return a if a.dtype == dtype else a.astype(dtype)


# Instruments read so far, by file: (mtime ns, size, inode) when read, and the instrument. Opening
# the one-row Parquet file again is a noticeable part of loading a short window (decision 033).
_instruments: dict[str, tuple[tuple[int, int, int], Instrument]] = {}


def read_instrument(root: Path, venue: str, symbol: str) -> Instrument:
    """The instrument row stored in the lake for (venue, symbol)."""
    p = root / "instruments" / f"venue={venue}" / f"symbol={symbol}" / "instrument.parquet"
    try:
        st = p.stat()
    except OSError:
        st = None
    if st is None or not stat.S_ISREG(st.st_mode):
        raise DataError(f"no data for {venue}/{symbol} in the lake at {root}")
    where, version = os.path.abspath(p), (st.st_mtime_ns, st.st_size, st.st_ino)
    hit = _instruments.get(where)
    if hit is not None and hit[0] == version:
        return hit[1]  # an Instrument is frozen: sharing it is safe
    inst = Instrument(**pq.ParquetFile(p).read().to_pylist()[0])
    _instruments[where] = (version, inst)
    return inst


def _window(t: pa.Table | None, lo: int | None, hi: int | None) -> pa.Table | None:
    if t is None or (lo is None and hi is None):
        return t
    ts = _np(t, "ts_exch", np.int64)
    a = 0 if lo is None else int(np.searchsorted(ts, lo, "left"))
    b = len(ts) if hi is None else int(np.searchsorted(ts, hi, "left"))
    return t.slice(a, b - a)


def _last_full_reset(book: pa.Table, at_ns: int, from_ns: int | None = None) -> int | None:
    """Exchange time of the last reset of both sides in [from_ns, at_ns], or None.

    A full reset is one row with side 0, or a bid reset and an ask reset in the same message
    (hftbacktest clears each side separately before its snapshot).
    """
    ts = _np(book, "ts_exch", np.int64)
    r = np.flatnonzero(
        (_np(book, "kind", np.int8) == BOOK_RESET) & (ts <= at_ns) & (ts >= (_I64_MIN if from_ns is None else from_ns))
    )
    if not r.size:
        return None
    side, uid = _np(book, "side", np.int8)[r], _np(book, "update_id", np.int64)[r]
    both = np.intersect1d(uid[side > 0], uid[side < 0])
    full = np.flatnonzero((side == SIDE_BOTH) | np.isin(uid, both))
    if not full.size:
        return None
    return int(ts[r[np.flatnonzero(uid == uid[full[-1]])[0]]])


def _span_start(ts: np.ndarray, later_ns: int) -> int:
    """Start of the coverage span holding `later_ns`, among book times `ts` (before it) and `later_ns`.

    `later_ns` is the start itself, or the earliest book time before the start seen on the later
    days walked so far (already known to lie in the start's span): a gap of more than
    DEFAULT_MAX_GAP_NS between two of these times begins a new span.
    """
    return spans_of_times(np.append(ts, later_ns), DEFAULT_MAX_GAP_NS)[-1].start_ns


def _book_selection(root: Path, venue: str, symbol: str, start_ns: int | None, end_ns: int | None):
    """(book rows, time to read them from): the rows to cut a window from so the book is whole at `start_ns`.

    Walks date partitions back from the start's date until one holds a full reset at or before the
    start (`book_start`), so a long lake is not read from its beginning; the days walked are kept,
    so no file is read twice. With no gap and no reset back to the lake's beginning the time is
    None, and every row is returned.
    """
    cols = list(_BOOK_COLS)
    files = _files(root, "book", venue, symbol, None, end_ns)
    if start_ns is None or not files:
        return _read(files, cols), start_ns
    walked, lo = _walk_back(files, start_ns)
    first_day = int(np.datetime64(start_ns, "ns").astype("datetime64[D]").astype(np.int64))
    later = _read_parts([f for f in files if _day_of(f.parent) > first_day], cols)
    return _combine([t for parts in reversed(walked) for t in parts] + later), lo


def book_start(root: Path, venue: str, symbol: str, start_ns: int | None, end_ns: int | None) -> int | None:
    """The time book rows are read from for a selection starting at `start_ns` (None: from the
    lake's first), as `load_tape` reads them, reading only the days it walks back over."""
    files = _files(root, "book", venue, symbol, None, end_ns)
    if start_ns is None or not files:
        return start_ns
    return _walk_back(files, start_ns)[1]


def _walk_back(files: list[Path], start_ns: int) -> tuple[list[list[pa.Table]], int | None]:
    """(the days walked, newest first, as their parts' tables; the time to read book rows from).

    The walk never goes past the start of the coverage span holding the start (decision 021): a
    reset before a gap belongs to another capture's book. Without a full reset in that span before
    the start the time is the span's start (the start itself when it lies in a gap): the book is
    unsynced until a snapshot comes. None: no gap and no reset back to the lake's beginning.
    """
    cols = list(_BOOK_COLS)
    first_day = int(np.datetime64(start_ns, "ns").astype("datetime64[D]").astype(np.int64))
    walked: list[list[pa.Table]] = []  # each day's parts, newest day first
    lo = None
    earliest = start_ns  # the earliest book time at or before the start on the days walked so far
    for d in sorted({f.parent for f in files if _day_of(f.parent) <= first_day}, reverse=True):
        parts = _read_parts([f for f in files if f.parent == d], cols)
        walked.append(parts)
        day = _combine(parts)
        ts = _np(day, "ts_exch", np.int64)
        before = ts[ts <= start_ns]
        span = _span_start(before, earliest)
        lo = _last_full_reset(day, start_ns, span)
        if lo is None and before.size and span > int(before.min()):
            lo = span  # the span began on this day, after a gap, and holds no reset before the start
        if lo is not None:
            break
        earliest = int(before.min()) if before.size else earliest
    return walked, lo


@lake_reader  # names checked; a shared lock on the lake while its files are listed and read
def load_tape(
    root: str | Path,
    venue: str,
    symbol: str,
    start_ns: int | None = None,
    end_ns: int | None = None,
    cache: bool = False,
    release_buffers: bool = True,
    bbo: bool = True,
) -> Tape:
    """Load [start_ns, end_ns) of one instrument from the lake into a Tape.

    With `cache`, the built tape is kept under ``<root>/_tapes`` and later loads of the same
    selection return read-only memory maps of it (until the instrument's data changes).
    `release_buffers=False` leaves Arrow's freed Parquet buffers with its allocator for the next
    load instead of handing them back: a process loading window after window (a sweep) then reads
    into pages it already has. `bbo=False` skips the best bid/offer table (`tape.bbo` is then
    empty; backtests do not read it, book checks and the prefilter do); a cached tape is always
    whole, so it is ignored with `cache`.
    """
    root = Path(root)
    if start_ns is not None and end_ns is not None and end_ns <= start_ns:
        raise ConfigError(f"empty time range: end {end_ns} <= start {start_ns}")
    if cache:
        key = tape_cache.cache_key(root, venue, symbol, start_ns, end_ns)
        hit = tape_cache.open_cached(root, key)
        if hit is not None:
            return hit
        tape = load_tape(root, venue, symbol, start_ns, end_ns, release_buffers=release_buffers)
        tape_cache.save(tape, root, key)
        return tape
    inst = read_instrument(root, venue, symbol)
    # Book rows: from the last full reset (snapshot start) at or before start, so the book is whole.
    book, book_lo = _book_selection(root, venue, symbol, start_ns, end_ns)
    book = _window(book, book_lo, end_ns)
    trades = _window(
        _read(_files(root, "trades", venue, symbol, start_ns, end_ns), list(_TRADE_COLS)), start_ns, end_ns
    )
    bbo_files = _files(root, "bbo", venue, symbol, start_ns, end_ns) if bbo else []
    quotes = _window(_read(bbo_files, list(_BBO_COLS)), start_ns, end_ns)
    fund = _window(_read(_files(root, "funding", venue, symbol, start_ns, end_ns), list(_FUND_COLS)), start_ns, end_ns)
    if all(t is None or t.num_rows == 0 for t in (book, trades)):
        raise DataError(f"no book or trade rows for {venue}/{symbol} in the selected time range")
    cols = _merge(
        *(_np(book, c, d) for c, d in _BOOK_COLS.items()),
        *(_np(trades, c, d) for c, d in _TRADE_COLS.items()),
        inst.tick_size,
        max(1, min(os.cpu_count() or 1, _rows(book, trades) // MERGE_PART_ROWS)),
    )
    cols = _reset_at_gaps(cols)
    start = 0 if start_ns is None else int(np.searchsorted(cols[0], start_ns, "left"))
    bbo_s = Series({c: _np(quotes, c, d) for c, d in _BBO_COLS.items()})
    fund_s = Series({c: _np(fund, c, d) for c, d in _FUND_COLS.items()})
    del book, trades, quotes, fund
    if release_buffers:
        # Arrow's allocator keeps freed Parquet buffers for reuse (decision 016): hand them back.
        pa.default_memory_pool().release_unused()
    return Tape(
        inst,
        *cols,
        bbo=bbo_s,
        funding=fund_s,
        start=start,
        window_start_ns=int(start_ns or 0),
    )


_BOOK_COLS = {
    "ts_exch": np.int64,
    "ts_local": np.int64,
    "seq": np.int64,
    "update_id": np.int64,
    "kind": np.int8,
    "side": np.int8,
    "price": np.float64,
    "qty": np.float64,
}
_TRADE_COLS = {
    "ts_exch": np.int64,
    "ts_local": np.int64,
    "seq": np.int64,
    "trade_id": np.int64,
    "side": np.int8,
    "price": np.float64,
    "qty": np.float64,
}
_BBO_COLS = {
    "ts_exch": np.int64,
    "ts_local": np.int64,
    "update_id": np.int64,
    "bid_price": np.float64,
    "bid_qty": np.float64,
    "ask_price": np.float64,
    "ask_qty": np.float64,
}
_FUND_COLS = {
    "ts_exch": np.int64,
    "ts_local": np.int64,
    "mark_price": np.float64,
    "index_price": np.float64,
    "funding_rate": np.float64,
    "next_funding_ts": np.int64,
}
