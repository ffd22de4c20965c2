"""Drive the compiled event loop over a tape: clocks, latency and fee settings in, a result out."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, Field

from grinder.book.l2 import EMPTY
from grinder.core.depth import needed_levels
from grinder.core.gates import REASONS, GateConfig, new_gate_state
from grinder.core.ledger import AVG_ENTRY, CASH, FEES, POSITION, REALIZED, equity, new_ledger, unrealized
from grinder.core.qrules import H_OVERFLOW as QR_OVERFLOW
from grinder.core.qrules import OUT as QR_OUT
from grinder.core.qrules import new_qr_state
from grinder.core.step import gate_configs
from grinder.core.strategy import RECOMPUTE, Strategy, kernel_handle
from grinder.data.coverage import DEFAULT_MAX_GAP_NS
from grinder.data.instruments import Instrument
from grinder.data.tape import Series, Tape
from grinder.errors import ConfigError, DataError
from grinder.sim.clock import decision_clock, decision_segments, local_at_decisions, segment_steps
from grinder.sim.engine import ExchangeBook, Levels, LocalBook, TapeRows, Venue, run
from grinder.sim.exchange_side import block_extremes
from grinder.sim.local_depth import depth_at_decisions
from grinder.sim.queue import PROB_POWER, RISK_AVERSE
from grinder.sim.records import COUNTERS
from grinder.sim.replay import NO_KEYS, NO_QTY, Replay, load_or_prepare

# An order latency above an hour is a unit mistake, not a latency; the bound also keeps every
# local time + latency within int64.
MAX_LATENCY_NS = 3_600 * 10**9


class VenueConfig(BaseModel):
    """How the simulated venue behaves: latencies in ns, fees as fractions, the queue and fill models."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    entry_latency_ns: int = Field(10_000_000, ge=0, le=MAX_LATENCY_NS, description="local send -> exchange receipt")
    response_latency_ns: int = Field(10_000_000, ge=0, le=MAX_LATENCY_NS, description="exchange event -> local receipt")
    latency_file: str | None = Field(
        None, description="Parquet/CSV latency series (ts, entry_ns, response_ns); replaces the constants"
    )
    feed_latency_floor_ns: int = Field(0, ge=0, description="minimum local - exchange time after correction")
    local_clock_offset_ns: int | None = Field(None, description="add this to local times instead of estimating it")
    step_ns: int = Field(100_000_000, gt=0, description="decision interval, local time")
    queue: str = Field("risk_averse", pattern="^(risk_averse|power)$")
    queue_power: float = Field(3.0, gt=0)
    partial_fills: bool = Field(False, description="fill by the traded quantity beyond our queue, in lots")
    maker_fee: float | None = Field(None, ge=-0.01, le=0.01, description="default: the instrument's")
    taker_fee: float | None = Field(
        None, ge=-0.01, le=0.01, description="default: the instrument's; paid per level an IOC or market order takes"
    )
    market_walk_ticks: int = Field(
        0, ge=0, description="a market order takes levels at most this many ticks through the touch (0: no limit)"
    )


