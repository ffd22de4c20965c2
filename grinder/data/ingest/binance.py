"""Binance USDT-M raw websocket captures: gzip text, ``<local_ts> <raw json>`` per line.

Book sync follows Binance's rules for USDT-M futures: diffs that arrive before the REST
snapshot are buffered; after the snapshot, diffs with ``u < lastUpdateId`` are dropped (the
snapshot already holds them) and the first applied diff must bridge it
(``U <= lastUpdateId <= u``); afterwards each diff's ``pu`` must equal the previous ``u``.
A break is a sequence gap: it is reported with file and line, the book is reset, and diffs
are held back until the next snapshot resyncs it. Exchange times are Binance's transaction
times ``T`` (ms); local times are the recorder's (µs or ns, detected per file).
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import chain
from pathlib import Path

import numpy as np
import orjson
import pyarrow as pa

from grinder.data.ingest.binance_fast import _POW10, INT64_MAX, SLOW
from grinder.data.ingest.binance_fast import scan as bf_scan
from grinder.data.ingest.book_check import CrossCheck
from grinder.data.ingest.numbers import check_prices_qtys, check_sorted, check_times, parse_decimals, why_not_decimal
from grinder.data.ingest.source import ByteProgress, LineMap, byte_progress, iter_blocks
from grinder.data.instruments import Instrument
from grinder.data.lake import IngestBatch, IngestReport, StreamedBatch
from grinder.data.schema import BOOK_DIFF, BOOK_RESET, BOOK_SNAPSHOT, SIDE_ASK, SIDE_BID
from grinder.errors import DataError

MS = 1_000_000
SEQ_SHIFT = 16  # seq = global line << 16 | row within the line's message

_WAIT, _BRIDGE, _SYNCED = 0, 1, 2
_STREAM_EVENTS = ("depthUpdate", "bookTicker", "trade", "markPriceUpdate")
_NO_SYMBOL = np.frombuffer(b"\x00", np.uint8).copy()  # matches no line: everything goes the slow way


def _local_unit(ts: int, path: Path, line: int) -> int:
    """Nanoseconds per unit of the recorder's local timestamp, from its magnitude."""
    if 10**17 <= ts < 10**19:
        return 1
    if 10**14 <= ts < 10**16:
        return 1000
    raise DataError(f"local timestamp {ts} is neither microseconds nor nanoseconds since 1970", str(path), line)


class _Bad(Exception):
    """A message that breaks Binance's format; the scan adds the file and line."""


def _json_kind(v: object) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string", type(None): "null",
            list: "an array", dict: "an object"}.get(type(v), type(v).__name__)  # fmt: skip


def _int(d: dict, k: str) -> int:
    """Field `k`: a JSON integer within int64 (Binance sends ids and ms times as integers)."""
    v = d[k]
    if type(v) is not int:
        raise _Bad(f"field {k!r} is {_json_kind(v)} ({v!r}), not an integer")
    if not 0 <= v <= INT64_MAX:
        raise _Bad(f"field {k!r} = {v} is outside 0 .. 2**63-1")
    return v


def _typed(d: dict, k: str, typ: type):
    v = d[k]
    if type(v) is not typ:
        raise _Bad(f"field {k!r} is {_json_kind(v)} ({v!r}), not {_json_kind(typ())}")
    return v


def _levels(d: dict, k: str) -> list:
    """Field `k`: an array of [price, quantity] pairs (their strings are checked in bulk later)."""
    v = _typed(d, k, list)
    for lv in v:
        if type(lv) is not list or len(lv) != 2:
            raise _Bad(f"field {k!r} holds {lv!r}, not a [price, quantity] pair")
    return v


