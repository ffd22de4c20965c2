"""Reading input files in bounded pieces (grinder.data.ingest.source.iter_blocks)."""

from __future__ import annotations

import gzip

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from grinder.data.ingest.binance import binance_batch
from grinder.data.ingest.source import ByteProgress, FileLines, iter_blocks
from grinder.data.ingest.tardis import tardis_batch
from grinder.data.instruments import resolve_instrument
from grinder.data.lake import Lake
from grinder.errors import DataError
from tests.conftest import write_capture
from tests.fixtures import make_fixtures as mf

BTC = resolve_instrument("binance-usdm", "BTCUSDT")


@settings(max_examples=80)
@given(
    lines=st.lists(st.binary(max_size=30).map(lambda b: b.replace(b"\n", b"")), max_size=40),
    end=st.booleans(),
    gz=st.booleans(),
    block=st.integers(1, 100),
)
def test_pieces_end_at_line_ends_and_join_to_the_file(tmp_path_factory, lines, end, gz, block):
    raw = b"\n".join(lines) + (b"\n" if end and lines else b"")
    # A file is gzip when it starts with gzip's magic bytes (iter_blocks sniffs, whatever its name): plain
    # bytes that start with them are a corrupt gzip file, the next test's case.
    assume(gz or not raw.startswith(b"\x1f\x8b"))
    path = tmp_path_factory.mktemp("src") / "f"
    path.write_bytes(gzip.compress(raw) if gz else raw)
    pieces = list(iter_blocks(path, block))
    assert b"".join(pieces) == raw
    assert all(p for p in pieces)
    assert all(p.endswith(b"\n") for p in pieces[:-1])
    # A piece holds whole lines only: at most one block past the line that started it.
    assert all(p.count(b"\n") <= 1 or len(p) <= block + max(len(x) for x in lines) + 1 for p in pieces)


def test_missing_and_truncated_files_are_errors(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        list(iter_blocks(tmp_path / "nope", 10))
    raw = gzip.compress(b"a line\n" * 10_000)
    cut = tmp_path / "cut.gz"
    cut.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataError, match="corrupt or truncated gzip") as e:
        list(iter_blocks(cut, 1 << 10))
    assert e.value.path == str(cut)


def test_file_lines_names_file_and_line(tmp_path):
    path_of = FileLines([tmp_path / "a", tmp_path / "b"])
    assert path_of((1 << FileLines.SHIFT) + 7) == (str(tmp_path / "b"), 7)
    assert path_of(3) == (str(tmp_path / "a"), 3)


def _non_decreasing_to(seen: list[tuple[int, int]], total: int) -> None:
    """`seen`, the (done, total) a progress callback was told, counts up to `total` and ends there."""
    assert seen and seen[-1] == (total, total)
    assert all(t == total for _, t in seen)
    assert all(0 <= a[0] <= b[0] <= total for a, b in zip(seen, seen[1:], strict=False))


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gz"])
def test_progress_counts_the_bytes_on_disk_read(tmp_path, gz):
    raw = b"".join(b"%d,some,csv,row,%d\n" % (i, i * 7919 % 10007) for i in range(40_000))
    path = tmp_path / ("f.gz" if gz else "f")
    path.write_bytes(gzip.compress(raw) if gz else raw)
    size = path.stat().st_size
    told: list[int] = []
    pieces = []
    for p in iter_blocks(path, 1 << 12, told.append):
        pieces.append(p)
        assert told[-1] < size  # the piece in hand is not counted as read yet
    assert b"".join(pieces) == raw
    # Compressed bytes for gzip (the file on disk), counted as the pieces are taken, ending at its size.
    assert told[0] == 0 and told[-1] == size and told == sorted(told) and len(set(told)) > 3

    # Two files read side by side (Tardis' book and trades) count into one total.
    other = tmp_path / "g"
    other.write_bytes(raw[: len(raw) // 3])
    seen: list[tuple[int, int]] = []
    reads = ByteProgress([path, other], lambda done, total: seen.append((done, total)), every=0)
    a, b = iter_blocks(path, 1 << 12, reads.reader(0)), iter_blocks(other, 1 << 12, reads.reader(1))
    for _ in zip(a, b, strict=False):
        pass
    list(a), list(b)
    _non_decreasing_to(seen, size + other.stat().st_size)
    assert len(seen) > 10

    # At most one call every `every` seconds, but always the last.
    seen.clear()
    reads = ByteProgress([path], lambda done, total: seen.append((done, total)), every=3600)
    list(iter_blocks(path, 1 << 12, reads.reader(0)))
    reads.finish()
    assert seen[-1] == (size, size) and len(seen) <= 2


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gz"])
def test_streamed_ingest_tells_progress_up_to_the_files_size(tmp_path, real_lines, gz):
    """Through `Lake.write` of a streamed batch: Binance (one file) and Tardis (two, read side by side)."""
    path = write_capture(tmp_path / "btcusdt.gz", real_lines)
    if not gz:
        path = tmp_path / "btcusdt"
        path.write_bytes(b"".join(real_lines))
    seen: list[tuple[int, int]] = []
    m = Lake(tmp_path / "lake").write(
        binance_batch([path], BTC, block_size=20_000, progress=lambda *a: seen.append(a)), [path]
    )
    assert m["report"]["rows"]["book"] > 0
    _non_decreasing_to(seen, path.stat().st_size)

    files = [mf.TARDIS_BOOK, mf.TARDIS_TRADES]
    if not gz:
        files = [tmp_path / f.name.removesuffix(".gz") for f in files]
        for f, src in zip(files, (mf.TARDIS_BOOK, mf.TARDIS_TRADES), strict=True):
            f.write_bytes(gzip.decompress(src.read_bytes()))
    seen.clear()
    batch = tardis_batch(files, BTC, block_size=50_000, progress=lambda *a: seen.append(a))
    told = Lake(tmp_path / "tardis").write(batch, files)
    _non_decreasing_to(seen, sum(f.stat().st_size for f in files))
    # Library callers pass nothing: no callback, the same lake.
    quiet = Lake(tmp_path / "quiet").write(tardis_batch(files, BTC, block_size=50_000), files)
    assert quiet["group"] == told["group"]
