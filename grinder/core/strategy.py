"""What a strategy is: validated parameters plus a compiled kernel from market view to target quotes.

Kernel contract (numba; see `grinder.sim.engine.STRATEGY_SIG` and docs/strategies.md):
``kernel(params, state, now_ns, best_bid_ticks, best_ask_ticks, bid_qty, ask_qty, tick_size,
lot_size, position, out_side, out_price_ticks, out_qty) -> count``. It writes the quotes that should
be resting now (side +1 buy / -1 sell, price in ticks, quantity in base units) and returns how
many; `state` is its memory between decisions; EMPTY best prices mean that side of the book is
empty. The drivers diff those targets against known orders (`grinder.core.diff`).
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import BaseModel, ValidationError

from grinder.data.errors import DataError


@dataclass(frozen=True)
class Strategy:
    """A named strategy: its parameter model, its kernel, and how many quotes it may ask for."""

    name: str
    params: type[BaseModel]
    kernel: Any
    max_targets: int = 64

    def validate(self, values: dict) -> BaseModel:
        """Parameters from user input, checked; errors name the parameter."""
        unknown = sorted(set(values) - set(self.params.model_fields))
        if unknown:
            raise DataError(
                f"unknown parameter(s) {', '.join(unknown)} for strategy {self.name}; "
                f"expected: {', '.join(self.params.model_fields)}"
            )
        try:
            return self.params(**values)
        except ValidationError as e:
            first = e.errors()[0]
            loc = ".".join(str(x) for x in first["loc"]) or "parameters"
            raise DataError(f"strategy {self.name}: {loc}: {first['msg']}") from None

    def vector(self, p: BaseModel) -> np.ndarray:
        """The float64 parameter vector the kernel reads."""
        return p.as_array()


def discover() -> dict[str, Strategy]:
    """Every `STRATEGY` defined by a module of the `strategies` package (users drop files there)."""
    import strategies

    found = {}
    for mod in pkgutil.iter_modules(strategies.__path__):
        m = importlib.import_module(f"strategies.{mod.name}")
        s = getattr(m, "STRATEGY", None)
        if isinstance(s, Strategy):
            found[s.name] = s
    return found


def get(name: str) -> Strategy:
    """The strategy called `name`, or a clear error listing the known ones."""
    known = discover()
    if name not in known:
        raise DataError(f"unknown strategy {name!r}; known: {', '.join(sorted(known)) or 'none'}")
    return known[name]
