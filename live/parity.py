"""Parity: the live adapter's decisions against the backtest's on the same data (docs/parity.md).

The live side is a `LiveAdapter` with a `decision_log` running against the venue emulator: every
decision's exchange time (the depth update behind its book), best bid and ask, position and target
quotes. The backtest side is `run_backtest` over the same tape with the emulator's latency (none:
local time is exchange time, orders reach the book at once) and the same decision step; its
decisions are replayed through the same `Decider` from the engine's own inputs (the local book at
each decision, `decision_inputs`, and the engine's position there), so the targets are the ones
the engine's kernel computed, decision by decision, strategy state included.

Two ways to run the live side. `lockstep_session` (the tests): the emulator's replay and the
adapter's decision clock are both stepped by the driver (`VenueServer.advance_to`,
`grinder.live.clock.SteppedClock`), decision k at exchange time t0 + k x step, once everything the venue
sent has been taken in; `lockstep_parity` then pairs each live decision with the backtest's at the
same time, and every pair must agree. `live_session` (bench/live_parity.py): the replay at `speed`
in wall-clock time and the adapter on its own clock, as in production; each live decision is
paired with a backtest decision within one step of its book's exchange time that saw the same
inputs (`parity`, `compare`), and the report says why the others had no pair.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from grinder.book.l2 import EMPTY
from grinder.core.decision import Decider
from grinder.core.decision import DecisionRecord as Decision
from grinder.core.gates import REASONS, GateConfig
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
    input_differences: dict[str, int]  # why inputs differed: "book", "position", "no backtest decision"
    backtest: BacktestResult
    span_ns: tuple[int, int]
    first_difference: tuple[Decision, Decision] | None = None  # lock-step: the first pair whose inputs differ


def exchange_clock(tape: Tape) -> Tape:
    """The tape with local time equal to exchange time: what a client of the emulator sees over loopback."""
    return dataclasses.replace(tape, ts_local=np.ascontiguousarray(tape.ts_exch).copy())


def backtest_decisions(tape: Tape, strategy: Strategy, params, venue: VenueConfig, start_ns: int, end_ns: int,
                       gates: GateConfig | None = None) -> tuple[list[Decision], BacktestResult]:  # fmt: skip
    """The backtest's decisions from start_ns to end_ns (exchange time) and its result over the whole tape."""
    replay = prepare(tape, venue)
    result = run_backtest(tape, strategy, np.array(strategy.vector(params)), venue, start_ns=start_ns, replay=replay,
                          gates=gates)  # fmt: skip
    # The targets are the kernel's, before any gate: the strategy's own depth is all it reads.
    _segments, _, bb, ba, bbq, baq, _synced, depth = decision_inputs(tape, replay, venue, start_ns,
                                                                     strategy.depth_levels)  # fmt: skip
    ts, pos = result.steps["ts"], result.steps["position"]
    n = min(len(ts), len(bb))
    decider = Decider(strategy, params)
    inst = tape.instrument
    out = []
    for k in range(n):
        two_sided = bb[k] != EMPTY and ba[k] != EMPTY
        mid = (float(bb[k]) + float(ba[k])) * 0.5 * inst.tick_size if two_sided else float("nan")
        decider.decide(int(ts[k]), int(bb[k]), int(ba[k]), float(bbq[k]), float(baq[k]), inst.tick_size,
                       inst.lot_size, float(pos[k]), 0.0, mid, [], None,
                       depth[k] if strategy.depth_levels else None)  # fmt: skip
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


def compare_at(live: list[Decision], live_ts: list[int], backtest: list[Decision],
               lot: float) -> tuple[int, int, tuple | None, dict, tuple | None]:  # fmt: skip
    """Pair each live decision, taken at exchange time `live_ts[i]`, with the backtest decision at that time.

    Strict (lock-step): the pair must have the same book (best prices and their quantities) and
    position. Returns (inputs agree, of those the same targets, the first pair with the same inputs
    and different targets, why the others differ, the first pair whose inputs differ).
    """
    at = {d.ts_ns: d for d in backtest}
    agree = same = 0
    first = first_diff = None
    why = {"book": 0, "position": 0, "no backtest decision": 0}
    for d, ts in zip(live, live_ts, strict=True):
        b = at.get(ts)
        if b is None:
            why["no backtest decision"] += 1
            continue
        if _book(b, True) != _book(d, True) or abs(b.position - d.position) >= 0.5 * lot:
            why["book" if _book(b, True) != _book(d, True) else "position"] += 1
            first_diff = first_diff or (d, b)
            continue
        agree += 1
        if d.targets == b.targets:
            same += 1
        elif first is None:
            first = (d, b)
    return agree, same, first, why, first_diff


