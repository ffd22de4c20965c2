"""The HTML report on hand-built run folders: content, statistics against vectorbt, long runs, bad input."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from grinder.errors import DataError
from grinder.io import atomic
from grinder.report.downsample import change_indices, even_indices, minmax_indices
from grinder.report.figures import MAX_POINTS, main_figure
from grinder.report.html import write_report
from grinder.report.load import load_run
from grinder.report.stats import VBT_WARNING, choose_freq, quiet_vectorbt

T0 = 1_723_161_600_000_000_000  # 2024-08-09 00:00 UTC
STEP = 100_000_000  # 100 ms
RUN_FILES = {"summary.json", "steps.parquet", "fills.parquet", "funding.parquet"}
# The same filter the report applies, for the tests that call vectorbt themselves.
vbt_quiet = pytest.mark.filterwarnings(f"ignore:{VBT_WARNING}:DeprecationWarning")


def make_steps(n: int, seed: int = 1) -> dict[str, np.ndarray]:
    """n decisions 100 ms apart: a random-walk mid, an inventory, quotes either side and a wandering equity."""
    rng = np.random.default_rng(seed)
    mid = 60_000.0 + np.cumsum(rng.normal(0.0, 2.0, n))
    position = np.round(np.cumsum(rng.choice([-0.01, 0.0, 0.01], n, p=[0.05, 0.9, 0.05])), 2)
    equity = np.cumsum(rng.normal(0.02, 1.0, n))
    return {
        "ts": T0 + np.arange(n, dtype=np.int64) * STEP,
        "mid": mid,
        "position": position,
        "balance": equity.copy(),
        "fees": np.zeros(n),
        "open_orders": np.full(n, 4, np.int64),
        "mode": rng.choice(3, n, p=[0.7, 0.2, 0.1]).astype(np.int8),
        "quote_bid": np.floor(mid) - 1.0,
        "quote_ask": np.ceil(mid) + 1.0,
        "equity": equity,
    }


def make_fills(steps: dict, k: int, seed: int = 2) -> dict[str, np.ndarray]:
    """k fills at random decisions, alternating sides."""
    rows = np.sort(np.random.default_rng(seed).choice(len(steps["ts"]), k, replace=False))
    price = steps["mid"][rows]
    return {
        "ts_exch": steps["ts"][rows],
        "ts_local": steps["ts"][rows] + 5_000_000,
        "side": np.where(np.arange(k) % 2 == 0, 1, -1).astype(np.int8),
        "price": price,
        "price_ticks": np.round(price * 10).astype(np.int64),
        "qty": np.full(k, 0.01),
        "maker": np.ones(k, np.bool_),
        "fee": price * 0.01 * 0.0002,
    }


def make_summary(steps: dict, fills: dict, **extra) -> dict:
    """A summary.json shaped like `grinder backtest` writes it."""
    return {
        "strategy": "adaptive_grid",
        "params": {"levels": 5, "half_spread": 2.0},
        "venue": {"step_ns": STEP, "local_clock_offset_ns": None},
        "gates": {"max_position": 1.0},
        "selection": {"root": "lake", "venue": "binance-usdm", "symbol": "BTCUSDT", "start": None, "end": None},
        "events": 123_456,
        "fills": len(fills["qty"]),
        "position": float(steps["position"][-1]),
        "balance": 1.0,
        "fees": float(fills["fee"].sum()),
        "funding_paid": 0.0,
        "equity": float(steps["equity"][-1]),
        "counters": {"placed": 10, "cancelled": 4, "blocked_max_position": 7, "blocked_rate_limit": 3},
        "digest": "d1" * 32,
        "seconds": {"load": 0.1, "backtest": 0.2},
        "settle": "USDT",
        "mode_names": ["BASE", "WIDEN", "TIGHTEN", "PAUSE"],
        **extra,
    }


def write_run(path: Path, steps: dict, fills: dict | None = None, summary: dict | None = None) -> Path:
    """A run folder with the four files the report reads."""
    path.mkdir(parents=True, exist_ok=True)
    fills = make_fills(steps, 0) if fills is None else fills
    pq.write_table(pa.table(steps), path / "steps.parquet")
    pq.write_table(pa.table(fills), path / "fills.parquet")
    empty = {"ts": np.zeros(0, np.int64), "position": np.zeros(0), "amount": np.zeros(0)}
    pq.write_table(pa.table(empty), path / "funding.parquet")
    summary = make_summary(steps, fills) if summary is None else summary
    (path / "summary.json").write_text(json.dumps(summary))
    return path


def stat(page: str, label: str) -> float:
    """The full-precision value of one row of the statistics table."""
    m = re.search(rf"<th>{re.escape(label)}</th><td class='num' data-value='([^']+)'>", page)
    assert m, f"no statistic {label!r} in the report"
    return float(m.group(1))


def expected_stats(steps: dict, capital: float, freq: str) -> pd.Series:
    """vectorbt's statistics computed here from every step, without the report's code."""
    import vectorbt  # noqa: F401

    eq = pd.Series(steps["equity"], index=pd.to_datetime(steps["ts"], unit="ns")).resample(freq).last().ffill()
    value = capital + eq.to_numpy()
    rets = pd.Series(value / np.concatenate([[capital], value[:-1]]) - 1.0, index=eq.index)
    acc = rets.vbt.returns(freq=freq, year_freq="365 days")
    return pd.Series(
        {
            "Total Return [%]": acc.total() * 100,
            "Max Drawdown [%]": -acc.max_drawdown() * 100,
            "Sharpe Ratio": acc.sharpe_ratio(),
            "Sortino Ratio": acc.sortino_ratio(),
        }
    )


@pytest.fixture
def run(tmp_path):
    steps = make_steps(3_000)
    fills = make_fills(steps, 60)
    return write_run(tmp_path / "run", steps, fills, make_summary(steps, fills, capital=10_000.0))


def test_report_is_written_self_contained_and_complete(run):
    out = write_report(run)
    assert out == run / "report.html"
    assert {p.name for p in run.iterdir()} == RUN_FILES | {"report.html"}  # no temp file left over
    page = out.read_text()
    assert "plotly.js (basic - minified) v" in page  # the library itself is inline: the partial bundle, once
    assert page.count("plotly.js (basic - minified) v") == 1 and "plotly.js v" not in page
    assert not re.search(r"<script[^>]*\bsrc=", page)
    for trace in ("mid", "our bid", "our ask", "buy fills", "sell fills", "position", "equity", "drawdown (USDT)"):
        assert f'"name":"{trace}"' in page, trace
    assert '"name":"drawdown (% of peak capital + equity)"' in page  # summary states a capital
    for label in ("Total Return [%]", "Max Drawdown [%]", "Sharpe Ratio", "Sortino Ratio", "Calmar Ratio"):
        assert f"<th>{label}</th>" in page
    assert "Benchmark Return" not in page  # there is no benchmark
    for text in ("adaptive_grid", "BTCUSDT", "d1" * 32, "<th>max_position</th><td class='num'>7</td>", "WIDEN"):
        assert text in page, text
    assert "capital 10,000.00 USDT, from summary.json" in page
    assert "3,000 steps" in page


@vbt_quiet
def test_statistics_match_vectorbt_on_every_step(run):
    page = write_report(run).read_text()
    steps = load_run(run).steps
    freq = choose_freq(steps["ts"])
    assert freq == "1s"  # 5 minutes of 100 ms decisions
    want = expected_stats(steps, 10_000.0, freq)
    for label, value in want.items():
        assert stat(page, label) == pytest.approx(value, rel=1e-9), label
    # Returns compound to final equity over capital.
    assert stat(page, "Total Return [%]") == pytest.approx(steps["equity"][-1] / 10_000.0 * 100, rel=1e-9)


def test_default_capital_is_the_largest_gross_notional(tmp_path):
    steps = make_steps(2_000)
    run = write_run(tmp_path / "run", steps)
    page = write_report(run).read_text()
    capital = float(np.max(np.abs(steps["position"]) * steps["mid"]))
    assert f"the largest gross notional held, {capital:,.2f} USDT" in page
    assert stat(page, "Total Return [%]") == pytest.approx(steps["equity"][-1] / capital * 100, rel=1e-9)
    assert "% of peak" not in page  # no stated capital: drawdown in USDT only


def test_zero_fills_flat_and_no_quotes(tmp_path):
    steps = make_steps(500)
    steps["position"][:] = 0.0
    steps["equity"][:] = 0.0
    steps["quote_bid"][:] = np.nan
    steps["quote_ask"][:] = np.nan
    summary = make_summary(steps, make_fills(steps, 0))
    del summary["settle"], summary["mode_names"]
    page = write_report(write_run(tmp_path / "run", steps, summary=summary)).read_text()
    assert "No fills." in page
    assert "No bid of ours was resting" in page and "No ask of ours was resting" in page
    assert "no position was ever held" in page and "Sharpe Ratio" not in page
    assert "mode 0" in page and "Equity (quote)" in page


def test_single_step(tmp_path):
    steps = {k: v[:1] for k, v in make_steps(10).items()}
    fills = make_fills(steps, 1)
    run = write_run(tmp_path / "run", steps, fills, make_summary(steps, fills, capital=1_000.0))
    page = write_report(run).read_text()
    assert stat(page, "Total Return [%]") == pytest.approx(steps["equity"][0] / 1_000.0 * 100)
    assert '"name":"buy fills"' in page


@vbt_quiet
def test_long_run_is_thinned_for_plots_but_not_for_statistics(tmp_path):
    n = 2_000_000  # 55 hours of 100 ms decisions
    steps = make_steps(n, seed=3)
    # A one-step crash at the last decision of a minute: the statistics (1 min returns) and the plot must show it.
    spike = 600 * 1_000 - 1
    steps["equity"][spike] -= 5_000.0
    fills = make_fills(steps, 20_000)
    run = write_run(tmp_path / "run", steps, fills, make_summary(steps, fills, capital=50_000.0))
    page = write_report(run).read_text()
    assert len(page) < 4_000_000  # plotly.js's basic bundle is 1.2 MB; the data adds about 2 MB however long the run
    assert "from all 2,000,000 steps" in page
    assert "20,000 fills: markers show 5,000" in page
    want = expected_stats(steps, 50_000.0, "1min")
    assert stat(page, "Max Drawdown [%]") == pytest.approx(want["Max Drawdown [%]"], rel=1e-9)
    assert stat(page, "Sharpe Ratio") == pytest.approx(want["Sharpe Ratio"], rel=1e-9)
    fig, _ = main_figure(load_run(run))
    eq = next(t for t in fig.data if t.name == "equity")
    assert len(eq.y) <= MAX_POINTS
    assert min(eq.y) == steps["equity"].min()  # the crash survives thinning


@pytest.mark.parametrize("damage", ["missing", "corrupt", "no_equity_column", "empty"])
def test_bad_steps_raise_data_error_and_write_nothing(tmp_path, damage):
    steps = make_steps(100)
    run = write_run(tmp_path / "run", steps)
    path = run / "steps.parquet"
    if damage == "missing":
        path.unlink()
    elif damage == "corrupt":
        path.write_bytes(path.read_bytes()[:200])
    elif damage == "no_equity_column":
        pq.write_table(pa.table({k: v for k, v in steps.items() if k != "equity"}), path)
    else:
        pq.write_table(pa.table({k: v[:0] for k, v in steps.items()}), path)
    with pytest.raises(DataError) as e:
        write_report(run)
    assert e.value.path == str(path)
    assert not (run / "report.html").exists()
    assert {p.name for p in run.iterdir()} <= RUN_FILES


def test_bad_summary_raises_data_error(tmp_path):
    run = write_run(tmp_path / "run", make_steps(50))
    (run / "summary.json").write_text("{not json")
    with pytest.raises(DataError, match="not readable JSON") as e:
        write_report(run)
    assert e.value.path == str(run / "summary.json")
    (run / "summary.json").write_text(json.dumps({"capital": -5}))
    with pytest.raises(DataError, match="capital must be a positive number"):
        write_report(run)
    assert not (run / "report.html").exists()


def test_failed_write_keeps_the_old_report_and_leaves_no_temp_file(run, monkeypatch):
    (run / "report.html").write_text("old")

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(atomic.os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        write_report(run)
    assert (run / "report.html").read_text() == "old"
    assert {p.name for p in run.iterdir()} == RUN_FILES | {"report.html"}


def test_minmax_indices_keep_extremes_within_the_budget():
    rng = np.random.default_rng(0)
    v = rng.normal(0, 1, 1_000_003)
    v[123_457] = 50.0
    v[777_777] = -50.0
    v[10:20] = np.nan
    keep = minmax_indices(v, 1_000)
    assert len(keep) <= 1_000 and np.all(np.diff(keep) > 0)
    assert {0, 123_457, 777_777, len(v) - 1} <= set(keep.tolist())
    assert np.array_equal(minmax_indices(v[:900], 1_000), np.arange(900))
    assert len(minmax_indices(np.full(50_000, np.nan), 100)) <= 100
    assert np.array_equal(even_indices(3, 10), np.arange(3))
    e = even_indices(100_000, 5_000)
    assert len(e) == 5_000 and e[0] == 0 and e[-1] == 99_999


def test_return_frequency_follows_the_span():
    def ts(n, step_s):
        return T0 + (np.arange(n) * step_s * 1e9).astype(np.int64)

    assert choose_freq(ts(3_000, 0.1)) == "1s"
    assert choose_freq(ts(2_000_000, 0.1)) == "1min"  # 55 h: 1 s and 10 s give too many returns
    assert choose_freq(ts(100, 60.0)) == "1min"  # never finer than the decisions
    assert choose_freq(ts(1, 0.1)) == "1s"


def test_only_vectorbts_pandas_warning_is_silenced():
    from vectorbt.utils.datetime_ import freq_to_timedelta

    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        with quiet_vectorbt():
            freq_to_timedelta(pd.offsets.Minute())  # the call that triggers it inside vectorbt
            warnings.warn("isinstance(obj, DateOffset) is deprecated", DeprecationWarning, stacklevel=1)
            warnings.warn("something else", DeprecationWarning, stacklevel=1)
    assert [str(w.message) for w in seen] == ["isinstance(obj, DateOffset) is deprecated", "something else"]


def test_report_modules_do_not_import_vectorbt_or_plotly_up_front():
    code = (
        "import sys, grinder.cli.main, grinder.report.html; print('vectorbt' in sys.modules, 'plotly' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


REPORT_MAX_BYTES = 2_000_000  # the 3,000-step run: 1.2 MB of plotly.js and its data (5.4 MB with the full library)


def test_report_is_small_and_loads_nothing_from_the_network(run):
    """A report must open offline: no external script (nor any other resource fetched over http(s))."""
    page = write_report(run).read_text()
    assert len(page.encode()) < REPORT_MAX_BYTES
    assert not re.search(r"<script[^>]*\bsrc\s*=", page, re.I)
    markup = re.sub(r"(<script[^>]*>).*?</script>", r"\1</script>", page, flags=re.S | re.I)  # the library's code out
    assert len(markup) < 50_000 and markup.count("<script") == page.count("<script")
    assert not re.search(r"""\b(?:src|href)\s*=\s*["']?(?:https?:)?//""", markup, re.I)
    assert "cdn.plot.ly/plotly" not in page


