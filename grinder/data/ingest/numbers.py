"""The number grammar every ingest format shares, the sane time range, and the row checks on top.

Venues send decimals as plain ASCII strings (Binance: ``"61804.10"``) and ids and times as JSON
integers. Anything else is malformed, not "close enough": an exponent, ``_``, a leading ``+``,
non-ASCII digits, ``inf``/``nan``, or a JSON number where a decimal string belongs would all be
read by Python's ``float()``, and each has hidden a broken recorder before. One grammar, checked
here, is shared by every format and mirrored byte for byte by the compiled Binance scanner.
"""

from __future__ import annotations

import time

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from grinder.data.instruments import Instrument, off_grid
from grinder.errors import DataError

# Up to 18 digits each side of the point: every such integer part fits int64, and no venue
# sends more than 8 decimals, so longer numbers are garbage (1e-30 written out), not precision.
MAX_DIGITS = 18
DECIMAL_RE = rf"^[0-9]{{1,{MAX_DIGITS}}}(\.[0-9]{{1,{MAX_DIGITS}}})?$"
SIGNED_DECIMAL_RE = rf"^-?[0-9]{{1,{MAX_DIGITS}}}(\.[0-9]{{1,{MAX_DIGITS}}})?$"
INT64_MAX = 2**63 - 1
# A price or quantity is held exactly as a count of ticks or lots only below 2**53.
MAX_STEPS = 2**53

NS_PER_DAY = 86_400 * 10**9
TIME_MIN_NS = 1_483_228_800 * 10**9  # 2017-01-01 UTC: before any crypto perpetual data Grinder reads


def time_range_ns(now_ns: int | None = None) -> tuple[int, int]:
    """Sane exchange and local times, ns since 1970: [2017-01-01, now + 1 day]."""
    now = time.time_ns() if now_ns is None else now_ns
    return TIME_MIN_NS, now + NS_PER_DAY


def why_not_decimal(s: object, negative_ok: bool = False) -> str:
    """Why `s` is not a decimal string in the venues' grammar (for error messages)."""
    if not isinstance(s, str):
        kind = {bool: "JSON boolean", int: "JSON number", float: "JSON number", type(None): "null"}.get(
            type(s), f"JSON {type(s).__name__}"
        )
        return f"{kind} {s!r} where the venue sends a decimal string"
    body = s[1:] if s.startswith("-") else s
    if not s:
        return "empty number"
    if not s.isascii():
        return f"non-ASCII character in number {s!r}"
    if body.lower().lstrip("+") in ("inf", "infinity", "nan"):
        return f"not a finite number: {s!r}"
    if "e" in s.lower():
        return f"exponent in number {s!r}"
    if "_" in s:
        return f"'_' in number {s!r}"
    if s.startswith("+"):
        return f"leading '+' in number {s!r}"
    if s.startswith("-") and not negative_ok:
        return f"negative number {s!r} where only positive ones are valid"
    whole, _, frac = body.partition(".")
    if whole.isdigit() and len(whole) > MAX_DIGITS:
        return f"number {s!r} out of range (more than {MAX_DIGITS} integer digits)"
    if whole.isdigit() and frac.isdigit() and len(frac) > MAX_DIGITS:
        return f"number {s!r} has more than {MAX_DIGITS} decimals"
    return f"not a plain decimal number: {s!r}"


def parse_decimals(strings: list | pa.Array, negative_ok: bool = False) -> tuple[np.ndarray, int]:
    """Parse decimal strings to float64 in one C++ pass; returns (values, index of first bad or -1).

    A value is good when it is a str matching DECIMAL_RE (SIGNED_DECIMAL_RE with `negative_ok`).
    `strings` is a list of parsed JSON values or an Arrow string array.
    """
    if len(strings) == 0:
        return np.empty(0, np.float64), -1
    if isinstance(strings, pa.Array):
        arr = strings
    else:
        try:
            arr = pa.array(strings, type=pa.string())
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            # Only on bad input: a JSON number (or array, boolean...) where a string belongs.
            return np.empty(0, np.float64), next(i for i, s in enumerate(strings) if not isinstance(s, str))
    ok = pc.fill_null(pc.match_substring_regex(arr, SIGNED_DECIMAL_RE if negative_ok else DECIMAL_RE), False)
    bad = np.flatnonzero(~ok.to_numpy(zero_copy_only=False))
    if bad.size:
        return np.empty(0, np.float64), int(bad[0])
    return pc.cast(arr, pa.float64()).to_numpy(zero_copy_only=False), -1


