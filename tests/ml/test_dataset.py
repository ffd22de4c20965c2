"""The training table: sample times on the grid within coverage, features and labels there, NaN targets dropped."""

from __future__ import annotations

import numpy as np
import pytest

from grinder.data.coverage import Span
from grinder.errors import ConfigError, DataError
from grinder.features import FeatureSet, compute_features
from grinder.ml.dataset import build_dataset, sample_times
from grinder.ml.labels import LabelSpec, compute_labels
from grinder.track.provenance import data_fingerprint

from .conftest import SYMBOL, VENUE

MS = 1_000_000


def test_sample_times_are_the_grid_inside_each_span():
    got = sample_times([Span(5, 25), Span(100, 131), Span(132, 139)], 10)
    assert got.tolist() == [10, 20, 100, 110, 120, 130]
    with pytest.raises(ConfigError, match="sample interval must be positive ns, got 0"):
        sample_times([Span(0, 10)], 0)


def test_rows_are_the_features_and_labels_at_the_kept_times(sample_lake, sample_tape):
    fs, spec = FeatureSet(levels=3), LabelSpec()
    short = build_dataset(sample_lake, VENUE, SYMBOL, None, None, fs, spec, 500 * MS, ("fwd_rv_10s",))
    long = build_dataset(sample_lake, VENUE, SYMBOL, None, None, fs, spec, 500 * MS, ("fwd_rv_1m", "fill_ask_d5_10s"))
    assert short.samples == long.samples == len(short) + short.dropped == len(long) + long.dropped
    assert long.dropped - short.dropped == 100  # 50 s more of label window at the end, every 500 ms
    assert (short.ts % (500 * MS) == 0).all() and (np.diff(short.ts) > 0).all()
    assert short.ts[0] >= short.spans[0].start_ns and short.ts[-1] < short.spans[-1].end_ns
    assert not np.isnan(long.label("fwd_rv_1m")).any() and not np.isnan(long.label("fill_ask_d5_10s")).any()
    f = compute_features(sample_tape, fs, short.ts)
    lab = compute_labels(sample_tape, short.ts, spec)
    assert np.array_equal(short.x, f.values.T, equal_nan=True)
    assert np.array_equal(short.y, lab.values.T, equal_nan=True)
    assert short.data_fingerprint == data_fingerprint(sample_tape)
    assert (short.feature_set_version, short.label_spec_version) == (fs.version, spec.version)
    frame = short.frame()
    assert list(frame.columns) == ["ts", *fs.names, *spec.names] and len(frame) == len(short)


def test_a_selection_without_coverage_or_with_an_unknown_target_is_refused(sample_lake):
    fs, spec = FeatureSet(), LabelSpec()
    with pytest.raises(DataError, match="no covered time for binance-usdm/BTCUSDT"):
        build_dataset(sample_lake, VENUE, SYMBOL, 0, 10**18, fs, spec, 500 * MS)
    with pytest.raises(ConfigError, match="unknown label 'fwd_rv_2s'"):
        build_dataset(sample_lake, VENUE, SYMBOL, None, None, fs, spec, 500 * MS, ("fwd_rv_2s",))
