"""What the backtest loop records: fills, funding payments, a sample per decision step, and counters.

Buffers are allocated once per run and never reassigned in the loop (decision 011). Fill buffers
are `np.empty` with a generous cap (pages never touched cost no memory); when they are full the run
stops with `overflow` and the caller reruns it with larger ones. Without `all_steps` only the steps'
times, mids and equity are kept: the other step columns come back empty (a sweep reads no more).
"""

from __future__ import annotations

from collections import namedtuple

import numpy as np
from numba import njit

from grinder.core.ledger import CASH, FEES, POSITION, REALIZED
from grinder.core.qrules import OUT as QR_OUT
from grinder.core.qrules import qr_ratios

# Counters returned by the loop, in this order.
# unsynced_orders: orders the venue dropped because the book was not synced (expired on arrival, or
# cancelled at a reset); unsynced_decisions: decisions taken on an unsynced book (kernel not called).
# takers: taker orders (IOC, market) sent; taker_expired: those whose rest expired unfilled (no depth left
# within the limit); walk_capped: those that stopped at WALK_LEVELS levels with depth left (the rest expired).
COUNTERS = ("placed", "cancelled", "expired", "cancel_rejected", "fills", "exchange_events", "decisions", "rejected",
            "partial_fills", "unsynced_orders", "unsynced_decisions", "takers", "taker_expired",
            "walk_capped")  # fmt: skip
COUNTER = namedtuple("Counter", COUNTERS)(*range(len(COUNTERS)))  # each counter's slot, by name

QR_SAMPLE_NS = 1_000_000_000  # the quantitative rules are read at least this often (and after every order event)

# How much is recorded so far: fills and steps, whether the fill buffers ran out; whether an order
# event came since the rules' ratios were last read, and when they are read again at the latest (ns).
RECORDS_STATE = np.dtype(
    [("fills", np.int64), ("steps", np.int64), ("overflow", np.bool_), ("rules_moved", np.bool_),
     ("rules_read_at", np.int64)],
    align=True,
)  # fmt: skip
# Per fill: exchange and local time (ns), side (+1 buy, -1 sell), price (ticks), quantity, fee (settle
# currency), order id, the strategy's level, the local ledger's position and realized PnL after it, and
# whether it was a maker fill (a resting quote) or a taker one (one level of an IOC or market order's walk).
Fills = namedtuple("Fills", "ts_exch ts_local side price qty fee order_id level position realized maker")
# Per decision step: time (ns), mid (quote), equity (settle currency); with all_steps also the ledger's
# position, cash, fees and realized PnL, open orders, our innermost open quotes (ticks, EMPTY if none),
# the strategy's state[0] (its controller mode, if it has one) and the rules' ratios and counts (qrules.OUT).
Steps = namedtuple("Steps", "ts mid equity position cash fees realized open_orders quote_bid quote_ask mode rules")
# Per funding settlement: time (ns), the exchange's position then, the amount paid (settle currency).
FundingPayments = namedtuple("FundingPayments", "ts position amount")
# The rules' ratios and counts at the last reading, and their largest over the run.
Records = namedtuple("Records", "state fills steps funding rules_now rules_max counters all_steps")


@njit(cache=True)
def new_records(fill_cap, n_steps, n_funding, all_steps):
    """Empty records for up to `fill_cap` fills, `n_steps` decision steps and `n_funding` settlements."""
    fills = Fills(np.empty(fill_cap, np.int64), np.empty(fill_cap, np.int64), np.empty(fill_cap, np.int8),
                  np.empty(fill_cap, np.int64), np.empty(fill_cap), np.empty(fill_cap), np.empty(fill_cap, np.int64),
                  np.empty(fill_cap, np.int64), np.empty(fill_cap), np.empty(fill_cap),
                  np.empty(fill_cap, np.bool_))  # fmt: skip
    steps = new_steps(n_steps, all_steps)
    funding = FundingPayments(np.zeros(n_funding, np.int64), np.zeros(n_funding), np.zeros(n_funding))
    return Records(np.zeros(1, RECORDS_STATE), fills, steps, funding, np.zeros(len(QR_OUT)),
                   np.full(len(QR_OUT), np.nan), np.zeros(len(COUNTERS), np.int64), all_steps)  # fmt: skip