def test_the_vendored_bundle_matches_the_plotly_js_the_figures_are_written_for():
    from plotly.offline import get_plotlyjs_version

    from grinder.report.plotlyjs import BASIC_FILE, basic_bundle, bundle_version

    assert bundle_version(basic_bundle()) == get_plotlyjs_version()
    assert (BASIC_FILE.parent / "LICENSE").read_text().startswith("MIT License")


def test_the_bundle_is_chosen_by_the_trace_types():
    import plotly.graph_objects as go

    from grinder.report.plotlyjs import choose_bundle, plotly_script

    assert choose_bundle([go.Figure(go.Scatter(y=[1])), go.Figure(go.Bar(y=[1]))]) == "basic"
    assert choose_bundle([go.Figure(go.Scatter(y=[1])), go.Figure(go.Heatmap(z=[[1]]))]) == "full"
    assert choose_bundle([go.Figure(go.Parcoords(dimensions=[{"values": [1]}]))]) == "full"
    assert "plotly.js v" in plotly_script([go.Figure(go.Heatmap(z=[[1]]))])  # the full library


def test_every_axis_has_a_unit(run):
    from grinder.report.attribution_html import attribution_section
    from grinder.report.figures import mode_figure

    r = load_run(run)
    fig, _ = main_figure(r)
    titles = [fig.layout[f"yaxis{k}"].title.text for k in ("", "2", "3", "4")]
    assert titles == ["price (USDT)", "position (BTC)", "equity (USDT)", "drawdown (USDT)"]
    assert fig.layout.yaxis5.title.text == "drawdown (% of peak)"  # the capital's percentage, secondary axis
    assert fig.layout.xaxis4.title.text == "time (UTC)"
    modes = mode_figure(r)
    assert modes.layout.yaxis.title.text == "decisions (%)" and modes.layout.xaxis.title.text == "controller mode"
    figs = []
    attribution_section(r, figs)
    assert figs[0].layout.yaxis.title.text == "cumulative PnL (USDT)"


