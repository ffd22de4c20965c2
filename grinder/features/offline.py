"""The offline driver: the features of a whole tape in one compiled pass.

`compute_features(tape, feature_set, at=None)` replays the tape's book rows through an L2 book
(`grinder.book.l2.apply_row`) and calls the shared `grinder.features.kernel.update` once per
point where the market is consistent: at each row flagged BATCH_END (the last row of a book
message, every trade), with funding rows (the tape's `funding` series) applied as their own
updates before the first event at or after their time. The book is synced after a snapshot row and
unsynced after a reset, as in `grinder.sim.replay` (decision 021).

Sampling: with `at=None` one row per update point (book message end or trade) after it, read at
its exchange time: the rows the live updater would give after each message. With `at` (sorted
int64 ns), one row per time: the features as of that time after every event at or before it,
the sums decayed to it (what a decision clock reads).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from grinder.book.l2 import new_book
from grinder.data.tape import BATCH_END, Tape
from grinder.errors import ConfigError
from grinder.features.kernel import new_state, offline_pass
from grinder.features.spec import FeatureSet


class NamedColumns:
    """Columns named `names` in the rows of `values` (one entry per `ts`), read by name: `cols["spread"]`."""

    column_kind = "column"  # how a missing name's error calls the columns

    def __getitem__(self, name: str) -> np.ndarray:
        try:
            return self.values[self.names.index(name)]
        except ValueError:
            kind = self.column_kind
            raise KeyError(f"no {kind} named {name!r}; {kind}s: {', '.join(self.names)}") from None

    def __len__(self) -> int:
        return self.ts.shape[0]


@dataclass(frozen=True)
class Features(NamedColumns):
    """Feature columns of a tape: `values[k]` is column `names[k]` (float64), one entry per sample.

    ts: int64 ns (exchange time of the sample); row: int64 tape index of the update point sampled
    (with `at`: the last tape row at or before the time, -1 if none); version: the feature set's hash.
    """

    names: tuple[str, ...]
    values: np.ndarray  # float64 [n_features, n_samples]
    ts: np.ndarray
    row: np.ndarray
    version: str
    column_kind = "feature"


def sample_times_checked(at) -> np.ndarray:
    """Sample times as a contiguous int64 array (ns), refused unless one-dimensional and sorted."""
    at_arr = np.ascontiguousarray(at, np.int64)
    if at_arr.ndim != 1:
        raise ConfigError(f"sample times must be one-dimensional, got shape {at_arr.shape}")
    if at_arr.size > 1 and (np.diff(at_arr) < 0).any():
        raise ConfigError(
            f"sample times must be sorted; first out of order at index {int(np.argmax(np.diff(at_arr) < 0)) + 1}"
        )
    return at_arr


def compute_features(tape: Tape, feature_set: FeatureSet, at: np.ndarray | None = None) -> Features:
    """The features of `tape` under `feature_set`: one compiled pass over its events.

    at=None: a sample after each update point (BATCH_END row); `at` (sorted int64 ns): a sample
    at each time. Rows before `tape.start` (the book's warm-up) are sampled too: `row` tells them.
    """
    if at is None:
        at_arr = np.empty(0, np.int64)
        n_samples = int(np.count_nonzero(tape.flags & BATCH_END))
    else:
        at_arr = sample_times_checked(at)
        n_samples = at_arr.shape[0]
    levels, vol_tau, flow_tau = feature_set.kernel_args()
    si, sf = new_state(vol_tau.shape[0], flow_tau.shape[0])
    hdr, wq, ok, oq = new_book()
    values = np.empty((len(feature_set.names), n_samples))
    out_ts = np.empty(n_samples, np.int64)
    out_row = np.empty(n_samples, np.int64)
    f = tape.funding
    f_ts = np.ascontiguousarray(f.ts_exch, np.int64)
    f_rate = np.ascontiguousarray(f.funding_rate, np.float64)
    offline_pass(
        tape.ts_exch, tape.kind, tape.side, tape.price_ticks, tape.qty, tape.flags, f_ts, f_rate,
        at_arr, at is None, levels, vol_tau, flow_tau, si, sf, hdr, wq, ok, oq, values, out_ts, out_row,
    )  # fmt: skip
    return Features(feature_set.names, values, out_ts, out_row, feature_set.version)
