"""Bulk conversion of decimal strings to float64 and the row checks every format shares."""

from __future__ import annotations

import io

import numpy as np
import pyarrow as pa
import pyarrow.csv as pcsv

from grinder.data.errors import DataError
from grinder.data.instruments import Instrument, off_grid


def parse_decimals(strings: list[str]) -> tuple[np.ndarray, int]:
    """Parse decimal strings to float64 in one C++ pass; returns (values, index of first bad or -1)."""
    if not strings:
        return np.empty(0, np.float64), -1
    buf = "\n".join(strings).encode()
    try:
        table = pcsv.read_csv(
            io.BytesIO(buf),
            read_options=pcsv.ReadOptions(column_names=["v"], block_size=1 << 26),
            parse_options=pcsv.ParseOptions(newlines_in_values=False),
            # No null spellings: "NA" or "null" must be rejected like float() would, not become NaN.
            convert_options=pcsv.ConvertOptions(
                column_types={"v": pa.float64()}, null_values=[], strings_can_be_null=False
            ),
        )
        values = table.column("v").to_numpy()
        if len(values) == len(strings):
            return values, -1
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        pass
    # Slow path, only on bad input: find the culprit.
    for i, s in enumerate(strings):
        try:
            float(s)
        except (TypeError, ValueError):
            return np.empty(0, np.float64), i
    return np.array(strings, dtype=np.float64), -1


def check_prices_qtys(
    price: np.ndarray,
    qty: np.ndarray,
    line: np.ndarray,
    path_of,
    inst: Instrument,
    what: str,
    qty_may_be_zero: bool,
) -> None:
    """Reject NaN/inf/non-positive prices, negative or off-lot quantities and off-tick prices."""
    bad = np.flatnonzero(~np.isfinite(price) | (price <= 0))
    if bad.size:
        i = bad[0]
        raise DataError(f"{what}: invalid price {float(price[i])!r}", *path_of(line[i]))
    bad = np.flatnonzero(~np.isfinite(qty) | (qty < 0) | ((qty == 0) & (not qty_may_be_zero)))
    if bad.size:
        i = bad[0]
        raise DataError(f"{what}: invalid quantity {float(qty[i])!r}", *path_of(line[i]))
    bad = off_grid(price, inst.tick_size)
    if bad.size:
        i = bad[0]
        raise DataError(
            f"{what}: price {float(price[i])!r} is not a multiple of the tick size {inst.tick_size} "
            f"of {inst.venue}/{inst.symbol}",
            *path_of(line[i]),
        )
    bad = off_grid(qty, inst.lot_size)
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
