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
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
from numba import njit

from grinder.data.ingest.book_check import CrossCheck
from grinder.data.ingest.numbers import check_prices_qtys, check_sorted, check_times, parse_decimals, why_not_decimal
from grinder.data.ingest.source import ByteProgress, FileLines, byte_progress, iter_blocks
from grinder.data.instruments import Instrument
from grinder.data.lake import IngestBatch, IngestReport, StreamedBatch
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


def _check_fields(raw: bytes, ncols: int, path: Path, first: int = 1) -> None:
    """Reject the first line whose number of comma-separated fields is wrong (Tardis never quotes);
    `raw`'s first line is the file's line `first`."""
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
        raise DataError(what, str(path), i + first)


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


def _read_rows(raw: bytes, names: list[str], path: Path, first: int) -> dict[str, np.ndarray | pa.ChunkedArray]:
    """Every column of a piece of the file without its header (its first line is the file's line
    `first`): numbers as numpy arrays, text as Arrow arrays, rows in file order.

    Every column is read as text and converted by the shared grammar (numbers.parse_decimals,
    _ints_ok): Arrow's own CSV number parsing would take exponents, '+', 'inf' and 'nan'.
    """
    types = {c: _TYPES[c] for c in names}
    keep = [c for c in names if c != "exchange"]
    try:
        table = pcsv.read_csv(
            io.BytesIO(raw),
            read_options=pcsv.ReadOptions(block_size=1 << 24, column_names=names),
            parse_options=pcsv.ParseOptions(ignore_empty_lines=False, newlines_in_values=False),
            convert_options=pcsv.ConvertOptions(
                column_types={c: pa.string() for c in names},
                include_columns=keep,
                null_values=[],
                strings_can_be_null=False,
            ),
        )
    except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
        _check_fields(raw, len(names), path, first)  # names the culprit line when it is a field count
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
        _check_fields(raw, len(names), path, first)  # an empty or short line reads as empty fields: name it so
        bad, c, v = worst
        if types[c] == pa.float64():
            raise DataError(f"column {c}: {why_not_decimal(v)}", str(path), bad + first)
        what = {pa.int64(): "an integer within 0 .. 2**63-1", pa.bool_(): "true or false"}[types[c]]
        raise DataError(f"column {c}: {v!r} is not {what}", str(path), bad + first)
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


# --- Streaming (decision 045) -------------------------------------------------------------------------

# Bytes of (uncompressed) CSV parsed at a time: a few hundred thousand rows, so the per-chunk costs
# (Arrow's reader, the numba calls) are amortised while memory stays a small multiple of it.
BLOCK_SIZE = 1 << 24
_BOOK_COLS = ("line", "ts", "loc", "snap", "side", "price", "qty", "file_start")
_TRADE_COLS = ("line", "ts", "loc", "side", "price", "qty", "id")


class _Ctx:
    """What a parse carries across files and chunks."""

    def __init__(
        self,
        paths: list[Path],
        inst: Instrument,
        report: IngestReport,
        block_size: int,
        reads: ByteProgress | None = None,
    ):
        self.paths, self.inst, self.report, self.block_size = paths, inst, report, block_size
        self.reads = reads  # bytes of the files read, for a progress callback
        self.path_of = FileLines(paths)
        self.symbol = inst.symbol.upper()  # Tardis writes symbols upper-case
        self.next_trade_id = 1
        self.skips: dict[str, tuple] = {}  # reason -> (file, category, line) of its first row: the report's order
        self.notes: list[tuple[int, str]] = []

    def skip(self, reason: str, n: int, key: tuple) -> None:
        if n:
            self.skips[reason] = min(self.skips.get(reason, key), key)
            self.report.skip(reason, n)


def _header(path: Path) -> tuple[str, list[str]]:
    first = next(iter_blocks(path, 1 << 16), b"")
    return _read_header(first, path)


