"""The crossed-book check at ingest: the rule of `grinder data check`, run before anything is written."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from grinder.book.check import replay_check
from grinder.data.instruments import Instrument
from grinder.data.tape import Series, Tape
from grinder.errors import DataError

_BBO_FLOATS = ("bid_price", "bid_qty", "ask_price", "ask_qty")


def _col(t: pa.Table, name: str, dtype) -> np.ndarray:
    return np.asarray(t.column(name).to_numpy(), dtype)


def check_uncrossed(book: pa.Table, inst: Instrument, line: np.ndarray, path_of) -> None:
    """Reject a book table (rows in apply order) that leaves the book crossed or locked.

    The rows are replayed through the same kernel as `grinder data check` (replay_check), on a
    tape of the book rows alone, flagged as load_tape flags them: a message ends where the
    update id changes. `line[i]` is the global source line of row i, for `path_of`.
    """
    n = book.num_rows
    if n == 0:
        return
    uid = _col(book, "update_id", np.int64)
    flags = np.ones(n, np.uint8)
    flags[:-1] = uid[1:] != uid[:-1]
    price = _col(book, "price", np.float64)
    none_i, none_f = np.empty(0, np.int64), np.empty(0, np.float64)
    tape = Tape(
        inst,
        _col(book, "ts_exch", np.int64),
        _col(book, "ts_local", np.int64),
        _col(book, "kind", np.int8),
        _col(book, "side", np.int8),
        price,
        # As load_tape rounds them (grinder.data.tape._merge_part).
        np.rint(price * (1.0 / inst.tick_size)).astype(np.int64),
        _col(book, "qty", np.float64),
        uid,
        flags,
        bbo=Series({"ts_exch": none_i, "update_id": none_i} | dict.fromkeys(_BBO_FLOATS, none_f)),
        funding=Series({"ts_exch": none_i}),
    )
    r = replay_check(tape)
    if r.crossed:
        raise DataError(
            f"book crossed: best bid >= best ask after this message ({r.crossed} of {r.batches} "
            "book messages leave it crossed or locked)",
            *path_of(line[r.first_cross]),
        )
