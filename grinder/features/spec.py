"""The feature set, declared once: its parameters, its column names and its version hash.

A `FeatureSet` names everything that decides the features' values: the number of book levels in
the imbalance and the EWMA time constants (ns) of the volatility and flow features. Its `version`
is a SHA-256 over that declaration (canonical JSON) and the bytes of the compiled kernel's
source file (`grinder/features/kernel.py`), so a changed parameter or a changed definition gives
another hash; stored features are keyed by it.
"""

from __future__ import annotations

import hashlib
import json
from functools import cache
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, field_validator

from grinder.errors import ConfigError
from grinder.features import kernel

NS_PER_S = 1_000_000_000
KERNEL_SOURCE = Path(kernel.__file__)


@cache
def _kernel_digest() -> str:
    return hashlib.sha256(KERNEL_SOURCE.read_bytes()).hexdigest()


def horizon_label(ns: int) -> str:
    """A short label of a horizon in ns: 1s, 250ms, 5m (whole units only; else ns)."""
    for unit, size in (("h", 3600 * NS_PER_S), ("m", 60 * NS_PER_S), ("s", NS_PER_S), ("ms", 1_000_000)):
        if ns % size == 0:
            return f"{ns // size}{unit}"
    return f"{ns}ns"


class FeatureSet(BaseModel):
    """What the features are: N book levels and the volatility and flow time constants (ns).

    Columns (`names`): microprice_offset (ticks), imbalance (first `levels` levels, -1..1),
    spread (ticks), rv_<h> (bps/sqrt(s)) per `vol_horizons_ns`, flow_imb_<h> (-1..1) and
    intensity_<h> (trades/s) per `flow_horizons_ns`, funding_rate (per funding interval).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    levels: int = 5
    vol_horizons_ns: tuple[int, ...] = (1 * NS_PER_S, 10 * NS_PER_S, 60 * NS_PER_S)
    flow_horizons_ns: tuple[int, ...] = (1 * NS_PER_S, 10 * NS_PER_S, 60 * NS_PER_S)

    @field_validator("levels")
    @classmethod
    def _levels(cls, v: int) -> int:
        if v < 1:
            raise ConfigError(f"levels must be at least 1, got {v}")
        return v

    @field_validator("vol_horizons_ns", "flow_horizons_ns")
    @classmethod
    def _horizons(cls, v: tuple[int, ...], info) -> tuple[int, ...]:
        if any(h <= 0 for h in v):
            raise ConfigError(f"{info.field_name} must be positive ns, got {v}")
        if len({horizon_label(h) for h in v}) != len(v):
            raise ConfigError(f"{info.field_name} repeats a horizon: {v}")
        return v

    @property
    def names(self) -> tuple[str, ...]:
        """Feature column names, in the order the kernel writes them."""
        vol = tuple(f"rv_{horizon_label(h)}" for h in self.vol_horizons_ns)
        imb = tuple(f"flow_imb_{horizon_label(h)}" for h in self.flow_horizons_ns)
        inten = tuple(f"intensity_{horizon_label(h)}" for h in self.flow_horizons_ns)
        return ("microprice_offset", "imbalance", "spread", *vol, *imb, *inten, "funding_rate")

    def kernel_args(self) -> tuple[int, np.ndarray, np.ndarray]:
        """(levels, vol_tau, flow_tau): the parameters the compiled update reads (tau float64 ns)."""
        return (
            self.levels,
            np.array(self.vol_horizons_ns, np.float64),
            np.array(self.flow_horizons_ns, np.float64),
        )

    def declaration(self) -> dict:
        """The declaration the hash covers: parameters, column names and the kernel's source digest."""
        return {
            "levels": self.levels,
            "vol_horizons_ns": list(self.vol_horizons_ns),
            "flow_horizons_ns": list(self.flow_horizons_ns),
            "names": list(self.names),
            "kernel_sha256": _kernel_digest(),
        }

    @property
    def version(self) -> str:
        """SHA-256 (hex) of the canonical JSON of `declaration()`."""
        text = json.dumps(self.declaration(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()
