"""Time folds for out-of-sample discipline: one train/test split, or walk-forward folds.

Times are int64 ns (UTC). A fold is a pair of windows: parameters are ranked on the in-sample
window and judged on the out-of-sample window that follows it, never the other way round.
Windows are half-open [start, end) and are loaded exactly as `grinder backtest --start --end`
would load them, so a parameter set's digest in a fold equals that backtest's digest.
"""

from __future__ import annotations

from dataclasses import dataclass

from grinder.data.errors import DataError


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
        raise DataError(f"empty time span: start {start_ns} is not before end {end_ns}")
    if train is not None and not 0.0 < train < 1.0:
        raise DataError(f"train fraction must be between 0 and 1 (exclusive), got {train}")
    if walk_forward < 0:
        raise DataError(f"walk_forward must be >= 0, got {walk_forward}")
    span = end_ns - start_ns
    if walk_forward == 0:
        if train is None:
            return [Window("all", start_ns, end_ns, "in")]
        cut = start_ns + int(span * train)
        if cut <= start_ns or cut >= end_ns:
            raise DataError(f"train fraction {train} leaves an empty window in a span of {span} ns")
        return [Window("train", start_ns, cut, "in"), Window("test", cut, end_ns, "out")]
    ratio = 1.0 if train is None else train / (1.0 - train)
    # Fold i: in-sample [a_i, a_i + L_in), out-of-sample [a_i + L_in, a_i + L_in + L_out); the
    # folds step by L_out, so the out-of-sample windows tile the end of the span without overlap.
    l_out = int(span / (walk_forward + ratio))
    l_in = span - walk_forward * l_out
    if l_out <= 0 or l_in <= 0:
        raise DataError(f"{walk_forward} walk-forward folds do not fit in a span of {span} ns")
    out = []
    for i in range(walk_forward):
        a = start_ns + i * l_out
        b = a + l_in
        c = b + l_out if i < walk_forward - 1 else end_ns
        out.append(Window(f"wf{i + 1}-train", a, b, "in"))
        out.append(Window(f"wf{i + 1}-test", b, c, "out"))
    return out
