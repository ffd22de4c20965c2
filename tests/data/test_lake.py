"""The lake: atomic, idempotent ingests; overlapping ingests supersede; a failure writes nothing."""

from __future__ import annotations

import hashlib

import pytest

from grinder.data.catalog import Catalog
from grinder.data.ingest.binance import parse_binance
from grinder.data.instruments import resolve_instrument
from grinder.data.lake import Lake
from grinder.errors import DataError
from tests.conftest import write_capture

BTC = resolve_instrument("binance-usdm", "BTCUSDT")


def _tree(root):
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != ".lock" and "_ingest" not in p.parts
    }


def _rows(root, table="book"):
    return Catalog(root).query(f"select count(*) from {table}").fetchall()[0][0]


def test_reingest_is_idempotent(real_lines, tmp_path):
    path = write_capture(tmp_path / "btcusdt_x.gz", real_lines)
    root = tmp_path / "lake"
    Lake(root).write(parse_binance([path], BTC), [path])
    before, n = _tree(root), _rows(root)
    Lake(root).write(parse_binance([path], BTC), [path])
    assert _tree(root) == before and _rows(root) == n
    assert len(Lake(root).manifests()) == 1


def test_overlapping_ingest_supersedes_the_earlier_one(real_lines, tmp_path):
    a = write_capture(tmp_path / "btcusdt_a.gz", real_lines[:1500])
    b = write_capture(tmp_path / "btcusdt_b.gz", real_lines[1500:])
    root = tmp_path / "lake"
    Lake(root).write(parse_binance([a], BTC), [a])
    Lake(root).write(parse_binance([a, b], BTC), [a, b])
    manifests = Lake(root).manifests()
    assert len(manifests) == 1 and len(manifests[0]["sources"]) == 2
    whole = parse_binance([a, b], BTC)
    assert _rows(root) == whole.report.rows["book"]
    assert _rows(root, "bbo") == whole.report.rows["bbo"]


def test_failed_ingest_leaves_the_lake_untouched(real_lines, tmp_path):
    good = write_capture(tmp_path / "btcusdt_good.gz", real_lines[:1000])
    root = tmp_path / "lake"
    Lake(root).write(parse_binance([good], BTC), [good])
    before = _tree(root)
    lines = list(real_lines)
    lines[2000] = lines[2000][:60] + b"\n"  # cut a message in half
    bad = write_capture(tmp_path / "btcusdt_bad.gz", lines)
    with pytest.raises(DataError, match="malformed JSON"):
        Lake(root).write(parse_binance([good, bad], BTC), [good, bad])
    assert _tree(root) == before
    assert not (root / ".staging").exists()


def test_failure_while_writing_leaves_no_partial_partition(real_lines, tmp_path, monkeypatch):
    path = write_capture(tmp_path / "btcusdt_x.gz", real_lines)
    root = tmp_path / "lake"
    batch = parse_binance([path], BTC)
    import grinder.data.lake as lake_mod

    calls = {"n": 0}
    real_write = lake_mod.pq.write_table

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError("disk full")
        return real_write(*args, **kwargs)

    monkeypatch.setattr(lake_mod.pq, "write_table", flaky)
    with pytest.raises(OSError, match="disk full"):
        Lake(root).write(batch, [path])
    assert [p for p in root.rglob("*.parquet")] == []
    assert Lake(root).manifests() == []


@pytest.mark.parametrize("compression", ["lz4", "zstd", "none"])
def test_int64_columns_are_delta_encoded_and_read_back_unchanged(real_lines, tmp_path, compression):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from grinder.data.schema import MARKET_TABLES

    path = write_capture(tmp_path / "btcusdt_x.gz", real_lines)
    root = tmp_path / "lake"
    batch = parse_binance([path], BTC)
    Lake(root, compression).write(batch, [path])
    cat = Catalog(root)
    seen = set()
    for table, data in batch.tables.items():
        if data.num_rows == 0:
            continue
        files = sorted((root / table).rglob("*.parquet"))
        assert files, table
        for f in files:
            meta = pq.ParquetFile(f).metadata.row_group(0)
            for i in range(meta.num_columns):
                col = meta.column(i)
                want = (
                    "DELTA_BINARY_PACKED"
                    if data.schema.field(col.path_in_schema).type == pa.int64()
                    else "RLE_DICTIONARY"
                )
                assert want in col.encodings, (table, col.path_in_schema, col.encodings)
        # Every value comes back, through pyarrow and through DuckDB.
        stored = pa.concat_tables(pq.ParquetFile(f).read() for f in files)
        assert stored.equals(data.cast(MARKET_TABLES[table]))
        cols = ", ".join(data.column_names)
        back = cat.query(f"select {cols} from {table} order by ts_exch, seq").to_arrow_table()
        assert back.cast(MARKET_TABLES[table]).equals(stored.sort_by([("ts_exch", "ascending"), ("seq", "ascending")]))
        seen.add(table)
    assert {"book", "trades"} <= seen
