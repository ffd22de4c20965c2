"""The static grid over the bundled real BTCUSDT window: ledger arithmetic, determinism, grid prices."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest

from grinder.data.tape import load_tape
from grinder.sim.backtest import VenueConfig, run_backtest
from grinder.strategies.static_grid import StaticGridParams, static_grid
from tests.conftest import REPO

# 0.002 BTC is about 124 USDT: above BTCUSDT's 100 USDT minimum notional.
PARAMS = StaticGridParams(levels=20, interval=1.0, half_spread=2.0, order_qty=0.002, max_position=0.04)
VENUE = VenueConfig(entry_latency_ns=10_000_000, response_latency_ns=10_000_000)


@pytest.fixture(scope="module")
def result():
    tape = load_tape(REPO / "data" / "sample" / "lake", "binance-usdm", "BTCUSDT")
    return run_backtest(tape, static_grid, PARAMS.as_array(), VENUE), tape


def test_ledger_is_the_sum_of_its_fills(result):
    r, _ = result
    f = r.fills
    sgn = f["side"].astype(float)
    assert len(f["qty"]) > 100
    assert r.position == pytest.approx((sgn * f["qty"]).sum(), abs=1e-12)
    assert r.balance == pytest.approx(-(sgn * f["qty"] * f["price"]).sum())
    assert r.fees == pytest.approx((f["qty"] * f["price"] * 0.0002).sum())  # all maker fills
    assert f["maker"].all()
    assert (f["ts_local"] - f["ts_exch"] == VENUE.response_latency_ns).all()


def test_fills_are_on_the_grid_and_position_stays_bounded(result):
    r, _ = result
    f = r.fills
    assert np.allclose(f["price"] / PARAMS.interval, np.round(f["price"] / PARAMS.interval))
    # Orders already resting may still fill after the cap is reached: at most one grid side more.
    assert np.abs(r.steps["position"]).max() <= PARAMS.max_position + PARAMS.levels * PARAMS.order_qty + 1e-9


def test_decisions_every_step_and_digest_repeats(result):
    r, tape = result
    assert (np.diff(r.steps["ts"]) == VENUE.step_ns).all()
    assert r.counters["exchange_events"] == len(tape)
    again = run_backtest(tape, static_grid, PARAMS.as_array(), VENUE)
    assert again.digest == r.digest


def test_cached_read_only_tape_gives_the_same_run(result, tmp_path):
    import shutil

    r, _ = result
    root = tmp_path / "lake"
    shutil.copytree(REPO / "data" / "sample" / "lake", root)
    load_tape(root, "binance-usdm", "BTCUSDT", cache=True)
    mapped = load_tape(root, "binance-usdm", "BTCUSDT", cache=True)
    assert not mapped.ts_exch.flags.writeable
    assert run_backtest(mapped, static_grid, PARAMS.as_array(), VENUE).digest == r.digest


def test_a_window_tape_starts_its_clock_at_the_window_start_cached_or_not(tmp_path):
    import shutil

    root = tmp_path / "lake"
    shutil.copytree(REPO / "data" / "sample" / "lake", root)
    lo, hi = 1_723_161_300_000_000_000, 1_723_161_480_000_000_000  # 2024-08-08T23:55 .. 23:58
    win = load_tape(root, "binance-usdm", "BTCUSDT", lo, hi)
    load_tape(root, "binance-usdm", "BTCUSDT", lo, hi, cache=True)
    mapped = load_tape(root, "binance-usdm", "BTCUSDT", lo, hi, cache=True)
    assert win.window_start_ns == mapped.window_start_ns == lo
    explicit = run_backtest(win, static_grid, PARAMS.as_array(), VENUE, start_ns=lo)
    assert explicit.steps["ts"][0] == lo + VENUE.step_ns
    assert run_backtest(win, static_grid, PARAMS.as_array(), VENUE).digest == explicit.digest
    assert run_backtest(mapped, static_grid, PARAMS.as_array(), VENUE).digest == explicit.digest
    # start_ns=0 still asks for a clock from the first event: another run.
    assert run_backtest(win, static_grid, PARAMS.as_array(), VENUE, start_ns=0).digest != explicit.digest


def test_gates_in_the_loop_block_and_count(result):
    from grinder.core.gates import GateConfig

    r, tape = result
    gated = run_backtest(tape, static_grid, PARAMS.as_array(), VENUE,
                         gates=GateConfig(rate_capacity=10, rate_per_s=20, max_position=0.01))  # fmt: skip
    assert gated.counters["blocked_rate_limit"] > 0 and gated.counters["blocked_max_position"] > 0
    assert gated.counters["placed"] < r.counters["placed"] and gated.digest != r.digest
    again = run_backtest(tape, static_grid, PARAMS.as_array(), VENUE,
                         gates=GateConfig(rate_capacity=10, rate_per_s=20, max_position=0.01))  # fmt: skip
    assert again.digest == gated.digest


def test_tabulated_local_view_and_looked_up_one_give_the_same_run(result):
    from grinder.sim.backtest import decision_inputs, prepare

    r, tape = result
    rep = prepare(tape, VENUE)
    table = decision_inputs(tape, rep, VENUE)
    assert len(table[1]) >= r.counters["decisions"]
    e = np.empty(0, np.int64)
    empty = (table[0], e, e, e, np.empty(0), np.empty(0), np.empty(0, np.bool_), table[7])
    looked_up = run_backtest(tape, static_grid, PARAMS.as_array(), VENUE, replay=rep, decisions=empty)
    assert looked_up.digest == r.digest and looked_up.counters == r.counters


def test_more_fills_than_the_buffers_hold_reruns_with_larger_ones(result, monkeypatch):
    import grinder.sim.backtest as bt

    r, tape = result
    monkeypatch.setattr(bt, "FILL_CAP", 7)  # a few reruns, each from a fresh start
    small = run_backtest(tape, static_grid, PARAMS.as_array(), VENUE)
    assert small.counters["fills"] > 7 * 4 and small.digest == r.digest and small.counters == r.counters
    assert all(a.base is None for a in r.fills.values())  # copies, not views that keep the buffers alive


# --- Two captures 15 months apart in one lake (issue 28): no trading on the older capture's book ---

SNAP_2024_NS = 1_721_347_022_750 * 1_000_000  # exchange time (T) of btcusdt_20240718's snapshot, line 14
MID_2024 = 63_950.0
MID_2023 = 28_140.0


def two_capture_lake(root, real_dir):
    """The first lines of the 2023-04-04 and 2024-07-18 BTCUSDT captures (each with its snapshot), two ingests."""
    from grinder.data.ingest.binance import parse_binance
    from grinder.data.instruments import resolve_instrument
    from grinder.data.lake import Lake
    from tests.conftest import write_capture

    inst = resolve_instrument("binance-usdm", "BTCUSDT")
    for name, lines in (("btcusdt_20230404.dat.gz", 2000), ("btcusdt_20240718.gz", 3000)):
        with gzip.open(real_dir / name, "rb") as f:
            cut = write_capture(root.parent / f"cut_{name}", [f.readline() for _ in range(lines)])
        Lake(root).write(parse_binance([cut], inst), [cut])
    return root


@pytest.fixture(scope="module")
def gap_lake(real_dir, tmp_path_factory):
    return two_capture_lake(tmp_path_factory.mktemp("gap") / "lake", real_dir)


def test_a_start_before_a_captures_snapshot_waits_for_it_and_never_sees_the_older_book(gap_lake):
    start = int(np.datetime64("2024-07-18T23:57", "ns").astype(np.int64))
    tape = load_tape(gap_lake, "binance-usdm", "BTCUSDT", start, start + 120 * 10**9)
    # No row of the 2023 capture is on the tape: the warm-up stops at the coverage gap.
    assert tape.ts_exch[0] >= start
    p = StaticGridParams(levels=20, interval=1.0, half_spread=2.0, order_qty=0.1, max_position=5.0)  # make run's
    r = run_backtest(tape, static_grid, p.as_array(), VENUE, start_ns=start)
    f, st = r.fills, r.steps
    # Decisions before the snapshot reached the local side: no quote open, no mid, the kernel not called.
    synced_from = st["ts"][np.flatnonzero(~np.isnan(st["mid"]))[0]]
    early = st["ts"] < synced_from
    assert early.sum() >= 20 and r.counters["unsynced_decisions"] == early.sum()
    assert (st["open_orders"][early] == 0).all() and np.isnan(st["quote_bid"][early]).all()
    assert synced_from > SNAP_2024_NS  # the local side sees the snapshot after the exchange sent it
    # Quotes and fills only after the sync, all about the 2024 mid, none about the 2023 one.
    assert len(f["price"]) > 0 and (f["ts_exch"] > SNAP_2024_NS).all()
    quotes = np.concatenate([st["quote_bid"], st["quote_ask"], f["price"]])
    quotes = quotes[~np.isnan(quotes)]
    assert np.abs(quotes - MID_2024).max() < 100.0
    assert np.abs(st["mid"][~early] - MID_2024).max() < 100.0
    assert r.equity > -1_000.0  # the run lost 35,809 USDT in these 2 minutes


# --- The decision clock skips coverage gaps: steps follow the data, not the calendar ---

# A grid that trades in both captures' first seconds (0.004 BTC is above the minimum notional in 2023 too).
DENSE = StaticGridParams(levels=20, interval=0.1, half_spread=0.1, order_qty=0.004, max_position=0.2)


def _step_bound(tape) -> int:
    """Steps a run may take: the covered time, plus at most one stale minute (STALE_NS) after each span."""
    from grinder.data.coverage import spans_of_times
    from grinder.sim.backtest import STALE_NS

    spans = spans_of_times(tape.ts_exch)
    covered = sum(s.duration_ns for s in spans)
    return (covered + len(spans) * STALE_NS) // VENUE.step_ns + 2 * len(spans) + 2


def _gap_shrunk_to(tape, gap_ns: int):
    """The two-capture tape with its later capture moved earlier, so the coverage gap lasts `gap_ns`."""
    import dataclasses

    from grinder.data.tape import GAP_RESET_REF, Series

    at = int(np.flatnonzero(tape.ref == GAP_RESET_REF)[0])
    cut = int(tape.ts_exch[at])
    shift = cut - int(tape.ts_exch[at - 1]) - gap_ns
    ts_exch, ts_local = tape.ts_exch.copy(), tape.ts_local.copy()
    ts_exch[at:] -= shift
    ts_local[at:] -= shift

    def moved(series):
        later = series.ts_exch >= cut
        cols = {k: (np.where(later, v - shift, v) if k in ("ts_exch", "ts_local", "next_funding_ts") else v)
                for k, v in series.columns.items()}  # fmt: skip
        return Series(cols)

    return dataclasses.replace(tape, ts_exch=ts_exch, ts_local=ts_local, bbo=moved(tape.bbo),
                               funding=moved(tape.funding))  # fmt: skip


def test_captures_15_months_apart_take_steps_only_while_covered(gap_lake):
    from grinder.data.tape import GAP_RESET_REF
    from grinder.sim.backtest import corrected_local_times

    tape = load_tape(gap_lake, "binance-usdm", "BTCUSDT")  # no start or end: both captures
    # One local clock for both runs below: corrected on its own, the 2023 capture would not get the
    # 2024 recorder's offset (its clock runs ~1.5 s behind), and every decision would move.
    offset = int(corrected_local_times(tape)[0] - tape.ts_local[0])
    venue = VENUE.model_copy(update={"local_clock_offset_ns": offset})
    r = run_backtest(tape, static_grid, DENSE.as_array(), venue)
    st = r.steps
    calendar = (tape.ts_local.max() - tape.ts_exch.min()) // VENUE.step_ns  # ~4e8 steps of 100 ms
    assert calendar > 10**8
    assert len(st["ts"]) == r.counters["decisions"] <= _step_bound(tape)  # about 1,200
    # One grid throughout, with one jump over the 15 months between the captures.
    d = np.diff(st["ts"])
    assert (d % VENUE.step_ns == 0).all() and (d > VENUE.step_ns).sum() == 1
    assert d.max() > 400 * 86_400 * 10**9
    # The first capture's run is the same as a backtest of that capture alone: every fill and step.
    cut = int(tape.ts_exch[np.flatnonzero(tape.ref == GAP_RESET_REF)[0]])
    alone = run_backtest(load_tape(gap_lake, "binance-usdm", "BTCUSDT", end_ns=cut), static_grid,
                         DENSE.as_array(), venue)  # fmt: skip
    first = r.fills["ts_exch"] < cut
    assert first.sum() == len(alone.fills["ts_exch"]) >= 20
    for k, v in alone.fills.items():
        assert np.array_equal(r.fills[k][first], v), k
    for k, v in alone.steps.items():
        assert np.array_equal(st[k][: len(v)], v, equal_nan=True), k
    # The later capture trades too, about its own mid; no step claims time inside the gap.
    later = r.fills["price"][~first]
    assert len(later) >= 20 and np.abs(later - MID_2024).max() < 100.0
    inside = (st["ts"] > alone.steps["ts"][-1] + 61 * 10**9) & (st["ts"] < cut)
    assert not inside.any()


def test_a_day_long_gap_costs_a_minute_of_steps_not_a_day(gap_lake):
    # The same two captures a day apart: stepping through the gap would take 864,000 decisions.
    tape = _gap_shrunk_to(load_tape(gap_lake, "binance-usdm", "BTCUSDT"), 86_400 * 10**9)
    r = run_backtest(tape, static_grid, DENSE.as_array(), VENUE)
    assert len(r.steps["ts"]) <= _step_bound(tape) < 2_000
    assert r.counters["decisions"] == len(r.steps["ts"])
    d = np.diff(r.steps["ts"])
    assert (d > VENUE.step_ns).sum() == 1 and 86_300 * 10**9 < d.max() < 86_400 * 10**9
    full = run_backtest(load_tape(gap_lake, "binance-usdm", "BTCUSDT"), static_grid, DENSE.as_array(), VENUE)
    # Moving the later capture changes nothing but its times: the same fills, prices and ledger.
    assert np.array_equal(r.fills["price_ticks"], full.fills["price_ticks"])
    assert np.array_equal(r.fills["qty"], full.fills["qty"])
    assert (r.position, r.balance, r.fees) == (full.position, full.balance, full.fees)


def test_a_run_across_a_coverage_gap_says_so_and_what_the_position_held_across_it_did(gap_lake, tmp_path):
    from grinder.sim.run_folder import gaps_crossed
    from tests.cli.test_cli import grinder

    tape = load_tape(gap_lake, "binance-usdm", "BTCUSDT")
    r = run_backtest(tape, static_grid, DENSE.as_array(), VENUE)
    (gap,) = gaps_crossed(r.steps)
    assert gap["seconds"] > 400 * 86_400  # April 2023 to July 2024
    i = int(np.flatnonzero(r.steps["ts"] == gap["from_ns"])[0])
    assert r.steps["ts"][i + 1] == gap["to_ns"]
    assert gap["position"] == r.steps["position"][i] != 0  # the 2023 grid ends holding inventory
    assert gap["equity_change"] == pytest.approx(r.steps["equity"][i + 1] - r.steps["equity"][i])
    # A BTC position carried from ~28,000 to ~64,000 moves equity by thousands: the CLI says so.
    assert abs(gap["equity_change"]) > 1_000 * abs(gap["position"])
    one = gaps_crossed(run_backtest(load_tape(REPO / "data" / "sample" / "lake", "binance-usdm", "BTCUSDT"),
                                    static_grid, DENSE.as_array(), VENUE).steps)  # fmt: skip
    assert one == []
    p = ["-p", f"levels={DENSE.levels}", "-p", f"interval={DENSE.interval}", "-p", f"half_spread={DENSE.half_spread}",
         "-p", f"order_qty={DENSE.order_qty}", "-p", f"max_position={DENSE.max_position}"]  # fmt: skip
    cli = grinder("backtest", "static_grid", "--root", gap_lake, *p, "--no-report", "--no-track", "--out", tmp_path)
    assert cli.returncode == 0, cli.stderr
    assert "warning: the run jumped 1 coverage gap(s) (4" in cli.stderr and "held across 1 of them" in cli.stderr
    (summary,) = tmp_path.glob("*/summary.json")
    assert len(json.loads(summary.read_text())["coverage_gaps"]) == 1
