"""The feature store: features written to the lake under their version, read back through the DuckDB catalog."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from grinder.data.catalog import Catalog
from grinder.data.tape import load_tape
from grinder.errors import DataError
from grinder.features import FeatureSet, compute_features
from grinder.features.store import attach, read_features, stored_feature_set, version_dir, write_features

SAMPLE = Path(__file__).resolve().parents[2] / "data" / "sample" / "lake"


@pytest.fixture(scope="module")
def lake(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("store") / "lake"
    shutil.copytree(SAMPLE, root)
    return root


def test_written_features_read_back_exactly_and_query_through_the_catalog(lake):
    tape = load_tape(lake, "binance-usdm", "BTCUSDT")
    fs, other = FeatureSet(), FeatureSet(levels=2)
    f = compute_features(tape, fs)
    parts = write_features(lake, tape, f, fs)
    days = sorted({str(np.datetime64(int(t), "ns").astype("datetime64[D]")) for t in f.ts})
    assert [p.parent.name for p in parts] == [f"date={d}" for d in days]
    assert all(version_dir(lake, fs.version) in p.parents for p in parts)
    assert write_features(lake, tape, f, fs) == parts  # the same features again replace the same files
    write_features(lake, tape, compute_features(tape, other), other)

    back = read_features(lake, fs.version, "binance-usdm", "BTCUSDT")
    assert back.names == fs.names and back.version == fs.version
    assert np.array_equal(back.ts, f.ts)
    assert np.array_equal(back.values, f.values, equal_nan=True)
    mid = int(f.ts[len(f) // 2])
    later = read_features(lake, fs.version, "binance-usdm", "BTCUSDT", start_ns=mid)
    assert np.array_equal(later.ts, f.ts[f.ts >= mid])
    assert stored_feature_set(lake, fs.version) == fs.declaration()

    with Catalog(lake) as cat:
        assert attach(cat) and "features" in cat.tables
        rows = cat.query("SELECT version, count(*) FROM features GROUP BY 1").fetchall()
        assert sorted(rows) == sorted([(fs.version, len(f)), (other.version, len(f))])
        assert "trades" in cat.tables  # the market views are untouched
    assert len(load_tape(lake, "binance-usdm", "BTCUSDT")) == len(tape)  # the tape loads as before


def test_unknown_versions_are_one_line_errors(lake):
    with pytest.raises(DataError, match="not a feature-set version"):
        read_features(lake, "abc", "binance-usdm", "BTCUSDT")
    with pytest.raises(DataError, match="no stored features of version 000000000000"):
        read_features(lake, "0" * 64, "binance-usdm", "BTCUSDT")


def test_features_of_another_set_are_refused(lake):
    tape = load_tape(lake, "binance-usdm", "BTCUSDT")
    f = compute_features(tape, FeatureSet(levels=3))
    with pytest.raises(DataError, match="are not of feature set"):
        write_features(lake, tape, f, FeatureSet())


def test_writing_while_this_thread_reads_the_lake_is_refused(lake):
    tape = load_tape(lake, "binance-usdm", "BTCUSDT")
    fs = FeatureSet()
    f = compute_features(tape, fs)
    with Catalog(lake), pytest.raises(DataError, match="still reads the lake"):
        write_features(lake, tape, f, fs)
