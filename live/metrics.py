"""Prometheus metrics of the live adapter, read from its own state when scraped (decision 036).

Nothing here runs per decision or per event: `AdapterCollector.collect` reads, at scrape time, what
the adapter keeps anyway (its decision count and latencies, the audit trail's lines per event, the
ledger, the budget, the breaker, the gates' and the port's refusal counts, the quantitative rules'
tracker, the rollout mode, the kill switch). The decision-latency histogram folds the latencies the
adapter recorded since the last scrape into cumulative buckets then. Each adapter has a registry of
its own (`adapter_registry`), never the process-wide default, so a process (a test) can hold several.

`MetricsServer` serves one registry at `/metrics` on the adapter's event loop (aiohttp), bound to a
loopback address only (`LiveConfig.metrics_addr`). A scrape waits for the adapter's quiet stretch
(`LiveAdapter.quiet`: the decision loop asleep with the next decision at least 20 ms away, as
housekeeping does) with at least `QUIET_NEEDED_S` of it left before it reads anything, at most
`QUIET_WAIT_S`: reading and rendering take about a millisecond, which must not land in a
decision's run-up. The same text goes to `<state_dir>/metrics.prom` when the adapter stops.

Every adapter series carries `strategy` and `symbol`. Money is in the settle currency (`_settle`,
USDT for BTCUSDT; `grinder_adapter_info` names it), positions in base units (`_base`: contracts for
an inverse market), the budget's notional in quote currency (`_quote`). Names and meanings:
docs/live.md, "Metrics"; with `[model]`, the model's `grinder_model_*` and `grinder_shadow_*`
(live.model's counts): docs/ml.md, "Models in the decision path".
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import math
import os
from collections import deque
from collections.abc import Iterable

from aiohttp import web
from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

from grinder.book.l2 import EMPTY
from grinder.core.gates import REASONS
from grinder.core.ledger import FEES, POSITION, REALIZED, gate_inputs
from grinder.core.qrules import COUNTS, RATIOS
from grinder.errors import ConfigError
from grinder.live import kill as killswitch
from grinder.live.port import refusal_kind
from grinder.live.retry import CLOSED, HALF_OPEN, OPEN
from grinder.live.rollout import MODES
from grinder.venue.metrics import CONTENT_TYPE  # the classic text format generate_latest writes

# Decision latency bucket bounds (seconds): 10 us to 100 ms; the target is p99 under 1 ms (docs/live.md).
LATENCY_BUCKETS_S = (1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 1e-1)
# Which element of a `LiveAdapter.latencies` entry each stage is (ns from the inputs being ready).
LATENCY_STAGES = {"decided": 1, "request": 2}
# Reasons a create did not become an order, besides the port's refusals (`refusal_kind`): audit events.
REJECTED_EVENTS = {"venue": "create_rejected", "failed": "create_failed", "book_stale": "creates_dropped"}
REFUSAL_KINDS = ("breaker_open", "budget_actions", "budget_notional", "state_not_recorded", "not_leader", "other")
MISMATCH_KINDS = ("orphan", "missing", "position_drift", "other_instance")
QUIET_WAIT_S = 1.0  # a scrape waits at most this long for the adapter's quiet stretch, then reads anyway
QUIET_NEEDED_S = 0.005  # ... and only starts in one with this much left (reading and rendering take about 1 ms)
# Without leader election (no `[ha]`) the one instance leads, with no token (live.leader).
IS_LEADER, FENCING_TOKEN = 1, 0


class LatencyFold:
    """Cumulative histogram buckets over an adapter's `latencies` deque, brought up to date by `fold`.

    The deque keeps the most recent entries (it drops the oldest once full); `fold` takes the entries
    appended since its last call by walking back from the newest to the last one it folded (the same
    object: it is held here, so never reused), nothing per decision.
    """

    def __init__(self, bounds: tuple[float, ...] = LATENCY_BUCKETS_S):
        self.bounds = bounds
        self.counts = {s: [0] * (len(bounds) + 1) for s in LATENCY_STAGES}  # per bucket, +Inf last
        self.sums = dict.fromkeys(LATENCY_STAGES, 0.0)
        self._last: tuple | None = None

    def fold(self, latencies: deque) -> int:
        """Add the entries appended since the last call; returns how many."""
        new = []
        for entry in reversed(latencies):
            if entry is self._last:
                break
            new.append(entry)
        if new:
            self._last = new[0]
        for entry in new:
            for stage, i in LATENCY_STAGES.items():
                s = entry[i] / 1e9
                self.counts[stage][bisect.bisect_left(self.bounds, s)] += 1
                self.sums[stage] += s
        return len(new)

    def buckets(self, stage: str) -> list[tuple[str, float]]:
        """(le, cumulative count) pairs, +Inf last, as HistogramMetricFamily takes them."""
        out, total = [], 0
        for le, n in zip((*map(repr, self.bounds), "+Inf"), self.counts[stage], strict=True):
            total += n
            out.append((le, total))
        return out


class AdapterCollector:
    """A `prometheus_client` collector over one `grinder.live.adapter.LiveAdapter`, read at scrape time."""

    def __init__(self, adapter):
        self.a = adapter
        self.latency = LatencyFold()

    def collect(self) -> Iterable[Metric]:
        a = self.a
        now_ns = a.clock_ns()
        base = [a.strategy.name, a.cfg.symbol]
        names = ["strategy", "symbol"]

        def fam(kind, name: str, doc: str, extra: tuple[str, ...] = ()):
            return kind(name, doc, labels=[*names, *extra])

        def one(kind, name: str, doc: str, value: float):
            m = fam(kind, name, doc)
            m.add_metric(base, value)
            return m

        events = getattr(a.audit, "events", {})
        port = getattr(a, "port", None)
        breaker = port.breaker if port is not None else a.breaker
        info = fam(GaugeMetricFamily, "grinder_adapter_info", "The adapter's settings: 1 (values in the labels).",
                   ("mode", "rollout", "epoch", "settle"))  # fmt: skip
        info.add_metric([*base, a.cfg.mode, a.cfg.rollout, a.ids.epoch, a.settle], 1)
        yield info

        # Decisions and their latency.
        yield one(CounterMetricFamily, "grinder_decisions", "Decisions taken (on a fresh book).", a.decisions)
        self.latency.fold(a.latencies)
        lat = fam(HistogramMetricFamily, "grinder_decision_latency_seconds",
                  "Decisions that sent an order: from their inputs being ready (depth update or clock) to the "
                  "intents (stage=decided) or the first order request handed to the connection (stage=request).",
                  ("stage",))  # fmt: skip
        for stage in LATENCY_STAGES:
            lat.add_metric([*base, stage], self.latency.buckets(stage), self.latency.sums[stage])
        yield lat

        # Orders and fills (the audit trail's lines, counted as they are written).
        yield one(CounterMetricFamily, "grinder_orders_created", "Creates the venue acknowledged.",
                  events.get("created", 0))  # fmt: skip
        yield one(CounterMetricFamily, "grinder_orders_cancelled", "Cancels the venue confirmed (one by one).",
                  events.get("cancelled", 0))  # fmt: skip
        rej = fam(CounterMetricFamily, "grinder_orders_rejected",
                  "Creates that did not become an order, by reason: venue (rejected), failed (gave up), "
                  "book_stale (dropped), or refused before sending (breaker_open, budget_*, state_not_recorded).",
                  ("reason",))  # fmt: skip
        for reason, event in REJECTED_EVENTS.items():
            rej.add_metric([*base, reason], events.get(event, 0))
        refused = dict.fromkeys(REFUSAL_KINDS, 0)
        if port is not None:
            for kind, n in port.refused_total.items():
                refused[kind] = refused.get(kind, 0) + n
            for reason, n in port._refused.items():  # counted since the last creates_refused line
                kind = refusal_kind(reason)
                refused[kind] = refused.get(kind, 0) + n
        for kind, n in refused.items():
            rej.add_metric([*base, kind], n)
        yield rej
        yield one(CounterMetricFamily, "grinder_fills", "Fills booked into the ledger.", events.get("fill", 0))
        # The strategy's taker orders (IOC, market): sent, and each one's outcome (live.adapter.TAKER_RESULTS).
        yield one(CounterMetricFamily, "grinder_taker_orders_sent", "Taker orders (IOC, market) handed to the venue.",
                  getattr(a, "takers_sent", 0))  # fmt: skip
        takers = fam(CounterMetricFamily, "grinder_taker_orders",
                     "The strategy's taker orders by result: filled, expired (a remainder the book could not fill), "
                     "rejected (by the venue), refused (not sent), unknown (no answer; left to reconciliation).",
                     ("result",))  # fmt: skip
        for result, n in getattr(a, "taker_results", {}).items():
            takers.add_metric([*base, result], n)
        yield takers
        yield one(GaugeMetricFamily, "grinder_open_orders", "Orders of ours the adapter holds open or in flight.",
                  len(a.orders))  # fmt: skip

        # The ledger (session figures: zero at start) and the position.
        bb, ba = a.top[0], a.top[1]
        tick = getattr(a, "tick", 0.0)
        if tick and bb != EMPTY and ba != EMPTY:
            _, equity, _ = gate_inputs(a.led, bb, ba, EMPTY, tick, a.funding_paid, a.inverse, a.contract_size)
        else:
            equity = float(a.led[REALIZED] - a.led[FEES]) - a.funding_paid
        yield one(GaugeMetricFamily, "grinder_position_base", "Position, base units (+ long).",
                  float(a.led[POSITION]))  # fmt: skip
        yield one(GaugeMetricFamily, "grinder_equity_settle",
                  "Equity since start as the gates read it: realized + unrealized at the mid - fees - funding.",
                  equity)  # fmt: skip
        yield one(GaugeMetricFamily, "grinder_realized_pnl_settle", "Realized PnL since start.",
                  float(a.led[REALIZED]))  # fmt: skip
        yield one(GaugeMetricFamily, "grinder_fees_settle", "Commissions the venue charged since start.",
                  float(a.led[FEES]))  # fmt: skip

        # The daily budget.
        actions_left, notional_left = a.budget.remaining(now_ns)
        lim = a.budget.limits
        yield one(GaugeMetricFamily, "grinder_budget_actions_remaining", "Order actions left today (UTC).",
                  actions_left)  # fmt: skip
        yield one(GaugeMetricFamily, "grinder_budget_actions_limit", "Order actions per UTC day.", lim.max_actions)
        yield one(GaugeMetricFamily, "grinder_budget_notional_remaining_quote", "Notional left today (UTC).",
                  notional_left)  # fmt: skip
        yield one(GaugeMetricFamily, "grinder_budget_notional_limit_quote", "Notional per UTC day.",
                  lim.max_notional)  # fmt: skip

        # The circuit breaker and the book.
        state = breaker.state if breaker is not None else CLOSED
        br = fam(GaugeMetricFamily, "grinder_breaker_state", "The circuit breaker: 1 for its state.", ("state",))
        for s in (CLOSED, OPEN, HALF_OPEN):
            br.add_metric([*base, s], int(s == state))
        yield br
        age = a.monotonic() - a.book_ts if a.book_ts else math.inf
        yield one(GaugeMetricFamily, "grinder_book_age_seconds", "Since the last book update (+Inf: no synced book).",
                  age)  # fmt: skip
        yield one(GaugeMetricFamily, "grinder_book_stale", "1 while decisions are held: no synced book, or too old.",
                  int(not a._book_fresh()))  # fmt: skip

        # Reconciliation.
        yield one(CounterMetricFamily, "grinder_reconciliations", "Reconciliations with the venue.",
                  events.get("reconcile", 0))  # fmt: skip
        mis = fam(CounterMetricFamily, "grinder_reconcile_mismatches", "Mismatches reconciliation found, by kind.",
                  ("kind",))  # fmt: skip
        for kind in (*MISMATCH_KINDS, *sorted(set(a.mismatches) - set(MISMATCH_KINDS))):
            mis.add_metric([*base, kind], a.mismatches.get(kind, 0))
        yield mis
        drift = a.last_drift
        yield one(GaugeMetricFamily, "grinder_position_drift_base",
                  "The venue's position less the ledger's at the last reconciliation (before adopting it).",
                  drift.position if drift is not None else 0.0)  # fmt: skip
        wallet = drift.wallet if drift is not None and drift.wallet is not None else math.nan
        yield one(GaugeMetricFamily, "grinder_wallet_drift_settle",
                  "The venue's wallet change less the ledger's realized - fees - funding (NaN: not known).",
                  wallet)  # fmt: skip
        yield one(GaugeMetricFamily, "grinder_lot_size_base", "The market's lot (a drift of half of it counts).",
                  getattr(a, "lot", 0.0))  # fmt: skip

        # Gates and the quantitative rules.
        blocks = fam(CounterMetricFamily, "grinder_gate_blocks", "Intents the gates blocked, by reason.", ("reason",))
        for reason in REASONS:
            blocks.add_metric([*base, reason], a.blocked_total.get(reason, 0) + a._blocked.get(reason, 0))
        yield blocks
        values = a.qrules.ratios(now_ns)
        limits = a.qrules.rules.thresholds()
        ratio = fam(
            GaugeMetricFamily,
            "grinder_quant_rule_ratio",
            "Binance's quantitative rules over the last 10 minutes (NaN until a ratio applies).",
            ("rule",),
        )
        ratio_max = fam(GaugeMetricFamily, "grinder_quant_rule_ratio_max", "A ratio at or above this breaks the rule.",
                        ("rule",))  # fmt: skip
        for rule in RATIOS:
            ratio.add_metric([*base, rule], values[rule])
            ratio_max.add_metric([*base, rule], limits[rule])
        yield ratio
        yield ratio_max
        orders = fam(GaugeMetricFamily, "grinder_quant_rule_orders", "Orders sent in the window (1d: the UTC day).",
                     ("window",))  # fmt: skip
        orders_max = fam(GaugeMetricFamily, "grinder_quant_rule_orders_max", "The venue's limit (0: none).",
                         ("window",))  # fmt: skip
        for name in COUNTS:
            window = name.removeprefix("orders_")
            orders.add_metric([*base, window], values[name])
            orders_max.add_metric([*base, window], limits[name])
        yield orders
        yield orders_max

        # Rollout, kill switch, leadership.
        mode = fam(GaugeMetricFamily, "grinder_rollout_mode", "The reconciliation rollout mode: 1 for the mode.",
                   ("mode",))  # fmt: skip
        for m in MODES:
            mode.add_metric([*base, m], int(m == a.rollout.mode))
        yield mode
        engaged = a.kill_requested is not None or os.path.lexists(killswitch.kill_path(a.cfg.state_dir))
        yield one(GaugeMetricFamily, "grinder_kill_switch_engaged", "1 once the kill switch is pulled.", int(engaged))
        lead = a.leader
        leading = IS_LEADER if lead is None else int(lead.valid())
        token = FENCING_TOKEN if lead is None or not leading else lead.token
        yield one(GaugeMetricFamily, "grinder_is_leader",
                  "1: this instance holds the lease of the strategy and symbol (without [ha]: always 1).",
                  leading)  # fmt: skip
        yield one(GaugeMetricFamily, "grinder_fencing_token",
                  "The fencing token of the lease this instance holds (0: none, or no [ha]).", token)  # fmt: skip

        # The model in the decision path (live.model), with [model] only.
        m = getattr(a, "model", None)
        if m is not None:
            yield from self._model(m, fam, one, base)

    @staticmethod
    def _model(m, fam, one, base: list[str]) -> Iterable[Metric]:
        ld = m.loaded
        info = fam(GaugeMetricFamily, "grinder_model_info",
                   "The registered model in the decision path, pinned at start: 1 (what it is in the labels).",
                   ("model", "version", "alias", "sha256", "feature_set", "mode", "model_strategy",
                    "predictor"))  # fmt: skip
        info.add_metric([*base, ld.name, ld.version, ld.alias or "", ld.model_sha256, ld.feature_set.version, m.mode,
                         m.driven.name, m.predictor], 1)  # fmt: skip
        yield info
        yield one(GaugeMetricFamily, "grinder_model_forecast",
                  "The model's last forecast (its first output; NaN: none, e.g. while the features warm up).",
                  m.last_forecast)  # fmt: skip
        mode = fam(GaugeMetricFamily, "grinder_model_strategy_mode",
                   "The model-driven strategy's mode after the last decision: 1 for the mode.", ("mode",))  # fmt: skip
        for name in m.driven.modes:
            mode.add_metric([*base, name], int(name == m.mode_name))
        yield mode
        yield one(CounterMetricFamily, "grinder_model_decisions", "Decisions the model took part in.", m.decisions)
        yield one(CounterMetricFamily, "grinder_model_forecasts_missing",
                  "Decisions with no forecast (NaN: the model strategy pauses).", m.missing)  # fmt: skip
        yield one(CounterMetricFamily, "grinder_model_predictor_mismatches",
                  "Checks where the compiled trees differed from xgboost (then xgboost predicts).",
                  m.mismatches)  # fmt: skip
        if m.shadow is not None:
            yield one(CounterMetricFamily, "grinder_shadow_decisions",
                      "Decisions the shadow strategy took (it sends none).", m.shadow_decisions)  # fmt: skip
            yield one(CounterMetricFamily, "grinder_shadow_target_differences",
                      "Decisions where the shadow's target quotes differ from the trading strategy's.",
                      m.targets_differ)  # fmt: skip


def adapter_registry(adapter) -> CollectorRegistry:
    """A registry of its own for `adapter`: its collector and the process's (CPU, memory, open files)."""
    reg = CollectorRegistry(auto_describe=False)
    reg.register(AdapterCollector(adapter))
    reg.register(ProcessCollector(registry=None))
    return reg


