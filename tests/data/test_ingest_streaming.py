"""Streaming ingest's lake side (grinder.data.lake.StreamWriter, decision 045): rows written as they
are parsed make the lake `Lake.write` makes of the whole batch; a failed or killed ingest leaves none."""

from __future__ import annotations

import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from grinder.data import lake as lake_module
from grinder.data.ingest.binance import binance_batch, parse_binance
from grinder.data.instruments import resolve_instrument
from grinder.data.lake import NS_PER_DAY, IngestBatch, IngestReport, Lake, StreamWriter
from grinder.data.schema import TRADES
from grinder.errors import DataError
from tests.conftest import write_capture

BTC = resolve_instrument("binance-usdm", "BTCUSDT")
T0 = 1_723_161_256_493_000_000  # ns, 2024-08-08 23:54


def _trades(ts: np.ndarray) -> pa.Table:
    n = ts.size
    return pa.table(
        {
            "ts_exch": ts.astype(np.int64),
            "ts_local": ts.astype(np.int64) + 5,
            "seq": np.arange(n, dtype=np.int64) << 16,
            "trade_id": np.arange(n, dtype=np.int64) + 7,
            "side": np.where(np.arange(n) % 3 == 0, 1, -1).astype(np.int8),
            "price": 61800.0 + (np.arange(n) % 17) / 10,
            "qty": 0.001 * (1 + np.arange(n) % 5),
        },
        schema=TRADES,
    )


def _read(root, manifest) -> dict[str, pa.Table]:
    out = {}
    for rel in manifest["parts"]:
        if not rel.startswith("instruments/"):
            out[rel] = pq.read_table(root / rel)
    return out


@settings(max_examples=40)
@given(
    steps=st.lists(st.integers(-3_000, 5_000), min_size=1, max_size=400),
    late=st.lists(st.tuples(st.integers(0, 399), st.integers(1, 10**6)), max_size=4),
    piece=st.integers(1, 60),
)
def test_rows_out_of_exchange_time_order_are_sorted_as_lake_write_sorts_them(tmp_path_factory, steps, late, piece):
    # Small row groups and a short hold-back: pieces are written while later rows still arrive,
    # some later than the hold-back (then the table is sorted again from its files).
    ts = T0 + np.cumsum(np.array(steps, np.int64))
    for i, by in late:
        if i < ts.size:
            ts[i] -= by
    ts[ts.size // 2 :] += NS_PER_DAY // 400  # and across midnight
    d = tmp_path_factory.mktemp("sort")
    whole = Lake(d / "whole").write(IngestBatch("x", BTC, {"trades": _trades(ts)}, IngestReport()), [], key="k")
    old = (lake_module.ROW_GROUP, lake_module.HOLD_NS)
    lake_module.ROW_GROUP, lake_module.HOLD_NS = 16, 1_000
    try:
        with StreamWriter(Lake(d / "streamed"), "x", BTC, [], "k", ["book", "trades"]) as w:
            t = _trades(ts)
            for k in range(0, ts.size, piece):
                w.add("trades", t.slice(k, piece))
            streamed = w.commit(IngestReport())
    finally:
        lake_module.ROW_GROUP, lake_module.HOLD_NS = old
    for m in (whole, streamed):
        m.pop("ingested_at")
    assert streamed == whole
    a, b = _read(d / "whole", whole), _read(d / "streamed", streamed)
    assert a.keys() == b.keys() and all(a[k].equals(b[k]) for k in a)


def test_idempotent_and_superseding_when_streamed(real_lines, tmp_path):
    root = tmp_path / "lake"
    prefix = write_capture(tmp_path / "btcusdt_a.gz", real_lines[:1500])
    whole = write_capture(tmp_path / "btcusdt_b.gz", real_lines)
    m1 = Lake(root).write(binance_batch([prefix], BTC, block_size=5_000), [prefix])
    m2 = Lake(root).write(binance_batch([whole], BTC, block_size=5_000), [whole])  # holds all of the prefix's rows
    assert [m["group"] for m in Lake(root).manifests()] == [m2["group"]] != [m1["group"]]
    again = Lake(root).write(binance_batch([whole], BTC, block_size=7_000), [whole])
    assert "nothing written" in again["report"]["notes"][-1]
    assert [m["group"] for m in Lake(root).manifests()] == [m2["group"]]
    # The same rows written whole, as before streaming: the same group, so kept once.
    same = Lake(root).write(parse_binance([whole], BTC), [whole])
    assert same["group"] == m2["group"] and "nothing written" in same["report"]["notes"][-1]


def test_partial_overlap_is_refused_and_leaves_no_spool(real_lines, tmp_path):
    root = tmp_path / "lake"
    a = write_capture(tmp_path / "btcusdt_a.gz", real_lines[:2000])
    b = write_capture(tmp_path / "btcusdt_b.gz", real_lines[:55] + real_lines[1000:])
    Lake(root).write(binance_batch([a], BTC), [a])
    before = sorted(p.relative_to(root) for p in root.rglob("*"))
    with pytest.raises(DataError, match="share some rows"):
        Lake(root).write(binance_batch([b], BTC), [b])
    assert sorted(p.relative_to(root) for p in root.rglob("*")) == before


def test_a_failed_first_ingest_leaves_no_lake_behind(real_lines, tmp_path):
    lines = list(real_lines)
    lines[2500] = lines[2500][:40]  # cut JSON
    path = write_capture(tmp_path / "btcusdt_bad.gz", lines)
    with pytest.raises(DataError, match="malformed JSON"):
        Lake(tmp_path / "lake").write(binance_batch([path], BTC, block_size=10_000), [path])
    assert not (tmp_path / "lake").exists()


def test_spools_of_dead_processes_are_cleared_on_open(tmp_path, real_lines):
    root = tmp_path / "lake"
    path = write_capture(tmp_path / "btcusdt_x.gz", real_lines[:500])
    Lake(root).write(parse_binance([path], BTC), [path])
    dead, mine = root / ".spool" / "999999999-abc", root / ".spool" / f"{os.getpid()}-def"
    for d in (dead, mine):
        (d / "book").mkdir(parents=True)
    with Lake(root)._locked():
        pass
    assert not dead.exists() and mine.exists()
    assert json.loads(next((root / "_ingest").glob("*.json")).read_text())["report"]["rows"]["book"] > 0