def lockstep_parity(session: LiveSession, tape: Tape, strategy: Strategy, params,
                    gates: GateConfig | None = None) -> ParityReport:  # fmt: skip
    """Compare a `lockstep_session` with the backtest (with the same `gates`) on its decision grid (`compare_at`)."""
    if not session.decisions:
        raise ValueError("no live decisions to compare")
    t = exchange_clock(tape)
    step = session.step_ns
    venue = VenueConfig(entry_latency_ns=0, response_latency_ns=0, local_clock_offset_ns=0, step_ns=step)
    span = (session.start_ns, session.decision_ts[-1])
    bt, result = backtest_decisions(t, strategy, params, venue, *span, gates=gates)
    agree, same, first, why, diff = compare_at(session.decisions, session.decision_ts, bt, tape.instrument.lot_size)
    return ParityReport(len(session.decisions), agree, same, first, {k: v for k, v in why.items() if v}, result,
                        span, diff)  # fmt: skip


_ROWS = ("ts_exch", "ts_local", "kind", "side", "price", "price_ticks", "qty", "ref", "flags")  # Tape's per-row columns


def backtest_blocked(session: LiveSession, tape: Tape, strategy: Strategy, params,
                     gates: GateConfig) -> list[dict[str, int] | None]:  # fmt: skip
    """The engine's blocked intents at each of a lock-step session's decisions, by reason (None: not known).

    The engine counts blocked intents over a whole run. Run on the tape cut just before the next
    decision time, it takes the decisions up to this one and stops (nothing left to happen); its
    `decisions` counter says how many, so consecutive cuts give one decision's counts.
    """
    t = exchange_clock(tape)
    step = session.step_ns
    venue = VenueConfig(entry_latency_ns=0, response_latency_ns=0, local_clock_offset_ns=0, step_ns=step)
    vec = np.array(strategy.vector(params))
    upto = {0: dict.fromkeys(REASONS, 0)}  # decisions taken -> blocked so far, by reason
    for ts in session.decision_ts:
        cut = dataclasses.replace(t, **{c: getattr(t, c)[: int(np.searchsorted(t.ts_exch, ts + step))] for c in _ROWS})
        r = run_backtest(cut, strategy, vec, venue, start_ns=session.start_ns, gates=gates).counters
        upto[r["decisions"]] = {x: r[f"blocked_{x}"] for x in REASONS}
    out = []
    for ts in session.decision_ts:
        k = (ts - session.start_ns) // step  # the engine's k-th decision (the first is at start + step)
        a, b = upto.get(k - 1), upto.get(k)
        out.append(None if a is None or b is None else {x: b[x] - a[x] for x in REASONS if b[x] != a[x]})
    return out


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
    # Lock-step sessions only: the exchange time of each decision (its tick), the decision grid's
    # origin and step, and each fill's exchange time at the venue (in the order of `fills`).
    decision_ts: list[int] | None = None
    start_ns: int = 0
    step_ns: int = 0
    fill_ts: list[int] | None = None
    blocked: list[dict[str, int]] | None = None  # each decision's intents blocked by the gates, by reason
    model: list | None = None  # with [model]: each decision as the model saw it (live.model.ModelRecord)


async def live_session(tape: Tape, strategy: str, params: dict, speed: float, seconds: float, step_ms: int,
                       state_dir: Path) -> LiveSession:  # fmt: skip
    """Replay `tape` on the emulator at `speed` and run the live adapter (live mode, real ccxt.pro) for `seconds`."""
    from grinder.live.adapter import run_for
    from grinder.live.config import LiveConfig
    from grinder.venue.auth import Credentials
    from grinder.venue.server import VenueServer

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
    fills = [(side, price, qty) for _cid, side, price, qty in _audited_fills(state_dir)]
    return LiveSession(adapter.decision_log, fills, adapter.position, adapter.pnl)


