"""PnL attribution: spread + taking + inventory - fees - funding is the ledger's equity at every step; markouts."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from grinder.core.gates import GateConfig
from grinder.core.ledger import book_fill, equity, new_ledger
from grinder.core.order_kind import FLATTEN_LEVEL
from grinder.core.strategy import get
from grinder.data.lake import Lake
from grinder.data.synth import FUNDING_PERIOD_NS, synth_batch
from grinder.data.tape import load_tape
from grinder.report.attribution import COMPONENTS, attribute, markouts, per_level
from grinder.report.attribution_html import attribution_section
from grinder.report.load import load_run
from grinder.sim.backtest import VenueConfig, run_backtest
from grinder.sim.run_folder import summarize, write_run
from tests.conftest import REPO

TOL = 1e-9
S = 1_000_000_000


def check_identity(res, a) -> None:
    """The five components add up to the ledger's equity at every step that has one (to TOL), and the
    trading part (spread + taking + inventory) to the ledger's cash + position marked at the mid."""
    eq = res.steps["equity"]
    ok = np.isfinite(eq)
    assert ok.sum() > 0.99 * len(eq)
    assert np.max(np.abs(a.total[ok] - eq[ok])) <= TOL
    trading = res.steps["balance"] + res.steps["position"] * res.steps["mid"] if not res.inverse else None
    if trading is not None:
        assert np.max(np.abs((a.spread + a.taking + a.inventory)[ok] - trading[ok])) <= TOL
    assert np.array_equal(-a.fees, res.steps["fees"])
    assert a.totals()["equity"] == pytest.approx(res.equity, abs=TOL)


@pytest.fixture(scope="module")
def sample():
    tape = load_tape(REPO / "data" / "sample" / "lake", "binance-usdm", "BTCUSDT")
    grid = get("static_grid")
    params = grid.validate({"interval": 1.0, "half_spread": 2.0, "order_qty": 0.1, "max_position": 5})
    return run_backtest(tape, grid.kernel, grid.vector(params), VenueConfig(), grid.max_targets)


@pytest.fixture(scope="module")
def synth_tape(tmp_path_factory):
    """20 minutes of synthetic tape around a funding settlement (every 8 h in synth)."""
    root = tmp_path_factory.mktemp("lake")
    start = 1_704_067_200_000_000_000 + FUNDING_PERIOD_NS - 600 * S
    Lake(root).write(synth_batch(300_000, seed=7, start_ns=start), [], key="t")
    return load_tape(root, "synthetic", "SYNTHUSDT")


def test_identity_on_the_sample_run(sample):
    a = attribute(sample.steps, sample.fills, sample.funding, sample.inverse, sample.contract_size)
    check_identity(sample, a)
    # The mid at a fill: the steps' mid at the last decision at or before its exchange time.
    f, st_ = sample.fills, sample.steps
    for i in range(0, len(f["qty"]), 97):
        before = np.flatnonzero((st_["ts"] <= f["ts_exch"][i]) & np.isfinite(st_["mid"]))
        assert a.fill_mid[i] == st_["mid"][before[-1]]
    t = a.totals()
    # Issue #24: the fees (1,277) are more than the trading loss, which the attribution now shows.
    assert t["fees"] == pytest.approx(-1277.18166, abs=1e-5) and t["funding"] == 0.0
    assert -t["fees"] > -(t["spread"] + t["inventory"]) > 0
    assert t["spread"] > 0 > t["inventory"]


def test_identity_with_funding_on_a_synthetic_tape(synth_tape):
    grid = get("static_grid")
    params = grid.validate({"interval": 1.0, "half_spread": 5.0, "order_qty": 0.01, "max_position": 0.5})
    res = run_backtest(synth_tape, grid.kernel, grid.vector(params), VenueConfig(), grid.max_targets)
    assert len(res.funding["ts"]) == 1 and res.funding["amount"][0] != 0.0 and len(res.fills["qty"]) > 100
    a = attribute(res.steps, res.fills, res.funding, res.inverse, res.contract_size)
    check_identity(res, a)
    assert a.funding[-1] == pytest.approx(-res.funding_paid)
    at = np.searchsorted(res.steps["ts"], res.funding["ts"][0])
    assert a.funding[at - 1] == 0.0 and a.funding[at] == -res.funding["amount"][0]  # paid at its settlement


