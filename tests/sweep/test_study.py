"""A study on the bundled sample: one shared tape per window, same digests as lone backtests, any worker count."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from grinder.core.strategy import get
from grinder.data.tape import load_tape
from grinder.errors import ConfigError
from grinder.sim.backtest import VenueConfig, run_backtest
from grinder.sweep.folds import make_folds
from grinder.sweep.spec import expand
from grinder.sweep.study import Selection, run_study
from tests.conftest import REPO

SEL = Selection(REPO / "data" / "sample" / "lake", "binance-usdm", "BTCUSDT")
GRID = get("static_grid")


@pytest.fixture(scope="module")
def windows():
    t = load_tape(SEL.root, SEL.venue, SEL.symbol)
    return make_folds(int(t.ts_exch[0]), int(t.ts_exch[-1]) + 1, train=0.6)


@pytest.fixture(scope="module")
def study(windows):
    g = expand(GRID, {"interval": "1,2", "half_spread": "1,4"}, {"order_qty": 0.1, "max_position": 5})
    return g, run_study(SEL, g, windows, VenueConfig(), workers=2)


def test_rows_per_set_and_window_and_ranking_out_of_sample(study):
    g, r = study
    assert len(r.results) == 8 and set(r.results["window"]) == {"train", "test"}
    assert r.ranking.attrs["rank_key"] == "equity_out"
    eq = r.ranking["equity_out"].to_numpy()
    assert (np.diff(eq) <= 0).all() and r.ranking["rank"].tolist() == [1, 2, 3, 4]
    test = r.results[r.results["window"] == "test"].set_index("set")
    assert r.ranking["equity_out"].tolist() == test.loc[r.ranking["set"], "equity"].tolist()
    grid_ns, curves = r.equity["test"]
    assert curves.shape == (len(grid_ns), 4)
    assert curves[-1].tolist() == pytest.approx(test.loc[range(4), "equity"].tolist())


def test_a_set_in_a_sweep_has_the_digest_of_its_lone_backtest(study, windows):
    g, r = study
    w = windows[1]
    best = int(r.ranking["set"].iloc[0])
    tape = load_tape(SEL.root, SEL.venue, SEL.symbol, w.start_ns, w.end_ns)
    alone = run_backtest(tape, GRID, GRID.vector(g.sets[best]), VenueConfig(), start_ns=w.start_ns)
    row = r.results[(r.results["window"] == "test") & (r.results["set"] == best)].iloc[0]
    assert row["digest"] == alone.digest and row["fills"] == alone.counters["fills"]


def test_one_worker_gives_the_same_results(study, windows):
    g, r = study
    one = run_study(SEL, g, windows, VenueConfig(), workers=1)
    assert one.results["digest"].tolist() == r.results["digest"].tolist()


def test_unknown_ranking_metric_is_refused(study, windows):
    g, _ = study
    with pytest.raises(ConfigError, match="unknown ranking metric 'profit'"):
        run_study(SEL, g, windows, VenueConfig(), rank_by="profit")


def test_a_cached_lake_gives_the_same_results_and_keeps_its_caches(study, windows, tmp_path):
    import dataclasses
    import shutil

    g, r = study
    root = tmp_path / "lake"
    shutil.copytree(SEL.root, root)
    sel = dataclasses.replace(SEL, root=root, cache=True)
    first = run_study(sel, g, windows, VenueConfig(), workers=2)
    again = run_study(sel, g, windows, VenueConfig(), workers=2)  # reads both caches
    assert first.results["digest"].tolist() == again.results["digest"].tolist() == r.results["digest"].tolist()
    assert len(list((root / "_tapes").iterdir())) == len(windows)
    assert len(list((root / "_replays").iterdir())) == len(windows)


def test_sharpe_is_vectorbts_on_the_equity_increments():
    from grinder.report.stats import YEAR_FREQ, quiet_vectorbt
    from grinder.sweep.study import sharpe_of

    grid_ns = np.arange(0, 500 * 60_000_000_000, 60_000_000_000, dtype=np.int64)
    rng = np.random.default_rng(7)
    equity = np.cumsum(rng.normal(0.01, 1.0, (len(grid_ns), 5)), axis=0)
    equity[:, 4] = 3.0  # flat: no variance, vectorbt's own answer (inf or NaN) either way
    inc = pd.DataFrame(np.diff(equity, axis=0), index=pd.to_datetime(grid_ns[1:], unit="ns"))
    with quiet_vectorbt():
        import vectorbt  # noqa: F401 - registers the accessor

        want = inc.vbt.returns(freq=pd.Timedelta(60, "s"), year_freq=YEAR_FREQ).sharpe_ratio().to_numpy()
    got = sharpe_of(grid_ns, equity)
    np.testing.assert_array_equal(got, want)
    assert np.isfinite(got[:4]).all() and abs(got[0]) > 0
    assert np.isnan(sharpe_of(grid_ns[:2], equity[:2])).all()  # one increment: no ratio


def _rank_by_groupby(results: pd.DataFrame, axes: list[str], rank_by: str) -> pd.DataFrame:
    """The ranking's definition in pandas: per-set means by sample, NaN and inf left out, then sorted."""
    from grinder.sweep.study import LOWER_IS_BETTER, RANKABLE

    metrics = [m for m in RANKABLE if m in results]
    results = results.replace([np.inf, -np.inf], np.nan)
    means = results.groupby(["set", "sample"])[metrics].mean().unstack("sample")
    means.columns = [f"{m}_{s}" for m, s in means.columns]
    out = results.groupby("set")[axes].first().join(means)
    key = f"{rank_by}_{'out' if (results['sample'] == 'out').any() else 'in'}"
    out = out.reset_index().sort_values([key, "set"], ascending=[rank_by in LOWER_IS_BETTER, True],
                                        na_position="last")  # fmt: skip
    out.insert(0, "rank", np.arange(1, len(out) + 1))
    return out.reset_index(drop=True)


