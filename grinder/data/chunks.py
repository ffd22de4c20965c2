"""A lake selection read a day at a time: the rows `load_tape` would return, in chunks (grinder.sim.chunked).

`LakeChunks` serves the selection (venue, symbol, [start, end)) as consecutive chunks of tape rows in
exchange order, one date partition each, without ever holding more than a day: the same rows, kinds,
ticks and times as `load_tape` over the whole selection (tests/data/test_chunks.py). What crosses a
day is carried: where the book rows start (the last full reset before the start, found by walking
back as load_tape does: `tape.book_start`), and the coverage spans, whose first rows get a reset row
whose local time is the earliest of the span's (`tape._reset_at_gaps`): a first pass over the days'
time columns finds those times, the second reads the rows.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from grinder.data.coverage import DEFAULT_MAX_GAP_NS
from grinder.data.instruments import Instrument
from grinder.data.lake import NS_PER_DAY
from grinder.data.schema import BOOK_RESET, SIDE_BOTH
from grinder.data.tape import (
    _BOOK_COLS,
    _FUND_COLS,
    _TRADE_COLS,
    BATCH_END,
    GAP_RESET_REF,
    Series,
    _combine,
    _day_of,
    _files,
    _merge,
    _np,
    _read,
    _read_parts,
    _window,
    book_start,
    read_instrument,
)
from grinder.errors import ConfigError, DataError


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
class LakeChunks:
    """[start_ns, end_ns) of one instrument in the lake at `root`, a date partition per chunk."""

    root: Path
    venue: str
    symbol: str
    start_ns: int | None = None
    end_ns: int | None = None

    def __post_init__(self) -> None:
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
        """The selection's mark price and funding series, as `Tape.funding`."""
        files = _files(self.root, "funding", self.venue, self.symbol, self.start_ns, self.end_ns)
        fund = _window(_read(files, list(_FUND_COLS)), self.start_ns, self.end_ns)
        return Series({c: _np(fund, c, d) for c, d in _FUND_COLS.items()})

    def funding(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The settlements in the selection's funding series (backtest.settlements_of)."""
        from grinder.sim.backtest import settlements_of

        return settlements_of(self.funding_series)

    def _days(self) -> list[int]:
        book = _files(self.root, "book", self.venue, self.symbol, self._book_from, self.end_ns)
        trades = _files(self.root, "trades", self.venue, self.symbol, self.start_ns, self.end_ns)
        return sorted({_day_of(f.parent) for f in book + trades})

    def _day(self, day: int, cols_book: list[str], cols_trade: list[str]):
        lo, hi = day * NS_PER_DAY, (day + 1) * NS_PER_DAY
        book = [f for f in _files(self.root, "book", self.venue, self.symbol, lo, hi) if _day_of(f.parent) == day]
        trades = [f for f in _files(self.root, "trades", self.venue, self.symbol, lo, hi) if _day_of(f.parent) == day]
        b = _window(_combine(_read_parts(book, cols_book)), self._book_from, self.end_ns)
        t = _window(_combine(_read_parts(trades, cols_trade)), self.start_ns, self.end_ns)
        return b, t

    @cached_property
    def _span_locals(self) -> dict[int, int]:
        """Per coverage span after the first, keyed by its first row's exchange time: its earliest
        local time. A DataError when the selection holds no row, as load_tape says."""
        out: dict[int, int] = {}
        prev, span = None, None
        for day in self._days():
            b, t = self._day(day, ["ts_exch", "ts_local", "seq"], ["ts_exch", "ts_local", "seq"])
            ts = np.concatenate((_np(b, "ts_exch", np.int64), _np(t, "ts_exch", np.int64)))
            loc = np.concatenate((_np(b, "ts_local", np.int64), _np(t, "ts_local", np.int64)))
            if not len(ts):
                continue
            order = np.argsort(ts, kind="stable")
            ts, loc = ts[order], loc[order]
            full = np.concatenate(([prev if prev is not None else ts[0]], ts))
            starts = np.flatnonzero(np.diff(full) > DEFAULT_MAX_GAP_NS)  # rows of ts beginning a span
            bounds = np.concatenate((starts, [len(ts)]))
            if span is not None:  # the span open from earlier days goes on to this day's first start
                out[span] = min(out[span], int(loc[: bounds[0]].min())) if bounds[0] else out[span]
            for a, z in zip(starts, bounds[1:], strict=True):
                span = int(ts[a])
                out[span] = int(loc[a:z].min())
            prev = int(ts[-1])
        if prev is None:
            raise DataError(f"no book or trade rows for {self.venue}/{self.symbol} in the selected time range")
        return out

    def chunks(self, times_only: bool = False) -> Iterator[Chunk]:
        """The selection's rows, a date partition at a time (`times_only` reads the same rows; kind ... qty None)."""
        return self._chunks(times_only)

    def _chunks(self, times_only: bool) -> Iterator[Chunk]:
        inst = self.instrument
        spans = self._span_locals
        days = self._days()
        prev = None
        for k, day in enumerate(days):
            b, t = self._day(day, list(_BOOK_COLS), list(_TRADE_COLS))
            book_cols = (_np(b, c, d) for c, d in _BOOK_COLS.items())
            cols = _merge(*book_cols, *(_np(t, c, d) for c, d in _TRADE_COLS.items()), inst.tick_size, 1)
            ts = cols[0]
            if len(ts):
                full = np.concatenate(([prev if prev is not None else ts[0]], ts))
                at = np.flatnonzero(np.diff(full) > DEFAULT_MAX_GAP_NS)
                if at.size:
                    first_local = np.array([spans[int(ts[a])] for a in at], np.int64)
                    row = (ts[at], first_local, BOOK_RESET, SIDE_BOTH, 0.0, 0, 0.0, GAP_RESET_REF, BATCH_END)
                    cols = tuple(np.insert(c, at, v).astype(c.dtype, copy=False)
                                 for c, v in zip(cols, row, strict=True))  # fmt: skip
                prev = int(cols[0][-1])
            ts, loc, kind, side, _, ticks, qty, _, flags = cols
            last = k == len(days) - 1
            end = None if last else (day + 1) * NS_PER_DAY - 1
            if times_only:
                yield Chunk(ts, loc, None, None, None, None, None, end)
            else:
                yield Chunk(ts, loc, kind, side, ticks, qty, flags, end)