class _Slow:
    """Lines the compiled scanner left alone, parsed with orjson into Python lists.

    Times are kept in Binance's ms until they are checked against the sane range.
    """

    def __init__(self) -> None:
        # Depth messages and snapshots; levels flattened as price,qty,price,qty...
        self.m_line: list[int] = []
        self.m_local: list[int] = []
        self.m_ts: list[int] = []
        self.m_kind: list[int] = []
        self.m_first: list[int] = []
        self.m_last: list[int] = []
        self.m_prev: list[int] = []
        self.m_nbid: list[int] = []
        self.m_nask: list[int] = []
        self.levels: list[str] = []
        self.t_line: list[int] = []
        self.t_local: list[int] = []
        self.t_ts: list[int] = []
        self.t_id: list[int] = []
        self.t_sell: list[bool] = []
        self.t_num: list[str] = []
        self.q_line: list[int] = []
        self.q_local: list[int] = []
        self.q_ts: list[int] = []
        self.q_id: list[int] = []
        self.q_num: list[str] = []
        self.f_line: list[int] = []
        self.f_local: list[int] = []
        self.f_ts: list[int] = []
        self.f_next: list[int] = []
        self.f_num: list[str] = []
        self.f_rate: list[str] = []
        # Depth diffs of other symbols, by symbol: tells whose book an unlabelled snapshot is.
        self.other_depth: dict[str, int] = {}

    def parse(self, line: bytes, g: int, local: int, sym: str, report: IngestReport) -> None:
        """Parse one line (global index g, local time in ns) into the lists."""
        msg = orjson.loads(line[line.find(b" ") + 1 :])
        if type(msg) is not dict:
            raise _Bad(f"message is {_json_kind(msg)}, not an object")
        wrapped = "stream" in msg
        data = _typed(msg, "data", dict) if wrapped else msg
        ev = data.get("e") if wrapped else ("snapshot" if "lastUpdateId" in msg else None)
        if ev is not None and type(ev) is not str:
            raise _Bad(f"field 'e' is {_json_kind(ev)} ({ev!r}), not a string")
        if ev in _STREAM_EVENTS:
            s, stream = _typed(data, "s", str), _typed(msg, "stream", str)
            if stream.partition("@")[0].upper() != s:
                raise _Bad(f"stream {stream!r} carries a message for symbol {s!r}")
            if s != sym:
                if ev == "depthUpdate":
                    self.other_depth[s] = self.other_depth.get(s, 0) + 1
                report.skip(f"message for another symbol ({s})", _rows_in(data))
                return
        if ev == "depthUpdate" or ev == "snapshot":
            snap = ev == "snapshot"
            b, a = (_levels(msg, "bids"), _levels(msg, "asks")) if snap else (_levels(data, "b"), _levels(data, "a"))
            self.m_ts.append(_int(data, "T"))
            self.m_first.append(_int(msg, "lastUpdateId") if snap else _int(data, "U"))
            self.m_last.append(_int(msg, "lastUpdateId") if snap else _int(data, "u"))
            self.m_prev.append(_int(msg, "lastUpdateId") if snap else _int(data, "pu"))
            self.m_line.append(g)
            self.m_local.append(local)
            self.m_kind.append(BOOK_SNAPSHOT if snap else BOOK_DIFF)
            self.m_nbid.append(len(b))
            self.m_nask.append(len(a))
            self.levels.extend(chain.from_iterable(b))
            self.levels.extend(chain.from_iterable(a))
        elif ev == "bookTicker":
            num = (data["b"], data["B"], data["a"], data["A"])
            self.q_ts.append(_int(data, "T"))
            self.q_id.append(_int(data, "u"))
            self.q_line.append(g)
            self.q_local.append(local)
            self.q_num += num
        elif ev == "trade":
            x = _typed(data, "X", str) if "X" in data else "MARKET"
            if x != "MARKET":
                report.skip(f"trade of type {x} (not a market trade)")
                return
            num = (data["p"], data["q"])
            self.t_ts.append(_int(data, "T"))
            self.t_id.append(_int(data, "t"))
            self.t_sell.append(_typed(data, "m", bool))  # buyer is maker: the aggressor sold
            self.t_line.append(g)
            self.t_local.append(local)
            self.t_num += num
        elif ev == "markPriceUpdate":
            num, rate = (data["p"], data["i"]), data["r"]
            self.f_ts.append(_int(data, "E"))
            self.f_next.append(_int(data, "T"))
            self.f_line.append(g)
            self.f_local.append(local)
            self.f_num += num
            self.f_rate.append(rate)
        elif "code" in msg and "msg" in msg:
            report.skip("venue error message")
        else:
            report.skip(f"unhandled message ({msg.get('stream', 'no stream')})")


