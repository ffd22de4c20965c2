"""Binance raw captures: every real window syncs, never crosses and matches the venue's BBO."""

from __future__ import annotations

import gzip
import re

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from grinder.book.check import replay_check
from grinder.data import lake as lake_module
from grinder.data.ingest.binance import binance_batch, parse_binance
from grinder.data.instruments import resolve_instrument
from grinder.data.lake import Lake
from grinder.data.schema import BOOK_DIFF, BOOK_RESET, BOOK_SNAPSHOT
from grinder.data.tape import load_tape
from grinder.errors import DataError
from tests.conftest import WINDOWS, write_capture

BTC = resolve_instrument("binance-usdm", "BTCUSDT")


@pytest.fixture(scope="module")
def ingested(real_dir, tmp_path_factory):
    """Each real window ingested into its own lake: {name: (batch, lake root)}."""
    out = {}
    for name, (files, symbol, _, _) in WINDOWS.items():
        root = tmp_path_factory.mktemp(name)
        paths = [real_dir / f for f in files]
        batch = parse_binance(paths, resolve_instrument("binance-usdm", symbol))
        Lake(root).write(batch, paths)
        out[name] = (batch, root)
    return out


@pytest.mark.parametrize("name", list(WINDOWS))
def test_real_window_syncs_without_gaps_and_matches_bbo(ingested, name):
    batch, root = ingested[name]
    files, symbol, depth_levels, trades = WINDOWS[name]
    rep = batch.report
    assert rep.gaps == []
    kind = batch.tables["book"].column("kind").to_numpy()
    # Every depth level of the capture is either in the lake or counted as skipped, with a reason.
    skipped_levels = sum(n for reason, n in rep.skipped.items() if reason.startswith("depth level"))
    assert (kind == BOOK_DIFF).sum() + skipped_levels == depth_levels
    assert (kind == BOOK_SNAPSHOT).sum() == 2000 and (kind == BOOK_RESET).sum() == 1
    assert rep.rows["trades"] + sum(n for r, n in rep.skipped.items() if r.startswith("trade")) == trades
    check = replay_check(load_tape(root, "binance-usdm", symbol))
    assert check.crossed == 0
    assert check.bbo_checked > 500
    assert check.bbo_matched == check.bbo_checked
    if name == "btcusdt_20240808":
        assert (check.bbo_checked, check.bbo_matched) == (629, 629)


def test_2023_local_times_are_microseconds_scaled_to_ns(ingested):
    batch, _ = ingested["btcusdt_20230404"]
    book = batch.tables["book"]
    lag_ms = (book.column("ts_local").to_numpy() - book.column("ts_exch").to_numpy()) / 1e6
    # README: in 2023 local - exchange time is about 0 ms (p5 -19, p95 +26).
    assert -100 < np.median(lag_ms) < 100
    funding = batch.tables["funding"]
    assert funding.num_rows == 514 and (funding.column("next_funding_ts").to_numpy() % 3_600_000_000_000 == 0).all()


def test_2024_recorder_clock_runs_behind(ingested):
    book = ingested["btcusdt_20240808"][0].tables["book"]
    lag_s = (book.column("ts_local").to_numpy() - book.column("ts_exch").to_numpy()) / 1e9
    assert -1.4 < np.median(lag_s) < -1.1  # README: about -1.27 s on 2024-08-08


def test_bridging_diff_before_snapshot_is_applied_after_it(ingested):
    book = ingested["btcusdt_20240808"][0].tables["book"].to_pandas()
    snap_id = int(book.loc[book.kind == BOOK_SNAPSHOT, "update_id"].iloc[0])
    first_diff = book[book.kind == BOOK_DIFF].iloc[0]
    # In this file the bridging diff (line 42) arrives before the snapshot (line 55).
    assert first_diff.update_id >= snap_id
    assert int(first_diff.seq) >> 16 < int(book.loc[book.kind == BOOK_SNAPSHOT, "seq"].iloc[0]) >> 16
    assert book.index[book.kind == BOOK_DIFF][0] > book.index[book.kind == BOOK_SNAPSHOT][-1]


