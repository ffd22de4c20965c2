"""The quantitative rules in a run's summary.json, report.html and MLflow metrics, from a real sample backtest.

The engine hands a result its `qrules` series; here the series is made by driving the compiled
tracker over a cancel-and-replace order flow at the backtest's own decision times.
"""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest

from grinder.core.qrules import (
    CANCELLED,
    FILLED,
    GTC,
    OUT,
    QuantRules,
    new_qr_state,
    qr_end,
    qr_fill,
    qr_new,
    qr_ratios,
)
from grinder.data.tape import load_tape
from grinder.report.load import load_run
from grinder.report.qrules import qr_metrics, qr_summary
from grinder.sim.backtest import VenueConfig, run_backtest
from grinder.sim.run_folder import summarize, write_run
from grinder.strategies.static_grid import StaticGridParams, static_grid
from grinder.track.mlflow_store import backtest_metrics, backtest_tags
from tests.conftest import REPO

PARAMS = StaticGridParams(levels=5, interval=1.0, half_spread=2.0, order_qty=0.002, max_position=0.04)
# Small recording thresholds, so the ratios apply within the sample's minute of data.
RULES = QuantRules(ufr_min_orders=50, gtc_cancel_min_orders=50, expire_min_orders=50, dust_min_orders=50)


def cancel_replace(ts: np.ndarray, rules: QuantRules, per_step: int = 2, fill_every: int = 250) -> dict:
    """At each decision: cancel the last decision's open orders (one step old: invalid cancels), place
    `per_step` post-only orders of 0.01 BTC (~600 USDT); every `fill_every` decisions the first one fills."""
    st, cfg, out = new_qr_state(rules), rules.as_array(), np.empty(len(OUT))
    series = {k: np.empty(len(ts)) for k in OUT}
    live: list[int] = []
    for i, t in enumerate(ts.tolist()):
        for r in live:
            qr_end(st, r, t, CANCELLED)
        live = [qr_new(st, t, GTC, 0.01, 600.0) for _ in range(per_step)]
        if i % fill_every == 0:
            qr_fill(st, live[0], t, 0.01, 600.0)
            qr_end(st, live.pop(0), t, FILLED)
        qr_ratios(st, cfg, t, out)
        for k, v in zip(OUT, out.tolist(), strict=True):
            series[k][i] = v
    return {"ts": ts.copy(), **series}


@pytest.fixture(scope="module")
def rules_file(tmp_path_factory):
    """RULES as a thresholds file, named in the gates as a backtest's config would."""
    path = tmp_path_factory.mktemp("rules") / "rules.toml"
    path.write_text("".join(f"{k} = {str(v).lower() if isinstance(v, bool) else v!r}\n"
                            for k, v in RULES.model_dump(exclude={"source"}).items()))  # fmt: skip
    return str(path)


@pytest.fixture(scope="module")
def result():
    """A real sample backtest, its rules' series replaced by a cancel-and-replace flow at its decision times."""
    tape = load_tape(REPO / "data" / "sample" / "lake", "binance-usdm", "BTCUSDT")
    res = run_backtest(tape, static_grid, PARAMS.as_array(), VenueConfig())
    return dataclasses.replace(res, qrules=cancel_replace(res.steps["ts"], RULES), qrules_max={})


def test_summary_pins_max_time_and_share_of_a_hand_made_series():
    ts = np.arange(5, dtype=np.int64) * 10**8
    nan = math.nan
    qr = {"ts": ts, "ufr": np.array([nan, 0.5, 0.995, 0.98, nan]), "gtc_cancel": np.full(5, nan),
          "expire": np.full(5, nan), "dust": np.array([nan, 0.0, 0.0, 0.0, 0.0]),
          "orders_10s": np.array([0.0, 100, 301, 300, 10]), "orders_1m": np.array([0.0, 100, 401, 700, 710]),
          "orders_1d": np.array([0.0, 100, 401, 700, 710])}  # fmt: skip
    s = qr_summary(qr, QuantRules())
    ufr = s["metrics"]["ufr"]
    assert (ufr["max"], ufr["max_at_ns"], ufr["threshold"]) == (0.995, 2 * 10**8, 0.99)
    assert ufr["share_breached"] == pytest.approx(1 / 5) and ufr["share_applied"] == pytest.approx(3 / 5)
    assert s["metrics"]["gtc_cancel"]["max"] is None and s["metrics"]["gtc_cancel"]["share_breached"] == 0.0
    assert s["metrics"]["orders_10s"]["share_breached"] == pytest.approx(1 / 5)  # 301 > 300; 300 is allowed
    assert s["metrics"]["orders_1m"]["share_breached"] == 0.0  # 710 <= 1,200
    assert s["metrics"]["orders_1d"]["threshold"] is None  # no daily limit: never a breach
    assert s["breaches"] == ["ufr", "orders_10s"] and s["rules_ok"] is False
    s = qr_summary({**qr, "ufr": np.full(5, 0.5), "orders_10s": np.zeros(5)}, QuantRules())
    assert s["rules_ok"] is True and s["breaches"] == []


