"""Parameter grids for sweeps: value lists and ranges per parameter, expanded and validated at the edge.

A grid maps parameter names to values. From the command line each axis is `NAME=SPEC`, from a TOML
file's `[sweep]` table it is `NAME = SPEC` or `NAME = [v1, v2, ...]`. A SPEC is one of:

- a list, `1,2,5` (numbers or words);
- an inclusive range with a step, `0.5:2.0:0.5` -> 0.5, 1.0, 1.5, 2.0;
- evenly spaced values, `lin:0.5:2.0:4` -> 4 values from 0.5 to 2.0;
- geometrically spaced values, `log:0.1:10:3` -> 0.1, 1, 10.

The grid is the Cartesian product of its axes, in axis order (the last axis varies fastest), with
the strategy's fixed parameters (from `[strategy]` / `-p`) filled in. Every combination is
validated by the strategy's parameter model before any data is read; an error names the axis or
the first invalid combination.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from pydantic import BaseModel

from grinder.core.strategy import Strategy
from grinder.errors import ConfigError

MAX_SETS = 1_000_000  # a guard against a typo that would expand to billions of runs


def _number(text: str, axis: str) -> float | int:
    try:
        v = float(text)
    except ValueError:
        raise ConfigError(f"sweep axis {axis}: {text!r} is not a number") from None
    if not math.isfinite(v):
        raise ConfigError(f"sweep axis {axis}: {text!r} is not a finite number")
    return int(v) if v.is_integer() and "." not in text and "e" not in text.lower() else v


def parse_axis(axis: str, spec) -> list:
    """Values of one axis from a SPEC string or a list (see the module docstring)."""
    if isinstance(spec, list | tuple):
        values = list(spec)
    elif isinstance(spec, int | float) and not isinstance(spec, bool):
        values = [spec]
    elif isinstance(spec, str):
        text = spec.strip()
        if text.startswith(("lin:", "log:")):
            kind, *parts = text.split(":")
            if len(parts) != 3:
                raise ConfigError(f"sweep axis {axis}: {kind}:START:STOP:COUNT expected, got {text!r}")
            lo, hi = float(_number(parts[0], axis)), float(_number(parts[1], axis))
            count = _number(parts[2], axis)
            if not isinstance(count, int) or count < 1:
                raise ConfigError(f"sweep axis {axis}: COUNT must be a positive integer, got {parts[2]!r}")
            if kind == "log":
                if lo <= 0 or hi <= 0:
                    raise ConfigError(f"sweep axis {axis}: log spacing needs positive bounds, got {text!r}")
                values = np.geomspace(lo, hi, count).tolist()
            else:
                values = np.linspace(lo, hi, count).tolist()
        elif ":" in text:
            parts = text.split(":")
            if len(parts) != 3:
                raise ConfigError(f"sweep axis {axis}: START:STOP:STEP expected, got {text!r}")
            lo, hi, step = (_number(p, axis) for p in parts)
            if step <= 0:
                raise ConfigError(f"sweep axis {axis}: STEP must be positive, got {parts[2]!r}")
            n = math.floor((hi - lo) / step + 1e-9) + 1
            if n < 1:
                raise ConfigError(f"sweep axis {axis}: range {text!r} yields no value (STOP below START)")
            if n > MAX_SETS:
                raise ConfigError(f"sweep axis {axis}: range {text!r} yields {n:,} values")
            ints = all(isinstance(x, int) for x in (lo, hi, step))
            # Multiply, do not accumulate: 0.1 + 0.1 + 0.1 is not 0.3.
            values = [lo + k * step if ints else round(lo + k * step, 12) for k in range(n)]
        else:
            values = [v.strip() for v in text.split(",")]
            values = [_number(v, axis) if _looks_numeric(v) else v for v in values if v != ""]
    else:
        raise ConfigError(f"sweep axis {axis}: cannot read {spec!r} as values")
    if not values:
        raise ConfigError(f"sweep axis {axis}: no values")
    if len(set(map(repr, values))) != len(values):
        raise ConfigError(f"sweep axis {axis}: repeated values in {spec!r}")
    return values


def _looks_numeric(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class Grid:
    """The parameter sets of a sweep: the axes, and every combination validated by the strategy."""

    strategy: Strategy
    axes: dict[str, list]
    fixed: dict
    sets: list[BaseModel]

    def __len__(self) -> int:
        return len(self.sets)

    def values(self, i: int) -> dict:
        """The swept values of set i (axis name -> value)."""
        p = self.sets[i]
        return {name: getattr(p, name) for name in self.axes}


def expand(strategy: Strategy, axes: dict[str, Iterable], fixed: dict | None = None) -> Grid:
    """Validate axes against the strategy's parameters and expand their product into parameter sets."""
    fixed = dict(fixed or {})
    if not axes:
        raise ConfigError("empty sweep grid: give at least one axis (NAME=VALUES, or a [sweep] table)")
    known = set(strategy.params.model_fields)
    unknown = sorted(set(axes) - known)
    if unknown:
        raise ConfigError(
            f"unknown parameter(s) {', '.join(unknown)} for strategy {strategy.name}; expected: {', '.join(known)}"
        )
    both = sorted(set(axes) & set(fixed))
    if both:
        raise ConfigError(f"parameter(s) {', '.join(both)} are both swept and fixed")
    parsed = {name: parse_axis(name, spec) for name, spec in axes.items()}
    total = math.prod(len(v) for v in parsed.values())
    if total > MAX_SETS:
        raise ConfigError(f"sweep grid has {total:,} parameter sets; the limit is {MAX_SETS:,}")
    sets = []
    names = list(parsed)
    for combo in itertools.product(*parsed.values()):
        values = {**fixed, **dict(zip(names, combo, strict=True))}
        try:
            sets.append(strategy.validate(values))
        except ConfigError as e:
            shown = ", ".join(f"{k}={v}" for k, v in zip(names, combo, strict=True))
            raise ConfigError(f"parameter set ({shown}): {e}") from None
    return Grid(strategy, parsed, fixed, sets)
