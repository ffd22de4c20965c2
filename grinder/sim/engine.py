"""The backtest event loop: one compiled pass over a tape with an exchange side and a local side.

Two clocks, as on a real venue. The *exchange* side (`grinder.sim.exchange_side`) replays book rows
and trades in exchange time, holds our resting orders with their queue position, and fills them.
The *local* side (`grinder.sim.local_side`) sees the same events later, at their (corrected) local
receive time, and is where the strategy decides, every `step_ns` of local time (but not through a
coverage gap: `grinder.sim.clock`). Orders travel local -> exchange with the entry latency and
responses travel back with the response latency over the bus (`grinder.sim.bus`). At equal
timestamps the order of processing is: local data, responses arriving locally, exchange data,
requests arriving at the exchange (as hftbacktest does), so both engines see the same sequence.

Each pass of the loop (`_loop`) is one decision time: the exchange side up to it, the responses
that arrived by then, the local book, the decision (`decide`: the strategy's step, its gates and the
quantitative rules), the orders it sends (`send`), and the step's records (`grinder.sim.records`).

The books themselves are not rebuilt here: `grinder.sim.replay` records once per tape what the
loop needs from them (quantity before each row, best prices after each row, the local view).

Fill rules. A resting buy fills at its own price: in full when the best ask drops to or below it
(price-through) or when a sell trade prints below it (trade-through); at its price, once the queue
ahead of it has traded (queue model) — in full, or with partial fills on, by the traded quantity
beyond the queue in whole lots. Sells mirror this. Orders are post-only (GTX): one that would cross
on arrival expires; one that breaks the venue's filters (whole lots, minimum notional) is rejected.
Prices are int64 ticks, quantities float64 (base units, or contracts for inverse instruments),
times int64 ns; money goes through `grinder.core.ledger`.

Book readiness (decision 021). The strategy is called only on a synced local book (a snapshot
since the last reset, an event within `stale_ns`); otherwise it has no targets and its open quotes
are cancelled. At the exchange a reset cancels every resting order, and an order that arrives on
an unsynced book expires: another capture's trades never fill a quote made on an older book.

The loop runs without reference counting (decisions 011, 030, 040): `run` allocates everything and
calls `_loop`, compiled `_nrt=False`, whose steps are inlined into it.
"""

from __future__ import annotations

import hashlib
from collections import namedtuple
from pathlib import Path

import numpy as np
from numba import njit, types

from grinder.book.l2 import EMPTY
from grinder.core.diff import REQ_CANCEL, REQ_NEW, ST_NONE, diff_scratch
from grinder.core.gates import gates_active, refresh_settings
from grinder.core.ledger import LEDGER_SIZE, POSITION, gate_inputs
from grinder.core.order_kind import FLATTEN_LEVEL, IOC, QUOTE, REDUCE_ONLY
from grinder.core.qrules import GTC as QR_GTC
from grinder.core.qrules import IOC as QR_IOC
from grinder.core.qrules import qr_new
from grinder.core.step import decision_step, step_is_idle
from grinder.core.strategy import BAND_MIN_STATE, STRATEGY_FN
from grinder.sim.bus import MAX_TS, RING_COUNT, arrival, new_bus, push
from grinder.sim.clock import decision_clock, decision_segments, local_at_decisions, segment_steps
from grinder.sim.exchange_side import LEVEL_CACHE, block_extremes, exchange_until, new_exchange_side
from grinder.sim.local_side import book_at_decision, deliver_responses, events_until, new_local_side, show_open_quotes
from grinder.sim.records import COUNTER, COUNTERS, new_records, record_step, recorded

# Re-exported: what callers and tests import from the engine.
__all__ = ["COUNTERS", "LEVEL_CACHE", "Signals", "block_extremes", "decision_clock", "decision_segments",
           "local_at_decisions", "run", "segment_steps"]  # fmt: skip

# When the loop may reuse a kernel's last targets instead of calling it (Strategy.recompute).
REUSE_NEVER, REUSE_TOP, REUSE_PRICES, REUSE_BAND = 0, 1, 2, 3
TAKER_REUSED = "strategy kernel wrote a taker order but does not recompute 'always' (Strategy.recompute)"