@dataclass(frozen=True)
class BacktestResult:
    """Fills, per-decision records, the final ledger and a digest that identifies the run.

    Money is in the settle currency (`settle`): quote for linear contracts, the coin for inverse.
    """

    fills: dict[str, np.ndarray]  # ts_exch, ts_local, side, price, price_ticks, qty, maker, fee, order_id, level, ...
    steps: dict[str, np.ndarray]  # ts, mid, position, balance, fees, realized, equity, open_orders, quotes, mode
    position: float
    balance: float  # cash: what fills moved (see grinder.core.ledger)
    fees: float
    counters: dict[str, int]
    digest: str
    funding: dict[str, np.ndarray]  # ts, position, amount (settle currency; positive = paid) of each settlement
    avg_entry: float = 0.0
    realized: float = 0.0
    settle: str = "quote"
    inverse: bool = False
    contract_size: float = 1.0
    # Binance's quantitative rules (grinder.core.qrules): with record="all", ts and each of qrules.OUT
    # at every step (NaN while a ratio does not apply); the largest of each over the run, always.
    qrules: dict[str, np.ndarray] = field(default_factory=dict)
    qrules_max: dict[str, float] = field(default_factory=dict)

    @property
    def funding_paid(self) -> float:
        """Funding paid over the run, settle currency (negative when received)."""
        return float(self.funding["amount"].sum())

    @property
    def last_mid(self) -> float:
        """The last mid price the strategy saw (NaN if none)."""
        mid = self.steps["mid"]
        if len(mid) and not np.isnan(mid[-1]):
            return float(mid[-1])  # the usual case, without a pass over every step
        ok = mid[~np.isnan(mid)]
        return float(ok[-1]) if len(ok) else float("nan")

    @property
    def unrealized(self) -> float:
        """PnL of the final position marked at the last mid, settle currency."""
        led = self._ledger()
        return float(unrealized(led, self.last_mid, self.inverse, self.contract_size)) if self.position else 0.0

    @property
    def equity(self) -> float:
        """Cash plus the position marked at the last mid, minus fees and funding (settle currency)."""
        return float(equity(self._ledger(), self.last_mid, self.funding_paid, self.inverse, self.contract_size))

    def _ledger(self) -> np.ndarray:
        led = new_ledger()
        led[POSITION], led[AVG_ENTRY], led[REALIZED] = self.position, self.avg_entry, self.realized
        led[CASH], led[FEES] = self.balance, self.fees
        return led


@dataclass(frozen=True)
class LatencySeries:
    """Order latencies over time: at local time ts[i] entry takes entry_ns[i], responses response_ns[i]."""

    ts: np.ndarray
    entry_ns: np.ndarray
    response_ns: np.ndarray

    @classmethod
    def constant(cls, entry_ns: int, response_ns: int) -> LatencySeries:
        """The same latencies all the time."""
        return cls(np.zeros(1, np.int64), np.array([entry_ns], np.int64), np.array([response_ns], np.int64))

    @classmethod
    def for_venue(cls, venue: VenueConfig) -> LatencySeries:
        """The venue's latencies: its latency_file when it names one, else its constants."""
        if venue.latency_file:
            return cls.read(venue.latency_file)
        return cls.constant(venue.entry_latency_ns, venue.response_latency_ns)

    @classmethod
    def read(cls, path: str | Path) -> LatencySeries:
        """Read and check a latency file (Parquet or CSV; docs/data/latency.md); errors name the file."""
        path = Path(path)
        if not path.is_file():
            raise DataError("no such latency file", str(path))
        try:
            if path.suffix == ".csv":
                import pyarrow.csv as pacsv

                t = pacsv.read_csv(path)
            else:
                t = pq.read_table(path)
        except (pa.ArrowInvalid, OSError) as e:
            raise DataError(f"not a readable latency table: {str(e).splitlines()[0]}", str(path)) from None
        missing = [c for c in ("ts", "entry_ns", "response_ns") if c not in t.column_names]
        if missing:
            raise DataError(f"latency table lacks column(s) {', '.join(missing)}", str(path))
        if t.num_rows == 0:
            raise DataError("latency table is empty", str(path))
        cols = {}
        for c in ("ts", "entry_ns", "response_ns"):
            col = t.column(c)
            if col.null_count:
                raise DataError(f"latency column {c} has nulls", str(path))
            if not (pa.types.is_integer(col.type) or pa.types.is_floating(col.type)):
                raise DataError(f"latency column {c} is {col.type}, not a number of ns", str(path))
            a = col.to_numpy()
            if not np.isfinite(a).all():
                raise DataError(f"latency column {c} has NaN or infinite values", str(path))
            if (np.abs(a) >= 2**63).any():  # astype would wrap them silently
                raise DataError(f"latency column {c} has values beyond int64", str(path))
            cols[c] = a.astype(np.int64)
        if (cols["entry_ns"] < 0).any() or (cols["response_ns"] < 0).any():
            raise DataError("latencies must not be negative", str(path))
        if (cols["entry_ns"] > MAX_LATENCY_NS).any() or (cols["response_ns"] > MAX_LATENCY_NS).any():
            raise DataError(f"latencies must not exceed an hour ({MAX_LATENCY_NS} ns)", str(path))
        if (np.diff(cols["ts"]) <= 0).any():
            bad = int(np.flatnonzero(np.diff(cols["ts"]) <= 0)[0]) + 1
            raise DataError(f"latency ts must increase strictly (row {bad})", str(path))
        return cls(cols["ts"], cols["entry_ns"], cols["response_ns"])


