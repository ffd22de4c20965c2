"""The local side of the backtest loop: what the strategy's process knows, at local receive time.

It sees the market later than the exchange, at each event's (corrected) local time, and learns
what became of its orders only when a response arrives over the bus (`grinder.sim.bus`): the
ledger books a fill then, and the quantitative rules' tracking (`grinder.core.qrules`) records
each order's end then. It owns the order slots: it sends orders into free ones and frees a slot
once neither side holds its order and no message about it is on the way. At a decision it shows
the strategy its open quotes (`show_open_quotes`) and the local book (`book_at_decision`).

Prices are int64 ticks, quantities float64 (base units, or contracts for inverse instruments),
times int64 ns, money in the settle currency (`grinder.core.ledger`).
"""

from __future__ import annotations

from collections import namedtuple

import numpy as np
from numba import njit

from grinder.book.l2 import EMPTY
from grinder.core.diff import REQ_NONE, ST_CANCELED, ST_EXPIRED, ST_FILLED, ST_NEW, had_target
from grinder.core.ledger import book_fill, quote_notional
from grinder.core.order_kind import QUOTE
from grinder.core.qrules import CANCELLED as QR_CANCELLED
from grinder.core.qrules import EXPIRED as QR_EXPIRED
from grinder.core.qrules import FILLED as QR_FILLED
from grinder.core.qrules import REJECTED as QR_REJECTED
from grinder.core.qrules import qr_end, qr_fill
from grinder.sim.bus import RESP_FILTERED, RESP_PARTIAL, RESP_REJECTED, pop, top
from grinder.sim.clock import advance
from grinder.sim.records import record_fill

# Per order slot, as sent (what both sides know of the order): side (+1 buy, -1 sell), price (ticks; an
# IOC's limit), quantity, the strategy's level, its id, its kind (grinder.core.order_kind), when it was
# sent (local ns); its record in the quantitative rules' state, and how many messages about it are on
# the buses.
Orders = namedtuple("Orders", "side price qty level id kind placed rule_record inflight")
# Per order slot, as the local side knows it: tracked, last known status (grinder.core.diff ST_*), the
# request on its way (REQ_*), quantity left.
Known = namedtuple("Known", "live status request leaves")
# The open quotes the strategy is shown, compacted: side, price (ticks), quantity left, and the slot
# each one is in.
OpenQuotes = namedtuple("OpenQuotes", "side price qty slot")
# The local side's scalars: the next local market event and tabulated decision to read; a response
# arrived since the last decision (`touched`); the open quotes shown are out of date (`dirty`); how
# many are shown, and the innermost open bid and ask (ticks, EMPTY if none); free slots, slots
# [0, used_slots) ever used (the free list hands out low slots first), and the next order id.
LOCAL_STATE = np.dtype(
    [("next_event", np.int64), ("next_decision", np.int64), ("touched", np.bool_), ("dirty", np.bool_),
     ("open_count", np.int64), ("quote_bid", np.int64), ("quote_ask", np.int64), ("free_slots", np.int64),
     ("used_slots", np.int64), ("next_order_id", np.int64)],
    align=True,
)  # fmt: skip
# `free`: the free slots, a stack (its top at state.free_slots - 1).
LocalSide = namedtuple("LocalSide", "state orders known open_quotes free ledger")


@njit(cache=True)
def new_local_side(cap, ledger_size):
    """The local side before any order, with `cap` order slots, all free, and an empty ledger."""
    state = np.zeros(1, LOCAL_STATE)
    initial = state[0]
    initial.touched = True
    initial.dirty = True
    initial.quote_bid = EMPTY
    initial.quote_ask = EMPTY
    initial.free_slots = cap
    orders = Orders(np.zeros(cap, np.int8), np.zeros(cap, np.int64), np.zeros(cap), np.zeros(cap, np.int64),
                    np.zeros(cap, np.int64), np.zeros(cap, np.int8), np.zeros(cap, np.int64), np.zeros(cap, np.int64),
                    np.zeros(cap, np.int64))  # fmt: skip
    known = Known(np.zeros(cap, np.bool_), np.zeros(cap, np.int8), np.zeros(cap, np.int8), np.zeros(cap))
    shown = OpenQuotes(np.zeros(cap, np.int8), np.zeros(cap, np.int64), np.zeros(cap), np.zeros(cap, np.int64))
    free = np.arange(cap - 1, -1, -1).astype(np.int64)
    return LocalSide(state, orders, known, shown, free, np.zeros(ledger_size))


@njit(_nrt=False, inline="always")
def free_slot(local, slot):
    """Hand `slot` back to the free list."""
    state = local.state[0]
    local.free[state.free_slots] = slot
    state.free_slots += 1


