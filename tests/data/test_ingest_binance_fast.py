"""The compiled scanner's number readers accept only what the shared grammar accepts, with equal values."""

from __future__ import annotations

import re

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from grinder.data.ingest.binance_fast import _POW10, INT64_MAX, _dec, _int
from grinder.data.ingest.numbers import parse_decimals

# Short strings over the characters that matter, plus whole decimals and integers.
chars = st.text("0123456789.-+eE_ x٣", max_size=24)
numbers = st.one_of(
    chars,
    st.decimals(allow_nan=False, allow_infinity=False).map(str),
    st.integers(-(2**65), 2**65).map(str),
)


def _buf(s: str, tail: bytes) -> np.ndarray:
    return np.frombuffer(s.encode() + tail, np.uint8).copy()


@settings(deadline=None, max_examples=500)
@given(numbers, st.booleans())
def test_compiled_decimal_reader_accepts_a_subset_of_the_grammar(s, neg_ok):
    buf = _buf(s, b'"')
    value, end = _dec(buf, 0, len(buf), _POW10, neg_ok)
    parsed, bad = parse_decimals([s], negative_ok=neg_ok)
    if end >= 0:
        # Whatever the scanner takes, the general path takes too, as the same double.
        assert end == len(buf) and bad == -1 and value == parsed[0] == float(s)
    elif bad == -1:
        # The scanner may hand a valid number to the general path only when it is long.
        assert sum(c.isdigit() for c in s) > 15


@settings(deadline=None, max_examples=500)
@given(numbers)
def test_compiled_integer_reader_takes_json_integers_within_int64(s):
    buf = _buf(s, b",")
    value, end = _int(buf, 0, len(buf))
    json_int = re.fullmatch(r"0|[1-9][0-9]*", s, re.ASCII) is not None and int(s) <= INT64_MAX
    # The scanner takes a field when the integer ends where the next literal begins.
    assert (end == len(s)) == json_int
    if json_int:
        assert value == int(s)


def test_integer_reader_at_the_int64_edge():
    for s, ok in (("9223372036854775807", True), ("9223372036854775808", False), ("99999999999999999999", False)):
        buf = _buf(s, b"}")
        assert (_int(buf, 0, len(buf))[1] > 0) == ok, s