MAX_CLOCK_LEAD_NS = 3_600 * 10**9  # local ahead of exchange by more than this is a clock, not a latency


def corrected_local_times(tape: Tape, floor_ns: int = 0) -> np.ndarray:
    """Local receive times shifted so no event is received before the exchange sent it (+ floor).

    Recorder clocks drift (the real captures' recorders ran behind the exchange), so the raw
    difference is not a latency; one constant offset keeps the recorded jitter and order (decision 034).
    """
    lag = tape.ts_local - tape.ts_exch
    if len(lag) and int(lag.min()) > MAX_CLOCK_LEAD_NS:
        # No feed takes an hour: the recorder's clock is not the exchange's (a replayed venue
        # streams old exchange times). Guessing would put every decision hours from the data.
        lead = int(lag.min())
        raise DataError(
            f"{tape.instrument.symbol}: every local time is at least {lead / 3.6e12:.1f} h after its exchange time; "
            f"set [venue] local_clock_offset_ns = {-lead} (or the offset the recording printed)"
        )
    offset = max(0, floor_ns - int(lag.min())) if len(lag) else 0
    return tape.ts_local + offset


def digest_of(fills: dict[str, np.ndarray], final: tuple[float, float, float], source: str = "") -> str:
    """sha256 over every fill column and the final position, balance and fees, and the signals' `source`
    (the model and feature set that drove the run; nothing for a run without signals)."""
    return digest_of_columns(((k, [np.ascontiguousarray(fills[k]).tobytes()]) for k in sorted(fills)), final, source)


def digest_of_columns(columns, final: tuple[float, float, float], source: str = "") -> str:
    """`digest_of` from (name, the column's bytes in pieces) pairs in name order: a run whose fills
    went out as it ran (`chunked.run_chunked`'s `fills_sink`) gives the digest of its fills read back."""
    h = hashlib.sha256()
    for k, pieces in columns:
        h.update(k.encode())
        for b in pieces:
            h.update(b)
    h.update(np.array(final, np.float64).tobytes())
    if source:
        h.update(b"signals:" + source.encode())
    return h.hexdigest()


@dataclass(frozen=True)
class SignalSeries:
    """A strategy's signals over a run (`Strategy.signals`): from local time ts[i] (ns) on, row values[i].

    ts: int64 [n], sorted; values: float64 [n, width], one column per signal the strategy reads
    (NaN: none known). `source` names what made them (a model's name, version and hash, the feature
    set's hash) and enters the run's digest, so another model gives another digest.
    """

    ts: np.ndarray
    values: np.ndarray
    source: str

    def __post_init__(self) -> None:
        ts, values = np.asarray(self.ts), np.asarray(self.values)
        if ts.ndim != 1 or values.ndim != 2 or values.shape[0] != ts.shape[0]:
            raise ConfigError(f"signals: {ts.shape[0] if ts.ndim == 1 else ts.shape} times for values of shape "
                              f"{values.shape}; need one row of values per time")  # fmt: skip
        if ts.size > 1 and (np.diff(ts) < 0).any():
            raise ConfigError("signals: times must be sorted")
        if not self.source:
            raise ConfigError("signals: a source (what made them) is required; it enters the run's digest")

    @property
    def width(self) -> int:
        """Signals per row."""
        return int(np.asarray(self.values).shape[1])

    def engine_args(self) -> tuple[np.ndarray, np.ndarray, int]:
        """The engine's `Signals` group: a NaN row from the earliest time first, then the rows, flat."""
        w = self.width
        ts = np.concatenate(([np.iinfo(np.int64).min], np.asarray(self.ts, np.int64)))
        values = np.concatenate((np.full(w, np.nan), np.asarray(self.values, np.float64).ravel()))
        return ts, values, w