def _audited_fills(state_dir: Path) -> list[tuple[str, int, float, float]]:
    """The fills the adapter booked, from its audit trail: (client id, side, price, qty) in order."""
    fills, position = [], 0.0
    for line in (state_dir / "audit.jsonl").read_text().splitlines():
        e = json.loads(line)
        if e["event"] == "fill":
            side = 1 if e["position"] > position else -1
            fills.append((e["client_id"], side, float(e["price"]), float(e["qty"])))
            position = e["position"]
    return fills


async def lockstep_session(tape: Tape, strategy: str, params: dict, step_ns: int, ticks: int, state_dir: Path,
                           timeout_s: float = 120.0, **cfg_kw) -> LiveSession:  # fmt: skip
    """The live adapter (live mode, real ccxt.pro, loopback) against the emulator in lock-step, for `ticks` decisions.

    The driver holds both clocks. The emulator is prerolled to its first complete book, at t0
    (exchange time); for each tick k it streams the tape up to t_k = t0 + k x `step_ns`, waits until
    the adapter's book holds the last depth update sent and the adapter has read every user-stream
    event sent, releases one decision at t_k and waits until it has finished and the events its
    requests caused have been read. Nothing waits on the wall clock: each wait ends when its
    condition holds, or fails after `timeout_s` naming it. `cfg_kw` go to `LiveConfig`. With a
    `model` among them the adapter's live features must also have taken every trade sent (they come
    on a stream of their own) before a decision, and the session records what the model saw.
    """
    from grinder.live.adapter import LiveAdapter
    from grinder.live.audit import AuditLog
    from grinder.live.client import make_client
    from grinder.live.clock import SteppedClock
    from grinder.live.config import LiveConfig
    from grinder.venue.auth import Credentials
    from grinder.venue.server import VenueServer

    creds = Credentials("parity-key", "parity-secret")
    srv = VenueServer(tape, creds)
    srv.preroll()
    row0 = srv.row  # the first row streamed (those before were applied unseen)
    trades_before = np.concatenate([[0], np.cumsum(np.asarray(tape.kind) == 3)])  # trade rows before each row
    t0 = int(tape.ts_exch[srv.row - 1])
    srv.now_ns = t0
    clock = SteppedClock(t0)
    port = await srv.start()
    cfg = LiveConfig(strategy=strategy, params=params, symbol=tape.instrument.symbol, api_url=f"http://127.0.0.1:{port}",
                     state_dir=state_dir, reconcile_s=3600.0, **cfg_kw)  # fmt: skip
    ex = make_client(cfg, creds.api_key, creds.secret)
    audit = AuditLog(state_dir / "audit.jsonl", secrets=(creds.api_key, creds.secret), max_delay_s=None)
    decision_ts: list[int] = []
    try:
        adapter = LiveAdapter(cfg, ex, audit, clock=clock, decision_log=[],
                              model_log=[] if cfg.model is not None else None)  # fmt: skip
        task = asyncio.create_task(adapter.run())
        trades_sent = lambda: int(trades_before[srv.row] - trades_before[row0])  # noqa: E731

        def trades_in() -> bool:  # the live features have every trade sent (no model: nothing to wait for)
            if adapter.model is None:
                return True
            f = adapter.model.features
            return f is not None and bool(srv.trade_subs["trade"]) and f.trades == trades_sent()

        def settled() -> bool:
            return (adapter.book_nonce == srv.update_id and ex.order_events == srv.order_updates
                    and adapter.user_seen == srv.order_updates and trades_in())  # fmt: skip

        def state() -> str:
            f = adapter.model.features if adapter.model is not None else None
            trades = "" if f is None else f", trades received {f.trades} of {trades_sent()}"
            return (f"book update {adapter.book_nonce} of {srv.update_id}, user-stream events received "
                    f"{ex.order_events} and read {adapter.user_seen} of {srv.order_updates}{trades}")  # fmt: skip

        started = lambda: settled() and bool(srv._all_user_socks())  # noqa: E731 - the user stream is open
        try:
            await _until(started, "the adapter's start (book synced, user stream open)", state, task, timeout_s)
            for k in range(1, ticks + 1):
                t = t0 + k * step_ns
                clock.now_ns = t
                await srv.advance_to(t)
                await _until(settled, f"tick {k}: the venue's events up to t_k taken in", state, task, timeout_s)
                n = len(adapter.decision_log)
                await _until_done(clock.release(), f"tick {k}: the decision", task, timeout_s)
                if len(adapter.decision_log) > n:
                    decision_ts.append(t)
                await _until(settled, f"tick {k}: the events of the decision's requests taken in", state, task,
                             timeout_s)  # fmt: skip
        except BaseException:
            adapter.stop()  # its orders cancelled and its files closed; the first failure is the one reported
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(task, 60)
            raise
        adapter.stop()
        await asyncio.wait_for(task, 60)
    finally:
        await ex.close()
        audit.close()
        await srv.stop()
    fills, fill_ts = [], []
    for cid, _side, price, qty in _audited_fills(state_dir):
        o = srv.x.find(client_id=cid)
        # A taker order's levels all fill at the instant it arrives (its creation); a quote's one fill when
        # it is filled whole.
        if not o.takes and (o.status != "FILLED" or o.filled != qty):
            raise RuntimeError(f"lock-step: {cid} was filled in parts; fill times are known for whole fills only")
        fills.append((o.side, price, qty))
        fill_ts.append(o.created_ns if o.takes else o.updated_ns)
    return LiveSession(adapter.decision_log, fills, adapter.position, adapter.pnl, decision_ts, t0, step_ns, fill_ts,
                       adapter.decision_blocked, adapter.model_log)  # fmt: skip


