"""hftbacktest npz ingest: the real fixture reproduces the Binance ingest; bad files name file and row."""

from __future__ import annotations

import numpy as np
import pytest

from grinder.book.check import replay_check
from grinder.data.ingest import parse
from grinder.data.ingest.hftbacktest import (
    BUY_EVENT,
    DEPTH_CLEAR_EVENT,
    DEPTH_EVENT,
    DEPTH_SNAPSHOT_EVENT,
    EVENT_DTYPE,
    EXCH_EVENT,
    LOCAL_EVENT,
    SELL_EVENT,
    TRADE_EVENT,
    parse_hftbacktest_npz,
)
from grinder.data.instruments import resolve_instrument
from grinder.data.lake import Lake
from grinder.data.schema import BOOK, BOOK_RESET, BOOK_SNAPSHOT, SIDE_ASK, SIDE_BID, SIDE_BOTH, TRADES
from grinder.data.tape import load_tape
from grinder.errors import DataError
from tests.fixtures import make_fixtures as mf

BTC = resolve_instrument("binance-usdm", "BTCUSDT")
NPZ = mf.HFTBACKTEST_NPZ
EL = EXCH_EVENT | LOCAL_EVENT
CLEAR, SNAP, DEPTH, TRADE = DEPTH_CLEAR_EVENT, DEPTH_SNAPSHOT_EVENT, DEPTH_EVENT, TRADE_EVENT
BUY, SELL = BUY_EVENT, SELL_EVENT
T0 = 1_723_161_256_493_000_000
L0 = 1_723_161_255_319_702_566
MS = 1_000_000


@pytest.fixture(scope="module")
def data():
    return np.load(NPZ)["data"]


@pytest.fixture(scope="module")
def batch():
    return parse_hftbacktest_npz([NPZ], BTC)


def _np(table, col):
    return table.column(col).to_numpy()


# ---------------------------------------------------------------- real fixture


def test_fixture_is_what_make_fixtures_writes(truth, data):
    assert data.dtype == EVENT_DTYPE == mf.EVENT_DTYPE
    np.testing.assert_array_equal(mf.hftbacktest_events(*truth), data)


def test_fixture_has_hftbacktest_layout(data):
    ev = data["ev"]
    flags = ev & np.uint64(EL)
    assert set(np.unique(flags).tolist()) == {EXCH_EVENT, LOCAL_EVENT, EL}
    # The snapshot arrived after the diff that bridges it: it appears twice (exchange and local copies).
    assert ev[0] == EXCH_EVENT | CLEAR | BUY
    assert (flags == EXCH_EVENT).sum() == (flags == LOCAL_EVENT).sum() > 2000
    exch = flags != LOCAL_EVENT
    assert (np.diff(data["exch_ts"][exch]) >= 0).all()
    assert (np.diff(data["local_ts"][flags != EXCH_EVENT]) >= 0).all()


def test_book_equals_binance_ingest(batch, truth, data):
    exp, got = truth[0], batch.tables["book"]
    assert got.schema == BOOK
    kind, exp_kind = _np(got, "kind"), _np(exp, "kind")
    # Binance's one two-sided reset is hftbacktest's clear-bids ... clear-asks.
    resets = np.flatnonzero(kind == BOOK_RESET)
    assert resets.tolist() == [0, 1001] and _np(got, "side")[resets].tolist() == [SIDE_BID, SIDE_ASK]
    assert (_np(got, "side")[1:1001] == SIDE_BID).all() and (_np(got, "side")[1002:2002] == SIDE_ASK).all()
    assert (_np(got, "price")[resets] == 0).all() and (_np(got, "qty")[resets] == 0).all()
    g, e = kind != BOOK_RESET, exp_kind != BOOK_RESET
    assert g.sum() == e.sum() > 50_000
    for col in ("kind", "side", "price", "qty", "ts_exch", "ts_local"):
        np.testing.assert_array_equal(_np(got, col)[g], _np(exp, col)[e], err_msg=col)
    # Same messages (update ids are a counter here), the resets in their snapshot's message.
    uid = _np(got, "update_id")
    np.testing.assert_array_equal(np.diff(uid[g]) != 0, np.diff(_np(exp, "update_id")[e]) != 0)
    assert uid[0] == uid[1001] == uid[2001] == 1 and (np.diff(uid) >= 0).all()
    assert (np.diff(_np(got, "seq")) > 0).all()
    # Local-only copies are left out, and counted.
    local_only = int(((data["ev"] & np.uint64(EL)) == LOCAL_EVENT).sum())
    assert batch.report.skipped == {"local-only copy of an event (hftbacktest's event-order correction)": local_only}
    assert batch.report.rows == {"book": got.num_rows, "trades": truth[1].num_rows}