NO_SIGNALS = (np.array([np.iinfo(np.int64).min], np.int64), np.empty(0), 0)  # engine args: a strategy without


def funding_settlements(tape: Tape) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(time ns, rate, mark price) of each funding settlement inside the tape's mark-price series.

    The rate is the last one published before the settlement time, the mark price the last one at
    or before it; settlements outside the series' time span are not known and not applied.
    """
    return settlements_of(tape.funding)


def settlements_of(f: Series) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`funding_settlements` of a tape's funding series (a lake selection's, for chunked runs)."""
    if len(f) == 0:
        return np.empty(0, np.int64), np.empty(0), np.empty(0)
    ts = f.ts_exch
    times = np.unique(f.next_funding_ts)
    times = times[(times > ts[0]) & (times <= ts[-1])]
    rate = f.funding_rate[np.searchsorted(ts, times, "left") - 1]
    mark = f.mark_price[np.searchsorted(ts, times, "right") - 1]
    return times.astype(np.int64), rate.astype(np.float64), mark.astype(np.float64)


def prepare(tape: Tape, venue: VenueConfig, cache_dir: Path | str | None = None) -> Replay:
    """The per-tape replay (book facts, local view) for this venue's local clock; reuse it across runs.

    With `cache_dir` (e.g. `grinder.sim.replay_cache.cache_root(lake_root)`) it is kept on disk and
    later processes open it memory-mapped instead of rebuilding it (decision 006).
    """
    return load_or_prepare(tape, local_times(tape, venue), cache_dir)


def local_times(tape: Tape, venue: VenueConfig) -> np.ndarray:
    """The tape's local receive times (int64 ns, exchange order) on this venue's local clock: the given
    offset, or the correction `corrected_local_times` estimates."""
    if venue.local_clock_offset_ns is None:
        return corrected_local_times(tape, venue.feed_latency_floor_ns)
    return tape.ts_local + venue.local_clock_offset_ns


def row_blocks(tape: Tape, replay: Replay) -> tuple[np.ndarray, np.ndarray]:
    """Per block of rows, the highest and lowest prices (ticks) that can reach a resting order (see the engine)."""
    c = np.ascontiguousarray
    return block_extremes(c(tape.kind), c(tape.side), c(tape.price_ticks), replay.best_bid, replay.best_ask,
                          replay.synced)  # fmt: skip


# Above this many decisions the local view is looked up as the loop goes instead of tabulated first.
MAX_TABULATED_DECISIONS = 20_000_000


