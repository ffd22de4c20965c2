"""`grinder live --config FILE`: the adapter's settings, typed and checked once when the file is read.

The `[gates]` table is `grinder.core.gates.GateConfig`, the model `grinder backtest --config` reads
its `[gates]` table into: one file's gates mean the same in both. The `[model]` table puts a
registered model in the decision path (`ModelConfig`, docs/ml.md "Models in the decision path").
"""

from __future__ import annotations

import ipaddress
import re
import tomllib
from pathlib import Path
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from grinder.core.gates import GateConfig
from grinder.errors import ConfigError
from grinder.live.guard import parse_api_url


def redis_on_loopback(url: str) -> bool:
    """Whether a redis URL names this machine by its own text (localhost, 127.0.0.0/8, ::1), as live.guard decides."""
    u = urlsplit(url)
    return parse_api_url(f"http://{u.netloc}").loopback


class HaConfig(BaseModel):
    """The `[ha]` table: leader election on Redis (live.leader, decision 041). Absent: one instance, no election."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    redis_url: str = Field(description="redis://host[:port][/db] (rediss:// for TLS, which a Redis off this machine "
                           "needs); the password, if any, from GRINDER_REDIS_PASSWORD, never the file")  # fmt: skip
    lease_ms: int = Field(10_000, ge=300, le=600_000, description="the lease's time to live (ms), renewed every third")
    acquire_every_ms: int = Field(1_000, ge=50, le=60_000, description="how often a follower tries to take the lease")
    account: str = Field("default", pattern=r"^[A-Za-z0-9_.-]{1,64}$",
                         description="names the account in the Redis keys: instances of one account and symbol elect "
                         "one leader")  # fmt: skip

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, v: str) -> str:
        u = urlsplit(v)
        try:
            port = u.port
        except ValueError:
            port = -1
        if u.scheme not in ("redis", "rediss") or not u.hostname or port == -1:
            raise ValueError(f"{v!r}: expected redis://host[:port][/db]")
        if u.username or u.password:
            raise ValueError(f"{v!r}: no credentials in the URL (set GRINDER_REDIS_PASSWORD)")
        if u.query or u.fragment or not re.fullmatch(r"(/\d{1,2})?/?", u.path):
            raise ValueError(f"{v!r}: nothing after the database number")
        # Whoever can write the lease decides who trades (delete it and a second leader starts): a Redis
        # off this machine is spoken to over TLS, with a password (checked at start: GRINDER_REDIS_PASSWORD).
        if u.scheme != "rediss" and not redis_on_loopback(v):
            raise ValueError(f"{v!r}: a Redis off this machine needs rediss:// (TLS) and GRINDER_REDIS_PASSWORD")
        return v


class ModelConfig(BaseModel):
    """The `[model]` table: a registered model, resolved once at start and pinned, that drives a strategy.

    `shadow`: the configured strategy trades as without it, and `strategy` (with `[model.params]`),
    driven by the model, decides beside it on the same inputs; its decisions are logged, never sent.
    `active`: the configured strategy is the model-driven one and trades.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    uri: str = Field(description="models:/NAME@ALIAS or models:/NAME/VERSION in the `mlruns` store")
    mlruns: Path | None = Field(None, description="the MLflow store's folder (absent: $GRINDER_MLRUNS, else ./mlruns)")
    mode: str = Field(pattern="^(shadow|active)$", description="shadow: decide beside, send nothing; active: trade")
    strategy: str | None = Field(None, description="shadow: the model-driven strategy (one that reads signals)")
    params: dict = Field(default_factory=dict, description="shadow: that strategy's parameters ([model.params])")
    warmup_s: float | None = Field(
        None, ge=0, le=86_400,
        description="no forecast (NaN: a model strategy pauses) until the live features hold this much exchange "
        "time since the first synced book (s; absent: the feature set's longest horizon)",
    )  # fmt: skip

    @field_validator("uri")
    @classmethod
    def _registry_uri(cls, v: str) -> str:
        from grinder.ml.model import ModelRef

        try:
            ModelRef.parse(v)
        except ConfigError as e:
            raise ValueError(str(e)) from None
        return v


