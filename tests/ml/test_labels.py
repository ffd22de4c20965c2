"""Labels on hand-built tapes with known answers, against a brute-force reference, and their invariants."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from grinder.data.coverage import DEFAULT_MAX_GAP_NS
from grinder.errors import ConfigError
from grinder.ml import labels as labels_module
from grinder.ml.labels import LabelSpec, compute_labels
from tests.features.helpers import S, snapshot, tape

SPEC = LabelSpec(horizons_ns=(S, 2 * S), fill_distances_ticks=(0, 2), regime_bps=(50.0, 200.0))


def market(t0, bid, ask, steps):
    """Tape rows of a one-level-a-side book: a snapshot at t0, then steps.

    steps: ("book", t, bid, ask) moves both best levels in one message; ("trade", t, side, ticks);
    ("reset", t, bid, ask) a reset and snapshot in one message; ("unsync", t) a lone reset.
    """
    rows = snapshot(t0, [(bid, 1.0)], [(ask, 1.0)])
    for s in steps:
        if s[0] == "book":
            _, t, b, a = s
            msg = [(t, 0, 1, bid, 0.0, 0), (t, 0, -1, ask, 0.0, 0), (t, 0, 1, b, 1.0, 0), (t, 0, -1, a, 1.0, 0)]
            msg[-1] = msg[-1][:5] + (1,)
            rows += msg
            bid, ask = b, a
        elif s[0] == "trade":
            rows.append((s[1], 3, s[2], s[3], 0.5, 1))
        elif s[0] == "reset":
            _, t, bid, ask = s
            rows += snapshot(t, [(bid, 1.0)], [(ask, 1.0)])
        else:
            rows.append((s[1], 2, 0, 0, 0.0, 1))
    return tape(rows)


def at(*seconds):
    return np.array([round(x * S) for x in seconds], np.int64)


def test_names_and_info_follow_the_declaration():
    assert SPEC.names == (
        "fwd_rv_1s", "fwd_regime_1s", "markout_bid_1s", "markout_ask_1s", "fill_bid_d0_1s", "fill_bid_d2_1s",
        "fill_ask_d0_1s", "fill_ask_d2_1s",
        "fwd_rv_2s", "fwd_regime_2s", "markout_bid_2s", "markout_ask_2s", "fill_bid_d0_2s", "fill_bid_d2_2s",
        "fill_ask_d0_2s", "fill_ask_d2_2s",
    )  # fmt: skip
    i = SPEC.info("fill_ask_d2_2s")
    assert (i.kind, i.task, i.horizon_ns, i.distance_ticks) == ("fill_ask", "binary", 2 * S, 2)
    assert SPEC.info("fwd_regime_1s").task == "multiclass" and SPEC.info("markout_bid_2s").task == "regression"
    with pytest.raises(ConfigError, match="unknown label 'fill_bid_d1_1s'; this label spec's labels: fwd_rv_1s"):
        SPEC.info("fill_bid_d1_1s")


def test_known_mid_path_markouts_and_volatility():
    t = market(0, 100, 102, [("book", S, 102, 104), ("book", 2 * S, 98, 100), ("trade", 4 * S, 1, 100)])
    lab = compute_labels(t, at(0.5, 1.0), SPEC)
    r1, r2 = math.log(206 / 202), math.log(198 / 206)
    assert lab["fwd_rv_2s"][0] == pytest.approx(1e4 * math.sqrt((r1**2 + r2**2) / 2.0), rel=1e-14)
    assert lab["fwd_rv_1s"][0] == pytest.approx(1e4 * abs(r1), rel=1e-14)  # (0.5, 1.5]: one return
    assert lab["markout_bid_2s"][0] == pytest.approx((99 - 100) / 101 * 1e4, rel=1e-14)
    assert lab["markout_ask_2s"][0] == pytest.approx((102 - 99) / 101 * 1e4, rel=1e-14)
    assert lab["markout_bid_1s"][0] == pytest.approx((103 - 100) / 101 * 1e4, rel=1e-14)
    # At 1 s the move at 1 s is the past: (1, 2] holds only the fall to a mid of 99, from 103.
    assert lab["fwd_rv_1s"][1] == pytest.approx(1e4 * abs(r2), rel=1e-14)
    assert lab["markout_bid_1s"][1] == pytest.approx((99 - 102) / 103 * 1e4, rel=1e-14)
    assert lab["fwd_regime_1s"][0] == 1.0 and lab["fwd_regime_2s"][0] == 2.0  # 196 and 312 bps/sqrt(s)
    quiet = compute_labels(market(0, 100, 102, [("trade", 3 * S, 1, 102)]), at(0.5), SPEC)
    assert quiet["fwd_rv_2s"][0] == 0.0 and quiet["fwd_regime_2s"][0] == 0.0
    assert quiet["markout_bid_2s"][0] == pytest.approx(1 / 101 * 1e4, rel=1e-14)


def test_fills_by_trades_through_the_level_and_by_the_opposite_best():
    # bid 100 / ask 102 throughout; a sell trade at 99 at 1.5 s: reaches bid - 0 but not bid - 2.
    t = market(0, 100, 102, [("trade", 1.5 * S, -1, 99), ("trade", 5 * S, 1, 102)])
    lab = compute_labels(t, at(1.0, 1.5), SPEC)
    assert lab["fill_bid_d0_1s"][0] == 1.0 and lab["fill_bid_d2_1s"][0] == 0.0
    assert lab["fill_ask_d0_1s"][0] == 0.0  # no trade at or above 102 and the bid never reached it
    assert lab["fill_bid_d0_1s"][1] == 0.0  # a trade at the sample time is not in (t, t + h]
    through = compute_labels(market(0, 100, 102, [("trade", 1.5 * S, -1, 98), ("trade", 5 * S, 1, 102)]), at(1.0), SPEC)
    assert through["fill_bid_d2_1s"][0] == 1.0  # at the price counts
    # The ask falls to 98 at 2 s: a buy at 100 - 2 is reached by the opposite best within 2 s, not 1 s.
    moved = compute_labels(market(0, 100, 102, [("book", 2 * S, 97, 98), ("trade", 5 * S, 1, 98)]), at(0.5), SPEC)
    assert moved["fill_bid_d2_1s"][0] == 0.0 and moved["fill_bid_d2_2s"][0] == 1.0
    assert moved["fill_ask_d0_2s"][0] == 0.0
    up = compute_labels(market(0, 100, 102, [("book", S, 104, 105), ("trade", 5 * S, 1, 105)]), at(0.5), SPEC)
    assert up["fill_ask_d2_1s"][0] == 1.0 and up["fill_bid_d0_1s"][0] == 0.0


def test_windows_past_the_end_into_a_gap_across_a_reset_or_an_unsynced_book_are_nan():
    gap = DEFAULT_MAX_GAP_NS + S
    steps = [("book", 3 * S, 101, 103), ("book", 3 * S + gap, 101, 104), ("trade", 6 * S + gap, 1, 104)]
    t = market(0, 100, 102, steps)
    lab = compute_labels(t, at(1.0, 2.0, 2.5, 3.0 + gap / S - 0.5, 3.0 + gap / S, 4.0 + gap / S, 5.0 + gap / S), SPEC)
    v = lab["fwd_rv_2s"]
    r = math.log(204 / 202)
    assert v[0] == pytest.approx(1e4 * abs(r) / math.sqrt(2), rel=1e-14)  # (1, 3] ends on the span's last row
    assert np.isnan(v[1:3]).all()  # (2, 4] runs past it, into the gap
    assert lab["fwd_rv_1s"][1] == pytest.approx(1e4 * abs(r), rel=1e-14)
    assert np.isnan(lab.values[:, 3]).all()  # inside the gap: no book known there
    assert not np.isnan(lab.values[:, 4:6]).any() and np.isnan(lab["fwd_rv_2s"][6])  # the tape ends at 6 s
    assert not np.isnan(lab["fwd_rv_1s"][6])  # (5, 6] ends on the last row
    reset = market(0, 100, 102, [("reset", 2 * S, 110, 112), ("trade", 6 * S, 1, 112)])
    r = compute_labels(reset, at(0.5, 1.5, 2.0), SPEC)
    assert not np.isnan(r["fwd_rv_1s"][0]) and np.isnan(r["fwd_rv_2s"][0])  # (0.5, 2.5] holds the reset
    assert np.isnan(r.values[:, 1]).all()
    assert not np.isnan(r.values[:, 2]).any()  # the snapshot at 2 s is whole at 2 s
    unsync = market(0, 100, 102, [("unsync", 2 * S), ("trade", 6 * S, 1, 102)])
    u = compute_labels(unsync, at(-1.0, 0.5, 2.5), SPEC)
    assert np.isnan(u.values[:, 0]).all()  # before the first row
    assert np.isnan(u["fwd_rv_2s"][1]) and not np.isnan(u["fwd_rv_1s"][1])
    assert np.isnan(u.values[:, 2]).all()  # no book after the reset
    one_sided = tape(snapshot(0, [(100, 1.0)], [(102, 1.0)]) + [(S, 0, -1, 102, 0.0, 1), (2 * S, 0, -1, 103, 1.0, 1),
                                                              (5 * S, 3, 1, 103, 1.0, 1)])  # fmt: skip
    o = compute_labels(one_sided, at(0.5, 1.5, 2.0), SPEC)
    assert np.isnan(o.values[:, :2]).all()  # the ask is empty from 1 s to 2 s: at 1.5 s and in (0.5, 1.5]
    assert not np.isnan(o.values[:, 2]).any()


def test_unsorted_or_two_dimensional_times_are_refused():
    t = market(0, 100, 102, [("trade", S, 1, 102)])
    with pytest.raises(ConfigError, match="sorted; first out of order at index 2"):
        compute_labels(t, at(0.1, 0.2, 0.15), SPEC)
    with pytest.raises(ConfigError, match="one-dimensional"):
        compute_labels(t, np.zeros((2, 2), np.int64), SPEC)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"horizons_ns": ()}, "at least one horizon"),
        ({"horizons_ns": (0,)}, "positive ns"),
        ({"horizons_ns": (S, 1000 * 1_000_000)}, "repeats a horizon"),
        ({"fill_distances_ticks": (-1,)}, ">= 0 ticks"),
        ({"fill_distances_ticks": (1, 1)}, "repeats a distance"),
        ({"regime_bps": (2.0, 1.0)}, "0 < low < high"),
        ({"regime_bps": (0.0, 1.0)}, "0 < low < high"),
    ],
)
def test_bad_specs_are_refused(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        LabelSpec(**kwargs)


def test_every_parameter_and_the_source_change_the_version(monkeypatch):
    base = LabelSpec()
    others = [LabelSpec(horizons_ns=(S,)), LabelSpec(fill_distances_ticks=(0,)), LabelSpec(regime_bps=(0.5, 3.0))]
    assert len({base.version} | {o.version for o in others}) == 1 + len(others)
    code = "from grinder.ml.labels import LabelSpec; print(LabelSpec().version)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == base.version
    before = base.version  # a property: computed when read
    monkeypatch.setattr(labels_module, "_source_digest", lambda: "0" * 64)
    assert LabelSpec().version != before


# A brute-force reference straight from the definitions, on the book states the market() steps set.


def reference(steps, t0, bid, ask, times, spec):
    states = [(t0, bid, ask, True)]  # (time, bid, ask, whole) after each book message
    trades, resets = [], []
    for s in steps:
        if s[0] in ("book", "reset"):
            states.append((s[1], s[2], s[3], True))
            if s[0] == "reset":
                resets.append(s[1])
        elif s[0] == "trade":
            trades.append((s[1], s[3]))
        else:
            states.append((s[1], 0, 0, False))
            resets.append(s[1])
    last = max([t0] + [s[1] for s in steps])
    all_times = sorted([t0] + [s[1] for s in steps])
    out = {n: [] for n in spec.names}
    for t in times:
        now = [s for s in states if s[0] <= t]
        for h in spec.horizons_ns:
            lab = labels_module.horizon_label(h)
            pairs = zip(all_times, all_times[1:], strict=False)
            span_ok = (
                t >= t0 and t + h <= last and all(b - a <= DEFAULT_MAX_GAP_NS for a, b in pairs if b > t and a < t + h)
            )
            window = [s for s in states if t < s[0] <= t + h]
            ok = span_ok and now and now[-1][3] and all(s[3] for s in window)
            ok = ok and not any(t < r <= t + h for r in resets)
            vals = dict.fromkeys((n for n in spec.names if n.endswith("_" + lab)), math.nan)
            if ok:
                b0, a0 = now[-1][1], now[-1][2]
                mids = [b0 + a0] + [s[1] + s[2] for s in window]
                r2 = sum(math.log(b / a) ** 2 for a, b in zip(mids, mids[1:], strict=False) if a != b)
                rv = 1e4 * math.sqrt(r2 / (h / S))
                vals[f"fwd_rv_{lab}"] = rv
                lo, hi = spec.regime_bps
                vals[f"fwd_regime_{lab}"] = 0.0 if rv < lo else 1.0 if rv < hi else 2.0
                vals[f"markout_bid_{lab}"] = (mids[-1] / 2 - b0) / ((b0 + a0) / 2) * 1e4
                vals[f"markout_ask_{lab}"] = (a0 - mids[-1] / 2) / ((b0 + a0) / 2) * 1e4
                prices = [p for tt, p in trades if t < tt <= t + h]
                for d in spec.fill_distances_ticks:
                    buy, sell = b0 - d, a0 + d
                    hit_b = any(p <= buy for p in prices) or any(s[2] <= buy for s in window)
                    hit_a = any(p >= sell for p in prices) or any(s[1] >= sell for s in window)
                    vals[f"fill_bid_d{d}_{lab}"] = float(hit_b)
                    vals[f"fill_ask_d{d}_{lab}"] = float(hit_a)
            for n, v in vals.items():
                out[n].append(v)
    return out


QUARTER = S // 4


@st.composite
def markets(draw):
    t = 0
    bid = draw(st.integers(50, 150))
    ask = bid + draw(st.integers(1, 4))
    t0, b0, a0 = t, bid, ask
    steps = []
    for _ in range(draw(st.integers(1, 25))):
        t += draw(st.sampled_from([0, QUARTER, 2 * QUARTER, 3 * S, DEFAULT_MAX_GAP_NS + QUARTER]))
        what = draw(st.sampled_from(["book", "book", "trade", "trade", "reset", "unsync"]))
        if what == "book":
            bid = max(1, bid + draw(st.integers(-3, 3)))
            ask = bid + draw(st.integers(1, 4))
            steps.append(("book", t, bid, ask))
        elif what == "trade":
            steps.append(("trade", t, draw(st.sampled_from([1, -1])), draw(st.integers(bid - 4, ask + 4))))
        elif what == "reset":
            bid = max(1, bid + draw(st.integers(-3, 3)))
            ask = bid + draw(st.integers(1, 4))
            steps.append(("reset", t, bid, ask))
        else:
            steps.append(("unsync", t))
            bid = max(1, bid + draw(st.integers(-3, 3)))
            ask = bid + draw(st.integers(1, 4))
            t += QUARTER
            steps.append(("reset", t, bid, ask))
    ends = [t0] + [s[1] for s in steps]
    extra = draw(st.lists(st.integers(-QUARTER, t + QUARTER), max_size=10))
    # Event times and one ns either side: the window's open start and closed end are where bugs hide.
    near = [e + k for e in ends for k in (-1, 0, 1)] + [e - h for e in ends for h in (S, 2 * S)]
    times = np.array(sorted(set(draw(st.lists(st.sampled_from(near), max_size=12)) + extra)), np.int64)
    return t0, b0, a0, steps, times


@settings(max_examples=150)
@given(markets())
def test_labels_equal_a_brute_force_reference(m):
    t0, b0, a0, steps, times = m
    got = compute_labels(market(t0, b0, a0, steps), times, SPEC)
    want = reference(steps, t0, b0, a0, times.tolist(), SPEC)
    for k, name in enumerate(SPEC.names):
        np.testing.assert_allclose(got.values[k], want[name], rtol=1e-12, equal_nan=True, err_msg=name)


@settings(max_examples=60)
@given(markets())
def test_invariants(m):
    t0, b0, a0, steps, times = m
    spec = LabelSpec(horizons_ns=(S, 2 * S, 4 * S), fill_distances_ticks=(0, 1, 3), regime_bps=(50.0, 200.0))
    lab = compute_labels(market(t0, b0, a0, steps), times, spec)
    hs = [labels_module.horizon_label(h) for h in spec.horizons_ns]
    for lab_h in hs:
        block = [n for n in spec.names if n.endswith("_" + lab_h)]
        nan = np.isnan(lab[block[0]])
        assert all((np.isnan(lab[n]) == nan).all() for n in block)  # a horizon's labels are valid together
        ok = ~nan
        assert (lab[f"fwd_rv_{lab_h}"][ok] >= 0).all()
        assert np.isin(lab[f"fwd_regime_{lab_h}"][ok], (0.0, 1.0, 2.0)).all()
        spread_bps = lab[f"markout_bid_{lab_h}"] + lab[f"markout_ask_{lab_h}"]
        assert (spread_bps[ok] > 0).all()  # the spread at t, whatever happened after
        for side in ("bid", "ask"):
            fills = np.array([lab[f"fill_{side}_d{d}_{lab_h}"] for d in spec.fill_distances_ticks])
            assert np.isin(fills[:, ok], (0.0, 1.0)).all()
            assert (np.diff(fills[:, ok], axis=0) <= 0).all()  # a quote further back is reached only if nearer ones are
    for short, long in zip(hs, hs[1:], strict=False):
        valid_long = ~np.isnan(lab[f"fwd_rv_{long}"])
        assert not np.isnan(lab[f"fwd_rv_{short}"][valid_long]).any()  # a longer window valid: shorter ones too
        s = lab[f"markout_bid_{short}"] + lab[f"markout_ask_{short}"]
        lg = lab[f"markout_bid_{long}"] + lab[f"markout_ask_{long}"]
        np.testing.assert_allclose(s[valid_long], lg[valid_long], rtol=1e-12)
        for side in ("bid", "ask"):
            for d in spec.fill_distances_ticks:
                a, b = lab[f"fill_{side}_d{d}_{short}"], lab[f"fill_{side}_d{d}_{long}"]
                assert (a[valid_long] <= b[valid_long]).all()  # reached within h: reached within longer


def test_labels_on_the_sample_lake_see_nothing_past_their_window(sample_tape):
    full = sample_tape
    times = np.arange(full.ts_exch[0], full.ts_exch[-1], S // 2)
    spec = LabelSpec()
    lab = compute_labels(full, times, spec)
    assert np.isfinite(lab.values).all(axis=0).mean() > 0.7
    # Cut the tape: every label valid on both tapes is the same number (the future beyond t + h is unread).
    cut_at = int(full.ts_exch[len(full) // 2])
    keep = full.ts_exch <= cut_at
    cut = type(full)(full.instrument, *(getattr(full, c)[keep] for c in _EVENT_COLS), full.bbo, full.funding)
    short = compute_labels(cut, times, spec)
    both = np.isfinite(short.values) & np.isfinite(lab.values)
    assert both.sum() > 0.3 * both.size
    assert np.array_equal(short.values[both], lab.values[both])
    assert np.isnan(short.values[:, times > cut_at]).all()


_EVENT_COLS = ("ts_exch", "ts_local", "kind", "side", "price", "price_ticks", "qty", "ref", "flags")