# The loop's position between two calls (`_loop`'s `carry`, int64): its state (not started, paused
# before the next decision at `pause_at`, ended), where the clock's current run starts in its
# segments, that run's last step (ns), the next decision (ns), the row of signals in force.
CARRY_STATE, CARRY_SEG_AT, CARRY_SEG_END, CARRY_TARGET, CARRY_SIGNAL_ROW, CARRY_SIZE = 0, 1, 2, 3, 4, 5
CARRY_START, CARRY_PAUSED, CARRY_ENDED = 0, 1, 2


def _ro(t):
    return types.Array(t, 1, "C", readonly=True)  # inputs: tapes may be read-only memmaps


def _rw(t):
    return types.Array(t, 1, "C")


_i8, _i64, _f64, _b = types.int8, types.int64, types.float64, types.boolean


def _group(name: str, fields: dict):
    """A group of `run`'s arguments: a namedtuple class with its fields' numba types, in order.

    `run` takes each group as a plain tuple in field order (a namedtuple would not convert writable
    arrays to the read-only ones the signature names) and names it inside.
    """
    cls = namedtuple(name, fields)
    cls.numba_type = types.Tuple(tuple(fields.values()))
    return cls


# The tape's rows in exchange order: time (ns), kind (grinder.data.schema, EV_TRADE), side (book side,
# or a trade's aggressor: +1 buy, -1 sell), price (ticks), quantity.
TapeRows = _group("TapeRows", {"ts_exch": _ro(_i64), "kind": _ro(_i8), "side": _ro(_i8), "price_ticks": _ro(_i64),
                               "qty": _ro(_f64)})  # fmt: skip
# The exchange's book per row (grinder.sim.replay): quantity at the row's level before it, best bid and
# ask after it (ticks, EMPTY if none), whether it is synced after it.
ExchangeBook = _group("ExchangeBook", {"prev_qty": _ro(_f64), "best_bid": _ro(_i64), "best_ask": _ro(_i64),
                                       "synced": _ro(_b)})  # fmt: skip
# Per block of rows, the highest and lowest price that can reach a resting order (exchange_side.block_extremes).
RowBlocks = _group("RowBlocks", {"highest": _ro(_i64), "lowest": _ro(_i64)})
# The (side, price) levels of book rows (grinder.sim.replay.Replay): each level's rows, the levels'
# keys and where their rows start; the resets' rows and sides; the book the rows start from, as
# level keys and quantities (replay.book_levels; empty for a whole tape, a chunk's carried book).
Levels = _group("Levels", {"rows": _ro(_i64), "ukeys": _ro(_i64), "starts": _ro(_i64), "reset_rows": _ro(_i64),
                           "reset_sides": _ro(_i64), "init_keys": _ro(_i64), "init_qty": _ro(_f64)})  # fmt: skip
# The local book per local event, in local order: receive time (ns), best bid and ask (ticks), their
# quantities, whether it is synced.
LocalBook = _group("LocalBook", {"ts": _ro(_i64), "best_bid": _ro(_i64), "best_ask": _ro(_i64),
                                 "best_bid_qty": _ro(_f64), "best_ask_qty": _ro(_f64), "synced": _ro(_b)})  # fmt: skip
# The steps taken (clock.decision_segments), then at each one the local events arrived and the local
# book (clock.local_at_decisions, or empty: looked up as the loop goes), and the local book's first
# levels at each (grinder.sim.local_depth, [decisions, N, 4]; one empty row [1, 0, 4] when none is read).
DecisionInputs = _group("DecisionInputs", {"segments": _ro(_i64), "events": _ro(_i64), "best_bid": _ro(_i64),
                                           "best_ask": _ro(_i64), "best_bid_qty": _ro(_f64),
                                           "best_ask_qty": _ro(_f64), "synced": _ro(_b),
                                           "depth": types.Array(_f64, 3, "C")})  # fmt: skip
