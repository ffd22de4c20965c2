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
from grinder.data.ingest.numbers import check_prices_qtys, check_sorted, parse_decimals
from grinder.data.ingest.source import LineMap, read_bytes
from grinder.data.instruments import Instrument
from grinder.data.lake import IngestBatch, IngestReport
from grinder.data.schema import BOOK_DIFF, BOOK_RESET, BOOK_SNAPSHOT, SIDE_ASK, SIDE_BID

MS = 1_000_000
SEQ_SHIFT = 16  # seq = global line << 16 | row within the line's message

_WAIT, _BRIDGE, _SYNCED = 0, 1, 2


def _local_unit(ts: int, path: Path, line: int) -> int:
    """Nanoseconds per unit of the recorder's local timestamp, from its magnitude."""
    if 10**17 <= ts < 10**19:
        return 1
    if 10**14 <= ts < 10**16:
        return 1000
    raise DataError(f"local timestamp {ts} is neither microseconds nor nanoseconds since 1970", str(path), line)


class _Parsed:
    """Columns gathered while scanning lines, as Python lists (converted in bulk afterwards)."""

    def __init__(self) -> None:
        # Depth messages and snapshots, in file order; levels flattened as price,qty,price,qty...
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


def _scan(paths: list[Path], symbol: str, report: IngestReport) -> tuple[_Parsed, LineMap]:
    out = _Parsed()
    lines_map = LineMap()
    loads = orjson.loads
    g0 = 0
    sym = symbol.upper()
    for path in paths:
        lines = read_bytes(path).split(b"\n")
        if lines and lines[-1] == b"":
            lines.pop()
        lines_map.add(path, g0)
        unit = None
        for i, line in enumerate(lines):
            g = g0 + i
            sp = line.find(b" ")
            try:
                local = int(line[:sp]) if sp > 0 else None
            except ValueError:
                local = None
            if local is None:
                raise DataError("expected '<local timestamp> <json>'", str(path), i + 1)
            if unit is None:
                unit = _local_unit(local, path, i + 1)
            local *= unit
            try:
                msg = loads(line[sp + 1 :])
                data = msg.get("data") if "stream" in msg else msg
                ev = data.get("e") if "stream" in msg else ("snapshot" if "lastUpdateId" in msg else None)
                if ev is not None and ev != "snapshot" and data.get("s") != sym:
                    report.skip(f"message for another symbol ({data.get('s')})")
                    continue
                if ev == "depthUpdate":
                    out.m_line.append(g)
                    out.m_local.append(local)
                    out.m_ts.append(data["T"] * MS)
                    out.m_kind.append(BOOK_DIFF)
                    out.m_first.append(data["U"])
                    out.m_last.append(data["u"])
                    out.m_prev.append(data["pu"])
                    b, a = data["b"], data["a"]
                    out.m_nbid.append(len(b))
                    out.m_nask.append(len(a))
                    out.levels.extend(chain.from_iterable(b))
                    out.levels.extend(chain.from_iterable(a))
                elif ev == "bookTicker":
                    out.q_line.append(g)
                    out.q_local.append(local)
                    out.q_ts.append(data["T"] * MS)
                    out.q_id.append(data["u"])
                    out.q_num += (data["b"], data["B"], data["a"], data["A"])
                elif ev == "trade":
                    if data.get("X", "MARKET") != "MARKET":
                        report.skip(f"trade of type {data['X']} (not a market trade)")
                        continue
                    out.t_line.append(g)
                    out.t_local.append(local)
                    out.t_ts.append(data["T"] * MS)
                    out.t_id.append(data["t"])
                    out.t_sell.append(bool(data["m"]))  # buyer is maker: the aggressor sold
                    out.t_num += (data["p"], data["q"])
                elif ev == "markPriceUpdate":
                    out.f_line.append(g)
                    out.f_local.append(local)
                    out.f_ts.append(data["E"] * MS)
                    out.f_next.append(data["T"] * MS)
                    out.f_num += (data["p"], data["i"], data["r"])
                elif ev == "snapshot":
                    b, a = msg["bids"], msg["asks"]
                    out.m_line.append(g)
                    out.m_local.append(local)
                    out.m_ts.append(msg["T"] * MS)
                    out.m_kind.append(BOOK_SNAPSHOT)
                    out.m_first.append(msg["lastUpdateId"])
                    out.m_last.append(msg["lastUpdateId"])
                    out.m_prev.append(msg["lastUpdateId"])
                    out.m_nbid.append(len(b))
                    out.m_nask.append(len(a))
                    out.levels.extend(chain.from_iterable(b))
                    out.levels.extend(chain.from_iterable(a))
                elif "code" in msg and "msg" in msg:
                    report.skip("venue error message")
                else:
                    report.skip(f"unhandled message ({msg.get('stream', 'no stream')})")
            except orjson.JSONDecodeError as e:
                raise DataError(f"malformed JSON: {e}", str(path), i + 1) from None
            except (KeyError, TypeError, ValueError, AttributeError) as e:
                raise DataError(f"message lacks or mistypes a field ({e!r})", str(path), i + 1) from None
        g0 += len(lines)
    return out, lines_map


