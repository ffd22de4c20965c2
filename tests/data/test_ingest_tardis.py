"""Tardis.dev CSV ingest: the real fixture reproduces the Binance ingest; bad files name file and line."""

from __future__ import annotations

import gzip
import json
import re
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from grinder.book.check import replay_check
from grinder.data import lake as lake_module
from grinder.data.ingest import parse
from grinder.data.ingest.tardis import parse_tardis, tardis_batch
from grinder.data.instruments import resolve_instrument
from grinder.data.lake import Lake, StreamedBatch
from grinder.data.schema import BOOK, BOOK_DIFF, BOOK_RESET, BOOK_SNAPSHOT, SIDE_ASK, SIDE_BID, TRADES
from grinder.data.tape import load_tape
from grinder.errors import DataError
from tests.conftest import REPO
from tests.fixtures import make_fixtures as mf

BTC = resolve_instrument("binance-usdm", "BTCUSDT")
BOOK_CSV, TRADES_CSV = mf.TARDIS_BOOK, mf.TARDIS_TRADES
BOOK_HEADER = "exchange,symbol,timestamp,local_timestamp,is_snapshot,side,price,amount"
TRADE_HEADER = "exchange,symbol,timestamp,local_timestamp,id,side,price,amount"
T0 = 1_723_161_256_493_000  # µs
L0 = 1_723_161_255_319_702


@pytest.fixture(scope="module")
def batch():
    return parse_tardis([BOOK_CSV, TRADES_CSV], BTC)


def _np(table, col):
    return table.column(col).to_numpy()


# ---------------------------------------------------------------- real fixture


def test_fixture_is_what_make_fixtures_writes(truth, tmp_path):
    book, trades = truth
    mf.write_tardis(book, trades, tmp_path / "b.csv.gz", tmp_path / "t.csv.gz")
    assert gzip.decompress((tmp_path / "b.csv.gz").read_bytes()) == gzip.decompress(BOOK_CSV.read_bytes())
    assert gzip.decompress((tmp_path / "t.csv.gz").read_bytes()) == gzip.decompress(TRADES_CSV.read_bytes())


