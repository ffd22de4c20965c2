"""One decision step, the same compiled function for the backtest engine and the live adapter.

A step is: the strategy kernel's targets (or, on an unsynced book, none); its quotes diffed against
the open orders, its taker orders (IOC, market: grinder.core.order_kind) sent as they are; all of
them passed through the gates (the L2 execution guard among them, on the taker orders against the
book's first levels, `gates.guard_taker`), which may add a flatten of their own
(`gates.flatten_order`). `grinder.sim.engine.run` calls it inside its loop and
`grinder.core.decision.Decider` (what `grinder live` drives) calls it once per decision, so both
turn the same inputs into the same intents. What differs is only what each driver may skip: the
engine knows when the kernel's answer cannot have changed (`call_kernel` False: the last targets
stand) and when the open orders are as the last diff left them (`orders_changed` False: equal
targets need no diff); the live adapter never skips.

Units: prices in ticks, quantities in base units (contracts for inverse instruments), times in ns,
`equity` in the settle currency, `unit_notional` in quote per unit of position (both from
`grinder.core.ledger.gate_inputs`).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from numba import njit

from grinder.book.l2 import EMPTY
from grinder.core.diff import diff_quotes_into, refresh_into
from grinder.core.gates import (
    QUANT_RULES,
    GateConfig,
    apply_gates,
    flatten_order,
    gates_active,
    guard_taker,
    new_gate_state,
    refresh_settings,
)
from grinder.core.order_kind import KIND_MASK, MARKET, QUOTE, REDUCE_ONLY
from grinder.core.qrules import GTC, C, QuantRules, load_quant_rules, new_qr_state, qr_allowed
from grinder.core.qrules import IOC as IOC_TIF

BAD_KIND = "strategy kernel wrote an order kind that names no order (grinder.core.order_kind: 0, 1, 2, 5 or 6)"


@lru_cache(maxsize=8)
def quant_rules(path: str = "") -> QuantRules:
    """The quantitative rules from `path` (empty: the shipped file), read once per process."""
    return load_quant_rules(path or None)


def gate_configs(gates: GateConfig | None) -> tuple[np.ndarray, bool, np.ndarray, QuantRules]:
    """(gate config, quantitative rules' gate on, their config, the rules) for a `[gates]` table (None: all off)."""
    gates = gates or GateConfig()
    rules = quant_rules(gates.quant_rules_file)
    qr_cfg = rules.as_array()
    return gates.as_array(), bool(gates.quant_rules and qr_cfg[C.enabled] != 0.0), qr_cfg, rules


def fresh_gates(gates: GateConfig | None) -> tuple[bool, np.ndarray, np.ndarray, bool, np.ndarray, np.ndarray]:
    """What `decision_step` takes of the gates, with fresh state: (on, config, state) of the gates, then of the rules.

    The rules' state is kept whether or not their gate is on: the drivers record every order in it,
    and report the ratios.
    """
    cfg, qr_on, qr_cfg, rules = gate_configs(gates)
    return bool(gates_active(cfg)), cfg, new_gate_state(cfg), qr_on, qr_cfg, new_qr_state(rules)


@njit(cache=True, inline="always")
def step_is_idle(synced, call_kernel, orders_changed, gates_on, qr_on, last_nt):
    """Whether `decision_step` with these flags would do nothing: return (the last targets, or 0 on an
    unsynced book, 0, 0, False) and change no array. A driver may then skip the call (its arguments
    alone cost more than such a step); numbers only, so free to inline."""
    if orders_changed or gates_on or qr_on:
        return False
    return (synced and not call_kernel) or (not synced and last_nt == 0)


@njit(cache=True, _nrt=False, inline="always")
def _takers_last(t_side, t_px, t_qty, t_level, t_kind, nt):
    """Move the taker targets behind the quotes, each group in the kernel's order; returns the quotes'
    count, or -1 for a kind code that names no order (grinder.core.order_kind)."""
    nq = 0
    for j in range(nt):
        k = t_kind[j]
        if k == QUOTE:
            if j != nq:  # rotate quote j down to nq; the takers in [nq, j) move up one place
                s, px, q, lv = t_side[j], t_px[j], t_qty[j], t_level[j]
                for i in range(j, nq, -1):
                    t_side[i], t_px[i], t_qty[i], t_level[i], t_kind[i] = (t_side[i - 1], t_px[i - 1], t_qty[i - 1],
                                                                           t_level[i - 1], t_kind[i - 1])  # fmt: skip
                t_side[nq], t_px[nq], t_qty[nq], t_level[nq], t_kind[nq] = s, px, q, lv, QUOTE
            nq += 1
        elif (k & KIND_MASK) == QUOTE or (k & KIND_MASK) > MARKET or k & ~(KIND_MASK | REDUCE_ONLY):
            return -1
    return nq


@njit(cache=True, _nrt=False)
def decision_step(strategy, params, state, flags, market, counts, v_side, v_px, v_qty, o_side, o_px, o_status, o_req,
                  o_live, o_placed, slots, targets, p_side, p_px, p_qty, out_cancel, out_place, gate_cfg, gate_state,
                  qr_cfg, qr_state, blocked, scratch):  # fmt: skip
    """One decision; returns (quotes, cancels, places, takers, diffed, flatten), or (the kernel's bad count, 0, 0,
    0, False, no flatten). `flatten` is the guards' order (side, price ticks, qty; qty 0.0 for none, `gates.
    flatten_order`): a reduce-only IOC at level FLATTEN_LEVEL the driver sends after the taker orders.

    - `flags`: (synced, call_kernel, orders_changed, compare, gates_on, qr_on).
      - `synced`: the book is synced; if not, the kernel is not called and there are no targets (every
        open quote is cancelled, decision 021).
      - `call_kernel`: call the kernel; if False, the last `last_nt` quotes stand and no taker order goes out.
      - `orders_changed`: the orders moved since the last diff in a way that can change it; with
        quotes equal to the last ones and this False, the diff is skipped (it would be empty).
      - `compare`: whether new quotes may be compared with the last ones (`p_*`, kept here) to find
        them equal.
      - `gates_on`, `qr_on`: whether the gates (`grinder.core.gates`: `gate_cfg`, `gate_state`) and then
        the quantitative rules' gate (`grinder.core.qrules`: `qr_cfg`, `qr_state`) act on the places
        and taker orders left; each new order is valued at its quantity times `unit_notional` (what
        the driver records it with).
    - `market`: (now_ns, best bid ticks, best ask ticks, bid qty, ask qty, tick, lot, position, equity,
      unit_notional, signals, depth): `signals` is this decision's model outputs for the kernel
      (`Strategy.signals`; empty: none), `depth` the book's first levels (grinder.core.depth; [0, 4]:
      none), in the tuple so the call stays within 30 arguments.
    - `counts`: (m, the open orders; last_nt, the last quotes; stamp, this call's diff stamp).
    - The kernel sees the open orders compacted (`v_side`, `v_px`, `v_qty`: side, price ticks, leaves;
      m of them); the diff reads them through `o_*` (side, price ticks, status, request, live, when
      sent in ns: 0 unknown), the driver's arrays indexed through `slots`. With `quote_ttl_ms` or
      `refresh_ticks` in the gates' config the diff is refreshed (`diff.refresh_into`): the driver
      must then diff at every decision (`orders_changed`).
    - `targets`: (side, price ticks, qty, level, kind) buffers the kernel writes. `kind` is set to QUOTE
      before the call (grinder.core.order_kind); after it the quotes come first and the taker orders
      (IOC, MARKET) after them, each in the kernel's order. Only the quotes are compared and diffed.
    - `out_cancel` gets indices into slots; `out_place` gets indices into the targets: [0, places) the
      quotes to place, then [places, places + takers) the taker orders to send, all compacted by the gates.
      `blocked` counts add up (the caller resets them).
    - `scratch` and the stamp: the diff's kept hash tables and this call's stamp (`diff_quotes_into`);
      the caller advances its stamp when `diffed`.
    A kernel count outside [0, len(t_side)] returns at once, for the caller to raise its own error; a
    kind code that names no order raises ValueError(BAD_KIND).
    Compiled without reference counting, and so without allocation (decision 030): arrays come one
    by one and numbers in tuples, since a call of more than 30 arguments would pack its arrays into a
    tuple on every call.
    """
    synced, call_kernel, orders_changed, compare, gates_on, qr_on = flags
    now_ns, bb, ba, bbq, baq, tick, lot, position, equity, unit_notional, signals, depth = market
    m, last_nt, stamp = counts
    t_side, t_px, t_qty, t_level, t_kind = targets
    n_take = 0
    if not synced:
        nq = 0
        same = last_nt == 0
    elif call_kernel:
        for j in range(t_kind.shape[0]):
            t_kind[j] = QUOTE
        nt = strategy(params, state, now_ns, bb, ba, bbq, baq, tick, lot, position, signals, depth, v_side, v_px,
                      v_qty, m, t_side, t_px, t_qty, t_level, t_kind)  # fmt: skip
        if nt < 0 or nt > t_side.shape[0]:
            return nt, 0, 0, 0, False, (0, np.int64(0), 0.0)
        nq = _takers_last(t_side, t_px, t_qty, t_level, t_kind, nt)
        if nq < 0:
            raise ValueError(BAD_KIND)
        n_take = nt - nq
        j0 = 0  # quotes [0, j0) equal the last ones: compared, and need no copy
        if compare and nq == last_nt:
            while j0 < nq and t_side[j0] == p_side[j0] and t_px[j0] == p_px[j0] and t_qty[j0] == p_qty[j0]:
                j0 += 1
        same = nq == last_nt and j0 == nq
        for j in range(j0, nq):
            p_side[j], p_px[j], p_qty[j] = t_side[j], t_px[j], t_qty[j]
    else:
        nq = last_nt
        same = True
    nc = npl = 0
    diffed = not same or orders_changed
    if diffed:
        nc, npl = diff_quotes_into(t_side, t_px, nq, o_side, o_px, o_status, o_req, o_live, slots, m, out_cancel,
                                   out_place, scratch, stamp)  # fmt: skip
        ttl_ns, near = refresh_settings(gate_cfg)
        if ttl_ns > 0 or near > 0:
            nc, npl = refresh_into(t_side, t_px, nq, o_side, o_px, o_status, o_req, o_live, o_placed, slots, m,
                                   out_cancel, nc, out_place, npl, scratch, stamp, now_ns, ttl_ns, near)  # fmt: skip
    for i in range(n_take):  # room: the diff places at most the nq quotes
        out_place[npl + i] = nq + i
    ntk = n_take
    if gates_on:
        bid_px = bb * tick if bb != EMPTY else 0.0
        ask_px = ba * tick if ba != EMPTY else 0.0
        kept, nc = apply_gates(gate_cfg, gate_state, now_ns, position, bid_px, ask_px, equity, unit_notional, t_side,
                               t_qty, out_place, npl + n_take, nc, m, blocked, nq)  # fmt: skip
        ntk = 0  # the gates keep the order: the takers kept are the last ones
        while ntk < kept and out_place[kept - 1 - ntk] >= nq:
            ntk += 1
        npl = kept - ntk
        if ntk > 0:
            ntk = guard_taker(gate_cfg, depth, lot, t_side, t_px, t_qty, t_kind, out_place, npl, ntk, blocked)
    if qr_on and npl > 0:
        allowed = _rules_allow(qr_cfg, qr_state, now_ns, GTC, t_qty, out_place, 0, npl, unit_notional, blocked)
        if allowed < npl:
            for i in range(ntk):
                out_place[allowed + i] = out_place[npl + i]
            npl = allowed
    if qr_on and ntk > 0:
        ntk = _rules_allow(qr_cfg, qr_state, now_ns, IOC_TIF, t_qty, out_place, npl, ntk, unit_notional, blocked)
    flatten = (0, np.int64(0), 0.0)
    if gates_on:
        # The guards' flatten lowers risk: past the gates and the rules (both drivers record it as sent), and
        # outside the targets, which the kernel may have filled.
        flatten = flatten_order(gate_cfg, gate_state, now_ns, position, equity, bb, ba, lot)
    return nq, nc, npl, ntk, diffed, flatten


@njit(cache=True, _nrt=False, inline="always")
def _rules_allow(qr_cfg, qr_state, now_ns, tif, t_qty, out_place, first, n, unit_notional, blocked):
    """How many of the n orders out_place[first:first + n] the quantitative rules let out now (the rest
    are counted as blocked). One answer for the batch: its largest order, and its smallest value
    (dust), the worst case."""
    q_max = 0.0
    for k in range(first, first + n):
        q_max = max(q_max, t_qty[out_place[k]])
    q_min = q_max
    for k in range(first, first + n):
        q_min = min(q_min, t_qty[out_place[k]])
    allowed = qr_allowed(qr_state, qr_cfg, now_ns, n, tif, q_max, q_min * unit_notional)
    if allowed < n:
        blocked[QUANT_RULES] += n - allowed
    return allowed