def test_units_of_an_inverse_contract_and_of_an_unknown_symbol(tmp_path):
    steps = make_steps(50)
    summary = make_summary(steps, make_fills(steps, 0), settle="BTC", contract="inverse", contract_size=100.0)
    summary["selection"] = {**summary["selection"], "venue": "binance-coinm", "symbol": "BTCUSD_PERP"}
    r = load_run(write_run(tmp_path / "inv", steps, summary=summary))
    assert r.assets == ("BTC", "USD") and r.position_unit == "contracts of 100 USD"
    fig, _ = main_figure(r)
    assert fig.layout.yaxis.title.text == "price (USD)" and fig.layout.yaxis3.title.text == "equity (BTC)"
    summary = make_summary(steps, make_fills(steps, 0))
    summary["selection"] = {**summary["selection"], "venue": "nowhere", "symbol": "ZZZ"}
    r = load_run(write_run(tmp_path / "unknown", steps, summary=summary))
    assert r.assets == ("base", "USDT")  # a linear contract's quote is its settle asset


def test_step_lines_keep_only_their_changes():
    v = np.array([1.0, 1.0, 1.0, np.nan, np.nan, 2.0, 2.0, 3.0, 3.0])
    assert change_indices(v).tolist() == [0, 2, 3, 5, 7, 8]  # 2: where the line ends before the gap
    assert change_indices(np.ones(1)).tolist() == [0]
    rng = np.random.default_rng(4)
    y = np.round(np.cumsum(rng.choice([-1.0, 0.0, 1.0], 10_000, p=[0.01, 0.98, 0.01])))
    keep = change_indices(y)
    # The step line through the kept points holds the same value at every row.
    held = y[keep][np.searchsorted(keep, np.arange(len(y)), side="right") - 1]
    assert np.array_equal(held, y) and len(keep) < 500