def decision_inputs(
    tape: Tape, replay: Replay, venue: VenueConfig, start_ns: int | None = None, depth_levels: int = 0
) -> tuple[np.ndarray, ...]:
    """The steps of the decision clock that are taken (clock.decision_segments: none inside a
    coverage gap), then the local view at each of them (clock.local_at_decisions, or empty arrays
    when there are too many to tabulate), then the local book's first `depth_levels` levels a side
    at each (grinder.sim.local_depth; one empty row for 0); sweeps compute them once per window.

    `start_ns` defaults to the tape's `window_start_ns`, as in `run_backtest`.
    """
    if start_ns is None:
        start_ns = tape.window_start_ns
    ts = np.ascontiguousarray(tape.ts_exch)
    r = replay
    segments = decision_segments(ts, r.local_ts, int(start_ns), venue.step_ns, STALE_NS)
    if segment_steps(segments) > MAX_TABULATED_DECISIONS:
        if depth_levels:
            raise ConfigError(f"{segment_steps(segments):,} decisions: too many to tabulate the book's depth at "
                              f"each (at most {MAX_TABULATED_DECISIONS:,}); run a shorter window or a longer "
                              "step")  # fmt: skip
        e = np.empty(0, np.int64)
        return segments, e, e, e, np.empty(0), np.empty(0), np.empty(0, np.bool_), NO_DEPTH_TABLE
    t0, _, _ = decision_clock(ts, r.local_ts, int(start_ns), venue.step_ns)
    local = local_at_decisions(segments, r.local_ts, r.local_best_bid, r.local_best_ask, r.local_best_bid_qty,
                               r.local_best_ask_qty, r.local_synced, t0, venue.step_ns, STALE_NS)  # fmt: skip
    depth = NO_DEPTH_TABLE
    if depth_levels:
        depth = depth_at_decisions(tape, local_times(tape, venue), local[0], depth_levels)
    return segments, *local, depth


# The depth table of a run that reads none: one empty row (grinder.sim.engine.DecisionInputs).
NO_DEPTH_TABLE = np.zeros((1, 0, 4))


def _check_depth(decisions: tuple, levels: int) -> None:
    """Decision inputs given by a caller carry the book's depth a run reads (`decision_inputs`' depth_levels)."""
    if len(decisions) != 8:
        raise ConfigError("decisions: expected the 8 arrays decision_inputs returns")
    have = decisions[7].shape[1] if decisions[7].shape[0] >= len(decisions[1]) else 0
    if levels > have:
        raise ConfigError(f"decisions carry {have} levels of the book's depth; this run reads {levels} (the "
                          "strategy's depth_levels or the L2 guard's): pass depth_levels to "
                          "decision_inputs")  # fmt: skip


# A local book whose last event is older than this is stale at a decision (unsynced: decision 021):
# the same limit that ends a coverage span, as live stops deciding when its book stops updating.
STALE_NS = DEFAULT_MAX_GAP_NS

# What run_backtest keeps of each step: every column, or only ts, mid and equity (sweeps).
RECORDS = ("all", "equity")

# Fill records the loop's buffers hold at first (about 20 MB of address space, touched only as
# fills arrive); a run with more is repeated with buffers four times larger.
FILL_CAP = 1 << 18


