"""Parity: the live adapter's decisions against the backtest's on the same data (docs/parity.md).

The live side is a `LiveAdapter` with a `decision_log` running against the venue emulator: every
decision's exchange time (the depth update behind its book), best bid and ask, position and target
quotes. The backtest side is `run_backtest` over the same tape with the emulator's latency (none:
local time is exchange time, orders reach the book at once) and the same decision step; its
decisions are replayed through the same `Decider` from the engine's own inputs (the local book at
each decision, `decision_inputs`, and the engine's position there), so the targets are the ones
the engine's kernel computed, decision by decision, strategy state included.

Each live decision is paired with a backtest decision within one step of its book's exchange time
that saw the same inputs: the same best bid and ask (and their quantities, for a strategy that
reads them) and the same position. When the inputs agree the targets must be the same; the report
counts those that are not, and says why the others had no pair.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from grinder.core.decision import Decider
from grinder.core.decision import DecisionRecord as Decision
from grinder.core.strategy import Strategy
from grinder.data.tape import Tape
from grinder.sim.backtest import BacktestResult, VenueConfig, decision_inputs, prepare, run_backtest


@dataclass(frozen=True)
class ParityReport:
    """Live decisions paired with the backtest's; fills and PnL of both over the same span."""

    live: int  # live decisions compared
    agree: int  # ... whose inputs agree with the paired backtest decision
    same_targets: int  # ... of those, with the same targets
    first_mismatch: tuple[Decision, Decision] | None  # inputs agree, targets differ (should be None)
    input_differences: dict[str, int]  # why inputs differed: "book", "position"
    backtest: BacktestResult
    span_ns: tuple[int, int]


def exchange_clock(tape: Tape) -> Tape:
    """The tape with local time equal to exchange time: what a client of the emulator sees over loopback."""
    return dataclasses.replace(tape, ts_local=np.ascontiguousarray(tape.ts_exch).copy())


def backtest_decisions(tape: Tape, strategy: Strategy, params, venue: VenueConfig, start_ns: int,
                       end_ns: int) -> tuple[list[Decision], BacktestResult]:  # fmt: skip
    """The backtest's decisions from start_ns to end_ns (exchange time) and its result over the whole tape."""
    replay = prepare(tape, venue)
    result = run_backtest(tape, strategy, np.array(strategy.vector(params)), venue, start_ns=start_ns, replay=replay)
    _segments, _, bb, ba, bbq, baq, _synced = decision_inputs(tape, replay, venue, start_ns)
    ts, pos = result.steps["ts"], result.steps["position"]
    n = min(len(ts), len(bb))
    decider = Decider(strategy, params)
    inst = tape.instrument
    out = []
    for k in range(n):
        mid = (bb[k] + ba[k]) * 0.5 * inst.tick_size
        decider.decide(int(ts[k]), int(bb[k]), int(ba[k]), float(bbq[k]), float(baq[k]), inst.tick_size,
                       inst.lot_size, float(pos[k]), 0.0, mid, [])  # fmt: skip
        if ts[k] > end_ns:
            break
        out.append(Decision(int(ts[k]), int(bb[k]), int(ba[k]), float(bbq[k]), float(baq[k]), float(pos[k]),
                            decider.last_targets))  # fmt: skip
    return out, result


def _book(d: Decision, quantities: bool) -> tuple:
    return (d.best_bid_ticks, d.best_ask_ticks) + ((d.bid_qty, d.ask_qty) if quantities else ())


def compare(
    live: list[Decision], backtest: list[Decision], lot: float, window_ns: int = 0, quantities: bool = True
) -> tuple[int, int, tuple | None, dict]:
    """Pair each live decision with a backtest one that saw the same inputs; count agreements.

    Candidates are the backtest decisions within `window_ns` of the live decision's book time
    (the two clocks tick at different instants); the first one with the same book and position is
    its pair. Without one, the nearest decision at or after the book time says what differed.
    The book is the best bid and ask, and their quantities unless `quantities` is False (for a
    strategy that does not read them: they change between any two instants).
    """
    times = np.array([d.ts_ns for d in backtest], np.int64)
    agree = same = 0
    first = None
    why = {"book": 0, "position": 0, "no backtest decision": 0}
    for d in live:
        lo = int(np.searchsorted(times, d.ts_ns - window_ns, side="left"))
        hi = int(np.searchsorted(times, d.ts_ns + window_ns, side="right"))
        near = int(np.searchsorted(times, d.ts_ns, side="left"))
        if near >= len(backtest):
            why["no backtest decision"] += 1
            continue
        book = _book(d, quantities)
        pair = next((b for b in backtest[lo:hi] if _book(b, quantities) == book and abs(b.position - d.position)
                     < 0.5 * lot), None)  # fmt: skip
        if pair is None:
            why["book" if _book(backtest[near], quantities) != book else "position"] += 1
            continue
        agree += 1
        if d.targets == pair.targets:
            same += 1
        elif first is None:
            first = (d, pair)
    return agree, same, first, why


