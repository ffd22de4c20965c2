"""`grinder live --config FILE`: the adapter's settings, typed and checked once when the file is read."""

from __future__ import annotations

import tomllib
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from grinder.data.errors import DataError
from live.guard import parse_api_url


class LiveConfig(BaseModel):
    """What to run, where, and its limits. Secrets are never here (see `live.client.credentials`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    strategy: str
    params: dict
    symbol: str = Field(description="venue symbol, e.g. BTCUSDT")
    mode: str = Field("live", pattern="^(live|testnet|paper)$")
    api_url: str | None = Field(
        None, description="base URL (scheme://host[:port]) of a Binance-compatible venue; None: Binance (live.guard)"
    )
    state_dir: Path = Path("live_state")
    step_ms: int = Field(100, ge=1)
    reconcile_s: float = Field(30.0, gt=0)
    max_actions_per_day: int = Field(10_000, ge=0)
    max_notional_per_day: float = Field(1_000_000.0, ge=0)
    mainnet_allowlist: tuple[str, ...] = ()
    stale_after_s: float = Field(5.0, gt=0, description="no decision when the book is older than this")
    hot_ms: float = Field(
        5.0, ge=0, description="keep the process awake this long before each decision (0: sleep until it)"
    )
    paper_balance: float = Field(10_000.0, gt=0, description="paper mode: the simulated wallet (settle currency)")
    paper_partial_fills: bool = Field(False, description="paper mode: fill by traded quantity beyond the queue")

    @field_validator("api_url")
    @classmethod
    def _api_url_is_a_base_url(cls, v: str | None) -> str | None:
        if v is not None:
            parse_api_url(v)  # ValueError says what is wrong; the client takes it parsed
        return v

    @model_validator(mode="after")
    def _hot_within_step(self) -> LiveConfig:
        if self.hot_ms >= self.step_ms:
            raise ValueError(f"hot_ms ({self.hot_ms:g}) must be below step_ms ({self.step_ms}): it would never sleep")
        return self


def load_config(path: Path) -> LiveConfig:
    """Read and validate a TOML config; DataError names the file and the first bad field."""
    try:
        raw = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise DataError(f"{path}: not a TOML text file (not UTF-8: compressed or binary?)") from None
    except OSError as e:
        raise DataError(f"{path}: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise DataError(f"{path}: {e}") from None
    try:
        return LiveConfig(**raw)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(x) for x in first["loc"])
        msg = first["msg"].removeprefix("Value error, ")
        raise DataError(f"{path}: {where + ': ' if where else ''}{msg}") from None