@njit(cache=True)
def new_steps(n_steps, all_steps):
    """Empty step buffers for `n_steps` decision steps (every column with `all_steps`, else ts, mid, equity)."""
    n = n_steps if all_steps else 0
    return Steps(np.zeros(n_steps, np.int64), np.zeros(n_steps), np.zeros(n_steps), np.zeros(n), np.zeros(n),
                 np.zeros(n), np.zeros(n), np.zeros(n, np.int64), np.zeros(n, np.int64), np.zeros(n, np.int64),
                 np.zeros(n, np.int8), np.zeros((len(QR_OUT), n)))  # fmt: skip


@njit(_nrt=False, inline="always")
def record_funding(funding, k, ts, position, amount):
    """The k-th funding settlement's record."""
    funding.ts[k], funding.position[k], funding.amount[k] = ts, position, amount


@njit(_nrt=False, inline="always")
def record_fill(records, ts_exch, ts_local, side, price, qty, fee, order_id, level, ledger, maker):
    """Record a fill after the ledger booked it; False when the buffers are full (the run stops)."""
    state = records.state[0]
    nf = state.fills
    fills = records.fills
    if nf == fills.ts_exch.shape[0]:
        state.overflow = True
        return False
    fills.ts_exch[nf] = ts_exch
    fills.ts_local[nf] = ts_local
    fills.side[nf] = side
    fills.price[nf] = price
    fills.qty[nf] = qty
    fills.fee[nf] = fee
    fills.order_id[nf] = order_id
    fills.level[nf] = level
    fills.position[nf] = ledger[POSITION]
    fills.realized[nf] = ledger[REALIZED]
    fills.maker[nf] = maker
    state.fills = nf + 1
    return True


@njit(_nrt=False, inline="always")
def record_step(records, target, mid, equity, ledger, open_orders, quote_bid, quote_ask, strategy_state, rules_state,
                rules_config):  # fmt: skip
    """Record the decision step at `target` (ns), while the steps' buffers have room (the loop goes
    on past the clock's capacity, unrecorded, while orders are in flight)."""
    state = records.state[0]
    ns = state.steps
    steps = records.steps
    if ns >= steps.ts.shape[0]:
        return
    steps.ts[ns] = target
    steps.mid[ns] = mid
    steps.equity[ns] = equity
    if state.rules_moved or target >= state.rules_read_at:
        # Read after every order event (the counts peak right after one), else once a second
        # (orders only leaving the windows): a decision with neither costs nothing here.
        now, most = records.rules_now, records.rules_max
        qr_ratios(rules_state, rules_config, target, now)
        for q in range(len(QR_OUT)):
            if not np.isnan(now[q]) and not now[q] <= most[q]:
                most[q] = now[q]
        state.rules_moved = False
        state.rules_read_at = target + QR_SAMPLE_NS
    if records.all_steps:
        steps.position[ns] = ledger[POSITION]
        steps.cash[ns] = ledger[CASH]
        steps.fees[ns] = ledger[FEES]
        steps.realized[ns] = ledger[REALIZED]
        steps.open_orders[ns] = open_orders
        steps.quote_bid[ns] = quote_bid
        steps.quote_ask[ns] = quote_ask
        steps.mode[ns] = np.int8(strategy_state[0]) if strategy_state.shape[0] > 0 else 0
        for q in range(len(QR_OUT)):  # a slice assignment may copy its source: an allocation
            steps.rules[q, ns] = records.rules_now[q]
    state.steps = ns + 1


@njit(cache=True)
def recorded(records, settlements):
    """(fills, steps, funding payments, (the rules at each step, their largest)): the filled part of
    each buffer, the first `settlements` funding payments; see `grinder.sim.engine.run`."""
    state = records.state[0]
    nf, ns, fi = state.fills, state.steps, settlements
    f, s, p = records.fills, records.steps, records.funding
    fills = (f.ts_exch[:nf], f.ts_local[:nf], f.side[:nf], f.price[:nf], f.qty[:nf], f.fee[:nf], f.order_id[:nf],
             f.level[:nf], f.position[:nf], f.realized[:nf], f.maker[:nf])  # fmt: skip
    steps = (s.ts[:ns], s.mid[:ns], s.position[:ns], s.cash[:ns], s.fees[:ns], s.realized[:ns], s.equity[:ns],
             s.open_orders[:ns], s.quote_bid[:ns], s.quote_ask[:ns], s.mode[:ns])  # fmt: skip
    return fills, steps, (p.ts[:fi], p.position[:fi], p.amount[:fi]), (s.rules[:, :ns], records.rules_max)
