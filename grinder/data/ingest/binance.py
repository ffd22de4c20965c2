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

from itertools import chain
from pathlib import Path

import numpy as np
import orjson
import pyarrow as pa

from grinder.data.errors import DataError
from grinder.data.ingest.binance_fast import _POW10, SLOW
from grinder.data.ingest.binance_fast import scan as bf_scan
from grinder.data.ingest.numbers import check_prices_qtys, check_sorted, parse_decimals
from grinder.data.ingest.source import LineMap, read_bytes
from grinder.data.instruments import Instrument
from grinder.data.lake import IngestBatch, IngestReport
from grinder.data.schema import BOOK_DIFF, BOOK_RESET, BOOK_SNAPSHOT, SIDE_ASK, SIDE_BID

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


class _Slow:
    """Lines the compiled scanner left alone, parsed with orjson into Python lists."""

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

    def parse(self, line: bytes, g: int, local: int, sym: str, report: IngestReport) -> None:
        """Parse one line (global index g, local time in ns) into the lists."""
        msg = orjson.loads(line[line.find(b" ") + 1 :])
        data = msg.get("data") if "stream" in msg else msg
        ev = data.get("e") if "stream" in msg else ("snapshot" if "lastUpdateId" in msg else None)
        if ev in _STREAM_EVENTS and data.get("s") != sym:
            report.skip(f"message for another symbol ({data.get('s')})", _rows_in(data))
            return
        if ev == "depthUpdate" or ev == "snapshot":
            snap = ev == "snapshot"
            b, a = (msg["bids"], msg["asks"]) if snap else (data["b"], data["a"])
            self.m_line.append(g)
            self.m_local.append(local)
            self.m_ts.append(data["T"] * MS)
            self.m_kind.append(BOOK_SNAPSHOT if snap else BOOK_DIFF)
            self.m_first.append(msg["lastUpdateId"] if snap else data["U"])
            self.m_last.append(msg["lastUpdateId"] if snap else data["u"])
            self.m_prev.append(msg["lastUpdateId"] if snap else data["pu"])
            self.m_nbid.append(len(b))
            self.m_nask.append(len(a))
            self.levels.extend(chain.from_iterable(b))
            self.levels.extend(chain.from_iterable(a))
        elif ev == "bookTicker":
            self.q_line.append(g)
            self.q_local.append(local)
            self.q_ts.append(data["T"] * MS)
            self.q_id.append(data["u"])
            self.q_num += (data["b"], data["B"], data["a"], data["A"])
        elif ev == "trade":
            if data.get("X", "MARKET") != "MARKET":
                report.skip(f"trade of type {data['X']} (not a market trade)")
                return
            self.t_line.append(g)
            self.t_local.append(local)
            self.t_ts.append(data["T"] * MS)
            self.t_id.append(data["t"])
            self.t_sell.append(bool(data["m"]))  # buyer is maker: the aggressor sold
            self.t_num += (data["p"], data["q"])
        elif ev == "markPriceUpdate":
            self.f_line.append(g)
            self.f_local.append(local)
            self.f_ts.append(data["E"] * MS)
            self.f_next.append(data["T"] * MS)
            self.f_num += (data["p"], data["i"], data["r"])
        elif "code" in msg and "msg" in msg:
            report.skip("venue error message")
        else:
            report.skip(f"unhandled message ({msg.get('stream', 'no stream')})")


def _rows_in(data: dict) -> int:
    """Rows a skipped message would have produced (levels for depth, one otherwise)."""
    if data.get("e") == "depthUpdate":
        return len(data.get("b", ())) + len(data.get("a", ()))
    return 1


