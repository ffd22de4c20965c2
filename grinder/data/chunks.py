"""A lake selection read a slice of time at a time: the rows `load_tape` would return, in chunks.

`LakeChunks` serves the selection (venue, symbol, [start, end)) as consecutive chunks of tape rows in
exchange order (for grinder.sim.chunked), an hour of exchange time each by default, reading only the
Parquet row groups whose time range reaches the slice: memory follows the densest hour, not the
selection. The rows, kinds, ticks and times are `load_tape`'s over the whole selection
(tests/data/test_chunks.py). What crosses a slice is carried: where the book rows start (the last
full reset before the start, found by walking back as load_tape does: `tape.book_start`), and the
coverage spans, whose first rows get a reset row whose local time is the earliest of the span's
(`tape._reset_at_gaps`): a first pass over the slices' time columns finds those times.
"""

from __future__ import annotations

import dataclasses
import numbers
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from grinder.data.coverage import DEFAULT_MAX_GAP_NS
from grinder.data.instruments import Instrument
from grinder.data.lake import NS_PER_DAY
from grinder.data.schema import BOOK_RESET, SIDE_BOTH
from grinder.data.tape import (
    _BOOK_COLS,
    _FUND_COLS,
    _TRADE_COLS,
    BATCH_END,
    EV_TRADE,
    GAP_RESET_REF,
    Series,
    _combine,
    _day_of,
    _files,
    _merge,
    _np,
    _read,
    _window,
    book_start,
    read_instrument,
)
from grinder.errors import ConfigError, DataError

_I64_MIN, _I64_MAX = np.iinfo(np.int64).min, np.iinfo(np.int64).max


@dataclass(frozen=True)
class Chunk:
    """Consecutive rows of a tape in exchange order (columns as in `Tape`), and the time they end at.

    Every row of the tape at or before `end_ns` (ns, exchange time) is in this chunk or an earlier
    one, and every row after it in a later one; `end_ns` is None for the last chunk. With
    `times_only` reads, kind ... flags are None.
    """

    ts_exch: np.ndarray
    ts_local: np.ndarray
    kind: np.ndarray | None
    side: np.ndarray | None
    price_ticks: np.ndarray | None
    qty: np.ndarray | None
    flags: np.ndarray | None
    end_ns: int | None


@dataclass(frozen=True)
class TimeFacts:
    """What one pass over a chunk source's time columns tells: rows (the resets at gaps included), the
    least ts_local - ts_exch (ns), the first and last exchange times, the least and greatest local
    times (ns, uncorrected; all five None without a row), and each chunk's end_ns (None for the last)."""

    rows: int
    min_lag: int | None
    first_exch: int | None
    last_exch: int | None
    min_local: int | None
    max_local: int | None
    ends: tuple


class _TimesFold:
    """TimeFacts gathered rows after rows (exchange times in order, their local times)."""

    def __init__(self) -> None:
        self.rows, self.min_lag, self.first, self.last = 0, _I64_MAX, None, None
        self.min_local, self.max_local = _I64_MAX, _I64_MIN

    def add(self, ts: np.ndarray, loc: np.ndarray) -> None:
        if len(ts) == 0:
            return
        self.rows += len(ts)
        self.min_lag = min(self.min_lag, int((loc - ts).min()))
        self.first = int(ts[0]) if self.first is None else self.first
        self.last = int(ts[-1])
        self.min_local, self.max_local = min(self.min_local, int(loc.min())), max(self.max_local, int(loc.max()))

    def facts(self, ends: list) -> TimeFacts:
        if self.first is None:
            return TimeFacts(0, None, None, None, None, None, tuple(ends))
        return TimeFacts(self.rows, self.min_lag, self.first, self.last, self.min_local, self.max_local, tuple(ends))


def time_facts_of(chunks: Iterator[Chunk]) -> TimeFacts:
    """TimeFacts of `chunks` (times_only ones will do)."""
    fold, ends = _TimesFold(), []
    for c in chunks:
        ends.append(c.end_ns)
        fold.add(c.ts_exch, c.ts_local)
    return fold.facts(ends)