def _rows_in(data: dict) -> int:
    """Rows a skipped message would have produced (levels for depth, one otherwise)."""
    if data.get("e") == "depthUpdate":
        return sum(len(v) for v in (data.get("b"), data.get("a")) if isinstance(v, list))
    return 1


def _decimals(strings: list, width: int, line: list[int], path_of, what: str, negative_ok: bool = False) -> np.ndarray:
    v, bad = parse_decimals(strings, negative_ok)
    if bad >= 0:
        raise DataError(f"{what}: {why_not_decimal(strings[bad], negative_ok)}", *path_of(line[bad // width]))
    return v.reshape(-1, width) if width > 1 else v


def _concat_by_line(fast_parts: list[dict], slow_cols: dict) -> dict[str, np.ndarray]:
    """Join the compiled scanner's columns (one dict per file) with the slow path's, in line order."""
    cols = {
        k: np.concatenate([p[k] for p in fast_parts] + [np.asarray(v, dtype=fast_parts[0][k].dtype)])
        for k, v in slow_cols.items()
    }
    order = np.argsort(cols["line"], kind="stable")
    return {k: v[order] for k, v in cols.items()}


class _Scan:
    """Every kind's columns as numpy arrays, in file order, with global line indices."""

    depth: dict[str, np.ndarray]
    levels: np.ndarray  # (n, 2) price, qty
    trades: dict[str, np.ndarray]
    bbo: dict[str, np.ndarray]
    funding: dict[str, np.ndarray]
    other_depth: dict[str, int]  # depth diffs of other symbols, by symbol


def _scan(
    paths: list[Path],
    symbol: str,
    report: IngestReport,
    compiled: bool,
    block_size: int,
    lines_map: LineMap,
    reads: ByteProgress | None = None,
):
    """Every kind's columns, a chunk of about `block_size` bytes at a time (as `_Scan`s with global
    line indices, in file order); `lines_map` learns each file's first line."""
    sym = symbol.upper()
    sym_lit = np.frombuffer(sym.encode(), np.uint8).copy()
    sym_lower = np.frombuffer(sym.lower().encode(), np.uint8).copy()
    other_depth: dict[str, int] = {}
    g0 = 0
    for fi, path in enumerate(paths):
        path = Path(path)
        lines_map.add(path, g0)
        unit = None
        off = 0  # lines of the file before the chunk
        for raw in iter_blocks(path, block_size, reads.reader(fi) if reads else None):
            slow = _Slow()
            slow.other_depth = other_depth
            buf = np.frombuffer(raw, np.uint8)
            # Without the compiled scanner every line takes the orjson path (tests compare the two).
            kind, local, dep, lev, bi, bf, ti, tf, mi, mf = bf_scan(
                buf, sym_lit if compiled else _NO_SYMBOL, sym_lower if compiled else _NO_SYMBOL, _POW10
            )
            nlines = len(kind)
            first_chunk = off == 0
            ends = np.flatnonzero(buf == 10)
            starts = np.concatenate(([0], ends + 1))[:nlines]
            for i in np.flatnonzero(kind == SLOW).tolist() + ([0] if first_chunk and kind[0] != SLOW else []):
                line = raw[starts[i] : ends[i] if i < len(ends) else len(raw)]
                sp = line.find(b" ")
                # ASCII digits only (bytes.isdigit), as the compiled scanner reads them; int() would
                # also take '+', '_' and surrounding blanks.
                if sp <= 0 or not line[:sp].isdigit():
                    raise DataError("expected '<local timestamp> <json>'", str(path), off + i + 1)
                ts = int(line[:sp])
                if ts > INT64_MAX:
                    raise DataError(f"local timestamp {ts} is beyond int64", str(path), off + i + 1)
                local[i] = ts
                if i == 0 and first_chunk:
                    unit = _local_unit(ts, path, 1)
                    if kind[0] != SLOW:
                        continue
                if unit is None:
                    s0 = raw[: raw.find(b" ")]
                    unit = _local_unit(int(s0) if s0.isdigit() else -1, path, 1)
                try:
                    slow.parse(line, g0 + off + i, ts * unit, sym, report)
                except orjson.JSONDecodeError as e:
                    raise DataError(f"malformed JSON: {e}", str(path), off + i + 1) from None
                except _Bad as e:
                    raise DataError(str(e), str(path), off + i + 1) from None
                except KeyError as e:
                    raise DataError(f"message lacks field {e.args[0]!r}", str(path), off + i + 1) from None
                except (TypeError, ValueError, AttributeError) as e:
                    raise DataError(f"message mistypes a field ({e})", str(path), off + i + 1) from None
            if unit is None:
                unit = _local_unit(int(local[0]), path, 1)
            # In the recorder's unit, before scaling: a wild value cannot overflow on its way to ns.
            check_times(local, g0 + off + np.arange(nlines), lines_map, "local timestamp", unit)
            loc = local * unit
            yield _assemble([(g0 + off, loc, dep, lev, bi, bf, ti, tf, mi, mf)], slow, lines_map)
            off += nlines
        if off == 0:
            raise DataError("empty file", str(path))
        g0 += off


def _assemble(fast: list[tuple], slow: _Slow, lines_map: LineMap) -> _Scan:
    """One chunk's columns: the compiled scanner's and the slow path's, joined in line order."""
    out = _Scan()
    out.other_depth = slow.other_depth
    # depth messages (fast) + depth messages and snapshots (slow)
    fast_levels = [f[3] for f in fast]
    n_fast_lev = sum(len(x) for x in fast_levels)
    slow_lev = (
        _decimals(
            slow.levels,
            2,
            np.repeat(slow.m_line, np.add(slow.m_nbid, slow.m_nask)),
            path_of=lines_map,
            what="depth level",
        )
        if slow.levels
        else np.empty((0, 2))
    )
    out.levels = np.concatenate(fast_levels + [slow_lev]) if fast_levels else slow_lev
    parts, off = [], 0
    for g, loc, dep, lev, *_ in fast:
        ln = dep[:, 0]
        parts.append(
            {
                "line": ln + g,
                "local": loc[ln],
                "ts": dep[:, 1],
                "kind": np.zeros(len(dep), np.int64),
                "first": dep[:, 2],
                "last": dep[:, 3],
                "prev": dep[:, 4],
                "nbid": dep[:, 5],
                "nask": dep[:, 6],
                "off": dep[:, 7] + off,
            }
        )
        off += len(lev)
    nlev_slow = np.add(slow.m_nbid, slow.m_nask).astype(np.int64)
    slow_off = n_fast_lev + np.cumsum(nlev_slow) - nlev_slow
    out.depth = _concat_by_line(
        parts,
        {
            "line": slow.m_line,
            "local": slow.m_local,
            "ts": slow.m_ts,
            "kind": slow.m_kind,
            "first": slow.m_first,
            "last": slow.m_last,
            "prev": slow.m_prev,
            "nbid": slow.m_nbid,
            "nask": slow.m_nask,
            "off": slow_off,
        },
    )
    # trades
    tnum = _decimals(slow.t_num, 2, slow.t_line, lines_map, "trade") if slow.t_num else np.empty((0, 2))
    parts = [
        {
            "line": ti[:, 0] + g,
            "local": loc[ti[:, 0]],
            "ts": ti[:, 1],
            "id": ti[:, 2],
            "sell": ti[:, 3],
            "fp": tf[:, 0],
            "fq": tf[:, 1],
        }
        for g, loc, _, _, _, _, ti, tf, _, _ in fast
    ]
    out.trades = _concat_by_line(
        parts,
        {
            "line": slow.t_line,
            "local": slow.t_local,
            "ts": slow.t_ts,
            "id": slow.t_id,
            "sell": np.array(slow.t_sell, np.int64),
            "fp": tnum[:, 0],
            "fq": tnum[:, 1],
        },
    )
    # best bid/ask
    qnum = _decimals(slow.q_num, 4, slow.q_line, lines_map, "bookTicker") if slow.q_num else np.empty((0, 4))
    parts = [
        {
            "line": bi[:, 0] + g,
            "local": loc[bi[:, 0]],
            "ts": bi[:, 1],
            "id": bi[:, 2],
            "fb": bf[:, 0],
            "fbq": bf[:, 1],
            "fa": bf[:, 2],
            "faq": bf[:, 3],
        }
        for g, loc, _, _, bi, bf, _, _, _, _ in fast
    ]
    out.bbo = _concat_by_line(
        parts,
        {
            "line": slow.q_line,
            "local": slow.q_local,
            "ts": slow.q_ts,
            "id": slow.q_id,
            "fb": qnum[:, 0],
            "fbq": qnum[:, 1],
            "fa": qnum[:, 2],
            "faq": qnum[:, 3],
        },
    )
    # mark price / funding
    fnum = _decimals(slow.f_num, 2, slow.f_line, lines_map, "markPrice") if slow.f_num else np.empty((0, 2))
    frate = (
        _decimals(slow.f_rate, 1, slow.f_line, lines_map, "markPrice funding rate", negative_ok=True)
        if slow.f_rate
        else np.empty(0)
    )
    parts = [
        {
            "line": mi[:, 0] + g,
            "local": loc[mi[:, 0]],
            "ts": mi[:, 1],
            "next": mi[:, 2],
            "fmark": mf[:, 0],
            "findex": mf[:, 1],
            "frate": mf[:, 2],
        }
        for g, loc, *_, mi, mf in fast
    ]
    out.funding = _concat_by_line(
        parts,
        {
            "line": slow.f_line,
            "local": slow.f_local,
            "ts": slow.f_ts,
            "next": slow.f_next,
            "fmark": fnum[:, 0],
            "findex": fnum[:, 1],
            "frate": frate,
        },
    )
    # Binance's times are ms: checked in ms, so a wild value cannot overflow on its way to ns.
    for cols, col, what in (
        (out.depth, "ts", "depth exchange time T (ms)"),
        (out.trades, "ts", "trade exchange time T (ms)"),
        (out.bbo, "ts", "bookTicker exchange time T (ms)"),
        (out.funding, "ts", "markPrice event time E (ms)"),
        (out.funding, "next", "markPrice next funding time T (ms)"),
    ):
        check_times(cols[col], cols["line"], lines_map, what, MS)
        cols[col] = cols[col] * MS
    return out


class _Sync:
    """Apply order of depth messages/snapshots, fed a chunk at a time; an entry -(m + 1) is a book
    reset at message m's time. Diffs held back for a snapshot stay with it until one comes.

    Skipped messages are counted in price-level rows (`nlev` per message).
    """

    def __init__(self) -> None:
        self.state, self.snap_id, self.last_u = _WAIT, 0, 0

    def run(self, kind, first, last, prev, nlev, line, path_of, report: IngestReport, nheld: int):
        """(order, still buffered) over messages whose first `nheld` are the ones buffered before."""
        order: list[int] = []
        buffered: list[int] = list(range(nheld))

        def process(m: int) -> None:
            if self.state == _BRIDGE:
                if last[m] < self.snap_id:
                    report.skip("depth level in a diff older than the snapshot", int(nlev[m]))
                    return
                # The first diff must cover the snapshot's id, or start right after it (pu is the
                # snapshot's id: nothing lies between them).
                if first[m] > self.snap_id and prev[m] != self.snap_id:
                    p, ln = path_of(line[m])
                    report.gaps.append(
                        f"{p}:{ln}: first diff after snapshot {self.snap_id} starts at U={first[m]}: "
                        "book resyncs from the next snapshot"
                    )
                    self.state = _WAIT
                    order.append(-m - 1)
                    buffered.append(m)
                    return
                self.state, self.last_u = _SYNCED, last[m]
                order.append(m)
            elif self.state == _SYNCED:
                if prev[m] != self.last_u:
                    p, ln = path_of(line[m])
                    report.gaps.append(
                        f"{p}:{ln}: sequence gap: pu={prev[m]} but previous u={self.last_u}; "
                        "book resyncs from the next snapshot"
                    )
                    self.state = _WAIT
                    order.append(-m - 1)
                    buffered.append(m)
                    return
                self.last_u = last[m]
                order.append(m)
            else:
                buffered.append(m)

        for m in range(nheld, len(kind)):
            if kind[m] == BOOK_SNAPSHOT:
                order.append(-m - 1)
                order.append(m)
                self.state, self.snap_id = _BRIDGE, last[m]
                held, buffered[:] = list(buffered), []
                for b in held:
                    process(b)
            else:
                process(m)
        return order, buffered


# Bytes of (uncompressed) capture scanned at a time (decision 045).
BLOCK_SIZE = 1 << 24
_MSG = ("line", "local", "ts", "kind", "first", "last", "prev", "nbid", "nask")


def binance_pieces(
    paths: list[Path],
    inst: Instrument,
    report: IngestReport,
    compiled: bool = True,
    block_size: int = BLOCK_SIZE,
    progress: Callable[[int, int], None] | None = None,
):
    """Parse raw captures (in the given order, later files continuing earlier ones) a chunk of about
    `block_size` bytes at a time: yields (table, rows) in each table's final order and fills `report`.
    The rows, their order, the report and the errors are those of a whole-file read.

    `progress(done, total)`, when given, follows the bytes of the files read (`source.ByteProgress`)."""
    paths = [Path(p) for p in paths]
    reads = byte_progress(paths, progress)
    scan_report, sync_report = IngestReport(), IngestReport()  # the whole-file read's order: scan, then sync
    path_of = LineMap()
    sync, cross = _Sync(), CrossCheck(inst, path_of)
    held = {k: np.empty(0, np.int64) for k in _MSG}
    held_lev = np.empty((0, 2))
    rows = dict.fromkeys(("book", "trades", "bbo", "funding"), 0)
    first_snap_line, any_diff, other_depth = None, False, {}
    last_local: tuple[int, int] | None = None  # (local ns, line) of the last line read
    for sc in _scan(paths, inst.symbol, scan_report, compiled, block_size, path_of, reads):
        other_depth = sc.other_depth
        d = sc.depth
        kind = d["kind"]
        snaps = np.flatnonzero(kind == BOOK_SNAPSHOT)
        if first_snap_line is None and snaps.size:
            first_snap_line = int(d["line"][snaps[0]])
        any_diff = any_diff or bool((kind == BOOK_DIFF).any())
        # Local receive times are the recorder's append order: they must not go backwards in a file.
        all_line = np.concatenate([d["line"], sc.trades["line"], sc.bbo["line"], sc.funding["line"]])
        all_local = np.concatenate([d["local"], sc.trades["local"], sc.bbo["local"], sc.funding["local"]])
        o = np.argsort(all_line, kind="stable")
        all_line, all_local = all_line[o], all_local[o]
        if last_local is not None:
            all_local = np.concatenate(([last_local[0]], all_local))
            all_line = np.concatenate(([last_local[1]], all_line))
        check_sorted(all_local, all_line, path_of, "local timestamps")
        if all_line.size:
            last_local = (int(all_local[-1]), int(all_line[-1]))

        # --- book ---
        nlev = d["nbid"] + d["nask"]
        lev_line = np.repeat(d["line"], nlev)
        # Levels of each message, in message (file) order, for validation.
        in_order = np.repeat(d["off"], nlev) + (np.arange(lev_line.size) - np.repeat(np.cumsum(nlev) - nlev, nlev))
        lev = sc.levels[in_order] if in_order.size else np.empty((0, 2))
        price, qty = lev[:, 0], lev[:, 1]
        check_prices_qtys(price, qty, lev_line, path_of, inst, "depth level", qty_may_be_zero=True)
        zero_snap = np.flatnonzero(np.repeat(kind == BOOK_SNAPSHOT, nlev) & (qty == 0))
        if zero_snap.size:
            raise DataError("snapshot level with zero quantity", *path_of(lev_line[zero_snap[0]]))
        # The diffs still waiting for a snapshot go first: the sync sees them as buffered.
        nheld = held["line"].size
        msg = {k: np.concatenate([held[k], np.asarray(d[k], np.int64)]) for k in _MSG}
        levels = np.concatenate([held_lev, lev])
        kind, first, last, prev, mline = msg["kind"], msg["first"], msg["last"], msg["prev"], msg["line"]
        nb, nlev = msg["nbid"], msg["nbid"] + msg["nask"]
        lev_off = np.cumsum(nlev) - nlev
        order, buffered = sync.run(kind, first, last, prev, nlev, mline, path_of, sync_report, nheld)
        keep = np.array(buffered, np.int64)
        held = {k: v[keep] for k, v in msg.items()}
        held_lev = levels[np.repeat(lev_off[keep], nlev[keep]) + _within(nlev[keep])] if keep.size else levels[:0]
        order = np.array(order, dtype=np.int64)
        is_reset = order < 0
        m = np.where(is_reset, -order - 1, order)
        counts = np.where(is_reset, 1, nlev[m] if len(nlev) else 0)
        entry = np.repeat(np.arange(len(order)), counts)
        within = _within(counts)
        em = m[entry]
        ereset = is_reset[entry]
        src = np.where(ereset, 0, lev_off[em] + within) if entry.size else entry
        side = np.where(within < nb[em], SIDE_BID, SIDE_ASK).astype(np.int8)
        lp, lq = levels[:, 0], levels[:, 1]
        book = pa.table(
            {
                "ts_exch": msg["ts"][em],
                "ts_local": msg["local"][em],
                "seq": (mline[em] << SEQ_SHIFT) + np.where(ereset, 0, within + 1),
                "update_id": last[em],
                "kind": np.where(ereset, BOOK_RESET, kind[em]).astype(np.int8),
                "side": np.where(ereset, 0, side).astype(np.int8),
                "price": np.where(ereset, 0.0, lp[src] if lp.size else 0.0),
                "qty": np.where(ereset, 0.0, lq[src] if lq.size else 0.0),
            }
        )
        cross.feed(*(book.column(n).to_numpy() for n in ("kind", "side", "price", "qty", "update_id")), mline[em])
        rows["book"] += book.num_rows
        yield "book", book

        # --- trades ---
        t = sc.trades
        check_prices_qtys(t["fp"], t["fq"], t["line"], path_of, inst, "trade", qty_may_be_zero=False)
        yield (
            "trades",
            pa.table(
                {
                    "ts_exch": t["ts"],
                    "ts_local": t["local"],
                    "seq": t["line"] << SEQ_SHIFT,
                    "trade_id": t["id"],
                    "side": np.where(t["sell"] != 0, SIDE_ASK, SIDE_BID).astype(np.int8),
                    "price": t["fp"],
                    "qty": t["fq"],
                }
            ),
        )
        rows["trades"] += len(t["line"])

        # --- best bid/ask ---
        q = sc.bbo
        check_prices_qtys(q["fb"], q["fbq"], q["line"], path_of, inst, "bookTicker bid", qty_may_be_zero=True)
        check_prices_qtys(q["fa"], q["faq"], q["line"], path_of, inst, "bookTicker ask", qty_may_be_zero=True)
        yield (
            "bbo",
            pa.table(
                {
                    "ts_exch": q["ts"],
                    "ts_local": q["local"],
                    "seq": q["line"] << SEQ_SHIFT,
                    "update_id": q["id"],
                    "bid_price": q["fb"],
                    "bid_qty": q["fbq"],
                    "ask_price": q["fa"],
                    "ask_qty": q["faq"],
                }
            ),
        )
        rows["bbo"] += len(q["line"])

        # --- mark price / funding ---
        f = sc.funding
        badf = np.flatnonzero(
            ~(np.isfinite(f["fmark"]) & np.isfinite(f["findex"]) & np.isfinite(f["frate"]))
            | (f["fmark"] <= 0)
            | (f["findex"] <= 0)
        )
        if badf.size:
            raise DataError("markPrice: invalid mark or index price", *path_of(f["line"][badf[0]]))
        yield (
            "funding",
            pa.table(
                {
                    "ts_exch": f["ts"],
                    "ts_local": f["local"],
                    "seq": f["line"] << SEQ_SHIFT,
                    "mark_price": f["fmark"],
                    "index_price": f["findex"],
                    "funding_rate": f["frate"],
                    "next_funding_ts": f["next"],
                }
            ),
        )
        rows["funding"] += len(f["line"])
    if reads is not None:
        reads.finish()

    if first_snap_line is not None and other_depth and not any_diff:
        # A REST snapshot names no symbol: it is the book of the symbol whose diffs the capture holds.
        others = sorted(other_depth, key=lambda k: -other_depth[k])
        raise DataError(
            f"depth snapshot (which names no symbol) in a capture whose depth diffs are for {', '.join(others)}, "
            f"none for {inst.symbol}: is --symbol {others[0]} meant?",
            *path_of(first_snap_line),
        )
    if held["line"].size:
        sync_report.skip("depth level in a diff with no snapshot to sync from", int(held_lev.shape[0]))
    cross.finish()
    for r in (scan_report, sync_report):
        for reason, n in r.skipped.items():
            report.skip(reason, n)
    report.gaps += sync_report.gaps
    report.rows.update(rows)
    if not any(report.rows.values()):
        raise DataError("no market data for " + inst.symbol, str(paths[0]))


def _within(counts: np.ndarray) -> np.ndarray:
    """0, 1, .. counts[k] - 1 for each k, concatenated."""
    return np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts)


def binance_batch(
    paths: list[Path],
    inst: Instrument,
    compiled: bool = True,
    block_size: int = BLOCK_SIZE,
    progress: Callable[[int, int], None] | None = None,
) -> StreamedBatch:
    """Captures as a batch that `Lake.write` streams into the lake (read `.tables` to parse it whole);
    `progress(done, total)` follows the bytes of the files read as it is parsed."""
    paths = [Path(p) for p in paths]
    return StreamedBatch(
        "binance",
        inst,
        lambda report: binance_pieces(paths, inst, report, compiled, block_size, progress),
        ["book", "trades", "bbo", "funding"],
    )


def parse_binance(
    paths: list[Path], inst: Instrument, compiled: bool = True, block_size: int = BLOCK_SIZE
) -> IngestBatch:
    """Parse raw captures (in the given order, later files continuing earlier ones) into lake tables."""
    b = binance_batch(paths, inst, compiled, block_size)
    return IngestBatch("binance", inst, b.tables, b.report)
