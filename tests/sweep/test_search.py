"""TPE search: in-sample objective, deterministic with a seed, then ranked out of sample like a grid."""

from __future__ import annotations

import pytest

from grinder.data.errors import DataError
from grinder.data.tape import load_tape
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
        (AXES, "sharpe", 4, "cannot optimise 'sharpe'"),
        (AXES, "equity", 0, "at least 1"),
    ],  # fmt: skip
)
def test_bad_searches(setup, axes, rank_by, trials, message):
    windows, load, _ = setup
    with pytest.raises(DataError, match=message):
        search_sets(GRID, axes, FIXED, windows, load, VenueConfig(), None, None, rank_by, False, trials)