def run_backtest(
    tape: Tape,
    strategy,
    params: np.ndarray,
    venue: VenueConfig,
    max_targets: int | None = None,
    start_ns: int | None = None,
    replay: Replay | None = None,
    gates: GateConfig | None = None,
    state_size: int = 64,
    latency: LatencySeries | None = None,
    progress: Callable[[int, int], None] | None = None,
    blocks: tuple[np.ndarray, np.ndarray] | None = None,
    decisions: tuple[np.ndarray, ...] | None = None,
    record: str = "all",
    signals: SignalSeries | None = None,
) -> BacktestResult:
    """Run `strategy` (a `Strategy`, or a bare kernel) with `params` over `tape`.

    `max_targets` bounds the quotes one decision may ask for (default: the Strategy's, else 64); a
    kernel that returns more stops the run with a ConfigError.

    Decisions happen at start_ns + k * step_ns; with start_ns = 0 the clock starts at the first event.
    By default start_ns is the tape's `window_start_ns` (the start `load_tape` was given), so a
    window backtests as `grinder backtest --start` and a sweep run it.
    Steps inside a coverage gap (no local event for more than STALE_NS) are left out after the
    first stale one: the steps' times jump there (clock.decision_segments).
    On an unsynced book (decision 021) the strategy is not called and open quotes are cancelled.
    Pass `replay` from `prepare(tape, venue)` to skip rebuilding it (sweeps share one). `gates`
    filter every decision's intents (default: all off); blocked intents are counted by reason.
    `latency` overrides the venue's latencies (default: its latency_file, else its constants).
    `progress(rows_done, rows_total)` is called a few times a second while the loop runs. `blocks`
    (from `row_blocks(tape, replay)`) and `decisions` (from `decision_inputs(tape, replay, venue,
    start_ns)`) save recomputing them when a tape is reused with the same venue and start.
    `record="equity"` keeps only the steps' ts, mid and equity (what a sweep reads; fills, ledger,
    counters and digest are the same), "all" every step column. `signals` are what a strategy that reads
    signals (`Strategy.signals`, e.g. a model's predictions) is given at each decision; their source
    enters the digest.
    """
    if start_ns is None:
        start_ns = tape.window_start_ns
    setup = _setup(tape.instrument, strategy, venue, max_targets, gates, latency, record, signals)
    if decisions is not None:
        _check_depth(decisions, setup.depth_levels)
    rep = prepare(tape, venue) if replay is None else replay
    c = np.ascontiguousarray  # no copy for tapes from load_tape; the engine is compiled for C layout
    local_book = LocalBook(rep.local_ts, rep.local_best_bid, rep.local_best_ask, rep.local_best_bid_qty,
                           rep.local_best_ask_qty, rep.local_synced)  # fmt: skip
    # run's argument groups, each a plain tuple in its fields' order (grinder.sim.engine).
    args = (
        tuple(TapeRows(c(tape.ts_exch), c(tape.kind), c(tape.side), c(tape.price_ticks), c(tape.qty))),
        tuple(ExchangeBook(rep.prev_qty, rep.best_bid, rep.best_ask, rep.synced)),
        tuple(row_blocks(tape, rep) if blocks is None else blocks),
        tuple(
            Levels(rep.level_rows, rep.level_ukeys, rep.level_starts, rep.reset_rows, rep.reset_sides, NO_KEYS, NO_QTY)
        ),  # fmt: skip
        tuple(local_book),
        tuple(decision_inputs(tape, rep, venue, start_ns, setup.depth_levels) if decisions is None else decisions),
        setup.signals,
        funding_settlements(tape),
        setup.latency,
        (int(start_ns), venue.step_ns, STALE_NS),
        setup.venue,
        setup.kernel,
    )
    fill_cap = FILL_CAP
    while True:
        # Every attempt starts from a private, writable copy of params (the kernel is compiled for
        # one), fresh strategy and gate state, and zero counters.
        gates_args = setup.new_gates()
        attempt = (*args, np.array(params, np.float64), np.zeros(state_size), setup.max_targets, setup.reuse, fill_cap,
                   gates_args, record == "all")  # fmt: skip
        done = np.zeros(1, np.int64)
        try:
            out = run(*attempt, done) if progress is None else _run_watched(attempt, done, len(tape), progress)
        except ValueError as e:  # raised by the loop about the strategy's output
            raise setup.kernel_error(e) from None
        if not out[-1]:
            break
        fill_cap *= 4  # more fills than the buffers hold: run again with larger ones
    return setup.result(out, gates_args)


