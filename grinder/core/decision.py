"""One decision at a time from plain Python: strategy kernel -> diff -> gates, as the live adapter runs it.

The backtest engine calls the same three compiled functions inside its loop; this wrapper keeps
the strategy's and the gates' state between calls and takes the orders the caller knows of, so a
driver that lives on sockets and clocks (grinder live) turns market updates into the same intents.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from pydantic import BaseModel

from grinder.book.l2 import EMPTY
from grinder.core.diff import REQ_NONE, ST_NEW, diff_quotes
from grinder.core.gates import REASONS, GateConfig, apply_gates, new_gate_state
from grinder.core.strategy import Strategy, compile_kernel


@dataclass(frozen=True)
class Order:
    """An order the driver knows of: side +1/-1, price in ticks, unfilled quantity, status and pending request."""

    side: int
    price_ticks: int
    leaves: float
    status: int = ST_NEW
    request: int = REQ_NONE


@dataclass(frozen=True)
class DecisionRecord:
    """One decision's inputs and the target quotes it asked for (what live.parity compares)."""

    ts_ns: int  # exchange time of the book it used
    best_bid_ticks: int
    best_ask_ticks: int
    bid_qty: float  # at the best bid and ask, base units
    ask_qty: float
    position: float
    targets: tuple[tuple[int, int, float], ...]  # (side, price ticks, qty) of each target quote


@dataclass(frozen=True)
class Intents:
    """What one decision asks for: orders to cancel (indices into the orders given) and quotes to place."""

    cancel: list[int]
    place: list[tuple[int, int, float, int]]  # (side, price ticks, qty, level id)
    targets: int
    blocked: dict[str, int] = field(default_factory=dict)


class Decider:
    """Holds a strategy's parameters and state plus the gates' state; `decide` is one decision."""

    def __init__(self, strategy: Strategy, params: BaseModel, gates: GateConfig | None = None, state_size: int = 64):
        self.strategy = strategy
        self.kernel = compile_kernel(strategy.kernel)
        self.params = np.array(strategy.vector(params), np.float64)
        self.state = np.zeros(state_size)
        self.gate_cfg = (gates or GateConfig()).as_array()
        self.gate_state = new_gate_state(self.gate_cfg)
        n = strategy.max_targets
        self._t = (np.zeros(n, np.int8), np.zeros(n, np.int64), np.zeros(n), np.zeros(n, np.int64))
        self._nt = 0

    def warm_up(self, *decide_args) -> None:
        """A throwaway decision (on `decide_args`, default an empty book): code loaded and in cache, state kept."""
        state, gate_state, nt = self.state.copy(), self.gate_state.copy(), self._nt
        self.decide(*(decide_args or (0, EMPTY, EMPTY, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0, [Order(1, 1, 1.0)])))
        self.state[:], self.gate_state[:], self._nt = state, gate_state, nt

    @property
    def last_targets(self) -> tuple[tuple[int, int, float], ...]:
        """The target quotes of the last decision: (side, price ticks, qty) each, before the diff and gates."""
        side, px, qty, _ = self._t
        return tuple((int(side[j]), int(px[j]), float(qty[j])) for j in range(min(self._nt, len(side))))

    @property
    def mode(self) -> int:
        """The strategy's controller mode (state[0] by convention)."""
        return int(self.state[0])

    def decide(self, now_ns: int, best_bid_ticks: int, best_ask_ticks: int, bid_qty: float, ask_qty: float,
               tick: float, lot: float, position: float, equity: float, unit_notional: float,
               orders: list[Order]) -> Intents:  # fmt: skip
        """Targets from the kernel, diffed against `orders`, filtered by the gates (state is kept)."""
        m = len(orders)
        o_side = np.array([o.side for o in orders], np.int8)
        o_px = np.array([o.price_ticks for o in orders], np.int64)
        o_qty = np.array([o.leaves for o in orders], np.float64)
        o_status = np.array([o.status for o in orders], np.int8)
        o_req = np.array([o.request for o in orders], np.int8)
        t_side, t_px, t_qty, t_level = self._t
        nt = self.kernel(self.params, self.state, now_ns, best_bid_ticks, best_ask_ticks, bid_qty, ask_qty, tick, lot,
                         position, o_side, o_px, o_qty, m, t_side, t_px, t_qty, t_level)  # fmt: skip
        self._nt = int(nt)
        out_cancel = np.zeros(max(m, 1), np.int64)
        out_place = np.zeros(len(t_side), np.int64)
        nc, npl = diff_quotes(t_side, t_px, nt, o_side, o_px, o_status, o_req, np.ones(m, np.bool_),
                              np.arange(m, dtype=np.int64), m, out_cancel, out_place)  # fmt: skip
        blocked = np.zeros(len(REASONS), np.int64)
        bid_px = best_bid_ticks * tick if best_bid_ticks != EMPTY else 0.0
        ask_px = best_ask_ticks * tick if best_ask_ticks != EMPTY else 0.0
        npl, nc = apply_gates(self.gate_cfg, self.gate_state, now_ns, position, bid_px, ask_px, equity, unit_notional,
                              t_side, t_qty, out_place, npl, nc, m, blocked)  # fmt: skip
        place = [(int(t_side[j]), int(t_px[j]), float(t_qty[j]), int(t_level[j])) for j in out_place[:npl]]
        return Intents(
            out_cancel[:nc].tolist(), place, int(nt), {r: int(b) for r, b in zip(REASONS, blocked, strict=True) if b}
        )
