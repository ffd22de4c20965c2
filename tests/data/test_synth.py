"""The synthetic market generator: deterministic, on the lake schema, and consistent with its own book."""

from __future__ import annotations

import hashlib
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pytest

from grinder.book.check import replay_check
from grinder.data.lake import Lake
from grinder.data.schema import (
    BBO,
    BOOK,
    BOOK_DIFF,
    BOOK_RESET,
    BOOK_SNAPSHOT,
    FUNDING,
    MARKET_TABLES,
    SIDE_ASK,
    SIDE_BID,
    TRADES,
)
from grinder.data.synth import REGIME_NAMES, regime_schedule, synth_batch
from grinder.data.tape import load_tape

N = 200_000
TICK = 0.1
LOT = 0.001
START = 1_704_067_200_000_000_000


@pytest.fixture(scope="module")
def batch():
    return synth_batch(N, seed=0)


def _np(table: pa.Table, col: str) -> np.ndarray:
    return table.column(col).to_numpy()


def _digest(b) -> str:
    h = hashlib.sha256()
    for name in sorted(b.tables):
        for col in b.tables[name].columns:
            h.update(col.to_numpy().tobytes())
    return h.hexdigest()


def test_schema_instrument_and_report(batch):
    assert batch.fmt == "synth"
    assert set(batch.tables) == set(MARKET_TABLES)
    for name, schema in (("book", BOOK), ("trades", TRADES), ("bbo", BBO), ("funding", FUNDING)):
        assert batch.tables[name].schema.equals(schema), name
        assert batch.report.rows[name] == batch.tables[name].num_rows > 0
    inst = batch.instrument
    assert (inst.venue, inst.symbol, inst.base, inst.quote, inst.settle) == (
        "synthetic",
        "SYNTHUSDT",
        "SYNTH",
        "USDT",
        "USDT",
    )
    assert (inst.tick_size, inst.lot_size, inst.min_notional) == (TICK, LOT, 100.0)
    assert (inst.maker_fee, inst.taker_fee) == (0.0002, 0.0005)


def test_event_count_close_to_request(batch):
    for b, n in ((batch, N), (synth_batch(20_000, seed=5), 20_000)):
        events = b.tables["book"].num_rows + b.tables["trades"].num_rows
        assert abs(events - n) <= 0.01 * n


