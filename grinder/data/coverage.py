"""Coverage: the spans of exchange time that actually hold data, so windows never straddle a gap.

A lake may hold a few minutes of data spread over many months of calendar time. Anything that cuts
time into windows (sweep folds, portfolio look-backs) cuts within these spans, never across the
gaps between them. A span is half-open exchange time in ns: [start_ns, end_ns), end_ns being one
past its last row. Rows further apart than `max_gap_ns` start a new span (decision 022).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from numba import njit

from grinder.data.lake import partition_dir
from grinder.errors import ConfigError, DataError

# Real Binance captures carry a depth update every few ms (decision 022). A minute without a single
# book row is a feed that stopped, not a quiet market; a shorter limit would split a capture at
# every hiccup of the recorder, a longer one would let a window straddle a reconnect.
DEFAULT_MAX_GAP_NS = 60 * 1_000_000_000


@dataclass(frozen=True)
class Span:
    """Exchange time [start_ns, end_ns) in ns holding data; `events`: rows in it (None if not counted)."""

    start_ns: int
    end_ns: int
    events: int | None = None

    @property
    def duration_ns(self) -> int:
        """Length of the span, ns."""
        return self.end_ns - self.start_ns


@njit(cache=True, nogil=True)
def gap_rows(ts, max_gap_ns):
    """Rows more than `max_gap_ns` after the row before them (ts sorted): each begins a new span.

    Two passes instead of np.diff: no tape-sized temporaries on a tape of tens of millions of rows.
    """
    n = 0
    for i in range(1, ts.shape[0]):
        if ts[i] - ts[i - 1] > max_gap_ns:
            n += 1
    out = np.empty(n, np.int64)
    n = 0
    for i in range(1, ts.shape[0]):
        if ts[i] - ts[i - 1] > max_gap_ns:
            out[n] = i
            n += 1
    return out


def spans_of_times(ts_exch: np.ndarray, max_gap_ns: int = DEFAULT_MAX_GAP_NS) -> list[Span]:
    """The spans of exchange times (ns, any order): a new one wherever consecutive times are over `max_gap_ns` apart."""
    if max_gap_ns < 0:
        raise ConfigError(f"max_gap_ns must be >= 0, got {max_gap_ns}")
    ts = np.asarray(ts_exch, np.int64)
    if ts.size == 0:
        return []
    # Book rows are kept in apply order, which may step back by a few ms: sort only if needed.
    if (ts[1:] < ts[:-1]).any():
        ts = np.sort(ts)
    cut = gap_rows(ts, max_gap_ns)
    first = np.concatenate(([0], cut))
    last = np.concatenate((cut, [ts.size])) - 1
    starts, ends, counts = ts[first], ts[last] + 1, last - first + 1
    return [Span(int(a), int(b), int(n)) for a, b, n in zip(starts, ends, counts, strict=True)]


def merge_spans(spans: list[Span], max_gap_ns: int = DEFAULT_MAX_GAP_NS) -> list[Span]:
    """Spans in time order, those overlapping or at most `max_gap_ns` apart joined (events summed)."""
    out: list[Span] = []
    for s in sorted(spans, key=lambda s: (s.start_ns, s.end_ns)):
        if out and s.start_ns - out[-1].end_ns < max_gap_ns:
            p = out[-1]
            ev = None if p.events is None or s.events is None else p.events + s.events
            out[-1] = Span(p.start_ns, max(p.end_ns, s.end_ns), ev)
        else:
            out.append(s)
    return out


def clip_spans(spans: list[Span], start_ns: int | None, end_ns: int | None) -> list[Span]:
    """The parts of `spans` inside [start_ns, end_ns) (None: unbounded); events of cut spans become None."""
    lo = -(2**63) if start_ns is None else start_ns
    hi = 2**63 - 1 if end_ns is None else end_ns
    out = []
    for s in spans:
        a, b = max(s.start_ns, lo), min(s.end_ns, hi)
        if a < b:
            out.append(Span(a, b, s.events if (a, b) == (s.start_ns, s.end_ns) else None))
    return out


def covering(spans: list[Span], t_ns: int) -> Span | None:
    """The span holding time `t_ns` (ns), or None when it falls in a gap."""
    return next((s for s in spans if s.start_ns <= t_ns < s.end_ns), None)


def lake_spans(root: str | Path, venue: str, symbol: str, max_gap_ns: int = DEFAULT_MAX_GAP_NS) -> list[Span]:
    """The spans of the lake's book rows for (venue, symbol), in time order, with their row counts.

    Reads only the `ts_exch` column, one Parquet row group at a time, so memory stays at one row
    group whatever the lake holds. Separate captures are separate spans unless they come within
    `max_gap_ns` of each other; a capture cut at midnight into two partitions is one span.
    """
    base = Path(root) / partition_dir("book", venue, symbol, "x").parent
    files = sorted(base.glob("date=*/*.parquet")) if base.is_dir() else []
    spans: list[Span] = []
    for f in files:
        try:
            pf = pq.ParquetFile(f)
            for i in range(pf.num_row_groups):
                ts = pf.read_row_group(i, columns=["ts_exch"]).column("ts_exch").to_numpy()
                spans = merge_spans(spans + spans_of_times(ts, max_gap_ns), max_gap_ns)
        except (OSError, KeyError, ValueError) as e:
            raise DataError(f"cannot read book times: {str(e).splitlines()[0]}", str(f)) from None
    return spans
