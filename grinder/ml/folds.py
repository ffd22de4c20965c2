"""Purged, embargoed walk-forward folds over sample times, for models whose labels look ahead.

A label at time t depends on the market over (t, t + h]. Training on a sample whose window reaches
into the test fold would let the model see the test period, so such samples are purged; an embargo
widens the cut. `grinder.sweep.folds` cuts windows of time for backtests (rolling windows of equal
length, pieces split at coverage gaps); here the samples already lie within coverage, and the cut
is by sample count with a purge that depends on the label's horizon.

Layout: the n sample times (sorted, int64 ns) are cut into k + 1 consecutive blocks of (nearly) equal
count. Fold i (0-based) tests on block i + 1 and trains on every earlier sample (an expanding
window) except those
  - purged: the label window (t, t + h] touches the test fold's time range [first, last test sample];
  - embargoed: t lies within `embargo_ns` of that range (on either side; in walk-forward every
    training sample precedes the test fold, so this is a gap of `embargo_ns` before it).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from grinder.errors import ConfigError

# Fewer samples than these make metrics that are noise, and xgboost fits a few hundred rows in ms.
DEFAULT_MIN_TRAIN = 50
DEFAULT_MIN_TEST = 20


@dataclass(frozen=True)
class Fold:
    """One walk-forward fold: sample indices (into the sorted times) to train and test on.

    test_start_ns, test_end_ns: the first and last test sample's time (the test fold's range, both
    inclusive); purged and embargoed: earlier samples left out of training for each reason (a sample
    both purged and embargoed counts as purged).
    """

    index: int
    train: np.ndarray  # int64 indices, increasing
    test: np.ndarray  # int64 indices, consecutive
    test_start_ns: int
    test_end_ns: int
    purged: int
    embargoed: int


def walk_forward_folds(
    ts: np.ndarray,
    horizon_ns: int,
    n_folds: int,
    embargo_ns: int = 0,
    min_train: int = DEFAULT_MIN_TRAIN,
    min_test: int = DEFAULT_MIN_TEST,
) -> list[Fold]:
    """`n_folds` purged, embargoed walk-forward folds over the sample times `ts` (sorted int64 ns).

    `horizon_ns`: the label's look-ahead h. A fold testing on fewer than `min_test` samples or
    training on fewer than `min_train` (after purge and embargo) is a ConfigError naming the figure.
    """
    ts = np.asarray(ts, np.int64)
    if n_folds < 1:
        raise ConfigError(f"folds must be at least 1, got {n_folds}")
    if horizon_ns <= 0:
        raise ConfigError(f"the label horizon must be positive ns, got {horizon_ns}")
    if embargo_ns < 0:
        raise ConfigError(f"embargo must be >= 0 ns, got {embargo_ns}")
    if ts.ndim != 1 or (ts.size > 1 and (np.diff(ts) < 0).any()):
        raise ConfigError("sample times must be a sorted one-dimensional array")
    n = ts.shape[0]
    blocks = np.array_split(np.arange(n, dtype=np.int64), n_folds + 1)
    out = []
    for i in range(n_folds):
        test = blocks[i + 1]
        if test.size < min_test:
            raise ConfigError(
                f"fold {i} of {n_folds} tests on {test.size:,} samples, fewer than the minimum {min_test:,} "
                f"({n:,} samples in {n_folds + 1} blocks); use fewer folds, a shorter sample interval or a wider "
                "selection"
            )
        a, b = int(ts[test[0]]), int(ts[test[-1]])
        before = ts[: test[0]]
        purged = (before < b) & (before + horizon_ns >= a)  # (t, t + h] meets [a, b]
        embargoed = ~purged & (before >= a - embargo_ns) & (before <= b + embargo_ns)
        train = np.flatnonzero(~(purged | embargoed)).astype(np.int64)
        if train.size < min_train:
            raise ConfigError(
                f"fold {i} of {n_folds} trains on {train.size:,} samples after purging {int(purged.sum()):,} and "
                f"embargoing {int(embargoed.sum()):,}, fewer than the minimum {min_train:,}; use fewer folds, "
                "a shorter embargo or sample interval, or a wider selection"
            )
        out.append(Fold(i, train, test, a, b, int(purged.sum()), int(embargoed.sum())))
    return out