def test_identity_on_a_synthetic_inverse_run(synth_tape):
    inverse = synth_tape.instrument.model_copy(update={"contract": "inverse", "contract_size": 100.0, "lot_size": 1.0,
                                                        "min_notional": 0.0, "settle": "SYNTH"})  # fmt: skip
    tape = replace(synth_tape, instrument=inverse)
    grid = get("static_grid")
    params = grid.validate({"interval": 1.0, "half_spread": 5.0, "order_qty": 3, "max_position": 100})
    res = run_backtest(tape, grid.kernel, grid.vector(params), VenueConfig(), grid.max_targets)
    assert res.inverse and len(res.fills["qty"]) > 100 and len(res.funding["ts"]) == 1
    a = attribute(res.steps, res.fills, res.funding, True, 100.0)
    check_identity(res, a)
    # Spread capture through the ledger's inverse value: q x contract_size x (1/price - 1/mid), q signed.
    f = res.fills
    q = np.where(f["side"] > 0, 1.0, -1.0) * f["qty"]
    assert a.spread[-1] == pytest.approx(np.sum(q * 100.0 * (1 / f["price"] - 1 / a.fill_mid)), abs=1e-12)


def hand_steps():
    """Ten steps one second apart: mid 100 for three seconds, then 102, then 98 from 7 s on."""
    ts = np.arange(10, dtype=np.int64) * S
    mid = np.array([100.0, 100, 100, 102, 102, 102, 102, 98, 98, 98])
    return ts, mid


