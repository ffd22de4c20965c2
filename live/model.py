"""A registered model in the live decision path: loaded once and pinned, fed live features, predicting per decision.

`ModelPath.open` resolves the `[model]` table's URI once (`grinder.ml.model.load_model`: an alias
becomes the version it points to, kept for the whole session whatever the alias does later), checks
that the model's label is what the model-driven strategy reads (`grinder.sim.job.check_model_fits`)
and compiles its trees (`live.trees`; xgboost's own predict otherwise). `attach` puts the live
features (`live.features`) on the client's taps. At each decision `reading` gives the features at
the exchange time of the last event received (cached while no event arrives) and `forecast` the
model's outputs for them (one row, never per event): NaN until the features are warm (`warmup_s`
of exchange time since the first synced book), so a model strategy pauses.

`after_decision` takes what a decision did, once its requests are out:

- shadow: a second `Decider` runs the model-driven strategy on the decision's inputs (book,
  position, equity; no orders of its own, no gates: its targets are what it would quote) with the
  forecast; its targets are compared with the trading strategy's and written, never sent;
- active: the trading strategy is the model-driven one; its mode is read from its Decider.

Either way each decision goes to the run folder's log (`shadow.jsonl` or `model.jsonl`: the
features, their exchange time, the forecast, the mode; in shadow the targets when they change and
whether they differ from the trading strategy's), a change of the model strategy's mode to the
audit trail at once (`model_mode`), and the forecasts, modes and differences of each interval to it
as one line (`model_forecasts`, at most every REFUSED_EVERY_NS, from housekeeping). Housekeeping
also checks the compiled trees against xgboost on the latest features (`check_predictor`): a
difference switches to xgboost for the rest of the session, audited.
"""

from __future__ import annotations

import json
import math
import time
from collections import Counter, deque
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from grinder.core.decision import Decider
from grinder.core.strategy import Strategy, get
from grinder.errors import GrinderError, TrackingError
from grinder.live.audit import AuditLog
from grinder.live.config import LiveConfig
from grinder.live.features import LiveFeatures
from grinder.live.journal import Journal
from grinder.live.port import REFUSED_EVERY_NS
from grinder.live.trees import compile_trees

NS_PER_S = 1_000_000_000
LOG_FILES = {"shadow": "shadow.jsonl", "active": "model.jsonl"}  # the per-decision log in the run folder
_ENCODER = json.JSONEncoder(separators=(",", ":"), allow_nan=False)  # NaN is written null, never NaN


class Reading:
    """The features one decision reads, and once predicted the model's outputs for them."""

    __slots__ = ("ts_ns", "received", "features", "outputs", "warm", "checked")

    def __init__(self, ts_ns: int, received: int, features: np.ndarray, warm: bool):
        self.ts_ns = ts_ns  # exchange time they are read at: the last event received (ns)
        self.received = received  # the live features' event count then
        self.features = features  # float64, in the feature set's column order
        self.outputs: np.ndarray | None = None  # float64 [width]; NaN while not warm
        self.warm = warm
        self.checked = False  # the compiled trees' output checked against xgboost's


@dataclass(frozen=True)
class ModelRecord:
    """One decision as the model saw it (the adapter's `model_log`, for tests and live.parity)."""

    ts_ns: int  # the decision's time (its clock)
    features_ts_ns: int  # exchange time of the features
    features: np.ndarray
    outputs: np.ndarray
    mode: str  # the model-driven strategy's mode after the decision
    targets: tuple[tuple[int, int, float], ...]  # the model-driven strategy's targets


def _num(x: float) -> float | None:
    return None if math.isnan(x) else x