def check_times(ts: np.ndarray, line: np.ndarray, path_of, what: str, unit_ns: int = 1) -> None:
    """Reject times (in units of `unit_ns`) outside time_range_ns(), naming the first offending row."""
    lo, hi = time_range_ns()
    # Compare in the column's own unit, so a wild value cannot overflow on the way to ns.
    bad = np.flatnonzero((ts < -(-lo // unit_ns)) | (ts > hi // unit_ns))
    if bad.size:
        i = bad[0]
        raise DataError(f"{what} {int(ts[i])} is outside the sane range 2017-01-01 .. now + 1 day", *path_of(line[i]))


def check_prices_qtys(
    price: np.ndarray,
    qty: np.ndarray,
    line: np.ndarray,
    path_of,
    inst: Instrument,
    what: str,
    qty_may_be_zero: bool,
) -> None:
    """Reject NaN/inf/non-positive prices, negative quantities, values beyond 2**53 ticks or lots, and
    prices off the tick grid or quantities off the lot grid."""
    bad = np.flatnonzero(~np.isfinite(price) | (price <= 0))
    if bad.size:
        i = bad[0]
        raise DataError(f"{what}: invalid price {float(price[i])!r}", *path_of(line[i]))
    bad = np.flatnonzero(~np.isfinite(qty) | (qty < 0) | ((qty == 0) & (not qty_may_be_zero)))
    if bad.size:
        i = bad[0]
        raise DataError(f"{what}: invalid quantity {float(qty[i])!r}", *path_of(line[i]))
    for values, step, name in ((price, inst.tick_size, "price tick"), (qty, inst.lot_size, "quantity lot")):
        bad = np.flatnonzero(values / step >= MAX_STEPS)
        if bad.size:
            i = bad[0]
            value, unit = name.split()
            raise DataError(
                f"{what}: {value} {float(values[i])!r} is out of range for the {unit} size {step} "
                f"of {inst.venue}/{inst.symbol}",
                *path_of(line[i]),
            )
    # off_grid tolerates float rounding, so a positive value that rounds to 0 steps is caught here.
    bad = np.union1d(off_grid(price, inst.tick_size), np.flatnonzero(np.rint(price / inst.tick_size) < 1))
    if bad.size:
        i = bad[0]
        raise DataError(
            f"{what}: price {float(price[i])!r} is not a multiple of the tick size {inst.tick_size} "
            f"of {inst.venue}/{inst.symbol}",
            *path_of(line[i]),
        )
    bad = np.union1d(off_grid(qty, inst.lot_size), np.flatnonzero((qty > 0) & (np.rint(qty / inst.lot_size) < 1)))
    if bad.size:
        i = bad[0]
        raise DataError(
            f"{what}: quantity {float(qty[i])!r} is not a multiple of the lot size {inst.lot_size} "
            f"of {inst.venue}/{inst.symbol}",
            *path_of(line[i]),
        )


def check_sorted(ts: np.ndarray, line: np.ndarray, path_of, what: str) -> None:
    """Reject a timestamp column that goes backwards, naming the first offending row."""
    if ts.size > 1:
        back = np.flatnonzero(ts[1:] < ts[:-1])
        if back.size:
            i = back[0] + 1
            raise DataError(
                f"{what} go backwards ({ts[i]} ns after {ts[i - 1]} ns): input must be time-ordered",
                *path_of(line[i]),
            )