def _positive_whole(name: str, value, unit: str) -> int:
    """`value` as an int, or a ConfigError naming `name` unless it is a positive whole number."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value <= 0:
        raise ConfigError(f"{name} must be a positive whole number{unit}, got {value!r}")
    return int(value)


def chunk_length(chunk_ns) -> int:
    """`chunk_ns` as an int: a positive whole number of nanoseconds (a ConfigError otherwise)."""
    return _positive_whole("chunk_ns", chunk_ns, " of nanoseconds")


@dataclass(frozen=True)
class LakeChunks:
    """[start_ns, end_ns) of one instrument in the lake at `root`, `chunk_ns` of exchange time per chunk
    (slices of each date partition; only the Parquet row groups a slice reaches are read)."""

    root: Path
    venue: str
    symbol: str
    start_ns: int | None = None
    end_ns: int | None = None
    chunk_ns: int = 3_600 * 10**9  # one hour of exchange time
    # At most this many rows a chunk (a slice with more is cut where its time changes): a chunk's
    # replay, the most a run holds, is then the same in a quiet hour and in the busiest one.
    chunk_rows: int = 1 << 19

    def __post_init__(self) -> None:
        object.__setattr__(self, "chunk_ns", chunk_length(self.chunk_ns))
        object.__setattr__(self, "chunk_rows", _positive_whole("chunk_rows", self.chunk_rows, ""))
        if self.start_ns is not None and self.end_ns is not None and self.end_ns <= self.start_ns:
            raise ConfigError(f"empty time range: end {self.end_ns} <= start {self.start_ns}")
        object.__setattr__(self, "root", Path(self.root))

    @cached_property
    def instrument(self) -> Instrument:
        return read_instrument(self.root, self.venue, self.symbol)

    @property
    def window_start_ns(self) -> int:
        return int(self.start_ns or 0)

    @cached_property
    def _book_from(self) -> int | None:
        return book_start(self.root, self.venue, self.symbol, self.start_ns, self.end_ns)

    @cached_property
    def funding_series(self) -> Series:
        """The selection's mark price and funding series, as `Tape.funding` (read whole: a run reads
        only its settlements, `funding`)."""
        files = _files(self.root, "funding", self.venue, self.symbol, self.start_ns, self.end_ns)
        fund = _window(_read(files, list(_FUND_COLS)), self.start_ns, self.end_ns)
        return Series({c: _np(fund, c, d) for c, d in _FUND_COLS.items()})

    def _funding_days(self, cols: list[str]) -> Iterator[pa.Table]:
        """The selection's funding rows a date partition at a time, in time order (days hold disjoint times)."""
        files = _files(self.root, "funding", self.venue, self.symbol, self.start_ns, self.end_ns)
        for day in sorted({f.parent for f in files}):
            t = _window(_read([f for f in files if f.parent == day], cols), self.start_ns, self.end_ns)
            if t is not None and t.num_rows:
                yield t

    def funding_parts(self) -> Iterator[dict[str, np.ndarray]]:
        """The columns of `funding_series`, a day at a time (none: one part of empty columns), for
        `provenance.TapeFingerprint.hexdigest`."""
        empty = True
        for t in self._funding_days(list(_FUND_COLS)):
            empty = False
            yield {c: _np(t, c, d) for c, d in _FUND_COLS.items()}
        if empty:
            yield {c: np.empty(0, d) for c, d in _FUND_COLS.items()}

    def funding(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The settlements in the selection's funding series: `backtest.settlements_of(self.funding_series)`,
        found a day at a time (a month of mark prices is millions of rows; a run needs a few a day)."""
        first = last = None
        times: set[int] = set()
        for t in self._funding_days(["ts_exch", "next_funding_ts"]):
            ts = _np(t, "ts_exch", np.int64)
            first = int(ts[0]) if first is None else first
            last = int(ts[-1])
            times.update(np.unique(_np(t, "next_funding_ts", np.int64)).tolist())
        at = np.array(sorted(x for x in times if first is not None and first < x <= last), np.int64)
        rate, mark = np.empty(len(at)), np.empty(len(at))
        if len(at):
            # Per day, every settlement the day has a row before: a later day's answer replaces it.
            for t in self._funding_days(["ts_exch", "mark_price", "funding_rate"]):
                ts = _np(t, "ts_exch", np.int64)
                r = np.searchsorted(ts, at, "left") - 1  # the rate published before the settlement
                m = np.searchsorted(ts, at, "right") - 1  # the mark price at or before it
                rate[r >= 0] = _np(t, "funding_rate", np.float64)[r[r >= 0]]
                mark[m >= 0] = _np(t, "mark_price", np.float64)[m[m >= 0]]
        return at, rate, mark

    def _slices(self, parts: _Parts) -> Iterator[tuple[int, int, list[Path], list[Path]]]:
        """(start, end (ns, exclusive), book files, trade files) of each chunk_ns slice of each date
        partition that its files' row groups reach (slices without data are not read)."""
        book = _files(self.root, "book", self.venue, self.symbol, self._book_from, self.end_ns)
        trades = _files(self.root, "trades", self.venue, self.symbol, self.start_ns, self.end_ns)
        for day in sorted({_day_of(f.parent) for f in book + trades}):
            lo, hi = day * NS_PER_DAY, (day + 1) * NS_PER_DAY
            day_book = [f for f in book if _day_of(f.parent) == day]
            day_trades = [f for f in trades if _day_of(f.parent) == day]
            parts.keep(day_book + day_trades)  # a day's parts are read by that day's slices only
            ranges = [r for f in day_book + day_trades for r in parts.ranges(f)]
            if not ranges:
                continue
            first = max(lo, min(r[0] for r in ranges))
            last = min(hi - 1, max(r[1] for r in ranges))
            a = lo + (first - lo) // self.chunk_ns * self.chunk_ns
            while a <= last:
                b = min(a + self.chunk_ns, hi)
                if any(r[1] >= a and r[0] < b for r in ranges):
                    yield a, b, day_book, day_trades
                a = b

    def _slice(self, parts: _Parts, a: int, b: int, book: list[Path], trades: list[Path], cols_book: list[str],
               cols_trade: list[str]):  # fmt: skip
        """The book rows and trades of [a, b) within the selection, as load_tape orders them."""
        lo_b = a if self._book_from is None else max(a, self._book_from)
        lo_t = a if self.start_ns is None else max(a, self.start_ns)
        hi = b if self.end_ns is None else min(b, self.end_ns)
        return parts.rows(book, cols_book, lo_b, hi), parts.rows(trades, cols_trade, lo_t, hi)

    def _slice_times(self) -> Iterator[tuple[int, int, np.ndarray, np.ndarray]]:
        """(start, end, ts_exch, ts_local) of each slice's rows in time order, reading only those two columns."""
        cols = ["ts_exch", "ts_local"]
        parts = _Parts()
        for a, z, book, trades in self._slices(parts):
            b, t = self._slice(parts, a, z, book, trades, cols, cols)
            ts = np.concatenate((_np(b, "ts_exch", np.int64), _np(t, "ts_exch", np.int64)))
            if len(ts):
                loc = np.concatenate((_np(b, "ts_local", np.int64), _np(t, "ts_local", np.int64)))
                order = np.argsort(ts, kind="stable")
                yield a, z, ts[order], loc[order]

    @cached_property
    def _span_locals(self) -> dict[int, int]:
        """Per coverage span after the first, keyed by its first row's exchange time: its earliest
        local time. A DataError when the selection holds no row, as load_tape says."""
        return self._times_pass[0]

    def time_facts(self) -> TimeFacts:
        """`time_facts_of(self.chunks(times_only=True))`, found in the pass that finds the coverage spans
        (one read of the time columns fewer)."""
        return self._times_pass[1]

    @cached_property
    def _times_pass(self) -> tuple[dict[int, int], TimeFacts]:
        out: dict[int, int] = {}
        prev, span = None, None
        fold, ends = _TimesFold(), []
        for _, z, ts, loc in self._slice_times():
            full = np.concatenate(([prev if prev is not None else ts[0]], ts))
            starts = np.flatnonzero(np.diff(full) > DEFAULT_MAX_GAP_NS)  # rows of ts beginning a span
            bounds = np.concatenate((starts, [len(ts)]))
            if span is not None and bounds[0]:  # the span open from earlier slices goes on to the first start here
                out[span] = min(out[span], int(loc[: bounds[0]].min()))
            for s0, s1 in zip(starts, bounds[1:], strict=True):
                span = int(ts[s0])
                out[span] = int(loc[s0:s1].min())
            # What _time_chunks hands out: these rows, a reset before each span start (_gap_resets), cut alike.
            ends += [end for _, _, end in _pieces(np.insert(ts, starts, ts[starts]), self.chunk_rows, z - 1)]
            fold.add(ts, loc)
            prev = int(ts[-1])
        if prev is None:
            raise DataError(f"no book or trade rows for {self.venue}/{self.symbol} in the selected time range")
        # The resets at gaps: one per span after the first, at its first time, with its earliest local time
        # (within the rows' local range, so only the row count and the least lag change).
        fold.rows += len(out)
        for start, earliest in out.items():
            fold.min_lag = min(fold.min_lag, earliest - start)
        ends[-1] = None
        return out, fold.facts(ends)

    def chunks(self, times_only: bool = False) -> Iterator[Chunk]:
        """The selection's rows, chunk_ns of exchange time at a time, none empty (`times_only`: the same
        rows' ts_exch and ts_local, the resets at gaps included, in time order but not merged by
        arrival within a time; kind ... flags None)."""
        return self._times() if times_only else self._chunks()

    def _times(self) -> Iterator[Chunk]:
        return self._last_without_end(self._time_chunks())

    def _time_chunks(self) -> Iterator[Chunk]:
        spans = self._span_locals
        prev = None
        for _, z, ts, loc in self._slice_times():
            at, first_local = _gap_resets(prev, ts, spans)
            if at.size:  # the resets _chunks puts at gaps: the same rows, so the same count
                ts, loc = np.insert(ts, at, ts[at]), np.insert(loc, at, first_local)
            prev = int(ts[-1])
            for lo, hi, end in _pieces(ts, self.chunk_rows, z - 1):
                yield Chunk(ts[lo:hi], loc[lo:hi], None, None, None, None, None, end)

    def _chunks(self) -> Iterator[Chunk]:
        return self._last_without_end(self._row_chunks())

    def _row_chunks(self) -> Iterator[Chunk]:
        # A book message's rows may straddle slices (times out of order within it): its last row before
        # the cut ends the message only if the next slice's first book row is another message's, as the
        # whole tape's merge says. So slices are held until the next one with book rows is merged.
        pending: list[tuple[int, tuple]] = []
        last = None  # (the held slice's columns, its last book row, that row's message) once one has book rows
        for z, cols, first_uid, last_book in self._merged_slices():
            if first_uid is not None:
                if last is not None and last[2] == first_uid:
                    last[0][8][last[1]] = 0  # flags: not the message's end
                for hz, hcols in pending:
                    yield from self._cut(hz, hcols)
                pending = []
                last = (cols, *last_book)
            pending.append((z, cols))
        for hz, hcols in pending:
            yield from self._cut(hz, hcols)

    def _cut(self, z: int, cols: tuple) -> Iterator[Chunk]:
        ts, loc, kind, side, _, ticks, qty, _, flags = cols
        for lo, hi, end in _pieces(ts, self.chunk_rows, z - 1):
            yield Chunk(*(c[lo:hi] for c in (ts, loc, kind, side, ticks, qty, flags)), end)

    def _merged_slices(self) -> Iterator[tuple[int, tuple, int | None, tuple[int, int] | None]]:
        """(slice end, its merged tape columns with the resets at gaps, its first book row's message id
        or None, (its last book row, that row's message id) or None), slice by slice."""
        inst = self.instrument
        spans = self._span_locals
        prev = None
        parts = _Parts()
        for a, z, book, trades in self._slices(parts):
            b, t = self._slice(parts, a, z, book, trades, list(_BOOK_COLS), list(_TRADE_COLS))
            if (b is None or not b.num_rows) and (t is None or not t.num_rows):
                continue
            book_cols = (_np(b, c, d) for c, d in _BOOK_COLS.items())
            cols = _merge(*book_cols, *(_np(t, c, d) for c, d in _TRADE_COLS.items()), inst.tick_size, 1)
            is_book = np.flatnonzero(cols[2] != EV_TRADE)
            first_uid = int(cols[7][is_book[0]]) if is_book.size else None
            last_book = int(is_book[-1]) if is_book.size else -1
            ts = cols[0]
            at, first_local = _gap_resets(prev, ts, spans)
            if at.size:
                row = (ts[at], first_local, BOOK_RESET, SIDE_BOTH, 0.0, 0, 0.0, GAP_RESET_REF, BATCH_END)
                cols = tuple(np.insert(c, at, v).astype(c.dtype, copy=False)
                             for c, v in zip(cols, row, strict=True))  # fmt: skip
            prev = int(cols[0][-1])
            if last_book < 0:
                yield z, cols, None, None
            else:
                last_book += int(np.searchsorted(at, last_book, "right"))  # its row once the resets are in
                yield z, cols, first_uid, (last_book, int(cols[7][last_book]))

    def _last_without_end(self, chunks: Iterator[Chunk]) -> Iterator[Chunk]:
        """The chunks, the last one's end_ns None (each is handed out once the next is found); a
        DataError when there is none, as load_tape says."""
        held = None
        for c in chunks:
            if held is not None:
                yield held
            held = c
        if held is None:
            raise DataError(f"no book or trade rows for {self.venue}/{self.symbol} in the selected time range")
        yield dataclasses.replace(held, end_ns=None)


def _pieces(ts: np.ndarray, most: int, end: int) -> list[tuple[int, int, int]]:
    """(first row, end row, end_ns) of the pieces of a slice's rows `ts` (sorted; the slice ends at
    `end`) of at most `most` rows each, cut only where the time changes (the rows of one time, should
    they be more, stay together): the same cuts for the same times, so both passes chunk alike."""
    out, lo, n = [], 0, len(ts)
    while n - lo > most:
        k = int(np.searchsorted(ts, ts[lo + most], "left"))  # the first row at the time the cap falls on
        if k <= lo:
            k = int(np.searchsorted(ts, ts[lo], "right"))
        if k >= n:
            break
        out.append((lo, k, int(ts[k - 1])))
        lo = k
    out.append((lo, n, end))
    return out


def _gap_resets(prev: int | None, ts: np.ndarray, spans: dict[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """The rows of `ts` (sorted) that begin a coverage span, `prev` being the exchange time of the
    row before them, and the local times of the resets put before them (their spans' earliest)."""
    at = np.flatnonzero(np.diff(np.concatenate(([ts[0] if prev is None else prev], ts))) > DEFAULT_MAX_GAP_NS)
    return at, np.array([spans[int(ts[i])] for i in at], np.int64)


class _Parts:
    """One pass's part files: each opened once, with its row groups' ts_exch ranges from their
    statistics; the row groups last decoded per file are kept for the next slice, which most often
    reads the same ones (a row group holds 1 Mi rows: hours of data), until a slice ends after their
    last time or the pass moves on to another day's files (`keep`): memory follows the row groups
    that reach the slice being read."""

    def __init__(self) -> None:
        self._open: dict[Path, tuple[pq.ParquetFile, list[tuple[int, int]]]] = {}
        self._last: dict[Path, tuple[tuple, pa.Table, np.ndarray]] = {}

    def keep(self, files: list[Path]) -> None:
        """Forget every part file but `files` (their decoded row groups are what a pass holds)."""
        wanted = set(files)
        for held in (self._open, self._last):
            for f in [f for f in held if f not in wanted]:
                del held[f]

    def ranges(self, f: Path) -> list[tuple[int, int]]:
        """(lowest, highest) ts_exch of each row group of `f` (the whole int64 range when not recorded)."""
        return self._file(f)[1]

    def _file(self, f: Path):
        hit = self._open.get(f)
        if hit is None:
            pf = pq.ParquetFile(f)
            meta = pf.metadata
            j = meta.schema.names.index("ts_exch")
            ranges = []
            for i in range(meta.num_row_groups):
                stats = meta.row_group(i).column(j).statistics
                ok = stats is not None and stats.has_min_max
                ranges.append((int(stats.min), int(stats.max)) if ok else (_I64_MIN, _I64_MAX))
            hit = self._open[f] = (pf, ranges)
        return hit

    def rows(self, files: list[Path], cols: list[str], lo: int, hi: int) -> pa.Table | None:
        """Rows of `files` with lo <= ts_exch < hi, in (ts_exch, seq) order (`tape._combine`)."""
        if hi <= lo:
            return None
        tables = []
        for f in files:
            pf, ranges = self._file(f)
            groups = tuple(i for i, (g_lo, g_hi) in enumerate(ranges) if g_hi >= lo and g_lo < hi)
            if not groups:
                continue
            key = (groups, tuple(cols))
            last = self._last.get(f)
            if last is None or last[0] != key:
                t = pf.read_row_groups(list(groups), columns=cols, use_threads=True)
                last = self._last[f] = (key, t, _np(t, "ts_exch", np.int64))
            _, t, ts = last
            keep = np.flatnonzero((ts >= lo) & (ts < hi))  # a part keeps its own order (_combine sorts)
            if keep.size:
                tables.append(t.take(keep))
            if max(ranges[i][1] for i in groups) < hi:
                # No later slice reaches these groups (slices come in time order): a day holding several
                # ingests' parts, one after the other in time, then holds only the one being read.
                del self._last[f]
        return _combine(tables)