@dataclass(frozen=True)
class RunSetup:
    """What a run needs besides the tape and its replay, checked once: the engine's argument groups
    for the venue, latency, signals and kernel, and how to read the engine's output into a result."""

    instrument: Instrument
    venue: tuple
    latency: tuple
    signals: tuple
    kernel: object
    max_targets: int
    reuse: int
    record: str
    signals_source: str
    strategy_name: str
    gate_cfg: tuple
    depth_levels: int  # levels a side of the local book the run reads at each decision (grinder.core.depth)

    def new_gates(self) -> tuple:
        """The Gates group with fresh state and zero counts (config, state, blocked, rules on, rules
        config, rules state)."""
        gate_cfg, qr_on, qr_cfg, rules = self.gate_cfg
        return (gate_cfg, new_gate_state(gate_cfg), np.zeros(len(REASONS), np.int64), qr_on, qr_cfg,
                new_qr_state(rules))  # fmt: skip

    def kernel_error(self, e: ValueError) -> ConfigError:
        """The loop's complaint about the strategy's output, as a ConfigError naming it."""
        return ConfigError(f"{self.strategy_name}: {e} (max_targets={self.max_targets})")

    def fills_of(self, fill_cols: tuple) -> dict[str, np.ndarray]:
        """BacktestResult's `fills` of the engine's fill columns (copied: slices of the loop's buffers
        would keep them alive)."""
        fts_exch, fts_local, fside, fpx, fqty, ffee, foid, flevel, fpos, freal, fmaker = (a.copy() for a in fill_cols)
        return {
            "ts_exch": fts_exch,
            "ts_local": fts_local,
            "side": fside,
            "price": fpx * self.instrument.tick_size,
            "price_ticks": fpx,
            "qty": fqty,
            "maker": fmaker,  # a resting quote's fill; False: one level of a taker order's walk
            "fee": ffee,
            "order_id": foid,
            "level": flevel,
            "position": fpos,
            "realized": freal,
        }

    def steps_of(self, st: tuple, qr_series: np.ndarray) -> tuple[dict, dict]:
        """BacktestResult's `steps` and `qrules` of the engine's step columns `st` and the rules' series."""
        names = ("ts", "mid", "position", "balance", "fees", "realized", "equity", "open_orders", "quote_bid",
                 "quote_ask", "mode")  # fmt: skip
        steps = dict(zip(names, st, strict=True))
        if self.record == "all":
            for k in ("quote_bid", "quote_ask"):
                steps[k] = np.where(steps[k] == EMPTY, np.nan, steps[k] * self.instrument.tick_size)
        else:
            steps = {k: steps[k] for k in ("ts", "mid", "equity")}
        # The rules' ratios and order counts at each step (all of them recorded), and their largest.
        qrules = {"ts": steps["ts"], **dict(zip(QR_OUT, qr_series.copy(), strict=True))} if self.record == "all" else {}
        return steps, qrules

    def result(self, out: tuple, gates_args: tuple, handed_out=None) -> BacktestResult:
        """The BacktestResult of the engine's output `out` (engine.run's tuple) and the run's gates.

        `handed_out`: the fills the run handed out as it went, as `digest_of_columns` takes them (its
        fills are then not in `out`, and the result holds none): the digest is of those."""
        inst = self.instrument
        blocked, qr_state = gates_args[2], gates_args[5]
        inverse = inst.contract == "inverse"
        fill_cols, st, fund, led, paid, cnt, (qr_series, qr_max), _ = out
        fills = self.fills_of(fill_cols)
        steps, qrules = self.steps_of(st, qr_series)
        counters = {name: int(v) for name, v in zip(COUNTERS, cnt, strict=True)}
        counters.update({f"blocked_{r}": int(b) for r, b in zip(REASONS, blocked, strict=True)})
        counters["qr_overflow"] = int(qr_state[QR_OVERFLOW])
        qrules_max = {k: float(v) for k, v in zip(QR_OUT, qr_max, strict=True)}
        funding = {"ts": fund[0], "position": fund[1], "amount": fund[2]}
        position, balance, fees = float(led[POSITION]), float(led[CASH]), float(led[FEES])
        return BacktestResult(
            fills,
            steps,
            position,
            balance,
            fees,
            counters,
            digest_of(fills, (position, balance, fees, float(paid)), self.signals_source)
            if handed_out is None
            else digest_of_columns(handed_out, (position, balance, fees, float(paid)), self.signals_source),
            funding,
            avg_entry=float(led[AVG_ENTRY]),
            realized=float(led[REALIZED]),
            settle=inst.settle or ("base" if inverse else "quote"),
            inverse=inverse,
            contract_size=inst.contract_size,
            qrules=qrules,
            qrules_max=qrules_max,
        )


