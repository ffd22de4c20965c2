"""Venue and symbol names become folders: anything but one plain path part is refused, nothing written."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from grinder.data.ingest.binance import parse_binance
from grinder.data.instruments import Instrument, check_name, resolve_instrument
from grinder.data.lake import Lake, partition_dir
from grinder.errors import ConfigError
from tests.conftest import REPO, write_capture

RULE = "use letters, digits, '_', '.', '-' (not first, no '..'); it becomes a folder name in the lake"


def _grinder(*args):
    return subprocess.run(
        [sys.executable, "-m", "grinder", *map(str, args)], capture_output=True, text=True, cwd=REPO, timeout=300
    )


def _everything(top):
    return sorted(str(p.relative_to(top)) for p in top.rglob("*"))


@given(st.text(alphabet="ab0_.-/\\ \x00A", max_size=8))
def test_a_name_is_accepted_only_as_one_plain_path_part(name):
    ok = re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name) is not None and ".." not in name
    try:
        assert check_name("venue", name) == name and ok
    except ConfigError as e:
        assert not ok
        assert str(e) == f"invalid venue {name!r}: {RULE}"
    if ok:  # an accepted name stays one folder below its parent
        rel = partition_dir("book", name, name, "2024-01-01")
        assert len(rel.parts) == 4 and os.path.normpath(rel) == str(rel)


@pytest.mark.parametrize(
    "args, culprit",
    [
        (["data", "ingest", "binance", "{src}", "--venue", "../../x"], "venue '../../x'"),
        (["data", "ingest", "binance", "{src}", "--symbol", "../up"], "symbol '../UP'"),
        (["data", "synth", "--events", "1000", "--venue", "a/../../b"], "venue 'a/../../b'"),
        (["data", "synth", "--events", "1000", "--symbol", ".."], "symbol '..'"),
        (["data", "check", "--symbol", "BTCUSDT", "--venue", "../../x"], "venue '../../x'"),
    ],
)
def test_cli_refuses_a_traversing_name_and_writes_nothing(real_lines, tmp_path, args, culprit):
    top = tmp_path / "top"
    root = top / "a" / "b" / "lake"
    src = write_capture(tmp_path / "btcusdt_x.gz", real_lines[:200])
    before = _everything(tmp_path)
    r = _grinder(*[a.replace("{src}", str(src)) for a in args], "--root", root)
    assert (r.returncode, r.stdout, r.stderr) == (2, "", f"error: invalid {culprit}: {RULE}\n")
    assert _everything(tmp_path) == before


def test_lake_write_refuses_a_name_that_slipped_past_the_model(real_lines, tmp_path):
    src = write_capture(tmp_path / "btcusdt_x.gz", real_lines[:200])
    batch = parse_binance([src], resolve_instrument("binance-usdm", "BTCUSDT"))
    batch.instrument = Instrument.model_construct(**{**batch.instrument.model_dump(), "venue": "../../out"})
    before = _everything(tmp_path)
    with pytest.raises(ConfigError) as e:
        Lake(tmp_path / "lake").write(batch, [src])
    assert str(e.value) == f"invalid venue '../../out': {RULE}"
    assert _everything(tmp_path) == before
