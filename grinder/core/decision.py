"""One decision at a time from plain Python: strategy kernel -> diff -> gates, as the live adapter runs it.

The backtest engine calls the same compiled step (`grinder.core.step.decision_step`) inside its
loop; this wrapper keeps the strategy's and the gates' state between calls and takes the orders the
caller knows of, so a driver that lives on sockets and clocks (grinder live) turns market updates
into the same intents.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numba import njit, typeof
from pydantic import BaseModel

from grinder.book.l2 import EMPTY
from grinder.core.depth import needed_levels
from grinder.core.diff import REQ_NONE, ST_NEW, diff_scratch
from grinder.core.gates import REASONS, GateConfig
from grinder.core.order_kind import FLATTEN_LEVEL, IOC, REDUCE_ONLY
from grinder.core.qrules import HEADER as QR_HEADER
from grinder.core.step import BAD_KIND, decision_step, fresh_gates
from grinder.core.strategy import Strategy, compile_kernel
from grinder.errors import ConfigError


@dataclass(frozen=True)
class Order:
    """An order the driver knows of: side +1/-1, price in ticks, unfilled quantity, status and pending request,
    and when it was sent (ns, the driver's clock; 0: unknown, never replaced for its age)."""

    side: int
    price_ticks: int
    leaves: float
    status: int = ST_NEW
    request: int = REQ_NONE
    placed_ns: int = 0


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
    """What one decision asks for: orders to cancel (indices into the orders given), quotes to place and
    taker orders to send (IOC or market, grinder.core.order_kind), each past the gates."""

    cancel: list[int]
    place: list[tuple[int, int, float, int]]  # (side, price ticks, qty, level id)
    targets: int  # the quotes the strategy asked for
    blocked: dict[str, int] = field(default_factory=dict)
    # (side, limit price ticks (an IOC's; a market order's is what the kernel wrote), qty, level id, kind code)
    take: list[tuple[int, int, float, int, int]] = field(default_factory=list)


# The step (grinder.core.step) as live calls it: with the kernel's dispatcher as an argument, a
# constant to the compiled code that costs nothing to pass (a first-class function handle must be
# unboxed on every call; decision 012). Its type differs between processes, so it is compiled once per process and
# never cached: numba's cache would gain an entry per process.
_live_step = njit(decision_step.py_func)


@dataclass(frozen=True)
class Ahead:
    """A decision taken ahead of its time (`Decider.decide_ahead`): its intents and the state it leaves."""

    intents: Intents
    state: np.ndarray  # the strategy's state after it
    gate_state: np.ndarray
    nt: int
    targets: tuple[np.ndarray, ...]  # side, price ticks, qty, level of its target quotes


class Decider:
    """Holds a strategy's parameters and state plus the gates' state; `decide` is one decision."""

    def __init__(self, strategy: Strategy, params: BaseModel, gates: GateConfig | None = None, state_size: int = 64):
        self.strategy = strategy
        self.params = np.array(strategy.vector(params), np.float64)
        self.state = np.zeros(state_size)
        gates_on, self.gate_cfg, self.gate_state, qr_on, self.qr_cfg, self.qr_state = fresh_gates(gates)
        # Never skipping: synced (the driver does not decide on an unsynced book), kernel called, diffed.
        self._flags = (True, True, True, False, gates_on, qr_on)
        self._handle = compile_kernel(strategy.kernel)  # a dispatcher: a constant to the step, nothing to unbox
        n = strategy.max_targets
        # side, price ticks, qty, level, kind of the targets
        self._t = (np.zeros(n, np.int8), np.zeros(n, np.int64), np.zeros(n), np.zeros(n, np.int64),
                   np.zeros(n, np.int8))  # fmt: skip
        self._prev = (np.zeros(n, np.int8), np.zeros(n, np.int64), np.zeros(n))  # the step's copy of the last targets
        self._nt = 0
        self._signals = np.full(len(strategy.signals), np.nan)
        # The book's first levels the kernel and the L2 guard read (grinder.core.depth); [0, 4] for none.
        self._depth = np.full((needed_levels(strategy.depth_levels, gates), 4), np.nan)
        self._out_place = np.zeros(n, np.int64)
        self._blocked = np.zeros(len(REASONS), np.int64)
        self._scratch, self._stamp = diff_scratch(n), 0  # the diff's tables: sized by targets only
        self._orders_for(16)
        # ... and then called without the dispatcher, which would type every argument on every call
        # (tuples of arrays, the kernel's handle) for types that do not change (decision 012).
        self._step = None

    def _orders_for(self, m: int) -> None:
        """Buffers for m orders (side, ticks, leaves, status, request, live, sent, slots, cancels)."""
        cap = max(m, 1)
        self._o = (np.zeros(cap, np.int8), np.zeros(cap, np.int64), np.zeros(cap), np.zeros(cap, np.int8),
                   np.zeros(cap, np.int8), np.ones(cap, np.bool_), np.zeros(cap, np.int64),
                   np.arange(cap, dtype=np.int64), np.zeros(cap, np.int64))  # fmt: skip

    def warm_up(self, *decide_args) -> None:
        """A throwaway decision (on `decide_args`, default an empty book): code loaded and in cache, state kept."""
        empty = (0, EMPTY, EMPTY, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0, [Order(1, 1, 1.0)], None,
                 np.zeros_like(self._depth))  # fmt: skip
        self.decide_ahead(*(decide_args or empty))

    def decide_ahead(self, *decide_args) -> Ahead:
        """`decide(*decide_args)` without keeping its effects: `adopt` keeps them later, if the inputs still hold.

        A driver decides ahead of its clock's tick on the inputs it has, and at the tick adopts that
        decision if nothing it was taken on has changed: the same intents and state as deciding then.
        """
        kept = (self.state.copy(), self.gate_state.copy(), self._nt, tuple(a.copy() for a in self._t))
        # The rules' gate moves only their state's header (its windows' heads) ahead: kept, not the ring.
        qr_head = self.qr_state[:QR_HEADER].copy()
        intents = self.decide(*decide_args)
        ahead = Ahead(intents, self.state.copy(), self.gate_state.copy(), self._nt, tuple(a.copy() for a in self._t))
        self._restore(*kept)
        self.qr_state[:QR_HEADER] = qr_head
        return ahead

    def adopt(self, ahead: Ahead) -> Intents:
        """Keep a decision taken ahead as if `decide` had run now on its inputs; returns its intents."""
        self._restore(ahead.state, ahead.gate_state, ahead.nt, ahead.targets)
        return ahead.intents

    def _restore(self, state: np.ndarray, gate_state: np.ndarray, nt: int, targets: tuple[np.ndarray, ...]) -> None:
        self.state[:], self.gate_state[:], self._nt = state, gate_state, nt
        for dst, src in zip(self._t, targets, strict=True):
            dst[:] = src

    @property
    def last_targets(self) -> tuple[tuple[int, int, float], ...]:
        """The target quotes of the last decision: (side, price ticks, qty) each, before the diff and gates."""
        side, px, qty = self._t[:3]
        return tuple((int(side[j]), int(px[j]), float(qty[j])) for j in range(min(self._nt, len(side))))

    @property
    def mode(self) -> int:
        """The strategy's controller mode (state[0] by convention)."""
        return int(self.state[0])

    @property
    def depth_levels(self) -> int:
        """Levels a side `decide` needs in `depth`: the strategy's, or the L2 guard's (0: none)."""
        return self._depth.shape[0]

    def decide(self, now_ns: int, best_bid_ticks: int, best_ask_ticks: int, bid_qty: float, ask_qty: float,
               tick: float, lot: float, position: float, equity: float, unit_notional: float,
               orders: list[Order], signals: np.ndarray | None = None,
               depth: np.ndarray | None = None) -> Intents:  # fmt: skip
        """Targets from the kernel, diffed against `orders`, filtered by the gates (state is kept).

        `signals`: the decision's model outputs (float64, one per `Strategy.signals` name); none for
        a strategy that reads none. `depth`: the book's first levels ([N, 4], grinder.core.depth,
        `fill_depth`), at least `depth_levels` of them; needed when that is above 0."""
        kept = self._signals  # one array type for the compiled step, whatever the caller holds
        if signals is None:
            kept[:] = np.nan  # a strategy that reads signals, given none, sees NaN (none known)
        elif np.shape(signals) != kept.shape:
            raise ConfigError(f"{self.strategy.name}: {kept.shape[0]} signal(s) expected, got shape "
                              f"{np.shape(signals)}")  # fmt: skip
        else:
            kept[:] = signals
        book = self._depth
        if book.shape[0]:
            if depth is None:
                raise ConfigError(f"{self.strategy.name}: reads {book.shape[0]} levels of the book (its depth_levels "
                                  "or the L2 guard's); give decide() the depth")  # fmt: skip
            if np.ndim(depth) != 2 or np.shape(depth)[1] != 4 or np.shape(depth)[0] < book.shape[0]:
                raise ConfigError(f"{self.strategy.name}: depth of shape {np.shape(depth)}; need at least "
                                  f"({book.shape[0]}, 4)")  # fmt: skip
            book[:] = depth[: book.shape[0]]
        m = len(orders)
        if m > len(self._o[0]):
            self._orders_for(2 * m)
        o_side, o_px, o_qty, o_status, o_req, o_live, o_sent, o_slots, out_cancel = self._o
        # Element by element into kept buffers: cheaper than five new arrays a decision (decision 012).
        for i, o in enumerate(orders):
            o_side[i], o_px[i], o_qty[i], o_status[i], o_req[i] = o.side, o.price_ticks, o.leaves, o.status, o.request
            o_sent[i] = o.placed_ns
        blocked = self._blocked
        blocked[:] = 0
        self._stamp += 1
        # One compiled call on arrays and numbers (numba types those in C, fast): the decision step
        # the backtest engine runs, never skipping (kernel, diff, gates; grinder.core.step).
        args = (self._handle, self.params, self.state, self._flags,
                (now_ns, best_bid_ticks, best_ask_ticks, bid_qty, ask_qty, tick, lot, position, equity,
                 unit_notional, kept, book), (m, self._nt, self._stamp), o_side, o_px, o_qty, o_side, o_px, o_status,
                o_req, o_live, o_sent, o_slots, self._t, *self._prev, out_cancel, self._out_place, self.gate_cfg,
                self.gate_state, self.qr_cfg, self.qr_state, blocked, self._scratch)  # fmt: skip
        if self._step is None:
            sig = tuple(typeof(a) for a in args)
            _live_step.compile(sig)  # for these argument types ...
            self._step = _live_step.overloads[sig].entry_point
        try:
            nt, nc, npl, ntk, _, (f_side, f_px, f_qty) = self._step(*args)
        except ValueError as e:
            if str(e) == BAD_KIND:
                raise ConfigError(f"{self.strategy.name}: {BAD_KIND}") from None
            raise
        if nt < 0 or nt > len(self._t[0]):
            raise ConfigError(f"{self.strategy.name}: strategy kernel returned {nt} targets; it may ask for 0 to "
                            f"{len(self._t[0])} (max_targets)")  # fmt: skip
        self._nt = nt
        out_place = self._out_place
        place, take = [], []
        if npl:
            side, px, qty, level = (a[out_place[:npl]].tolist() for a in self._t[:4])
            place = list(zip(side, px, qty, level, strict=True))
        if ntk:
            if self.strategy.recompute != "always":  # as the backtest engine refuses it (engine.TAKER_REUSED)
                raise ConfigError(f"{self.strategy.name}: strategy kernel wrote a taker order but does not "
                                  "recompute 'always' (Strategy.recompute)")  # fmt: skip
            take = list(zip(*(a[out_place[npl : npl + ntk]].tolist() for a in self._t), strict=True))
        if f_qty > 0.0:  # the guards' flatten, after the kernel's taker orders (grinder.core.gates.flatten_order)
            take.append((int(f_side), int(f_px), float(f_qty), FLATTEN_LEVEL, IOC | REDUCE_ONLY))
        return Intents(
            out_cancel[:nc].tolist(),
            place,
            nt,
            {r: b for r, b in zip(REASONS, blocked.tolist(), strict=True) if b} if blocked.any() else {},
            take,
        )
