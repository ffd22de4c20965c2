"""The once-per-tape replay agrees with a book rebuilt row by row; its on-disk cache."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from numba import njit

from grinder.book.l2 import ASK, BID, EMPTY, apply_row, best_qty, best_ticks, new_book, qty_at
from grinder.data.lake import Lake
from grinder.data.synth import synth_batch
from grinder.data.tape import load_tape
from grinder.errors import DataError
from grinder.sim import replay, replay_cache
from grinder.sim.backtest import VenueConfig, corrected_local_times, prepare, run_backtest
from grinder.sim.replay import REPLAY_FIELDS, SIDE_BIT, load_or_prepare, prepare_replay, qty_before

REPO = Path(__file__).resolve().parents[2]


def test_replay_matches_a_live_book(tmp_path):
    Lake(tmp_path).write(synth_batch(30_000, seed=5), [], key="t")
    tape = load_tape(tmp_path, "synthetic", "SYNTHUSDT")
    local = tape.ts_local + 2_000_000
    rep, order = prepare_replay(tape, local)
    rng = np.random.default_rng(0)
    queries = {int(i): rng.integers(-50, 50, 4) for i in rng.choice(len(tape), 200, replace=False)}
    hdr, wq, ok, oq = new_book()
    for i in range(len(tape)):
        if i in queries:
            # State with rows [0, i) applied: quantities anywhere near the market.
            mid = best_ticks(hdr, BID) if best_ticks(hdr, BID) != EMPTY else tape.price_ticks[i]
            for d in queries[i]:
                for code, s in ((1, BID), (-1, ASK)):
                    p = int(mid + d)
                    got = qty_before(
                        rep.level_rows,
                        rep.level_ukeys,
                        rep.level_starts,
                        rep.reset_rows,
                        rep.reset_sides,
                        tape.qty,
                        code,
                        p,
                        i,
                    )
                    assert got == qty_at(hdr, wq, ok, oq, s, p), (i, code, p)
        if tape.kind[i] <= 1:
            s = BID if tape.side[i] > 0 else ASK
            assert rep.prev_qty[i] == qty_at(hdr, wq, ok, oq, s, tape.price_ticks[i])
        if tape.kind[i] != 3:
            ok, oq = apply_row(hdr, wq, ok, oq, tape.kind[i], tape.side[i], tape.price_ticks[i], tape.qty[i])
        assert rep.best_bid[i] == best_ticks(hdr, BID) and rep.best_ask[i] == best_ticks(hdr, ASK)
    # The local view is the same book applied in local-time order.
    assert (np.diff(rep.local_ts) >= 0).all() and np.array_equal(rep.local_ts, local[order])
    hdr, wq, ok, oq = new_book()
    for j, i in enumerate(order):
        if tape.kind[i] != 3:
            ok, oq = apply_row(hdr, wq, ok, oq, tape.kind[i], tape.side[i], tape.price_ticks[i], tape.qty[i])
        assert rep.local_best_bid[j] == best_ticks(hdr, BID) and rep.local_best_ask[j] == best_ticks(hdr, ASK)


# --- The fast build against a straightforward reference (the original implementation) ---


@njit(cache=True)
def _ref_exchange_pass(kind, side, ticks, qty, hdr, wq, ok, oq):
    n = kind.shape[0]
    prev_q = np.zeros(n)
    bb = np.empty(n, np.int64)
    ba = np.empty(n, np.int64)
    syn = np.empty(n, np.bool_)
    valid = False  # a snapshot row syncs the book, a reset unsyncs it; unsynced books show no prices
    for i in range(n):
        k = kind[i]
        if k <= 1:
            s = BID if side[i] > 0 else ASK
            prev_q[i] = qty_at(hdr, wq, ok, oq, s, ticks[i])
        if k != 3:
            ok, oq = apply_row(hdr, wq, ok, oq, k, side[i], ticks[i], qty[i])
        valid = True if k == 1 else False if k == 2 else valid
        syn[i] = valid
        bb[i] = best_ticks(hdr, BID) if valid else EMPTY
        ba[i] = best_ticks(hdr, ASK) if valid else EMPTY
    return prev_q, bb, ba, syn


@njit(cache=True)
def _ref_local_pass(order, kind, side, ticks, qty, hdr, wq, ok, oq):
    n = order.shape[0]
    bb = np.empty(n, np.int64)
    ba = np.empty(n, np.int64)
    bbq = np.empty(n)
    baq = np.empty(n)
    syn = np.empty(n, np.bool_)
    valid = False
    for j in range(n):
        i = order[j]
        if kind[i] != 3:
            ok, oq = apply_row(hdr, wq, ok, oq, kind[i], side[i], ticks[i], qty[i])
        valid = True if kind[i] == 1 else False if kind[i] == 2 else valid
        syn[j] = valid
        bb[j] = best_ticks(hdr, BID) if valid else EMPTY
        ba[j] = best_ticks(hdr, ASK) if valid else EMPTY
        bbq[j] = best_qty(hdr, wq, ok, oq, BID) if valid else 0.0
        baq[j] = best_qty(hdr, wq, ok, oq, ASK) if valid else 0.0
    return bb, ba, bbq, baq, syn


def reference_index(kind, side, ticks):
    book_rows = np.flatnonzero(kind <= 1)
    keys = np.where(side[book_rows] > 0, SIDE_BIT, 0) + ticks[book_rows]
    g = np.lexsort((book_rows, keys))
    resets = np.flatnonzero(kind == 2)
    ukeys, starts = np.unique(keys[g], return_index=True)
    starts = np.append(starts, len(g)).astype(np.int64)
    return book_rows[g], ukeys, starts, resets, side[resets].astype(np.int64)


def reference_replay(tape, local, book=(1 << 15, 4096)):
    """The replay as first written: two passes over l2.apply_row, lexsorts; its fields and the order."""
    prev_q, bb, ba, syn = _ref_exchange_pass(tape.kind, tape.side, tape.price_ticks, tape.qty, *new_book(*book))
    order = np.lexsort((np.arange(len(tape)), local))
    lbb, lba, lbbq, lbaq, lsyn = _ref_local_pass(order, tape.kind, tape.side, tape.price_ticks, tape.qty,
                                                 *new_book(*book))  # fmt: skip
    index = reference_index(tape.kind, tape.side, tape.price_ticks)
    fields = (prev_q, bb, ba, local[order], lbb, lba, lbbq, lbaq, *index, syn, lsyn)
    return dict(zip(REPLAY_FIELDS, fields, strict=True)), order


def assert_same(rep, expected: dict):
    for f in REPLAY_FIELDS:
        a, b = getattr(rep, f), expected[f]
        assert a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes(), f


def jittered(tape, seed=0):
    """Local times that are not in exchange order (as on real captures), but mostly are."""
    rng = np.random.default_rng(seed)
    local = tape.ts_local + 2_000_000
    moved = rng.random(len(tape)) < 0.05
    local[moved] += rng.integers(-5_000_000, 5_000_000, int(moved.sum()))
    assert (np.diff(local) < 0).any()
    return local


@pytest.fixture(scope="module")
def synth_tape(tmp_path_factory):
    root = tmp_path_factory.mktemp("lake")
    Lake(root).write(synth_batch(40_000, seed=11), [], key="t")
    return load_tape(root, "synthetic", "SYNTHUSDT")


@pytest.mark.parametrize("clock", ["sorted", "jittered"])
def test_fast_build_is_bit_identical_to_the_reference(synth_tape, clock):
    local = synth_tape.ts_local + 1_000 if clock == "sorted" else jittered(synth_tape)
    expected, order = reference_replay(synth_tape, local)
    rep, got_order = prepare_replay(synth_tape, local)
    assert_same(rep, expected)
    assert got_order.dtype == order.dtype and np.array_equal(got_order, order)
    assert_same(load_or_prepare(synth_tape, local), expected)
    assert all(not getattr(rep, f).flags.writeable for f in REPLAY_FIELDS)
    assert (rep.local_best_bid is rep.best_bid) == (clock == "sorted")  # one pass serves both sides


def test_fast_build_on_the_real_sample_is_bit_identical():
    tape = load_tape(REPO / "data" / "sample" / "lake", "binance-usdm", "BTCUSDT")
    local = corrected_local_times(tape)
    assert (np.diff(local) < 0).any()  # the capture's local times are not in exchange order
    expected, _ = reference_replay(tape, local)
    assert_same(load_or_prepare(tape, local), expected)


@pytest.mark.parametrize("clock", ["sorted", "jittered"])
def test_passes_agree_with_apply_row_through_recentres_and_overflow_growth(synth_tape, clock, monkeypatch):
    # A 64-tick window and a 4-slot overflow: most levels live in overflow, which grows many times.
    grows = []
    real_grow = replay.grow
    monkeypatch.setattr(replay, "grow", lambda *a: grows.append(1) or real_grow(*a))
    book = (64, 4)
    t = synth_tape
    local = t.ts_local if clock == "sorted" else jittered(t, 3)
    assert (clock == "sorted") == bool((np.diff(local) >= 0).all())
    expected, order = reference_replay(t, local, book)
    n = len(t)
    none_f, none_i = np.empty(0), np.empty(0, np.int64)
    cols = (t.kind, t.side, t.price_ticks, t.qty)
    prev_q, bb, ba = np.empty(n), np.empty(n, np.int64), np.empty(n, np.int64)
    syn, lsyn = np.empty(n, np.bool_), np.empty(n, np.bool_)
    replay._replay_pass(none_i, none_i, *cols, prev_q, bb, ba, none_f, none_f, none_i, syn, *book)
    lbb, lba, lbbq, lbaq, lts = (np.empty(n, d) for d in (np.int64, np.int64, np.float64, np.float64, np.int64))
    lorder = none_i if clock == "sorted" else order
    replay._replay_pass(lorder, local, *cols, none_f, lbb, lba, lbbq, lbaq, lts, lsyn, *book)
    got = {"prev_qty": prev_q, "best_bid": bb, "best_ask": ba, "local_best_bid": lbb, "local_best_ask": lba}
    got |= {"local_best_bid_qty": lbbq, "local_best_ask_qty": lbaq, "local_ts": lts, "synced": syn}
    got |= {"local_synced": lsyn}
    for f, a in got.items():
        assert a.tobytes() == expected[f].tobytes(), f
    assert len(grows) >= 5


def _index_case(name):
    rng = np.random.default_rng(1)
    n = 5_000
    kind = rng.choice(np.array([0, 1, 2, 3], np.int8), n, p=[0.7, 0.1, 0.01, 0.19])
    side = rng.choice(np.array([1, -1], np.int8), n)
    side[kind == 2] = rng.choice(np.array([1, -1, 0], np.int8), int((kind == 2).sum()))
    if name == "narrow":  # a few thousand ticks: counting sort
        ticks = 50_000 + rng.integers(-2_000, 2_000, n)
    elif name == "wide":  # Binance-like far levels, 300 a side: hashed ranks (the table grows, probes collide)
        ticks = rng.choice(rng.integers(1_000, 1 << 40, 300), n)
    elif name == "overlapping":  # ask keys above bid keys (ticks >= 2^62): one rank range for both
        ticks = np.where(side > 0, 7, (1 << 62) + rng.integers(0, 100, n))
    elif name == "huge":  # a distinct key on almost every row: stable argsort of the keys
        ticks = rng.integers(-(1 << 61), 1 << 61, n)
    elif name == "asks_only":
        side[:] = -1
        ticks = 100 + rng.integers(0, 50, n)
    else:  # bids only, wide, few levels, and runs of rows at one level
        side[:] = 1
        ticks = np.repeat(rng.choice(rng.integers(0, 1 << 35, 50), n // 10), 10)
    return kind, side, ticks.astype(np.int64)


@pytest.mark.parametrize(
    ("case", "mode"),
    [("narrow", 0), ("wide", 1), ("overlapping", 0), ("huge", 2), ("asks_only", 0), ("bids_only", 1)],
)
def test_level_index_matches_lexsort_in_every_mode(case, mode):
    kind, side, ticks = _index_case(case)
    assert replay._levels(kind, side, ticks)[-1] == mode
    got = replay._level_index(kind, side, ticks)
    for a, b in zip(got, reference_index(kind, side, ticks), strict=True):
        assert a.dtype == b.dtype and np.array_equal(a, b)
    if case == "wide":
        assert len(got[1]) > 512  # more levels than the first hash table holds: it grew
    rows, ukeys, starts, resets, reset_sides = replay._level_index(kind[:0], side[:0], ticks[:0])
    assert all(len(a) == 0 and a.dtype == np.int64 for a in (rows, ukeys, resets, reset_sides))
    assert starts.dtype == np.int64 and starts.tolist() == [0]  # one offset more than there are levels


# --- The on-disk cache ---


def _is_mapped(a):
    while a is not None and not isinstance(a, np.memmap):
        a = a.base
    return a is not None


@pytest.mark.parametrize("clock", ["sorted", "jittered"])
def test_cache_round_trip_gives_identical_read_only_maps(synth_tape, clock, tmp_path):
    local = synth_tape.ts_local + 5 if clock == "sorted" else jittered(synth_tape)
    built = load_or_prepare(synth_tape, local, tmp_path)
    assert not _is_mapped(built.prev_qty)
    (entry,) = tmp_path.iterdir()
    assert entry.name == replay_cache.replay_key(synth_tape, local)
    assert entry.name.startswith("synthetic__SYNTHUSDT__")
    again = load_or_prepare(synth_tape, local, tmp_path)
    for f in REPLAY_FIELDS:
        a, b = getattr(again, f), getattr(built, f)
        assert _is_mapped(a) or a.size == 0, f
        assert not a.flags.writeable and a.dtype == b.dtype and np.array_equal(a, b), f
    # Shared arrays are stored once and opened once.
    assert (again.local_best_bid is again.best_bid) == (clock == "sorted")
    assert (entry / "local_best_bid.npy").exists() == (clock != "sorted")


def test_backtest_on_a_cached_replay_matches_a_fresh_one(synth_tape, tmp_path):
    from grinder.strategies.static_grid import StaticGridParams, static_grid

    venue = VenueConfig()
    params = StaticGridParams(levels=5, interval=0.5, half_spread=0.5, order_qty=0.01, max_position=0.1)
    local = corrected_local_times(synth_tape)
    load_or_prepare(synth_tape, local, tmp_path)
    cached = load_or_prepare(synth_tape, local, tmp_path)
    assert _is_mapped(cached.best_bid)
    a = run_backtest(synth_tape, static_grid, params.as_array(), venue, replay=cached)
    b = run_backtest(synth_tape, static_grid, params.as_array(), venue, replay=prepare(synth_tape, venue))
    assert a.counters["fills"] > 0 and a.digest == b.digest and a.counters == b.counters


def _truncate(entry):
    p = entry / "prev_qty.npy"
    p.write_bytes(p.read_bytes()[:-8])


def _pad(entry):
    with open(entry / "level_starts.npy", "ab") as fh:
        fh.write(b"\0" * 8)


def _garble_meta(entry):
    (entry / "meta.json").write_text('{"format": 1, "key": ')


def _drop_file(entry):
    (entry / "best_ask.npy").unlink()


def _wrong_dtype(entry):
    a = np.load(entry / "local_best_ask_qty.npy")
    np.save(entry / "local_best_ask_qty.npy", a.astype(np.float32))


def _wrong_length(entry):
    np.save(entry / "best_bid.npy", np.load(entry / "best_bid.npy")[:-1])


def _foreign_file(entry):
    meta = json.loads((entry / "meta.json").read_text())
    meta["arrays"]["prev_qty"]["file"] = "../prev_qty.npy"
    (entry / "meta.json").write_text(json.dumps(meta))


@pytest.mark.parametrize(
    "damage", [_truncate, _pad, _garble_meta, _drop_file, _wrong_dtype, _wrong_length, _foreign_file]
)
def test_a_damaged_cache_entry_is_rebuilt_not_trusted(synth_tape, tmp_path, damage):
    local = jittered(synth_tape, 7)
    built = load_or_prepare(synth_tape, local, tmp_path)
    key = replay_cache.replay_key(synth_tape, local)
    damage(tmp_path / key)
    assert replay_cache.open_cached(tmp_path, key, len(synth_tape)) is None
    again = load_or_prepare(synth_tape, local, tmp_path)
    for f in REPLAY_FIELDS:
        assert np.array_equal(getattr(again, f), getattr(built, f)), f
    # The entry was replaced by an intact one.
    assert replay_cache.open_cached(tmp_path, key, len(synth_tape)) is not None


def test_an_interrupted_write_leaves_nothing_that_is_trusted(synth_tape, tmp_path, monkeypatch):
    local = synth_tape.ts_local
    key = replay_cache.replay_key(synth_tape, local)

    def crash(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(replay_cache.json, "dump", crash)  # dies after the arrays, before the metadata
    with pytest.raises(KeyboardInterrupt):
        load_or_prepare(synth_tape, local, tmp_path)
    monkeypatch.undo()
    assert not (tmp_path / key).exists() and not list(tmp_path.iterdir())
    # A temporary folder left by a killed process is never read as an entry.
    (tmp_path / f".{key}.99999.tmp").mkdir()
    assert replay_cache.open_cached(tmp_path, key, len(synth_tape)) is None
    assert _is_mapped(load_or_prepare(synth_tape, local, tmp_path).prev_qty) is False
    assert _is_mapped(load_or_prepare(synth_tape, local, tmp_path).prev_qty)


def test_the_key_follows_everything_the_replay_depends_on(synth_tape):
    local = corrected_local_times(synth_tape)
    key = replay_cache.replay_key(synth_tape, local)
    assert replay_cache.replay_key(synth_tape, local.copy()) == key
    assert replay_cache.replay_key(synth_tape, local + 1) != key  # another clock offset
    qty = synth_tape.qty.copy()
    qty[-1] += 1.0
    assert replay_cache.replay_key(replace(synth_tape, qty=qty), local) != key
    ticks = synth_tape.price_ticks.copy()
    ticks[0] += 1
    assert replay_cache.replay_key(replace(synth_tape, price_ticks=ticks), local) != key
    # Columns the replay does not read do not matter.
    assert replay_cache.replay_key(replace(synth_tape, ref=synth_tape.ref + 1), local) == key


def test_drop_deletes_an_instruments_entries_only(synth_tape, tmp_path):
    load_or_prepare(synth_tape, synth_tape.ts_local, tmp_path)
    (tmp_path / "other__XUSDT__0").mkdir()
    replay_cache.drop(tmp_path, "synthetic", "SYNTHUSDT")
    assert [d.name for d in tmp_path.iterdir()] == ["other__XUSDT__0"]
    assert replay_cache.cache_root("lake") == Path("lake") / "_replays"


def test_local_times_hours_after_the_exchange_are_refused_with_the_offset_to_use(synth_tape):
    later = replace(synth_tape, ts_local=synth_tape.ts_local + 2 * 3_600 * 10**9)
    with pytest.raises(DataError, match=r"at least 2\.0 h after its exchange time; set \[venue\] local_clock_offset"):
        corrected_local_times(later)
    assert (corrected_local_times(synth_tape) >= synth_tape.ts_exch).all()  # a feed's lag is only shifted forward


def test_an_unsynced_book_shows_no_prices_in_either_order():
    """Diffs that bridge a snapshot often arrive before it (real captures): locally they come first.

    Exchange order: a trade, reset + snapshot at 10 ms, two diffs; the diffs' local times (5, 6 ms)
    precede the snapshot's (12 ms). Levels they leave before the snapshot are no market: no price.
    """
    from tests.sim.test_engine import tape as hand_tape

    t = hand_tape([(0, 3, 1, 100, 1), (10, 2, 0, 0, 0), (10, 1, 1, 99, 5), (10, 1, -1, 101, 5),
                   (11, 0, 1, 100, 1), (11, 0, -1, 103, 1), (30, 2, 0, 0, 0), (40, 3, -1, 99, 1)])  # fmt: skip
    local = t.ts_local.copy()
    local[1:4] = 12_000_000
    local[4:6] = [5_000_000, 6_000_000]
    rep, order = prepare_replay(t, local)
    assert rep.synced.tolist() == [False, False, True, True, True, True, False, False]
    assert rep.best_bid.tolist() == [EMPTY, EMPTY, 99, 99, 100, 100, EMPTY, EMPTY]
    assert order.tolist() == [0, 4, 5, 1, 2, 3, 6, 7]
    assert rep.local_synced.tolist() == [False, False, False, False, True, True, False, False]
    assert rep.local_best_bid.tolist() == [EMPTY] * 4 + [99, 99, EMPTY, EMPTY]  # not 100 from the early diff
    assert rep.local_best_ask_qty.tolist() == [0.0] * 4 + [0.0, 5.0, 0.0, 0.0]