def test_book_equals_binance_ingest(batch, truth):
    exp, got = truth[0], batch.tables["book"]
    assert got.schema == BOOK
    assert got.num_rows == exp.num_rows
    for col in ("kind", "side", "price", "qty", "ts_exch"):
        np.testing.assert_array_equal(_np(got, col), _np(exp, col), err_msg=col)
    # Tardis has µs local times that never go backwards: the diffs Binance delivered before the
    # snapshot carry the snapshot's arrival time.
    exp_local = np.maximum.accumulate(_np(exp, "ts_local") // 1000) * 1000
    np.testing.assert_array_equal(_np(got, "ts_local"), exp_local)
    # Same messages (update ids are a counter here, Binance's u there), strictly increasing.
    uid, exp_uid = _np(got, "update_id"), _np(exp, "update_id")
    np.testing.assert_array_equal(np.diff(uid) != 0, np.diff(exp_uid) != 0)
    assert (np.diff(uid) >= 0).all() and uid[0] == 1
    assert (np.diff(_np(got, "seq")) > 0).all()
    kind = _np(got, "kind")
    assert kind[0] == BOOK_RESET and (kind == BOOK_RESET).sum() == 1
    assert (kind == BOOK_SNAPSHOT).sum() == 2000 and (kind == BOOK_DIFF).sum() > 50_000
    assert batch.report.rows == {"book": got.num_rows, "trades": truth[1].num_rows}
    assert batch.report.skipped == {}


def test_trades_equal_binance_ingest(batch, truth):
    exp, got = truth[1], batch.tables["trades"]
    assert got.schema == TRADES
    for col in ("ts_exch", "trade_id", "side", "price", "qty"):
        np.testing.assert_array_equal(_np(got, col), _np(exp, col), err_msg=col)
    np.testing.assert_array_equal(_np(got, "ts_local"), _np(exp, "ts_local") // 1000 * 1000)
    # seq is the arrival order across both files: ordering every row by seq orders it by local time.
    book = batch.tables["book"]
    seq = np.concatenate([_np(book, "seq"), _np(got, "seq")])
    local = np.concatenate([_np(book, "ts_local"), _np(got, "ts_local")])
    assert (np.diff(_np(got, "seq")) > 0).all() and np.unique(seq).size == seq.size
    assert (np.diff(local[np.argsort(seq)]) >= 0).all()
    # Trades interleave with book rows rather than all following the book file.
    assert _np(got, "seq")[0] < _np(book, "seq")[-1]


def test_lake_tape_replays_without_crossing(batch, tmp_path):
    Lake(tmp_path).write(batch, [BOOK_CSV, TRADES_CSV])
    tape = load_tape(tmp_path, "binance-usdm", "BTCUSDT")
    check = replay_check(tape)
    assert check.crossed == 0 and check.batches > 500
    assert len(tape) == batch.report.rows["book"] + batch.report.rows["trades"]
    # A window starting mid-file still gets a whole book (from the snapshot's reset).
    mid = int(_np(batch.tables["book"], "ts_exch")[30_000])
    part = load_tape(tmp_path, "binance-usdm", "BTCUSDT", start_ns=mid)
    assert part.kind[0] == BOOK_RESET and part.start > 2000
    assert replay_check(part).crossed == 0


def test_file_order_and_compression_do_not_matter_for_rows(batch, tmp_path):
    plain = tmp_path / "book.csv"
    plain.write_bytes(gzip.decompress(BOOK_CSV.read_bytes()))
    other = parse_tardis([TRADES_CSV, plain], BTC)  # trades first, book uncompressed
    for name in ("book", "trades"):
        a, b = other.tables[name], batch.tables[name]
        for col in a.column_names:
            if col != "seq":
                np.testing.assert_array_equal(_np(a, col), _np(b, col), err_msg=f"{name}.{col}")
    assert parse("tardis", [BOOK_CSV], BTC).report.rows["book"] == batch.report.rows["book"]


# ---------------------------------------------------------------- semantics on small files


def book_line(i=0, snap=False, side="bid", price="61800.2", amount="1.5", symbol="BTCUSDT", ts=None, loc=None):
    ts = T0 + i * 1000 if ts is None else ts
    loc = L0 + i * 1000 if loc is None else loc
    return f"binance-futures,{symbol},{ts},{loc},{'true' if snap else 'false'},{side},{price},{amount}"


def trade_line(i=0, tid="5266583939", side="sell", price="61800.2", amount="0.015", symbol="BTCUSDT", loc=None):
    loc = L0 + i * 1000 if loc is None else loc
    return f"binance-futures,{symbol},{T0 + i * 1000},{loc},{tid},{side},{price},{amount}"


def small_book() -> list[str]:
    """A valid little book file: 2-level snapshot each side, then three diff messages."""
    return [
        BOOK_HEADER,
        book_line(0, True, "bid", "61800.2", "2.909"),  # line 2
        book_line(0, True, "bid", "61800.1", "0.696"),
        book_line(0, True, "ask", "61800.3", "3.33"),
        book_line(0, True, "ask", "61800.4", "0.1"),
        book_line(1, False, "bid", "61800.2", "2.5"),  # line 6
        book_line(1, False, "ask", "61800.4", "0"),
        book_line(2, False, "ask", "61800.5", "0.2"),  # line 8
        book_line(3, False, "bid", "61800.1", "0.001"),  # line 9
    ]


def write(tmp_path, name, lines, gz=True, crlf=False):
    path = tmp_path / name
    text = ("\r\n" if crlf else "\n").join(lines) + ("\r\n" if crlf else "\n")
    path.write_bytes(gzip.compress(text.encode()) if gz else text.encode())
    return path


def test_small_book_rows_resets_and_messages(tmp_path):
    lines = small_book() + [
        book_line(9, True, "bid", "61700", "1"),  # a second snapshot mid-file: line 10
        book_line(9, True, "ask", "61700.1", "1"),
        book_line(10, False, "ask", "61700.1", "2"),
    ]
    path = write(tmp_path, "b.csv.gz", lines)
    book = parse_tardis([path], BTC).tables["book"]
    assert _np(book, "kind").tolist() == [2, 1, 1, 1, 1, 0, 0, 0, 0, 2, 1, 1, 0]
    assert _np(book, "side").tolist() == [0, 1, 1, -1, -1, 1, -1, -1, 1, 0, 1, -1, -1]
    assert _np(book, "update_id").tolist() == [1, 1, 1, 1, 1, 2, 2, 3, 4, 5, 5, 5, 6]
    assert _np(book, "price")[[0, 9]].tolist() == [0.0, 0.0] and _np(book, "qty")[6] == 0.0
    assert _np(book, "ts_exch")[9] == (T0 + 9000) * 1000 and _np(book, "ts_local")[9] == (L0 + 9000) * 1000
    seq = _np(book, "seq")
    # Only a book file: arrival order is row order; resets take the rank of the row they precede.
    assert seq[0] == 0 << 16 and seq[1] == (0 << 16) | 1 and seq[9] == 8 << 16 and (np.diff(seq) > 0).all()


def test_each_file_starting_with_a_snapshot_gets_a_reset(tmp_path):
    a = write(tmp_path, "a.csv.gz", small_book()[:5])  # snapshot only
    b = write(tmp_path, "b.csv", [BOOK_HEADER] + [book_line(5, True, "bid", "61800", "1")], gz=False)
    book = parse_tardis([a, b], BTC).tables["book"]
    assert _np(book, "kind").tolist() == [2, 1, 1, 1, 1, 2, 1]


def test_crlf_line_ends(tmp_path):
    path = write(tmp_path, "b.csv", small_book(), gz=False, crlf=True)
    assert parse_tardis([path], BTC).report.rows["book"] == 9


def test_other_symbols_are_skipped_and_counted(tmp_path):
    lines = small_book()
    lines.insert(6, book_line(1, False, "bid", "3000.01", "0.5", symbol="ETHUSDT"))  # off BTC's tick
    lines.insert(7, book_line(1, False, "bid", "3000.01", "0.5", symbol="ETHUSDT"))
    batch = parse_tardis([write(tmp_path, "b.csv.gz", lines)], BTC)
    assert batch.report.skipped == {"row for another symbol (ETHUSDT)": 2}
    assert batch.report.rows["book"] == 9


def test_unknown_side_trades_are_skipped_and_counted(tmp_path):
    lines = [TRADE_HEADER, trade_line(0, "1"), trade_line(1, "2", "unknown"), trade_line(2, "3", "buy")]
    batch = parse_tardis([write(tmp_path, "t.csv.gz", lines)], BTC)
    t = batch.tables["trades"]
    assert batch.report.skipped == {"trade with unknown aggressor side": 1}
    assert _np(t, "trade_id").tolist() == [1, 3] and _np(t, "side").tolist() == [SIDE_ASK, SIDE_BID]
    assert batch.report.rows == {"book": 0, "trades": 2}


def test_non_numeric_trade_ids_become_a_running_count(tmp_path):
    lines = [TRADE_HEADER, trade_line(0, "a1b2"), trade_line(1, "c3d4")]
    batch = parse_tardis([write(tmp_path, "t.csv.gz", lines)], BTC)
    assert _np(batch.tables["trades"], "trade_id").tolist() == [1, 2]
    assert any("not numeric" in n for n in batch.report.notes)


# ---------------------------------------------------------------- errors name file and line


def assert_error(paths, line, match):
    with pytest.raises(DataError, match=match) as e:
        parse_tardis(paths, BTC)
    assert e.value.path == str(paths[-1])
    assert e.value.line == line
    return e.value


def with_line(n: int, text: str, lines=None) -> list[str]:
    """small_book() with 1-based line `n` replaced."""
    lines = list(small_book() if lines is None else lines)
    lines[n - 1] = text
    return lines


@pytest.mark.parametrize(
    ("header", "match"),
    [
        ("exchange,symbol,timestamp,local_timestamp,is_snapshot,side,price", "missing column.*amount"),
        (BOOK_HEADER + ",extra", "unknown column.*extra"),
        (BOOK_HEADER.replace("amount", "size"), "missing column.*amount.*unknown column.*size"),
        (BOOK_HEADER + ",price", "duplicate column.*price"),
        ("a,b,c", "not a Tardis incremental_book_L2 or trades header"),
        (
            TRADE_HEADER.replace("local_timestamp", "local_ts"),
            "trades header: missing column.*local_timestamp",
        ),
    ],
)
def test_bad_header_names_line_1(tmp_path, header, match):
    path = write(tmp_path, "b.csv.gz", with_line(1, header))
    assert_error([path], 1, match)


@pytest.mark.parametrize(
    ("n", "text", "match"),
    [
        (4, book_line(0, True, "ask") + ",x", "expected 8 comma-separated fields, found 9"),
        (5, "binance-futures,BTCUSDT,1,2", "expected 8 comma-separated fields, found 4"),
        (6, "", "empty line"),
        (7, book_line(1, price="61800.x"), "column price: not a plain decimal number: '61800.x'"),
        (7, book_line(1, amount=""), "column amount: empty number"),
        (8, book_line(2).replace(str(T0 + 2000), "17231612565e5"), "column timestamp: .* is not an integer"),
        (9, book_line(3).replace("false", "maybe"), "column is_snapshot: 'maybe' is not true or false"),
        (6, book_line(1, side="buy"), "book side 'buy' is neither bid nor ask"),
        (7, book_line(1, price="nan"), "column price: not a finite number: 'nan'"),
        (7, book_line(1, price="0"), r"invalid price .*0\.0"),
        (
            7,
            book_line(1, price="-61800.2"),
            "column price: negative number '-61800.2' where only positive ones are valid",
        ),
        (8, book_line(2, amount="-0.2"), "column amount: negative number '-0.2'"),
        (8, book_line(2, price="61800.25"), "not a multiple of the tick size"),
        (9, book_line(3, amount="0.0015"), "not a multiple of the lot size"),
        (9, book_line(3, loc=L0), "book local timestamps go backwards"),
        (8, book_line(2, ts=T0 // 1000), "timestamp 1723161256493 is not microseconds"),
        (8, book_line(2, loc=(L0 + 2000) * 1000), "local_timestamp .* is not microseconds"),
        # the shared number grammar (grinder.data.ingest.numbers)
        (7, book_line(1, price="6.18002e4"), "column price: exponent in number '6.18002e4'"),
        (7, book_line(1, price="+61800.2"), "column price: leading '[+]' in number '[+]61800.2'"),
        (7, book_line(1, price="inf"), "column price: not a finite number: 'inf'"),
        (7, book_line(1, price="6_1800.2"), "column price: '_' in number '6_1800.2'"),
        (7, book_line(1, amount="١.٥"), "column amount: non-ASCII character in number '١.٥'"),
        (7, book_line(1, price="1" + "0" * 309), "column price: number .* out of range"),
        (7, book_line(1, amount="0." + "0" * 29 + "1"), "column amount: number .* has more than 18 decimals"),
        (
            8,
            book_line(2, ts=2**63),
            r"column timestamp: '9223372036854775808' is not an integer within 0 \.\. 2\*\*63-1",
        ),
        # 1973 and 2100 in µs: plausible magnitudes, outside the sane range
        (8, book_line(2, ts=10**14), "timestamp [(]µs[)] 100000000000000 is outside the sane range 2017-01-01"),
        (8, book_line(2, loc=4_102_444_800_000_000), "local_timestamp [(]µs[)] 4102444800000000 is outside the sane"),
        # a bid above the best ask (61800.3): the book crosses, by the rule of `grinder data check`
        (8, book_line(2, False, "bid", "61800.6", "0.2"), "book crossed: best bid >= best ask after this message"),
    ],
)
def test_bad_book_row_names_file_and_line(tmp_path, n, text, match):
    path = write(tmp_path, "b.csv.gz", with_line(n, text))
    assert_error([path], n, match)


@pytest.mark.parametrize(
    ("n", "text", "match"),
    [
        (3, trade_line(1, "7", "both"), "trade side 'both' is not buy, sell or unknown"),
        (3, trade_line(1, "7", amount="0"), r"trade: invalid quantity .*0\.0"),
        (4, trade_line(2, "8", price="abc"), "column price: not a plain decimal number: 'abc'"),
        (4, trade_line(2, "8", loc=L0 - 1), "trade local timestamps go backwards"),
    ],
)
def test_bad_trade_row_names_file_and_line(tmp_path, n, text, match):
    lines = [TRADE_HEADER, trade_line(0, "6"), trade_line(1, "7"), trade_line(2, "8")]
    path = write(tmp_path, "t.csv.gz", with_line(n, text, lines))
    assert_error([path], n, match)


def test_errors_in_a_later_file_name_that_file(tmp_path):
    a = write(tmp_path, "a.csv.gz", small_book())
    b = write(tmp_path, "b.csv.gz", [BOOK_HEADER, book_line(20), book_line(21, price="61800.27")])
    assert_error([a, b], 3, "tick size")
    # The stream continues across files: the second file must not go back in local time.
    c = write(tmp_path, "c.csv.gz", [BOOK_HEADER, book_line(20), book_line(0)])
    assert_error([a, c], 3, "go backwards")
    d = write(tmp_path, "d.csv.gz", [BOOK_HEADER, book_line(2)])
    assert_error([a, d], 2, "go backwards")


def test_book_and_trade_files_are_ordered_separately(tmp_path):
    a = write(tmp_path, "a.csv.gz", small_book())
    t = write(tmp_path, "t.csv.gz", [TRADE_HEADER, trade_line(0, "1"), trade_line(1, "2")])
    assert parse_tardis([a, t], BTC).report.rows == {"book": 9, "trades": 2}


def test_truncated_gzip_names_the_file(tmp_path):
    raw = BOOK_CSV.read_bytes()
    path = tmp_path / "cut.csv.gz"
    path.write_bytes(raw[: len(raw) // 2])
    e = assert_error([path], None, "truncated gzip")
    assert e.path == str(path)


def test_empty_file_and_no_rows(tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    assert assert_error([empty], None, "empty file").path == str(empty)
    header_only = write(tmp_path, "h.csv", [BOOK_HEADER], gz=False)
    assert assert_error([header_only], None, "no market data for BTCUSDT").path == str(header_only)


def test_quoted_header_names_are_accepted(tmp_path):
    lines = small_book()
    quoted = ",".join(f'"{c}"' for c in lines[0].split(","))
    plain = parse_tardis([write(tmp_path, "a.csv", lines, gz=False)], BTC).tables["book"]
    got = parse_tardis([write(tmp_path, "b.csv", [quoted] + lines[1:], gz=False)], BTC).tables["book"]
    assert got.equals(plain)


# ---------------------------------------------------------------- streaming (decision 045)

WHOLE = 1 << 30  # a block size larger than any test file: one chunk, the whole-file read


def _same(a, b):
    for name in a.tables:
        assert a.tables[name].equals(b.tables[name]), name
    assert a.report.to_dict() == b.report.to_dict()


def _lake_files(root):
    """{relative path: bytes} of every file in a lake (the manifest's time stamp blanked)."""
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and p.name != ".lock":
            data = p.read_bytes()
            if p.parent.name == "_ingest":
                m = json.loads(data)
                m.pop("ingested_at")
                data = json.dumps(m).encode()
            out[str(p.relative_to(root))] = data
    return out


@pytest.mark.parametrize("block", [2_000, 50_000])
def test_chunked_read_equals_whole_file_on_the_fixture(batch, block):
    # ~25 and ~600 rows a chunk: boundaries inside snapshots, messages and the merge with the trades.
    _same(batch, parse_tardis([BOOK_CSV, TRADES_CSV], BTC, block_size=block))


def test_streamed_lake_is_the_whole_file_lake_byte_for_byte(batch, tmp_path):
    # The lake the whole-file batch makes (Lake.write of its tables, as before streaming) and the
    # one tardis_batch streams chunk by chunk: same part files, bytes, manifest (group id 18bf8e9bd3aac294
    # is what the whole-file reader of 4c1e0a1 wrote for this fixture: rows, order and ids unchanged).
    m1 = Lake(tmp_path / "whole").write(batch, [BOOK_CSV, TRADES_CSV])
    streamed = tardis_batch([BOOK_CSV, TRADES_CSV], BTC, block_size=3_000)
    m2 = Lake(tmp_path / "streamed").write(streamed, [BOOK_CSV, TRADES_CSV])
    assert m1["group"] == m2["group"] == "18bf8e9bd3aac294"
    assert _lake_files(tmp_path / "whole") == _lake_files(tmp_path / "streamed")
    assert not (tmp_path / "streamed" / ".spool").exists()


def test_parse_streams_into_the_lake(tmp_path):
    b = parse("tardis", [BOOK_CSV], BTC)
    assert isinstance(b, StreamedBatch) and b.streaming
    m = Lake(tmp_path).write(b, [BOOK_CSV])
    assert m["report"]["rows"]["book"] == b.report.rows["book"] > 0 and not b.streaming


_row = st.tuples(
    st.integers(0, 3),  # local-time step (µs); 0 keeps rows in one message
    st.booleans(),  # side: bid/ask (trades: buy/sell)
    st.integers(1, 40),  # ticks away from the mid
    st.integers(0, 9),  # lots (0 removes a book level)
    st.sampled_from(["BTCUSDT"] * 8 + ["ETHUSDT"]),  # now and then another symbol's row
)


@st.composite
def tardis_files(draw):
    """1-3 book files (snapshots at their start and mid-file) and 0-2 trade files: never crossed."""
    files, loc = [], L0
    for k in range(draw(st.integers(1, 3))):
        lines = [BOOK_HEADER]
        for _ in range(draw(st.integers(1, 4))):
            n = draw(st.integers(1, 4))  # a snapshot of n levels each side ...
            for i in range(n):
                lines.append(book_line(ts=loc, loc=loc, snap=True, side="bid", price=f"{61800 - i - 1}.0"))
                lines.append(book_line(ts=loc, loc=loc, snap=True, side="ask", price=f"{61800 + i + 1}.0"))
            for step, bid, d, lots, sym in draw(st.lists(_row, max_size=25)):  # ... then diffs
                loc += step
                px = f"{61800 - d if bid else 61800 + d}.0"
                lines.append(
                    book_line(ts=loc, loc=loc, side="bid" if bid else "ask", price=px, amount=f"{lots}.0", symbol=sym)
                )
            loc += 1
        files.append(("book", k, lines))
    tl = L0
    for k in range(draw(st.integers(0, 2))):
        lines = [TRADE_HEADER]
        for step, _buy, d, lots, sym in draw(st.lists(_row, max_size=30)):
            tl += step
            side = draw(st.sampled_from(["buy", "sell", "unknown"]))
            lines.append(
                trade_line(tid=str(tl), side=side, price=f"{61800 + d}.0", amount=f"{lots + 1}.0", symbol=sym, loc=tl)
            )
        files.append(("trades", k, lines))
    return draw(st.permutations(files))


@settings(max_examples=60)
@given(files=tardis_files(), block=st.integers(1, 400), gz=st.booleans())
def test_any_chunking_equals_the_whole_file_read(tmp_path_factory, files, block, gz):
    d = tmp_path_factory.mktemp("chunks")
    paths = [write(d, f"{kind}{k}.csv{'.gz' if gz else ''}", lines, gz=gz) for kind, k, lines in files]
    try:
        whole = parse_tardis(paths, BTC, block_size=WHOLE)
    except DataError as e:  # no rows of ours at all: the chunked read says the same
        with pytest.raises(DataError, match=re.escape(str(e.args[0]))):
            parse_tardis(paths, BTC, block_size=block)
        return
    _same(whole, parse_tardis(paths, BTC, block_size=block))


def test_error_deep_in_a_big_file_leaves_the_lake_untouched(batch, tmp_path, monkeypatch):
    monkeypatch.setattr(lake_module, "ROW_GROUP", 1000)  # part files are being written when the error comes
    root = tmp_path / "lake"
    Lake(root).write(batch, [BOOK_CSV, TRADES_CSV])
    before = _lake_files(root)
    lines = [BOOK_HEADER, *(book_line(0, True, s, p) for s, p in (("bid", "61800.1"), ("ask", "61800.3")))]
    lines += [book_line(1 + i // 4, False, "bid", f"{61790 + i % 4}.0", "1") for i in range(40_000)]
    bad_line = 40_000  # 1-based, in the last chunk of ~100
    lines[bad_line - 1] = lines[bad_line - 1].replace(",1\n", ",1").rsplit(",", 1)[0] + ",1e3"
    path = write(tmp_path, "big.csv.gz", lines)
    with pytest.raises(DataError, match="column amount") as e:
        Lake(root).write(tardis_batch([path], BTC, block_size=1 << 15), [path])
    assert (e.value.path, e.value.line) == (str(path), bad_line)
    assert "\n" not in str(e.value)
    assert _lake_files(root) == before
    assert sorted(p.name for p in root.iterdir()) == [".lock", "_ingest", "book", "instruments", "trades"]
    # A crossed book is only known at the end: it too leaves nothing behind.
    crossed = lines[: bad_line - 1] + [book_line(20_000, False, "ask", "61700.0", "1")]
    path = write(tmp_path, "crossed.csv.gz", crossed)
    with pytest.raises(DataError, match="book crossed") as e:
        Lake(root).write(tardis_batch([path], BTC, block_size=1 << 15), [path])
    assert e.value.line == bad_line
    assert _lake_files(root) == before and not (root / ".spool").exists()


# The child ingests one generated file with small row groups and chunks, so that both sizes run
# in the steady state the bench (bench/ingest_memory.py) measures at full size.
_CHILD = r"""
import resource, sys
from pathlib import Path
import grinder.data.lake as lake
lake.ROW_GROUP = 1 << 15
from grinder.data.ingest.tardis import tardis_batch
from grinder.data.instruments import resolve_instrument
p = Path(sys.argv[1])
m = lake.Lake(sys.argv[2]).write(tardis_batch([p], resolve_instrument("binance-usdm", "BTCUSDT"), 1 << 20), [p])
print(sum(m["report"]["rows"].values()), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def test_peak_memory_does_not_grow_with_the_file(tmp_path):
    sys.path.insert(0, str(REPO / "bench"))
    try:
        from ingest_memory import write_tardis
    finally:
        sys.path.remove(str(REPO / "bench"))
    peaks = {}
    for mb in (15, 150):
        path = tmp_path / f"book{mb}.csv"
        rows = write_tardis(path, mb * 1_000_000)
        out = subprocess.run(
            [sys.executable, "-c", _CHILD, str(path), str(tmp_path / f"lake{mb}")],
            capture_output=True,
            text=True,
            check=True,
            cwd=REPO,
        ).stdout.split()
        assert int(out[0]) == rows + 1  # and one reset before the snapshot
        peaks[mb] = int(out[1])  # KiB
        path.unlink()
    assert peaks[150] < 1.2 * peaks[15], peaks