def exposition(registry: CollectorRegistry) -> bytes:
    """The registry as Prometheus's text format."""
    return generate_latest(registry)


class MetricsServer:
    """`/metrics` of one registry on `addr:port`, on the running event loop; a scrape waits for a quiet stretch.

    `quiet` is set during the owner's quiet stretches and `quiet_left_s()` says how much of the current one
    is left (seconds); None: never wait.
    """

    def __init__(self, registry: CollectorRegistry, addr: str, port: int, quiet: asyncio.Event | None = None,
                 quiet_left_s=None, field: str = "metrics_port"):  # fmt: skip
        self.registry, self.addr, self.port, self.field = registry, addr, port, field
        self.quiet, self.quiet_left_s = quiet, quiet_left_s or (lambda: math.inf)
        self.scrapes = 0  # scrapes answered
        self.scraped = asyncio.Event()  # set at each answered scrape (a waiter clears it first)
        self._runner: web.AppRunner | None = None
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        self._app = app

    async def start(self) -> int:
        """Bind and serve; returns the port (the one chosen when `port` is 0). ConfigError if it cannot bind."""
        runner = web.AppRunner(self._app, handle_signals=False, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, self.addr, self.port)
        try:
            await site.start()
        except OSError as e:
            await runner.cleanup()
            why = os.strerror(e.errno) if e.errno else str(e)  # asyncio's own text repeats the address
            raise ConfigError(f"{self.field} {self.port}: cannot listen on {self.addr}:{self.port}: {why}") from None
        self._runner = runner
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self.port

    async def close(self) -> None:
        """Stop listening and close every connection (idempotent)."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def _quiet_stretch(self) -> None:
        """Return in a quiet stretch with QUIET_NEEDED_S left, or after QUIET_WAIT_S whatever the adapter does."""
        if self.quiet is None:
            return
        loop = asyncio.get_running_loop()
        give_up = loop.time() + QUIET_WAIT_S
        while (wait := give_up - loop.time()) > 0:
            if not self.quiet.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.quiet.wait(), wait)
                continue
            left = self.quiet_left_s()
            if left >= QUIET_NEEDED_S:
                return
            await asyncio.sleep(min(max(left, 0.0) + 0.001, wait))  # nearly over: wait for the next one

    async def _metrics(self, request: web.Request) -> web.Response:
        await self._quiet_stretch()
        body = generate_latest(self.registry)
        self.scrapes += 1
        self.scraped.set()
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})