# The strategy's signals (a model's outputs, Strategy.signals): from local time ts[i] (ns) on, the
# kernel is given values[i * width:(i + 1) * width]. ts[0] is the clock's earliest time, so every
# decision has a row (NaN until the first real one); width 0 for a strategy without signals.
Signals = _group("Signals", {"ts": _ro(_i64), "values": _rw(_f64), "width": _i64})
# Funding settlements: time (ns), rate, mark price.
Funding = _group("Funding", {"ts": _ro(_i64), "rate": _ro(_f64), "mark": _ro(_f64)})
# Order latencies from local time ts (ns) on: entry and response (ns).
Latency = _group("Latency", {"ts": _ro(_i64), "entry_ns": _ro(_i64), "response_ns": _ro(_i64)})
# The decision clock's start (ns; 0: the first event), step (ns), and the age (ns) past which the local book is stale.
Clock = _group("Clock", {"start_ns": _i64, "step_ns": _i64, "stale_ns": _i64})
# The venue's rules: tick and lot size, minimum notional (quote), maker and taker fee (fractions), inverse
# contract and its size, queue model (grinder.sim.queue) and its power, partial fills, and how many ticks
# through the touch a market order may take levels (0: no limit).
Venue = _group("Venue", {"tick": _f64, "lot": _f64, "min_notional": _f64, "maker_fee": _f64, "taker_fee": _f64,
                         "inverse": _b, "contract_size": _f64, "queue_model": _i64, "queue_power": _f64,
                         "partial_fills": _b, "market_walk_ticks": _i64})  # fmt: skip
# The gates (grinder.core.gates: config, state, intents blocked by reason) and the quantitative rules
# (grinder.core.qrules: their gate on, config, state).
Gates = _group("Gates", {"config": _ro(_f64), "state": _rw(_f64), "blocked": _rw(_i64), "rules_on": _b,
                         "rules_config": _ro(_f64), "rules_state": _rw(_i64)})  # fmt: skip

# The decision's scalars: the last diff's intents all went out (gates off, slots to spare) and no
# response since could change what it would say with the same targets (`settled`: see
# local_side.deliver_responses); the last decision's gates held back an intent; the last step's
# target count, the last diff's count and stamp (its table is read between diffs); the inputs the
# kernel was last called with (best bid and ask, their quantities, position), and whether a decision
# on an unsynced book came since.
DECISION_STATE = np.dtype(
    [("settled", np.bool_), ("gated_out", np.bool_), ("kernel_stale", np.bool_), ("last_targets", np.int64),
     ("diff_targets", np.int64), ("diff_stamp", np.int64), ("kernel_bid", np.int64), ("kernel_ask", np.int64),
     ("kernel_bid_qty", np.float64), ("kernel_ask_qty", np.float64), ("kernel_position", np.float64)],
    align=True,
)  # fmt: skip
# The kernel's targets: side, price (ticks), quantity, level, kind (grinder.core.order_kind).
Targets = namedtuple("Targets", "side price qty level kind")
# The last targets the kernel returned (side, price, quantity), compared with new ones.
LastTargets = namedtuple("LastTargets", "side price qty")
# A step's intents: open quotes to cancel (indices into local_side.OpenQuotes), targets to place (into
# Targets): quotes, then taker orders (decision_step's `out_place`).
Intents = namedtuple("Intents", "cancel place")
# `diff`: the diff's hash tables, kept for the whole run (grinder.core.diff.diff_scratch).
Decision = namedtuple("Decision", "state targets last_targets intents diff")


@njit(cache=True)
def _new_decision(cap, max_targets):
    state = np.zeros(1, DECISION_STATE)
    initial = state[0]
    initial.last_targets = -1
    initial.kernel_bid = EMPTY
    initial.kernel_ask = EMPTY
    initial.kernel_bid_qty = np.nan
    initial.kernel_ask_qty = np.nan
    initial.kernel_position = np.nan
    targets = Targets(np.zeros(max_targets, np.int8), np.zeros(max_targets, np.int64), np.zeros(max_targets),
                      np.zeros(max_targets, np.int64), np.zeros(max_targets, np.int8))  # fmt: skip
    last = LastTargets(np.zeros(max_targets, np.int8), np.zeros(max_targets, np.int64), np.zeros(max_targets))
    intents = Intents(np.zeros(cap, np.int64), np.zeros(max_targets, np.int64))
    return Decision(state, targets, last, intents, diff_scratch(max_targets))