def _decimals(strings: list[str], width: int, line: list[int], path_of, what: str) -> np.ndarray:
    v, bad = parse_decimals(strings)
    if bad >= 0:
        raise DataError(f"{what}: not a number: {strings[bad]!r}", *path_of(line[bad // width]))
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


def _scan(paths: list[Path], symbol: str, report: IngestReport, compiled: bool) -> tuple[_Scan, LineMap]:
    lines_map = LineMap()
    sym = symbol.upper()
    sym_lit = np.frombuffer(sym.encode(), np.uint8).copy()
    slow = _Slow()
    fast: list[tuple] = []
    g0 = 0
    for path in paths:
        raw = read_bytes(path)
        lines_map.add(path, g0)
        buf = np.frombuffer(raw, np.uint8)
        # Without the compiled scanner every line takes the orjson path (tests compare the two).
        kind, local, dep, lev, bi, bf, ti, tf, mi, mf = bf_scan(buf, sym_lit if compiled else _NO_SYMBOL, _POW10)
        nlines = len(kind)
        if nlines == 0:
            raise DataError("empty file", str(path))
        ends = np.flatnonzero(buf == 10)
        starts = np.concatenate(([0], ends + 1))[:nlines]
        unit = None
        for i in np.flatnonzero(kind == SLOW).tolist() + ([0] if kind[0] != SLOW else []):
            line = raw[starts[i] : ends[i] if i < len(ends) else len(raw)]
            sp = line.find(b" ")
            try:
                ts = int(line[:sp]) if sp > 0 else None
            except ValueError:
                ts = None
            if ts is None:
                raise DataError("expected '<local timestamp> <json>'", str(path), i + 1)
            if i == 0:
                unit = _local_unit(ts, path, 1)
                if kind[0] != SLOW:
                    continue
            if unit is None:
                s0 = raw[: raw.find(b" ")]
                unit = _local_unit(int(s0) if s0.isdigit() else -1, path, 1)
            try:
                slow.parse(line, g0 + i, ts * unit, sym, report)
            except orjson.JSONDecodeError as e:
                raise DataError(f"malformed JSON: {e}", str(path), i + 1) from None
            except (KeyError, TypeError, ValueError, AttributeError) as e:
                raise DataError(f"message lacks or mistypes a field ({e!r})", str(path), i + 1) from None
        if unit is None:
            unit = _local_unit(int(local[0]), path, 1)
        loc = local * unit
        fast.append((g0, loc, dep, lev, bi, bf, ti, tf, mi, mf))
        g0 += nlines

    out = _Scan()
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
                "ts": dep[:, 1] * MS,
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
            "ts": ti[:, 1] * MS,
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
            "ts": bi[:, 1] * MS,
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
    fnum = _decimals(slow.f_num, 3, slow.f_line, lines_map, "markPrice") if slow.f_num else np.empty((0, 3))
    parts = [
        {
            "line": mi[:, 0] + g,
            "local": loc[mi[:, 0]],
            "ts": mi[:, 1] * MS,
            "next": mi[:, 2] * MS,
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
            "frate": fnum[:, 2],
        },
    )
    return out, lines_map


def _sync(kind, first, last, prev, nlev, line, path_of, report: IngestReport) -> list[int]:
    """Apply order of depth messages/snapshots; an entry -(m + 1) is a book reset at message m's time.

    Skipped messages are counted in price-level rows (`nlev` per message).
    """
    order: list[int] = []
    buffered: list[int] = []
    state, snap_id, last_u = _WAIT, 0, 0

    def process(m: int) -> None:
        nonlocal state, last_u
        if state == _BRIDGE:
            if last[m] < snap_id:
                report.skip("depth level in a diff older than the snapshot", int(nlev[m]))
                return
            # The first diff must cover the snapshot's id, or start right after it (pu is the
            # snapshot's id: nothing lies between them).
            if first[m] > snap_id and prev[m] != snap_id:
                p, ln = path_of(line[m])
                report.gaps.append(
                    f"{p}:{ln}: first diff after snapshot {snap_id} starts at U={first[m]}: "
                    "book resyncs from the next snapshot"
                )
                state = _WAIT
                order.append(-m - 1)
                buffered.append(m)
                return
            state, last_u = _SYNCED, last[m]
            order.append(m)
        elif state == _SYNCED:
            if prev[m] != last_u:
                p, ln = path_of(line[m])
                report.gaps.append(
                    f"{p}:{ln}: sequence gap: pu={prev[m]} but previous u={last_u}; book resyncs from the next snapshot"
                )
                state = _WAIT
                order.append(-m - 1)
                buffered.append(m)
                return
            last_u = last[m]
            order.append(m)
        else:
            buffered.append(m)

    for m in range(len(kind)):
        if kind[m] == BOOK_SNAPSHOT:
            order.append(-m - 1)
            order.append(m)
            state, snap_id = _BRIDGE, last[m]
            held, buffered[:] = list(buffered), []
            for b in held:
                process(b)
        else:
            process(m)
    if buffered:
        report.skip("depth level in a diff with no snapshot to sync from", int(sum(nlev[b] for b in buffered)))
    return order


def parse_binance(paths: list[Path], inst: Instrument, compiled: bool = True) -> IngestBatch:
    """Parse raw captures (in the given order, later files continuing earlier ones) into lake tables."""
    report = IngestReport()
    sc, path_of = _scan(paths, inst.symbol, report, compiled)
    # Local receive times are the recorder's append order: they must not go backwards in a file.
    all_line = np.concatenate([sc.depth["line"], sc.trades["line"], sc.bbo["line"], sc.funding["line"]])
    all_local = np.concatenate([sc.depth["local"], sc.trades["local"], sc.bbo["local"], sc.funding["local"]])
    o = np.argsort(all_line, kind="stable")
    check_sorted(all_local[o], all_line[o], path_of, "local timestamps")

    tables = {}
    # --- book ---
    d = sc.depth
    kind, first, last, prev, mline = d["kind"], d["first"], d["last"], d["prev"], d["line"]
    nb, nlev, lev_off = d["nbid"], d["nbid"] + d["nask"], d["off"]
    lev_line = np.repeat(mline, nlev)
    # Levels of each message, in message (file) order, for validation.
    in_order = np.repeat(lev_off, nlev) + (np.arange(lev_line.size) - np.repeat(np.cumsum(nlev) - nlev, nlev))
    price, qty = sc.levels[:, 0], sc.levels[:, 1]
    check_prices_qtys(price[in_order], qty[in_order], lev_line, path_of, inst, "depth level", qty_may_be_zero=True)
    zero_snap = np.flatnonzero(np.repeat(kind == BOOK_SNAPSHOT, nlev) & (qty[in_order] == 0))
    if zero_snap.size:
        raise DataError("snapshot level with zero quantity", *path_of(lev_line[zero_snap[0]]))

    order = np.array(_sync(kind, first, last, prev, nlev, mline, path_of, report), dtype=np.int64)
    is_reset = order < 0
    m = np.where(is_reset, -order - 1, order)
    counts = np.where(is_reset, 1, nlev[m] if len(nlev) else 0)
    entry = np.repeat(np.arange(len(order)), counts)
    within = np.arange(entry.size) - np.repeat(np.cumsum(counts) - counts, counts)
    em = m[entry]
    ereset = is_reset[entry]
    src = np.where(ereset, 0, lev_off[em] + within) if entry.size else entry
    side = np.where(within < nb[em], SIDE_BID, SIDE_ASK).astype(np.int8)
    tables["book"] = pa.table(
        {
            "ts_exch": d["ts"][em],
            "ts_local": d["local"][em],
            "seq": (mline[em] << SEQ_SHIFT) + np.where(ereset, 0, within + 1),
            "update_id": last[em],
            "kind": np.where(ereset, BOOK_RESET, kind[em]).astype(np.int8),
            "side": np.where(ereset, 0, side).astype(np.int8),
            "price": np.where(ereset, 0.0, price[src] if price.size else 0.0),
            "qty": np.where(ereset, 0.0, qty[src] if qty.size else 0.0),
        }
    )
    report.rows["book"] = int(entry.size)

    # --- trades ---
    t = sc.trades
    check_prices_qtys(t["fp"], t["fq"], t["line"], path_of, inst, "trade", qty_may_be_zero=False)
    tables["trades"] = pa.table(
        {
            "ts_exch": t["ts"],
            "ts_local": t["local"],
            "seq": t["line"] << SEQ_SHIFT,
            "trade_id": t["id"],
            "side": np.where(t["sell"] != 0, SIDE_ASK, SIDE_BID).astype(np.int8),
            "price": t["fp"],
            "qty": t["fq"],
        }
    )
    report.rows["trades"] = len(t["line"])

    # --- best bid/ask ---
    q = sc.bbo
    check_prices_qtys(q["fb"], q["fbq"], q["line"], path_of, inst, "bookTicker bid", qty_may_be_zero=True)
    check_prices_qtys(q["fa"], q["faq"], q["line"], path_of, inst, "bookTicker ask", qty_may_be_zero=True)
    tables["bbo"] = pa.table(
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
    )
    report.rows["bbo"] = len(q["line"])

    # --- mark price / funding ---
    f = sc.funding
    badf = np.flatnonzero(
        ~(np.isfinite(f["fmark"]) & np.isfinite(f["findex"]) & np.isfinite(f["frate"]))
        | (f["fmark"] <= 0)
        | (f["findex"] <= 0)
    )
    if badf.size:
        raise DataError("markPrice: invalid mark or index price", *path_of(f["line"][badf[0]]))
    tables["funding"] = pa.table(
        {
            "ts_exch": f["ts"],
            "ts_local": f["local"],
            "seq": f["line"] << SEQ_SHIFT,
            "mark_price": f["fmark"],
            "index_price": f["findex"],
            "funding_rate": f["frate"],
            "next_funding_ts": f["next"],
        }
    )
    report.rows["funding"] = len(f["line"])
    if not any(report.rows.values()):
        raise DataError("no market data for " + inst.symbol, str(paths[0]))
    return IngestBatch("binance", inst, tables, report)