def test_trades_equal_binance_ingest(batch, truth):
    exp, got = truth[1], batch.tables["trades"]
    assert got.schema == TRADES
    for col in ("ts_exch", "ts_local", "side", "price", "qty"):
        np.testing.assert_array_equal(_np(got, col), _np(exp, col), err_msg=col)
    assert _np(got, "trade_id").tolist() == list(range(1, got.num_rows + 1))
    assert any("no trade ids" in n for n in batch.report.notes)


def test_lake_tape_replays_without_crossing(batch, tmp_path):
    Lake(tmp_path).write(batch, [NPZ])
    tape = load_tape(tmp_path, "binance-usdm", "BTCUSDT")
    check = replay_check(tape)
    assert check.crossed == 0 and check.batches > 500
    assert len(tape) == batch.report.rows["book"] + batch.report.rows["trades"]
    assert parse("hftbacktest", [NPZ], BTC).report.rows == batch.report.rows
    # From mid-window the book warms up from the snapshot, whose sides hftbacktest clears separately.
    mid = int(tape.ts_exch[len(tape) // 2])
    win = load_tape(tmp_path, "binance-usdm", "BTCUSDT", mid)
    assert win.kind[0] == BOOK_RESET and win.start > 2000
    part = replay_check(win)
    assert part.crossed == 0 and part.batches > 300


# ---------------------------------------------------------------- semantics on small files


def events(rows) -> np.ndarray:
    """(ev, exch_ts, local_ts, px, qty) tuples as an hftbacktest event array."""
    out = np.zeros(len(rows), EVENT_DTYPE)
    for f, i in (("ev", 0), ("exch_ts", 1), ("local_ts", 2), ("px", 3), ("qty", 4)):
        out[f] = [r[i] for r in rows]
    return out


def small() -> list[tuple]:
    """A valid little stream: 2-level snapshot each side, a diff, a trade, a diff (rows 1..9)."""
    return [
        (EL | CLEAR | BUY, T0, L0, 61800.1, 0.0),  # row 1
        (EL | SNAP | BUY, T0, L0, 61800.2, 2.909),
        (EL | SNAP | BUY, T0, L0, 61800.1, 0.696),
        (EL | CLEAR | SELL, T0, L0, 61800.4, 0.0),
        (EL | SNAP | SELL, T0, L0, 61800.3, 3.33),  # row 5
        (EL | SNAP | SELL, T0, L0, 61800.4, 0.1),
        (EL | DEPTH | BUY, T0 + MS, L0 + MS, 61800.2, 2.5),
        (EL | TRADE | SELL, T0 + 2 * MS, L0 + 2 * MS, 61800.2, 0.015),
        (EL | DEPTH | SELL, T0 + 3 * MS, L0 + 3 * MS, 61800.4, 0.0),  # row 9
    ]


def save(tmp_path, rows, name="ev.npz", **extra) -> object:
    path = tmp_path / name
    np.savez_compressed(path, **({"data": events(rows)} if rows is not None else {}), **extra)
    return path


def with_row(n: int, row: tuple, rows=None) -> list[tuple]:
    rows = list(small() if rows is None else rows)
    rows[n - 1] = row
    return rows


def test_small_stream_rows_and_messages(tmp_path):
    batch = parse_hftbacktest_npz([save(tmp_path, small())], BTC)
    book, trades = batch.tables["book"], batch.tables["trades"]
    assert _np(book, "kind").tolist() == [2, 1, 1, 2, 1, 1, 0, 0]
    assert _np(book, "side").tolist() == [1, 1, 1, -1, -1, -1, 1, -1]
    assert _np(book, "update_id").tolist() == [1, 1, 1, 1, 1, 1, 2, 3]
    assert _np(book, "price")[[0, 3]].tolist() == [0.0, 0.0]
    assert _np(book, "seq").tolist() == [r << 16 for r in (0, 1, 2, 3, 4, 5, 6, 8)]
    assert _np(trades, "seq").tolist() == [7 << 16] and _np(trades, "side").tolist() == [SIDE_ASK]
    assert _np(trades, "ts_local").tolist() == [L0 + 2 * MS]
    assert batch.report.skipped == {}


def test_unflagged_file_is_taken_whole(tmp_path):
    rows = [(ev & ~EL, *rest) for ev, *rest in small()]
    assert parse_hftbacktest_npz([save(tmp_path, rows)], BTC).report.rows == {"book": 8, "trades": 1}


def test_local_only_copies_are_skipped_even_out_of_exchange_order(tmp_path):
    rows = small()
    # The trade arrived before the first diff: hftbacktest writes a local copy before it.
    rows.insert(6, (LOCAL_EVENT | TRADE | SELL, T0 + 2 * MS, L0 + MS // 2, 61800.2, 0.015))
    rows[8] = (EXCH_EVENT | TRADE | SELL, T0 + 2 * MS, L0 + MS // 2, 61800.2, 0.015)
    batch = parse_hftbacktest_npz([save(tmp_path, rows)], BTC)
    assert batch.report.rows == {"book": 8, "trades": 1}
    assert sum(batch.report.skipped.values()) == 1


def test_custom_and_unsupported_events_are_counted(tmp_path):
    rows = small() + [
        (EL | 100, T0 + 4 * MS, L0 + 4 * MS, 61790.0, 0.0),
        (EL | 101, T0 + 4 * MS, L0 + 4 * MS, 61800.0, 0.0),
        (EL | 102, T0 + 4 * MS, L0 + 4 * MS, 0.0001, 0.0),
        (EL | 5 | BUY, T0 + 5 * MS, L0 + 5 * MS, 61800.2, 1.0),
        (EL | 10 | BUY, T0 + 5 * MS, L0 + 5 * MS, 61800.2, 1.0),
        (EL | TRADE, T0 + 6 * MS, L0 + 6 * MS, 61800.2, 1.0),  # no aggressor side
        (EL | CLEAR, T0 + 7 * MS, L0 + 7 * MS, 0.0, 0.0),  # clear without side: both
    ]
    batch = parse_hftbacktest_npz([save(tmp_path, rows)], BTC)
    assert batch.report.skipped == {
        "hftbacktest custom event 100 (index price)": 1,
        "hftbacktest custom event 101 (mark price)": 1,
        "hftbacktest custom event 102 (funding rate)": 1,
        "DEPTH_BBO event (best bid/ask only, not a depth diff)": 1,
        "unsupported hftbacktest event type 10": 1,
        "trade without aggressor side flag": 1,
    }
    book = batch.tables["book"]
    assert _np(book, "kind")[-1] == BOOK_RESET and _np(book, "side")[-1] == SIDE_BOTH


def test_files_continue_each_other(tmp_path):
    a = save(tmp_path, small(), "a.npz")
    later = [(ev, t + 10 * MS, lt + 10 * MS, px, q) for ev, t, lt, px, q in small()]
    b = save(tmp_path, later, "b.npz")
    book = parse_hftbacktest_npz([a, b], BTC).tables["book"]
    assert (_np(book, "kind") == BOOK_SNAPSHOT).sum() == 8
    assert _np(book, "seq")[-1] == (9 + 8) << 16 and (np.diff(_np(book, "update_id")) >= 0).all()
    assert_error([b, a], 1, r"exchange timestamps \(exch_ts\) go backwards", path=a)


# ---------------------------------------------------------------- errors name file and row


def assert_error(paths, line, match, path=None):
    with pytest.raises(DataError, match=match) as e:
        parse_hftbacktest_npz(paths, BTC)
    assert e.value.path == str(path or paths[-1])
    assert e.value.line == line
    return e.value


@pytest.mark.parametrize(
    ("n", "row", "match"),
    [
        (7, (EL | DEPTH | BUY, T0 + MS, L0 + MS, np.nan, 2.5), "depth level: invalid price .*nan"),
        (7, (EL | DEPTH | BUY, T0 + MS, L0 + MS, 0.0, 2.5), "depth level: invalid price"),
        (3, (EL | SNAP | BUY, T0, L0, -61800.1, 0.696), "depth level: invalid price"),
        (7, (EL | DEPTH | BUY, T0 + MS, L0 + MS, 61800.2, -2.5), "depth level: invalid quantity"),
        (7, (EL | DEPTH | BUY, T0 + MS, L0 + MS, 61800.25, 2.5), "not a multiple of the tick size"),
        (9, (EL | DEPTH | SELL, T0 + 3 * MS, L0 + 3 * MS, 61800.4, 0.0005), "not a multiple of the lot size"),
        (8, (EL | TRADE | SELL, T0 + 2 * MS, L0 + 2 * MS, 61800.2, 0.0), "trade: invalid quantity"),
        (8, (EL | TRADE | SELL, T0 + 2 * MS, L0 + 2 * MS, np.inf, 0.01), "trade: invalid price"),
        (
            8,
            (EL | TRADE | SELL, T0 - 1, L0 + 2 * MS, 61800.2, 0.015),
            r"exchange timestamps \(exch_ts\) go backwards",
        ),
        (7, (EL | DEPTH | BUY | SELL, T0 + MS, L0 + MS, 61800.2, 2.5), "both BUY_EVENT and SELL_EVENT"),
        (7, (EL | DEPTH, T0 + MS, L0 + MS, 61800.2, 2.5), "depth event without BUY_EVENT or SELL_EVENT"),
        (2, (EL | SNAP | BUY, T0 // 1000, L0, 61800.2, 2.909), "exch_ts 1723161256493000 is not nanoseconds"),
        (5, (EL | SNAP | SELL, T0, L0 // 1000, 61800.3, 3.33), "local_ts .* is not nanoseconds"),
        # 1973 and 2100 in ns: plausible magnitudes, outside the sane range 2017-01-01 .. now + 1 day
        (2, (EL | SNAP | BUY, 10**17, L0, 61800.2, 2.909), r"exch_ts \(ns\) 100000000000000000 is outside the sane"),
        (
            9,
            (EL | DEPTH | SELL, T0 + 3 * MS, 4_102_444_800 * 10**9, 61800.4, 0.0),
            r"local_ts \(ns\) 4102444800000000000",
        ),
        # a bid above the best ask (61800.3): the book crosses, by the rule of `grinder data check`
        (
            7,
            (EL | DEPTH | BUY, T0 + MS, L0 + MS, 61800.6, 2.5),
            "book crossed: best bid >= best ask after this message",
        ),
        # beyond 2**53 ticks
        (7, (EL | DEPTH | BUY, T0 + MS, L0 + MS, 1e17, 2.5), "price 1e[+]17 is out of range for the tick size"),
    ],
)
def test_bad_row_names_file_and_row(tmp_path, n, row, match):
    path = save(tmp_path, with_row(n, row))
    assert_error([path], n, match)


def test_unsorted_rows_without_flags_name_the_row(tmp_path):
    rows = [(ev & ~EL, *rest) for ev, *rest in small()]
    rows[8] = (DEPTH | SELL, T0, L0 + 3 * MS, 61800.4, 0.0)  # row 9 goes back to T0
    assert_error([save(tmp_path, rows)], 9, r"exchange timestamps \(exch_ts\) go backwards")


def test_local_view_out_of_order_names_the_row(tmp_path):
    rows = small()
    rows[7] = (EL | TRADE | SELL, T0 + 2 * MS, L0 - 5, 61800.2, 0.015)  # local time goes back
    assert_error([save(tmp_path, rows)], 8, r"local timestamps \(local_ts\) of LOCAL_EVENT rows go backwards")


def test_missing_data_key_names_the_file(tmp_path):
    path = save(tmp_path, None, other=np.zeros(3))
    assert_error([path], None, r"no 'data' array in the archive \(it holds other\)")


@pytest.mark.parametrize(
    "arr",
    [
        np.zeros((4, 6)),  # hftbacktest v1: float64 columns
        np.zeros(4, np.dtype([("ev", "u8"), ("exch_ts", "i8"), ("local_ts", "i8"), ("px", "f8")])),
        np.zeros(4, np.dtype([("ev", "u8"), ("exch_ts", "f8"), ("local_ts", "i8"), ("px", "f8"), ("qty", "f8")])),
        np.zeros((2, 2), EVENT_DTYPE),
    ],
)
def test_wrong_dtype_names_the_file(tmp_path, arr):
    path = tmp_path / "bad.npz"
    np.savez_compressed(path, data=arr)
    assert_error([path], None, "expected a 1-d array of hftbacktest's event dtype")


def test_unreadable_files_name_the_file(tmp_path):
    raw = NPZ.read_bytes()
    cut = tmp_path / "cut.npz"
    cut.write_bytes(raw[: len(raw) // 2])
    assert_error([cut], None, "not a readable .npz archive")
    text = tmp_path / "text.npz"
    text.write_bytes(b"exchange,symbol\n")
    assert_error([text], None, "not a readable .npz archive")
    npy = tmp_path / "bare.npy"
    np.save(npy, events(small()))
    assert_error([npy], None, "not an .npz archive")
    assert_error([tmp_path / "missing.npz"], None, "no such file")


def test_corrupt_member_names_the_file(tmp_path):
    path = save(tmp_path, small() * 50)
    raw = bytearray(path.read_bytes())
    mid = len(raw) // 2
    raw[mid : mid + 64] = bytes(64)  # damage the compressed stream, keep the zip directory
    path.write_bytes(bytes(raw))
    assert_error([path], None, "cannot read the 'data' array|not a readable")


def test_no_market_data(tmp_path):
    rows = [(EL | 100, T0, L0, 61790.0, 0.0)]
    assert_error([save(tmp_path, rows)], None, "no market data for BTCUSDT")
