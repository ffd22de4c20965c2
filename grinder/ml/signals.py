"""A model's predictions at every decision of a backtest, computed before the loop in one vectorised pass.

At each decision time T (local clock) the strategy may know only the events received by T. The
features of a decision are therefore those after every event whose exchange time is at or before
the latest exchange time received by T, read at that exchange time: what the live adapter's
incremental features (`grinder.features.online`) hold when it decides, since it updates them as
messages arrive and reads them at the last one's exchange time. The model then predicts over all
decisions at once (`LoadedModel.predict`) and the engine hands the kernel its decision's row
(`grinder.sim.backtest.SignalSeries`): inference never runs per event, nor in Python per decision.
"""

from __future__ import annotations

import numpy as np

from grinder.data.tape import Tape
from grinder.features.offline import compute_features
from grinder.ml.model import LoadedModel
from grinder.sim.backtest import STALE_NS, SignalSeries, VenueConfig, local_times
from grinder.sim.clock import decision_clock, decision_segments
from grinder.sim.replay import Replay


def decision_times(tape: Tape, replay: Replay, venue: VenueConfig, start_ns: int | None = None) -> np.ndarray:
    """The local times (int64 ns) of the decisions the loop may take (clock.decision_segments' steps; it
    records a prefix of them, stopping once the data has ended)."""
    if start_ns is None:
        start_ns = tape.window_start_ns
    ts = np.ascontiguousarray(tape.ts_exch)
    seg = decision_segments(ts, replay.local_ts, int(start_ns), venue.step_ns, STALE_NS)
    t0, _, _ = decision_clock(ts, replay.local_ts, int(start_ns), venue.step_ns)
    steps = np.concatenate([np.arange(a, b + 1, dtype=np.int64) for a, b in seg.reshape(-1, 2)])
    return t0 + steps * venue.step_ns


def known_exchange_times(tape: Tape, venue: VenueConfig, times: np.ndarray) -> np.ndarray:
    """At each local time (sorted int64 ns), the latest exchange time among the events received by then
    (int64 ns; the int64 minimum before the first event arrives)."""
    local = local_times(tape, venue)
    order = np.argsort(local, kind="stable")
    latest = np.maximum.accumulate(np.asarray(tape.ts_exch)[order])
    k = np.searchsorted(local[order], times, side="right") - 1
    out = np.full(times.shape[0], np.iinfo(np.int64).min, np.int64)
    seen = k >= 0
    out[seen] = latest[k[seen]]
    return out


def model_signals(tape: Tape, replay: Replay, venue: VenueConfig, model: LoadedModel,
                  start_ns: int | None = None) -> SignalSeries:  # fmt: skip
    """The model's outputs at every decision of a backtest of `tape`: features at the decisions (one
    compiled pass), then one prediction over them all. Rows before any event is known are NaN."""
    times = decision_times(tape, replay, venue, start_ns)
    known = known_exchange_times(tape, venue, times)
    seen = known != np.iinfo(np.int64).min
    values = np.full((times.shape[0], model.width), np.nan)
    if seen.any():
        # `known` is sorted (a running maximum at sorted times), as compute_features requires.
        features = compute_features(tape, model.feature_set, at=known[seen])
        values[seen] = model.predict(features.values.T)
    return SignalSeries(times, values, model.source)
