"""The live adapter: one strategy on one symbol of one account, event-driven, on ccxt.pro.

Market data (`watch_order_book`) keeps the latest top of book; the user stream (`watch_orders`)
keeps the adapter's orders and position. Every `step_ms` of local time the strategy decides
exactly as in the backtest (`grinder.core.decision.Decider`: kernel -> diff -> gates); the intents
then pass the daily budget and leave through the exchange port (`live.port`): the cancels at once,
then the creates at once (two round trips a decision, not one per order), then the strategy's taker
orders (IOC or market, `_take`: each sent once, never retried, booked before the next decision). The
adapter never trades on a stale book: after a sequence gap (ccxt raises ChecksumError) or a
dropped socket it waits for a fresh snapshot before deciding again. The user stream's fills go
into a ledger (`grinder.core.ledger`) at their price with the commission the venue charged; the
gates read their equity from it as the backtest's do (`gate_inputs`). On start and every
`reconcile_s` it reconciles with the venue (`live.reconcile`), the ledger included, and repairs
what the rollout mode allows (`live.rollout`). On stop (SIGTERM, or the kill switch, `live.kill`,
which also keeps it from trading until a person clears it) it cancels its open orders before it
exits, retried within `stop_timeout_s` and what is left named (`live.shutdown`), and checks the
ledger a last time; while it runs, the venue's countdown cancel-all is kept armed, so the venue
cancels them if the process dies. Every action is in the audit trail. It touches only
its own instance's orders and those of instances found dead; another live adapter of its
strategy and symbol on the account refuses its start, or stops it (`live.instance`, decision 028).
With `[ha]`, instances elect a leader on Redis and only the leader changes anything at the venue; the
others decide and reconcile without sending (`live.leader`, decision 041).
Under systemd it says READY=1 once its start is done, feeds the watchdog only while the decision
loop turns and says STOPPING=1 as its stop begins (`live.sd_notify`, decision 042); each run leaves
a folder under `<state_dir>/runs` (`live.runs`). With `[model]`, a registered model pinned at start
is in the decision path (`live.model`): its forecast from the live features (`live.features`) is
the decisions' signals (active), or drives a strategy that decides beside the trading one and sends
nothing (shadow).

Modes: "live" sends real orders; "testnet" too, to ccxt's testnet hosts unless `api_url` says
where. To anything but a loopback emulator they refuse to start unless ALLOW_MAINNET_TRADE=1 is set
and the symbol is in `mainnet_allowlist` (`live.guard`). "paper" takes live market data and fills
its orders locally with the backtester's venue model (`live.paper`).

Decision latency is measured on every decision that sends something: from the moment its inputs
were ready (the later of the depth update behind its book arriving and the decision clock waking
the adapter) to the first order request handed to the connection (`latencies`, nanoseconds;
bench/live_latency.py). How late the clock itself wakes (asyncio sleeps to the millisecond) is
recorded beside it, not in it: it moves when a decision happens, not how fast the adapter reacts.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import math
import time
from collections import deque
from collections.abc import Coroutine
from dataclasses import dataclass, field, replace

import ccxt
import numpy as np

from grinder.book.l2 import EMPTY
from grinder.core.decision import Decider, DecisionRecord, Intents
from grinder.core.decision import Order as KnownOrder
from grinder.core.depth import depth_from_levels
from grinder.core.diff import REQ_CANCEL, REQ_NONE, ST_NEW, ST_NONE
from grinder.core.gates import S_DAY_START_EQ, S_PEAK_EQ
from grinder.core.ledger import FEES, POSITION, book_fill, gate_inputs, new_ledger
from grinder.core.order_kind import KIND_MASK, MARKET, REDUCE_ONLY, describe
from grinder.core.qrules import QuantRulesTracker
from grinder.core.step import quant_rules
from grinder.core.strategy import get
from grinder.errors import ConfigError, GrinderError, LiveError, VenueError
from grinder.io.atomic import write_atomic
from grinder.live import kill as killswitch
from grinder.live.audit import AuditLog
from grinder.live.budget import BudgetLimits, DailyBudget
from grinder.live.client import GrinderBinance, make_client
from grinder.live.client_ids import IdAllocator, is_ours
from grinder.live.clock import SteppedClock
from grinder.live.config import LiveConfig
from grinder.live.fills import fills_of
from grinder.live.instance import Instances, other_instance, probe
from grinder.live.leader import Fenced, Leadership, key_prefix
from grinder.live.metrics import MetricsServer, adapter_registry, exposition
from grinder.live.model import ModelPath, Reading
from grinder.live.port import PERMANENT, REFUSED_EVERY_NS, ExchangePort, PortFailed, PortRefused
from grinder.live.reconcile import (
    LedgerDrift,
    VenuePosition,
    adopt_position,
    reconcile,
    reconcile_ledger,
    venue_entry,
    venue_position,
)
from grinder.live.retry import CircuitBreaker
from grinder.live.rollout import Rollout, flattenable
from grinder.live.runs import BUDGET_FILE, METRICS_FILE, RunFolder
from grinder.live.sd_notify import Notifier, keep_fed, stall_after_s
from grinder.live.shutdown import DeadMan, DeadManLost, StopOutcome, cancel_everything
from grinder.live.venue_watch import watch_venue
from grinder.venue.wire import decimals_of

# Throwaway decisions and requests run over this last stretch before the tick: one run leaves a
# decision slower than several in a row do (branch predictors, caches; decision 012).
PREWARM_LEAD_NS = 3_000_000
# Housekeeping (the journals' fsync threads, the next client-id reservation, the collector) runs after
# a decision only when the next one is at least this far off (an fsync can take milliseconds): the
# threads it wakes would otherwise take the CPU from that decision. Never put off longer than the
# second after, which is also how old the last unsynced journal line can get (decision 012).
HOUSEKEEPING_CLEAR_NS = 20_000_000
HOUSEKEEPING_MAX_DEFER_NS = 1_000_000_000
# ccxt's order status -> Binance's, as the quantitative rules' tracker takes an order's end.
QR_ENDS = {"closed": "FILLED", "canceled": "CANCELED", "expired": "EXPIRED", "rejected": "REJECTED"}
# A strategy's taker order is booked from the user stream (each level's fill with the commission the venue
# charged); once its reply says what it filled, the decision waits at most this long for those fills, then
# books what has not come from the reply (the next decision must see the position; docs/live.md).
TAKER_BOOK_WAIT_S = 0.25
# A taker order's outcome (`taker_done`'s result; grinder_taker_orders_total's label): filled, expired (a
# remainder the book could not fill, part filled or none), rejected (by the venue: reduce-only with nothing
# to reduce, minimum notional, a filter), refused (not sent: budget, breaker, stale book, stopping, not the
# leader) or unknown (no answer: a lost reply may hide a fill; never retried, reconciliation has the truth).
TAKER_RESULTS = ("filled", "expired", "rejected", "refused", "unknown")


@dataclass
class Known:
    """An order the adapter placed and still considers open."""

    client_id: str
    side: int
    price_ticks: int
    qty: float
    filled: float = 0.0
    status: int = ST_NONE  # ST_NONE until acknowledged, then ST_NEW
    request: int = REQ_NONE
    placed_ns: int = 0  # when it was sent (the adapter's clock, ns): the quote refresh's time to live


@dataclass
class LiveAdapter:
    """Runs `cfg` until `stop()`; `run()` returns after its orders are cancelled."""

    cfg: LiveConfig
    ex: GrinderBinance
    audit: AuditLog
    clock_ns: callable = time.time_ns
    monotonic: callable = time.monotonic  # what a book's age is measured on (seconds)
    # A clock a driver steps (grinder.live.clock.SteppedClock): decisions at the ticks it releases, and its
    # time for clock_ns and monotonic. None: the wall clock, every step_ms.
    clock: SteppedClock | None = None
    orders: dict[str, Known] = field(default_factory=dict)
    filled: dict[str, float] = field(default_factory=dict)  # per client id of ours, filled so far (late fills count)
    position: float = 0.0
    equity_start: float | None = None  # the account's equity (wallet + unrealized, settle currency) at start
    pnl: float | None = None  # equity at stop minus equity at start, as the venue reports them
    decisions: int = 0
    book_ts: float = 0.0  # monotonic time of the last book update (0: no book)
    top: tuple[int, int, float, float] = (EMPTY, EMPTY, 0.0, 0.0)
    top_arrival_ns: int = 0  # perf_counter_ns of the depth update behind `top`
    tick_ns: int = 0  # perf_counter_ns the decision clock woke the adapter for the current decision
    tick_late_ns: int = 0  # how long after its scheduled time it woke
    # ns from inputs ready to (decision started, intents decided, first order request), then how late
    # the clock woke, for the most recent decisions that sent something
    latencies: deque = field(default_factory=lambda: deque(maxlen=100_000))
    top_ts_ns: int = 0  # exchange time of the depth update behind `top`
    decision_log: list | None = (
        None  # when a list: every decision's inputs and targets (`DecisionRecord`, for live.parity)
    )
    model_log: list | None = None  # with [model], when a list: each decision as the model saw it (live.model)
    housekeeping_runs: int = 0
    housekept_ns: int = 0  # perf_counter_ns of the last housekeeping
    decided_ahead: int = 0  # decisions taken ahead of their tick and adopted at it (inputs unchanged)
    tick_sched_ns: int = 0  # perf_counter_ns the current decision was scheduled for
    # The decision taken ahead for the next tick: (tick perf_counter_ns, the orders, the input key and
    # decide's arguments it was taken on, Ahead); see _decide_ahead
    _ahead: tuple | None = None
    breaker: CircuitBreaker | None = None  # the port's (None: CircuitBreaker's defaults)
    decision_blocked: list = field(default_factory=list)  # with a decision_log: each decision's Intents.blocked
    book_nonce: int = 0  # the depth update id (ccxt's nonce) behind `top`
    user_seen: int = 0  # the client's order_events count when the user stream was last read
    # systemd's notify socket (live.sd_notify; None: the environment's, which without NOTIFY_SOCKET sends nothing)
    notifier: Notifier | None = None
    # perf_counter_ns the decision loop last turned (a tick, decided or not, or a piece of a long step's
    # sleep): what the watchdog is fed on (decision 042)
    loop_beat_ns: int = 0

    def __post_init__(self) -> None:
        if self.clock is not None:
            self.clock_ns, self.monotonic = self.clock.time_ns, self.clock.monotonic
        self.strategy = get(self.cfg.strategy)
        # A registered model (live.model), resolved and checked before anything is written: a missing alias
        # or a damaged model refuses the start with nothing changed. Active: its forecast is every
        # decision's signals (an input a decision taken ahead must still hold at its tick).
        self.model = ModelPath.open(self.cfg, self.strategy, self.audit, self.clock_ns, self.model_log)
        self._model_signals = self.model is not None and self.model.mode == "active"
        self.decider = Decider(self.strategy, self.strategy.validate(self.cfg.params), gates=self.cfg.gates)
        self.decider.warm_up()  # the first real decision must not pay for loading compiled code
        # The book's first levels (grinder.core.depth), kept from the depth stream when the strategy or the
        # L2 guard reads them: no level known yet.
        self.depth = depth_from_levels([], [], 1.0, np.zeros((self.decider.depth_levels, 4)))  # no level: no tick
        # Binance's quantitative rules over every order sent, in the state the Decider's gate reads
        # (grinder.core.qrules; on when [gates] quant_rules = true, tracked and audited either way).
        self.qrules = QuantRulesTracker(quant_rules(self.cfg.gates.quant_rules_file), state=self.decider.qr_state)
        self.unit_notional = 0.0  # quote value of one unit of position at the last decision's inputs
        # The ledger (grinder.core.ledger, as the backtest keeps it): fills from the user stream at
        # their price with the commission the venue charged; the gates' equity comes from it.
        self.led = new_ledger()
        self.ledger_version = 0  # bumped at every change of the ledger (a decision's input, see _input_key)
        # Funding paid since start (settle currency), which the gates' equity and the wallet check take.
        # Nothing books it yet: ccxt's watch_orders does not carry Binance's ACCOUNT_UPDATE FUNDING_FEE,
        # and the emulator sends none (it does not model funding); the wallet drift shows what was paid.
        self.funding_paid = 0.0
        self.wallet_start: float | None = None  # the venue's wallet balance at start (settle currency)
        self.inverse, self.contract_size = False, 1.0  # the market's, from _start
        self.settle = self.settle_id = ""
        self.booked: set[str] = set()  # trade ids of fills booked
        self._drift_seen = False  # the last ledger check found the position drifted (not adopted yet)
        self._gates_on: set[str] = set()  # the daily-loss kill and drawdown guard while they block
        self._blocked: dict[str, int] = {}  # intents blocked by the gates per reason, not yet in the audit trail
        self._blocked_since_ns = 0
        self._blocked_line_ns = -REFUSED_EVERY_NS
        # Rollout modes and the kill switch (live.rollout, live.kill; decision 029).
        self.rollout = Rollout(self)
        self.kill_requested: str | None = None  # who asked for the kill (None: nobody)
        self.flatten_ids: set[str] = set()  # flatten orders: booked from their reply, not from the user stream
        # A strategy's taker orders (docs/live.md, "Taker orders from strategies"): booked from the user stream;
        # what a reply reported filled that the stream had not brought within TAKER_BOOK_WAIT_S is booked from
        # the reply and is `covered`: the stream's later fills of it bring their commission only.
        self.takers_sent = 0  # taker orders handed to the venue
        self.taker_results: dict[str, int] = dict.fromkeys(TAKER_RESULTS, 0)
        self.quote_booked: dict[str, float] = {}  # per client id of ours, quote value booked so far
        self.covered: dict[str, float] = {}  # taker client id -> quantity booked from its reply, not yet streamed
        self._user_news = asyncio.Event()  # set whenever the user stream brought updates
        self._adopted = 0.0  # the position the last ledger check adopted, less the ledger's before it
        gate_inputs(self.led, EMPTY, EMPTY, EMPTY, 1.0, 0.0, False, 1.0)  # compiled code loaded before trading
        d = self.cfg.state_dir
        d.mkdir(mode=0o700, parents=True, exist_ok=True)  # what is in it is the operator's only
        old_budget, budget, ids = d / "budget.json", d / "budget.jsonl", d / "client_ids.json"
        if old_budget.exists() and not budget.exists():  # the one-record file of earlier versions
            write_atomic(budget, old_budget.read_text().strip() + "\n", durable=True, mode=0o600)
            old_budget.unlink()
        # The first start is the one that never spent: no id reservation and no charge recorded (an
        # empty budget is a start that failed before trading, e.g. with the venue down). The
        # reservation is written first (it exists at once, reserving nothing), then the budget, so a
        # start that fails anywhere leaves a folder the next start takes. Ids handed out without a
        # budget, or spend without an id reservation, is a damaged folder: refused, never a silent
        # fresh start.
        spent = budget.exists() and budget.stat().st_size > 0
        self.ids = IdAllocator(ids, self.strategy.name, self.cfg.symbol, new=not ids.exists() and not spent)
        # This instance's epoch and the instances found dead: what it may cancel (decision 028).
        self.instances = Instances(self.strategy.name, self.cfg.symbol, self.ids.epoch)
        # Leader election (live.leader, decision 041): with `[ha]` only the lease holder sends anything
        # that changes the venue; the client fences every such request. Starts as a follower.
        self.leader: Leadership | None = None
        self.ha_ready = False  # the leader has reconciled and armed the countdown: its decisions send
        self._dead_man_task: asyncio.Task | None = None
        self._ha_failed: BaseException | None = None
        if self.cfg.ha is not None:
            self.instances.ha = "follower"
            self.leader = Leadership(self.cfg.ha, key_prefix(self.cfg.ha.account, self.strategy.name, self.cfg.symbol),
                                     self.ids.epoch, self.audit, self.clock_ns)  # fmt: skip
            self.ex.fence = self.leader
        if not budget.exists() and self.ids.peek().seq > 0:
            self.ids.close()
            raise LiveError(f"{d}: client_ids.json without budget.jsonl; refusing to start with an unknown spend")
        # Synced by housekeeping, not on a timer of its own (a thread waking mid-decision).
        try:
            self.budget = DailyBudget(budget, BudgetLimits(self.cfg.max_actions_per_day,
                                      self.cfg.max_notional_per_day), max_delay_s=None)  # fmt: skip
        except BaseException:
            self.ids.close()
            raise
        self._stop = asyncio.Event()
        # Metrics (live.metrics, decision 036): read from this state at scrape time, nothing per decision.
        # `quiet` is set while the decision loop sleeps with the next decision at least
        # HOUSEKEEPING_CLEAR_NS away (and whenever no decision loop runs): scrapes wait for it.
        self.quiet = asyncio.Event()
        self.quiet.set()
        self.quiet_until_ns = math.inf  # perf_counter_ns the quiet stretch ends (inf: no decision loop)
        self.mismatches: dict[str, int] = {}  # reconciliation's mismatches since start, by kind
        self.blocked_total: dict[str, int] = {}  # gates' blocked intents since start, already written out
        self.last_drift: LedgerDrift | None = None  # the last ledger check's (live.reconcile)
        self.metrics = adapter_registry(self)
        self.metrics_server: MetricsServer | None = None
        self.dead_man: DeadMan | None = None  # the venue's countdown cancel-all while trading (live.shutdown)
        self.stop_outcome: StopOutcome | None = None  # what the stop's cancels left (None: no stop yet)
        self.notifier = Notifier() if self.notifier is None else self.notifier
        self.run_folder: RunFolder | None = None  # this run's artifacts (live.runs), from the start of `run`
        self._budget_at_start: dict = {}

    def stop(self) -> None:
        """Ask the adapter to cancel its orders and return (safe from a signal handler)."""
        self._stop.set()

    def may_act(self) -> bool:
        """Whether this instance may change anything at the venue: always without election, else while it leads."""
        return self.leader is None or (self.instances.ha == "leader" and self.leader.valid())

    def trading(self) -> bool:
        """Whether decisions send their orders: without election always; else once a takeover is done, while leading."""
        return self.leader is None or (self.ha_ready and self.leader.valid())

    def request_kill(self, by: str = "SIGUSR1") -> None:
        """The kill switch (live.kill): stop as `stop` does, flatten if configured, and stay killed.

        The kill file is written first (a signal leaves one too): a restart refuses until a person
        clears it. Safe from a signal handler installed with the event loop's add_signal_handler.
        """
        if self.kill_requested is not None:
            return
        self.kill_requested = by
        try:
            killswitch.write_kill(self.cfg.state_dir, by)
        except OSError as e:  # the stop goes on; the start after it is not held back then
            self.audit.write(self.clock_ns(), "kill_file_unwritten", error=e.strerror)
        self.audit.write(self.clock_ns(), "kill_requested", by=by)
        self._stop.set()

    async def run(self) -> None:
        """Reconcile, then trade until stopped; always cancels its own orders before returning."""
        self._open_run_folder()
        try:
            killswitch.refuse_if_killed(self.cfg.state_dir)  # before anything is sent (live.kill)
            await self._serve_metrics()  # a port that cannot be had stops the start before the venue is asked
            await self._start()
        except BaseException as e:
            # Nothing of ours rests yet (the start places no order): the state files are released as
            # they are, usable by the next start.
            with contextlib.suppress(Exception):
                await self._close_metrics()
            self.ids.close()
            self.budget.close()
            if self.model is not None:
                self.model.close()
            self._close_run_folder(outcome="start_failed", error=_one_line(e, self.audit.redact))
            raise
        self.ids.reserve_ahead()  # a reservation is fsynced: never between the first decision and its order
        killswitch.write_pid(self.cfg.state_dir)  # `grinder live kill` signals this process
        # What exists now (markets, compiled code, ccxt's tables) lives as long as the process:
        # keeping it out of the collector's scans keeps its pauses short. The collector then runs in
        # housekeeping, away from decisions, not at whatever allocation tips it (decision 012).
        gc.freeze()
        gc.disable()
        tasks = [asyncio.create_task(c) for c in (self._book(), self._user(), self._decide(), self._reconciler())]
        if self.model is not None:
            tasks.append(asyncio.create_task(self._trades()))  # the live features' trades (live.features)
        lease: asyncio.Task | None = None
        if self.leader is not None:
            # The lease is kept by a task of its own, also through the stop (its cancels need it); the
            # countdown is armed by whoever leads, at each takeover (_take_over).
            lease = asyncio.create_task(self.leader.run())
            tasks.append(asyncio.create_task(self._ha()))
        elif self.cfg.dead_man_s > 0 and self.cfg.mode != "paper":  # paper: no order rests at the venue
            self.dead_man = DeadMan(self.ex, self.audit, self.clock_ns, self.market["id"], self.cfg.dead_man_s)
            tasks.append(asyncio.create_task(self.dead_man.keep()))  # its own timer, off the decision path
        tasks.append(asyncio.create_task(self._venue_watch()))  # a venue that stays down ends the session
        # systemd (live.sd_notify, decision 042): the start is over; the watchdog is fed only while the
        # decision loop turns, by a task of its own that reads the loop's beat.
        self.loop_beat_ns = time.perf_counter_ns()
        self.notifier.ready(self.sd_status())
        if self.notifier.watchdog_s is not None:
            wd = self.notifier.watchdog_s
            feed = keep_fed(self.notifier, lambda: self.loop_beat_ns, stall_after_s(wd, self.cfg.step_ms), wd / 4,
                            self.sd_status)  # fmt: skip
            tasks.append(asyncio.create_task(feed))
        stop = asyncio.create_task(self._stop.wait())
        failed: BaseException | None = None
        try:
            # A task that dies takes the adapter down (orders cancelled first), never silently.
            done, _ = await asyncio.wait({stop, *tasks}, return_when=asyncio.FIRST_COMPLETED)
            for t in done:
                if t is not stop and t.exception() is not None:
                    failed = t.exception()
                    self.audit.write(self.clock_ns(), "task_failed", error=type(failed).__name__,
                                     detail=str(failed)[:300])  # fmt: skip
        finally:
            self._stop.set()  # loops also check it: a library that swallows a cancellation cannot hold us
            # Before anything else: systemd stops the watchdog and counts TimeoutStopSec from here.
            self.notifier.stopping(f"stopping: cancelling the orders of {self.cfg.strategy} on {self.cfg.symbol}")
            self.ha_ready = False  # a stopping leader sends no new order, only the stop's cancels
            keeper = () if self._dead_man_task is None else (self._dead_man_task,)
            for t in (*tasks, stop, *keeper):
                t.cancel()
            await asyncio.wait({*tasks, stop, *keeper}, timeout=5.0)
            gc.enable()
            if self.kill_requested is not None and self.leader is not None and self.leader.killed is None:
                # The kill is every instance's (decision 041): the key is written before the lease can be
                # released, so no follower takes over; the others see it and run their own kill.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.leader.kill(self.kill_requested), 5.0)
            # Each step on its own: whatever fails (the venue, the disk), the next one still runs.
            try:  # bounded within stop_timeout_s by live.shutdown; this bound only guards against a hang
                await asyncio.wait_for(self._cancel_all(), self.cfg.stop_timeout_s + 10.0)
            except TimeoutError:
                self.audit.write(self.clock_ns(), "cancel_all_failed", error="timeout")
                self.stop_outcome = StopOutcome(tuple(sorted(self.orders)), False)
            if self.dead_man is not None and self.stop_outcome is not None and self.stop_outcome.clean:
                # Left armed after an unclean stop: the venue then cancels what is left when it runs out.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.dead_man.disarm(), 10.0)
            if self.kill_requested is not None:  # our orders are cancelled: the flatten, then `kill`
                try:
                    await asyncio.wait_for(self.rollout.kill(self.kill_requested), 30.0)
                except (TimeoutError, GrinderError) as e:
                    self.audit.write(self.clock_ns(), "kill_failed", by=self.kill_requested, error=type(e).__name__)
            if lease is not None:
                # The handoff: the lease released once the cancels and the disarm are done, so a follower
                # takes over at its next try instead of a lease later.
                lease.cancel()
                await asyncio.wait({lease}, timeout=1.0)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.leader.close(), 5.0)
            try:
                # Fills can land after the user stream was stopped: the position reported is the venue's,
                # and the ledger is checked against the venue a last time.
                positions = await self.ex.fetch_positions([self.symbol])
                self.position = venue_position(positions, self.symbol)
                await self._check_ledger(VenuePosition(self.position, venue_entry(positions, self.symbol)), True)
            except Exception as e:  # noqa: BLE001 - reported, and the shutdown goes on
                self.audit.write(self.clock_ns(), "final_position_unknown", error=type(e).__name__)
            try:
                self.pnl = await self._equity() - self.equity_start
            except Exception as e:  # noqa: BLE001
                self.audit.write(self.clock_ns(), "final_pnl_unknown", error=type(e).__name__)
            self.port.flush_refused(self.clock_ns(), force=True)
            self.flush_blocked(self.clock_ns(), force=True)
            model = {}  # run.json's `model`: what ran (as at the start) and what it did (`at_stop`)
            if self.model is not None:
                self.model.flush_interval(self.clock_ns(), force=True)
                done = self.model.outcome()
                self.audit.write(self.clock_ns(), "model_stop", **done)
                self.model.close()
                model = {"model": self.model.summary() | {"at_stop": done}}
            self.audit.write(self.clock_ns(), "stop", position=self.position, pnl=self.pnl, decisions=self.decisions)
            await self._final_metrics()
            self.ids.close()
            self.budget.close()
            killswitch.remove_pid(self.cfg.state_dir)
            clean = self.stop_outcome is not None and self.stop_outcome.clean
            self._close_run_folder(outcome="stopped", decisions=self.decisions, position=self.position, pnl=self.pnl,
                                   clean=clean, kill=self.kill_requested,
                                   failed=None if failed is None else type(failed).__name__,
                                   **model)  # fmt: skip
            self.notifier.status(f"stopped: {self.decisions} decisions, position {self.position:g}, "
                                 f"{'no order left' if clean else 'orders may be left'}")  # fmt: skip
            self.notifier.close()
        if failed is not None:
            raise failed

    def sd_status(self) -> str:
        """One line for systemd's STATUS= (`systemctl status`): what runs, decisions, open orders, position, book."""
        book = "book fresh" if self._book_fresh() else "book stale"
        return (f"{self.cfg.strategy} on {self.cfg.symbol} ({self.cfg.mode}): {self.decisions} decisions, "
                f"{len(self.orders)} open orders, position {self.position:g}, {book}")  # fmt: skip

    def _open_run_folder(self) -> None:
        """This run's folder under `<state_dir>/runs` (live.runs), older ones removed; a failure is audited, not fatal.

        The whole history stays in the audit trail: a run folder is a copy, so trading never waits for it.
        """
        try:
            model = {} if self.model is None else {"model": self.model.summary()}
            self.run_folder = RunFolder.start(self.cfg.state_dir, self.ids.epoch, self.audit.path, time.time_ns(),
                                              self.cfg.keep_runs, self.cfg.keep_days, strategy=self.strategy.name,
                                              symbol=self.cfg.symbol, mode=self.cfg.mode, **model)  # fmt: skip
        except Exception as e:  # noqa: BLE001 - an artifact: never a reason not to trade
            self.audit.write(self.clock_ns(), "run_folder_failed", error=str(e)[:300])
            return
        if self.model is not None:
            try:
                self.model.open_log(self.run_folder.path)
            except OSError as e:  # the decisions are still audited per interval
                self.audit.write(self.clock_ns(), "model_log_failed", error=e.strerror)
        self._budget_at_start = self._budget_state()
        self.audit.write(self.clock_ns(), "run_folder", path=str(self.run_folder.path),
                         removed=self.run_folder.removed, completed=self.run_folder.completed)  # fmt: skip

    def _budget_state(self) -> dict:
        b = self.budget
        return {"day": b.day, "actions": b.actions, "notional": b.notional}

    def _close_run_folder(self, **outcome) -> None:
        """At the end of `run`: the budget at start and stop, the run's audit lines and `outcome` into its folder."""
        rf, self.run_folder = self.run_folder, None
        if rf is None:
            return
        limits = self.budget.limits
        budget = {"at_start": self._budget_at_start, "at_stop": self._budget_state(),
                  "limits": {"max_actions": limits.max_actions, "max_notional": limits.max_notional},
                  "file": str(self.budget.path)}  # fmt: skip
        try:
            try:
                rf.write(BUDGET_FILE, json.dumps(budget, indent=1) + "\n")
            finally:
                rf.finish(time.time_ns(), **outcome)
        except Exception as e:  # noqa: BLE001 - the stop goes on; the whole history is in the audit trail
            self.audit.write(self.clock_ns(), "run_folder_unwritten", path=str(rf.path), error=str(e)[:300])

    async def _serve_metrics(self) -> None:
        """Serve /metrics on the configured loopback port (none configured: nothing); ConfigError if it is taken."""
        if self.cfg.metrics_port is None:
            return
        server = MetricsServer(self.metrics, self.cfg.metrics_addr, self.cfg.metrics_port, self.quiet,
                               self.quiet_left_s)  # fmt: skip
        port = await server.start()
        self.metrics_server = server
        self.audit.write(self.clock_ns(), "metrics_serving", addr=self.cfg.metrics_addr, port=port)

    def quiet_left_s(self) -> float:
        """Seconds left of the decision loop's quiet stretch (0: none now; inf: no decision loop)."""
        if not self.quiet.is_set():
            return 0.0
        return (self.quiet_until_ns - time.perf_counter_ns()) / 1e9

    async def _close_metrics(self) -> None:
        server, self.metrics_server = self.metrics_server, None
        if server is not None:
            await server.close()

    async def _final_metrics(self) -> None:
        """At stop: `<state_dir>/metrics.prom` (the run's last figures), then the server closed.

        After a kill the server first stays up until one more scrape has read it (at most
        `metrics_kill_linger_s`): the process is about to go, and `grinder_kill_switch_engaged` must be seen.
        """
        text = exposition(self.metrics).decode()
        try:
            write_atomic(self.cfg.state_dir / "metrics.prom", text, mode=0o600)
            if self.run_folder is not None:
                self.run_folder.write(METRICS_FILE, text)
        except OSError as e:
            self.audit.write(self.clock_ns(), "metrics_unwritten", error=e.strerror)
        server = self.metrics_server
        if server is not None and self.kill_requested is not None and self.cfg.metrics_kill_linger_s > 0:
            server.scraped.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(server.scraped.wait(), self.cfg.metrics_kill_linger_s)
        await self._close_metrics()

    async def _start(self) -> None:
        """The venue's market, the reconciliation on start and the equity at start; VenueError if the venue fails us."""
        ex = self.ex
        venue = self.cfg.api_url or f"Binance {'testnet' if self.cfg.mode == 'testnet' else 'USDT-M'}"
        try:
            await ex.load_markets()
        except ccxt.BaseError as e:
            raise VenueError(f"venue {venue} did not answer (markets): {_one_line(e, self.audit.redact)}") from None
        self.market = next((m for m in ex.markets.values() if m["id"] == self.cfg.symbol), None)
        if self.market is None:
            raise ConfigError(f"symbol {self.cfg.symbol} is not listed by {venue}")
        self.symbol = self.market["symbol"]
        self.tick = float(self.market["precision"]["price"])
        self.lot = float(self.market["precision"]["amount"])
        self.inverse = bool(self.market.get("inverse"))
        self.contract_size = float(self.market.get("contractSize") or 1.0)
        self.settle, self.settle_id = self.market["settle"], self.market.get("settleId") or self.market["settle"]
        self.port = ExchangePort(ex, self.symbol, self.audit, self.budget, self.clock_ns, asyncio.sleep,
                                 breaker=self.breaker, leadership=self.leader)  # fmt: skip
        self.audit.write(self.clock_ns(), "start", strategy=self.strategy.name, symbol=self.cfg.symbol,
                         mode=self.cfg.mode, params=self.cfg.params, gates=self.cfg.gates.model_dump(),
                         epoch=self.ids.epoch)  # fmt: skip
        if self.model is not None:
            # Before anything subscribes to the book and the trades: the features see the first snapshot.
            self.model.attach(ex, self.market["id"], self.tick)
            self.audit.write(self.clock_ns(), "model", **self.model.summary())
        try:
            # Another live instance of this strategy and symbol refuses the start; a dead one's orders
            # become orphans of the reconciliation (live.instance). Paper orders are this process's only.
            # Under leader election the lease says who trades: no probe (the leader's orders are not a reason
            # to refuse a follower's start).
            if self.cfg.mode != "paper" and self.leader is None:
                await probe(ex, self.symbol, self.instances, self.ids.past_epochs, self.audit, self.clock_ns,
                            self.cfg.instance_probe_s)  # fmt: skip
            self.wallet_start = (await self._reconcile(adopt_position=True)).wallet_now
            self.equity_start = await self._equity()
        except (ccxt.BaseError, PortFailed) as e:
            why = _one_line(e, self.audit.redact)  # ccxt's text quotes the signed request
            raise VenueError(f"venue {venue} failed the start (orders, position, balance): {why}") from None

    async def _equity(self) -> float:
        bal = await self.ex.fetch_balance()
        return float(bal[self.market["settle"]]["total"])

    async def _reconcile(self, adopt_position: bool = False) -> LedgerDrift:
        """Orders, position and wallet against the venue (live.reconcile); `adopt_position`: adopt a drift at once."""
        expected = {c for c, k in self.orders.items() if k.status == ST_NEW}
        found, venue = await reconcile(self.ex, self.port, self.audit, self.clock_ns(), self.symbol,
                                       self.strategy.name, self.cfg.symbol, self.lot, expected,
                                       self.position, is_other=self.instances.is_other,
                                       cancel_orphans=False)  # fmt: skip
        for m in found:  # as written to the audit trail (live.metrics counts them by kind)
            self.mismatches[m.kind] = self.mismatches.get(m.kind, 0) + 1
        other = next((m for m in found if m.kind == "other_instance"), None)
        if other is not None and self.leader is None:  # another live instance: stop first (decision 028)
            self._stop.set()  # nothing new leaves from now on (_create)
            raise other_instance(self.instances, self.audit, self.clock_ns(), other.client_id, "reconciliation")
        for m in found:
            if m.kind == "missing" and await self._gone(m.client_id):
                self.orders.pop(m.client_id, None)
        # An order this adapter sent while the venue was being listed (its create in flight, or
        # acknowledged after `expected` was taken) is listed but was not expected: ours, not an orphan.
        found = [m for m in found if not (m.kind == "orphan" and m.client_id in self.orders)]
        self._audit_quant_rules()
        self._adopted = 0.0
        drift = await self._check_ledger(venue, adopt_position)
        # The plan (live.rollout): orphans to cancel, and the part of an adopted (confirmed) drift a
        # reduce-only order can close; the rollout mode says which of them happen.
        await self.rollout.cycle(found, flattenable(self._adopted, venue.qty))
        return drift

    def _audit_quant_rules(self) -> None:
        """The quantitative rules' ratios and order counts now as one audit line (null: a ratio not applying yet)."""
        now = self.clock_ns()
        ratios = {k: (None if math.isnan(v) else v) for k, v in self.qrules.ratios(now).items()}
        self.audit.write(now, "quant_rules", **ratios, overflow=self.qrules.overflow)

    async def _check_ledger(self, venue: VenuePosition, adopt_at_once: bool) -> LedgerDrift:
        """Write the ledger's drift from the venue (`ledger_drift`) and adopt the venue's position on a drift.

        At once on start, after a user-stream drop and on stop (events were lost, or nothing comes
        after); otherwise only once the next check still sees a drift: a fill whose event is in
        flight while the position is fetched makes one that is gone by then.
        """
        drift = await reconcile_ledger(self.ex, self.audit, self.clock_ns(), self.settle_id, self.led,
                                       self.funding_paid, venue, self.wallet_start)  # fmt: skip
        self.last_drift = drift
        drifted = abs(drift.position) >= 0.5 * self.lot
        if drifted and (adopt_at_once or self._drift_seen):
            self._adopt(venue)
            drifted = False
        self._drift_seen = drifted
        return drift

    def _adopt(self, venue: VenuePosition) -> None:
        """Take the venue's position and entry price into the ledger (the venue is the truth about money)."""
        bb, ba = self.top[0], self.top[1]
        mid = (bb + ba) * 0.5 * self.tick if bb != EMPTY and ba != EMPTY else 0.0
        entry = venue.entry if venue.entry > 0.0 else mid  # not reported: valued at the mid
        before = float(self.led[POSITION])
        try:
            adopt_position(self.led, venue.qty, entry, self.inverse, self.contract_size)
        except ValueError as e:
            raise VenueError(f"venue position of {self.cfg.symbol} cannot be adopted: {e}") from None
        self._adopted += venue.qty - before
        self.position = float(self.led[POSITION])
        self.ledger_version += 1
        self.audit.write(self.clock_ns(), "position_adopted", position=venue.qty, entry=entry)

    async def _gone(self, client_id: str) -> bool:
        """Whether an order the open-order list lacks is confirmed not open by its own status query.

        A slow open-orders answer can predate an order the adapter has since seen acknowledged: the
        list alone is not enough to forget it. Not found, or closed, cancelled, expired or rejected:
        gone. Open, or the query failed: kept (the next reconciliation asks again).
        """
        try:
            o = await self.ex.fetch_order(None, self.symbol, {"clientOrderId": client_id})
        except ccxt.OrderNotFound:
            status = "not found"
        except (ccxt.NetworkError, ccxt.ExchangeError) as e:
            self.audit.write(self.clock_ns(), "missing_unconfirmed", client_id=client_id, error=type(e).__name__)
            return False
        else:
            status = o.get("status") or "unknown"
        gone = status != "open"
        self.audit.write(self.clock_ns(), "missing_checked", client_id=client_id, status=status, forgotten=gone)
        return gone

    async def _venue_watch(self) -> None:
        """Raise VenueDown once no market data and no answer came for `venue_down_exit_s` (live.venue_watch)."""
        venue = self.cfg.api_url or f"Binance {'testnet' if self.cfg.mode == 'testnet' else 'USDT-M'}"
        await watch_venue(self.ex, self.audit, self.cfg.venue_down_exit_s, venue, lambda: self.book_ts,
                          self.monotonic, self.clock_ns)  # fmt: skip

    async def _reconciler(self) -> None:
        while not self._stop.is_set():
            await asyncio.sleep(self.cfg.reconcile_s)
            try:
                await self._reconcile()
            except (ccxt.NetworkError, ccxt.ExchangeError, PortFailed, PortRefused) as e:
                self.audit.write(self.clock_ns(), "reconcile_error", error=type(e).__name__, detail=str(e)[:300])

    async def _book(self) -> None:
        failures = 0
        while not self._stop.is_set():
            try:
                ob = await self.ex.watch_order_book(self.symbol)
            except (ccxt.ChecksumError, ccxt.NetworkError) as e:
                # A sequence gap (ChecksumError) or a dropped socket: stale until ccxt has resubscribed
                # and synced a new snapshot on a later watch. Logged once per outage; the pause grows
                # so a venue that keeps failing is not hammered (and the loop always yields).
                if self.book_ts:
                    reason = "sequence gap" if isinstance(e, ccxt.ChecksumError) else type(e).__name__
                    self.audit.write(self.clock_ns(), "book_stale", reason=reason, decisions=self.decisions)
                self.book_ts = 0.0
                failures += 1
                await asyncio.sleep(min(2.0, 0.05 * 2 ** min(failures, 6)))
                continue
            failures = 0
            if ob["bids"] and ob["asks"]:
                (bp, bq), (ap, aq) = ob["bids"][0][:2], ob["asks"][0][:2]
                self.top = (round(bp / self.tick), round(ap / self.tick), float(bq), float(aq))
                if self.decider.depth_levels:
                    depth_from_levels(ob["bids"], ob["asks"], self.tick, self.depth)
                self.top_arrival_ns = self.ex.depth_arrival_ns
                self.top_ts_ns = int(ob.get("timestamp") or 0) * 1_000_000
                self.book_nonce = int(ob.get("nonce") or 0)
                if not self.book_ts:
                    self.audit.write(self.clock_ns(), "book_fresh", nonce=ob.get("nonce"), decisions=self.decisions)
                self.book_ts = self.monotonic()

    async def _trades(self) -> None:
        """Keep the trade stream subscribed: the live features take its trades from the client's taps."""
        failures = 0
        while not self._stop.is_set():
            try:
                await self.ex.watch_trades(self.symbol)
                failures = 0
            except (ccxt.NetworkError, ccxt.ExchangeError):
                # ccxt resubscribes on the next watch; the pause grows so a venue that keeps failing is not hammered.
                failures += 1
                await asyncio.sleep(min(2.0, 0.05 * 2 ** min(failures, 6)))

    async def _user(self) -> None:
        while not self._stop.is_set():
            try:
                updates = await self.ex.watch_orders(self.symbol)
                self.user_seen = self.ex.order_events  # all of them are in `updates` (ccxt keeps them)
            except ccxt.NetworkError as e:
                # Events sent while the stream was down are lost (as on Binance): once it is back,
                # take orders and position from the venue again.
                self.audit.write(self.clock_ns(), "user_stream_error", error=type(e).__name__)
                await asyncio.sleep(0.2)
                with contextlib.suppress(ccxt.NetworkError, ccxt.ExchangeError, PortFailed, PortRefused):
                    await self._reconcile(adopt_position=True)
                continue
            self._user_news.set()
            for o in updates:
                cid = o.get("clientOrderId") or ""
                if not is_ours(cid, self.strategy.name, self.cfg.symbol) or cid in self.flatten_ids:
                    continue  # a flatten's fills are booked from its reply (live.rollout)
                if self.leader is None and self.instances.is_other(cid):  # another live instance: both must not
                    self._stop.set()  # nothing new leaves from now on (_create)
                    raise other_instance(self.instances, self.audit, self.clock_ns(), cid, "user stream")
                # Fills count for any order of ours, also one already cancelled here (a fill can
                # overtake the cancel).
                filled = float(o.get("filled") or 0.0)
                self._book_fills(cid, o, filled)
                if o.get("status") in QR_ENDS:
                    self.qrules.ended(cid, self.clock_ns(), QR_ENDS[o["status"]])
                k = self.orders.get(cid)
                if k is None:
                    continue
                k.filled = filled
                if o.get("status") in ("closed", "canceled", "expired", "rejected"):
                    self.orders.pop(cid, None)
                elif k.status == ST_NONE:
                    k.status = ST_NEW

    def _book_fills(self, cid: str, o: dict, filled: float) -> None:
        """Book each fill of order `cid` not booked yet (ledger, position, a `fill` line); `filled`: its total."""
        side = 1 if o.get("side") == "buy" else -1
        for f in fills_of(o):
            if f.trade_id not in self.booked:
                self.booked.add(f.trade_id)
                qty = f.qty
                cover = self.covered.get(cid, 0.0)
                if cover > 0.0:  # a taker's fill already booked from its reply: its commission only
                    took = min(cover, qty)
                    self.covered[cid] = cover - took if cover - took > 1e-12 else 0.0
                    self._book_fee(cid, f.fee, f.fee_currency, f.trade_id, took)
                    qty -= took
                    if qty <= 1e-12:
                        continue
                    f = replace(f, fee=0.0)  # noqa: PLW2901 - the rest of it, its commission booked above
                self._book_fill(cid, side, f.price, qty, f.fee, f.fee_currency, f.trade_id)
        rest = filled - self.filled.get(cid, 0.0)
        if rest > 1e-9 * max(filled, 1.0):
            # Filled beyond the trades listed (ccxt did not hold the order when an earlier fill came):
            # booked at the order's price, a maker's fill price (a taker's: its average); its commission
            # is not known here, the wallet drift shows it.
            taker = o.get("type") == "market" or o.get("timeInForce") == "IOC"
            price = (o.get("average") or o.get("price")) if taker else (o.get("price") or o.get("average"))
            self._book_fill(cid, side, float(price or 0.0), rest, 0.0, None, None)

    def _book_fill(self, cid: str, side: int, price: float, qty: float, fee: float, fee_currency: str | None,
                   trade_id: str | None) -> None:  # fmt: skip
        """Book one fill into the ledger with the commission the venue charged (settle currency, else left out)."""
        book_fill(self.led, side, price, qty, 0.0, self.inverse, self.contract_size)
        if fee_currency in (self.settle, self.settle_id):
            # The venue's own figure, not a configured rate. One charged in another asset (BNB) is
            # not this ledger's money: it stays on the fill line only.
            self.led[FEES] += fee
        self.filled[cid] = self.filled.get(cid, 0.0) + qty
        self.quote_booked[cid] = self.quote_booked.get(cid, 0.0) + qty * price
        self.qrules.filled(cid, self.clock_ns(), qty, qty * (self.contract_size if self.inverse else price))
        self.position = float(self.led[POSITION])
        self.ledger_version += 1
        self.audit.write(self.clock_ns(), "fill", client_id=cid, qty=qty, price=price, fee=fee,
                         fee_currency=fee_currency, trade_id=trade_id, position=self.position)  # fmt: skip

    def _book_fee(self, cid: str, fee: float, fee_currency: str | None, trade_id: str | None, qty: float) -> None:
        """The commission of a taker's fill whose quantity was booked from the order's reply (`covered`)."""
        if fee_currency in (self.settle, self.settle_id):
            self.led[FEES] += fee
            self.ledger_version += 1
        self.audit.write(self.clock_ns(), "fill_fee", client_id=cid, qty=qty, fee=fee, fee_currency=fee_currency,
                         trade_id=trade_id)  # fmt: skip

    async def _decide(self) -> None:
        if self.clock is not None:
            return await self._decide_stepped()
        try:
            await self._decide_loop()
        finally:
            self.quiet_until_ns = math.inf  # no decision loop: a scrape need not wait
            self.quiet.set()

    async def _decide_loop(self) -> None:
        step_ns = self.cfg.step_ms * 1_000_000
        next_tick = time.perf_counter_ns() + step_ns
        hot_ns = int(self.cfg.hot_ms * 1_000_000)
        while not self._stop.is_set():
            # A long step is slept in pieces of at most a second, with housekeeping between them.
            while (now := time.perf_counter_ns()) < next_tick - hot_ns:
                self.loop_beat_ns = now  # a long step's sleep is the loop turning too (the watchdog's beat)
                left = next_tick - hot_ns - now
                if left >= HOUSEKEEPING_CLEAR_NS:
                    self.quiet_until_ns = next_tick - hot_ns
                    self.quiet.set()  # a scrape waiting for it runs now, while this task sleeps
                await asyncio.sleep(min(left, HOUSEKEEPING_MAX_DEFER_NS) / 1e9)
                if left <= HOUSEKEEPING_MAX_DEFER_NS:
                    break
                self.housekeeping(next_tick - hot_ns)
            self.quiet.clear()  # the run-up to the tick, the decision and its requests: no scrape
            if hot_ns:
                # A process that slept a step runs its next decision slower (decision 012: cold caches,
                # untrained branch predictors, an idle vCPU). Stay awake, yielding to the other tasks;
                # over the last stretch decide ahead for the tick, again and again on the inputs as
                # they are, and have ccxt sign that decision's first request (or, if it sends nothing,
                # run the request path on a throwaway order); then wait out the last moment without
                # yielding, so nothing evicts them and no input changes before the tick. The tick
                # adopts the last decision taken ahead if its inputs still hold (they do unless a
                # round ran late), and decides afresh if not.
                while time.perf_counter_ns() < next_tick - PREWARM_LEAD_NS:
                    await asyncio.sleep(0)
                tick_wall_ns = self.clock_ns() + (next_tick - time.perf_counter_ns())
                while True:
                    await asyncio.sleep(0)  # market data keeps flowing in between
                    now = time.perf_counter_ns()
                    self._decide_ahead(next_tick, tick_wall_ns)
                    self._prepare_request()
                    if (end := time.perf_counter_ns()) + 2 * (end - now) >= next_tick:
                        break
                while time.perf_counter_ns() < next_tick:
                    pass
            elif (now := time.perf_counter_ns()) < next_tick:
                await asyncio.sleep((next_tick - now) / 1e9)
            # Late by more than a step (the last decision's requests outlasted it): decide now, then
            # back on the grid.
            self.tick_ns = self.loop_beat_ns = time.perf_counter_ns()
            self.tick_late_ns = self.tick_ns - next_tick
            self.tick_sched_ns = next_tick if self.tick_late_ns < step_ns else 0  # 0: a tick was missed
            next_tick += max(1, (self.tick_ns - next_tick) // step_ns + 1) * step_ns
            if self._book_fresh():
                await self.decide_once()  # never on a stale book
            elif self.orders and self.trading():
                # Nor does a quote rest on a book we cannot see (decision 021, as the backtest): cancel
                # what is open; one whose cancel fails is tried again at the next tick.
                await _together([self._cancel(k) for k in list(self.orders.values()) if k.request != REQ_CANCEL])
            self.housekeeping(next_tick - hot_ns)

    async def _decide_stepped(self) -> None:
        """The decision loop on a stepped clock: one decision per tick the driver releases, nothing ahead."""
        clock = self.clock
        while not self._stop.is_set():
            await clock.next_tick()
            self.tick_ns = self.loop_beat_ns = time.perf_counter_ns()
            self.tick_late_ns = self.tick_sched_ns = 0  # 0: no decision taken ahead is adopted
            if self._book_fresh():
                await self.decide_once()
            elif self.orders and self.trading():
                await _together([self._cancel(k) for k in list(self.orders.values()) if k.request != REQ_CANCEL])
            await clock.tick_done()
            self.housekeeping(time.perf_counter_ns())  # at most once a second (HOUSEKEEPING_MAX_DEFER_NS)

    def _book_fresh(self) -> bool:
        """Whether the book is synced and its last update is at most `stale_after_s` old."""
        return bool(self.book_ts) and self.monotonic() - self.book_ts <= self.cfg.stale_after_s

    def housekeeping(self, busy_from_ns: int) -> bool:
        """Have the journals fsynced, reserve client ids ahead and collect garbage, unless a decision is near.

        `busy_from_ns` (perf_counter_ns) is when the next decision's run-up starts; True if it ran.
        """
        now = time.perf_counter_ns()
        if busy_from_ns - now < HOUSEKEEPING_CLEAR_NS and now - self.housekept_ns < HOUSEKEEPING_MAX_DEFER_NS:
            return False
        self.housekept_ns = now
        if self.kill_requested is None and killswitch.killed(self.cfg.state_dir) is not None:
            self.request_kill("kill file")
        self.audit.sync_soon()
        self.budget.sync_soon()
        self.ids.reserve_ahead()
        if hasattr(self, "port"):
            self.port.flush_refused(self.clock_ns())
        self.flush_blocked(self.clock_ns())
        if self.model is not None:
            self.model.housekeeping(self.clock_ns())
        self.housekeeping_runs += 1
        gc.collect(1 if self.housekeeping_runs % 64 else 2)  # gc is disabled while trading: only here
        return True

    def _inputs(self, now_ns: int | None = None, known: list[Known] | None = None) -> tuple[list[Known], tuple]:
        """The orders the decision sees and `Decider.decide`'s arguments for the current book and position.

        `now_ns` is the decision's time (ns since the epoch), by default the clock's now; `known` the
        orders, by default those open now.
        """
        bb, ba, bq, aq = self.top
        known = list(self.orders.values()) if known is None else known
        view = [KnownOrder(k.side, k.price_ticks, k.qty - k.filled, k.status, k.request, k.placed_ns) for k in known]
        # Equity and the unit notional from the ledger, by the function the backtest engine uses.
        _, equity, unit_notional = gate_inputs(self.led, bb, ba, EMPTY, self.tick, self.funding_paid, self.inverse,
                                               self.contract_size)  # fmt: skip
        now_ns = self.clock_ns() if now_ns is None else now_ns
        self.unit_notional = unit_notional
        args = (now_ns, bb, ba, bq, aq, self.tick, self.lot, self.position, equity, unit_notional, view)
        if self._model_signals:  # the model's forecast on the features as they are now: the decision's signals
            args += (self.model.forecast(),)
        if self.decider.depth_levels:  # the book's first levels, for the strategy or the L2 guard
            args += ((None,) if not self._model_signals else ()) + (self.depth.copy(),)
        return known, args

    def _prepare_request(self) -> None:
        """Presign the first request of the decision taken ahead (decision 014); else warm the path on a throwaway."""
        bb, ba, _, _ = self.top
        if bb == EMPTY or ba == EMPTY:
            return
        price = (bb - 1000) * self.tick
        self.port.prewarm(price, self.lot)  # the checks and records a request passes before it leaves
        known, intents = (self._ahead[1], self._ahead[4].intents) if self._ahead is not None else ((), None)
        if intents is not None and intents.cancel:  # decide_once sends the cancels first, in this order
            self.ex.presign_cancel(self.symbol, known[intents.cancel[0]].client_id)
        elif intents is not None and intents.place:
            side, px, qty, _level = intents.place[0]
            # The call _create will make, the id included: nothing takes an id before it.
            side_name, price = self._order_terms(side, px)
            self.ex.presign_post_only(self.symbol, side_name, qty, price, str(self.ids.peek()))
        else:
            self.ex.drop_presigned()
            self.ex.prewarm(self.symbol, price, self.lot)

    def _decide_ahead(self, tick_ns: int, tick_wall_ns: int) -> None:
        """Decide for the tick at `tick_ns` (perf_counter_ns; `tick_wall_ns` on the clock) on the inputs as they are."""
        bb, ba, _, _ = self.top
        if bb == EMPTY or ba == EMPTY:
            self._ahead = None
            self.decider.warm_up()  # the code stays loaded and warm all the same
            return
        known, args = self._inputs(tick_wall_ns)
        self._ahead = (tick_ns, known, self._input_key(known), args, self.decider.decide_ahead(*args))
        if self.model is not None and not self._model_signals:
            self.model.forecast()  # shadow: the tick's forecast made ahead too (cached while no event arrives)

    def _input_key(self, known: list[Known]) -> tuple:
        """All a decision is taken on but its time: the book's top, the position and each order's state.

        Equal keys give equal `_inputs` arguments (time aside), at a fraction of their cost.
        """
        orders = [(k.side, k.price_ticks, k.qty - k.filled, k.status, k.request) for k in known]
        # The ledger's version and the funding stand for the equity the gates read; with the model's forecast
        # as the signals, the count of market events the features took stands for it (any new one may move it).
        features = self.model.features.received if self._model_signals else None
        # The levels past the top move without the top: the book's sequence number stands for them.
        book = self.book_nonce if self.decider.depth_levels else None
        return (self.top, self.position, self.ledger_version, self.funding_paid, self.tick, self.lot, orders, features,
                book)  # fmt: skip

    def _adopt_ahead(self, known: list[Known]) -> tuple[tuple, Intents] | None:
        """The decision taken ahead for this tick, adopted, if it was taken on these inputs: (its arguments, intents).

        Adopting it keeps its intents and state, exactly as deciding now on the tick's time would.
        """
        ahead, self._ahead = self._ahead, None
        if ahead is None or ahead[0] != self.tick_sched_ns or not self.tick_sched_ns:
            return None
        _, a_known, a_key, a_args, taken = ahead
        # The same order objects (cancels index them), and the same book, position and order states.
        if (
            len(a_known) != len(known)
            or any(a is not b for a, b in zip(a_known, known, strict=True))
            or a_key != self._input_key(known)
        ):
            return None
        self.decided_ahead += 1
        return a_args, self.decider.adopt(taken)

    async def decide_once(self) -> None:
        """One decision on the current top of book, and its intents sent (all cancels at once, then all creates)."""
        started = time.perf_counter_ns()
        ready = min(max(self.top_arrival_ns, self.tick_ns), started)
        known = list(self.orders.values())
        taken = self._adopt_ahead(known)
        if taken is None:
            args = self._inputs(known=known)[1]
            taken = args, self.decider.decide(*args)
        args, intents = taken
        bb, ba = args[1], args[2]
        decided = time.perf_counter_ns()
        # The features this decision was taken on (active: those of its forecast; no event came since).
        reading = self.model.reading() if self.model is not None else None
        self.decisions += 1
        if self.decision_log is not None:
            self.decision_log.append(
                DecisionRecord(self.top_ts_ns, bb, ba, args[3], args[4], self.position, self.decider.last_targets)
            )
            self.decision_blocked.append(intents.blocked)
        if intents.blocked or self._gates_on:
            self._gate_news(intents.blocked, self.clock_ns(), args[8], args[7])
        if self.leader is not None and not self.trading():
            self._model_after(args, reading)
            return  # a follower decides (warm code, warm state) and sends nothing (live.leader)
        self.ex.arm_probe()
        # The cancels all at once, then (once they are answered: they free margin and position room)
        # the creates all at once: two round trips a decision, not one per order.
        await _together([self._cancel(known[i]) for i in intents.cancel])
        # Each create checks the book is still fresh when it leaves (`_create`): the book can go stale
        # while the cancels are out, or between one create and the next.
        await _together([self._create(side, px, qty) for side, px, qty, _level in intents.place])
        if intents.take:
            # The strategy's taker orders (IOC or market), once the quotes are out: each sent once, never
            # retried, its fills booked before the next decision (`_take`).
            await asyncio.gather(*(self._take(side, px, qty, kind) for side, px, qty, _level, kind in intents.take))
        self.ex.drop_presigned()  # one not used (the decision was taken afresh) is not for a later one
        # The journals' fsync, the next client-id reservation and the collector wait for housekeeping.
        if self.ex.first_request_ns:
            self.latencies.append(
                (started - ready, decided - ready, self.ex.first_request_ns - ready, self.tick_late_ns)
            )
        self._model_after(args, reading)

    def _model_after(self, args: tuple, reading: Reading | None) -> None:
        """The decision to the model's records (live.model): once its requests are out, off their path."""
        if self.model is not None:
            self.model.after_decision(args[0], reading, args, self.decider)

    def _gate_news(self, blocked: dict[str, int], now_ns: int, equity: float, position: float) -> None:
        """Audit at `now_ns` what the gates blocked in a decision taken on `equity` (settle currency) and `position`.

        The daily-loss kill and the drawdown guard are written at once on the first decision they
        block (`gate_fired`, with the equity and the day-start and peak equity the gates hold), and
        again once their condition no longer holds (`gate_cleared`); the blocked counts of every
        gate are summed and written once per interval (`gates_blocked`, see `flush_blocked`).
        """
        st, g = self.decider.gate_state, self.cfg.gates
        day_start, peak = float(st[S_DAY_START_EQ]), float(st[S_PEAK_EQ])
        # The gates' own conditions (grinder.core.gates.apply_gates) on the state this decision left.
        holds = {"daily_loss": g.max_daily_loss > 0 and day_start - equity > g.max_daily_loss,
                 "drawdown_reduce_only": g.max_drawdown > 0 and peak - equity > g.max_drawdown}  # fmt: skip
        for reason, on in holds.items():
            if reason in blocked and reason not in self._gates_on:
                self._gates_on.add(reason)
                self.audit.write(now_ns, "gate_fired", reason=reason, equity=equity, day_start_equity=day_start,
                                 peak_equity=peak, settle=self.settle, position=position)  # fmt: skip
            elif not on and reason in self._gates_on:
                self._gates_on.discard(reason)
                self.audit.write(now_ns, "gate_cleared", reason=reason, equity=equity, day_start_equity=day_start,
                                 peak_equity=peak, settle=self.settle)  # fmt: skip
        if blocked and not self._blocked:
            self._blocked_since_ns = now_ns
        for reason, n in blocked.items():
            self._blocked[reason] = self._blocked.get(reason, 0) + n

    def flush_blocked(self, now_ns: int, force: bool = False) -> None:
        """Write the gates' blocked counts so far if an interval has passed since the last such line (or `force`)."""
        if self._blocked and (force or now_ns - self._blocked_line_ns >= REFUSED_EVERY_NS):
            self.audit.write(now_ns, "gates_blocked", counts=self._blocked, since_ns=self._blocked_since_ns)
            for reason, n in self._blocked.items():
                self.blocked_total[reason] = self.blocked_total.get(reason, 0) + n
            self._blocked, self._blocked_line_ns = {}, now_ns

    async def _cancel(self, k: Known) -> bool:
        """Cancel one of the orders a decision saw; a cancel that was not done leaves it for the next decision."""
        k.request = REQ_CANCEL
        try:
            await self.port.cancel(client_id=k.client_id)
            self.orders.pop(k.client_id, None)
        except (PortFailed, PortRefused) as e:
            k.request = REQ_NONE
            self.audit.write(self.clock_ns(), "cancel_not_done", client_id=k.client_id, error=str(e)[:200])
        return True

    def _order_terms(self, side: int, price_ticks: int) -> tuple[str, float]:
        """A quote's side and price as the port and ccxt take them (what a presigned create must match)."""
        return "buy" if side > 0 else "sell", price_ticks * self.tick

    async def _create(self, side: int, price_ticks: int, qty: float) -> bool:
        """Place one new quote of a decision; False if the port refused it (breaker open, budget used up)."""
        if self._stop.is_set():  # stopping (SIGTERM, the kill switch): nothing new leaves
            return False
        if not self._book_fresh():
            # The book went stale after the decision (while its cancels were out, or before this create's
            # task ran): nothing is placed on a book nobody sees (decision 021); the next tick cancels.
            self.audit.write(self.clock_ns(), "creates_dropped", reason="book stale", count=1)
            return False
        side_name, price = self._order_terms(side, price_ticks)
        now = self.clock_ns()
        reason = self.port.refusal(now, price * qty)
        if reason is not None:  # refused before it takes a client id: ids name orders that were sent
            self.port.refuse(now, reason)
            return False
        cid = self.ids.next()
        k = Known(str(cid), side, price_ticks, qty, placed_ns=now)
        self.orders[k.client_id] = k
        # Recorded as sent now, valued at the mid as the rules' gate assumed (post-only: GTX).
        self.qrules.placed(k.client_id, now, "GTX", qty, qty * self.unit_notional)
        try:
            await self.port.create(cid, side_name, price, qty)
            k.status = ST_NEW
        except PortRefused:
            self.orders.pop(k.client_id, None)  # never sent
            self.qrules.ended(k.client_id, self.clock_ns(), "REJECTED")
            return False
        except PortFailed as e:
            if not e.unknown:
                self.orders.pop(k.client_id, None)  # rejected for good; unknown ones stay for reconciliation
                self.qrules.ended(k.client_id, self.clock_ns(), "REJECTED")
        return True

    async def _take(self, side: int, price_ticks: int, qty: float, kind: int) -> str:
        """Send one taker order of a decision (grinder.core.order_kind: IOC or MARKET, maybe REDUCE_ONLY); its result.

        Checked as a quote's create is (stopping, a stale book, the port's refusal: breaker, budget, state
        files, leadership), charged to the budget (an IOC at its limit, a market order at the touch it
        takes) and recorded for the quantitative rules (IOC). Sent once through ccxt's create_order: a
        failure is never retried (a lost reply may hide a fill: the user stream and reconciliation have
        the truth). Its fills are booked from the user stream, and what its reply says it filled is in
        the ledger before this returns (`_settle_taker`). One `taker` line before it leaves, one
        `taker_done` line with its result (TAKER_RESULTS) for every taker the strategy asked for.
        """
        market = kind & KIND_MASK == MARKET
        reduce_only = bool(kind & REDUCE_ONLY)
        side_name = "buy" if side > 0 else "sell"
        touch = self.top[1] if side > 0 else self.top[0]
        # Whole lots and the tick grid, written as the venue prints them: ccxt truncates a quantity's text, and
        # a position summed from fills (2.976999999999999) would lose a lot to it.
        qty = round(math.floor(qty / self.lot + 1e-9) * self.lot, decimals_of(self.lot))
        limit = None if market else round(price_ticks * self.tick, decimals_of(self.tick))
        value = (touch * self.tick if touch != EMPTY else math.nan) if market else limit
        now = self.clock_ns()
        what = {"kind": describe(kind), "side": side_name, "qty": qty, "limit": limit, "reduce_only": reduce_only}

        def done(result: str, **kw) -> str:
            self.taker_results[result] += 1
            self.audit.write(self.clock_ns(), "taker_done", **what, result=result, **kw)
            return result

        if self._stop.is_set():
            return done("refused", reason="stopping")
        if not self._book_fresh():
            return done("refused", reason="book stale")
        if qty <= 0.0:
            return done("refused", reason=f"below one lot ({self.lot:g})")
        if not math.isfinite(value):
            return done("refused", reason="no touch to value a market order at")
        reason = self.port.refusal(now, value * qty)
        if reason is not None:  # counted with the creates' refusals too (creates_refused, the metrics)
            self.port.refuse(now, reason)
            return done("refused", reason=reason)
        cid = str(self.ids.next())
        port = self.port
        port.breaker.acquire(now / 1e9)  # half open: this order is the trial
        port._breaker_news()
        self.budget.charge(now, value * qty)
        # Recorded as sent now, valued at the mid as the rules' gate assumed (as a quote is), as Binance's IOC.
        self.qrules.placed(cid, now, "IOC", qty, qty * self.unit_notional)
        self.audit.write(now, "taker", client_id=cid, **what, notional=value * qty)
        params = {"newClientOrderId": cid} | ({"reduceOnly": True} if reduce_only else {})
        if not market:
            params["timeInForce"] = "IOC"
        self.takers_sent += 1
        try:
            o = await port._call(lambda: self.ex.create_order(self.symbol, "market" if market else "limit", side_name,
                                                              qty, limit, params))  # fmt: skip
        except Fenced as e:  # refused before it left (the lease lapsed): not the venue's failure, nor sent
            self.takers_sent -= 1
            self.qrules.ended(cid, self.clock_ns(), "REJECTED")
            return done("refused", client_id=cid, reason=str(e)[:200])
        except PERMANENT as e:
            # The venue answered (reduce-only with nothing to reduce, -2022; the minimum notional; a filter):
            # for the breaker a success. Nothing filled; nothing to retry.
            port.breaker.success()
            port._breaker_news()
            self.qrules.ended(cid, self.clock_ns(), "REJECTED")
            return done("rejected", client_id=cid, error=_one_line(e, self.audit.redact))
        except (TimeoutError, ccxt.NetworkError, ccxt.ExchangeError) as e:
            # The venue may have taken it: never sent again. Its fills, if any, come on the user stream, and
            # the next reconciliation compares the position with the venue's.
            port.breaker.failure(self.clock_ns() / 1e9)
            port._breaker_news()
            return done("unknown", client_id=cid, error=_one_line(e, self.audit.redact))
        port.breaker.success()
        port._breaker_news()
        filled = float(o.get("filled") or 0.0)
        cost = float(o.get("cost") or 0.0)
        average = float(o.get("average") or (cost / filled if filled > 0 else 0.0))
        status = o.get("status")
        from_reply = await self._settle_taker(cid, side, filled, cost or filled * average)
        self.qrules.ended(cid, self.clock_ns(), "FILLED" if status == "closed" else "EXPIRED")  # fills first
        return done("filled" if status == "closed" else "expired", client_id=cid, status=status, filled=filled,
                    average=average, booked_from_reply=from_reply)  # fmt: skip

    async def _settle_taker(self, cid: str, side: int, filled: float, quote: float) -> float:
        """Wait (at most TAKER_BOOK_WAIT_S) for the user stream to book the `filled` quantity its reply reported, then
        book what has not come from the reply, as `covered` (its commission comes with the stream's fills); how much.
        """
        eps = 1e-9 * max(filled, 1.0)
        loop = asyncio.get_running_loop()
        give_up = loop.time() + TAKER_BOOK_WAIT_S
        while filled - self.filled.get(cid, 0.0) > eps and (left := give_up - loop.time()) > 0:
            self._user_news.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._user_news.wait(), left)
        rest = filled - self.filled.get(cid, 0.0)
        if rest <= eps:
            return 0.0
        price = (quote - self.quote_booked.get(cid, 0.0)) / rest  # the part not booked yet, at its own average
        self.covered[cid] = self.covered.get(cid, 0.0) + rest
        self._book_fill(cid, side, price, rest, 0.0, None, None)
        return rest

    async def _ha(self) -> None:
        """Act on the election's changes of role (live.leader): take over on winning the lease, step down on losing."""
        lead = self.leader
        while True:
            await lead.changed.wait()
            lead.changed.clear()
            if self._ha_failed is not None:
                raise self._ha_failed
            if lead.killed is not None and self.kill_requested is None:
                # Pulled on another instance (decision 041): this one runs its own kill too, leader or not.
                self.request_kill(f"kill switch in Redis ({lead.killed})")
                return
            if lead.token is not None and not self.ha_ready:
                await self._take_over()
            elif lead.token is None and self.instances.ha == "leader":
                self._step_down(lead.lost_reason)

    async def _take_over(self) -> None:
        """The lease won: reconcile (the venue's position adopted, every earlier leader's orders cancelled as
        orphans: the lease proves they no longer trade), arm the countdown, then let decisions send."""
        lead, token = self.leader, self.leader.token
        t0 = self.monotonic()
        self.instances.ha = "leader"
        while lead.token == token and lead.valid() and not self._stop.is_set():
            try:
                await self._reconcile(adopt_position=True)
                await self._cancel_former_leaders()
                if self.cfg.dead_man_s > 0:
                    self.dead_man = DeadMan(self.ex, self.audit, self.clock_ns, self.market["id"], self.cfg.dead_man_s)
                    if not await self.dead_man.arm():
                        raise ccxt.NetworkError("the countdown cancel-all could not be armed")
                    self._dead_man_task = asyncio.create_task(self._keep_dead_man(self.dead_man))
                break
            except (ccxt.NetworkError, ccxt.ExchangeError, PortFailed, PortRefused) as e:
                self.audit.write(self.clock_ns(), "takeover_failed", fence=token, error=type(e).__name__,
                                 detail=str(e)[:200])  # fmt: skip
                await asyncio.sleep(0.2)
        if lead.token != token or not lead.valid() or self._stop.is_set():
            return  # lost meanwhile: the change wakes _ha, which steps down
        self.ha_ready = True
        self.audit.write(self.clock_ns(), "leader_ready", fence=token, took_s=round(self.monotonic() - t0, 3),
                         position=self.position)  # fmt: skip

    async def _cancel_former_leaders(self) -> None:
        """Cancel what former leaders left resting, whatever the rollout mode; PortFailed / PortRefused if one fails.

        In the modes that cancel orphans the reconciliation just did; in the others nobody would: the
        countdown this leader keeps armed no longer runs out for them, and two leaders' orders would rest.
        """
        listed = await self.ex.fetch_open_orders(self.symbol)
        # Every order of the strategy and symbol (this instance's own from an earlier term too: forgotten
        # when it stepped down) is a former leader's: none is this term's yet.
        left = [c for c in self._ours(listed) if c not in self.orders]
        if left:
            self.audit.write(self.clock_ns(), "former_leader_orders", client_ids=left, mode=self.rollout.mode)
        for cid in left:
            await self.port.cancel(client_id=cid)

    async def _keep_dead_man(self, dead_man: DeadMan) -> None:
        """Keep the countdown armed while leading; a lost lease ends it quietly, a lost countdown stops the adapter."""
        try:
            await dead_man.keep()
        except Fenced:
            pass  # not the leader any more: the next leader keeps the countdown
        except DeadManLost as e:
            self._ha_failed = e
            self.leader.changed.set()

    def _step_down(self, reason: str) -> None:
        """The lease lost: a follower from now on. Nothing is cancelled (that needs the lease): the countdown the
        former leader no longer re-arms, or the next leader's reconciliation, takes what rests."""
        self.ha_ready = False
        self.instances.ha = "follower"
        if self._dead_man_task is not None:
            self._dead_man_task.cancel()
        self._dead_man_task, self.dead_man = None, None
        left = sorted(self.orders)
        self.orders.clear()
        self.audit.write(self.clock_ns(), "follower", reason=reason, orders_left=left)

    def _ours(self, venue_orders: list[dict]) -> list[str]:
        """The client ids this adapter may cancel: its own and those of instances found dead (decision 028)."""
        return [o["clientOrderId"] for o in venue_orders
                if self.instances.mine_or_dead(o.get("clientOrderId"))]  # fmt: skip

    async def _cancel_all(self) -> StopOutcome:
        """Cancel every open order of ours (listed by the venue or known here) within stop_timeout_s (live.shutdown).

        The stop's path (SIGTERM, a failed task) and the kill switch's; the outcome is also `stop_outcome`.
        """
        out = await cancel_everything(self.ex, self.port, self.audit, self.clock_ns, self.symbol, self._ours,
                                      list(self.orders), self.cfg.stop_timeout_s,
                                      leading=None if self.leader is None else self.may_act)  # fmt: skip
        for cid in list(self.orders):
            if cid not in out.left:
                self.orders.pop(cid, None)
        self.stop_outcome = out
        return out


