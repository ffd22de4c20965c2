"""What a strategy is: validated parameters plus a compiled kernel from market view to target quotes.

Kernel contract (numba; `STRATEGY_SIG` below and docs/strategies.md):
``kernel(params, state, now_ns, best_bid_ticks, best_ask_ticks, bid_qty, ask_qty, tick_size,
lot_size, position, signals, depth, open_side, open_price_ticks, open_qty, n_open, out_side,
out_price_ticks, out_qty, out_level, out_kind) -> count``. From the market view (the best prices and
quantities, and in `depth` the book's first levels, grinder.core.depth, for a strategy that asks for
them with `Strategy.depth_levels`), the position, the decision's signals (a model's predictions,
`Strategy.signals`; empty for a strategy without) and our open quotes it writes its targets (side
+1 buy / -1 sell, price in ticks, quantity, a level id of the strategy's choosing that is carried
into fills, and a `grinder.core.order_kind` code) and returns how many.
A QUOTE target (what `out_kind` holds unless the kernel writes there) should be resting now; an IOC
or MARKET target is a taker order sent once, now. `state` is its memory between decisions; by
convention state[0] is its controller mode, which drivers record. EMPTY best prices mean that side
of the book is empty. The drivers diff the quotes against known orders (`grinder.core.diff`) and
pass the intents, taker orders included, through the gates.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass
from typing import Any

import numpy as np
from numba import types
from numba.core.types.function_type import CompileResultWAP
from numba.core.typing.typeof import typeof_impl
from pydantic import BaseModel, ValidationError

from grinder.core.depth import MAX_DEPTH_LEVELS
from grinder.errors import ConfigError

_i8, _i64, _f64 = (types.Array(t, 1, "C") for t in (types.int8, types.int64, types.float64))
_f64_2d = types.Array(types.float64, 2, "C")
# The engine takes the kernel as a typed function pointer, so it is compiled once for all
# strategies and cached on disk; a kernel is compiled for exactly this signature.
STRATEGY_SIG = types.int64(
    _f64,  # params
    _f64,  # state, kept between decisions (zeros at the start)
    types.int64,  # now, ns (local clock)
    types.int64,  # best bid, ticks (EMPTY if none)
    types.int64,  # best ask, ticks
    types.float64,  # quantity at the best bid (base units or contracts)
    types.float64,  # quantity at the best ask
    types.float64,  # tick size, quote per base
    types.float64,  # lot size
    types.float64,  # position (base units or contracts; + long)
    _f64,  # signals: this decision's model outputs, in Strategy.signals' order (empty: none)
    _f64_2d,  # depth: the book's first levels [N, 4] (grinder.core.depth; N 0 for none)
    _i8,  # our open quotes: side
    _i64,  # price, ticks
    _f64,  # quantity not yet filled
    types.int64,  # how many open quotes
    _i8,  # out: side
    _i64,  # out: price, ticks
    _f64,  # out: quantity
    _i64,  # out: level id
    _i8,  # out: order kind (grinder.core.order_kind; QUOTE unless written)
)
STRATEGY_FN = types.FunctionType(STRATEGY_SIG)
# Strategy.recompute values, in the order of the engine's codes (grinder.sim.engine.REUSE_*).
RECOMPUTE = ("always", "top_of_book", "best_prices", "mid_band")
# A "mid_band" kernel writes its band (lowest, highest best bid + best ask, ticks) into the last two
# cells of a state this long or longer (the loop reads a band from no shorter state), and keeps its
# own memory in the cells before them.
BAND_MIN_STATE = 8


@dataclass(frozen=True)
class Strategy:
    """A named strategy: its parameter model, its kernel, how many quotes it may ask for, its mode names."""

    name: str
    params: type[BaseModel]
    kernel: Any
    max_targets: int = 64
    modes: tuple[str, ...] = ()
    # When a driver must call the kernel again rather than reuse its last targets (RECOMPUTE):
    # "always" (it reads the clock, or its state changes on every call); "top_of_book" (only when
    # the best prices or their quantities, our open quotes or the position changed); "best_prices"
    # (only when the best prices, our open quotes or the position changed); "mid_band" (only when
    # the position changed, or the best prices changed and best bid + best ask left the band the
    # kernel wrote at its last call, see BAND_MIN_STATE, (1, 0) for none, or a side of the book is
    # empty; such a kernel reads neither the clock nor our open quotes). With gates on, every
    # kernel is called at every decision. A kernel that declares less than "always" must return
    # the same targets and leave its state as it was (band cells aside) when called again with the
    # inputs it names unchanged, or inside its band; tests/strategies check that for every strategy.
    recompute: str = "always"
    # What the kernel reads in `signals`, in order: the label each model output predicts (a prefix
    # of a grinder.ml.labels name, e.g. "fwd_rv_"). A strategy that names any needs a model
    # (`--model models:/NAME@champion`) whose label matches, and is called at every decision.
    signals: tuple[str, ...] = ()
    # How many levels a side of the book the kernel reads in `depth` (grinder.core.depth): at least
    # this many, from the same book code in both drivers; 0 for a kernel that reads only the best prices.
    depth_levels: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.depth_levels <= MAX_DEPTH_LEVELS:
            raise ConfigError(f"strategy {self.name}: depth_levels must be 0 to {MAX_DEPTH_LEVELS}, got "
                              f"{self.depth_levels}")  # fmt: skip
        if self.recompute not in RECOMPUTE:
            raise ConfigError(
                f"strategy {self.name}: recompute must be one of {', '.join(RECOMPUTE)}, got {self.recompute!r}"
            )
        if self.signals and self.recompute != "always":
            raise ConfigError(f"strategy {self.name}: a kernel that reads signals must recompute 'always'")
        if self.depth_levels and self.recompute != "always":  # the loop's reuse does not watch the depth
            raise ConfigError(f"strategy {self.name}: a kernel that reads depth must recompute 'always'")

    def compiled(self):
        """The kernel compiled for STRATEGY_SIG (what the engine and the live adapter call)."""
        return compile_kernel(self.kernel)

    def validate(self, values: dict) -> BaseModel:
        """Parameters from user input, checked; errors name the parameter."""
        unknown = sorted(set(values) - set(self.params.model_fields))
        if unknown:
            raise ConfigError(
                f"unknown parameter(s) {', '.join(unknown)} for strategy {self.name}; "
                f"expected: {', '.join(self.params.model_fields)}"
            )
        try:
            return self.params(**values)
        except ValidationError as e:
            first = e.errors()[0]
            loc = ".".join(str(x) for x in first["loc"]) or "parameters"
            raise ConfigError(f"strategy {self.name}: {loc}: {first['msg']}") from None

    def vector(self, p: BaseModel) -> np.ndarray:
        """The float64 parameter vector the kernel reads."""
        return p.as_array()


def compile_kernel(kernel):
    """Compile a numba kernel for STRATEGY_SIG once; a clear error if it does not fit the contract."""
    if tuple(STRATEGY_SIG.args) in [tuple(sig) for sig in getattr(kernel, "signatures", [])]:
        return kernel
    if not hasattr(kernel, "compile"):
        raise ConfigError(f"strategy kernel {kernel!r} is not a numba @njit function")
    try:
        kernel.compile(STRATEGY_SIG.args)
    except Exception as e:  # numba's typing errors are long; keep the first line
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        name = getattr(kernel, "__name__", kernel)
        raise ConfigError(f"strategy kernel {name} does not fit the contract: {first}") from None
    returns = kernel.overloads[tuple(STRATEGY_SIG.args)].signature.return_type
    if types.unliteral(returns) != STRATEGY_SIG.return_type:  # `return 1` types as Literal[int](1): an int64
        name = getattr(kernel, "__name__", kernel)
        raise ConfigError(f"strategy kernel {name} returns {returns}, not the int64 count of its targets")
    return kernel


class KernelHandle(CompileResultWAP):
    """A compiled kernel as a first-class function of numba type STRATEGY_FN, its address looked up once.

    numba types a plain CompileResultWAP argument by building FunctionType(its signature) afresh on
    every call of the engine, with the GIL held; this one's type is the one the engine was compiled
    for, found by its class (decision 031).
    """


@typeof_impl.register(KernelHandle)
def _typeof_kernel_handle(val, c):
    return STRATEGY_FN


def kernel_handle(kernel) -> KernelHandle:
    """The compiled kernel as a first-class function whose address is looked up once, not per backtest.

    Handing the engine a dispatcher makes numba resolve its compiled overload and the overload's
    address (twice) on every call, with the GIL held; this handle does it here, once per kernel
    (decision 031).
    """
    try:
        handle = _HANDLES.get(kernel)  # before compile_kernel, which reads the dispatcher's signatures (slow)
    except TypeError:  # unhashable: not a numba function, which compile_kernel says by name
        handle = None
    if handle is None:
        kernel = compile_kernel(kernel)
        handle = _HANDLES[kernel] = KernelHandle(kernel.overloads[tuple(STRATEGY_SIG.args)])
    return handle


_HANDLES: dict = {}  # kernel dispatcher -> its KernelHandle


def discover() -> dict[str, Strategy]:
    """Every `STRATEGY` defined by a module of the `strategies` package (users drop files there)."""
    from grinder import strategies

    found = {}
    for mod in pkgutil.iter_modules(strategies.__path__):
        m = importlib.import_module(f"grinder.strategies.{mod.name}")
        s = getattr(m, "STRATEGY", None)
        if isinstance(s, Strategy):
            found[s.name] = s
    return found


def get(name: str) -> Strategy:
    """The strategy called `name`, or a clear error listing the known ones."""
    known = discover()
    if name not in known:
        raise ConfigError(f"unknown strategy {name!r}; known: {', '.join(sorted(known)) or 'none'}")
    return known[name]
