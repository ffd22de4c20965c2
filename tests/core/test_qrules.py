"""The quantitative-rules tracker: a hand-computed example, a brute-force recount, the gate's promise, bad TOML."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from grinder.core.qrules import (
    CANCELLED,
    EXPIRED,
    FILLED,
    FOK,
    GTC,
    H_OVERFLOW,
    IOC,
    N_OPEN_IOC,
    N_YOUNG_GTC,
    OUT,
    REJECTED,
    QuantRules,
    QuantRulesTracker,
    load_quant_rules,
    new_qr_state,
    qr_allowed,
    qr_end,
    qr_fill,
    qr_new,
    qr_ratios,
)
from grinder.errors import ConfigError, LiveError

S = 1_000_000_000
T0 = 1_723_161_600 * S  # 2024-08-09 00:00 UTC
NO_MIN = {"ufr_min_orders": 0, "gtc_cancel_min_orders": 0, "expire_min_orders": 0, "dust_min_orders": 0}
NEVER = {"ufr_min_orders": 10**9, "gtc_cancel_min_orders": 10**9, "expire_min_orders": 10**9,
         "dust_min_orders": 10**9, "orders_10s_max": 0, "orders_1m_max": 0}  # fmt: skip


def ratios(stt, rules: QuantRules, now: int) -> dict[str, float]:
    out = np.empty(len(OUT))
    qr_ratios(stt, rules.as_array(), now, out)
    return dict(zip(OUT, out.tolist(), strict=True))


def test_a_hand_computed_sequence_pins_every_ratio_and_count():
    rules = QuantRules(ufr_min_orders=3, gtc_cancel_min_orders=2, expire_min_orders=2, dust_min_orders=3)
    s = new_qr_state(rules)
    a = qr_new(s, T0 + 0 * S, GTC, 1.0, 100.0)
    b = qr_new(s, T0 + 1 * S, GTC, 2.0, 200.0)  # a GTX (post-only) order counts as GTC
    c = qr_new(s, T0 + 2 * S, GTC, 0.1, 10.0)  # dust: 10 < 50
    d = qr_new(s, T0 + 3 * S, IOC, 1.0, 100.0)
    e = qr_new(s, T0 + 3 * S, FOK, 0.5, 40.0)  # dust: 40 < 50
    f = qr_new(s, T0 + 4 * S, GTC, 1.0, 100.0)
    qr_fill(s, d, T0 + 3 * S, 0.4, 40.0)
    qr_end(s, d, T0 + 3 * S, EXPIRED)  # a partly filled IOC ends expired: it counts
    qr_end(s, e, T0 + 3 * S, EXPIRED)
    qr_end(s, a, T0 + 4 * S, CANCELLED)  # 4 s after placing: < 5 s, an invalid cancel
    qr_end(s, f, T0 + 4 * S, REJECTED)  # in no ratio, still in the order counts
    qr_fill(s, b, T0 + 7 * S, 2.0, 200.0)
    qr_end(s, b, T0 + 7 * S, FILLED)
    qr_end(s, c, T0 + 8 * S, CANCELLED)  # 6 s after placing: a valid cancel
    r = ratios(s, rules, T0 + 10 * S)
    # In the window: a, b, c, d, e (f was rejected).
    # UFR = 1 - filled / placed base qty = 1 - (0.4 + 2.0) / (1 + 2 + 0.1 + 1 + 0.5) = 1 - 2.4 / 4.6
    assert r["ufr"] == pytest.approx(1 - 2.4 / 4.6)
    assert r["gtc_cancel"] == pytest.approx(1 / 3)  # a of {a, b, c}
    assert r["expire"] == 1.0  # d and e of {d, e}
    assert r["dust"] == pytest.approx(2 / 5)  # c and e of 5
    # Sent in (now - 10 s, now]: b..f (a was placed exactly 10 s before); in the minute and the day: all 6.
    assert (r["orders_10s"], r["orders_1m"], r["orders_1d"]) == (5, 6, 6)
    # By value: 1 - (40 + 200) / (100 + 200 + 10 + 100 + 40) = 1 - 240 / 450
    by_value = QuantRules(ufr_by_value=True, ufr_min_orders=3)
    assert ratios(s, by_value, T0 + 10 * S)["ufr"] == pytest.approx(1 - 240 / 450)
    # At 600.5 s a (placed at 0) has left the 10-minute window: b, c, d, e remain.
    r = ratios(s, rules, T0 + 600 * S + S // 2)
    assert r["ufr"] == pytest.approx(1 - 2.4 / 3.6)  # placed 2 + 0.1 + 1 + 0.5
    assert r["gtc_cancel"] == 0.0  # neither b nor c was cancelled early
    assert r["expire"] == 1.0 and r["dust"] == pytest.approx(2 / 4)
    assert (r["orders_10s"], r["orders_1m"], r["orders_1d"]) == (0, 0, 6)
    # At 603.5 s only the rejected f is left: no ratio applies.
    r = ratios(s, rules, T0 + 603 * S + S // 2)
    assert all(math.isnan(r[k]) for k in ("ufr", "gtc_cancel", "expire", "dust"))
    # A new UTC day starts the day count again.
    qr_new(s, T0 + 86_400 * S, GTC, 1.0, 100.0)
    assert ratios(s, rules, T0 + 86_400 * S)["orders_1d"] == 1


def test_a_ratio_is_nan_until_its_window_holds_the_minimum_order_count():
    rules = QuantRules(gtc_cancel_min_orders=3, **{k: v for k, v in NO_MIN.items() if k != "gtc_cancel_min_orders"})
    s = new_qr_state(rules)
    for k in range(2):
        qr_end(s, qr_new(s, T0 + k, GTC, 1.0, 100.0), T0 + k, CANCELLED)
    assert math.isnan(ratios(s, rules, T0 + 10)["gtc_cancel"])
    qr_new(s, T0 + 10, GTC, 1.0, 100.0)
    assert ratios(s, rules, T0 + 10)["gtc_cancel"] == pytest.approx(2 / 3)


def test_the_gate_stops_the_order_count_at_the_margin():
    rules = QuantRules(**{**NEVER, "orders_10s_max": 10}, margin=0.05)  # 10 x 0.95 = 9.5
    s = new_qr_state(rules)
    for k in range(5):
        qr_new(s, T0 + k * S, GTC, 1.0, 100.0)
    assert qr_allowed(s, rules.as_array(), T0 + 5 * S, 10, GTC, 1.0, 100.0) == 4  # 5 + 4 = 9 <= 9.5
    assert qr_allowed(s, rules.as_array(), T0 + 11 * S + 1, 10, GTC, 1.0, 100.0) == 6  # the first two left: 3 + 6
    off = rules.model_copy(update={"enabled": False})
    assert qr_allowed(s, off.as_array(), T0 + 5 * S, 10, GTC, 1.0, 100.0) == 10


def test_the_gate_assumes_new_orders_stay_unfilled():
    rules = QuantRules(**{**NEVER, "ufr_min_orders": 0}, ufr_max=0.5, margin=0.2)  # limit 0.4
    s = new_qr_state(rules)
    a = qr_new(s, T0, GTC, 1.0, 100.0)
    qr_fill(s, a, T0, 1.0, 100.0)
    qr_end(s, a, T0, FILLED)
    # k orders of 0.25 unfilled: UFR = 0.25k / (1 + 0.25k) < 0.4  <=>  0.15k < 0.4  <=>  k <= 2
    assert qr_allowed(s, rules.as_array(), T0 + S, 5, GTC, 0.25, 100.0) == 2


def test_the_gate_counts_young_open_gtc_orders_as_cancelled():
    rules = QuantRules(**{**NEVER, "gtc_cancel_min_orders": 0}, gtc_cancel_max=0.5, margin=0.0)
    s = new_qr_state(rules)
    for _ in range(4):
        qr_end(s, qr_new(s, T0, GTC, 1.0, 100.0), T0 + S, FILLED)
    cfg = rules.as_array()
    assert qr_allowed(s, cfg, T0 + S, 9, GTC, 1.0, 100.0) == 3  # k / (4 + k) < 0.5  <=>  k < 4
    assert qr_allowed(s, cfg, T0 + S, 9, IOC, 1.0, 100.0) == 9  # IOC orders cannot raise the GTC ratio
    qr_new(s, T0 + S, GTC, 1.0, 100.0)  # open, 1 s old: it may still be cancelled early
    assert qr_allowed(s, cfg, T0 + 2 * S, 9, GTC, 1.0, 100.0) == 2  # (1 + k) / (5 + k) < 0.5  <=>  k < 3
    assert qr_allowed(s, cfg, T0 + 7 * S, 9, GTC, 1.0, 100.0) == 4  # 6 s old now: k / (5 + k) < 0.5


def test_an_overfull_ring_is_counted_not_hidden():
    rules = QuantRules(**NO_MIN)
    s = new_qr_state(rules, cap=4)
    recs = [qr_new(s, T0 + k, GTC, 1.0, 100.0) for k in range(6)]
    assert s[H_OVERFLOW] == 2
    qr_end(s, recs[0], T0 + 10, CANCELLED)  # dropped from the ring: ignored
    for r in recs[2:4]:
        qr_end(s, r, T0 + 10, CANCELLED)
    r = ratios(s, rules, T0 + 10)
    assert r["gtc_cancel"] == pytest.approx(2 / 4)  # over the 4 orders the ring holds
    assert r["orders_1m"] == 4
    t = QuantRulesTracker(rules, cap=4)
    for k in range(5):
        t.placed(f"c{k}", T0 + k, "GTX", 1.0, 100.0)
    assert t.overflow == 1


def test_the_tracker_maps_client_ids_and_binance_statuses():
    rules = QuantRules(**NO_MIN)
    t = QuantRulesTracker(rules)
    t.placed("a", T0, "GTX", 1.0, 100.0)
    t.placed("b", T0, "IOC", 1.0, 100.0)
    t.filled("b", T0 + 1, 0.25, 25.0)
    t.ended("b", T0 + 1, "EXPIRED")
    t.ended("a", T0 + 2, "CANCELED")
    t.ended("zz", T0 + 2, "CANCELED")  # not ours: ignored
    r = t.ratios(T0 + 3)
    assert r["gtc_cancel"] == 1.0 and r["expire"] == 1.0 and r["ufr"] == pytest.approx(1 - 0.25 / 2)
    with pytest.raises(LiveError, match="timeInForce 'GTK'"):
        t.placed("c", T0, "GTK", 1.0, 100.0)


# --- invariants over random event sequences -------------------------------------------------

OPS = st.lists(
    st.tuples(
        st.sampled_from(["new", "new", "fill", "end", "wait"]),
        st.integers(0, 40_000),  # ms to wait before the op
        st.sampled_from([GTC, GTC, IOC, FOK]),
        st.floats(0.01, 5.0),  # qty
        st.floats(1.0, 120.0),  # notional
        st.integers(0, 10**6),  # which open order
        st.sampled_from([CANCELLED, EXPIRED, REJECTED, FILLED]),
    ),
    max_size=120,
)


def brute(orders: list[dict], now: int, rules: QuantRules) -> dict:
    """Every ratio and count recounted from the whole order list."""
    win = round(rules.window_s * S)  # integers: ns since the epoch are beyond float64's exact range
    quick = round(rules.quick_cancel_s * S)
    live = [o for o in orders if o["t"] > now - win and o["how"] != REJECTED]
    gtc = [o for o in live if o["tif"] == GTC]
    ioc = [o for o in live if o["tif"] != GTC]
    q, f = sum(o["qty"] for o in live), sum(o["fqty"] for o in live)
    qc = sum(o["how"] == CANCELLED and o["t_end"] - o["t"] < quick for o in gtc)
    return {
        "ufr": 1 - f / q if live and q > 0 else math.nan,
        "gtc_cancel": qc / len(gtc) if gtc else math.nan,
        "expire": sum(o["how"] == EXPIRED for o in ioc) / len(ioc) if ioc else math.nan,
        "dust": sum(o["notional"] < rules.dust_notional for o in live) / len(live) if live else math.nan,
        "orders_10s": sum(o["t"] > now - 10 * S for o in orders),
        "orders_1m": sum(o["t"] > now - 60 * S for o in orders),
        "orders_1d": sum(o["t"] // (86_400 * S) == now // (86_400 * S) for o in orders),
        "open_ioc": sum(o["how"] is None for o in ioc),
        "young_gtc": sum(o["how"] is None and o["t"] > now - quick for o in gtc),
    }


@settings(max_examples=150, deadline=None)
@given(OPS)
def test_incremental_counts_equal_a_brute_force_recount(ops):
    rules = QuantRules(window_s=60, quick_cancel_s=5, **NO_MIN)
    s = new_qr_state(rules, cap=128)  # more than a sequence can place: no overflow
    orders: list[dict] = []
    now = T0 + 86_400 * S - 90 * S  # the sequence crosses a UTC midnight
    for kind, wait_ms, tif, qty, notional, pick, how in ops:
        now += wait_ms * 1_000_000
        open_ = [o for o in orders if o["how"] is None]
        if kind == "new":
            rec = qr_new(s, now, tif, qty, notional)
            orders.append({"rec": rec, "t": now, "tif": tif, "qty": qty, "notional": notional, "fqty": 0.0,
                           "how": None, "t_end": None})  # fmt: skip
        elif kind == "fill" and open_:
            o = open_[pick % len(open_)]
            part = (o["qty"] - o["fqty"]) * 0.5  # never more than the order holds
            qr_fill(s, o["rec"], now, part, part * 100)
            o["fqty"] += part
        elif kind == "end" and open_:
            o = open_[pick % len(open_)]
            qr_end(s, o["rec"], now, how)
            o["how"], o["t_end"] = how, now
        got = ratios(s, rules, now)
        want = brute(orders, now, rules)
        for k in OUT:
            assert got[k] == pytest.approx(want[k], abs=1e-9, nan_ok=True), k
            assert math.isnan(got[k]) or 0.0 <= got[k] <= (1.0 if k in OUT[:4] else math.inf)
        assert (s[N_OPEN_IOC], s[N_YOUNG_GTC]) == (want["open_ioc"], want["young_gtc"])


GATED = QuantRules(window_s=60, quick_cancel_s=5, margin=0.1, ufr_max=0.8, ufr_min_orders=5, gtc_cancel_max=0.5,
                   gtc_cancel_min_orders=4, expire_max=0.7, expire_min_orders=3, dust_max=0.5, dust_min_orders=5,
                   orders_10s_max=20, orders_1m_max=60, orders_1d_max=400)  # fmt: skip


def worst_end(s: np.ndarray, orders: list[dict], now: int) -> np.ndarray:
    """A copy of the state after every open order ends the worst way now: GTC cancelled, IOC/FOK expired."""
    w = s.copy()
    for o in orders:
        if o["how"] is None:
            qr_end(w, o["rec"], now, CANCELLED if o["tif"] == GTC else EXPIRED)
    return w


@settings(max_examples=150, deadline=None)
@given(OPS, st.lists(st.integers(0, 12), min_size=120, max_size=120))
def test_orders_the_gate_lets_out_never_bring_a_rule_within_its_margin(ops, batch):
    cfg = GATED.as_array()
    limits = GATED.thresholds()
    m = 1 - GATED.margin
    s = new_qr_state(GATED, cap=2048)
    orders: list[dict] = []
    now = T0
    for i, (kind, wait_ms, tif, qty, notional, pick, how) in enumerate(ops):
        now += wait_ms * 1_000_000
        open_ = [o for o in orders if o["how"] is None]
        if kind == "new":
            k = qr_allowed(s, cfg, now, batch[i], tif, qty, notional)
            assert 0 <= k <= batch[i]
            for j in range(k):
                rec = qr_new(s, now, tif, qty, notional)
                orders.append({"rec": rec, "tif": tif, "how": None})
                if (pick >> j) & 1 and how == REJECTED:  # some are rejected at once
                    qr_end(s, rec, now, REJECTED)
                    orders[-1]["how"] = REJECTED
            if k:
                # Whatever now happens to the open orders, old and new, every rule stays clear of its margin.
                r = ratios(worst_end(s, orders, now), GATED, now)
                for name in OUT[:4]:
                    assert math.isnan(r[name]) or r[name] < limits[name] * m, name
                for name in OUT[4:]:
                    assert r[name] <= limits[name] * m, name
        elif kind == "fill" and open_:
            o = open_[pick % len(open_)]
            qr_fill(s, o["rec"], now, qty * 0.1, notional * 0.1)
        elif kind == "end" and open_:
            o = open_[pick % len(open_)]
            qr_end(s, o["rec"], now, how)
            o["how"] = how


# --- the versioned file ----------------------------------------------------------------------


def test_the_shipped_file_is_versioned_and_matches_the_defaults():
    rules = load_quant_rules()
    assert rules.version and rules.retrieved == "2026-12-06" and all(u.startswith("https://") for u in rules.source)
    meta = {"version", "retrieved", "source"}
    assert rules.model_dump(exclude=meta) == QuantRules().model_dump(exclude=meta)


@pytest.mark.parametrize(
    "text,match",
    [
        ("ufr_max = 1.5\n", "ufr_max: Input should be less than or equal to 1"),
        ("margin = -0.1\n", "margin: Input should be greater than or equal to 0"),
        ("ufr_min = 3\n", "ufr_min: Extra inputs are not permitted"),
        ("quick_cancel_s = 900\n", "quick_cancel_s .900.0. must not exceed window_s"),
        ("window_s = \n", "not valid TOML"),
    ],
)
def test_bad_toml_names_the_file_and_the_key(tmp_path, text, match):
    path = tmp_path / "rules.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=match) as e:
        load_quant_rules(path)
    assert str(path) in str(e.value) and "\n" not in str(e.value).strip()


def test_a_missing_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="cannot read quantitative rules") as e:
        load_quant_rules(tmp_path / "none.toml")
    assert "none.toml" in str(e.value)
