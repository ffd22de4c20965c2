"""The feature set's names and version hash: changed by any parameter or the kernel, stable across processes."""

from __future__ import annotations

import subprocess
import sys

import pytest

from grinder.errors import ConfigError
from grinder.features import FeatureSet, spec

MS = 1_000_000


def test_names_follow_the_declaration():
    fs = FeatureSet(levels=3, vol_horizons_ns=(250 * MS, 5 * 60_000 * MS), flow_horizons_ns=(1000 * MS,))
    assert fs.names == (
        "microprice_offset", "imbalance", "spread", "rv_250ms", "rv_5m", "flow_imb_1s", "intensity_1s", "funding_rate",
    )  # fmt: skip


def test_every_parameter_changes_the_hash():
    base = FeatureSet()
    others = [
        FeatureSet(levels=6),
        FeatureSet(vol_horizons_ns=(1_000_000_000, 10_000_000_000)),
        FeatureSet(flow_horizons_ns=(1_000_000_000, 10_000_000_000, 61_000_000_000)),
        FeatureSet(vol_horizons_ns=base.flow_horizons_ns[::-1]),
    ]
    versions = {base.version} | {o.version for o in others}
    assert len(versions) == 1 + len(others)
    assert FeatureSet().version == base.version


def test_the_kernel_source_changes_the_hash(monkeypatch):
    before = FeatureSet().version
    monkeypatch.setattr(spec, "_kernel_digest", lambda: "0" * 64)
    assert FeatureSet().version != before


def test_the_hash_is_the_same_in_another_process():
    code = "from grinder.features import FeatureSet; print(FeatureSet(levels=7).version)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env={"PYTHONHASHSEED": "123"}
    )
    assert out.stdout.strip() == FeatureSet(levels=7).version


@pytest.mark.parametrize(
    ("kw", "msg"),
    [
        ({"levels": 0}, "levels must be at least 1, got 0"),
        ({"vol_horizons_ns": (0,)}, "vol_horizons_ns must be positive ns"),
        ({"flow_horizons_ns": (1000 * MS, 1000 * MS)}, "flow_horizons_ns repeats a horizon"),
    ],
)
def test_bad_declarations_are_refused_in_one_line(kw, msg):
    with pytest.raises(ConfigError, match=msg):
        FeatureSet(**kw)
