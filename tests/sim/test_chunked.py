"""A tape run chunk by chunk gives the whole-tape run's result: the same digest, fills, steps, counters,
funding and rules' series, wherever the chunk boundaries fall (grinder.sim.chunked)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from grinder.core.gates import GateConfig
from grinder.data.chunks import LakeChunks
from grinder.data.lake import Lake
from grinder.data.synth import synth_batch
from grinder.data.tape import load_tape
from grinder.errors import ConfigError, DataError
from grinder.sim.backtest import SignalSeries, VenueConfig, run_backtest
from grinder.sim.chunked import TapeChunks, run_chunked
from grinder.strategies.adaptive_grid import STRATEGY as ADAPTIVE
from grinder.strategies.ml_grid import STRATEGY as ML_GRID
from grinder.strategies.static_grid import STRATEGY as GRID
from tests.sim.test_digest_pins import CASES, PINS
from tests.sim.test_replay import jittered

S = 1_000_000_000
T0 = 1_704_067_200 * S  # 2024-01-01


def assert_same(a, b):
    """Every part of two BacktestResults is equal (arrays exactly, NaN where NaN)."""
    assert a.digest == b.digest
    assert a.counters == b.counters
    for name in ("fills", "steps", "funding", "qrules"):
        x, y = getattr(a, name), getattr(b, name)
        assert x.keys() == y.keys(), name
        for k in x:
            assert np.array_equal(x[k], y[k], equal_nan=x[k].dtype.kind == "f"), (name, k)
    assert (a.position, a.balance, a.fees, a.realized) == (b.position, b.balance, b.fees, b.realized)
    assert a.qrules_max.keys() == b.qrules_max.keys()
    assert np.array_equal(list(a.qrules_max.values()), list(b.qrules_max.values()), equal_nan=True)


@pytest.fixture(scope="module")
def sample(request):
    from tests.conftest import REPO

    return load_tape(REPO / "data" / "sample" / "lake", "binance-usdm", "BTCUSDT")


@pytest.mark.parametrize("chunk_s", [60, 7, 0.5])
@pytest.mark.parametrize("name", list(CASES))
def test_chunked_runs_on_the_sample_keep_the_pinned_digests(sample, name, chunk_s):
    strategy, values, venue, gates = CASES[name]
    r = run_chunked(TapeChunks(sample, int(chunk_s * S)), strategy, strategy.vector(strategy.validate(values)), venue,
                    gates=gates)  # fmt: skip
    assert (r.digest, r.counters["fills"]) == PINS[name]


@pytest.mark.parametrize("name", ["tight_gated", "tight_slow", "adaptive"])
def test_chunked_run_on_the_sample_equals_the_whole_run_in_every_record(sample, name):
    strategy, values, venue, gates = CASES[name]
    p = strategy.vector(strategy.validate(values))
    whole = run_backtest(sample, strategy, p, venue, gates=gates)
    chunks = TapeChunks(sample, 3 * S)
    assert sum(1 for _ in chunks.chunks(times_only=True)) > 100  # boundaries everywhere
    assert_same(run_chunked(chunks, strategy, p, venue, gates=gates), whole)


@pytest.fixture(scope="module")
def multi_day_lake(tmp_path_factory):
    """Three captures over two days, with coverage gaps between them (resets, clock segments) and funding."""
    root = tmp_path_factory.mktemp("lake")
    lake = Lake(root)
    for i, (n, hours) in enumerate([(30_000, 0), (20_000, 30), (25_000, 31)]):
        lake.write(synth_batch(n, seed=i + 3, start_ns=T0 + hours * 3600 * S), [], key=f"capture{i}")
    return root


@pytest.fixture(scope="module")
def multi_day(multi_day_lake):
    tape = load_tape(multi_day_lake, "synthetic", "SYNTHUSDT")
    assert len(tape.funding) > 0
    return tape


@pytest.mark.parametrize("start_h", [None, 30.01])
def test_a_run_read_from_the_lake_a_day_at_a_time_equals_the_whole_run(multi_day_lake, start_h):
    start = None if start_h is None else T0 + int(start_h * 3600 * S)
    tape = load_tape(multi_day_lake, "synthetic", "SYNTHUSDT", start)
    p = ADAPTIVE.vector(ADAPTIVE.validate(TIGHT))
    v = VENUES["slow_partial"]
    whole = run_backtest(tape, ADAPTIVE, p, v)
    assert whole.counters["fills"] > 50
    seen = []
    got = run_chunked(LakeChunks(multi_day_lake, "synthetic", "SYNTHUSDT", start), ADAPTIVE, p, v,
                      progress=lambda done, total: seen.append((done, total)))  # fmt: skip
    assert_same(got, whole)
    assert len(seen) > 1  # an hour each
    assert seen[-1][0] == seen[-1][1] == got.counters["exchange_events"]


TIGHT = {"levels": 10, "interval": 0.3, "half_spread": 0.1, "order_qty": 0.004, "max_position": 0.02}
VENUES = {
    "fast": VenueConfig(entry_latency_ns=5_000_000, response_latency_ns=5_000_000, step_ns=100_000_000),
    "slow_partial": VenueConfig(
        entry_latency_ns=150_000_000,
        response_latency_ns=120_000_000,
        step_ns=50_000_000,
        partial_fills=True,
        queue="power",
    ),  # fmt: skip
}


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    chunk_ms=st.integers(200, 2 * 86_400_000),
    venue=st.sampled_from(list(VENUES)),
    adaptive=st.booleans(),
    jitter=st.booleans(),
    start_min=st.sampled_from([0, 1, 30 * 60 + 1]),
)
def test_chunked_equals_whole_on_a_multi_day_tape(multi_day, chunk_ms, venue, adaptive, jitter, start_min):
    tape = multi_day
    if jitter:  # local times out of exchange order, as on real captures
        tape = dataclasses.replace(tape, ts_local=jittered(tape, seed=chunk_ms % 7))
    strategy = ADAPTIVE if adaptive else GRID
    p = strategy.vector(strategy.validate(TIGHT))
    start = int(tape.ts_exch[0]) + start_min * 60 * S if start_min else 0
    v = VENUES[venue]
    whole = run_backtest(tape, strategy, p, v, start_ns=start)
    assert whole.counters["fills"] > 50
    assert_same(run_chunked(TapeChunks(tape, chunk_ms * 1_000_000), strategy, p, v, start_ns=start), whole)


def test_signals_cross_chunk_boundaries(multi_day):
    rng = np.random.default_rng(5)
    ts = np.sort(rng.integers(int(multi_day.ts_exch[0]), int(multi_day.ts_exch[-1]), 400))
    sig = SignalSeries(ts, rng.uniform(0.2, 7.0, (400, 1)), "test-model/1")
    p = ML_GRID.vector(ML_GRID.validate({**TIGHT, "confirm": 1}))
    v = VENUES["fast"]
    whole = run_backtest(multi_day, ML_GRID, p, v, signals=sig)
    assert whole.counters["fills"] > 0
    assert_same(run_chunked(TapeChunks(multi_day, 20 * S), ML_GRID, p, v, signals=sig), whole)


def test_a_fill_overflow_reruns_with_larger_buffers(multi_day, monkeypatch):
    from grinder.sim import chunked

    p = GRID.vector(GRID.validate(TIGHT))
    v = VENUES["fast"]
    whole = run_backtest(multi_day, GRID, p, v)
    monkeypatch.setattr(chunked, "FILL_CAP", 16)
    assert whole.counters["fills"] > 16
    assert_same(run_chunked(TapeChunks(multi_day, 600 * S), GRID, p, v), whole)


def test_a_local_clock_offset_that_receives_rows_before_they_were_sent_is_refused(sample):
    v = VENUES["fast"].model_copy(update={"local_clock_offset_ns": -(10**9)})
    p = GRID.vector(GRID.validate(TIGHT))
    with pytest.raises(ConfigError, match="local_clock_offset_ns = -1000000000 puts local times"):
        run_chunked(TapeChunks(sample, 60 * S), GRID, p, v)


@pytest.mark.parametrize("bad", [0, -5, 1.5e9, 2e9, True, "60"])
def test_chunk_size_must_be_a_positive_whole_number_of_ns(sample, multi_day_lake, bad):
    for make in (lambda: TapeChunks(sample, bad), lambda: LakeChunks(multi_day_lake, "synthetic", "SYNTHUSDT",
                                                                        chunk_ns=bad)):  # fmt: skip
        with pytest.raises(ConfigError, match="chunk_ns must be a positive whole number of nanoseconds"):
            make()
    assert TapeChunks(sample, np.int64(10 * S)).chunk_ns == 10 * S


class Shifted(TapeChunks):
    """A source that breaks the chunk contract: its chunks' ends moved by `shift` ns."""

    shift: int = 0

    def chunks(self, times_only=False):
        for c in super().chunks(times_only):
            yield c if c.end_ns is None else dataclasses.replace(c, end_ns=c.end_ns + self.shift)