@njit(_nrt=False, inline="always")
def decide(target, local_view, signals, depth, strategy, params, strategy_state, max_targets, reuse, gates, gates_on,
           refresh, venue, funding_paid, resting_live, local, decision, counters):  # fmt: skip
    """The decision at `target` (ns) on the local book (`local_side.book_at_decision`): the strategy's
    step, when it may change anything, through the gates and the rules.

    `signals` is the kernel's row of signals for this decision (empty for a strategy without), `depth`
    the local book's first levels ([0, 4] when none is read); `refresh`: quote refresh is on.
    Returns (cancels, places, taker orders, the guards' flatten (side, price ticks, qty; qty 0.0 for
    none), mid, equity, unit notional): the intents are in `decision.intents`; the mid (quote) and
    equity (settle currency) as recorded (NaN without both sides of the book).
    """
    bid, ask, bid_qty, ask_qty, synced = local_view
    local_state = local.state[0]
    decision_state = decision.state[0]
    n_state = strategy_state.shape[0]
    moved = bid != decision_state.kernel_bid or ask != decision_state.kernel_ask
    if moved and reuse == REUSE_BAND and bid != EMPTY and ask != EMPTY and n_state >= BAND_MIN_STATE:
        # The kernel's last call said its targets hold while bid + ask (ticks) stays in its band.
        sb = np.float64(bid + ask)
        moved = not (strategy_state[n_state - 2] <= sb <= strategy_state[n_state - 1])
    position = local.ledger[POSITION]
    fresh = synced and (
        decision_state.kernel_stale  # the first decision on a synced book after an unsynced one: whatever the band says
        or (local_state.dirty and reuse != REUSE_BAND)  # a band kernel reads neither the clock nor our open quotes
        or (reuse == REUSE_BAND and position != decision_state.kernel_position)
        or gates_on
        or reuse == REUSE_NEVER
        or moved
        or (
            reuse == REUSE_TOP
            and (bid_qty != decision_state.kernel_bid_qty or ask_qty != decision_state.kernel_ask_qty)
        )
    )
    if local_state.dirty:
        show_open_quotes(local, resting_live)
    local_state.dirty = False
    if not synced:
        # The book is not synced (before a snapshot, after a reset): the strategy is not
        # called and nothing should rest, as live (decision 021): the step cancels every quote.
        counters[COUNTER.unsynced_decisions] += 1
        decision_state.kernel_stale = True
    elif fresh:
        decision_state.kernel_stale = False
        decision_state.kernel_bid, decision_state.kernel_ask = bid, ask
        decision_state.kernel_bid_qty, decision_state.kernel_ask_qty = bid_qty, ask_qty
        decision_state.kernel_position = position
    have_mid = bid != EMPTY and ask != EMPTY
    mid, equity, unit = gate_inputs(local.ledger, bid, ask, EMPTY, venue.tick, funding_paid, venue.inverse,
                                    venue.contract_size)  # fmt: skip
    # A strategy sees only (params, its state, market, position, open quotes): with the same
    # targets and no order changed since the last diff (or only in ways that cannot change its
    # answer: `settled`), the diff would be empty.
    # A quote a gate held back last time is asked for again (as live does at every decision):
    # the gate may let it through now, with nothing else changed.
    # With quote refresh on (a time to live, a refresh distance) the diff's answer moves with the clock
    # and with where orders stand: diff at every decision, as live does.
    orders_changed = (local_state.touched and not decision_state.settled) or decision_state.gated_out or refresh
    compare = decision_state.settled or not local_state.touched
    any_gate = gates_on or gates.rules_on
    blocked_before = gates.blocked.sum() if any_gate else 0
    last_nt = decision_state.last_targets
    market = (target, bid, ask, bid_qty, ask_qty, venue.tick, venue.lot, position, equity, unit, signals, depth)
    counts = (local_state.open_count, last_nt, decision_state.diff_stamp + 1)
    if step_is_idle(synced, fresh, orders_changed, gates_on, gates.rules_on, last_nt):
        nt, nc, npl, ntk, diffed, flatten = (last_nt if synced else 0), 0, 0, 0, False, (0, np.int64(0), 0.0)
    else:
        shown, orders, known = local.open_quotes, local.orders, local.known
        p, out = decision.last_targets, decision.intents
        flags = (synced, fresh, orders_changed, compare, gates_on, gates.rules_on)
        nt, nc, npl, ntk, diffed, flatten = decision_step(strategy, params, strategy_state, flags, market, counts,
                                                 shown.side, shown.price, shown.qty, orders.side, orders.price,
                                                 known.status, known.request, known.live, orders.placed, shown.slot,
                                                 decision.targets, p.side,
                                                 p.price, p.qty, out.cancel, out.place, gates.config, gates.state,
                                                 gates.rules_config, gates.rules_state, gates.blocked,
                                                 decision.diff)  # fmt: skip
    if synced and fresh and (nt < 0 or nt > max_targets):
        raise ValueError("strategy kernel returned more targets than max_targets (or a negative count)")
    if ntk > 0 and reuse != REUSE_NEVER:
        # Reused targets send no taker order, while live calls the kernel at every decision: refused in both.
        raise ValueError(TAKER_REUSED)
    decision_state.last_targets = nt
    decision_state.gated_out = any_gate and gates.blocked.sum() > blocked_before
    if diffed:
        decision_state.diff_stamp += 1
        decision_state.diff_targets = nt
        decision_state.settled = not gates_on
    local_state.touched = False
    if not have_mid:
        return nc, npl, ntk, flatten, np.nan, np.nan, unit
    return nc, npl, ntk, flatten, mid, equity, unit


