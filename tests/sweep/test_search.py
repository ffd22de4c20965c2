"""TPE search: in-sample objective, deterministic with a seed, then ranked out of sample like a grid."""

from __future__ import annotations

import pytest

from grinder.data.tape import load_tape
from grinder.errors import ConfigError, DataError
from grinder.sim.backtest import VenueConfig
from grinder.sweep.folds import make_folds
from grinder.sweep.search import search_sets
from grinder.sweep.study import run_study
from tests.sweep.test_study import GRID, SEL

AXES = {"interval": "0.5:3:0.1", "half_spread": "lin:0.5:5:10"}
FIXED = {"order_qty": 0.1, "max_position": 5}


@pytest.fixture(scope="module")
def setup():
    t = load_tape(SEL.root, SEL.venue, SEL.symbol)
    windows = make_folds(int(t.ts_exch[0]), int(t.ts_exch[-1]) + 1, train=0.6)
    loads = []

    def load(w):
        loads.append(w.name)
        return load_tape(SEL.root, SEL.venue, SEL.symbol, w.start_ns, w.end_ns)

    return windows, load, loads


def test_search_is_deterministic_and_never_reads_out_of_sample(setup):
    windows, load, loads = setup
    a = search_sets(GRID, AXES, FIXED, windows, load, VenueConfig(), None, None, "equity", False, 8, seed=3)
    b = search_sets(GRID, AXES, FIXED, windows, load, VenueConfig(), None, None, "equity", False, 8, seed=3)
    assert [p.model_dump() for p in a.sets] == [p.model_dump() for p in b.sets] and 1 <= len(a) <= 8
    assert set(loads) == {"train"}  # the test window is not touched while searching
    for p in a.sets:
        assert 0.5 <= p.interval <= 3.0 and round(p.interval * 10) == p.interval * 10
        assert 0.5 <= p.half_spread <= 5.0
    study = run_study(SEL, a, windows, VenueConfig())
    assert study.ranking.attrs["rank_key"] == "equity_out" and len(study.ranking) == len(a)


@pytest.mark.parametrize(
    "axes,rank_by,trials,message",
    [
        ({}, "equity", 4, "empty search space"),
        ({"intervl": "1:2:1"}, "equity", 4, "unknown parameter"),
        (AXES, "profit", 4, "cannot optimise 'profit'"),
        (AXES, "equity", 0, "at least 1"),
    ],  # fmt: skip
)
def test_bad_searches(setup, axes, rank_by, trials, message):
    windows, load, _ = setup
    with pytest.raises(ConfigError, match=message):
        search_sets(GRID, axes, FIXED, windows, load, VenueConfig(), None, None, rank_by, False, trials)


def _trials(study) -> list[dict]:
    return [t.params for t in sorted(study.trials, key=lambda t: t.number)]


@pytest.mark.parametrize("rank_by", ["sharpe", "return_over_drawdown"])
def test_search_optimises_derived_metrics_with_the_rankings_in_sample_mean(setup, rank_by):
    import optuna

    windows, load, _ = setup
    study = optuna.create_study(direction="maximize")
    g = search_sets(GRID, AXES, FIXED, windows, load, VenueConfig(), None, None, rank_by, False, 4, seed=1,
                    workers=2, study=study)  # fmt: skip
    ranked = run_study(SEL, g, windows, VenueConfig(), rank_by=rank_by).ranking
    told = {tuple(sorted(t.params.items())): t.value for t in study.trials if t.value is not None}
    assert told  # the objective is the in-sample column of the same metric the ranking uses
    for t in study.trials:
        if t.value is None:
            continue
        p = GRID.validate({**FIXED, **{k: round(v, 12) for k, v in t.params.items()}})
        row = ranked[(ranked["interval"] == p.interval) & (ranked["half_spread"] == p.half_spread)].iloc[0]
        assert t.value == pytest.approx(row[f"{rank_by}_in"], rel=1e-12)


def test_a_resumed_study_asks_what_a_fresh_one_asks_and_reruns_nothing(setup, tmp_path):
    from grinder.sweep.storage import open_study

    windows, load, _ = setup
    spec = {"strategy": "static_grid", "symbol": "BTCUSDT", "axes": AXES, "seed": 5}
    ran = []

    def counting(w):
        ran.append(w.name)
        return load(w)

    def search(folder, trials, resume):
        study = open_study(tmp_path / folder, "s", spec, "maximize", resume=resume)
        g = search_sets(GRID, AXES, FIXED, windows, counting, VenueConfig(), None, None, "equity", False, trials,
                        seed=5, workers=2, study=study)  # fmt: skip
        return study, g

    fresh, g_fresh = search("a", 14, False)
    search("b", 3, False)  # stops mid-batch (batches of 2), among TPE's random first 10 trials
    search("b", 12, True)  # past them: trials 10 and 11 are TPE's own, from the history
    before = {t.number: t.datetime_complete for t in open_study(tmp_path / "b", "s", spec, "maximize", True).trials}
    again, g = search("b", 14, True)
    assert _trials(again) == _trials(fresh) and len(again.trials) == 14
    assert {t.number: t.datetime_complete for t in again.trials if t.number < 12} == before  # not re-run
    assert [p.model_dump() for p in g.sets] == [p.model_dump() for p in g_fresh.sets]
    ran.clear()
    search("b", 14, True)
    assert ran == []  # a finished study reads no data


def test_study_storage_refuses_mixing_searches(tmp_path):
    from grinder.sweep.storage import open_study

    spec = {"strategy": "static_grid", "symbol": "BTCUSDT", "seed": 1}
    with pytest.raises(DataError, match="no study 'x' to resume"):
        open_study(tmp_path, "x", spec, "maximize", resume=True)
    s = open_study(tmp_path, "x", spec, "maximize", resume=False)
    s.tell(s.ask({"a": __import__("optuna").distributions.FloatDistribution(0, 1)}), 1.0)
    with pytest.raises(DataError, match="already holds 1 trials: pass --resume"):
        open_study(tmp_path, "x", spec, "maximize", resume=False)
    with pytest.raises(DataError, match=r"another search \(seed: 1, now 2\)"):
        open_study(tmp_path, "x", {**spec, "seed": 2}, "maximize", resume=True)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "optuna.db").write_text("not a database")
    with pytest.raises(DataError, match="cannot open the study storage"):
        open_study(tmp_path / "bad", "x", spec, "maximize", resume=False)
