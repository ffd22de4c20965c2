"""Time folds for out-of-sample discipline: one train/test split, or walk-forward folds.

Times are int64 ns (UTC). A fold is a pair of windows: parameters are ranked on the in-sample
window and judged on the out-of-sample window that follows it, never the other way round.
Windows are half-open [start, end) and are loaded exactly as `grinder backtest --start --end`
would load them, so a parameter set's digest in a fold equals that backtest's digest.

`coverage_folds` cuts the folds within the spans that hold data (`grinder.data.coverage`): by
covered time or by event count, never across a gap, and refuses windows with too few events.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from grinder.data.coverage import Span
from grinder.errors import ConfigError, DataError


@dataclass(frozen=True)
class Window:
    """A time window of the data, [start_ns, end_ns), with a name and its role."""

    name: str
    start_ns: int
    end_ns: int
    sample: str  # "in" or "out"


def make_folds(start_ns: int, end_ns: int, train: float | None = None, walk_forward: int = 0) -> list[Window]:
    """The windows of a sweep over [start_ns, end_ns).

    - neither `train` nor `walk_forward`: one in-sample window, the whole span;
    - `train` = f in (0, 1): in-sample [start, start + f * span), out-of-sample the rest;
    - `walk_forward` = k >= 1: the span cut into k + 1 equal parts; fold i is in-sample on part i
      and out-of-sample on part i + 1 (rolling, equal lengths). With `train` as well, each fold's
      in-sample part is `train / (1 - train)` times its out-of-sample part.
    """
    if end_ns <= start_ns:
        raise ConfigError(f"empty time span: start {start_ns} is not before end {end_ns}")
    if train is not None and not 0.0 < train < 1.0:
        raise ConfigError(f"train fraction must be between 0 and 1 (exclusive), got {train}")
    if walk_forward < 0:
        raise ConfigError(f"walk_forward must be >= 0, got {walk_forward}")
    span = end_ns - start_ns
    if walk_forward == 0:
        if train is None:
            return [Window("all", start_ns, end_ns, "in")]
        cut = start_ns + int(span * train)
        if cut <= start_ns or cut >= end_ns:
            raise ConfigError(f"train fraction {train} leaves an empty window in a span of {span} ns")
        return [Window("train", start_ns, cut, "in"), Window("test", cut, end_ns, "out")]
    ratio = 1.0 if train is None else train / (1.0 - train)
    # Fold i: in-sample [a_i, a_i + L_in), out-of-sample [a_i + L_in, a_i + L_in + L_out); the
    # folds step by L_out, so the out-of-sample windows tile the end of the span without overlap.
    l_out = int(span / (walk_forward + ratio))
    l_in = span - walk_forward * l_out
    if l_out <= 0 or l_in <= 0:
        raise ConfigError(f"{walk_forward} walk-forward folds do not fit in a span of {span} ns")
    out = []
    for i in range(walk_forward):
        a = start_ns + i * l_out
        b = a + l_in
        c = b + l_out if i < walk_forward - 1 else end_ns
        out.append(Window(f"wf{i + 1}-train", a, b, "in"))
        out.append(Window(f"wf{i + 1}-test", b, c, "out"))
    return out


FOLD_BY = ("time", "events")
# A window with fewer rows than this is not ranked: its metrics would be noise (a few seconds of a
# real capture; zero trades gave a Sharpe ratio of inf, which ranked first).
DEFAULT_MIN_EVENTS = 1_000


@dataclass(frozen=True)
class Folds:
    """Windows cut within coverage: those kept (ranked) and those refused for too few events."""

    windows: list[Window]
    refused: list[tuple[Window, int]]  # (window, its events) below the minimum, never ranked


def count_in(times: np.ndarray, start_ns: int, end_ns: int) -> int:
    """How many of the sorted `times` (ns) fall in [start_ns, end_ns)."""
    return int(np.searchsorted(times, end_ns, "left") - np.searchsorted(times, start_ns, "left"))


def coverage_folds(
    spans: list[Span],
    times: np.ndarray,
    train: float | None = None,
    walk_forward: int = 0,
    by: str = "time",
    min_events: int = DEFAULT_MIN_EVENTS,
) -> Folds:
    """The windows of a sweep over the covered `spans` only, never across a gap between them.

    `times` are the exchange times (ns, sorted) of the selection's events. The folds of
    `make_folds` are cut on an axis that counts only covered time (`by="time"`) or events
    (`by="events"`, each window then holds the same number of events), then mapped back to
    exchange time; a window that would cross a gap becomes one piece per span (`wf1-train.1`,
    `wf1-train.2`, ...), each ranked as a window of its sample. Pieces with fewer than
    `min_events` events are refused (listed, not run); a fold left with no window is an error.
    """
    if by not in FOLD_BY:
        raise ConfigError(f"unknown fold basis {by!r}; choose from {', '.join(FOLD_BY)}")
    if min_events < 1:
        raise ConfigError(f"min_events must be at least 1, got {min_events}")
    spans = [s for s in spans if s.end_ns > s.start_ns]
    if not spans:
        raise DataError("the selection holds no covered time (no book data in the lake there)")
    times = np.asarray(times, np.int64)
    if (times[1:] < times[:-1]).any():  # book rows in apply order may step back a few ms
        times = np.sort(times)
    starts = np.array([s.start_ns for s in spans], np.int64)
    ends = np.array([s.end_ns for s in spans], np.int64)
    first = np.searchsorted(times, starts, "left")  # each span's events: times[first[k]:last[k]]
    last = np.searchsorted(times, ends, "left")
    sizes = ends - starts if by == "time" else last - first
    edges = np.concatenate(([0], np.cumsum(sizes)))
    total = int(edges[-1])
    if total <= 0:
        raise DataError(f"the selection's {len(spans)} covered span(s) hold no events")
    try:
        axis = make_folds(0, total, train, walk_forward)
    except ConfigError as e:
        if " in a span of " not in e.message:
            raise
        unit = "ns of covered time" if by == "time" else "events"
        raise ConfigError(f"{e.message.split(' in a span of ')[0]} in {total:,} {unit}") from None

    def to_time(k: int, x: int) -> int:
        # A point x on the axis inside span k, as exchange time.
        if by == "time":
            return int(starts[k] + x - edges[k])
        i = int(first[k] + x - edges[k])
        return int(starts[k]) if i == first[k] else int(ends[k]) if i >= last[k] else int(times[i])

    kept, refused = [], []
    for w in axis:
        pieces = []
        for k in range(len(spans)):
            a, b = max(w.start_ns, int(edges[k])), min(w.end_ns, int(edges[k + 1]))
            if a < b:
                pieces.append((to_time(k, a), to_time(k, b) if b < edges[k + 1] else int(ends[k])))
        fold = []
        for j, (a, b) in enumerate(pieces, start=1):
            name = w.name if len(pieces) == 1 else f"{w.name}.{j}"
            piece = Window(name, a, b, w.sample)
            n = count_in(times, a, b)
            (fold if n >= min_events else refused).append(piece if n >= min_events else (piece, n))
        if not fold:
            n = sum(r[1] for r in refused if r[0].name.split(".")[0] == w.name)
            raise ConfigError(
                f"window {w.name} holds {n:,} events, fewer than the minimum {min_events:,}; use fewer folds, "
                "--fold-by events, a wider --start/--end or a lower --min-events"
            )
        kept.extend(fold)
    return Folds(kept, refused)
