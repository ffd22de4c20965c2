"""Market replay, prepared once per tape: everything the event loop needs from the order books.

Market data never depends on our passive orders, so the exchange-side book and the local-side
book evolve the same way in every backtest of a tape. One pass with the L2 book records, per tape
row: the quantity that was at the row's price before it (queue models need it) and the best bid
and ask after it (price-through fills and post-only checks need them); and, per event in local
time order, the best bid and ask the strategy would see. The event loop then runs without any
book, and a sweep shares these read-only arrays across all its parameter sets.

The quantity resting at an arbitrary price at an arbitrary moment (the queue ahead of a new
order) is answered from an index of book rows grouped by (side, price), in row order.

Building it: when the local times are already in order (synthetic tapes), one book pass records
both sides; otherwise the exchange-order pass and the local-order pass run on two threads. The
(side, price) index is built alongside, by a counting sort over dense key ranks: a key's offset
when the keys span few values, else its place among the distinct keys, numbered by a hash table
and sorted (a few thousand levels, not every row). The passes write out the book's in-window
level update (a numba call with array arguments costs atomic reference counting, more than the
update itself) and call `grinder.book.l2` for everything else; tests/sim/test_replay.py holds
them to l2.apply_row.
`load_or_prepare` adds an opt-in on-disk cache (`grinder.sim.replay_cache`, decision 006).

Book readiness is part of the replay (decision 021): a book is *synced* after a snapshot row and
unsynced before the first one and after any reset (a sequence break, or the start of another
coverage span: `grinder.data.tape` puts a reset there). While unsynced the recorded best prices
are EMPTY whatever levels the book still holds, so no stale price reaches the fill checks, the
strategy, the mid or the equity; `synced` and `local_synced` say so per row.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
from numba import njit

from grinder.book.l2 import (
    ASK,
    BID,
    EMPTY,
    FREE,
    H_BASE,
    H_BEST,
    H_W,
    H_WN,
    TOMB,
    _find_best,
    _oget,
    _recentre,
    clear_side,
    grow,
    new_book,
    set_level,
)
from grinder.data.tape import Tape

# Group key of a (side, price) level in Replay.level_ukeys: bids carry this bit, asks do not.
SIDE_BIT = np.int64(1) << np.int64(62)
# A whole tape's starting book: empty (`qty_at_cursor`).
NO_KEYS, NO_QTY = np.empty(0, np.int64), np.empty(0)
_I64_MAX = np.iinfo(np.int64).max
_I64_MIN = np.iinfo(np.int64).min
_COUNTING_MIN = 1 << 16  # the level index is a counting sort when key ranks span fewer than max(this, rows)
_FIB = np.uint64(0x9E3779B97F4A7C15)  # 2^64 / golden ratio: the level index's multiplicative hash


@dataclass(frozen=True)
class Replay:
    """Per-row book facts of a tape (exchange order) and the local side's view (local order).

    Arrays are read-only. When the local times are already sorted, the local best prices are the
    exchange-order ones (the same arrays) and `local_ts` is a read-only view of the times passed in.
    """

    prev_qty: np.ndarray  # float64: quantity at the row's side and price before the row (book rows)
    best_bid: np.ndarray  # int64 ticks after the row, EMPTY if none (exchange side)
    best_ask: np.ndarray
    local_ts: np.ndarray  # int64 ns: corrected local times, sorted
    local_best_bid: np.ndarray  # int64 ticks after each local event, in local order
    local_best_ask: np.ndarray
    local_best_bid_qty: np.ndarray  # float64 base units at those prices
    local_best_ask_qty: np.ndarray
    level_rows: np.ndarray  # int64: book row indices grouped by (side, price), ascending within a group
    # A level's rows are level_rows[level_starts[u]:level_starts[u + 1]] for its key level_ukeys[u]
    # (SIDE_BIT for bids + price): one short search per order placed instead of two over every row.
    level_ukeys: np.ndarray  # int64: the distinct group keys, ascending
    level_starts: np.ndarray  # int64: len(level_ukeys) + 1 offsets into level_rows
    reset_rows: np.ndarray  # int64: indices of reset rows, with reset_sides (+1, -1, 0 both)
    reset_sides: np.ndarray
    synced: np.ndarray  # bool: the book is whole after the row (exchange order; decision 021)
    local_synced: np.ndarray  # bool: the same after each local event, in local order


REPLAY_FIELDS = tuple(f.name for f in fields(Replay))


@njit(cache=True, nogil=True)
def _book_pass(start, pending, order, local, kind, side, ticks, qty, hdr, wq, ok, oq, prev_q, bb, ba, bbq, baq, lts,
               syn, synced0):  # fmt: skip
    """Apply rows to the book in `order` (tape order if empty) from position `start`, recording after each.

    prev_q[i] (if non-empty): quantity at row i's level before it, 0 for other rows; bb, ba[j]: best
    ticks after the j-th applied row; bbq, baq[j] (if non-empty): the quantities there; lts[j] (if
    non-empty): local[order[j]]; syn[j]: whether the book is synced after it (a snapshot row syncs
    it, a reset unsyncs it, it starts as `synced0`); while unsynced bb, ba are EMPTY and bbq, baq 0.
    Rows change the book as l2.apply_row does: resets clear sides,
    trades nothing, book rows set a level. The common case, a level inside the dense window, is
    l2.set_level's first branch written out (calls with array arguments cost more than the update).

    Returns -1 when done, or the position whose set_level needs a larger overflow tier: grow it
    (l2.grow) and call again from there with `pending`, which repeats set_level for that row
    (apply_row's loop). Growing outside keeps the overflow arrays loop-invariant here.
    """
    n = bb.shape[0]
    direct = order.shape[0] == 0
    with_prev = prev_q.shape[0] > 0
    with_qty = bbq.shape[0] > 0
    with_ts = lts.shape[0] > 0
    w = hdr[H_W]
    lo_edge = w // 8
    hi_edge = w - w // 8
    valid = syn[start - 1] if start > 0 else synced0
    for j in range(start, n):
        i = j if direct else order[j]
        k = kind[i]
        if j == start and pending:
            if set_level(hdr, wq, ok, oq, BID if side[i] > 0 else ASK, ticks[i], qty[i]) == 1:
                return j
        elif k <= 1:
            s = BID if side[i] > 0 else ASK
            p = ticks[i]
            q = qty[i]
            base = hdr[H_BASE]
            inside = False
            idx = 0
            if base != EMPTY:
                idx = p - base
                inside = 0 <= idx < w
            if with_prev:
                if base == EMPTY:
                    prev_q[i] = 0.0
                elif inside:
                    prev_q[i] = wq[s, idx]
                else:
                    prev_q[i] = _oget(hdr, ok, oq, s, p)
            if inside:
                # l2.set_level for a level inside the window.
                old = wq[s, idx]
                wq[s, idx] = q if q > 0.0 else 0.0
                if old > 0.0 and q <= 0.0:
                    hdr[H_WN + s] -= 1
                elif old <= 0.0 and q > 0.0:
                    hdr[H_WN + s] += 1
                best = hdr[H_BEST + s]
                if q > 0.0:
                    if best == EMPTY or (s == BID and p > best) or (s == ASK and p < best):
                        hdr[H_BEST + s] = p
                elif p == best:
                    hdr[H_BEST + s] = _find_best(hdr, wq, ok, s, idx - 1 if s == BID else idx + 1)
                b = hdr[H_BEST + s]
                if b != EMPTY:
                    e = b - hdr[H_BASE]
                    if e < lo_edge or e >= hi_edge:
                        if _recentre(hdr, wq, ok, oq, b) == 1:
                            return j  # set_level returns 1 here
                        hdr[H_BEST] = _find_best(hdr, wq, ok, BID, w - 1)
                        hdr[H_BEST + 1] = _find_best(hdr, wq, ok, ASK, 0)
            elif set_level(hdr, wq, ok, oq, s, p, q) == 1:
                return j
        else:
            if with_prev:
                prev_q[i] = 0.0
            if k == 2:
                if side[i] >= 0:
                    clear_side(hdr, wq, ok, oq, BID)
                if side[i] <= 0:
                    clear_side(hdr, wq, ok, oq, ASK)
        if k == 1:
            valid = True
        elif k == 2:
            valid = False
        syn[j] = valid
        if not valid:
            # Levels from before a reset or before any snapshot are no market: show none.
            bb[j] = EMPTY
            ba[j] = EMPTY
            if with_qty:
                bbq[j] = 0.0
                baq[j] = 0.0
            if with_ts:
                lts[j] = local[i]
            continue
        bb[j] = hdr[H_BEST]
        ba[j] = hdr[H_BEST + 1]
        if with_qty:
            # l2.best_qty of both sides.
            base = hdr[H_BASE]
            for s in range(2):
                b = hdr[H_BEST + s]
                bq = 0.0
                if b != EMPTY and base != EMPTY:
                    e = b - base
                    bq = wq[s, e] if 0 <= e < w else _oget(hdr, ok, oq, s, b)
                if s == BID:
                    bbq[j] = bq
                else:
                    baq[j] = bq
        if with_ts:
            lts[j] = local[i]
    return -1


def _replay_pass(order, local, kind, side, ticks, qty, prev_q, bb, ba, bbq, baq, lts, syn, window=1 << 15,
                 overflow=4096, book=None, synced0=False):  # fmt: skip
    """Run _book_pass over all rows, growing the book's overflow tier when asked to; returns the book.

    The book is a new one, or `book` (hdr, wq, ok, oq) as an earlier pass left it, synced or not
    (`synced0`): a tape replayed chunk by chunk (`grinder.sim.chunked`) carries it across chunks.
    """
    hdr, wq, ok, oq = new_book(window, overflow) if book is None else book
    j, pending = 0, False
    while True:
        j = _book_pass(j, pending, order, local, kind, side, ticks, qty, hdr, wq, ok, oq, prev_q, bb, ba, bbq, baq, lts,
                       syn, synced0)  # fmt: skip
        if j < 0:
            return hdr, wq, ok, oq
        ok, oq = grow(hdr, ok, oq)
        pending = True


@njit(cache=True, nogil=True)
def _is_sorted(a):
    for i in range(1, a.shape[0]):
        if a[i] < a[i - 1]:
            return False
    return True


@njit(cache=True, inline="always")
def level_key(side_code, ticks):
    """The sort key of a (side, price in ticks) level in level_ukeys: bids above every ask."""
    return (SIDE_BIT if side_code > 0 else np.int64(0)) + ticks


@njit(cache=True, inline="always")
def _hash_slot(key, bits):
    """Slot of a level key in a hash table of 2**bits slots (multiplicative hashing, top bits)."""
    return np.int64((np.uint64(key) * _FIB) >> np.uint64(64 - bits))


@njit(cache=True, nogil=True)
def _key_table(byid, count, d, bits):
    """A hash table of 2**bits slots (keys, ids) holding the first d keys of `byid`; room for ids and their counts."""
    cap = 1 << bits
    tkey = np.empty(cap, np.int64)
    tid = np.full(cap, -1, np.int64)
    grown = np.empty(cap // 2, np.int64)
    grown[:d] = byid[:d]
    counts = np.zeros(cap // 2, np.int64)
    counts[:d] = count[:d]
    for e in range(d):
        h = _hash_slot(grown[e], bits)
        while tid[h] >= 0:
            h = (h + 1) & (cap - 1)
        tid[h] = e
        tkey[h] = grown[e]
    return tkey, tid, grown, counts


@njit(cache=True, nogil=True)
def _number_keys(kind, side, ticks, start, m, d, most, bits, tkey, tid, byid, count, ids):
    """Give the book rows' keys from row `start` on ids in first-seen order (ids[m], ...), counting rows per id.

    `d` keys have ids so far. Returns (row, m, d): row = len(kind) when done, the row to resume at
    once the table has grown (it would be more than half full), or -1 when there are more than
    `most` distinct keys. The table is an argument, not grown in here: arrays rebound inside the
    loop slow it down (decision 006).
    """
    cap = tkey.shape[0]
    n = kind.shape[0]
    for i in range(start, n):
        if kind[i] > 1:
            continue
        key = level_key(side[i], ticks[i])
        h = _hash_slot(key, bits)
        while tid[h] >= 0 and tkey[h] != key:
            h = (h + 1) & (cap - 1)
        if tid[h] < 0:
            if d == most:
                return -1, m, d
            if 2 * (d + 1) > cap:
                return i, m, d
            tid[h] = d
            tkey[h] = key
            byid[d] = key
            d += 1
        u = tid[h]
        ids[m] = u
        count[u] += 1
        m += 1
    return n, m, d


@njit(cache=True, nogil=True)
def _levels(kind, side, ticks):
    """The (side, price) index of book rows and the resets, or (mode 2) the book rows' keys to sort for it.

    Rows are ordered by (key, row), as lexsort((rows, keys)) would. Both modes give every distinct
    key a dense rank and place rows by a counting sort over the ranks, so rows keep their order
    within a level. Mode 0: the keys span few values (fewer than max(_COUNTING_MIN, book rows) once
    the gap between the asks' and the bids' keys is left out), and the rank is the key's offset.
    Mode 1: the keys are spread out (Binance snapshots reach levels a tenth and ten times the
    price away) but few are distinct (at most a quarter of the rows, or 1,024), so a hash table
    numbers them as they come and one sort of the distinct keys ranks them. Mode 2 (more distinct
    keys than that): `keys` holds each book row's key, in row order, for a stable sort.
    Returns (rows, ukeys, starts, keys, reset_rows, reset_sides, mode).
    """
    n = kind.shape[0]
    nb = 0
    na = 0
    nr = 0
    amin = bmin = _I64_MAX
    amax = bmax = _I64_MIN
    for i in range(n):
        k = kind[i]
        if k <= 1:
            nb += 1
            key = level_key(side[i], ticks[i])
            if side[i] > 0:
                bmin = min(bmin, key)
                bmax = max(bmax, key)
            else:
                na += 1
                amin = min(amin, key)
                amax = max(amax, key)
        elif k == 2:
            nr += 1
    resets = np.empty(nr, np.int64)
    reset_sides = np.empty(nr, np.int64)
    r = 0
    for i in range(n):
        if kind[i] == 2:
            resets[r] = i
            reset_sides[r] = side[i]
            r += 1
    # Mode 0's ranks: asks' keys from base_a, then bids' keys from base_b after the asks' span_a.
    limit = np.uint64(1) << np.uint64(62)
    if na == 0 or na == nb or amax < bmin:
        da = np.uint64(amax - amin) if na > 0 else np.uint64(0)
        db = np.uint64(bmax - bmin) if nb > na else np.uint64(0)
        span_a = da + np.uint64(1) if 0 < na < nb else np.uint64(0)
        base_a = amin if na > 0 else bmin
        base_b = bmin if nb > na else amin
        small = da < limit and db < limit
        top = span_a + db if nb > na else da
    else:
        lo, hi = min(amin, bmin), max(amax, bmax)
        span_a, base_a, base_b = np.uint64(0), lo, lo
        top = np.uint64(hi - lo)
        small = top < limit
    rows = np.empty(nb, np.int64)
    none = np.empty(0, np.int64)
    if nb == 0:
        return rows, none, np.zeros(1, np.int64), none, resets, reset_sides, 0
    if small and top < np.uint64(max(nb, _COUNTING_MIN)):
        at = np.zeros(np.int64(top) + 2, np.int64)
        for i in range(n):
            if kind[i] <= 1:
                key = level_key(side[i], ticks[i])
                rank = span_a + np.uint64(key - base_b) if side[i] > 0 else np.uint64(key - base_a)
                at[np.int64(rank) + 1] += 1
        d = 0
        for v in range(1, at.shape[0]):
            d += at[v] > 0
        ukeys = np.empty(d, np.int64)
        starts = np.empty(d + 1, np.int64)
        u = 0
        for v in range(1, at.shape[0]):
            if at[v] > 0:
                rank = np.uint64(v - 1)
                ukeys[u] = base_a + np.int64(rank) if rank < span_a else base_b + np.int64(rank - span_a)
                starts[u] = at[v - 1]
                u += 1
            at[v] += at[v - 1]
        starts[d] = nb
        for i in range(n):
            if kind[i] <= 1:
                key = level_key(side[i], ticks[i])
                rank = np.int64(span_a + np.uint64(key - base_b) if side[i] > 0 else np.uint64(key - base_a))
                m = at[rank]
                rows[m] = i
                at[rank] = m + 1
        return rows, ukeys, starts, none, resets, reset_sides, 0
    # Mode 1: ids in first-seen order from an open-addressing table (kept at most half full).
    most = max(nb // 4, 1 << 10)
    bits = 10
    tkey, tid, byid, count = _key_table(none, none, 0, bits)
    ids = np.empty(nb, np.int32)
    i = m = d = 0
    while True:
        i, m, d = _number_keys(kind, side, ticks, i, m, d, most, bits, tkey, tid, byid, count, ids)
        if i < 0 or i == n:
            break
        bits += 1
        tkey, tid, byid, count = _key_table(byid, count, d, bits)
    if m < nb:
        keys = np.empty(nb, np.int64)
        m = 0
        for i in range(n):
            if kind[i] <= 1:
                rows[m] = i
                keys[m] = level_key(side[i], ticks[i])
                m += 1
        return rows, none, none, keys, resets, reset_sides, 2
    by_rank = np.argsort(byid[:d])
    rank_of = np.empty(d, np.int64)
    for r in range(d):
        rank_of[by_rank[r]] = r
    starts = np.zeros(d + 1, np.int64)
    for r in range(d):
        starts[r + 1] = starts[r] + count[by_rank[r]]
    at = starts[:d].copy()
    m = 0
    for i in range(n):
        if kind[i] <= 1:
            r = rank_of[ids[m]]
            rows[at[r]] = i
            at[r] += 1
            m += 1
    return rows, byid[:d][by_rank], starts, none, resets, reset_sides, 1


def _level_index(kind, side, ticks):
    """(level_rows, level_ukeys, level_starts, reset_rows, reset_sides) of the tape columns."""
    rows, ukeys, starts, keys, resets, reset_sides, mode = _levels(kind, side, ticks)
    if mode == 2:
        g = np.argsort(keys, kind="stable")
        rows, keys = rows[g], keys[g]
        first = np.flatnonzero(np.diff(keys)) + 1
        starts = np.concatenate(([0], first, [len(keys)])).astype(np.int64)
        ukeys = keys[starts[:-1]]
    return rows, ukeys, starts, resets, reset_sides


def _build(tape: Tape, local_ts: np.ndarray, want_order: bool) -> tuple[Replay, np.ndarray | None]:
    kind, side, ticks, qty = (np.ascontiguousarray(a) for a in (tape.kind, tape.side, tape.price_ticks, tape.qty))
    local = np.ascontiguousarray(local_ts, dtype=np.int64)
    n = len(kind)
    if local.shape != (n,):
        raise ValueError(f"local_ts has shape {local.shape}; the tape has {n} rows")
    none_f, none_i = np.empty(0), np.empty(0, np.int64)
    prev_q, bb, ba = np.empty(n), np.empty(n, np.int64), np.empty(n, np.int64)
    bbq, baq = np.empty(n), np.empty(n)
    syn = np.empty(n, np.bool_)
    order = None
    # Beside this thread, one worker on two cores: three passes on three threads would only take
    # turns on them (decision 006).
    with ThreadPoolExecutor(max_workers=1 if (os.cpu_count() or 1) <= 2 else 2) as pool:
        index = pool.submit(_level_index, kind, side, ticks)
        if _is_sorted(local):
            # Local order is tape order: one pass records both sides' facts.
            _replay_pass(none_i, none_i, kind, side, ticks, qty, prev_q, bb, ba, bbq, baq, none_i, syn)
            lbb, lba, lts, lsyn = bb, ba, local.view(), syn
            if want_order:
                order = np.arange(n)
        else:
            ex = (prev_q, bb, ba, none_f, none_f, none_i, syn)
            exch = pool.submit(_replay_pass, none_i, none_i, kind, side, ticks, qty, *ex)
            order = np.argsort(local, kind="stable")  # = lexsort((arange(n), local))
            lbb, lba, lts = np.empty(n, np.int64), np.empty(n, np.int64), np.empty(n, np.int64)
            lsyn = np.empty(n, np.bool_)
            _replay_pass(order, local, kind, side, ticks, qty, none_f, lbb, lba, bbq, baq, lts, lsyn)
            exch.result()
        level_rows, ukeys, starts, resets, reset_sides = index.result()
    arrays = (prev_q, bb, ba, lts, lbb, lba, bbq, baq, level_rows, ukeys, starts, resets, reset_sides, syn, lsyn)
    for a in arrays:
        a.flags.writeable = False
    return Replay(*arrays), order


def build_replay(tape: Tape, local_ts: np.ndarray) -> Replay:
    """The Replay of `tape` with the given (corrected) local times."""
    return _build(tape, local_ts, False)[0]


def prepare_replay(tape: Tape, local_ts: np.ndarray) -> tuple[Replay, np.ndarray]:
    """The Replay of `tape` with the given (corrected) local times, and the local order permutation."""
    return _build(tape, local_ts, True)


def load_or_prepare(tape: Tape, local_ts: np.ndarray, cache_dir: Path | str | None = None) -> Replay:
    """The Replay of `tape` with local times `local_ts`; with `cache_dir`, opened from there or built and stored.

    Cached replays are read-only memory maps keyed by a digest of what they depend on (see
    `grinder.sim.replay_cache`); `replay_cache.cache_root(lake_root)` is the conventional folder.
    """
    if cache_dir is None:
        return build_replay(tape, local_ts)
    from grinder.sim import replay_cache

    return replay_cache.load_or_build(tape, local_ts, cache_dir)


@njit(cache=True)
def qty_before(level_rows, level_ukeys, level_starts, reset_rows, reset_sides, qty, side_code, price_ticks, row,
               init_keys=NO_KEYS, init_qty=NO_QTY):  # fmt: skip
    """Quantity resting at (side, price) once rows [0, row) have been applied (after the book
    `init_keys`, `init_qty` that the rows start from: empty for a whole tape; see `book_levels`)."""
    lo, first, _ = level_cursor(level_rows, level_ukeys, level_starts, side_code, price_ticks, row)
    return qty_at_cursor(level_rows, reset_rows, reset_sides, qty, side_code, lo, first, row, init_keys, init_qty,
                         level_key(side_code, price_ticks))  # fmt: skip


@njit(cache=True, _nrt=False)
def _first_at_or_after(a, lo, hi, x):
    """The first position in a[lo:hi] (sorted) whose value is >= x, or hi (no view: no reference counting)."""
    while lo < hi:
        mid = (lo + hi) >> 1
        if a[mid] < x:
            lo = mid + 1
        else:
            hi = mid
    return lo


@njit(cache=True, _nrt=False)
def qty_at_cursor(level_rows, reset_rows, reset_sides, qty, side_code, lo, first, row, init_keys, init_qty, key):
    """qty_before for a level (group key `key`) whose rows start at `lo` in level_rows, `first` being
    its first from `row` on; without a row there before `row`, what the starting book held."""
    last = level_rows[first - 1] if first > lo else -1  # the last row at this level before `row`
    if last < 0 and init_keys.shape[0] == 0:
        return 0.0  # a whole tape starts from an empty book
    # A reset of this side after that row clears the level.
    r = _first_at_or_after(reset_rows, 0, reset_rows.shape[0], row) - 1
    while r >= 0 and reset_rows[r] > last:
        if reset_sides[r] == 0 or (reset_sides[r] > 0) == (side_code > 0):
            return 0.0
        r -= 1
    if last >= 0:
        return qty[last]
    u = _first_at_or_after(init_keys, 0, init_keys.shape[0], key)
    return init_qty[u] if u < init_keys.shape[0] and init_keys[u] == key else 0.0


@njit(cache=True, nogil=True)
def book_levels(hdr, wq, ok, oq):
    """(group keys ascending, quantities) of every level the book holds: where a chunk's rows start
    from (`qty_at_cursor`)."""
    n = 2 * (wq.shape[1] + ok.shape[1])
    keys = np.empty(n, np.int64)
    qs = np.empty(n)
    m = 0
    base = hdr[H_BASE]
    for s in range(2):
        code = 1 if s == BID else -1
        if base != EMPTY:
            for i in range(wq.shape[1]):
                if wq[s, i] > 0.0:
                    keys[m], qs[m] = level_key(code, base + i), wq[s, i]
                    m += 1
        for i in range(ok.shape[1]):
            if ok[s, i] != FREE and ok[s, i] != TOMB and oq[s, i] > 0.0:
                keys[m], qs[m] = level_key(code, ok[s, i]), oq[s, i]
                m += 1
    order = np.argsort(keys[:m])
    return keys[:m][order], qs[:m][order]


@njit(cache=True, _nrt=False)
def level_of(level_ukeys, side_code, price_ticks):
    """Index of the (side, price) level in level_ukeys, or -1 when no book row of the tape is there."""
    key = level_key(side_code, price_ticks)
    u = _first_at_or_after(level_ukeys, 0, level_ukeys.shape[0], key)
    if u == level_ukeys.shape[0] or level_ukeys[u] != key:
        return -1
    return u


@njit(cache=True, _nrt=False)
def level_cursor(level_rows, level_ukeys, level_starts, side_code, price_ticks, row):
    """(start, first, end): positions in level_rows of the (side, price) level's rows, and its first from `row` on."""
    u = level_of(level_ukeys, side_code, price_ticks)
    if u < 0:
        return 0, 0, 0
    lo, hi = level_starts[u], level_starts[u + 1]
    return lo, _first_at_or_after(level_rows, lo, hi, row), hi
