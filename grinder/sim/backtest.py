"""Drive the compiled event loop over a tape: clocks, latency and fee settings in, a result out."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from grinder.core.gates import REASONS, GateConfig, new_gate_state
from grinder.data.tape import Tape
from grinder.sim.engine import STRATEGY_SIG, run
from grinder.sim.queue import PROB_POWER, RISK_AVERSE
from grinder.sim.replay import Replay, prepare_replay


class VenueConfig(BaseModel):
    """How the simulated venue behaves: latencies in ns, fees as fractions, the queue model."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    entry_latency_ns: int = Field(10_000_000, ge=0, description="local send -> exchange receipt")
    response_latency_ns: int = Field(10_000_000, ge=0, description="exchange event -> local receipt")
    feed_latency_floor_ns: int = Field(0, ge=0, description="minimum local - exchange time after correction")
    local_clock_offset_ns: int | None = Field(None, description="add this to local times instead of estimating it")
    step_ns: int = Field(100_000_000, gt=0, description="decision interval, local time")
    queue: str = Field("risk_averse", pattern="^(risk_averse|power)$")
    queue_power: float = Field(3.0, gt=0)
    maker_fee: float | None = Field(None, ge=-0.01, le=0.01, description="default: the instrument's")
    taker_fee: float | None = Field(None, ge=-0.01, le=0.01)


@dataclass(frozen=True)
class BacktestResult:
    """Fills, per-decision records, final state and a digest that identifies the run."""

    fills: dict[str, np.ndarray]  # ts_exch, ts_local, side, price, qty, maker, fee
    steps: dict[str, np.ndarray]  # ts, mid, position, balance, fees, open_orders
    position: float
    balance: float
    fees: float
    counters: dict[str, int]
    digest: str
    funding: dict[str, np.ndarray]  # ts, position, amount (quote; positive = paid) of each settlement

    @property
    def funding_paid(self) -> float:
        """Funding paid over the run, quote currency (negative when received)."""
        return float(self.funding["amount"].sum())

    @property
    def equity(self) -> float:
        """Balance plus position marked at the last mid, minus fees and funding (quote currency)."""
        mid = self.steps["mid"][-1] if len(self.steps["mid"]) else np.nan
        return self.balance + self.position * mid - self.fees - self.funding_paid


def corrected_local_times(tape: Tape, floor_ns: int = 0) -> np.ndarray:
    """Local receive times shifted so no event is received before the exchange sent it (+ floor).

    Recorder clocks drift (the 2024 Binance captures run ~1.3-1.5 s behind the exchange), so the
    raw difference is not a latency; one constant offset keeps the recorded jitter and order.
    """
    lag = tape.ts_local - tape.ts_exch
    offset = max(0, floor_ns - int(lag.min())) if len(lag) else 0
    return tape.ts_local + offset


def digest_of(fills: dict[str, np.ndarray], final: tuple[float, float, float]) -> str:
    """sha256 over every fill column and the final position, balance and fees."""
    h = hashlib.sha256()
    for k in sorted(fills):
        h.update(k.encode())
        h.update(np.ascontiguousarray(fills[k]).tobytes())
    h.update(np.array(final, np.float64).tobytes())
    return h.hexdigest()


def funding_settlements(tape: Tape) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(time ns, rate, mark price) of each funding settlement inside the tape's mark-price series.

    The rate is the last one published before the settlement time, the mark price the last one at
    or before it; settlements outside the series' time span are not known and not applied.
    """
    f = tape.funding
    if len(f) == 0:
        return np.empty(0, np.int64), np.empty(0), np.empty(0)
    ts = f.ts_exch
    times = np.unique(f.next_funding_ts)
    times = times[(times > ts[0]) & (times <= ts[-1])]
    rate = f.funding_rate[np.searchsorted(ts, times, "left") - 1]
    mark = f.mark_price[np.searchsorted(ts, times, "right") - 1]
    return times.astype(np.int64), rate.astype(np.float64), mark.astype(np.float64)


def prepare(tape: Tape, venue: VenueConfig) -> Replay:
    """The per-tape replay (book facts, local view) for this venue's local clock; reuse it across runs."""
    if venue.local_clock_offset_ns is None:
        local = corrected_local_times(tape, venue.feed_latency_floor_ns)
    else:
        local = tape.ts_local + venue.local_clock_offset_ns
    return prepare_replay(tape, local)[0]


