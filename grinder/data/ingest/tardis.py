"""Tardis.dev normalised CSV files (plain or gzip): ``incremental_book_L2`` and ``trades``.

The kind of each file is told by its header. Both carry ``exchange, symbol, timestamp,
local_timestamp, side, price, amount`` with timestamps in µs since the Unix epoch (``timestamp``
is the exchange's, ``local_timestamp`` Tardis' receive time); book files add ``is_snapshot``
(``side`` bid/ask, ``amount`` the absolute level quantity, 0 removes the level), trade files add
``id`` (``side`` buy/sell is the aggressor's, or ``unknown``).

Book: a block of ``is_snapshot=true`` rows that follows non-snapshot rows (or opens a file) is a
new full snapshot; a ``BOOK_RESET`` row with the snapshot's timestamps is put before it. Tardis
has no update ids, so ``update_id`` counts messages: consecutive rows with equal ``(timestamp,
local_timestamp, is_snapshot)`` form one message. Rows for other symbols (Tardis files may hold
several) are skipped and counted. Files are read in the given order as one stream; book and
trade files may be mixed, and local timestamps must not go backwards within each kind's stream.
``seq`` is the arrival order: the rank of a row's local time across book and trade files
(book first on ties), ``<< 16``; data rows ``| 1``, reset rows ``| 0``.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
from numba import njit

from grinder.data.ingest.book_check import check_uncrossed
from grinder.data.ingest.numbers import check_prices_qtys, check_sorted, check_times, parse_decimals, why_not_decimal
from grinder.data.ingest.source import LineMap, read_bytes
from grinder.data.instruments import Instrument
from grinder.data.lake import IngestBatch, IngestReport
from grinder.data.schema import (
    BOOK,
    BOOK_DIFF,
    BOOK_RESET,
    BOOK_SNAPSHOT,
    SIDE_ASK,
    SIDE_BID,
    SIDE_BOTH,
    TRADES,
)
from grinder.errors import DataError

US = 1000  # ns per µs
SEQ_SHIFT = 16

_COMMON = ("exchange", "symbol", "timestamp", "local_timestamp")
BOOK_COLUMNS = (*_COMMON, "is_snapshot", "side", "price", "amount")
TRADE_COLUMNS = (*_COMMON, "id", "side", "price", "amount")
_TYPES = {
    "exchange": pa.string(),
    "symbol": pa.string(),
    "timestamp": pa.int64(),
    "local_timestamp": pa.int64(),
    "is_snapshot": pa.bool_(),
    "side": pa.string(),
    "price": pa.float64(),
    "amount": pa.float64(),
    "id": pa.string(),  # numeric on most venues, but not all
}
_TRUE, _FALSE = ["true", "True", "TRUE", "1"], ["false", "False", "FALSE", "0"]
_INT_RE = r"^[0-9]{1,19}$"  # timestamps and ids: ASCII digits, within int64 (see _ints_ok)
_INT64_MAX = str(2**63 - 1)
_US_LO, _US_HI = 10**14, 10**16  # plausible µs since 1970 (1973 .. 2286)


def _read_header(raw: bytes, path: Path) -> tuple[str, list[str]]:
    """The file's kind ("book" or "trades") and column names, from line 1."""
    if not raw:
        raise DataError("empty file", str(path))
    end = raw.find(b"\n")
    first = raw[: end if end >= 0 else len(raw)].rstrip(b"\r")
    try:
        # Other CSV writers (pandas, pyarrow) may quote the header names.
        names = [n.strip('"') for n in first.decode().split(",")]
    except UnicodeDecodeError:
        raise DataError("header is not text", str(path), 1) from None
    if "is_snapshot" in names:
        kind, expected = "book", BOOK_COLUMNS
    elif "id" in names:
        kind, expected = "trades", TRADE_COLUMNS
    else:
        raise DataError(
            "not a Tardis incremental_book_L2 or trades header (expected "
            f"{','.join(BOOK_COLUMNS)} or {','.join(TRADE_COLUMNS)}; got {first.decode(errors='replace')!r})",
            str(path),
            1,
        )
    missing = [c for c in expected if c not in names]
    unknown = [c for c in names if c not in expected]
    dup = sorted({c for c in names if names.count(c) > 1})
    if missing or unknown or dup:
        what = "trades" if kind == "trades" else "incremental_book_L2"
        parts = [f"missing column(s) {', '.join(missing)}"] if missing else []
        parts += [f"unknown column(s) {', '.join(unknown)}"] if unknown else []
        parts += [f"duplicate column(s) {', '.join(dup)}"] if dup else []
        raise DataError(f"Tardis {what} header: " + "; ".join(parts), str(path), 1)
    return kind, names