def _one_line(e: BaseException, redact) -> str:
    """An exception as one short line for an operator: its class and the start of its text, `redact`ed whole first."""
    text = " ".join(redact(str(e)).split())
    return f"{type(e).__name__}: {text[:200]}" if text else type(e).__name__


async def _together(coros: list[Coroutine]) -> None:
    """Run the coroutines at once and wait for all; the first in this task, so its request leaves at once.

    The others become tasks only once the first waits for the network (a callback the event loop
    runs then): making them first would put their cost, and a task of its own would put a trip round
    the event loop, before the first request. If the first returns False without waiting (the port
    refused it: breaker open, budget used up), the others never start. If one raises, those still
    running are cancelled.
    """
    if not coros:
        return
    first, rest = coros[0], coros[1:]
    started: list[asyncio.Task] = []

    def start_rest() -> None:
        started.extend(asyncio.create_task(c) for c in rest)

    handle = asyncio.get_running_loop().call_soon(start_rest) if rest else None
    try:
        result = await first
        if handle is not None and not started:  # the first never waited: the others are not started yet
            handle.cancel()
            if result is False:
                return
            start_rest()
        if started:
            await asyncio.gather(*started)
    finally:
        if handle is not None and not started:  # never started (refused, or the first raised at once)
            handle.cancel()
            for c in rest:
                c.close()
        for t in started:
            t.cancel()  # no-op for those done


async def run_for(cfg: LiveConfig, seconds: float, key: str = "", secret: str = "", **adapter_kw) -> LiveAdapter:
    """Run an adapter for `seconds`, stop it (its orders cancelled), close its client and audit trail; return it."""
    ex = make_client(cfg, key, secret)
    audit = AuditLog(cfg.state_dir / "audit.jsonl", secrets=(key, secret), max_delay_s=None)  # see housekeeping
    try:
        adapter = LiveAdapter(cfg, ex, audit, **adapter_kw)
        task = asyncio.create_task(adapter.run())
        await asyncio.sleep(seconds)
        adapter.stop()
        await asyncio.wait_for(task, 60)
    finally:
        await ex.close()
        audit.close()
    return adapter
