"""Binance raw captures: every real window syncs, never crosses and matches the venue's BBO."""

from __future__ import annotations

import gzip

import numpy as np
import orjson
import pytest

from grinder.book.replay import replay_check
from grinder.data.errors import DataError
from grinder.data.ingest.binance import parse_binance
from grinder.data.instruments import resolve_instrument
from grinder.data.lake import Lake
from grinder.data.schema import BOOK_DIFF, BOOK_RESET, BOOK_SNAPSHOT
from grinder.data.tape import load_tape
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
        (b"@trade", b'"p":"', b'"p":"-', "invalid price"),
        (b"@trade", b'"q":"', b'"q":"NaN', "invalid quantity|not a number"),
        (b"@depth", b'"b":[["', b'"b":[["NaN', "not a number|invalid price"),
        (b"@bookTicker", b'"b":"', b'"b":"-1', "invalid price"),
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
    lines[100] = lines[100].replace(b'"s":"BTCUSDT"', b'"s":"ETHUSDT"')
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