@njit(_nrt=False, inline="always")
def send(target, nc, npl, ntk, flatten, unit, latency, rules_state, local, decision, bus, records):
    """Put the decision's cancels, places and taker orders, then the guards' flatten (side, price ticks,
    qty; qty 0.0 for none), on the request bus, all arriving together after the entry latency from
    `target` (ns); a new order takes a free slot, and its record in the rules' state (valued at `unit`,
    the unit notional the gates assumed)."""
    f_side, f_px, f_qty = flatten
    n_new = npl + ntk + (1 if f_qty > 0.0 else 0)
    if nc == 0 and n_new == 0:
        return
    local_state = local.state[0]
    orders, known, requests = local.orders, local.known, bus.requests
    counters = records.counters
    local_state.dirty = True
    t_send = arrival(requests.ring, target, latency.ts, latency.entry_ns)
    for c in range(nc):
        slot = local.open_quotes.slot[decision.intents.cancel[c]]
        known.request[slot] = REQ_CANCEL
        k = push(requests.due, requests.ring, t_send)
        requests.slot[k], requests.request[k] = slot, REQ_CANCEL
        orders.inflight[slot] += 1
        counters[COUNTER.cancelled] += 1
    targets = decision.targets
    for pl in range(n_new):
        if local_state.free_slots == 0:
            decision.state[0].settled = False  # a target left unplaced
            break
        taker = pl >= npl
        if pl < npl + ntk:
            j = decision.intents.place[pl]
            side, px, qty, level = targets.side[j], targets.price[j], targets.qty[j], targets.level[j]
            kind = targets.kind[j] if taker else QUOTE
        else:
            side, px, qty, level, kind = f_side, f_px, f_qty, FLATTEN_LEVEL, IOC | REDUCE_ONLY
        local_state.free_slots -= 1
        slot = local.free[local_state.free_slots]
        local_state.used_slots = max(local_state.used_slots, slot + 1)
        orders.side[slot], orders.price[slot], orders.qty[slot], orders.level[slot] = side, px, qty, level
        orders.kind[slot] = kind
        orders.placed[slot] = target
        orders.id[slot] = local_state.next_order_id
        local_state.next_order_id += 1
        # Recorded as sent at the decision, valued at the mid (what the rules' gate assumed).
        orders.rule_record[slot] = qr_new(rules_state, target, QR_IOC if taker else QR_GTC, qty, qty * unit)
        records.state[0].rules_moved = True
        known.live[slot], known.status[slot], known.request[slot] = True, ST_NONE, REQ_NEW
        known.leaves[slot] = qty
        k = push(requests.due, requests.ring, t_send)
        requests.slot[k], requests.request[k] = slot, REQ_NEW
        orders.inflight[slot] += 1
        counters[COUNTER.takers if taker else COUNTER.placed] += 1