@njit(_nrt=False, inline="always")
def deliver_responses(target, responses, resting_live, local, decision, venue, rules_state, records):
    """Responses that have arrived by `target` (ns), in arrival order: the ledger, the rules' tracking,
    the fill records and what the local side knows of each order. False when the fill records are
    full (the run stops: `grinder.sim.records`)."""
    state = local.state[0]
    decision_state = decision.state[0]
    orders, known = local.orders, local.known
    while True:
        arrived, k = top(responses.due, responses.ring)
        if arrived > target:
            break
        slot = responses.slot[k]
        status = responses.status[k]
        pop(responses.due, responses.ring)
        state.touched = True
        state.dirty = True
        maker = orders.kind[slot] == QUOTE
        # A taker order is never a target of the diff: what becomes of it cannot change the diff's answer.
        if decision_state.settled and maker:
            if status == RESP_PARTIAL:
                relevant = False  # the quote stays, with its price and state
            elif status == RESP_REJECTED:
                relevant = True
            else:
                targeted = had_target(decision.diff, decision_state.diff_stamp, decision_state.diff_targets,
                                      orders.side[slot], orders.price[slot])  # fmt: skip
                # A targeted quote left (fill, cancel, expiry), or an untargeted one can now be cancelled.
                relevant = targeted != (status == ST_NEW)
            decision_state.settled = not relevant
        orders.inflight[slot] -= 1
        records.state[0].rules_moved = True
        rule_record = orders.rule_record[slot]
        if status == RESP_FILTERED:
            qr_end(rules_state, rule_record, arrived, QR_REJECTED)  # refused at the door: in no ratio
            status = ST_EXPIRED
        elif status == ST_CANCELED:
            qr_end(rules_state, rule_record, arrived, QR_CANCELLED)
        elif status == ST_EXPIRED:
            qr_end(rules_state, rule_record, arrived, QR_EXPIRED)
        if status == ST_FILLED or status == RESP_PARTIAL:
            q = responses.qty[k]
            ticks = responses.price[k]  # a taker order's fills are at the levels it took
            price = ticks * venue.tick
            value = abs(quote_notional(q, price, venue.inverse, venue.contract_size))
            qr_fill(rules_state, rule_record, arrived, q, value)
            if status == ST_FILLED:
                qr_end(rules_state, rule_record, arrived, QR_FILLED)
            fee = book_fill(local.ledger, orders.side[slot], price, q, venue.maker_fee if maker else venue.taker_fee,
                            venue.inverse, venue.contract_size)  # fmt: skip
            if not record_fill(records, responses.exchange_ts[k], arrived, orders.side[slot], ticks, q, fee,
                               orders.id[slot], orders.level[slot], local.ledger, maker):  # fmt: skip
                return False
            known.leaves[slot] -= q
            if status == ST_FILLED:
                known.status[slot] = ST_FILLED
                known.request[slot] = REQ_NONE
                known.leaves[slot] = 0.0
        elif status == RESP_REJECTED:
            known.request[slot] = REQ_NONE
        else:
            known.status[slot] = status
            known.request[slot] = REQ_NONE
        if not known.live[slot] and not resting_live[slot] and orders.inflight[slot] == 0:
            free_slot(local, slot)
    return True


@njit(_nrt=False, inline="always")
def events_until(target, local_book, decisions, local):
    """Read the local market events that have arrived by `target` (ns): the next one to read after them."""
    state = local.state[0]
    if state.next_decision < decisions.events.shape[0]:
        state.next_event = decisions.events[state.next_decision]  # tabulated: read in order, no search
    else:
        state.next_event = advance(local_book.ts, state.next_event, local_book.ts.shape[0], target)


@njit(_nrt=False, inline="always")
def book_at_decision(target, local_book, decisions, stale_ns, local):
    """(best bid, best ask (ticks, EMPTY if none), their quantities, synced) of the local book at the
    decision at `target` (ns), after `events_until`: synced if it is, and its last event at most
    `stale_ns` old (across a coverage gap no data says where the book is)."""
    state = local.state[0]
    k = state.next_decision
    state.next_decision = k + 1
    if k < decisions.events.shape[0]:  # read in order: no cache miss per decision
        return (decisions.best_bid[k], decisions.best_ask[k], decisions.best_bid_qty[k], decisions.best_ask_qty[k],
                decisions.synced[k])  # fmt: skip
    lj = state.next_event
    if lj == 0:
        return EMPTY, EMPTY, 0.0, 0.0, False
    last = lj - 1
    synced = local_book.synced[last] and target - local_book.ts[last] <= stale_ns
    return (local_book.best_bid[last], local_book.best_ask[last], local_book.best_bid_qty[last],
            local_book.best_ask_qty[last], synced)  # fmt: skip


@njit(_nrt=False, inline="always")
def show_open_quotes(local, resting_live):
    """Compact the orders the local side still tracks into the strategy's view of its open quotes
    (`local.open_quotes`; their count and the innermost bid and ask in `local.state`); an order
    known to be filled, cancelled or expired leaves the view, and its slot is freed once neither
    side holds it and no message about it is on the way."""
    state = local.state[0]
    orders, known, shown = local.orders, local.known, local.open_quotes
    m = 0
    quote_bid = EMPTY
    quote_ask = EMPTY
    for s in range(state.used_slots):
        if not known.live[s]:
            continue
        if known.status[s] == ST_FILLED or known.status[s] == ST_CANCELED or known.status[s] == ST_EXPIRED:
            known.live[s] = False
            if not resting_live[s] and orders.inflight[s] == 0:
                free_slot(local, s)
        elif orders.kind[s] != QUOTE:
            continue  # a taker order on its way or taking: not a quote the strategy can keep or cancel
        else:
            shown.slot[m] = s
            shown.side[m], shown.price[m], shown.qty[m] = orders.side[s], orders.price[s], known.leaves[s]
            m += 1
            if orders.side[s] > 0 and (quote_bid == EMPTY or orders.price[s] > quote_bid):
                quote_bid = orders.price[s]
            elif orders.side[s] < 0 and (quote_ask == EMPTY or orders.price[s] < quote_ask):
                quote_ask = orders.price[s]
    state.open_count, state.quote_bid, state.quote_ask = m, quote_bid, quote_ask