@pytest.mark.parametrize("shift, match", [(-50_000_000, "is after its end_ns"), (5 * S, "at or before the last chunk")])
def test_a_source_that_breaks_the_chunk_contract_is_refused(sample, shift, match):
    src = Shifted(sample, 20 * S)
    object.__setattr__(src, "shift", shift)
    p = GRID.vector(GRID.validate(TIGHT))
    with pytest.raises(DataError, match=f"chunk \\d+: .*{match}"):
        run_chunked(src, GRID, p, VENUES["fast"])


@pytest.mark.parametrize("record", ["all", "equity"])
@pytest.mark.parametrize("fill_cap", [None, 16])
def test_a_steps_sink_gets_every_step_once_and_the_run_keeps_none(multi_day, monkeypatch, record, fill_cap):
    from grinder.sim import chunked

    if fill_cap:  # fill buffers grow between chunks; a chunk that overflows them starts the run over
        monkeypatch.setattr(chunked, "FILL_CAP", fill_cap)
    p = ADAPTIVE.vector(ADAPTIVE.validate(TIGHT))
    v = VENUES["slow_partial"]
    whole = run_backtest(multi_day, ADAPTIVE, p, v, record=record, gates=GateConfig(quant_rules=True))
    parts: list = []
    restarts = []

    def sink(steps, qrules):
        if steps is None:
            restarts.append(len(parts))
            parts.clear()
        else:
            parts.append((steps, qrules))

    got = run_chunked(TapeChunks(multi_day, 30 * S), ADAPTIVE, p, v, record=record, steps_sink=sink,
                      gates=GateConfig(quant_rules=True))  # fmt: skip
    assert len(parts) > 10 and all(len(a) == 0 for a in [*got.steps.values(), *got.qrules.values()])
    assert got.digest == whole.digest and got.counters == whole.counters
    assert got.qrules_max.keys() == whole.qrules_max.keys()
    assert np.array_equal(list(got.qrules_max.values()), list(whole.qrules_max.values()), equal_nan=True)
    for name, mine in (("steps", [s for s, _ in parts]), ("qrules", [q for _, q in parts])):
        theirs = getattr(whole, name)
        assert all(m.keys() == theirs.keys() for m in mine), name
        for k in theirs:
            joined = np.concatenate([m[k] for m in mine])
            assert np.array_equal(joined, theirs[k], equal_nan=joined.dtype.kind == "f"), (name, k)
    assert bool(restarts) == (fill_cap is not None and whole.counters["fills"] > 2 * fill_cap)