def _file_rows(ctx: _Ctx, fi: int, kind: str, names: list[str]):
    """One file's rows of our symbol, a chunk at a time, checked as far as one chunk can be."""
    path = Path(ctx.paths[fi])
    line0 = 1  # lines of the file before the chunk (the header is line 1)
    file_first = True
    ids_numeric: bool | None = None  # decided by the file's first trade ids, as for the whole file
    for k, raw in enumerate(iter_blocks(path, ctx.block_size, ctx.reads.reader(fi) if ctx.reads else None)):
        if k == 0:
            raw = raw[raw.find(b"\n") + 1 :] if b"\n" in raw else b""
        if not raw:
            continue
        cols = _read_rows(raw, names, path, line0 + 1)
        nrows = len(cols["timestamp"])
        line = (fi << FileLines.SHIFT) + line0 + 1 + np.arange(nrows, dtype=np.int64)
        line0 += nrows
        sym = cols["symbol"]
        mine = pc.equal(sym, ctx.symbol).to_numpy(zero_copy_only=False)
        if not mine.all():
            others = pc.value_counts(pc.filter(sym, pa.array(~mine)))
            for item in others.to_pylist():
                at = int(line[np.flatnonzero(~mine)[pc.index(pc.filter(sym, pa.array(~mine)), item["values"]).as_py()]])
                ctx.skip(f"row for another symbol ({item['values']})", item["counts"], (fi, 0, at))
        idx = np.flatnonzero(mine)
        line = line[idx]
        ts, loc = cols["timestamp"][idx], cols["local_timestamp"][idx]
        _check_us(ts, line, ctx.path_of, "timestamp")
        _check_us(loc, line, ctx.path_of, "local_timestamp")
        side_text = pc.take(cols["side"], pa.array(idx))
        price, qty = cols["price"][idx], cols["amount"][idx]
        if kind == "book":
            side = _codes(side_text, {"bid": SIDE_BID, "ask": SIDE_ASK})
            bad = np.flatnonzero(side == 0)
            if bad.size:
                i = bad[0]
                raise DataError(
                    f"book side {side_text[int(i)].as_py()!r} is neither bid nor ask", *ctx.path_of(line[i])
                )
            first = np.zeros(idx.size, bool)
            if idx.size and file_first:
                first[0], file_first = True, False
            yield {
                "line": line,
                "ts": ts,
                "loc": loc,
                "snap": cols["is_snapshot"][idx].astype(bool),
                "side": side,
                "price": price,
                "qty": qty,
                "file_start": first,
            }
            continue
        side = _codes(side_text, {"buy": SIDE_BID, "sell": SIDE_ASK, "unknown": 2})
        bad = np.flatnonzero(side == 0)
        if bad.size:
            i = bad[0]
            raise DataError(
                f"trade side {side_text[int(i)].as_py()!r} is not buy, sell or unknown", *ctx.path_of(line[i])
            )
        known = side != 2
        if (~known).any():
            ctx.skip("trade with unknown aggressor side", int((~known).sum()), (fi, 1, 0))
        ids = pc.take(cols["id"], pa.array(idx[known]))
        ok = _ints_ok(ids)
        if ids_numeric is None and len(ids):
            ids_numeric = bool(ok.all())
            if not ids_numeric:
                ctx.notes.append((fi, f"{path}: trade ids are not numeric; trade_id is a running count"))
        if ids_numeric is False:
            trade_id = np.arange(ctx.next_trade_id, ctx.next_trade_id + len(ids), dtype=np.int64)
            ctx.next_trade_id += len(ids)
        else:
            if not ok.all():
                # A whole-file read would have numbered the file's trades instead: the stream cannot go back.
                i = int(np.flatnonzero(~ok)[0])
                raise DataError(
                    f"trade id {ids[i].as_py()!r} is not numeric but the file's earlier ids are",
                    *ctx.path_of(line[known][i]),
                )
            trade_id = pc.cast(ids, pa.int64()).to_numpy() if len(ids) else np.empty(0, np.int64)
        yield {
            "line": line[known],
            "ts": ts[known],
            "loc": loc[known],
            "side": side[known],
            "price": price[known],
            "qty": qty[known],
            "id": trade_id,
        }