def test_compiled_scanner_equals_orjson_path(real_dir):
    paths = [real_dir / "btcusdt_20230404.dat.gz"]
    fast = parse_binance(paths, BTC, compiled=True)
    slow = parse_binance(paths, BTC, compiled=False)
    for name in fast.tables:
        assert fast.tables[name].equals(slow.tables[name]), name
    assert fast.report.to_dict() == slow.report.to_dict()


# --- sequence gaps --------------------------------------------------------------------------------


def _depth_line_numbers(lines):
    return [i for i, line in enumerate(lines) if b"@depth" in line[:80]]


def _snapshot_from_book(lines, upto_line, snapshot_line):
    """A REST-style snapshot line equal to the book after applying lines[:upto_line] in sync order."""
    snap = orjson.loads(lines[snapshot_line].split(b" ", 1)[1])
    book = {"b": {p: q for p, q in snap["bids"]}, "a": {p: q for p, q in snap["asks"]}}
    last_u = None
    for line in lines[:upto_line]:
        msg = orjson.loads(line.split(b" ", 1)[1])
        d = msg.get("data")
        if not d or d.get("e") != "depthUpdate" or d["u"] < snap["lastUpdateId"]:
            continue
        for side in "ba":
            for p, q in d[side]:
                if float(q) == 0:
                    book[side].pop(p, None)
                else:
                    book[side][p] = q
        last_u = d["u"]
    bids = sorted(book["b"].items(), key=lambda x: -float(x[0]))
    asks = sorted(book["a"].items(), key=lambda x: float(x[0]))
    local = lines[upto_line - 1].split(b" ", 1)[0]
    body = {
        "lastUpdateId": last_u,
        "E": 0,
        "T": orjson.loads(lines[upto_line - 1].split(b" ", 1)[1])["data"]["T"],
        "bids": [list(x) for x in bids],
        "asks": [list(x) for x in asks],
    }
    return local + b" " + orjson.dumps(body)


def test_sequence_gap_is_reported_and_book_resyncs_from_next_snapshot(real_lines, tmp_path):
    lines = list(real_lines)
    depth = _depth_line_numbers(lines)
    snap_line = next(i for i, line in enumerate(lines) if b"lastUpdateId" in line)
    after = [i for i in depth if i > snap_line]
    dropped = after[10]
    resync_at = after[40]
    snapshot = _snapshot_from_book(lines, resync_at, snap_line)
    cut = lines[:dropped] + lines[dropped + 1 : resync_at] + [snapshot] + lines[resync_at:]
    path = write_capture(tmp_path / "btcusdt_gap.gz", cut)
    batch = parse_binance([path], BTC)
    gaps = batch.report.gaps
    assert len(gaps) == 1
    # The gap is seen at the next diff: 0-based after[11] before the cut, so 1-based after[11] now.
    assert gaps[0].startswith(f"{path}:{after[11]}: sequence gap")
    book = batch.tables["book"].to_pandas()
    resets = book.index[book.kind == BOOK_RESET]
    assert len(resets) == 3  # initial snapshot, gap, resync snapshot
    # No diff is applied between the gap and the resync snapshot.
    between = book.iloc[resets[1] + 1 : resets[2]]
    assert len(between) == 0
    assert batch.report.skipped["depth level in a diff older than the snapshot"] > 0
    root = tmp_path / "lake"
    Lake(root).write(batch, [path])
    check = replay_check(load_tape(root, "binance-usdm", "BTCUSDT"))
    assert check.crossed == 0 and check.bbo_checked > 0 and check.bbo_matched == check.bbo_checked


# --- bad input ------------------------------------------------------------------------------------