async def _until(ready: Callable[[], bool], what: str, state: Callable[[], str], task: asyncio.Task,
                 timeout_s: float) -> None:  # fmt: skip
    """Wait until `ready()`; fail loudly if the adapter's task ends or `timeout_s` passes first."""
    deadline = time.monotonic() + timeout_s
    while not ready():
        if task.done():
            task.result()  # its exception, if it failed
            raise RuntimeError(f"lock-step: the adapter stopped before {what} ({state()})")
        if time.monotonic() > deadline:
            raise TimeoutError(f"lock-step: {what} did not happen in {timeout_s:g} s ({state()})")
        await asyncio.sleep(0.001)  # a poll: each message the venue sent is one event-loop pass away


async def _until_done(coro, what: str, task: asyncio.Task, timeout_s: float) -> None:
    """Await `coro`; fail loudly if the adapter's task ends or `timeout_s` passes first."""
    step = asyncio.ensure_future(coro)
    done, _ = await asyncio.wait({step, task}, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
    if step in done:
        return step.result()
    step.cancel()
    if task.done():
        task.result()
        raise RuntimeError(f"lock-step: the adapter stopped before {what}")
    raise TimeoutError(f"lock-step: {what} did not finish in {timeout_s:g} s")


def backtest_fills(result: BacktestResult, span_ns: tuple[int, int], with_ts: bool = False) -> list[tuple]:
    """The backtest's fills inside the span (exchange time), as (side, price, qty), or (ts, side, price, qty).

    Prices are ticks x tick size rounded to 10 decimals, as the venue writes them (a taker's level at
    618116 ticks of 0.1 is 61811.6, not the product's 61811.600000000006)."""
    f = result.fills
    keep = (f["ts_exch"] >= span_ns[0]) & (f["ts_exch"] <= span_ns[1])
    out = [(int(s), round(float(p), 10), float(q)) for s, p, q in zip(f["side"][keep], f["price"][keep],
                                                                        f["qty"][keep], strict=True)]  # fmt: skip
    return [(int(t), *x) for t, x in zip(f["ts_exch"][keep], out, strict=True)] if with_ts else out


def by_instant(fills: list[tuple]) -> list[tuple]:
    """(ts, side, price, qty) fills in time order, those at one exchange instant by side and price.

    One row of the tape can fill several of our quotes at once; the venue reports them in the
    order the orders were placed, the backtester from the touch outwards.
    """
    return sorted(fills)


def backtest_pnl(result: BacktestResult, span_ns: tuple[int, int]) -> float:
    """Equity change over the span (settle currency), from the backtest's decisions inside it."""
    ts, eq = result.steps["ts"], result.steps["equity"]
    keep = (ts >= span_ns[0]) & (ts <= span_ns[1]) & ~np.isnan(eq)
    return float(eq[keep][-1] - eq[keep][0]) if keep.sum() >= 2 else 0.0
