"""The crossed-book check at ingest: the rule of `grinder data check`, run before anything is written."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
from numba import njit

from grinder.book.check import replay_check
from grinder.book.l2 import ASK, BID, EMPTY, apply_row, best_ticks, new_book
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


@njit(cache=True)
def _cross_rows(kind, side, ticks, qty, flags, hdr, wq, ok, oq, st):
    """`_replay`'s crossing rule over rows in apply order, its state carried in `st`.

    st: [valid, batches, crossed, first_cross (row index in this call, -1 if none yet)].
    """
    valid = st[0] != 0
    for i in range(kind.shape[0]):
        k = kind[i]
        if k == 3:
            continue
        ok, oq = apply_row(hdr, wq, ok, oq, k, side[i], ticks[i], qty[i])
        if k == 2:
            valid = False
        elif k == 1:
            valid = True
        if flags[i] & 1 and valid:
            st[1] += 1
            bb = best_ticks(hdr, BID)
            ba = best_ticks(hdr, ASK)
            if bb != EMPTY and ba != EMPTY and bb >= ba:
                st[2] += 1
                if st[3] < 0:
                    st[3] = i
    st[0] = 1 if valid else 0
    return ok, oq


class CrossCheck:
    """`check_uncrossed` fed a chunk at a time: the same verdict and error as on the whole book.

    A message ends where the update id changes, so the last row fed waits for the next chunk (or
    `finish`) to know whether it ends its message.
    """

    def __init__(self, inst: Instrument, path_of):
        self.inst, self.path_of = inst, path_of
        self.hdr, self.wq, self.ok, self.oq = new_book()
        self.st = np.array([0, 0, 0, -1], np.int64)
        self.first_line = -1
        self.held: tuple | None = None  # the last row: kind, side, price, qty, uid, line

    def feed(self, kind, side, price, qty, uid, line) -> None:
        """Rows (numpy columns of the book table, in apply order) and each row's source line."""
        if not len(kind):
            return
        if self.held is not None:
            kind, side, price, qty, uid, line = (
                np.concatenate(([h], a)) for h, a in zip(self.held, (kind, side, price, qty, uid, line), strict=True)
            )
        self.held = tuple(a[-1] for a in (kind, side, price, qty, uid, line))
        n = len(kind) - 1
        flags = (uid[1:] != uid[:-1]).astype(np.uint8)
        self._run(kind[:n], side[:n], price[:n], qty[:n], flags, line[:n])

    def _run(self, kind, side, price, qty, flags, line) -> None:
        if not len(kind):
            return
        ticks = np.rint(np.asarray(price, np.float64) * (1.0 / self.inst.tick_size)).astype(np.int64)
        self.st[3] = -1
        self.ok, self.oq = _cross_rows(
            np.asarray(kind, np.int8),
            np.asarray(side, np.int8),
            ticks,
            np.asarray(qty, np.float64),
            flags,
            self.hdr,
            self.wq,
            self.ok,
            self.oq,
            self.st,
        )
        if self.st[3] >= 0 and self.first_line < 0:
            self.first_line = int(line[self.st[3]])

    def finish(self) -> None:
        """Check the last row and raise as `check_uncrossed` would."""
        if self.held is not None:
            k, s, p, q, _, ln = self.held
            self.held = None
            self._run(np.array([k]), np.array([s]), np.array([p]), np.array([q]), np.ones(1, np.uint8), np.array([ln]))
        batches, crossed = int(self.st[1]), int(self.st[2])
        if crossed:
            raise DataError(
                f"book crossed: best bid >= best ask after this message ({crossed} of {batches} "
                "book messages leave it crossed or locked)",
                *self.path_of(self.first_line),
            )
