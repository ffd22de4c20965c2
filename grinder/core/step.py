"""One decision step, the same compiled function for the backtest engine and the live adapter.

A step is: the strategy kernel's target quotes (or, on an unsynced book, none), diffed against the
open orders, then passed through the gates. `grinder.sim.engine.run` calls it inside its loop and
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
from grinder.core.diff import diff_quotes_into
from grinder.core.gates import QUANT_RULES, GateConfig, apply_gates, gates_active, new_gate_state
from grinder.core.qrules import GTC, C, QuantRules, load_quant_rules, new_qr_state, qr_allowed


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


@njit(cache=True, _nrt=False)
def decision_step(strategy, params, state, flags, market, counts, v_side, v_px, v_qty, o_side, o_px, o_status, o_req,
                  o_live, slots, t_side, t_px, t_qty, t_level, p_side, p_px, p_qty, out_cancel, out_place, gate_cfg,
                  gate_state, qr_cfg, qr_state, blocked, scratch):  # fmt: skip
    """One decision; returns (targets, cancels, places, diffed), or (the kernel's bad count, 0, 0, False).

    - `flags`: (synced, call_kernel, orders_changed, compare, gates_on, qr_on).
      - `synced`: the book is synced; if not, the kernel is not called and there are no targets (every
        open quote is cancelled, decision 021).
      - `call_kernel`: call the kernel; if False, the last `last_nt` targets stand.
      - `orders_changed`: the orders moved since the last diff in a way that can change it; with
        targets equal to the last ones and this False, the diff is skipped (it would be empty).
      - `compare`: whether new targets may be compared with the last ones (`p_*`, kept here) to find
        them equal.
      - `gates_on`, `qr_on`: whether the gates (`grinder.core.gates`: `gate_cfg`, `gate_state`) and then
        the quantitative rules' gate (`grinder.core.qrules`: `qr_cfg`, `qr_state`) act on the places
        left; each new order is valued at its quantity times `unit_notional` (what the driver records
        it with).
    - `market`: (now_ns, best bid ticks, best ask ticks, bid qty, ask qty, tick, lot, position, equity,
      unit_notional, signals): `signals` is this decision's model outputs for the kernel
      (`Strategy.signals`; empty: none), in the tuple so the call stays within 30 arguments.
    - `counts`: (m, the open orders; last_nt, the last targets; stamp, this call's diff stamp).
    - The kernel sees the open orders compacted (`v_side`, `v_px`, `v_qty`: side, price ticks, leaves;
      m of them); the diff reads them through `o_*` (side, price ticks, status, request, live), the
      driver's arrays indexed through `slots`. `out_cancel` gets indices into slots, `out_place`
      indices into the targets `t_*` (side, price ticks, qty, level); both are compacted by the gates.
      `blocked` counts add up (the caller resets them).
    - `scratch` and the stamp: the diff's kept hash tables and this call's stamp (`diff_quotes_into`);
      the caller advances its stamp when `diffed`.
    A kernel count outside [0, len(t_side)] returns at once, for the caller to raise its own error.
    Compiled without reference counting, and so without allocation (decision 030): arrays come one
    by one and numbers in tuples, since a call of more than 30 arguments would pack its arrays into a
    tuple on every call.
    """
    synced, call_kernel, orders_changed, compare, gates_on, qr_on = flags
    now_ns, bb, ba, bbq, baq, tick, lot, position, equity, unit_notional, signals = market
    m, last_nt, stamp = counts
    if not synced:
        nt = 0
        same = last_nt == 0
    elif call_kernel:
        nt = strategy(params, state, now_ns, bb, ba, bbq, baq, tick, lot, position, signals, v_side, v_px, v_qty, m,
                      t_side, t_px, t_qty, t_level)  # fmt: skip
        if nt < 0 or nt > t_side.shape[0]:
            return nt, 0, 0, False
        j0 = 0  # targets [0, j0) equal the last ones: compared, and need no copy
        if compare and nt == last_nt:
            while j0 < nt and t_side[j0] == p_side[j0] and t_px[j0] == p_px[j0] and t_qty[j0] == p_qty[j0]:
                j0 += 1
        same = nt == last_nt and j0 == nt
        for j in range(j0, nt):
            p_side[j], p_px[j], p_qty[j] = t_side[j], t_px[j], t_qty[j]
    else:
        nt = last_nt
        same = True
    nc = npl = 0
    diffed = not same or orders_changed
    if diffed:
        nc, npl = diff_quotes_into(t_side, t_px, nt, o_side, o_px, o_status, o_req, o_live, slots, m, out_cancel,
                                   out_place, scratch, stamp)  # fmt: skip
    if gates_on:
        bid_px = bb * tick if bb != EMPTY else 0.0
        ask_px = ba * tick if ba != EMPTY else 0.0
        npl, nc = apply_gates(gate_cfg, gate_state, now_ns, position, bid_px, ask_px, equity, unit_notional, t_side,
                              t_qty, out_place, npl, nc, m, blocked)  # fmt: skip
    if qr_on and npl > 0:
        # One answer for the batch: its largest order, and its smallest value (dust), the worst case.
        q_max = 0.0
        for k in range(npl):
            q_max = max(q_max, t_qty[out_place[k]])
        q_min = q_max
        for k in range(npl):
            q_min = min(q_min, t_qty[out_place[k]])
        allowed = qr_allowed(qr_state, qr_cfg, now_ns, npl, GTC, q_max, q_min * unit_notional)
        if allowed < npl:
            blocked[QUANT_RULES] += npl - allowed
            npl = allowed
    return nt, nc, npl, diffed
