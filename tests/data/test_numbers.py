"""The shared number grammar: plain ASCII decimals parse exactly as float() does; nothing else parses."""

from __future__ import annotations

import re

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from grinder.data.ingest.numbers import (
    TIME_MIN_NS,
    check_prices_qtys,
    check_times,
    parse_decimals,
    time_range_ns,
    why_not_decimal,
)
from grinder.data.instruments import resolve_instrument
from grinder.errors import DataError

BTC = resolve_instrument("binance-usdm", "BTCUSDT")
# The grammar, written independently of numbers.py: ASCII digits only (re.ASCII), one optional point.
GRAMMAR = re.compile(r"-?[0-9]{1,18}(\.[0-9]{1,18})?", re.ASCII)


def path_of(g):
    return "f.txt", int(g) + 1


decimals = st.builds(
    lambda neg, whole, frac: ("-" if neg else "") + whole + ("." + frac if frac else ""),
    st.booleans(),
    st.text("0123456789", min_size=1, max_size=18),
    st.text("0123456789", max_size=18),
)


@settings(deadline=None)  # the first call pays for Arrow's regex compile
@given(st.lists(decimals, min_size=1, max_size=20))
def test_valid_decimals_parse_exactly_as_float_does(strings):
    values, bad = parse_decimals(strings, negative_ok=True)
    assert bad == -1
    assert values.tolist() == [float(s) for s in strings]
    unsigned = [s.lstrip("-") for s in strings]
    values, bad = parse_decimals(unsigned)
    assert bad == -1 and values.tolist() == [float(s) for s in unsigned]


@settings(deadline=None)
@given(st.text(max_size=40), st.booleans())
def test_anything_outside_the_grammar_is_rejected(s, negative_ok):
    ok = GRAMMAR.fullmatch(s) is not None and (negative_ok or not s.startswith("-"))
    values, bad = parse_decimals(["1.5", s], negative_ok)
    assert bad == (-1 if ok else 1)
    if ok:
        assert values[1] == float(s)
    else:
        assert why_not_decimal(s, negative_ok)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("6.18e4", "exponent in number '6.18e4'"),
        ("1E308", "exponent in number '1E308'"),
        ("1" + "0" * 309, "out of range (more than 18 integer digits)"),
        ("0." + "0" * 29 + "1", "has more than 18 decimals"),
        ("6_1804.00", "'_' in number '6_1804.00'"),
        ("٦١٨٠٤.٠٠", "non-ASCII character in number"),
        ("６１８０４", "non-ASCII character in number"),
        ("inf", "not a finite number: 'inf'"),
        ("-Infinity", "not a finite number: '-Infinity'"),
        ("nan", "not a finite number: 'nan'"),
        ("NaN", "not a finite number: 'NaN'"),
        ("+61804.1", "leading '+' in number '+61804.1'"),
        ("", "empty number"),
        ("-61804.1", "negative number '-61804.1' where only positive ones are valid"),
        (".5", "not a plain decimal number: '.5'"),
        ("5.", "not a plain decimal number: '5.'"),
        (" 5", "not a plain decimal number: ' 5'"),
        ("0x1A", "not a plain decimal number: '0x1A'"),
        (61804.1, "JSON number 61804.1 where the venue sends a decimal string"),
        (61804, "JSON number 61804 where the venue sends a decimal string"),
        (True, "JSON boolean True where the venue sends a decimal string"),
        (None, "null None where the venue sends a decimal string"),
        (["1"], "JSON list ['1'] where the venue sends a decimal string"),
    ],
)
def test_each_malformed_class_is_rejected_with_its_reason(value, message):
    values, bad = parse_decimals(["61804.10", "0.001", value])
    assert bad == 2 and values.size == 0
    assert message in why_not_decimal(value)
    # float() takes most of these: the grammar, not Python, decides.


def test_negative_numbers_only_where_allowed():
    assert parse_decimals(["-0.00010000"], negative_ok=True)[1] == -1
    assert parse_decimals(["-0.00010000"])[1] == 0
    assert parse_decimals(["--1"], negative_ok=True)[1] == 0


def test_arrow_string_arrays_are_parsed_like_lists():
    values, bad = parse_decimals(pa.array(["61804.1", "0.001"]))
    assert bad == -1 and values.tolist() == [61804.1, 0.001]
    assert parse_decimals(pa.array(["61804.1", "1e3"]))[1] == 1
    assert parse_decimals(pa.array(["61804.1", None]))[1] == 1


def test_time_range_is_2017_to_a_day_from_now():
    lo, hi = time_range_ns(now_ns=1_800_000_000 * 10**9)
    assert lo == TIME_MIN_NS == int(np.datetime64("2017-01-01", "ns").astype(np.int64))
    assert hi == 1_800_000_000 * 10**9 + 86_400 * 10**9


@pytest.mark.parametrize(
    ("value_ms", "ok"),
    [
        (1_000, False),  # 1970
        (int(np.datetime64("2016-12-31T23:59:59.999", "ms").astype(np.int64)), False),
        (int(np.datetime64("2017-01-01", "ms").astype(np.int64)), True),
        (1_723_161_256_298, True),  # 2024
        (int(np.datetime64("2100-01-01", "ms").astype(np.int64)), False),
        (2**63 // 1000, False),  # would overflow on its way to ns
    ],
)
def test_times_outside_the_sane_range_name_the_row(value_ms, ok):
    ts = np.array([1_723_161_256_298, value_ms], np.int64)
    if ok:
        check_times(ts, np.array([0, 1]), path_of, "T", 1_000_000)
        return
    with pytest.raises(DataError, match=rf"T {value_ms} is outside the sane range 2017-01-01 \.\. now \+ 1 day") as e:
        check_times(ts, np.array([0, 1]), path_of, "T", 1_000_000)
    assert (e.value.path, e.value.line) == ("f.txt", 2)


@pytest.mark.parametrize(
    ("price", "qty", "message"),
    [
        (1e17, 1.0, "price 1e+17 is out of range for the tick size 0.1"),
        (61804.1, 1e14, "quantity 100000000000000.0 is out of range for the lot size 0.001"),
        # Within off_grid's rounding tolerance of 0 steps, yet not 0: below one tick or lot.
        (61804.1, 1e-30, "quantity 1e-30 is not a multiple of the lot size"),
        (61804.1, 1e-10, "quantity 1e-10 is not a multiple of the lot size"),
        (1e-30, 1.0, "price 1e-30 is not a multiple of the tick size"),
    ],
)
def test_prices_and_quantities_beyond_the_tick_and_lot_range_are_rejected(price, qty, message):
    with pytest.raises(DataError, match=re.escape(message)) as e:
        check_prices_qtys(
            np.array([61804.1, price]), np.array([1.0, qty]), np.array([0, 1]), path_of, BTC, "trade", False
        )
    assert e.value.line == 2