def _setup(inst: Instrument, strategy, venue: VenueConfig, max_targets: int | None, gates: GateConfig | None,
           latency: LatencySeries | None, record: str, signals: SignalSeries | None) -> RunSetup:  # fmt: skip
    """Check a run's settings and build its RunSetup (run_backtest's and grinder.sim.chunked's)."""
    if record not in RECORDS:
        raise ConfigError(f"record must be one of {', '.join(RECORDS)}, got {record!r}")
    if latency is None:
        latency = LatencySeries.for_venue(venue)
    reuse = 0  # a bare kernel is called at every decision
    depth_levels = needed_levels(strategy.depth_levels if isinstance(strategy, Strategy) else 0, gates)
    if isinstance(strategy, Strategy):
        max_targets = strategy.max_targets if max_targets is None else max_targets
        reuse = RECOMPUTE.index(strategy.recompute)
        _check_signals(strategy, signals)
        strategy = strategy.kernel
    max_targets = 64 if max_targets is None else int(max_targets)
    if max_targets < 1:
        raise ConfigError(f"max_targets must be at least 1, got {max_targets}")
    kernel = kernel_handle(strategy)
    venue_args = Venue(
        tick=inst.tick_size,
        lot=inst.lot_size,
        min_notional=inst.min_notional,
        maker_fee=inst.maker_fee if venue.maker_fee is None else venue.maker_fee,
        taker_fee=inst.taker_fee if venue.taker_fee is None else venue.taker_fee,
        inverse=inst.contract == "inverse",
        contract_size=inst.contract_size,
        queue_model=RISK_AVERSE if venue.queue == "risk_averse" else PROB_POWER,
        queue_power=venue.queue_power,
        partial_fills=venue.partial_fills,
        market_walk_ticks=venue.market_walk_ticks,
    )
    return RunSetup(
        instrument=inst,
        venue=tuple(venue_args),
        latency=(latency.ts, latency.entry_ns, latency.response_ns),
        signals=NO_SIGNALS if signals is None else signals.engine_args(),
        kernel=kernel,
        max_targets=max_targets,
        reuse=reuse,
        record=record,
        signals_source="" if signals is None else signals.source,
        strategy_name=getattr(strategy, "__name__", "strategy"),
        gate_cfg=gate_configs(gates),
        depth_levels=depth_levels,
    )


def _check_signals(strategy: Strategy, signals: SignalSeries | None) -> None:
    """A strategy gets signals exactly when it reads them, one column per name in `Strategy.signals`."""
    if strategy.signals and signals is None:
        raise ConfigError(f"strategy {strategy.name} reads signals ({', '.join(strategy.signals)}): give it a model "
                          "(--model models:/NAME@champion)")  # fmt: skip
    if signals is not None and not strategy.signals:
        raise ConfigError(f"strategy {strategy.name} reads no signals; a model ({signals.source}) has nothing to drive")
    if signals is not None and signals.width != len(strategy.signals):
        raise ConfigError(f"strategy {strategy.name} reads {len(strategy.signals)} signal(s), "
                          f"the model gives {signals.width}")  # fmt: skip


def _run_watched(args: tuple, done: np.ndarray, total: int, progress: Callable[[int, int], None]):
    """Run the loop in a worker thread (it releases the GIL) and report `done` until it returns."""
    box: dict = {}

    def work() -> None:
        try:
            box["out"] = run(*args, done)
        except BaseException as e:  # re-raised in the caller's thread
            box["error"] = e

    t = threading.Thread(target=work, name="grinder-backtest", daemon=True)
    t.start()
    while t.is_alive():
        t.join(0.2)
        progress(int(done[0]), total)
    if "error" in box:
        raise box["error"]
    progress(total, total)
    return box["out"]