def _kind_rows(ctx: _Ctx, files: list[tuple[int, list[str]]], kind: str):
    """Every file of one kind as one stream: validated chunks, local times checked across them."""
    last: tuple[int, int] | None = None  # (local µs, line) of the stream's last row
    for fi, names in files:
        for c in _file_rows(ctx, fi, kind, names):
            if not c["line"].size:
                continue
            what = "book level" if kind == "book" else "trade"
            check_prices_qtys(c["price"], c["qty"], c["line"], ctx.path_of, ctx.inst, what, kind == "book")
            loc, line = c["loc"], c["line"]
            if last is not None:
                loc, line = np.concatenate(([last[0]], loc)), np.concatenate(([last[1]], line))
            check_sorted(
                loc * US, line, ctx.path_of, "book local timestamps" if kind == "book" else "trade local timestamps"
            )
            last = (int(c["loc"][-1]), int(c["line"][-1]))
            yield c


def _take(c: dict, k: int) -> tuple[dict, dict]:
    return {n: v[:k] for n, v in c.items()}, {n: v[k:] for n, v in c.items()}


def _merged(book_it, trade_it):
    """Both kinds' chunks in arrival order: ("book" | "trades", rows, arrival ranks), each piece a prefix
    of the merged order (book first at equal local µs), so ranks equal `_arrival_ranks` on the whole."""
    b = t = None
    b_end = t_end = False
    done = 0
    while True:
        while not b_end and (b is None or not b["line"].size):
            b = next(book_it, None)
            b_end = b is None
        while not t_end and (t is None or not t["line"].size):
            t = next(trade_it, None)
            t_end = t is None
        nb = 0 if b is None else b["line"].size
        nt = 0 if t is None else t["line"].size
        if not nb and not nt:
            return
        if not nt:
            kb, kt = nb, 0
        elif not nb:
            kb, kt = 0, nt
        elif b["loc"][-1] <= t["loc"][-1]:
            kb, kt = nb, int(np.searchsorted(t["loc"], b["loc"][-1], side="left"))
        else:
            kb, kt = int(np.searchsorted(b["loc"], t["loc"][-1], side="right")), nt
        bp, tp = (None, b) if not kb else _take(b, kb)
        tq, tr = (None, t) if not kt else _take(t, kt)
        rb, rt = _arrival_ranks(bp["loc"] if bp else np.empty(0, np.int64), tq["loc"] if tq else np.empty(0, np.int64))
        if bp:
            yield "book", bp, rb + done
        if tq:
            yield "trades", tq, rt + done
        done += kb + kt
        b, t = tp, tr


class _Book:
    """Book rows with a reset before each snapshot and message-counter update ids, a chunk at a time."""

    def __init__(self) -> None:
        self.prev: tuple[int, int, bool] | None = None  # (ts, loc, snap) of the last row
        self.uid = 0

    def table(self, s: dict, arrival: np.ndarray) -> tuple[pa.Table, np.ndarray]:
        snap, fs, ts, loc = s["snap"], s["file_start"], s["ts"], s["loc"]
        n = snap.size
        prev_snap = np.concatenate(([self.prev is not None and self.prev[2]], snap[:-1]))
        start = snap & (~prev_snap | fs)  # first row of a new snapshot
        new_msg = np.ones(n, bool)
        if self.prev is not None:
            new_msg[0] = (ts[0] != self.prev[0]) | (loc[0] != self.prev[1]) | (snap[0] != self.prev[2])
        if n > 1:
            new_msg[1:] = (ts[1:] != ts[:-1]) | (loc[1:] != loc[:-1]) | (snap[1:] != snap[:-1])
        new_msg |= start | fs
        uid = self.uid + np.cumsum(new_msg)
        self.uid = int(uid[-1])
        self.prev = (int(ts[-1]), int(loc[-1]), bool(snap[-1]))
        r = np.flatnonzero(start)

        def place(rows: np.ndarray, resets, dtype) -> np.ndarray:
            # Snapshots are few: insert their reset rows by slicing, not by scattering every row.
            return np.insert(np.asarray(rows, dtype), r, resets)

        table = pa.table(
            {
                "ts_exch": place(ts * US, ts[r] * US, np.int64),
                "ts_local": place(loc * US, loc[r] * US, np.int64),
                "seq": place((arrival << SEQ_SHIFT) | 1, arrival[r] << SEQ_SHIFT, np.int64),
                "update_id": place(uid, uid[r], np.int64),
                "kind": place(np.where(snap, BOOK_SNAPSHOT, BOOK_DIFF), BOOK_RESET, np.int8),
                "side": place(s["side"], SIDE_BOTH, np.int8),
                "price": place(s["price"], 0.0, np.float64),
                "qty": place(s["qty"], 0.0, np.float64),
            },
            schema=BOOK,
        )
        return table, place(s["line"], s["line"][r], np.int64)


