"""Instrument metadata: exchange trading rules and fees, validated once at the edge."""

from __future__ import annotations

import re
import tomllib
from importlib import resources
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from grinder.errors import ConfigError

# Venue and symbol names become folder names in the lake and the tape cache: one path part each.
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def check_name(what: str, value: str) -> str:
    """`value` if it is a safe venue or symbol name (one path part, no `..`); else a ConfigError naming it."""
    if not isinstance(value, str) or not NAME_PATTERN.fullmatch(value) or ".." in value:
        raise ConfigError(
            f"invalid {what} {value!r}: use letters, digits, '_', '.', '-' (not first, no '..'); "
            "it becomes a folder name in the lake"
        )
    return value


class Instrument(BaseModel):
    """Trading rules of one contract: tick and lot in quote/base units, fees as fractions."""

    # No inf or NaN: an infinite tick or minimum notional passes a "> 0" bound and breaks every price after.
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

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

    @field_validator("venue", "symbol")
    @classmethod
    def _path_part(cls, value: str, info) -> str:
        # A ConfigError (not ValueError) passes through pydantic unchanged: the CLI prints one line.
        return check_name(info.field_name, value)

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
    check_name("venue", venue)
    check_name("symbol", symbol)
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    base = known_instruments().get((venue, symbol))
    if base is None:
        missing = [k for k in ("tick_size", "lot_size") if k not in overrides]
        if missing:
            raise ConfigError(
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
