"""Backtests over a tape that arrives in chunks: memory bounded by a chunk, the result of one whole-tape run.

A month of depth does not fit in memory as one tape and its replay. Here the tape comes as chunks
of consecutive rows in exchange order (a `ChunkSource`: a day of the lake, or slices of a tape in
memory), each prepared and run before the next is read, with everything that crosses a boundary
carried over:

- the exchange's and the local side's books (`replay._replay_pass` goes on from the book an
  earlier chunk left) and whether each is synced;
- the last row before the chunk (its "ghost": row 0 of the chunk's arrays, already applied), which
  the loop reads as the row before the first (best prices before it, the book's sync);
- the book the chunk starts from, as levels (`replay.book_levels`), for the queue ahead of an
  order placed at a price the chunk's rows have not touched yet (`replay.qty_at_cursor`);
- local events whose local time is after the chunk's end (they reach the strategy in a later chunk),
  and the last local event before it (the local side's ghost);
- the loop's state (`engine.begin_chunks`): resting orders, their queues (brought up to date
  through the chunk's last row when it ends: `exchange_side.queues_to_chunk_end`), messages in
  flight, the ledger, the records, and where its clock is (`engine._loop`'s carry).

A chunk holds every row up to its end time `end_ns`; the loop pauses before its first decision
after it, once the exchange side has applied every row and request up to it. The local side can
follow because a local time is never before its exchange time (with the venue's default clock
correction; a fixed `local_clock_offset_ns` that puts rows earlier is refused). The decision clock
(start, segments across coverage gaps) and the local clock correction need the whole tape's times:
two passes over the chunks' time columns find them before the run (`ClockFacts`). Decisions are
looked up as the loop goes (not tabulated), as for runs with more than MAX_TABULATED_DECISIONS.

The result, fills, step records, counters and digest, is the whole-tape run's (tests/sim/test_chunked.py).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import numbers
import tempfile
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import pyarrow as pa

from grinder.core.gates import GateConfig
from grinder.data.chunks import Chunk, TimeFacts, chunk_length, time_facts_of
from grinder.data.instruments import Instrument
from grinder.data.tape import Series, Tape
from grinder.errors import ConfigError, DataError
from grinder.sim.backtest import (
    FILL_CAP,
    MAX_CLOCK_LEAD_NS,
    NO_DEPTH_TABLE,
    STALE_NS,
    BacktestResult,
    LatencySeries,
    SignalSeries,
    VenueConfig,
    _setup,
    funding_settlements,
)
from grinder.sim.bus import MAX_TS
from grinder.sim.clock import _gap_skip, segment_steps
from grinder.sim.engine import (
    CARRY_ENDED,
    CARRY_SIZE,
    CARRY_STATE,
    ExchangeBook,
    Levels,
    TapeRows,
    Venue,
    begin_chunks,
    finish_chunks,
    resume_chunk,
)
from grinder.sim.exchange_side import block_extremes, new_level_cache, queues_from_chunk_start, queues_to_chunk_end
from grinder.sim.records import COUNTER, new_steps
from grinder.sim.replay import NO_KEYS, NO_QTY, _level_index, _replay_pass, book_levels

DAY_NS = 86_400 * 10**9


class ChunkSource(Protocol):
    """Where a chunked run reads its tape from: the instrument, the window's start (ns, 0: none),
    the funding series (as Tape.funding) and its settlements (engine.Funding arrays), the rows,
    chunk by chunk, as often as asked, and what a pass over their times tells (`TimeFacts`)."""

    instrument: Instrument
    window_start_ns: int
    funding_series: Series

    def funding(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]: ...

    def chunks(self, times_only: bool = False) -> Iterator[Chunk]: ...

    def time_facts(self) -> TimeFacts: ...


@dataclass(frozen=True)
class TapeChunks:
    """A tape in memory served in chunks of `chunk_ns` of exchange time (the first from the tape's
    first row; none empty: a gap's chunks are left out): what tests compare with one whole-tape run,
    and a way to bound a run's replay."""

    tape: Tape
    chunk_ns: int = DAY_NS

    def __post_init__(self) -> None:
        object.__setattr__(self, "chunk_ns", chunk_length(self.chunk_ns))

    @property
    def instrument(self) -> Instrument:
        return self.tape.instrument

    @property
    def window_start_ns(self) -> int:
        return self.tape.window_start_ns

    @property
    def funding_series(self) -> Series:
        return self.tape.funding

    def funding(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return funding_settlements(self.tape)

    def time_facts(self) -> TimeFacts:
        return time_facts_of(self.chunks(times_only=True))

    def chunks(self, times_only: bool = False) -> Iterator[Chunk]:
        t = self.tape
        ts = np.ascontiguousarray(t.ts_exch)
        n = len(ts)
        lo = 0
        end = int(ts[0]) + self.chunk_ns if n else 0
        while True:
            if lo < n and ts[lo] > end:
                end += -(-(int(ts[lo]) - end) // self.chunk_ns) * self.chunk_ns  # no empty chunk across a gap
            hi = int(np.searchsorted(ts, end, "right")) if n else 0
            last = hi >= n
            cols = (t.kind, t.side, t.price_ticks, t.qty, t.flags)
            yield Chunk(
                ts[lo:hi],
                t.ts_local[lo:hi],
                *((None,) * 5 if times_only else (np.ascontiguousarray(c[lo:hi]) for c in cols)),
                end_ns=None if last else end,
            )
            if last:
                return
            lo, end = hi, end + self.chunk_ns


@dataclass(frozen=True)
class ClockFacts:
    """What the run needs from the whole tape's times before it starts: the local clock's offset
    (ns, added to ts_local), the decision clock's t0, last event time and segments
    (clock.decision_segments), the number of rows, and each chunk's end (ns; None for the last)."""

    offset: int
    t0: int
    last_ts: int
    segments: np.ndarray
    rows: int
    ends: tuple = ()

    def steps_upto(self, end_ns: int | None, step_ns: int) -> int:
        """The clock's recorded steps (those in `segments`) whose time is at or before end_ns (None: all)."""
        segs = self.segments
        k = None if end_ns is None else (end_ns - self.t0) // step_ns
        total = 0
        for a, b in zip(segs[0::2].tolist(), segs[1::2].tolist(), strict=True):
            top = b if k is None else min(b, k)
            total += max(0, top - a + 1)
        return total


def clock_facts(source: ChunkSource, venue: VenueConfig, start_ns: int) -> ClockFacts:
    """ClockFacts from two passes over the source's time columns (the source's `time_facts`, then its
    corrected local times in order): the same values as backtest.local_times, clock.decision_clock and
    clock.decision_segments over the whole tape."""
    tf = source.time_facts()
    rows, min_lag, max_lead, ends = tf.rows, tf.min_lag, 0, tf.ends
    first_exch, last_exch, min_local, max_local = tf.first_exch, tf.last_exch, tf.min_local, tf.max_local
    if venue.local_clock_offset_ns is None:
        if min_lag is not None and min_lag > MAX_CLOCK_LEAD_NS:
            raise DataError(
                f"{source.instrument.symbol}: every local time is at least {min_lag / 3.6e12:.1f} h after its "
                f"exchange time; set [venue] local_clock_offset_ns = {-min_lag} (or the offset the recording printed)"
            )
        offset = max(0, venue.feed_latency_floor_ns - min_lag) if min_lag is not None else 0
    else:
        offset = venue.local_clock_offset_ns
        max_lead = max(0, -(min_lag + offset)) if min_lag is not None else 0
    if max_lead > 0:
        raise ConfigError(
            f"local_clock_offset_ns = {offset} puts local times up to {max_lead} ns before their exchange times; "
            "a chunked run needs every event received at or after it was sent (leave the offset unset to correct it)"
        )
    if rows == 0:
        t0 = start_ns
        return ClockFacts(offset, t0, t0, np.array([1, 1], np.int64), 0, tuple(ends))
    t0 = start_ns if start_ns > 0 else min(first_exch, min_local + offset)
    last_ts = max(last_exch, max_local + offset)
    cap = max(1, (last_ts - t0) // venue.step_ns + 2)
    pairs: list[int] = [1]
    prev = t0  # the clock's origin counts as an event
    scratch = np.empty(3, np.int64)
    for local in _local_stream(source, offset):
        x = local[local > t0]  # events up to t0 do not move the clock's origin
        if len(x) == 0:
            continue
        seq = np.concatenate(([prev], x))
        for i in np.flatnonzero(np.diff(seq) > STALE_NS):
            if _gap_skip(int(seq[i]), int(seq[i + 1]), t0, venue.step_ns, STALE_NS, scratch, 0, True):
                pairs += [int(scratch[1]), int(scratch[2])]
        prev = int(x[-1])
    pairs.append(cap)
    return ClockFacts(offset, t0, last_ts, np.array(pairs, np.int64), rows, tuple(ends))


def _local_stream(source: ChunkSource, offset: int) -> Iterator[np.ndarray]:
    """The tape's corrected local times, sorted, chunk by chunk: those at or before each chunk's end."""
    left = np.empty(0, np.int64)
    for c in source.chunks(times_only=True):
        pending = np.concatenate((left, c.ts_local + offset))
        pending.sort(kind="stable")
        k = len(pending) if c.end_ns is None else int(np.searchsorted(pending, c.end_ns, "right"))
        yield pending[:k]
        left = pending[k:]


@dataclass
class _Carry:
    """What one chunk hands the next, outside the loop's state (see the module docstring)."""

    exchange_book: tuple | None = None
    exchange_synced: bool = False
    local_book: tuple | None = None
    local_synced: bool = False
    ghost: tuple | None = None  # TapeRows + ExchangeBook columns of the last row, 1 long each
    local_ghost: tuple | None = None  # LocalBook columns of the last local event
    left: tuple = field(default_factory=lambda: tuple(np.empty(0, d) for d in (np.int64, np.int8, np.int8, np.int64,
                                                                                 np.float64)))  # fmt: skip
    events: int = 0  # exchange rows the loop processed


def _ro(*arrays: np.ndarray) -> tuple[np.ndarray, ...]:
    out = []
    for a in arrays:
        a = np.ascontiguousarray(a)
        if a.flags.writeable and a.base is not None:
            a = a.copy()  # not a view of a caller's array: that one stays writable
        a.flags.writeable = False
        out.append(a)
    return tuple(out)


def run_chunked(
    source: ChunkSource,
    strategy,
    params: np.ndarray,
    venue: VenueConfig,
    max_targets: int | None = None,
    start_ns: int | None = None,
    gates: GateConfig | None = None,
    state_size: int = 64,
    latency: LatencySeries | None = None,
    record: str = "all",
    signals: SignalSeries | None = None,
    progress: Callable[[int, int], None] | None = None,
    on_chunk: Callable[[Chunk], None] | None = None,
    steps_sink: Callable[[dict, dict], None] | None = None,
    fills_sink: Callable[[dict | None], None] | None = None,
) -> BacktestResult:
    """`backtest.run_backtest` over a tape read chunk by chunk from `source`: the same arguments,
    the same result, with at most one chunk's rows and replay in memory at a time.

    `progress(rows_done, rows_total)` is called after each chunk; `on_chunk(chunk)` sees each chunk
    once, as the run reads it (e.g. provenance.TapeFingerprint.add), before it is run. With
    `steps_sink(steps, qrules)` each chunk's step records go there as the run passes it (the result's
    `steps` and `qrules` are then empty): what a run's memory would otherwise grow by, ~90 bytes a
    decision (24 with record="equity"). Fill buffers grow between chunks; should one chunk fill more
    than the half left, the run starts over with larger ones, and the sink is first told so with
    `steps_sink(None, None)`, then handed every chunk's steps again.

    With `fills_sink(fills)` each chunk's fills (columns as the result's `fills`) go there after the
    chunk, and the result holds none; they are also written to a temporary folder and read back once
    for the digest, which is the one the run would have with them kept. Should a chunk fill more than
    the buffers hold, the sink is told `fills_sink(None)` before it is handed every chunk's fills again.
    """
    setup = _setup(source.instrument, strategy, venue, max_targets, gates, latency, record, signals)
    if setup.depth_levels:
        raise ConfigError(f"{setup.strategy_name}: reads {setup.depth_levels} levels of the book at each decision (its "
                          "depth_levels or the L2 guard's); a chunked run does not tabulate them yet: run the "
                          "window whole")  # fmt: skip
    if start_ns is None:
        start_ns = source.window_start_ns
    facts = clock_facts(source, venue, int(start_ns))
    funding = _ro(*source.funding())
    fed = [0]  # chunks on_chunk has seen: a rerun reads the first ones again

    def feed(i: int, chunk: Chunk) -> None:
        if on_chunk is not None and i == fed[0]:
            on_chunk(chunk)
            fed[0] += 1

    fill_cap = FILL_CAP
    spilled = nullcontext(None) if fills_sink is None else tempfile.TemporaryDirectory(prefix="grinder-fills-")
    with spilled as spill_dir:
        spill = None if fills_sink is None else _Spill(spill_dir, setup, fills_sink)
        while True:
            gates_args = setup.new_gates()
            out, events = _run_once(source, setup, facts, funding, venue, int(start_ns), params, state_size, fill_cap,
                                    gates_args, progress, feed, steps_sink, spill)  # fmt: skip
            if not out[-1]:
                break
            fill_cap *= 4  # more fills than the buffers hold: run again with larger ones
            if steps_sink is not None:
                steps_sink(None, None)
            if spill is not None:
                spill.restart()
        out[5][COUNTER.exchange_events] = events
        return setup.result(out, gates_args, None if spill is None else spill.columns())


class _Spill:
    """A run's fills as it hands them to its sink, also appended column by column to files in `folder`,
    from which the run's digest is read back (`RunSetup.result`'s `handed_out`)."""

    def __init__(self, folder: str, setup, sink: Callable[[dict | None], None]) -> None:
        self.setup, self.sink, self.folder = setup, sink, folder
        self.names: list[str] = []  # the result's fill columns, known from the first chunk's

    def restart(self) -> None:
        """Start over (the run goes again with larger fill buffers): the files emptied, the sink told."""
        for k in self.names:
            open(f"{self.folder}/{k}", "wb").close()
        self.sink(None)

    def add(self, fill_cols: tuple) -> None:
        """A chunk's fills (the loop's fill columns): to the files, then to the sink."""
        fills = self.setup.fills_of(fill_cols)
        self.names = sorted(fills)
        for k in self.names:
            with open(f"{self.folder}/{k}", "ab") as fh:
                fh.write(np.ascontiguousarray(fills[k]).tobytes())
        self.sink(fills)

    def columns(self):
        """(name, the column's bytes in pieces) of every fill column, in name order, read from the files;
        None before any chunk was handed out (the run's own, empty, fills then give the digest)."""
        return [(k, self._pieces(k)) for k in self.names] or None

    def _pieces(self, k: str):
        with open(f"{self.folder}/{k}", "rb") as fh:
            while piece := fh.read(1 << 20):
                yield piece


_LIBC = ctypes.CDLL(ctypes.util.find_library("c")) if ctypes.util.find_library("c") else None


def _give_back() -> None:
    """Hand freed memory back to the system between chunks: Arrow's pool keeps freed Parquet buffers
    and glibc keeps freed heap pages (decision 047), which would otherwise pile up over a month's chunks."""
    pa.default_memory_pool().release_unused()
    trim = getattr(_LIBC, "malloc_trim", None)
    if trim is not None:
        trim(0)


def _run_once(source, setup, facts, funding, venue, start_ns, params, state_size, fill_cap, gates_args, progress,
              feed, sink, spill):  # fmt: skip
    """One attempt of run_chunked with fill buffers of `fill_cap`: (engine output, exchange rows processed)."""
    none_f, none_i = np.empty(0), np.empty(0, np.int64)
    cap = max(64, 4 * setup.max_targets)
    all_steps = setup.record == "all"
    # With a sink, each chunk's step buffers hold exactly the steps it records: the whole run's count
    # up to its end, less the earlier chunks' (the loop goes on unrecorded past a buffer's end).
    upto = [facts.steps_upto(e, venue.step_ns) for e in facts.ends] if sink else [segment_steps(facts.segments)]
    state = begin_chunks(cap, 1, setup.max_targets, fill_cap, upto[0], len(funding[0]), all_steps)
    recorded_steps = 0
    carry = np.zeros(CARRY_SIZE, np.int64)
    params = np.array(params, np.float64)
    strategy_state = np.zeros(state_size)
    empty_i, empty_f = _ro(none_i)[0], _ro(none_f)[0]
    decisions = (_ro(facts.segments)[0], empty_i, empty_i, empty_i, empty_f, empty_f, _ro(np.empty(0, np.bool_))[0],
                 NO_DEPTH_TABLE)  # fmt: skip
    clock = (start_ns, venue.step_ns, STALE_NS)
    lat = _ro(*setup.latency)
    venue_group = Venue(*setup.venue)
    done = np.zeros(1, np.int64)
    k = _Carry()
    prev_end = None
    for i, chunk in enumerate(source.chunks()):
        _check_chunk(i, chunk, prev_end)
        prev_end = chunk.end_ns
        feed(i, chunk)
        rows, book, blocks, levels, first_row = _exchange_arrays(chunk, k)
        local_book, first_event = _local_arrays(chunk, facts.offset, k)
        exchange, bus, local, decision, records = state
        exchange = exchange._replace(level_cache=new_level_cache(len(levels.ukeys)))
        state = (exchange, bus, local, decision, records)
        queues_from_chunk_start(levels, exchange, local.orders, first_row)
        exchange.state["next_row"][0] = first_row
        local.state["next_event"][0] = first_event
        pause = MAX_TS if chunk.end_ns is None else int(chunk.end_ns)
        try:
            resume_chunk(tuple(rows), tuple(book), tuple(blocks), tuple(levels), local_book, decisions,
                         setup.signals, funding, lat, clock, setup.venue, setup.kernel, params, strategy_state,
                         setup.max_targets, setup.reuse, gates_args, facts.t0, facts.last_ts, state, done, pause,
                         carry)  # fmt: skip
        except ValueError as e:  # raised by the loop about the strategy's output
            raise setup.kernel_error(e) from None
        k.events += int(exchange.state["next_row"][0]) - first_row
        if progress is not None:
            progress(k.events, facts.rows)
        if sink is not None:
            state, n = _drain(state, setup, sink, upto[i + 1] - upto[i] if i + 1 < len(upto) else 0, all_steps)
            recorded_steps += n
        if spill is not None:
            _hand_out_fills(state, spill)
        _give_back()
        if carry[CARRY_STATE] == CARRY_ENDED:
            break
        state = _room_for_fills(state)
        queues_to_chunk_end(rows, book, levels, exchange, local.orders, venue_group)
        if len(rows.ts_exch) > first_row:
            k.ghost = tuple(a[-1:] for a in (*rows, *book))
        if len(local_book[0]) > first_event:
            k.local_ghost = tuple(a[-1:] for a in local_book)
    out = finish_chunks(state)
    if sink is not None:
        out[5][COUNTER.decisions] = recorded_steps
    return out, k.events


def _check_chunk(i: int, c: Chunk, prev_end: int | None) -> None:
    """A DataError unless chunk i keeps the contract (`Chunk`): rows in time order, none at or before
    the last chunk's end, none after its own; ends that are whole ns and increase."""
    ts = c.ts_exch
    if c.end_ns is not None and (isinstance(c.end_ns, bool) or not isinstance(c.end_ns, numbers.Integral)):
        raise DataError(f"chunk {i}: end_ns must be whole nanoseconds, got {c.end_ns!r}")
    if prev_end is not None and c.end_ns is not None and c.end_ns <= prev_end:
        raise DataError(f"chunk {i}: end_ns {c.end_ns} is not after the last chunk's {prev_end}")
    if len(ts) == 0:
        return
    if prev_end is not None and ts[0] <= prev_end:
        raise DataError(f"chunk {i}: its first row (ts_exch {int(ts[0])}) is at or before the last chunk's end "
                        f"{prev_end}")  # fmt: skip
    if c.end_ns is not None and ts[-1] > c.end_ns:
        raise DataError(f"chunk {i}: its last row (ts_exch {int(ts[-1])}) is after its end_ns {c.end_ns}")
    if len(ts) > 1 and (ts[1:] < ts[:-1]).any():
        raise DataError(f"chunk {i}: rows are not in exchange time order")


def _hand_out_fills(state, spill: _Spill) -> None:
    """Hand the fills recorded since the last chunk to `spill`, and empty the buffers for the next chunk's."""
    records = state[4]
    nf = int(records.state["fills"][0])
    spill.add(tuple(a[:nf] for a in records.fills))
    records.state["fills"][0] = 0


def _room_for_fills(state):
    """The loop's state with its fill buffers doubled once they are half full: a chunked run grows them
    between chunks instead of running again with larger ones (that is left for a chunk that fills the
    other half)."""
    records = state[4]
    nf = int(records.state["fills"][0])
    f = records.fills
    if nf <= len(f.ts_exch) // 2:
        return state
    grown = []
    for a in f:
        b = np.empty(2 * len(a), a.dtype)
        b[:nf] = a[:nf]
        grown.append(b)
    return (*state[:4], records._replace(fills=type(f)(*grown)))


def _drain(state, setup, sink, n_next: int, all_steps: bool):
    """Hand the chunk's recorded steps to `sink` and give the records buffers for the next chunk's
    `n_next` steps: (the loop's state, steps handed over)."""
    records = state[4]
    n = int(records.state["steps"][0])
    s = records.steps
    st = (s.ts[:n], s.mid[:n], s.position[:n], s.cash[:n], s.fees[:n], s.realized[:n], s.equity[:n],
          s.open_orders[:n], s.quote_bid[:n], s.quote_ask[:n], s.mode[:n])  # fmt: skip
    sink(*setup.steps_of(tuple(a.copy() for a in st), s.rules[:, :n]))
    records.state["steps"][0] = 0
    return (*state[:4], records._replace(steps=new_steps(max(0, n_next), all_steps))), n


def _exchange_arrays(chunk: Chunk, k: _Carry):
    """The chunk's TapeRows, ExchangeBook, row blocks and Levels, its ghost row first, and the first
    row the loop applies; the exchange book carried on to the next chunk."""
    n = len(chunk.ts_exch)
    kind, side, ticks, qty = (np.ascontiguousarray(a) for a in (chunk.kind, chunk.side, chunk.price_ticks, chunk.qty))
    init = NO_KEYS, NO_QTY
    if k.exchange_book is not None:
        init = book_levels(*k.exchange_book)  # before the pass moves the book on
    prev_q, bb, ba = np.empty(n), np.empty(n, np.int64), np.empty(n, np.int64)
    syn = np.empty(n, np.bool_)
    none_f, none_i = np.empty(0), np.empty(0, np.int64)
    k.exchange_book = _replay_pass(none_i, none_i, kind, side, ticks, qty, prev_q, bb, ba, none_f, none_f, none_i, syn,
                                   book=k.exchange_book, synced0=k.exchange_synced)  # fmt: skip
    if n:
        k.exchange_synced = bool(syn[-1])
    cols = (np.ascontiguousarray(chunk.ts_exch), kind, side, ticks, qty, prev_q, bb, ba, syn)
    first_row = 0
    if k.ghost is not None:
        cols = tuple(np.concatenate((g, c)) for g, c in zip(k.ghost, cols, strict=True))
        first_row = 1
    ts, kind, side, ticks, qty, prev_q, bb, ba, syn = cols
    level_rows, ukeys, starts, resets, reset_sides = _level_index(kind, side, ticks)
    hi, lo = block_extremes(kind, side, ticks, bb, ba, syn)
    rows = TapeRows(*_ro(ts, kind, side, ticks, qty))
    book = ExchangeBook(*_ro(prev_q, bb, ba, syn))
    levels = Levels(*_ro(level_rows, ukeys, starts, resets, reset_sides, *init))
    return rows, book, _ro(hi, lo), levels, first_row


def _local_arrays(chunk: Chunk, offset: int, k: _Carry):
    """The LocalBook of the local events up to the chunk's end, the last earlier one first, and the
    first event the loop reads; later ones wait in `k.left`, with the local book carried on."""
    local = np.ascontiguousarray(chunk.ts_local) + offset
    cols = (local, chunk.kind, chunk.side, chunk.price_ticks, chunk.qty)
    pend = tuple(np.concatenate((a, b)) for a, b in zip(k.left, cols, strict=True))
    # Earlier rows first and a stable sort: events in (local time, row) order, as the whole tape's
    # local order is (replay._build).
    order = np.argsort(pend[0], kind="stable")
    m = len(order) if chunk.end_ns is None else int(np.searchsorted(pend[0][order], chunk.end_ns, "right"))
    take = np.ascontiguousarray(order[:m])
    lbb, lba, lts = np.empty(m, np.int64), np.empty(m, np.int64), np.empty(m, np.int64)
    lbbq, lbaq, lsyn = np.empty(m), np.empty(m), np.empty(m, np.bool_)
    lt, kind, side, ticks, qty = pend
    none_f = np.empty(0)
    k.local_book = _replay_pass(take, lt, kind, side, ticks, qty, none_f, lbb, lba, lbbq, lbaq, lts, lsyn,
                                book=k.local_book, synced0=k.local_synced)  # fmt: skip
    if m:
        k.local_synced = bool(lsyn[-1])
    rest = order[m:]
    k.left = tuple(a[rest] for a in pend)
    out = (lts, lbb, lba, lbbq, lbaq, lsyn)
    first_event = 0
    if k.local_ghost is not None:
        out = tuple(np.concatenate((g, c)) for g, c in zip(k.local_ghost, out, strict=True))
        first_event = 1
    return _ro(*out), first_event