class ModelPath:
    """The `[model]` of a config in the decision path; `open` builds it, `attach` feeds it."""

    def __init__(self, cfg: LiveConfig, trading: Strategy, audit: AuditLog, clock_ns, records: list | None = None):
        from grinder.ml.model import load_model
        from grinder.sim.job import check_model_fits
        from grinder.track.mlflow_store import default_root

        m = cfg.model
        self.mode = m.mode
        self.audit, self.clock_ns, self.records = audit, clock_ns, records
        self.driven = trading if m.mode == "active" else get(m.strategy)
        self.store = Path(m.mlruns) if m.mlruns is not None else default_root()
        try:
            self.loaded = load_model(m.uri, self.store)  # the alias resolved here, once: pinned for the session
        except GrinderError:
            raise
        except Exception as e:  # a file load_model does not expect (xgboost's own error about it can fail too)
            detail = " ".join(str(e).split())[:200]
            raise TrackingError(f"{m.uri}: the model cannot be loaded: {type(e).__name__}: {detail}",
                                str(self.store)) from e  # fmt: skip
        check_model_fits(self.driven, self.loaded)
        fs = self.loaded.feature_set
        self.names = fs.names
        longest = max((*fs.vol_horizons_ns, *fs.flow_horizons_ns), default=0)
        self.warmup_ns = longest if m.warmup_s is None else int(m.warmup_s * NS_PER_S)
        self.trees, self.why_xgboost = compile_trees(self.loaded.booster, self.loaded.objective, len(self.names))
        # Shadow: the model-driven strategy decides beside the trading one, without orders or gates; its
        # compiled step loaded now (its first decision would otherwise compile it on the event loop).
        self.shadow = Decider(self.driven, self.driven.validate(m.params)) if m.mode == "shadow" else None
        if self.shadow is not None:
            self.shadow.warm_up()
        self.features: LiveFeatures | None = None
        self._reading: Reading | None = None
        self.log: Journal | None = None
        self._last_targets: tuple | None = None
        # Since start, and per audit interval (`model_forecasts`).
        self.decisions = 0
        self.missing = 0  # decisions with no forecast (NaN: not warm, or the model gave none)
        self.last_forecast = math.nan
        self.mode_name = ""
        self.modes: Counter = Counter()
        self.shadow_decisions = self.targets_differ = 0
        self.checks = self.mismatches = 0  # compiled trees vs xgboost
        # ns each features read (flush + read) and each prediction took, the most recent (bench/live_latency.py)
        self.read_ns: deque = deque(maxlen=100_000)
        self.predict_ns: deque = deque(maxlen=100_000)
        self._interval = self._new_interval(0)
        self._interval_line_ns = -REFUSED_EVERY_NS
        self._warm_up()

    @classmethod
    def open(cls, cfg: LiveConfig, trading: Strategy, audit: AuditLog, clock_ns,
             records: list | None = None) -> ModelPath | None:  # fmt: skip
        """The config's model path, None without `[model]`; ConfigError / TrackingError naming the model if it
        cannot be had (no such alias or version, a damaged booster, a label the strategy does not read)."""
        return None if cfg.model is None else cls(cfg, trading, audit, clock_ns, records)

    @property
    def predictor(self) -> str:
        """What predicts: "compiled" (live.trees) or "xgboost"."""
        return "compiled" if self.trees is not None else "xgboost"

    def summary(self) -> dict:
        """What the session runs (the audit's `model` line, run.json, the info metric)."""
        ld = self.loaded
        return {"name": ld.name, "version": ld.version, "alias": ld.alias, "uri": ld.uri, "sha256": ld.model_sha256,
                "feature_set_version": ld.feature_set.version, "label": ld.label, "objective": ld.objective,
                "run_id": ld.run_id, "mode": self.mode, "strategy": self.driven.name, "store": str(self.store),
                "predictor": self.predictor, "why_xgboost": self.why_xgboost or None,
                "warmup_s": self.warmup_ns / NS_PER_S}  # fmt: skip

    def _warm_up(self) -> None:
        """The live features' and the predictor's compiled code loaded now, not at the first decision."""
        scratch = LiveFeatures(self.loaded.feature_set, "X", 1.0)
        scratch.tap(0, {"lastUpdateId": 1, "T": 1, "bids": [["1", "1"]], "asks": [["2", "1"]]})
        scratch.tap(0, {"e": "depthUpdate", "s": "X", "T": 2, "U": 2, "u": 2, "pu": 1, "b": [["1", "2"]], "a": []})
        scratch.tap(0, {"e": "trade", "s": "X", "T": 2, "m": True, "q": "1"})
        row = np.empty(len(self.names))
        scratch.read(row)
        self._predict(row)

    # ---- the live features ----
    def attach(self, ex, symbol_id: str, tick: float) -> None:
        """Feed the live features from `ex`'s raw market messages (before it subscribes to them)."""
        self.features = LiveFeatures(self.loaded.feature_set, symbol_id, tick)
        ex.taps.append(self.features.tap)

    def reading(self) -> Reading:
        """The features as a decision reads them now (cached while no event arrives)."""
        f = self.features
        r = self._reading
        if r is not None and r.received == f.received:
            return r
        t0 = time.perf_counter_ns()
        row = np.empty(len(self.names))
        ts = f.read(row)
        warm = f.synced_ns is not None and ts - f.synced_ns >= self.warmup_ns
        self._reading = r = Reading(ts, f.received, row, warm)
        self.read_ns.append(time.perf_counter_ns() - t0)
        return r

    def forecast(self) -> np.ndarray:
        """The model's outputs (float64 [width]) for the features now: what a decision passes as its signals."""
        r = self.reading()
        if r.outputs is None:
            r.outputs = self._outputs(r)
        return r.outputs

    def _outputs(self, r: Reading) -> np.ndarray:
        if not r.warm:
            return np.full(self.loaded.width, np.nan)
        t0 = time.perf_counter_ns()
        out = self._predict(r.features)
        self.predict_ns.append(time.perf_counter_ns() - t0)
        return out

    def _predict(self, row: np.ndarray) -> np.ndarray:
        if self.trees is not None:
            return np.array([self.trees.predict(row)])
        return self.loaded.predict(row[None, :])[0]

    # ---- after each decision ----
    def after_decision(self, ts_ns: int, reading: Reading, args: tuple, trading: Decider) -> None:
        """Record a decision taken at `ts_ns` on `reading` with `Decider.decide` arguments `args` (`trading`: the
        trading strategy's Decider): in shadow mode the model strategy decides on them first."""
        if reading.outputs is None:  # shadow: predicted now, after the trading decision's requests
            reading.outputs = self._outputs(reading)
        out = reading.outputs
        if self.shadow is not None:
            self.shadow.decide(*args[:10], [], out)
            driven = self.shadow
            targets = driven.last_targets
            differs = set(targets) != set(trading.last_targets)
            self.shadow_decisions += 1
            self.targets_differ += differs
            self._interval["targets_differ"] += differs
        else:
            driven, differs = trading, None
            targets = trading.last_targets
        mode = driven.mode
        name = self.driven.modes[mode] if 0 <= mode < len(self.driven.modes) else str(mode)
        f0 = float(out[0])
        if name != self.mode_name:
            self.audit.write(self.clock_ns(), "model_mode", strategy=self.driven.name, mode=name,
                             previous=self.mode_name or None, forecast=_num(f0), decision_ts_ns=ts_ns)  # fmt: skip
            self.mode_name = name
        self.decisions += 1
        self.last_forecast = f0
        self.modes[name] += 1
        iv = self._interval
        iv["decisions"] += 1
        iv["modes"][name] += 1
        if math.isnan(f0):
            self.missing += 1
            iv["missing"] += 1
        else:
            iv["min"], iv["max"], iv["sum"] = min(iv["min"], f0), max(iv["max"], f0), iv["sum"] + f0
        if self.log is not None:
            line = {"ts_ns": ts_ns, "features_ts_ns": reading.ts_ns,
                    "features": [_num(x) for x in reading.features.tolist()],
                    "forecast": [_num(x) for x in out.tolist()], "mode": name, "n_targets": len(targets)}  # fmt: skip
            if differs is not None:
                if targets != self._last_targets:  # only when they change: absent, as on the line before
                    line["targets"] = targets
                line["differs"] = differs
            self._last_targets = targets
            self.log.append(_ENCODER.encode(line))
        if self.records is not None:
            self.records.append(ModelRecord(ts_ns, reading.ts_ns, reading.features, out, name, targets))

    # ---- housekeeping, the log, the stop ----
    def open_log(self, run_dir: Path) -> None:
        """The per-decision log in the run folder (fsynced by housekeeping, as the audit trail)."""
        self.log = Journal(Path(run_dir) / LOG_FILES[self.mode], max_delay_s=None)

    def housekeeping(self, now_ns: int) -> None:
        """Between decisions: the log's fsync, the interval's audit line when due, the predictor's check."""
        if self.log is not None:
            self.log.sync_soon()
        if self.features is not None:
            self.features.flush()  # held events applied now, not at the next decision
        self.flush_interval(now_ns)
        self.check_predictor()

    def check_predictor(self) -> None:
        """The compiled trees' output on the latest features against xgboost's; a difference switches to xgboost."""
        r = self._reading
        if self.trees is None or r is None or r.checked or r.outputs is None or not r.warm:
            return
        r.checked = True
        self.checks += 1
        theirs = self.loaded.predict(r.features[None, :])[0]
        if not np.array_equal(theirs, r.outputs, equal_nan=True):
            self.mismatches += 1
            self.trees, self.why_xgboost = None, "compiled trees differed from xgboost live"
            self.audit.write(self.clock_ns(), "model_predictor_mismatch", compiled=r.outputs.tolist(),
                             xgboost=theirs.tolist(), features_ts_ns=r.ts_ns, now="xgboost")  # fmt: skip

    @staticmethod
    def _new_interval(since_ns: int) -> dict:
        return {"since_ns": since_ns, "decisions": 0, "missing": 0, "min": math.inf, "max": -math.inf, "sum": 0.0,
                "modes": Counter(), "targets_differ": 0}  # fmt: skip

    def flush_interval(self, now_ns: int, force: bool = False) -> None:
        """The interval's forecasts, modes (and shadow differences) as one audit line, if due (or `force`)."""
        iv = self._interval
        if not iv["decisions"] or not (force or now_ns - self._interval_line_ns >= REFUSED_EVERY_NS):
            return
        n = iv["decisions"] - iv["missing"]
        fields = {"decisions": iv["decisions"], "missing": iv["missing"], "last": _num(self.last_forecast),
                  "min": iv["min"] if n else None, "max": iv["max"] if n else None,
                  "mean": iv["sum"] / n if n else None, "modes": dict(iv["modes"]),
                  "since_ns": iv["since_ns"]}  # fmt: skip
        if self.shadow is not None:
            fields["targets_differ"] = iv["targets_differ"]
        self.audit.write(now_ns, "model_forecasts", **fields)
        self._interval, self._interval_line_ns = self._new_interval(now_ns), now_ns

    def outcome(self) -> dict:
        """What the session's model did (run.json at the stop, the audit's `model_stop` line)."""
        out = {"version": self.loaded.version, "decisions": self.decisions, "missing": self.missing,
               "modes": dict(self.modes), "predictor": self.predictor, "predictor_checks": self.checks,
               "predictor_mismatches": self.mismatches}  # fmt: skip
        if self.shadow is not None:
            out |= {"shadow_decisions": self.shadow_decisions, "targets_differ": self.targets_differ}
        if self.features is not None:
            # synced_ns: the first synced book's exchange time, where the warm-up counted from.
            out |= {"events": self.features.received, "book_gaps": self.features.gaps,
                    "synced_ns": self.features.synced_ns}  # fmt: skip
        return out

    def close(self) -> None:
        """The log fsynced and closed."""
        if self.log is not None:
            self.log.close()