def _sync(kind, first, last, prev, line, path_of, report: IngestReport) -> list[int]:
    """Apply order of depth messages/snapshots; -1 entries stand for a book reset."""
    order: list[int] = []
    buffered: list[int] = []
    state, snap_id, last_u = _WAIT, 0, 0

    def process(m: int) -> None:
        nonlocal state, last_u
        if state == _BRIDGE:
            if last[m] < snap_id:
                report.skip("depth diff older than the snapshot")
                return
            if first[m] > snap_id + 1:
                p, ln = path_of(line[m])
                report.gaps.append(
                    f"{p}:{ln}: first diff after snapshot {snap_id} starts at U={first[m]}: "
                    "book resyncs from the next snapshot"
                )
                state = _WAIT
                order.append(-1)
                buffered.append(m)
                return
            state, last_u = _SYNCED, last[m]
            order.append(m)
        elif state == _SYNCED:
            if prev[m] != last_u:
                p, ln = path_of(line[m])
                report.gaps.append(
                    f"{p}:{ln}: sequence gap: pu={prev[m]} but previous u={last_u}; "
                    "book resyncs from the next snapshot"
                )
                state = _WAIT
                order.append(-1)
                buffered.append(m)
                return
            last_u = last[m]
            order.append(m)
        else:
            buffered.append(m)

    for m in range(len(kind)):
        if kind[m] == BOOK_SNAPSHOT:
            order.append(-1)
            order.append(m)
            state, snap_id = _BRIDGE, last[m]
            held, buffered[:] = list(buffered), []
            for b in held:
                process(b)
        else:
            process(m)
    if buffered:
        report.skip("depth diff with no snapshot to sync from", len(buffered))
    return order


