"""The same market data, however it is stored, is kept once: identity comes from rows, not file bytes.

Each case ingests two stored forms of real data (Binance captures cut from the real files, the
Tardis fixtures made from them) and checks the lake afterwards: one manifest per distinct data,
exactly one copy of every row in DuckDB and in the loaded tape, no Arrow error.
"""

from __future__ import annotations

import gzip
import hashlib
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from grinder.data.catalog import Catalog
from grinder.data.ingest.binance import parse_binance
from grinder.data.ingest.tardis import parse_tardis
from grinder.data.instruments import resolve_instrument
from grinder.data.lake import Lake, _member, row_hashes
from grinder.data.tape import load_tape
from grinder.errors import DataError
from tests.conftest import REPO, write_capture
from tests.fixtures import make_fixtures as mf

BTC = resolve_instrument("binance-usdm", "BTCUSDT")
NOOP = "every row is in the lake already"


def _files(root):
    """Every file of the lake but the lock, with its content hash."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != ".lock"
    }


def _state(root, batch):
    """Check the lake holds each row of `batch` exactly once; return its file tree."""
    with Catalog(root) as cat:
        for table, data in batch.tables.items():
            if data.num_rows == 0:
                continue
            cols = ", ".join(c for c in data.column_names if c != "seq")
            n, distinct = cat.query(f"select count(*), count(distinct ({cols})) from {table}").fetchall()[0]
            assert n == distinct == data.num_rows, table
            stored = cat.query(f"select {cols} from {table}").to_arrow_table()
            assert sorted(row_hashes(stored)) == sorted(row_hashes(data)), table
    tape = load_tape(root, "binance-usdm", "BTCUSDT")
    assert len(tape) == batch.tables["book"].num_rows + batch.tables["trades"].num_rows
    assert (np.diff(tape.ts_exch) >= 0).all()
    return _files(root)


# ---------------------------------------------------------------- Binance captures


@pytest.fixture
def binance(real_lines, tmp_path):
    """Stored forms of one real capture: gzip -9, gzip -1, plain text, a prefix, and the data parsed."""
    raw = b"".join(line if line.endswith(b"\n") else line + b"\n" for line in real_lines)
    forms = {
        "gz9": write_capture(tmp_path / "btcusdt_gz9.gz", real_lines),
        "gz1": tmp_path / "btcusdt_gz1.gz",
        "plain": tmp_path / "btcusdt_plain.txt",
        "prefix": write_capture(tmp_path / "btcusdt_prefix.gz", real_lines[:1500]),
    }
    forms["gz1"].write_bytes(gzip.compress(raw, compresslevel=1))
    forms["plain"].write_bytes(raw)
    assert len({p.read_bytes() for p in forms.values()}) == 4  # four different byte streams
    return forms


@pytest.mark.parametrize("second", ["plain", "gz1"])
def test_binance_same_capture_stored_differently_is_kept_once(binance, tmp_path, second):
    root = tmp_path / "lake"
    first = Lake(root).write(parse_binance([binance["gz9"]], BTC), [binance["gz9"]])
    whole = parse_binance([binance["gz9"]], BTC)
    before = _state(root, whole)
    again = Lake(root).write(parse_binance([binance[second]], BTC), [binance[second]])
    assert _state(root, whole) == before
    assert [m["group"] for m in Lake(root).manifests()] == [first["group"]]
    assert again["group"] == first["group"] and again["report"]["rows"] == {}
    assert again["report"]["notes"] == [f"{NOOP} (ingest {first['group']} from {binance['gz9']}): nothing written"]


def test_binance_prefix_then_whole_keeps_the_whole_once(binance, tmp_path):
    root = tmp_path / "lake"
    prefix = Lake(root).write(parse_binance([binance["prefix"]], BTC), [binance["prefix"]])
    whole = Lake(root).write(parse_binance([binance["gz9"]], BTC), [binance["gz9"]])
    assert whole["report"]["rows"]["book"] == 15_415 > prefix["report"]["rows"]["book"] == 8_677
    assert [m["group"] for m in Lake(root).manifests()] == [whole["group"]]
    files = _state(root, parse_binance([binance["gz9"]], BTC))
    assert not [f for f in files if prefix["group"] in f]


def test_binance_whole_then_prefix_writes_nothing_and_says_so(binance, tmp_path):
    root = tmp_path / "lake"
    whole = Lake(root).write(parse_binance([binance["gz9"]], BTC), [binance["gz9"]])
    before = _files(root)
    again = Lake(root).write(parse_binance([binance["prefix"]], BTC), [binance["prefix"]])
    assert _state(root, parse_binance([binance["gz9"]], BTC)) == before
    assert again["report"]["notes"] == [f"{NOOP} (ingest {whole['group']} from {binance['gz9']}): nothing written"]


def test_binance_partly_overlapping_captures_are_refused(real_lines, tmp_path):
    a = write_capture(tmp_path / "btcusdt_a.gz", real_lines[:2000])
    b = write_capture(tmp_path / "btcusdt_b.gz", real_lines[1000:])
    root = tmp_path / "lake"
    first = Lake(root).write(parse_binance([a], BTC), [a])
    before = _files(root)
    with pytest.raises(DataError) as e:
        Lake(root).write(parse_binance([b], BTC), [b])
    assert str(e.value) == (
        f"{b} and {a} (ingest {first['group']}) share some rows but neither holds all of the other's: "
        "ingest the whole capture once, or cut the files where they meet"
    )
    assert _state(root, parse_binance([a], BTC)) == before
    assert not (root / ".staging").exists() and not (root / "_journal.json").exists()
    # A file that continues the first shares no rows with it: both are kept.
    c = write_capture(tmp_path / "btcusdt_c.gz", real_lines[2000:])
    Lake(root).write(parse_binance([c], BTC), [c])
    assert len(Lake(root).manifests()) == 2


# ---------------------------------------------------------------- Tardis CSV


@pytest.fixture(scope="module")
def tardis_lines():
    return [gzip.decompress(p.read_bytes()).splitlines(keepends=True) for p in (mf.TARDIS_BOOK, mf.TARDIS_TRADES)]


def _tardis(tmp_path, name, book, trades, level=None):
    """Write a book and a trades CSV (gzipped at `level`, or plain); return both paths."""
    out = []
    for kind, lines in (("book", book), ("trades", trades)):
        data = b"".join(lines)
        if level is None:
            p = tmp_path / f"{name}_{kind}.csv"
            p.write_bytes(data)
        else:
            p = tmp_path / f"{name}_{kind}.csv.gz"
            p.write_bytes(gzip.compress(data, compresslevel=level))
        out.append(p)
    return out


@pytest.mark.parametrize("level", [None, 1])
def test_tardis_same_files_stored_differently_are_kept_once(tardis_lines, tmp_path, level):
    root = tmp_path / "lake"
    fixture = [mf.TARDIS_BOOK, mf.TARDIS_TRADES]
    first = Lake(root).write(parse_tardis(fixture, BTC), fixture)
    before = _state(root, parse_tardis(fixture, BTC))
    other = _tardis(tmp_path, "x", *tardis_lines, level=level)
    again = Lake(root).write(parse_tardis(other, BTC), other)
    assert _state(root, parse_tardis(fixture, BTC)) == before
    assert len(Lake(root).manifests()) == 1
    assert again["report"]["notes"] == [
        f"{NOOP} (ingest {first['group']} from {mf.TARDIS_BOOK}, {mf.TARDIS_TRADES}): nothing written"
    ]


def test_tardis_prefix_then_whole_and_whole_then_prefix(tardis_lines, tmp_path):
    book, trades = tardis_lines
    prefix = _tardis(tmp_path, "p", book[: len(book) // 2], trades[: len(trades) // 2], level=6)
    fixture = [mf.TARDIS_BOOK, mf.TARDIS_TRADES]
    root = tmp_path / "lake"
    first = Lake(root).write(parse_tardis(prefix, BTC), prefix)
    whole = Lake(root).write(parse_tardis(fixture, BTC), fixture)
    assert [m["group"] for m in Lake(root).manifests()] == [whole["group"]] != [first["group"]]
    after = _state(root, parse_tardis(fixture, BTC))
    again = Lake(root).write(parse_tardis(prefix, BTC), prefix)
    assert again["report"]["notes"][-1].startswith(f"{NOOP} (ingest {whole['group']} ")
    assert _state(root, parse_tardis(fixture, BTC)) == after


def test_tardis_partly_overlapping_files_are_refused(tardis_lines, tmp_path):
    book, trades = tardis_lines
    # The second half of each file, with its header: Tardis numbers book messages from 1 per ingest,
    # so its book rows differ, but its trades are the first ingest's.
    head = _tardis(tmp_path, "h", book[: 2 * len(book) // 3], trades[: 2 * len(trades) // 3], level=6)
    tail = _tardis(tmp_path, "t", book[:1] + book[len(book) // 3 :], trades[:1] + trades[len(trades) // 3 :], level=6)
    root = tmp_path / "lake"
    first = Lake(root).write(parse_tardis(head, BTC), head)
    before = _files(root)
    with pytest.raises(DataError) as e:
        Lake(root).write(parse_tardis(tail, BTC), tail)
    assert str(e.value) == (
        f"{tail[0]}, {tail[1]} and {head[0]}, {head[1]} (ingest {first['group']}) share some rows but neither "
        "holds all of the other's: ingest the whole capture once, or cut the files where they meet"
    )
    assert _files(root) == before


@given(st.lists(st.integers(0, 2**64 - 1), max_size=30), st.lists(st.integers(0, 2**64 - 1), max_size=30))
def test_membership_agrees_with_numpy(values, pool):
    v, p = np.array(values, np.uint64), np.array(pool, np.uint64)
    assert (_member(v, np.sort(p)) == np.isin(v, p)).all()
    assert _member(p, np.sort(np.concatenate([p, v]))).all()


def test_cli_says_when_an_ingest_writes_nothing(binance, tmp_path):
    root = tmp_path / "lake"

    def ingest(path):
        return subprocess.run(
            [sys.executable, "-m", "grinder", "data", "ingest", "binance", str(path), "--root", str(root)],
            capture_output=True,
            text=True,
            cwd=REPO,
            timeout=300,
        )

    first = ingest(binance["gz9"])
    assert first.returncode == 0, first.stderr
    group = Lake(root).manifests()[0]["group"]
    before = _files(root)
    again = ingest(binance["plain"])
    assert again.returncode == 0, again.stderr
    assert f"  note: {NOOP} (ingest {group} from {binance['gz9']}): nothing written\n" in again.stdout
    assert _files(root) == before