@njit(_nrt=False, inline="always")
def _nothing_left(last_ts, final, rows, local_book, funding, exchange, local, bus):
    """Nothing is left to happen after this decision: the data has ended (both clocks: these are the
    `final` rows), no message is on the way and no funding settlement is due within the data (`last_ts`, ns)."""
    exchange_state = exchange.state[0]
    settlement = exchange_state.next_funding
    return (final and exchange_state.next_row >= rows.ts_exch.shape[0]
            and local.state[0].next_event >= local_book.ts.shape[0]
            and bus.requests.ring[RING_COUNT] == 0 and bus.responses.ring[RING_COUNT] == 0
            and (settlement >= funding.ts.shape[0] or funding.ts[settlement] > last_ts))  # fmt: skip


@njit(_nrt=False)
def _loop(t0, last_ts, rows, book, blocks, levels, local_book, decisions, signals, funding, latency, clock, venue,
          strategy, params, strategy_state, max_targets, reuse, gates, gates_on, exchange, bus, local, decision,
          records, progress, pause_at, carry):  # fmt: skip
    """Decision after decision until nothing is left to happen (or the fill records are full), or
    until the next decision is after `pause_at` (ns): the rows end there, more follow (a chunk,
    `grinder.sim.chunked`). Then the exchange side is brought to `pause_at` and the loop's position
    kept in `carry` (CARRY_*), from where the next call goes on; MAX_TS for the last rows."""
    step_ns = clock.step_ns
    segments = decisions.segments
    if carry[CARRY_STATE] == CARRY_START:
        # The time of the last step of the clock's current run (`segments`): there the clock jumps
        # over a coverage gap to the next run; after the last run it goes on, unrecorded. A time, not
        # a step count, so a decision costs one comparison more than a clock without gaps.
        seg_at = 0  # where the current run starts in `segments`
        seg_end_t = t0 + segments[1] * step_ns if segments.shape[0] > 2 else MAX_TS
        target = t0 + segments[0] * step_ns
        signal_row = 0  # the row of signals in force: the last one whose time is at or before the decision
    else:
        seg_at, seg_end_t, target = carry[CARRY_SEG_AT], carry[CARRY_SEG_END], carry[CARRY_TARGET]
        signal_row = carry[CARRY_SIGNAL_ROW]
    width, n_signals = signals.width, signals.ts.shape[0]
    final = pause_at == MAX_TS
    ttl_ns, near_ticks = refresh_settings(gates.config)
    refresh = ttl_ns > 0 or near_ticks > 0
    carry[CARRY_STATE] = CARRY_ENDED
    while True:
        if target > pause_at:
            # Rows and requests up to pause_at now rather than at the next decision: the same
            # events in the same order, and the chunk's rows are all applied.
            exchange_until(pause_at, rows, book, blocks, levels, funding, latency, venue, exchange, local.orders, bus,
                           records.funding, records.counters)  # fmt: skip
            carry[CARRY_STATE] = CARRY_PAUSED
            carry[CARRY_SEG_AT], carry[CARRY_SEG_END], carry[CARRY_TARGET] = seg_at, seg_end_t, target
            carry[CARRY_SIGNAL_ROW] = signal_row
            return
        exchange_until(target, rows, book, blocks, levels, funding, latency, venue, exchange, local.orders, bus,
                       records.funding, records.counters)  # fmt: skip
        if not deliver_responses(target, bus.responses, exchange.resting.live, local, decision, venue,
                                 gates.rules_state, records):  # fmt: skip
            break
        events_until(target, local_book, decisions, local)
        if _nothing_left(last_ts, final, rows, local_book, funding, exchange, local, bus):
            break
        local_view = book_at_decision(target, local_book, decisions, clock.stale_ns, local)
        while signal_row + 1 < n_signals and signals.ts[signal_row + 1] <= target:
            signal_row += 1
        row = signals.values[signal_row * width : (signal_row + 1) * width]
        # Tabulated by decision (next_decision has moved past this one); a table of one empty row for none.
        depth = decisions.depth[min(local.state[0].next_decision - 1, decisions.depth.shape[0] - 1)]
        nc, npl, ntk, flatten, mid, equity, unit = decide(target, local_view, row, depth, strategy, params,
                                                 strategy_state, max_targets, reuse, gates, gates_on, refresh, venue,
                                                 exchange.state[0].funding_paid, exchange.resting.live, local,
                                                 decision, records.counters)  # fmt: skip
        send(target, nc, npl, ntk, flatten, unit, latency, gates.rules_state, local, decision, bus, records)
        shown = local.state[0]
        record_step(records, target, mid, equity, local.ledger, shown.open_count, shown.quote_bid, shown.quote_ask,
                    strategy_state, gates.rules_state, gates.rules_config)  # fmt: skip
        progress[0] = exchange.state[0].next_row
        if target == seg_end_t:
            seg_at += 2
            target = t0 + segments[seg_at] * step_ns
            seg_end_t = t0 + segments[seg_at + 1] * step_ns if seg_at + 2 < segments.shape[0] else MAX_TS
        else:
            target += step_ns