def test_the_engine_records_the_rules_at_every_step():
    tape = load_tape(REPO / "data" / "sample" / "lake", "binance-usdm", "BTCUSDT")
    res = run_backtest(tape, static_grid, PARAMS.as_array(), VenueConfig())
    qr = res.qrules
    assert np.array_equal(qr["ts"], res.steps["ts"]) and set(qr) == {"ts", *OUT}
    assert np.nanmax(qr["orders_1d"]) == res.qrules_max["orders_1d"] <= res.counters["placed"]
    s = summarize(res, {"gates": {}})["quant_rules"]
    assert s["metrics"]["orders_1m"]["max"] == res.qrules_max["orders_1m"] and res.counters["qr_overflow"] == 0


def test_a_cancel_and_replace_flow_breaks_the_cancel_rule(result):
    qr = result.qrules
    # Every order is cancelled 100 ms after placing but one in 500 (filled): the GTC cancel ratio nears 1.
    assert 0.99 <= np.nanmax(qr["gtc_cancel"]) < 1.0
    assert np.isnan(qr["gtc_cancel"][:24]).all()  # fewer than 50 GTC orders in the window yet
    s = qr_summary(qr, RULES)
    # One order in 500 fills: the unfilled ratio breaks its rule too.
    assert s["breaches"] == ["ufr", "gtc_cancel"] and not s["rules_ok"]
    assert s["metrics"]["orders_10s"]["max"] == 200  # 2 orders a decision, 100 decisions in 10 s


def test_summary_json_report_and_mlflow_metrics_carry_the_rules(result, rules_file, tmp_path):
    meta = {"strategy": "static_grid", "selection": {"venue": "binance-usdm", "symbol": "BTCUSDT"},
            "gates": {"quant_rules_file": rules_file}}  # fmt: skip
    summary = summarize(result, meta)
    run_dir = write_run(tmp_path, "qr", result, summary)
    on_disk = json.loads((run_dir / "summary.json").read_text())
    assert on_disk["quant_rules"]["rules_ok"] is False and on_disk["quant_rules"]["breaches"] == ["ufr", "gtc_cancel"]
    run = load_run(run_dir)
    assert run.qrules is not None and np.array_equal(run.qrules["ts"], result.steps["ts"])
    page = (run_dir / "report.html").read_text()
    assert "<h2>Binance quantitative rules</h2>" in page and 'id="grinder-qrules"' in page
    assert "Breached: unfilled ratio (UFR), GTC cancel ratio (ICR)" in page
    metrics = backtest_metrics(on_disk)
    assert metrics["quant_rules.rules_ok"] == 0.0
    assert metrics["quant_rules.gtc_cancel_max"] == pytest.approx(np.nanmax(result.qrules["gtc_cancel"]))
    assert backtest_tags(on_disk, run_dir, None)["rules_ok"] == "False"


def test_a_run_without_the_series_has_no_section(result, tmp_path):
    plain = dataclasses.replace(result, qrules={}, qrules_max={})  # what record="equity" keeps, less the maxima
    summary = summarize(plain, {"strategy": "static_grid"})
    assert "quant_rules" not in summary
    run_dir = write_run(tmp_path, "plain", plain, summary)
    assert not (run_dir / "qrules.parquet").exists()
    assert "Binance quantitative rules" not in (run_dir / "report.html").read_text()
    row = qr_metrics(plain, RULES)
    assert row["rules_ok"] is None and math.isnan(row["qr_ufr_max"])


def test_sweep_columns_from_the_series_or_the_maxima(result):
    row = qr_metrics(result, RULES)
    assert row["rules_ok"] is False
    assert row["qr_gtc_cancel_max"] == pytest.approx(np.nanmax(result.qrules["gtc_cancel"]))
    assert row["qr_orders_10s_max"] == 200
    # A sweep's backtests keep only the maxima: 200 orders in 10 s breaks a 150 limit, not the venue's 300.
    maxima = dataclasses.replace(result, qrules={}, qrules_max={**dict.fromkeys(OUT, math.nan), "orders_10s": 200.0})
    assert qr_metrics(maxima, RULES)["rules_ok"] is True
    assert qr_metrics(maxima, RULES.model_copy(update={"orders_10s_max": 150}))["rules_ok"] is False