def _strategy(name: str, field: str):
    """The strategy called `name`; ValueError naming `field` if there is none."""
    from grinder.core.strategy import get

    try:
        return get(name)
    except ConfigError as e:
        raise ValueError(f"{field}: {e}") from None


class LiveConfig(BaseModel):
    """What to run, where, and its limits. Secrets are never here (see `grinder.live.client.credentials`)."""

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
    gates: GateConfig = Field(
        default_factory=GateConfig, description="the [gates] table: the backtest's gates, the same model (0: off)"
    )
    # Account-wide order identity (issue 21, live.instance): how long the start watches another
    # instance's orders of this strategy and symbol for new ones before taking it for dead.
    instance_probe_s: float = Field(
        3.0, gt=0, le=300, description="start: watch other instances' orders this long (s) for signs of life"
    )
    # Reconciliation rollout modes and the kill switch (issue 21, live.rollout, live.kill; decision 029).
    rollout: str = Field(
        "execute_cancel_all",
        pattern="^(detect_only|plan_only|blocked|execute_cancel_all|execute_flatten)$",
        description="what reconciliation may do: detect_only < plan_only < blocked < execute_cancel_all < "
        "execute_flatten",
    )
    max_flatten_qty: float = Field(
        0.0, ge=0, description="most base units one flatten order closes (0: flatten never sends an order)"
    )
    flatten_slippage_bps: float = Field(
        50.0, gt=0, le=1000, description="a flatten's IOC limit: this far through the best price (basis points)"
    )
    kill_flatten: bool = Field(False, description="the kill switch also closes the position (execute_flatten only)")
    # Shutdown and the dead-man's switch (issue 21, live.shutdown; decision 027). The systemd unit's
    # TimeoutStopSec must exceed stop_timeout_s by the rest of the stop (about 15 s).
    stop_timeout_s: float = Field(
        20.0, gt=0, le=600, description="stop: cancel every order of ours within this long (s), then say what is left"
    )
    dead_man_s: float = Field(
        60.0, ge=0, le=3600,
        description="the venue's countdown cancel-all (s), re-armed every third of it while running (0: off)",
    )  # fmt: skip
    # A venue that stays down (issue 21, live.venue_watch): no market data and no answer this long ends the session.
    venue_down_exit_s: float = Field(
        120.0, gt=0, le=86_400, description="no market data and no answer from the venue this long (s): stop, exit 3"
    )
    # Prometheus metrics (issue 22, live.metrics; decision 036): read from the adapter's state at scrape time.
    metrics_port: int | None = Field(
        None, ge=0, le=65535, strict=True,  # a TOML integer: `true` is not port 1
        description="serve /metrics on metrics_addr at this port (0: any free port; absent: off)",
    )  # fmt: skip
    metrics_addr: str = Field("127.0.0.1", description="the metrics server's bind address: loopback only")
    metrics_kill_linger_s: float = Field(
        15.0, ge=0, le=120,
        description="after a kill, keep /metrics up until one more scrape, at most this long (s), so it is seen",
    )  # fmt: skip
    # A folder per run under state_dir/runs (issue 22, live.runs): older ones removed at each start.
    keep_runs: int = Field(30, ge=1, le=100_000, description="run folders kept (the current one included)")
    keep_days: float = Field(
        0.0, ge=0, le=36_500, description="also remove run folders started more than this many days ago (0: no limit)"
    )

    # Leader election (issue 22, live.leader; decision 041): only the leader sends anything that changes the venue.
    ha: HaConfig | None = Field(None, description="the [ha] table: leader election on Redis (absent: off)")
    # A registered model in the decision path (issue 23, live.model): shadow beside the strategy, or driving it.
    model: ModelConfig | None = Field(None, description="the [model] table: a registered model (absent: none)")

    @field_validator("dead_man_s")
    @classmethod
    def _dead_man_off_or_a_second(cls, v: float) -> float:
        if 0 < v < 1:
            raise ValueError(f"dead_man_s ({v:g}) must be 0 (off) or at least 1 s (shorter fires between re-arms)")
        return v

    @field_validator("metrics_addr")
    @classmethod
    def _metrics_on_loopback(cls, v: str) -> str:
        try:
            ip = ipaddress.ip_address(v)
        except ValueError:
            ip = None
        # The two canonical forms only (an IPv4-mapped ::ffff:127.0.0.1 or a name is refused, as live.guard does).
        if ip is None or not (ip.is_loopback if ip.version == 4 else ip == ipaddress.IPv6Address("::1")):
            raise ValueError(f"{v!r} is not a loopback address (127.0.0.0/8 or ::1): metrics are served to this "
                             f"machine only")  # fmt: skip
        return v

    @field_validator("api_url")
    @classmethod
    def _api_url_is_a_base_url(cls, v: str | None) -> str | None:
        if v is not None:
            parse_api_url(v)  # ValueError says what is wrong; the client takes it parsed
        return v

    @model_validator(mode="after")
    def _ha_needs_a_venue(self) -> LiveConfig:
        if self.ha is not None and self.mode == "paper":
            raise ValueError("ha: paper mode sends nothing to a venue, there is nothing to elect a leader for")
        return self

    @model_validator(mode="after")
    def _model_fits_the_strategies(self) -> LiveConfig:
        # Fail closed: a strategy that reads a model's signals never runs without a model to give them.
        trading = _strategy(self.strategy, "strategy")
        m = self.model
        if m is None:
            if trading.signals:
                raise ValueError(f"strategy: {trading.name} reads a model's {', '.join(trading.signals)} forecast: "
                                 'add a [model] table (uri = "models:/NAME@champion", mode = "active")')  # fmt: skip
            return self
        if m.mode == "active":
            if not trading.signals:
                raise ValueError(f"model.mode: active drives the configured strategy, but {trading.name} reads no "
                                 "signals (shadow mode runs a model strategy beside it: model.strategy)")  # fmt: skip
            if m.strategy is not None or m.params:
                field = "model.strategy" if m.strategy is not None else "model.params"
                raise ValueError(f"{field}: only in shadow mode (active: the configured strategy is the model's)")
            return self
        if m.strategy is None:
            raise ValueError("model.strategy: shadow mode needs the model-driven strategy to run beside "
                             f"{trading.name} (e.g. \"ml_grid\", with [model.params])")  # fmt: skip
        if trading.signals:
            raise ValueError(f"strategy: in shadow mode the trading strategy runs without the model, but "
                             f"{trading.name} reads signals (model.mode = \"active\" trades it)")  # fmt: skip
        shadow = _strategy(m.strategy, "model.strategy")
        if not shadow.signals:
            raise ValueError(f"model.strategy: {shadow.name} reads no signals: nothing for the model to drive")
        try:
            shadow.validate(m.params)
        except ConfigError as e:
            raise ValueError(f"model.params: {e}") from None
        return self

    @model_validator(mode="after")
    def _hot_within_step(self) -> LiveConfig:
        if self.hot_ms >= self.step_ms:
            raise ValueError(f"hot_ms ({self.hot_ms:g}) must be below step_ms ({self.step_ms}): it would never sleep")
        return self


def load_config(path: Path) -> LiveConfig:
    """Read and validate a TOML config; ConfigError names the file and the first bad field."""
    try:
        raw = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a TOML text file (not UTF-8: compressed or binary?)") from None
    except OSError as e:
        raise ConfigError(f"{path}: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: {e}") from None
    try:
        return LiveConfig(**raw)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(x) for x in first["loc"])
        msg = first["msg"].removeprefix("Value error, ")
        raise ConfigError(f"{path}: {where + ': ' if where else ''}{msg}") from None