def _check_fields(raw: bytes, ncols: int, path: Path) -> None:
    """Reject the first line whose number of comma-separated fields is wrong (Tardis never quotes)."""
    buf = np.frombuffer(raw, np.uint8)
    nl = np.flatnonzero(buf == 10)
    if len(raw) and raw[-1:] != b"\n":
        nl = np.append(nl, len(raw))
    starts = np.concatenate(([0], nl[:-1] + 1))
    commas = np.concatenate(([0], np.cumsum(buf == 44)))
    nfields = commas[nl] - commas[starts] + 1
    length = nl - starts
    cr = (length > 0) & (buf[np.maximum(nl - 1, 0)] == 13)  # CRLF line ends
    empty = length - cr == 0
    bad = np.flatnonzero((nfields != ncols) | empty)
    if bad.size:
        i = int(bad[0])
        what = "empty line" if empty[i] else f"expected {ncols} comma-separated fields, found {nfields[i]}"
        raise DataError(what, str(path), i + 1)


def _ints_ok(strings: pa.ChunkedArray) -> np.ndarray:
    """Which strings are non-negative integers within int64."""
    digits = pc.match_substring_regex(strings, _INT_RE)
    # 19 digits may pass 2**63 - 1; equal lengths compare as numbers do.
    over = pc.and_(pc.equal(pc.utf8_length(strings), 19), pc.greater(strings, _INT64_MAX))
    return pc.and_not(digits, over).to_numpy(zero_copy_only=False)


def _first_bad(strings: pa.ChunkedArray, typ: pa.DataType) -> tuple[int, np.ndarray | None]:
    """Index of the first value of a string column that does not convert to `typ` (-1 if none),
    and the converted values (None if a value is bad)."""
    if typ == pa.string():
        return -1, None
    if typ == pa.int64():
        ok = _ints_ok(strings)
        bad = np.flatnonzero(~ok)
        return (int(bad[0]), None) if bad.size else (-1, pc.cast(strings, pa.int64()).to_numpy())
    if typ == pa.bool_():
        ok = pc.is_in(strings, pa.array(_TRUE + _FALSE)).to_numpy(zero_copy_only=False)
        bad = np.flatnonzero(~ok)
        if bad.size:
            return int(bad[0]), None
        return -1, pc.is_in(strings, pa.array(_TRUE)).to_numpy(zero_copy_only=False)
    values, bad = parse_decimals(strings.combine_chunks() if strings.num_chunks != 1 else strings.chunk(0))
    return (bad, None) if bad >= 0 else (-1, values)


def _read_rows(raw: bytes, names: list[str], path: Path) -> dict[str, np.ndarray | pa.ChunkedArray]:
    """Every column of the file: numbers as numpy arrays, text as Arrow arrays, rows in file order.

    Every column is read as text and converted by the shared grammar (numbers.parse_decimals,
    _ints_ok): Arrow's own CSV number parsing would take exponents, '+', 'inf' and 'nan'.
    """
    types = {c: _TYPES[c] for c in names}
    keep = [c for c in names if c != "exchange"]
    try:
        table = pcsv.read_csv(
            io.BytesIO(raw),
            read_options=pcsv.ReadOptions(block_size=1 << 24),
            parse_options=pcsv.ParseOptions(ignore_empty_lines=False, newlines_in_values=False),
            convert_options=pcsv.ConvertOptions(
                column_types={c: pa.string() for c in names},
                include_columns=keep,
                null_values=[],
                strings_can_be_null=False,
            ),
        )
    except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
        _check_fields(raw, len(names), path)  # names the culprit line when it is a field count
        raise DataError(f"unreadable CSV ({e})", str(path)) from None
    out: dict = {}
    worst: tuple[int, str, str] | None = None
    for c in keep:
        col = table.column(c)
        bad, values = _first_bad(col, types[c])
        if bad >= 0:
            if worst is None or bad < worst[0]:
                worst = (bad, c, col[bad].as_py())
        else:
            out[c] = col if values is None else values
    if worst is not None:
        _check_fields(raw, len(names), path)  # an empty or short line reads as empty fields: name it so
        bad, c, v = worst
        if types[c] == pa.float64():
            raise DataError(f"column {c}: {why_not_decimal(v)}", str(path), bad + 2)
        what = {pa.int64(): "an integer within 0 .. 2**63-1", pa.bool_(): "true or false"}[types[c]]
        raise DataError(f"column {c}: {v!r} is not {what}", str(path), bad + 2)
    return out