@settings(max_examples=40, deadline=None)
@given(
    n_sets=st.integers(1, 6),
    samples=st.lists(st.sampled_from(["in", "out"]), min_size=1, max_size=4),
    seed=st.integers(0, 2**32 - 1),
    rank_by=st.sampled_from(["equity", "max_drawdown", "sharpe", "fills"]),
)
def test_the_ranking_is_the_per_set_mean_of_each_sample(n_sets, samples, seed, rank_by):
    from grinder.sweep.study import METRICS, rank

    rng = np.random.default_rng(seed)
    frames = []
    for w, sample in enumerate(samples):
        f = {"set": np.arange(n_sets), "window": f"w{w}", "sample": sample, "interval": np.arange(n_sets) * 0.5}
        for m in (*METRICS, "sharpe", "return_over_drawdown"):
            v = rng.choice([-1.0, 0.0, 0.5, 2.0, np.nan, np.inf, -np.inf], n_sets) if m != "fills" else (
                rng.integers(0, 9, n_sets))  # fmt: skip
            f[m] = v
        frames.append(pd.DataFrame(f))
    results = pd.concat(frames, ignore_index=True)
    got = rank(results, ["interval"], rank_by)
    pd.testing.assert_frame_equal(got, _rank_by_groupby(results, ["interval"], rank_by), check_exact=False, rtol=1e-12)
    assert got.attrs["rank_key"] == f"{rank_by}_{'out' if 'out' in samples else 'in'}"


def test_a_set_with_an_infinite_sharpe_ratio_never_ranks_first():
    from grinder.sweep.study import rank

    # Set 0 never traded: a flat equity gave a Sharpe ratio of inf, which used to rank first.
    results = pd.DataFrame({"set": [0, 1, 2, 0, 1, 2], "window": ["a"] * 3 + ["b"] * 3, "sample": "out",
                            "interval": [1.0, 2.0, 3.0] * 2, "sharpe": [np.inf, 1.5, -0.5, np.inf, 0.5, np.nan],
                            "equity": [0.0, 3.0, -1.0, 0.0, 1.0, 2.0]})  # fmt: skip
    r = rank(results, ["interval"], "sharpe")
    assert r["set"].tolist() == [1, 2, 0]
    assert r["sharpe_out"].tolist()[:2] == [1.0, -0.5] and np.isnan(r["sharpe_out"].iloc[2])