def _signature():
    return (TapeRows.numba_type, ExchangeBook.numba_type, RowBlocks.numba_type, Levels.numba_type,
            LocalBook.numba_type, DecisionInputs.numba_type, Signals.numba_type, Funding.numba_type, Latency.numba_type,
            Clock.numba_type, Venue.numba_type, STRATEGY_FN, _rw(_f64), _rw(_f64), _i64, _i64, _i64,
            Gates.numba_type, _b, _rw(_i64))  # fmt: skip


# The modules whose compiled code `run` holds (its steps are inlined into it): numba keys its
# on-disk cache by run's own file only, so a digest of them is part of run's cache key.
_INLINED = ("sim/engine.py", "sim/bus.py", "sim/clock.py", "sim/exchange_side.py", "sim/local_side.py",
            "sim/records.py", "sim/queue.py", "sim/replay.py", "sim/taker.py", "core/step.py", "core/diff.py",
            "core/gates.py", "core/qrules.py", "core/ledger.py", "core/order_kind.py")  # fmt: skip
_ROOT = Path(__file__).resolve().parents[1]


def _compile_run(sources: str):
    def run(rows, book, blocks, levels, local_book, decisions, signals, funding, latency, clock, venue, strategy,
            params, strategy_state, max_targets, reuse, fill_cap, gates, all_steps, progress):  # fmt: skip
        """Run a strategy over a prepared tape; returns fills, per-step records, funding payments, the
        ledger, the funding paid, counters, the rules' series and their largest, and `overflow`.

        Each of rows ... venue and gates is a plain tuple in the field order of its group (TapeRows,
        ExchangeBook, RowBlocks, Levels, LocalBook, DecisionInputs, Signals, Funding, Latency, Clock,
        Venue, Gates); `strategy` is the kernel (grinder.core.strategy.kernel_handle), `params` and
        `strategy_state` its vectors, `max_targets` the most targets it may return, `reuse` a REUSE_*
        code. Fill records hold `fill_cap` fills: with more, `overflow` is True and the caller reruns
        with a larger cap. Without `all_steps` only the steps' times, mids and equity are recorded
        (the other step arrays come back empty). progress[0] is set to the number of exchange rows
        processed at every decision (another thread may read it; the loop releases the GIL).
        """
        sources  # noqa: B018 - the digest of the sources compiled in, part of numba's cache key
        rows, book, blocks, levels = TapeRows(*rows), ExchangeBook(*book), RowBlocks(*blocks), Levels(*levels)
        local_book, decisions, funding = LocalBook(*local_book), DecisionInputs(*decisions), Funding(*funding)
        signals = Signals(*signals)
        latency, clock, venue, gates = Latency(*latency), Clock(*clock), Venue(*venue), Gates(*gates)
        cap = max(64, 4 * max_targets)  # order slots
        exchange = new_exchange_side(cap, levels.ukeys.shape[0])
        bus = new_bus(cap)
        local = new_local_side(cap, LEDGER_SIZE)
        decision = _new_decision(cap, max_targets)
        t0, last_ts, _ = decision_clock(rows.ts_exch, local_book.ts, clock.start_ns, clock.step_ns)
        records = new_records(fill_cap, segment_steps(decisions.segments), funding.ts.shape[0], all_steps)
        gates_on = gates_active(gates.config)  # all off: skip them (their rolling history is only read by gates)
        _loop(t0, last_ts, rows, book, blocks, levels, local_book, decisions, signals, funding, latency, clock, venue,
              strategy, params, strategy_state, max_targets, reuse, gates, gates_on, exchange, bus, local, decision,
              records, progress, MAX_TS, np.zeros(CARRY_SIZE, np.int64))  # fmt: skip
        exchange_state = exchange.state[0]
        counters = records.counters
        counters[COUNTER.exchange_events] = exchange_state.next_row
        counters[COUNTER.decisions] = records.state[0].steps
        progress[0] = rows.ts_exch.shape[0]
        fills, steps, paid, rules = recorded(records, exchange_state.next_funding)
        return fills, steps, paid, local.ledger, exchange_state.funding_paid, counters, rules, records.state[0].overflow

    return njit(_signature(), cache=True, nogil=True)(run)