def _codes(values: pa.ChunkedArray, mapping: dict[str, int]) -> np.ndarray:
    """Map a text column to small ints by `mapping`; values not in it become 0."""
    keys = list(mapping)
    idx = pc.fill_null(pc.index_in(values, value_set=pa.array(keys)), len(keys))
    table = np.array([mapping[k] for k in keys] + [0], np.int8)
    return table[np.asarray(idx.to_numpy(), np.int64)]


def _check_us(ts: np.ndarray, line: np.ndarray, path_of, what: str) -> None:
    bad = np.flatnonzero((ts < _US_LO) | (ts >= _US_HI))
    if bad.size:
        i = bad[0]
        raise DataError(f"{what} {ts[i]} is not microseconds since 1970", *path_of(line[i]))
    check_times(ts, line, path_of, what + " (µs)", US)


class _Stream:
    """Rows of one kind, concatenated over files in the given order."""

    def __init__(self) -> None:
        self.parts: list[dict[str, np.ndarray]] = []

    def cols(self, names: tuple[str, ...]) -> dict[str, np.ndarray]:
        if not self.parts:
            return {c: np.empty(0, np.int64) for c in names}
        return {c: np.concatenate([p[c] for p in self.parts]) for c in names}


@njit(cache=True)
def _arrival_ranks(book_local_us: np.ndarray, trade_local_us: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Ranks of two time-sorted streams in their merged order (book first at equal local µs)."""
    nb, nt = book_local_us.shape[0], trade_local_us.shape[0]
    rb = np.empty(nb, np.int64)
    rt = np.empty(nt, np.int64)
    i = j = 0
    while i < nb or j < nt:
        if j >= nt or (i < nb and book_local_us[i] <= trade_local_us[j]):
            rb[i] = i + j
            i += 1
        else:
            rt[j] = i + j
            j += 1
    return rb, rt


def _book_table(s: dict[str, np.ndarray]) -> tuple[pa.Table, np.ndarray]:
    """Book rows with a reset before each snapshot and message-counter update ids; and each row's line."""
    n = s["line"].size
    snap = s["snap"]
    prev_snap = np.concatenate(([False], snap[:-1]))
    start = snap & (~prev_snap | s["file_start"])  # first row of a new snapshot
    new_msg = np.ones(n, bool)
    if n > 1:
        new_msg[1:] = (s["ts"][1:] != s["ts"][:-1]) | (s["loc"][1:] != s["loc"][:-1]) | (snap[1:] != snap[:-1])
    new_msg |= start | s["file_start"]
    uid = np.cumsum(new_msg)
    r = np.flatnonzero(start)

    def place(rows: np.ndarray, resets, dtype) -> np.ndarray:
        # Snapshots are few: insert their reset rows by slicing, not by scattering every row.
        return np.insert(np.asarray(rows, dtype), r, resets)

    table = pa.table(
        {
            "ts_exch": place(s["ts"] * US, s["ts"][r] * US, np.int64),
            "ts_local": place(s["loc"] * US, s["loc"][r] * US, np.int64),
            "seq": place((s["arrival"] << SEQ_SHIFT) | 1, s["arrival"][r] << SEQ_SHIFT, np.int64),
            "update_id": place(uid, uid[r], np.int64),
            "kind": place(np.where(snap, BOOK_SNAPSHOT, BOOK_DIFF), BOOK_RESET, np.int8),
            "side": place(s["side"], SIDE_BOTH, np.int8),
            "price": place(s["price"], 0.0, np.float64),
            "qty": place(s["qty"], 0.0, np.float64),
        },
        schema=BOOK,
    )
    return table, place(s["line"], s["line"][r], np.int64)


def parse_tardis(paths: list[Path], inst: Instrument) -> IngestBatch:
    """Parse Tardis CSV files (in the given order, later files continuing earlier ones) into lake tables."""
    report = IngestReport()
    path_of = LineMap()
    book, trades = _Stream(), _Stream()
    symbol = inst.symbol.upper()  # Tardis writes symbols upper-case
    next_trade_id = 1
    g0 = 0
    for path in paths:
        path = Path(path)
        raw = read_bytes(path)
        kind, names = _read_header(raw, path)
        path_of.add(path, g0)
        cols = _read_rows(raw, names, path)
        nrows = len(cols["timestamp"])
        line = g0 + 1 + np.arange(nrows, dtype=np.int64)  # global index; the header is line g0
        g0 += nrows + 1

        sym = cols["symbol"]
        mine = pc.equal(sym, symbol).to_numpy(zero_copy_only=False)
        if not mine.all():
            others = pc.value_counts(pc.filter(sym, pa.array(~mine)))
            for item in others.to_pylist():
                report.skip(f"row for another symbol ({item['values']})", item["counts"])
        idx = np.flatnonzero(mine)
        line = line[idx]
        ts, loc = cols["timestamp"][idx], cols["local_timestamp"][idx]
        _check_us(ts, line, path_of, "timestamp")
        _check_us(loc, line, path_of, "local_timestamp")
        side_text = pc.take(cols["side"], pa.array(idx))
        price, qty = cols["price"][idx], cols["amount"][idx]

        if kind == "book":
            side = _codes(side_text, {"bid": SIDE_BID, "ask": SIDE_ASK})
            bad = np.flatnonzero(side == 0)
            if bad.size:
                i = bad[0]
                raise DataError(f"book side {side_text[int(i)].as_py()!r} is neither bid nor ask", *path_of(line[i]))
            first = np.zeros(idx.size, bool)
            first[:1] = True
            book.parts.append(
                {
                    "line": line,
                    "ts": ts,
                    "loc": loc,
                    "snap": cols["is_snapshot"][idx],
                    "side": side,
                    "price": price,
                    "qty": qty,
                    "file_start": first,
                }
            )
            continue

        side = _codes(side_text, {"buy": SIDE_BID, "sell": SIDE_ASK, "unknown": 2})
        bad = np.flatnonzero(side == 0)
        if bad.size:
            i = bad[0]
            raise DataError(f"trade side {side_text[int(i)].as_py()!r} is not buy, sell or unknown", *path_of(line[i]))
        known = side != 2
        report.skip("trade with unknown aggressor side", int((~known).sum()))
        ids = pc.take(cols["id"], pa.array(idx[known]))
        if _ints_ok(ids).all():
            trade_id = pc.cast(ids, pa.int64()).to_numpy() if len(ids) else np.empty(0, np.int64)
        else:
            trade_id = np.arange(next_trade_id, next_trade_id + len(ids), dtype=np.int64)
            next_trade_id += len(ids)
            report.notes.append(f"{path}: trade ids are not numeric; trade_id is a running count")
        trades.parts.append(
            {
                "line": line[known],
                "ts": ts[known],
                "loc": loc[known],
                "side": side[known],
                "price": price[known],
                "qty": qty[known],
                "id": trade_id,
            }
        )

    tables = {}
    # --- book ---
    b = book.cols(("line", "ts", "loc", "snap", "side", "price", "qty", "file_start"))
    b["snap"] = b["snap"].astype(bool)
    b["file_start"] = b["file_start"].astype(bool)
    check_prices_qtys(b["price"], b["qty"], b["line"], path_of, inst, "book level", qty_may_be_zero=True)
    check_sorted(b["loc"] * US, b["line"], path_of, "book local timestamps")
    t = trades.cols(("line", "ts", "loc", "side", "price", "qty", "id"))
    check_prices_qtys(t["price"], t["qty"], t["line"], path_of, inst, "trade", qty_may_be_zero=False)
    check_sorted(t["loc"] * US, t["line"], path_of, "trade local timestamps")
    # Arrival order across the book and trade files: rank by local time (book first on ties), so
    # that equal exchange times are broken as they were received, not by which file came first.
    b["arrival"], t_arrival = _arrival_ranks(b["loc"], t["loc"])
    tables["book"], book_line = _book_table(b)
    report.rows["book"] = tables["book"].num_rows
    check_uncrossed(tables["book"], inst, book_line, path_of)

    # --- trades ---
    tables["trades"] = pa.table(
        {
            "ts_exch": t["ts"] * US,
            "ts_local": t["loc"] * US,
            "seq": t_arrival << SEQ_SHIFT,
            "trade_id": t["id"],
            "side": t["side"].astype(np.int8),
            "price": t["price"].astype(np.float64),
            "qty": t["qty"].astype(np.float64),
        },
        schema=TRADES,
    )
    report.rows["trades"] = tables["trades"].num_rows

    if not any(report.rows.values()):
        raise DataError("no market data for " + inst.symbol, str(paths[0]) if paths else None)
    return IngestBatch("tardis", inst, tables, report)


__all__ = ["parse_tardis", "BOOK_COLUMNS", "TRADE_COLUMNS"]