def run_backtest(
    tape: Tape,
    strategy,
    params: np.ndarray,
    venue: VenueConfig,
    max_targets: int = 64,
    start_ns: int = 0,
    replay: Replay | None = None,
    gates: GateConfig | None = None,
    state_size: int = 64,
) -> BacktestResult:
    """Run `strategy` (a compiled target-quote kernel) with `params` over `tape`.

    Decisions happen at start_ns + k * step_ns; with start_ns = 0 the clock starts at the first event.
    Pass `replay` from `prepare(tape, venue)` to skip rebuilding it (sweeps share one). `gates`
    filter every decision's intents (default: all off); blocked intents are counted by reason.
    """
    inst = tape.instrument
    rep = prepare(tape, venue) if replay is None else replay
    gate_cfg = (gates or GateConfig()).as_array()
    blocked = np.zeros(len(REASONS), np.int64)
    if tuple(STRATEGY_SIG.args) not in [tuple(sig) for sig in getattr(strategy, "signatures", [])]:
        strategy.compile(STRATEGY_SIG.args)
    c = np.ascontiguousarray  # no copy for tapes from load_tape; the engine is compiled for C layout
    out = run(
        c(tape.ts_exch),
        c(tape.kind),
        c(tape.side),
        c(tape.price_ticks),
        c(tape.qty),
        rep.prev_qty,
        rep.best_bid,
        rep.best_ask,
        rep.local_ts,
        rep.local_best_bid,
        rep.local_best_ask,
        rep.local_best_bid_qty,
        rep.local_best_ask_qty,
        rep.level_rows,
        rep.level_keys,
        rep.reset_rows,
        rep.reset_sides,
        *funding_settlements(tape),
        int(start_ns),
        venue.step_ns,
        venue.entry_latency_ns,
        venue.response_latency_ns,
        inst.tick_size,
        inst.lot_size,
        inst.min_notional,
        inst.maker_fee if venue.maker_fee is None else venue.maker_fee,
        inst.taker_fee if venue.taker_fee is None else venue.taker_fee,
        RISK_AVERSE if venue.queue == "risk_averse" else PROB_POWER,
        venue.queue_power,
        strategy,
        np.asarray(params, np.float64),
        np.zeros(state_size),
        max_targets,
        gate_cfg,
        new_gate_state(gate_cfg),
        blocked,
    )
    fts_exch, fts_local, fside, fpx, fqty, fmaker, ffee = out[:7]
    fills = {
        "ts_exch": fts_exch,
        "ts_local": fts_local,
        "side": fside,
        "price": fpx * inst.tick_size,
        "price_ticks": fpx,
        "qty": fqty,
        "maker": fmaker,
        "fee": ffee,
    }
    steps = dict(zip(("ts", "mid", "position", "balance", "fees", "open_orders"), out[7:13], strict=True))
    c = out[13]
    steps["mode"] = out[14]
    out = out[:14] + out[15:]
    counters = {
        "placed": int(c[0]),
        "cancelled": int(c[1]),
        "expired": int(c[2]),
        "cancel_rejected": int(c[3]),
        "fills": int(c[4]),
        "exchange_events": int(c[5]),
        "decisions": int(c[6]),
        "rejected": int(c[7]),
    }
    position, balance, fees = float(out[14]), float(out[15]), float(out[16])
    funding = {"ts": out[17], "position": out[18], "amount": out[19]}
    paid = float(out[20])
    counters.update({f"blocked_{r}": int(b) for r, b in zip(REASONS, blocked, strict=True)})
    return BacktestResult(
        fills, steps, position, balance, fees, counters, digest_of(fills, (position, balance, fees, paid)), funding
    )