def parity(live: list[Decision], tape: Tape, strategy: Strategy, params, step_ns: int,
           quantities: bool = True) -> ParityReport:  # fmt: skip
    """Compare a live session's decisions with the backtest over the same span of `tape` (see `compare`)."""
    if not live:
        raise ValueError("no live decisions to compare")
    t = exchange_clock(tape)
    venue = VenueConfig(entry_latency_ns=0, response_latency_ns=0, local_clock_offset_ns=0, step_ns=step_ns)
    start = int(live[0].ts_ns) - step_ns
    end = int(live[-1].ts_ns) + step_ns
    bt, result = backtest_decisions(t, strategy, params, venue, start, end)
    agree, same, first, why = compare(live, bt, tape.instrument.lot_size, step_ns, quantities)
    return ParityReport(len(live), agree, same, first, {k: v for k, v in why.items() if v}, result, (start, end))


@dataclass(frozen=True)
class LiveSession:
    """What a live session against the emulator did: its decisions, fills, final position and PnL."""

    decisions: list[Decision]
    fills: list[tuple[int, float, float]]  # (side, price, qty) in the order they arrived
    position: float
    pnl: float | None


async def live_session(tape: Tape, strategy: str, params: dict, speed: float, seconds: float, step_ms: int,
                       state_dir: Path) -> LiveSession:  # fmt: skip
    """Replay `tape` on the emulator at `speed` and run the live adapter (live mode, real ccxt.pro) for `seconds`."""
    from grinder.venue.auth import Credentials
    from grinder.venue.server import VenueServer
    from live.adapter import run_for
    from live.config import LiveConfig

    creds = Credentials("parity-key", "parity-secret")
    srv = VenueServer(tape, creds, speed=speed)
    srv.preroll()
    port = await srv.start()
    replay = asyncio.create_task(srv.run_replay())
    cfg = LiveConfig(strategy=strategy, params=params, symbol=tape.instrument.symbol, step_ms=step_ms,
                     api_url=f"http://127.0.0.1:{port}", state_dir=state_dir, reconcile_s=3600.0)  # fmt: skip
    try:
        adapter = await run_for(cfg, seconds, creds.api_key, creds.secret, decision_log=[])
    finally:
        replay.cancel()
        await srv.stop()
    fills, position = [], 0.0
    for line in (state_dir / "audit.jsonl").read_text().splitlines():
        e = json.loads(line)
        if e["event"] == "fill":
            fills.append((1 if e["position"] > position else -1, float(e["price"]), float(e["qty"])))
            position = e["position"]
    return LiveSession(adapter.decision_log, fills, adapter.position, adapter.pnl)


def backtest_fills(result: BacktestResult, span_ns: tuple[int, int]) -> list[tuple[int, float, float]]:
    """The backtest's fills inside the span (exchange time), as (side, price, qty)."""
    f = result.fills
    keep = (f["ts_exch"] >= span_ns[0]) & (f["ts_exch"] <= span_ns[1])
    return [(int(s), float(p), float(q)) for s, p, q in zip(f["side"][keep], f["price"][keep], f["qty"][keep],
                                                              strict=True)]  # fmt: skip


def backtest_pnl(result: BacktestResult, span_ns: tuple[int, int]) -> float:
    """Equity change over the span (settle currency), from the backtest's decisions inside it."""
    ts, eq = result.steps["ts"], result.steps["equity"]
    keep = (ts >= span_ns[0]) & (ts <= span_ns[1]) & ~np.isnan(eq)
    return float(eq[keep][-1] - eq[keep][0]) if keep.sum() >= 2 else 0.0