def _trade_table(t: dict, arrival: np.ndarray) -> pa.Table:
    return pa.table(
        {
            "ts_exch": t["ts"] * US,
            "ts_local": t["loc"] * US,
            "seq": arrival << SEQ_SHIFT,
            "trade_id": t["id"],
            "side": t["side"].astype(np.int8),
            "price": t["price"].astype(np.float64),
            "qty": t["qty"].astype(np.float64),
        },
        schema=TRADES,
    )


def tardis_pieces(
    paths: list[Path],
    inst: Instrument,
    report: IngestReport,
    block_size: int = BLOCK_SIZE,
    progress: Callable[[int, int], None] | None = None,
):
    """Parse Tardis CSV files (in the given order, later files continuing earlier ones) a chunk of
    `block_size` bytes at a time: yields ("book" | "trades", rows) in each table's final order and
    fills `report`. The rows, their order, the report and the errors are those of a whole-file read.

    `progress(done, total)`, when given, follows the bytes of the files read (`source.ByteProgress`)."""
    paths = [Path(p) for p in paths]
    ctx = _Ctx(paths, inst, report, block_size, byte_progress(paths, progress))
    files = {"book": [], "trades": []}
    for fi, path in enumerate(paths):
        kind, names = _header(path)
        files[kind].append((fi, names))
    rows = {"book": 0, "trades": 0}
    book, cross = _Book(), CrossCheck(inst, ctx.path_of)
    for kind, c, arrival in _merged(_kind_rows(ctx, files["book"], "book"), _kind_rows(ctx, files["trades"], "trades")):
        if kind == "book":
            table, line = book.table(c, arrival)
            cross.feed(*(table.column(n).to_numpy() for n in ("kind", "side", "price", "qty", "update_id")), line)
        else:
            table = _trade_table(c, arrival)
        rows[kind] += table.num_rows
        yield kind, table
    if ctx.reads is not None:
        ctx.reads.finish()
    cross.finish()
    report.skipped = dict(sorted(report.skipped.items(), key=lambda kv: ctx.skips[kv[0]]))
    report.notes += [n for _, n in sorted(ctx.notes, key=lambda x: x[0])]
    report.rows["book"], report.rows["trades"] = rows["book"], rows["trades"]
    if not any(report.rows.values()):
        raise DataError("no market data for " + inst.symbol, str(paths[0]) if paths else None)


def tardis_batch(
    paths: list[Path],
    inst: Instrument,
    block_size: int = BLOCK_SIZE,
    progress: Callable[[int, int], None] | None = None,
) -> StreamedBatch:
    """Tardis files as a batch that `Lake.write` streams into the lake (read `.tables` to parse it whole);
    `progress(done, total)` follows the bytes of the files read as it is parsed."""
    paths = [Path(p) for p in paths]
    return StreamedBatch(
        "tardis", inst, lambda report: tardis_pieces(paths, inst, report, block_size, progress), ["book", "trades"]
    )


def parse_tardis(paths: list[Path], inst: Instrument, block_size: int = BLOCK_SIZE) -> IngestBatch:
    """Parse Tardis CSV files (in the given order, later files continuing earlier ones) into lake tables."""
    b = tardis_batch(paths, inst, block_size)
    return IngestBatch("tardis", inst, b.tables, b.report)


__all__ = ["parse_tardis", "tardis_batch", "tardis_pieces", "BOOK_COLUMNS", "TRADE_COLUMNS", "BLOCK_SIZE"]