def test_hand_built_fills_spread_inventory_and_markouts():
    ts, mid = hand_steps()
    # Buy 1 @ 99 at 0.5 s (mid 100), booked at 1 s; sell 2 @ 102.5 at 3.2 s (mid 102), booked at 4 s.
    fills = {"ts_exch": np.array([S // 2, 3 * S + S // 5]), "ts_local": np.array([S, 4 * S]),
             "side": np.array([1, -1]), "price": np.array([99.0, 102.5]), "qty": np.array([1.0, 2.0])}  # fmt: skip
    position = np.array([0.0, 1, 1, 1, -1, -1, -1, -1, -1, -1])
    fees = np.zeros(10)
    steps = {"ts": ts, "mid": mid, "position": position, "fees": fees}
    funding = {"ts": np.array([8 * S]), "amount": np.array([0.25])}
    a = attribute(steps, fills, funding)
    assert a.fill_mid.tolist() == [100.0, 102.0]
    assert a.spread.tolist() == [0, 1, 1, 1, 2, 2, 2, 2, 2, 2]  # 1 x (100 - 99), then 2 x (102.5 - 102)
    # Long 1 from 100 to 102 (+2), then short 1 from 102 to 98 (+4).
    assert a.inventory.tolist() == [0, 0, 0, 2, 2, 2, 2, 6, 6, 6]
    assert a.funding.tolist() == [0] * 8 + [-0.25] * 2
    cash = np.array([0, -99, -99, -99, 106, 106, 106, 106, 106, 106])
    assert np.allclose(a.total, cash + position * mid - 0.25 * (ts >= 8 * S), atol=0, rtol=0)
    rows = {(r["horizon_s"], r["side"]): r for r in markouts(steps, fills)}
    buy1, sell1 = rows[(1, "buy")], rows[(1, "sell")]
    assert buy1["fills"] == 1 and buy1["mean_settle"] == 1.0  # mid at 1.5 s is 100: 100 - 99
    assert buy1["mean_bps"] == pytest.approx(1 / 99 * 1e4)
    assert sell1["mean_settle"] == 2 * (102.5 - 102)  # mid at 4.2 s is 102
    assert rows[(10, "buy")]["past_end"] == 1 and rows[(10, "buy")]["fills"] == 0  # 10.5 s is after the last step
    assert rows[(10, "sell")] == {"horizon_s": 10, "side": "sell", "fills": 0, "past_end": 1, "mean_bps": None,
                                  "mean_settle": None, "total_settle": 0.0}  # fmt: skip
    assert rows[(60, "all")]["past_end"] == 2 and rows[(60, "all")]["fills"] == 0


def test_hand_built_inverse_spread():
    ts, mid = hand_steps()
    fills = {"ts_exch": np.array([S // 2]), "ts_local": np.array([S]), "side": np.array([-1]),
             "price": np.array([100.5]), "qty": np.array([4.0])}  # fmt: skip
    steps = {"ts": ts, "mid": mid, "position": np.where(ts >= S, -4.0, 0.0), "fees": np.zeros(10)}
    a = attribute(steps, fills, {"ts": np.zeros(0, np.int64), "amount": np.zeros(0)}, inverse=True, contract_size=10.0)
    # Sell 4 contracts of 10 USD above the mid: 40 x (1/100 - 1/100.5) coin.
    assert a.spread[-1] == pytest.approx(40 * (1 / 100 - 1 / 100.5), rel=1e-12)
    assert a.inventory[-1] == pytest.approx(-4 * 10 * (-1 / 98 + 1 / 100), rel=1e-12)


@st.composite
def fill_runs(draw):
    """A mid path on a step grid, fills between steps (reported after a latency), funding settlements."""
    n = draw(st.integers(2, 40))
    mid = 100.0 + np.cumsum(draw(st.lists(st.integers(-8, 8), min_size=n, max_size=n))) * 0.25
    mid = np.maximum(mid, 50.0)
    k = draw(st.integers(0, 30))
    at = np.sort(np.array(draw(st.lists(st.integers(0, n * 1000 - 1), min_size=k, max_size=k)), np.int64))
    lat = np.array(draw(st.lists(st.integers(0, 2500), min_size=k, max_size=k)), np.int64)
    side = np.array(draw(st.lists(st.sampled_from([1, -1]), min_size=k, max_size=k)), np.int64)
    qty = np.array(draw(st.lists(st.integers(1, 40), min_size=k, max_size=k)), np.float64) * 0.125
    ticks = np.array(draw(st.lists(st.integers(-12, 12), min_size=k, max_size=k)), np.float64) * 0.25
    fee_rate = draw(st.sampled_from([0.0, 0.0002, -0.0001]))
    n_f = draw(st.integers(0, 3))
    f_ts = np.sort(np.array(draw(st.lists(st.integers(0, n * 1000), min_size=n_f, max_size=n_f)), np.int64))
    f_amt = np.array(draw(st.lists(st.integers(-100, 100), min_size=n_f, max_size=n_f)), np.float64) * 0.01
    return n, mid, at, lat, side, qty, ticks, fee_rate, f_ts, f_amt


@settings(max_examples=300, deadline=None)
@given(fill_runs(), st.booleans())
def test_identity_on_random_fill_sequences_through_the_ledger(run, inverse):
    n, mid, at, lat, side, qty, ticks, fee_rate, f_ts, f_amt = run
    size = 10.0 if inverse else 1.0
    ms = 1_000_000
    ts = np.arange(n, dtype=np.int64) * 1000 * ms
    ts_exch, ts_local = at * ms, (at + lat) * ms
    # The fill's price: around the mid of the step before it (any price; the identity does not care).
    price = np.maximum(mid[np.searchsorted(ts, ts_exch, "right") - 1] + ticks, 1.0)
    order = np.argsort(ts_local, kind="stable")  # the ledger books fills as their reports arrive
    fills = {"ts_exch": ts_exch[order], "ts_local": ts_local[order], "side": side[order], "price": price[order],
             "qty": qty[order]}  # fmt: skip
    led = new_ledger()
    pos, fees, eq = np.zeros(n), np.zeros(n), np.zeros(n)
    i = 0
    for s in range(n):
        while i < len(order) and fills["ts_local"][i] <= ts[s]:
            book_fill(led, int(fills["side"][i]), fills["price"][i], fills["qty"][i], fee_rate, inverse, size)
            i += 1
        paid = f_amt[f_ts <= ts[s]].sum()
        pos[s], fees[s], eq[s] = led[0], led[3], equity(led, mid[s], paid, inverse, size)
    steps = {"ts": ts, "mid": mid, "position": pos, "fees": fees}
    a = attribute(steps, fills, {"ts": f_ts, "amount": f_amt}, inverse, size)
    assert np.max(np.abs(a.total - eq)) <= TOL
    # Inventory on its own: position x change of the unit value, plus each fill's carry from its mid.
    u = (lambda p: -size / p) if inverse else (lambda p: p)
    inv = np.zeros(n)
    for s in range(1, n):
        inv[s] = inv[s - 1] + pos[s - 1] * (u(mid[s]) - u(mid[s - 1]))
        new = (fills["ts_local"] > ts[s - 1]) & (fills["ts_local"] <= ts[s])
        q = np.where(fills["side"][new] > 0, 1.0, -1.0) * fills["qty"][new]
        inv[s] += np.sum(q * (u(mid[s]) - u(a.fill_mid[new])))
    assert np.allclose(a.inventory[1:], inv[1:], atol=TOL, rtol=0)


def test_per_level_counts_and_rates():
    fills = {"level": np.array([1, -1, 1, 2, -1, 1]), "side": np.array([-1, 1, -1, -1, 1, -1]),
             "qty": np.array([0.1, 0.1, 0.2, 0.1, 0.1, 0.1])}  # fmt: skip
    rows = {r["level"]: r for r in per_level(fills, 1800.0)}
    assert rows[1]["fills"] == 3 and rows[1]["sells"] == 3 and rows[1]["qty"] == pytest.approx(0.4)
    assert rows[1]["per_hour"] == 6.0 and rows[-1]["buys"] == 2 and rows[2]["share"] == pytest.approx(1 / 6)


def test_summary_and_report_show_the_attribution(sample, tmp_path):
    summary = summarize(sample, {"strategy": "static_grid"})
    att = summary["attribution"]
    assert att["equity"] == pytest.approx(summary["equity"], abs=TOL)
    parts = att["spread"] + att["taking"] + att["inventory"] + att["fees"] + att["funding"]
    assert parts == pytest.approx(att["equity"], abs=1e-9) and att["taking"] == 0.0  # post-only quotes only
    assert {(r["horizon_s"], r["side"]) for r in summary["markouts"]} == {
        (h, s) for h in (1, 10, 60) for s in ("buy", "sell", "all")
    }
    m60 = next(r for r in summary["markouts"] if r["horizon_s"] == 60 and r["side"] == "all")
    assert m60["fills"] + m60["past_end"] == len(sample.fills["qty"]) and m60["past_end"] > 0
    run_dir = write_run(tmp_path, "sample", sample, summary)
    assert json.loads((run_dir / "summary.json").read_text())["attribution"]["fees"] == att["fees"]
    page = (run_dir / "report.html").read_text()
    for text in ("Where the money went", "grinder-attribution", "cumulative PnL (USDT)", "spread capture",
                 "Markouts after fills", "past the end", "Fills per grid level", "Mean queue time"):  # fmt: skip
        assert text in page, text
    assert f"data-value='{att['fees']!r}'" in page


def test_a_flatten_by_the_drawdown_guard_shows_as_taking_and_the_parts_still_sum_to_equity(tmp_path):
    # The sample's grid loses to fees; a tight drawdown guard with a flatten closes the position by
    # reduce-only IOC orders (taker fills at FLATTEN_LEVEL), whose crossing cost is the "taking" part.
    tape = load_tape(REPO / "data" / "sample" / "lake", "binance-usdm", "BTCUSDT")
    grid = get("static_grid")
    params = grid.validate({"interval": 1.0, "half_spread": 2.0, "order_qty": 0.1, "max_position": 5})
    gates = GateConfig(max_drawdown=20.0, flatten_bps=10.0)
    res = run_backtest(tape, grid.kernel, grid.vector(params), VenueConfig(), grid.max_targets, gates=gates)
    flat = res.fills["level"] == FLATTEN_LEVEL
    assert flat.any() and not res.fills["maker"][flat].any() and res.fills["maker"][~flat].all()
    a = attribute(res.steps, res.fills, res.funding, res.inverse, res.contract_size)
    check_identity(res, a)
    t = a.totals()
    assert t["taking"] < 0.0 and sum(t[k] for k in COMPONENTS) == pytest.approx(t["equity"], abs=TOL)
    summary = summarize(res, {"strategy": "static_grid"})
    assert summary["attribution"]["taking"] == pytest.approx(t["taking"], abs=TOL)
    run_dir = write_run(tmp_path, "flatten", res, summary)
    html = attribution_section(load_run(run_dir))
    assert "taking (taker fills" in html and f"data-value='{t['taking']!r}'" in html
