"""The top-K prefilter: features with known answers on hand-built arrays, eligibility, ranking, K and ties."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from grinder.data.lake import Lake
from grinder.data.synth import synth_batch
from grinder.data.tape import Series, load_tape
from grinder.errors import ConfigError, DataError
from grinder.portfolio.prefilter import (
    PrefilterRules,
    SymbolFeatures,
    features,
    fractional_rank,
    tape_features,
    top_k,
)

S = 1_000_000_000
T0 = 1_700_000_000 * S


def quotes(mids, times=None, half_spread=0.01, qty=2.0):
    """Quote arrays (ts, bid, ask, bid qty, ask qty) around `mids`, one a second from T0 unless `times`."""
    mids = np.asarray(mids, np.float64)
    ts = T0 + np.arange(len(mids), dtype=np.int64) * S if times is None else np.asarray(times, np.int64)
    return ts, mids - half_spread, mids + half_spread, np.full(len(mids), qty), np.full(len(mids), qty)


NO_TRADES = (np.empty(0, np.int64), np.empty(0), np.empty(0))


def feat(symbol="X", vol=1.0, notional=1e6, depth=1e5, spread=1.0) -> SymbolFeatures:
    return SymbolFeatures(symbol, vol, notional, depth, spread, n_trades=10, n_samples=60, span_s=60.0)


# ---- features ----


def test_features_known_answers():
    # Mid alternates 100 and 101 every second: every log return is +-ln(1.01).
    mids = [100.0, 101.0] * 5
    trade_ts = np.array([T0 - 1, T0, T0 + 3 * S, T0 + 10 * S], np.int64)  # first and last are outside
    trade_px = np.array([1.0, 100.0, 101.0, 1.0])
    trade_qty = np.array([9.0, 2.0, 3.0, 9.0])
    f = features("X", *quotes(mids), trade_ts, trade_px, trade_qty, T0, T0 + 10 * S)
    assert f.symbol == "X" and f.n_samples == 10 and f.span_s == 10.0 and f.n_trades == 2
    assert f.vol_bps == pytest.approx(1e4 * math.log(1.01))
    assert f.vol_annual == pytest.approx(math.log(1.01) * math.sqrt(365 * 86_400))
    assert f.notional_per_s == pytest.approx((200.0 + 303.0) / 10.0)
    assert f.spread_bps == pytest.approx(np.mean([0.02 / 100.0, 0.02 / 101.0]) * 1e4)
    assert f.depth_quote == pytest.approx(2.0 * np.mean([100.0, 101.0]))  # (bid*qty + ask*qty) / 2


def test_volatility_is_per_second_whatever_the_sampling():
    # A steady drift of one log-step per second: 2 s samples see returns twice as large, half as many.
    mids = 100.0 * np.exp(1e-4 * np.arange(21))
    f1 = features("X", *quotes(mids), *NO_TRADES, T0, T0 + 20 * S, sample_ns=S)
    f2 = features("X", *quotes(mids), *NO_TRADES, T0, T0 + 20 * S, sample_ns=2 * S)
    assert f1.vol_bps == pytest.approx(1.0)
    assert f2.vol_bps == pytest.approx(math.sqrt(2.0))  # sum of squares per second doubles for a drift


def test_samples_take_the_prevailing_quote_and_skip_time_before_the_first():
    # Quotes at irregular times; the window starts 2.5 s before the first quote.
    times = [T0 + 2_500_000_000, T0 + 2_600_000_000, T0 + 5_000_000_000]
    ts, bid, ask, bq, aq = quotes([100.0, 102.0, 104.0], times)
    f = features("X", ts, bid, ask, bq, aq, *NO_TRADES, T0, T0 + 7 * S)
    # Samples at 3, 4, 5, 6 s see mids 102, 102, 104, 104 (a quote exactly at a sample time counts).
    assert f.n_samples == 4
    assert f.vol_bps == pytest.approx(1e4 * math.sqrt(math.log(104 / 102) ** 2 / 3.0))


def test_inverse_contracts_count_contracts_of_contract_size():
    ts, bid, ask, bq, aq = quotes([100.0, 100.0, 100.0])
    f = features("X", ts, bid, ask, bq, aq, np.array([T0]), np.array([100.0]), np.array([7.0]), T0, T0 + 3 * S,
                 inverse=True, contract_size=10.0)  # fmt: skip
    assert f.notional_per_s == pytest.approx(70.0 / 3.0)
    assert f.depth_quote == pytest.approx(20.0)
    assert f.vol_bps == 0.0


@pytest.mark.parametrize(
    ("start", "end", "sample", "kind", "match"),
    [
        (T0, T0, S, ConfigError, "empty look-back window"),
        (T0, T0 + 10 * S, 0, ConfigError, "sample_ns must be positive"),
        (T0 - 10 * S, T0 + S, S, DataError, "1 quote sample"),  # only the sample at T0 has a quote
    ],
)
def test_unusable_windows_are_clear_errors(start, end, sample, kind, match):
    with pytest.raises(kind, match=match):
        features("X", *quotes([100.0, 101.0]), *NO_TRADES, start, end, sample)


def test_bad_arrays_are_clear_errors():
    ts, bid, ask, bq, aq = quotes([100.0, 101.0, 102.0])
    with pytest.raises(DataError, match="X: quote times are not in time order"):
        features("X", ts[::-1].copy(), bid, ask, bq, aq, *NO_TRADES, T0, T0 + 3 * S)
    with pytest.raises(DataError, match="quote arrays differ in length"):
        features("X", ts, bid[:2], ask, bq, aq, *NO_TRADES, T0, T0 + 3 * S)
    with pytest.raises(DataError, match="non-positive bid or ask"):
        features("X", ts, bid * 0, ask, bq, aq, *NO_TRADES, T0, T0 + 3 * S)


@pytest.fixture(scope="module")
def synth_tape(tmp_path_factory):
    root = tmp_path_factory.mktemp("lake")
    Lake(root).write(synth_batch(30_000, seed=3, symbol="SYNUSDT", start_ns=T0), [], key="prefilter")
    return load_tape(root, "synthetic", "SYNUSDT")


def test_tape_features_read_the_bbo_series_and_trades(synth_tape):
    t = synth_tape
    f = tape_features(t)
    trades = t.kind == 3
    b = t.bbo
    by_hand = features("SYNUSDT", b.ts_exch, b.bid_price, b.ask_price, b.bid_qty, b.ask_qty, t.ts_exch[trades],
                       t.price[trades], t.qty[trades], int(t.ts_exch[0]), int(t.ts_exch[-1]) + 1)  # fmt: skip
    assert f == by_hand
    assert f.n_trades == int(trades.sum()) and f.vol_bps > 0 and f.spread_bps > 0


def test_tapes_without_bbo_rebuild_quotes_from_the_book(synth_tape):
    # The synthetic BBO follows every depth message, so the book's own best levels give the same features.
    empty = Series({c: v[:0] for c, v in synth_tape.bbo.columns.items()})
    f_book = tape_features(replace(synth_tape, bbo=empty))
    f_bbo = tape_features(synth_tape)
    for name in ("vol_bps", "notional_per_s", "depth_quote", "spread_bps"):
        assert getattr(f_book, name) == pytest.approx(getattr(f_bbo, name), rel=1e-9), name
    assert f_book.n_samples == f_bbo.n_samples


# ---- ranking ----


def test_fractional_rank_shares_ties():
    assert fractional_rank(np.array([5.0])).tolist() == [1.0]
    assert fractional_rank(np.array([3.0, 1.0, 2.0])).tolist() == [1.0, 0.0, 0.5]
    assert fractional_rank(np.array([1.0, 2.0, 2.0, 3.0])).tolist() == [0.0, 0.5, 0.5, 1.0]


def test_volatile_liquid_symbol_ranks_first_and_wide_spread_is_excluded():
    universe = [
        feat("QUIET", vol=0.5, notional=2e6),
        feat("WIDE", vol=9.0, notional=9e6, spread=25.0),  # best on both counts, but its spread is toxic
        feat("HOT", vol=3.0, notional=5e6),
        feat("THIN", vol=5.0, notional=500.0),  # below the default floor of 1000 quote/s
        feat("MID", vol=1.0, notional=1e6),
    ]
    sel = top_k(universe)
    assert sel.symbols == ("HOT", "MID", "QUIET")
    # Ranks among the three eligible: HOT (1, 1); MID (0.5, 0) and QUIET (0, 0.5) tie, so name order.
    assert [p.score for p in sel.picks] == [1.0, 0.25, 0.25]
    assert dict(sel.excluded).keys() == {"WIDE", "THIN"}
    assert "max_spread_bps" in dict(sel.excluded)["WIDE"] and "min_notional_per_s" in dict(sel.excluded)["THIN"]


def test_depth_floor_and_weights():
    universe = [feat("A", vol=1.0, notional=3e6, depth=10.0), feat("B", vol=2.0, notional=2e6), feat("C", vol=3.0)]
    assert top_k(universe, 3, PrefilterRules(min_depth_quote=100.0)).symbols == ("B", "C")
    assert top_k(universe, 3, PrefilterRules(vol_weight=1.0)).symbols == ("C", "B", "A")
    assert top_k(universe, 3, PrefilterRules(vol_weight=0.0)).symbols == ("A", "B", "C")


def test_k_handling():
    universe = [feat(s, vol=v, notional=1e6 * v) for s, v in (("A", 1.0), ("B", 2.0), ("C", 3.0), ("D", 4.0))]
    assert top_k(universe, k=1).symbols == ("D",)
    assert top_k(universe, k=4).symbols == ("D", "C", "B", "A")
    big = top_k(universe, k=10)
    assert big.symbols == ("D", "C", "B", "A") and big.picks == big.ranked
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ConfigError, match="k must be a positive integer"):
            top_k(universe, k=bad)


def test_empty_or_unusable_universes_are_clear_errors():
    with pytest.raises(ConfigError, match="empty universe"):
        top_k([])
    with pytest.raises(DataError, match=r"no eligible symbol among 2: A: mean spread .*; B: traded"):
        top_k([feat("A", spread=50.0), feat("B", notional=1.0)])
    with pytest.raises(ConfigError, match="listed more than once: A"):
        top_k([feat("A"), feat("A")])
    with pytest.raises(DataError, match="A: non-finite feature"):
        top_k([feat("A", vol=float("nan"))])


def test_bad_rules_are_validation_errors():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="vol_weight"):
        PrefilterRules(vol_weight=1.5)
    with pytest.raises(ValidationError, match="max_spread_bps"):
        PrefilterRules(max_spread_bps=0)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from([0.1, 0.5, 1.0, 2.0]), st.sampled_from([1e3, 1e5, 1e7]), st.sampled_from([0.5, 5.0, 20.0])
        ),
        min_size=1,
        max_size=8,
    ),
    st.integers(1, 9),
    st.randoms(use_true_random=False),
)
def test_ranking_is_deterministic_and_order_free(rows, k, rnd):
    universe = [feat(f"S{i}", vol=v, notional=n, spread=sp) for i, (v, n, sp) in enumerate(rows)]
    shuffled = universe[:]
    rnd.shuffle(shuffled)
    try:
        a = top_k(universe, k)
    except DataError:
        assert all(f.spread_bps > 10.0 for f in universe)  # only "no eligible symbol" can happen here
        return
    b = top_k(shuffled, k)
    assert a.ranked == b.ranked and a.symbols == b.symbols
    assert len(a.picks) == min(k, len(universe) - len(a.excluded))
    keys = [(-p.score, p.symbol) for p in a.ranked]
    assert keys == sorted(keys)  # best score first, then by name
    assert all(0.0 <= p.score <= 1.0 for p in a.ranked)


def test_a_real_tape_without_bbo_has_features(tmp_path):
    # The Tardis fixture (45 s of the real 2024-08-08 BTCUSDT window) carries no BBO stream.
    from grinder.data.ingest.tardis import parse_tardis
    from grinder.data.instruments import resolve_instrument
    from tests.conftest import REPO

    fx = REPO / "tests" / "fixtures"
    paths = [fx / f"binance-futures_{t}_2024-08-08_BTCUSDT.csv.gz" for t in ("incremental_book_L2", "trades")]
    Lake(tmp_path).write(parse_tardis(paths, resolve_instrument("binance-usdm", "BTCUSDT")), paths)
    tape = load_tape(tmp_path, "binance-usdm", "BTCUSDT")
    assert len(tape.bbo) == 0
    f = tape_features(tape)
    assert f.n_samples == 45 and f.n_trades == int((tape.kind == 3).sum())
    assert 0 < f.spread_bps < 0.1 and f.vol_bps > 0 and f.depth_quote > 0  # BTCUSDT: a 0.1 tick on ~60k