def _compile_chunks(sources: str):
    """`run` taken apart for a tape that arrives chunk by chunk (grinder.sim.chunked): `begin`
    allocates the loop's state, `resume` runs it over one chunk's rows up to a pause, `finish`
    reads out what `run` returns."""

    def begin(cap, n_levels, max_targets, fill_cap, n_steps, n_funding, all_steps):
        """The loop's state (exchange side, bus, local side, decision, records) before any row."""
        sources  # noqa: B018 - see run
        return (new_exchange_side(cap, n_levels), new_bus(cap), new_local_side(cap, LEDGER_SIZE),
                _new_decision(cap, max_targets), new_records(fill_cap, n_steps, n_funding, all_steps))  # fmt: skip

    def resume(rows, book, blocks, levels, local_book, decisions, signals, funding, latency, clock, venue, strategy,
               params, strategy_state, max_targets, reuse, gates, t0, last_ts, state, progress, pause_at,
               carry):  # fmt: skip
        """`run`'s loop over one chunk (groups as in `run`; `state` from `begin`), until the next
        decision is after `pause_at` (ns; MAX_TS: the last chunk) or the run ends (carry, `_loop`)."""
        sources  # noqa: B018 - see run
        rows, book, blocks, levels = TapeRows(*rows), ExchangeBook(*book), RowBlocks(*blocks), Levels(*levels)
        local_book, decisions, funding = LocalBook(*local_book), DecisionInputs(*decisions), Funding(*funding)
        signals = Signals(*signals)
        latency, clock, venue, gates = Latency(*latency), Clock(*clock), Venue(*venue), Gates(*gates)
        exchange, bus, local, decision, records = state
        gates_on = gates_active(gates.config)
        _loop(t0, last_ts, rows, book, blocks, levels, local_book, decisions, signals, funding, latency, clock, venue,
              strategy, params, strategy_state, max_targets, reuse, gates, gates_on, exchange, bus, local, decision,
              records, progress, pause_at, carry)  # fmt: skip

    def finish(state):
        """What `run` returns but the exchange event count (fills, steps, funding paid, ledger, ...)."""
        exchange, _, local, _, records = state
        exchange_state = exchange.state[0]
        records.counters[COUNTER.decisions] = records.state[0].steps
        fills, steps, paid, rules = recorded(records, exchange_state.next_funding)
        return (fills, steps, paid, local.ledger, exchange_state.funding_paid, records.counters, rules,
                records.state[0].overflow)  # fmt: skip

    return (njit(cache=True)(begin), njit(cache=True, nogil=True)(resume), njit(cache=True)(finish))


_SOURCES = hashlib.sha256(b"".join((_ROOT / f).read_bytes() for f in _INLINED)).hexdigest()
run = _compile_run(_SOURCES)
begin_chunks, resume_chunk, finish_chunks = _compile_chunks(_SOURCES)