def test_deterministic_in_process_and_across_processes(batch):
    again = synth_batch(N, seed=0)
    for name in batch.tables:
        assert batch.tables[name].equals(again.tables[name]), name
    assert batch.report.notes == again.report.notes
    other = synth_batch(N, seed=1)
    assert not batch.tables["book"].equals(other.tables["book"])
    assert not batch.tables["trades"].equals(other.tables["trades"])
    code = (
        "import hashlib\n"
        "from grinder.data.synth import synth_batch\n"
        "b = synth_batch(30_000, seed=3)\n"
        "h = hashlib.sha256()\n"
        "for name in sorted(b.tables):\n"
        "    for col in b.tables[name].columns:\n"
        "        h.update(col.to_numpy().tobytes())\n"
        "print(h.hexdigest())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == _digest(synth_batch(30_000, seed=3))


def test_book_starts_with_reset_and_snapshot(batch):
    book = batch.tables["book"]
    kind, side, uid = _np(book, "kind"), _np(book, "side"), _np(book, "update_id")
    price, qty = _np(book, "price"), _np(book, "qty")
    assert (kind[0], side[0], price[0], qty[0]) == (BOOK_RESET, 0, 0.0, 0.0)
    n_snap = 1 + int(np.argmax(kind[1:] != BOOK_SNAPSHOT))
    snap = slice(1, n_snap)
    assert (kind[snap] == BOOK_SNAPSHOT).all()
    assert (kind[n_snap:] == BOOK_DIFF).all()
    assert (uid[:n_snap] == uid[0]).all()
    for s in (SIDE_BID, SIDE_ASK):
        assert 200 <= (side[snap] == s).sum() <= 1000
    assert (qty[snap] > 0).all()
    assert price[snap][side[snap] == SIDE_BID].max() < price[snap][side[snap] == SIDE_ASK].min()


def test_messages_times_and_sequence(batch):
    t = batch.tables
    book = t["book"]
    seq, uid = _np(book, "seq"), _np(book, "update_id")
    line = seq >> 16
    starts = np.flatnonzero(np.diff(line, prepend=-1) != 0)
    # One arrival line per message: all its rows share update id and both times.
    for col in ("update_id", "ts_exch", "ts_local"):
        v = _np(book, col)
        assert (v == np.repeat(v[starts], np.diff(np.append(starts, len(v))))).all(), col
    assert (np.diff(uid[starts]) > 0).all()
    assert (np.diff(_np(t["trades"], "trade_id")) > 0).all()
    # seq orders every line of every table, and the receive clock follows that order.
    all_seq = np.concatenate([_np(t[k], "seq") for k in t])
    all_loc = np.concatenate([_np(t[k], "ts_local") for k in t])
    order = np.argsort(all_seq, kind="stable")
    assert (np.diff(all_seq[order]) > 0).all()
    assert (np.diff(all_loc[order]) >= 0).all()
    for name, table in t.items():
        assert (np.diff(_np(table, "seq")) > 0).all(), name
        ts, loc = _np(table, "ts_exch"), _np(table, "ts_local")
        assert (np.diff(ts) >= 0).all(), name
        lat = loc - ts
        assert (lat > 0).all() and (lat < 50_000_000).all(), name
    assert _np(book, "ts_exch")[0] == START


def test_prices_and_quantities_on_grid(batch):
    t = batch.tables
    for name, pcols, qcols in (
        ("book", ["price"], ["qty"]),
        ("trades", ["price"], ["qty"]),
        ("bbo", ["bid_price", "ask_price"], ["bid_qty", "ask_qty"]),
    ):
        for c in pcols:
            p = _np(t[name], c)
            if name == "book":
                p = p[_np(t[name], "kind") != BOOK_RESET]
            ticks = np.rint(p / TICK)
            assert (ticks > 0).all()
            assert (p == ticks / 10).all(), (name, c)  # the float a decimal price parses to
        for c in qcols:
            q = _np(t[name], c)
            lots = np.rint(q / LOT)
            assert (q == lots / 1000).all(), (name, c)
    book = t["book"]
    kind, qty = _np(book, "kind"), _np(book, "qty")
    assert (qty[kind == BOOK_SNAPSHOT] > 0).all() and (qty[kind == BOOK_DIFF] >= 0).all()
    assert (_np(t["trades"], "qty") > 0).all()
    assert (_np(t["bbo"], "bid_qty") > 0).all() and (_np(t["bbo"], "ask_qty") > 0).all()


def test_lake_round_trip_replays_clean(batch, tmp_path):
    Lake(tmp_path).write(batch, sources=[], key="synth:n=200000:seed=0")
    tape = load_tape(tmp_path, "synthetic", "SYNTHUSDT")
    assert len(tape) == batch.tables["book"].num_rows + batch.tables["trades"].num_rows
    res = replay_check(tape)
    assert res.crossed == 0
    assert res.bbo_checked == res.bbo_matched == batch.tables["bbo"].num_rows > 0
    assert res.max_levels < 4096


def test_trades_hit_the_book_and_the_next_message_takes_them(batch, tmp_path):
    # A small independent replay with dicts: each run of trades walks the opposite side from its
    # best level, and the message after it updates every level it traded at.
    b = synth_batch(30_000, seed=11)
    Lake(tmp_path).write(b, sources=[], key="synth:trades")
    tape = load_tape(tmp_path, "synthetic", "SYNTHUSDT")
    book = {SIDE_BID: {}, SIDE_ASK: {}}
    kind, side, ticks, qty, ref = (a.tolist() for a in (tape.kind, tape.side, tape.price_ticks, tape.qty, tape.ref))
    run: list[tuple[int, int, float]] = []
    pending: tuple[int, set[int]] | None = None
    n_runs = n_sweeps = 0
    i = 0
    while i < len(kind):
        if kind[i] == 3:
            run.append((side[i], ticks[i], qty[i]))
            i += 1
            continue
        if run:
            aggr = run[0][0]
            assert all(r[0] == aggr for r in run)
            hit = SIDE_ASK if aggr == SIDE_BID else SIDE_BID
            levels = book[hit]
            best = min(levels) if hit == SIDE_ASK else max(levels)
            prices = [r[1] for r in run]
            assert prices[0] == best
            assert prices == sorted(prices, reverse=hit == SIDE_BID)
            taken: dict[int, float] = {}
            for _, p, q in run:
                taken[p] = taken.get(p, 0.0) + q
            for k, p in enumerate(dict.fromkeys(prices)):
                assert taken[p] <= levels[p] + 1e-9
                if k < len(taken) - 1:
                    assert abs(taken[p] - levels[p]) < 1e-9  # walked through: fully consumed
            n_runs += 1
            n_sweeps += len(taken) >= 3
            pending = (hit, set(taken))
            run = []
        # Apply one whole message.
        u = ref[i]
        touched: set[tuple[int, int]] = set()
        while i < len(kind) and kind[i] != 3 and ref[i] == u:
            if kind[i] == BOOK_RESET:
                book = {SIDE_BID: {}, SIDE_ASK: {}}
            else:
                lv = book[side[i]]
                if qty[i] > 0:
                    lv[ticks[i]] = qty[i]
                else:
                    lv.pop(ticks[i], None)
                touched.add((side[i], ticks[i]))
            i += 1
        if pending is not None:
            hit, prices = pending
            assert all((hit, p) in touched for p in prices)
            pending = None
        assert max(book[SIDE_BID]) < min(book[SIDE_ASK])
    assert n_runs > 1000 and n_sweeps > 10


def test_regimes_schedule_and_spreads(batch):
    sched = regime_schedule(batch.report)
    names = [s[1] for s in sched]
    assert set(names) == set(REGIME_NAMES)
    assert sched[0] == (START, "quiet", 0)
    starts = np.array([s[0] for s in sched])
    assert (np.diff(starts) > 0).all()
    assert all((d == 0) == (n == "quiet") for _, n, d in sched)
    bbo = batch.tables["bbo"]
    spread = np.rint((_np(bbo, "ask_price") - _np(bbo, "bid_price")) / TICK)
    assert (spread >= 1).all()
    reg = np.array(names)[np.searchsorted(starts, _np(bbo, "ts_exch"), "right") - 1]
    quiet, toxic = spread[reg == "quiet"], spread[reg == "toxic"]
    assert np.median(quiet) == 1 and (quiet == 1).mean() > 0.7
    assert toxic.mean() > 3 * quiet.mean()
    # Trends move the mid in their direction.
    mid = 0.5 * (_np(bbo, "ask_price") + _np(bbo, "bid_price"))
    ts = _np(bbo, "ts_exch")
    moves = []
    for k, (s, name, d) in enumerate(sched[:-1]):
        if name == "trend" and sched[k + 1][0] - s > 20e9:
            a, e = np.searchsorted(ts, [s, sched[k + 1][0]])
            moves.append(d * (mid[e - 1] - mid[a]))
    assert moves and np.mean(moves) > 0


def test_funding_every_second(batch):
    f = batch.tables["funding"]
    ts = _np(f, "ts_exch")
    assert (ts % 1_000_000_000 == 0).all() and (np.diff(ts) == 1_000_000_000).all()
    nxt = _np(f, "next_funding_ts")
    period = 8 * 3600 * 1_000_000_000
    assert (nxt % period == 0).all() and (nxt > ts).all() and (nxt - ts <= period).all()
    bbo = batch.tables["bbo"]
    j = np.searchsorted(_np(bbo, "ts_exch"), ts, "right") - 1
    mid = 0.5 * (_np(bbo, "bid_price") + _np(bbo, "ask_price"))[j]
    assert (np.abs(_np(f, "mark_price") / mid - 1) < 1e-3).all()
    assert (np.abs(_np(f, "index_price") / mid - 1) < 1e-3).all()
    assert (np.abs(_np(f, "funding_rate")) < 3e-3).all()


def test_other_instruments_and_bad_arguments():
    b = synth_batch(20_000, seed=2, symbol="ETHUSDT", venue="sim", mid=3_000.0, tick_size=0.01, lot_size=0.01)
    assert b.instrument.base == "ETH" and b.instrument.venue == "sim"
    p = _np(b.tables["trades"], "price")
    assert (p == np.rint(p / 0.01) / 100).all()
    assert abs(np.median(p) / 3_000.0 - 1) < 0.05
    for kwargs in ({"n_events": 0}, {"n_events": 10, "seed": -1}, {"n_events": 10, "mid": 10.0}):
        with pytest.raises(ValueError):
            synth_batch(**kwargs)