def parse_binance(paths: list[Path], inst: Instrument) -> IngestBatch:
    """Parse raw captures (in the given order, later files continuing earlier ones) into lake tables."""
    report = IngestReport()
    p, path_of = _scan(paths, inst.symbol, report)
    local_cols = {"depth": p.m_local, "trades": p.t_local, "bbo": p.q_local, "funding": p.f_local}
    # Local receive times are the recorder's append order: they must not go backwards in a file.
    all_line = np.array(p.m_line + p.t_line + p.q_line + p.f_line, dtype=np.int64)
    all_local = np.array(sum(local_cols.values(), []), dtype=np.int64)
    o = np.argsort(all_line, kind="stable")
    check_sorted(all_local[o], all_line[o], path_of, "local timestamps")

    tables = {}
    # --- book ---
    kind = np.array(p.m_kind, np.int8)
    first = np.array(p.m_first, np.int64)
    last = np.array(p.m_last, np.int64)
    prev = np.array(p.m_prev, np.int64)
    mline = np.array(p.m_line, np.int64)
    nb = np.array(p.m_nbid, np.int64)
    na = np.array(p.m_nask, np.int64)
    nlev = nb + na
    lv, bad = parse_decimals(p.levels)
    lev_line = np.repeat(mline, 2 * nlev)
    if bad >= 0:
        raise DataError(f"depth level: not a number: {p.levels[bad]!r}", *path_of(lev_line[bad]))
    price, qty = lv[0::2], lv[1::2]
    row_line = lev_line[0::2]
    is_snap_row = np.repeat(kind == BOOK_SNAPSHOT, nlev)
    check_prices_qtys(price, qty, row_line, path_of, inst, "depth level", qty_may_be_zero=True)
    zero_snap = np.flatnonzero(is_snap_row & (qty == 0))
    if zero_snap.size:
        raise DataError("snapshot level with zero quantity", *path_of(row_line[zero_snap[0]]))

    order = np.array(_sync(kind, first, last, prev, mline, path_of, report), dtype=np.int64)
    is_reset = order < 0
    m = np.where(is_reset, 0, order)
    # Reset rows take the time of the message they precede (or follow, at the end).
    nxt = np.flatnonzero(~is_reset)
    if nxt.size:
        pos = np.searchsorted(nxt, np.arange(len(order)))
        m = np.where(is_reset, order[nxt[np.minimum(pos, nxt.size - 1)]], m)
    counts = np.where(is_reset, 1, nlev[m] if len(nlev) else 0)
    entry = np.repeat(np.arange(len(order)), counts)
    within = np.arange(entry.size) - np.repeat(np.cumsum(counts) - counts, counts)
    em = m[entry]
    ereset = is_reset[entry]
    lev_start = np.cumsum(nlev) - nlev
    src = np.where(ereset, 0, lev_start[em] + within) if entry.size else entry
    side = np.where(within < nb[em], SIDE_BID, SIDE_ASK).astype(np.int8)
    tables["book"] = pa.table(
        {
            "ts_exch": np.array(p.m_ts, np.int64)[em],
            "ts_local": np.array(p.m_local, np.int64)[em],
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
    tline = np.array(p.t_line, np.int64)
    tv, bad = parse_decimals(p.t_num)
    if bad >= 0:
        raise DataError(f"trade: not a number: {p.t_num[bad]!r}", *path_of(tline[bad // 2]))
    tp, tq = tv[0::2], tv[1::2]
    check_prices_qtys(tp, tq, tline, path_of, inst, "trade", qty_may_be_zero=False)
    tables["trades"] = pa.table(
        {
            "ts_exch": np.array(p.t_ts, np.int64),
            "ts_local": np.array(p.t_local, np.int64),
            "seq": tline << SEQ_SHIFT,
            "trade_id": np.array(p.t_id, np.int64),
            "side": np.where(np.array(p.t_sell, bool), SIDE_ASK, SIDE_BID).astype(np.int8),
            "price": tp,
            "qty": tq,
        }
    )
    report.rows["trades"] = len(tline)

    # --- best bid/ask ---
    qline = np.array(p.q_line, np.int64)
    qv, bad = parse_decimals(p.q_num)
    if bad >= 0:
        raise DataError(f"bookTicker: not a number: {p.q_num[bad]!r}", *path_of(qline[bad // 4]))
    qv = qv.reshape(-1, 4)
    for c, what in ((0, "bookTicker bid"), (2, "bookTicker ask")):
        check_prices_qtys(qv[:, c], qv[:, c + 1], qline, path_of, inst, what, qty_may_be_zero=True)
    tables["bbo"] = pa.table(
        {
            "ts_exch": np.array(p.q_ts, np.int64),
            "ts_local": np.array(p.q_local, np.int64),
            "seq": qline << SEQ_SHIFT,
            "update_id": np.array(p.q_id, np.int64),
            "bid_price": np.ascontiguousarray(qv[:, 0]),
            "bid_qty": np.ascontiguousarray(qv[:, 1]),
            "ask_price": np.ascontiguousarray(qv[:, 2]),
            "ask_qty": np.ascontiguousarray(qv[:, 3]),
        }
    )
    report.rows["bbo"] = len(qline)

    # --- mark price / funding ---
    fline = np.array(p.f_line, np.int64)
    fv, bad = parse_decimals(p.f_num)
    if bad >= 0:
        raise DataError(f"markPrice: not a number: {p.f_num[bad]!r}", *path_of(fline[bad // 3]))
    fv = fv.reshape(-1, 3)
    badf = np.flatnonzero(~np.isfinite(fv).all(axis=1) | (fv[:, 0] <= 0) | (fv[:, 1] <= 0))
    if badf.size:
        raise DataError("markPrice: invalid mark or index price", *path_of(fline[badf[0]]))
    tables["funding"] = pa.table(
        {
            "ts_exch": np.array(p.f_ts, np.int64),
            "ts_local": np.array(p.f_local, np.int64),
            "seq": fline << SEQ_SHIFT,
            "mark_price": np.ascontiguousarray(fv[:, 0]),
            "index_price": np.ascontiguousarray(fv[:, 1]),
            "funding_rate": np.ascontiguousarray(fv[:, 2]),
            "next_funding_ts": np.array(p.f_next, np.int64),
        }
    )
    report.rows["funding"] = len(fline)
    if not any(report.rows.values()):
        raise DataError("no market data for " + inst.symbol, str(paths[0]))
    return IngestBatch("binance", inst, tables, report)
