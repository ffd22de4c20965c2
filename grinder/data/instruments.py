"""Instrument metadata: exchange trading rules and fees, validated once at the edge."""

from __future__ import annotations

import tomllib
from importlib import resources
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from grinder.data.errors import DataError


class Instrument(BaseModel):
    """Trading rules of one contract: tick and lot in quote/base units, fees as fractions."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    venue: str = Field(min_length=1)
    symbol: str = Field(min_length=1)
    contract: Literal["linear", "inverse"] = "linear"
    base: str = ""
    quote: str = ""
    settle: str = ""
    tick_size: float = Field(gt=0)
    lot_size: float = Field(gt=0)
    min_notional: float = Field(default=0.0, ge=0)
    contract_size: float = Field(default=1.0, gt=0)
    maker_fee: float = Field(default=0.0, ge=-0.01, le=0.01)
    taker_fee: float = Field(default=0.0, ge=-0.01, le=0.01)

    @model_validator(mode="after")
    def _settle_default(self) -> Instrument:
        if not self.settle:
            object.__setattr__(self, "settle", self.quote if self.contract == "linear" else self.base)
        return self


def known_instruments() -> dict[tuple[str, str], Instrument]:
    """The instruments Grinder ships rules for, keyed by (venue, symbol)."""
    text = resources.files("grinder.data").joinpath("instruments.toml").read_text()
    out = {}
    for venue, symbols in tomllib.loads(text).items():
        for symbol, fields in symbols.items():
            out[(venue, symbol)] = Instrument(venue=venue, symbol=symbol, **fields)
    return out


def resolve_instrument(venue: str, symbol: str, overrides: dict | None = None) -> Instrument:
    """The known rules for (venue, symbol) with `overrides` applied; unknown symbols need tick and lot."""
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    base = known_instruments().get((venue, symbol))
    if base is None:
        missing = [k for k in ("tick_size", "lot_size") if k not in overrides]
        if missing:
            raise DataError(
                f"no built-in rules for {venue}/{symbol}: pass "
                + " and ".join("--" + m.replace("_", "-") for m in missing)
            )
        return Instrument(venue=venue, symbol=symbol, **overrides)
    # model_copy would skip validation: rebuild so overrides are checked like everything else.
    return Instrument(**{**base.model_dump(), **overrides}) if overrides else base


def off_grid(values: np.ndarray, step: float) -> np.ndarray:
    """Indices of values that are not an integer multiple of `step` (tolerates float rounding)."""
    q = values / step
    # Decimal prices parsed to binary floats are off the grid by ~1e-10 steps at most.
    return np.flatnonzero(np.abs(q - np.rint(q)) > 1e-6)