@pytest.mark.parametrize("fill_cap", [None, 8])
def test_a_fills_sink_gets_every_fill_once_and_the_digest_stays(multi_day, monkeypatch, fill_cap):
    """Fills handed out chunk by chunk are the whole run's, the result keeps none, and its digest (read
    back from the spilled columns) is the whole run's; a chunk that overflows the buffers restarts the sink."""
    from grinder.sim import chunked

    if fill_cap:
        monkeypatch.setattr(chunked, "FILL_CAP", fill_cap)
    p = GRID.vector(GRID.validate(TIGHT))
    v = VENUES["fast"]
    whole = run_backtest(multi_day, GRID, p, v)
    parts: list = []
    restarts = []

    def sink(fills):
        if fills is None:
            restarts.append(len(parts))
            parts.clear()
        else:
            parts.append(fills)

    got = run_chunked(TapeChunks(multi_day, 60 * S), GRID, p, v, fills_sink=sink)
    assert got.digest == whole.digest and got.counters == whole.counters
    assert all(len(a) == 0 for a in got.fills.values()) and got.fills.keys() == whole.fills.keys()
    assert (got.position, got.balance, got.fees) == (whole.position, whole.balance, whole.fees)
    assert len(parts) > 10 and all(f.keys() == whole.fills.keys() for f in parts)
    for k, col in whole.fills.items():
        joined = np.concatenate([f[k] for f in parts])
        assert joined.dtype == col.dtype and np.array_equal(joined, col), k
    assert bool(restarts) == (fill_cap is not None)
    assert whole.counters["fills"] > 8 * 4  # enough fills that a chunk overflows 8 (and the rerun's 32 holds)


def test_a_run_in_chunks_of_a_few_rows_equals_the_whole_run(multi_day_lake):
    """LakeChunks cuts an hour of rows into pieces of at most chunk_rows where the time changes: the
    same result as the whole tape, and every piece within the cap."""
    tape = load_tape(multi_day_lake, "synthetic", "SYNTHUSDT")
    p = ADAPTIVE.vector(ADAPTIVE.validate(TIGHT))
    v = VENUES["slow_partial"]
    whole = run_backtest(tape, ADAPTIVE, p, v)
    sizes = []
    source = LakeChunks(multi_day_lake, "synthetic", "SYNTHUSDT", chunk_rows=3_000)
    got = run_chunked(source, ADAPTIVE, p, v, on_chunk=lambda c: sizes.append(len(c.ts_exch)))
    assert_same(got, whole)
    assert len(sizes) > 25 and max(sizes) <= 3_000 and sum(sizes) == len(tape)