def _bad(tmp_path, lines, name="btcusdt_bad.gz"):
    return write_capture(tmp_path / name, lines)


def _replace_in_first(lines, needle: bytes, old: bytes, new: bytes):
    """Copy of lines with the first line containing `needle` edited; returns (lines, 1-based line)."""
    out = list(lines)
    i = next(k for k, line in enumerate(out) if needle in line and k > 60)
    out[i] = out[i].replace(old, new, 1)
    return out, i + 1


def test_truncated_gzip_names_the_file(real_dir, tmp_path):
    raw = (real_dir / "btcusdt_20240808.gz").read_bytes()
    path = tmp_path / "btcusdt_trunc.gz"
    path.write_bytes(raw[: len(raw) // 3])
    with pytest.raises(DataError, match="corrupt or truncated gzip") as e:
        parse_binance([path], BTC)
    assert e.value.path == str(path)


def test_malformed_json_names_file_and_line(real_lines, tmp_path):
    lines, ln = _replace_in_first(real_lines[:300], b"@trade", b'"p":"', b'"p":')
    path = _bad(tmp_path, lines)
    with pytest.raises(DataError, match="malformed JSON") as e:
        parse_binance([path], BTC)
    assert (e.value.path, e.value.line) == (str(path), ln)


@pytest.mark.parametrize(
    "needle,old,new,match",
    [
        (b"@trade", b'"p":"', b'"p":"-', "trade: negative number '-61800.20' where only positive ones are valid"),
        (b"@trade", b'"q":"', b'"q":"NaN', "trade: not a plain decimal number: 'NaN"),
        (b"@depth", b'"b":[["', b'"b":[["NaN', "depth level: not a plain decimal number: 'NaN"),
        (b"@bookTicker", b'"b":"', b'"b":"-1', "bookTicker: negative number '-1"),
        (b"@depth", b'"a":[["', b'"a":[["61900.05","1.000"],["', "not a multiple of the tick size"),
    ],
)
def test_bad_numbers_name_file_and_line(real_lines, tmp_path, needle, old, new, match):
    lines, ln = _replace_in_first(real_lines[:300], needle, old, new)
    path = _bad(tmp_path, lines)
    with pytest.raises(DataError, match=match) as e:
        parse_binance([path], BTC)
    assert (e.value.path, e.value.line) == (str(path), ln)


def test_unsorted_local_times_name_file_and_line(real_lines, tmp_path):
    lines = list(real_lines[:300])
    ts, rest = lines[200].split(b" ", 1)
    lines[200] = str(int(ts) - 10_000_000_000).encode() + b" " + rest
    path = _bad(tmp_path, lines)
    with pytest.raises(DataError, match="local timestamps go backwards") as e:
        parse_binance([path], BTC)
    assert (e.value.path, e.value.line) == (str(path), 201)


def test_line_without_timestamp_names_file_and_line(real_lines, tmp_path):
    lines = list(real_lines[:100])
    lines[70] = lines[70].split(b" ", 1)[1]
    path = _bad(tmp_path, lines)
    with pytest.raises(DataError, match="expected '<local timestamp> <json>'") as e:
        parse_binance([path], BTC)
    assert e.value.line == 71


def test_other_symbol_and_unknown_streams_are_counted_not_dropped(real_lines, tmp_path):
    lines = list(real_lines[:300])
    lines[100] = lines[100].replace(b'"s":"BTCUSDT"', b'"s":"ETHUSDT"').replace(b'"btcusdt@', b'"ethusdt@')
    lines.insert(150, lines[150].split(b" ")[0] + b' {"stream":"btcusdt@kline_1m","data":{"e":"kline"}}\n')
    batch = parse_binance([_bad(tmp_path, lines)], BTC)
    assert any(r.startswith("message for another symbol (ETHUSDT)") for r in batch.report.skipped)
    assert batch.report.skipped["unhandled message (btcusdt@kline_1m)"] == 1


def test_gzip_and_plain_text_give_the_same_rows(real_lines, tmp_path):
    gz = _bad(tmp_path, real_lines[:500], "btcusdt_a.gz")
    plain = tmp_path / "btcusdt_a.txt"
    plain.write_bytes(gzip.decompress(gz.read_bytes()))
    a, b = parse_binance([gz], BTC), parse_binance([plain], BTC)
    assert all(a.tables[t].equals(b.tables[t]) for t in a.tables)


def test_window_after_midnight_warms_up_from_the_previous_days_snapshot(ingested):
    _, root = ingested["btcusdt_20240718"]
    start = int(np.datetime64("2024-07-19T00:02:00", "ns").astype(np.int64))
    tape = load_tape(root, "binance-usdm", "BTCUSDT", start, start + 60_000_000_000)
    # The snapshot was taken on 2024-07-18 at 23:57; the book partition of that day is read too.
    assert tape.kind[0] == BOOK_RESET and tape.ts_exch[0] < start - 120_000_000_000
    check = replay_check(tape)
    assert check.crossed == 0 and check.bbo_checked > 0 and check.bbo_matched == check.bbo_checked


# --- hostile input: one grammar, one error naming file:line, the same on both parse paths ----------


def _edit(lines, needle: bytes, pattern: bytes, repl: bytes):
    """Copy of lines with `pattern` substituted once in the first line after the snapshot holding `needle`."""
    out = list(lines)
    i = next(k for k, line in enumerate(out) if needle in line and k > 60)
    edited = re.sub(pattern, repl, out[i], count=1)
    assert edited != out[i], (pattern, out[i][:200])
    out[i] = edited
    return out, i + 1


def _error_on_both_paths(path, inst=BTC) -> DataError:
    """The error parse_binance raises, asserted equal with and without the compiled scanner."""
    errors = []
    for compiled in (True, False):
        with pytest.raises(DataError) as e:
            parse_binance([path], inst, compiled=compiled)
        errors.append(e.value)
    assert str(errors[0]) == str(errors[1])
    return errors[0]


TRADE_P = rb'"p":"[^"]*"'
LEVEL_P = rb'"b":\[\["[^"]*"'

# Malformed decimals, each in a trade price and in a depth level's price.
MALFORMED = [
    ("6.18002e4", "exponent in number '6.18002e4'"),
    ("1" + "0" * 309, "out of range (more than 18 integer digits)"),
    ("0." + "0" * 29 + "1", "has more than 18 decimals"),
    ("6_1800.20", "'_' in number '6_1800.20'"),
    ("٦١٨٠٠.٢٠", "non-ASCII character in number '٦١٨٠٠.٢٠'"),
    ("inf", "not a finite number: 'inf'"),
    ("NaN", "not a finite number: 'NaN'"),
    ("+61800.20", "leading '+' in number '+61800.20'"),
    ("", "empty number"),
    ("-61800.20", "negative number '-61800.20' where only positive ones are valid"),
]


@pytest.mark.parametrize(("value", "reason"), MALFORMED)
@pytest.mark.parametrize(
    ("needle", "pattern", "what"), [(b"@trade", TRADE_P, "trade"), (b"@depth", LEVEL_P, "depth level")]
)
def test_malformed_decimal_is_one_error_naming_file_and_line(
    real_lines, tmp_path, value, reason, needle, pattern, what
):
    field = b'"p":"' if needle == b"@trade" else b'"b":[["'
    lines, ln = _edit(real_lines[:300], needle, pattern, field + value.encode() + b'"')
    path = _bad(tmp_path, lines)
    e = _error_on_both_paths(path)
    assert str(e) == f"{path}:{ln}: {what}: {reason}" or (
        reason in str(e) and str(e).startswith(f"{path}:{ln}: {what}: ")
    )


@pytest.mark.parametrize(
    ("needle", "pattern", "repl", "message"),
    [
        # JSON numbers where Binance sends decimal strings
        (b"@trade", TRADE_P, b'"p":61800.2', "trade: JSON number 61800.2 where the venue sends a decimal string"),
        (
            b"@depth",
            LEVEL_P,
            b'"b":[[61800.2',
            "depth level: JSON number 61800.2 where the venue sends a decimal string",
        ),
        # strings (or floats) where Binance sends integers; ids beyond int64
        (b"@trade", rb'"T":(\d+)', rb'"T":"\1"', "field 'T' is a string ('1723161256671'), not an integer"),
        (b"@depth", rb'"u":(\d+)', rb'"u":"\1"', "field 'u' is a string ('5123107860939'), not an integer"),
        (b"@trade", rb'"t":\d+', b'"t":9223372036854775808', "field 't' = 9223372036854775808 is outside 0 .. 2**63-1"),
        (
            b"@trade",
            rb'"t":\d+',
            b'"t":18446744073709551616',
            "field 't' is a number (1.8446744073709552e+19), not an integer",
        ),
        (b"@depth", rb'"pu":\d+', b'"pu":-1', "field 'pu' = -1 is outside 0 .. 2**63-1"),
        (
            b"@bookTicker",
            rb'"u":\d+',
            b'"u":5123107859476.0',
            "field 'u' is a number (5123107859476.0), not an integer",
        ),
        # missing fields, wrong types
        (b"@depth", rb',"pu":\d+', b"", "message lacks field 'pu'"),
        (b"@trade", rb',"q":"[^"]*"', b"", "message lacks field 'q'"),
        (b"@trade", rb'"m":true', b'"m":"true"', "field 'm' is a string ('true'), not a boolean"),
        (b"@trade", rb'"s":"BTCUSDT"', b'"s":1', "field 's' is an integer (1), not a string"),
        (
            b"@depth",
            rb'"b":\[\[',
            b'"b":[["1.0","2.0","3.0"],[',
            "field 'b' holds ['1.0', '2.0', '3.0'], not a [price, quantity] pair",
        ),
        (b"@depth", rb'"a":\[', b'"a":"x","c":[', "field 'a' is a string ('x'), not an array"),
        # exchange times in 1970 and 2100
        (
            b"@trade",
            rb'"T":\d+',
            b'"T":1000',
            "trade exchange time T (ms) 1000 is outside the sane range 2017-01-01 .. now + 1 day",
        ),
        (
            b"@trade",
            rb'"T":\d+',
            b'"T":4102444800000',
            "trade exchange time T (ms) 4102444800000 is outside the sane range",
        ),
        (b"@depth", rb'"T":\d+', b'"T":0', "depth exchange time T (ms) 0 is outside the sane range"),
        (b"@bookTicker", rb'"T":\d+', b'"T":4102444800000', "bookTicker exchange time T (ms) 4102444800000 is outside"),
        # a local time in 1973 in a nanosecond capture; one beyond int64
        (b"@trade", rb"^\d+", b"100000000000000000", "local timestamp 100000000000000000 is outside the sane range"),
        (b"@trade", rb"^\d+", b"9223372036854775808", "local timestamp 9223372036854775808 is beyond int64"),
        (b"@trade", rb"^\d+", b"1_723161255401663366", "expected '<local timestamp> <json>'"),
        # a byte that is not UTF-8 where the compiled scanner skips over the stream name
        (b"@trade", rb'"btcusdt@trade"', b'"btcusdt@tr\xffade"', "malformed JSON: str is not valid UTF-8"),
        # the stream name and "s" disagree about the symbol
        (
            b"@trade",
            rb'"btcusdt@trade"',
            b'"ethusdt@trade"',
            "stream 'ethusdt@trade' carries a message for symbol 'BTCUSDT'",
        ),
        # a price beyond 2**53 ticks; a quantity below one lot
        (b"@trade", TRADE_P, b'"p":"100000000000000000.0"', "trade: price 1e+17 is out of range for the tick size 0.1"),
        (b"@trade", rb'"q":"[^"]*"', b'"q":"0.0000000001"', "trade: quantity 1e-10 is not a multiple of the lot size"),
        # a bid above the best ask: the book crosses (the rule of `grinder data check`)
        (b"@depth", rb'"b":\[', b'"b":[["99999.90","1.000"],', "book crossed: best bid >= best ask after this message"),
    ],
)
def test_hostile_line_is_one_error_naming_file_and_line(real_lines, tmp_path, needle, pattern, repl, message):
    lines, ln = _edit(real_lines[:300], needle, pattern, repl)
    path = _bad(tmp_path, lines)
    e = _error_on_both_paths(path)
    assert str(e).startswith(f"{path}:{ln}: ") and message in str(e), str(e)
    assert "\n" not in str(e)


MARK = (
    b'{"stream":"btcusdt@markPrice@1s","data":{"e":"markPriceUpdate","E":1723161256700,"s":"BTCUSDT",'
    b'"p":"61800.27373413","P":"61800.15563565","i":"61801.75642857","r":"RATE","T":1723190400000}}'
)


def _with_mark(real_lines, rate: bytes, price: bytes = b"61800.27373413"):
    lines = list(real_lines[:300])
    local = lines[80].split(b" ", 1)[0]
    lines.insert(81, local + b" " + MARK.replace(b"RATE", rate).replace(b"61800.27373413", price) + b"\n")
    return lines


@pytest.mark.parametrize(
    ("rate", "price", "message"),
    [
        (b"-1e-4", b"61800.27373413", "markPrice funding rate: exponent in number '-1e-4'"),
        (b"+0.0001", b"61800.27373413", "markPrice funding rate: leading '+' in number '+0.0001'"),
        (b"0.0001", b"-61800.27373413", "markPrice: negative number '-61800.27373413'"),
    ],
)
def test_malformed_mark_price_line(real_lines, tmp_path, rate, price, message):
    # A negative funding rate is Binance's grammar; the same line with a malformed number is not.
    good = _bad(tmp_path, _with_mark(real_lines, b"-0.00010000"), "btcusdt_good.gz")
    fast, slow = parse_binance([good], BTC, compiled=True), parse_binance([good], BTC, compiled=False)
    assert all(fast.tables[name].equals(slow.tables[name]) for name in fast.tables)
    assert fast.tables["funding"].column("funding_rate").to_pylist() == [-0.0001]
    path = _bad(tmp_path, _with_mark(real_lines, rate, price))
    e = _error_on_both_paths(path)
    assert str(e) == f"{path}:82: {message}" or str(e).startswith(f"{path}:82: {message}")


def test_snapshot_of_another_symbols_capture_is_an_error(real_lines, tmp_path):
    path = _bad(tmp_path, real_lines[:300])
    e = _error_on_both_paths(path, resolve_instrument("binance-usdm", "ETHUSDT"))
    assert str(e) == (
        f"{path}:55: depth snapshot (which names no symbol) in a capture whose depth diffs are for BTCUSDT, "
        "none for ETHUSDT: is --symbol BTCUSDT meant?"
    )


# --- streaming (decision 045) ---------------------------------------------------------------------

WHOLE = 1 << 31  # a block size larger than any capture: one chunk, the whole-file read


def _same(a, b):
    for name in a.tables:
        assert a.tables[name].equals(b.tables[name]), name
    assert a.report.to_dict() == b.report.to_dict()


def _gap_capture(real_lines, tmp_path):
    """The first 3000 lines of btcusdt_20240808 with a sequence gap and a resync snapshot."""
    lines = list(real_lines)
    depth = _depth_line_numbers(lines)
    snap_line = next(i for i, line in enumerate(lines) if b"lastUpdateId" in line)
    after = [i for i in depth if i > snap_line]
    snapshot = _snapshot_from_book(lines, after[40], snap_line)
    cut = lines[: after[10]] + lines[after[10] + 1 : after[40]] + [snapshot] + lines[after[40] :]
    return write_capture(tmp_path / "btcusdt_gap.gz", cut)


@pytest.mark.parametrize("name", list(WINDOWS))
def test_chunked_read_equals_whole_file_on_real_windows(real_dir, name):
    # 1 MiB chunks: dozens of boundaries a window, one among the diffs buffered before the snapshot
    # only by chance; the small captures below put them everywhere.
    files, symbol, _, _ = WINDOWS[name]
    paths, inst = [real_dir / f for f in files], resolve_instrument("binance-usdm", symbol)
    _same(parse_binance(paths, inst, block_size=WHOLE), parse_binance(paths, inst, block_size=1 << 20))


@settings(max_examples=15)
@given(block=st.integers(100, 20_000), compiled=st.booleans())
def test_any_chunking_equals_the_whole_file_read(real_lines, tmp_path_factory, block, compiled):
    # Boundaries before, inside (a line longer than the block comes whole) and after the snapshot,
    # among the diffs buffered for it, at the gap and at the resync snapshot.
    path = _gap_capture(real_lines, tmp_path_factory.mktemp("gap"))
    whole = parse_binance([path], BTC, compiled=compiled, block_size=WHOLE)
    assert len(whole.report.gaps) == 1
    _same(whole, parse_binance([path], BTC, compiled=compiled, block_size=block))


@pytest.mark.parametrize("block", [1, 700, 5_000])
def test_chunk_sizes_at_every_line_and_across_files(real_lines, tmp_path, block):
    a = write_capture(tmp_path / "a.gz", real_lines[:1500])
    b = write_capture(tmp_path / "b.gz", real_lines[1500:])
    _same(parse_binance([a, b], BTC, block_size=WHOLE), parse_binance([a, b], BTC, block_size=block))


def test_streamed_lake_is_the_whole_file_lake_byte_for_byte(ingested, real_dir, tmp_path):
    # btcusdt_20240808 spans midnight: book and bbo parts on two days. Group 13b7d1e1f3d78efa is what
    # the whole-file reader of 4c1e0a1 wrote for it: the rows, their order and ids are unchanged.
    _, whole_root = ingested["btcusdt_20240808"]
    paths = [real_dir / "btcusdt_20240808.gz"]
    m = Lake(tmp_path).write(binance_batch(paths, BTC, block_size=1 << 20), paths)
    assert m["group"] == "13b7d1e1f3d78efa"
    for rel in m["parts"]:
        assert (tmp_path / rel).read_bytes() == (whole_root / rel).read_bytes(), rel
    held = orjson.loads((whole_root / "_ingest" / f"{m['group']}.json").read_bytes())
    assert {**held, "ingested_at": ""} == {**m, "ingested_at": ""}


def test_error_deep_in_a_capture_leaves_the_lake_untouched(real_lines, tmp_path, monkeypatch):
    monkeypatch.setattr(lake_module, "ROW_GROUP", 1000)  # part files are being written when the error comes
    root = tmp_path / "lake"
    good = write_capture(tmp_path / "good.gz", real_lines[:1000])
    Lake(root).write(parse_binance([good], BTC), [good])
    before = {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}
    lines = list(real_lines)
    i = max(k for k, line in enumerate(lines) if b"@trade" in line)
    lines[i] = lines[i].replace(b'"p":"', b'"p":', 1)
    path = write_capture(tmp_path / "btcusdt_bad.gz", lines)
    with pytest.raises(DataError, match="malformed JSON") as e:
        Lake(root).write(binance_batch([path], BTC, block_size=4096), [path])
    assert (e.value.path, e.value.line) == (str(path), i + 1)
    assert before == {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}
    assert not (root / ".spool").exists()