@pytest.fixture(scope="module")
def four_windows(real_dir, tmp_path_factory):
    """A lake holding the four real windows, each cut to the first 6,000 lines of its capture (snapshot kept)."""
    import gzip

    from grinder.data.ingest.binance import parse_binance
    from grinder.data.instruments import resolve_instrument
    from grinder.data.lake import Lake
    from tests.conftest import WINDOWS, write_capture

    tmp = tmp_path_factory.mktemp("four")
    for files, symbol, *_ in WINDOWS.values():
        with gzip.open(real_dir / files[0], "rb") as f:
            lines = [f.readline() for _ in range(6_000)]
        path = write_capture(tmp / files[0], lines)
        Lake(tmp / "lake").write(parse_binance([path], resolve_instrument("binance-usdm", symbol)), [path])
    return tmp / "lake"


def test_a_walk_forward_sweep_over_the_four_real_windows_without_start_or_end(four_windows, tmp_path):
    """The README's sweep over 16 months of calendar time holding minutes of data: folds within coverage."""
    import json

    import pyarrow.parquet as pq

    from grinder.data.coverage import lake_spans
    from tests.cli.test_cli import grinder

    r = grinder("sweep", "static_grid", "-g", "interval=1,2", "-g", "half_spread=1:4:3", "-p", "order_qty=0.1",
                "-p", "max_position=5", "--walk-forward", "3", "--rank-by", "sharpe", "--children", "1",
                "--root", four_windows, "--out", tmp_path / "sw", "--mlruns", tmp_path / "mlruns",
                "--no-report")  # fmt: skip
    assert r.returncode == 0, r.stderr
    folder = next((tmp_path / "sw").iterdir())
    summary = json.loads((folder / "summary.json").read_text())
    spans = lake_spans(four_windows, "binance-usdm", "BTCUSDT")
    assert len(spans) == 3 and spans[-1].end_ns - spans[0].start_ns > 400 * 86_400 * 10**9  # 16 months apart
    windows = summary["windows"]
    for w in windows:  # no window spans a gap
        assert any(s.start_ns <= w["start_ns"] < w["end_ns"] <= s.end_ns for s in spans), w
    folds = {w["name"].split(".")[0] for w in windows}
    assert folds == {f"wf{i}-{s}" for i in (1, 2, 3) for s in ("train", "test")}  # no fold left empty
    results = pq.read_table(folder / "results.parquet").to_pandas()
    assert set(results["window"]) == {w["name"] for w in windows}
    refused = {w["name"] for w in summary["refused_windows"]}
    assert not refused & set(results["window"])  # refused windows are never ranked
    per_window = results.groupby("window")["events"].first()
    assert (per_window >= 1_000).all()
    ranking = pq.read_table(folder / "ranking.parquet").to_pandas()
    assert np.isfinite(ranking["sharpe_out"].iloc[0])  # no inf (or NaN) ranked first
    # Memory: estimated before, peak reported, and bounded by the data, not the 16 months.
    mem = summary["memory"]
    assert 0 < mem["peak_rss_mb"] < 2_000 and 0 < mem["estimate_mb"] < 2_000
    assert "peak RSS" in r.stdout
    # The best set is re-run over each covered span, never across a gap.
    names = sorted(p.name for p in (folder / "best").iterdir())
    assert len(names) == 3 and all(f"-span{k}-" in n for k, n in zip((1, 2, 3), names, strict=True)), names


def test_a_sweep_that_would_not_fit_in_memory_is_refused_with_the_figures(four_windows, tmp_path):
    from tests.cli.test_cli import grinder

    r = grinder("sweep", "static_grid", "-g", "interval=1,2", "-p", "half_spread=2", "-p", "order_qty=0.1",
                "-p", "max_position=5", "--walk-forward", "3", "--root", four_windows, "--out", tmp_path / "sw",
                "--mlruns", tmp_path / "mlruns", env={"GRINDER_MEMORY_LIMIT": "300M"})  # fmt: skip
    assert r.returncode == 2 and "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "the sweep needs ~" in r.stderr and "0.3 GB available" in r.stderr and "--workers" in r.stderr
    assert not (tmp_path / "sw").exists() and not (tmp_path / "mlruns").exists()  # refused before any run
