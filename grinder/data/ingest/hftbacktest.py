"""hftbacktest event files: ``.npz`` archives whose ``data`` array has hftbacktest's event dtype.

Each row is one event ``(ev, exch_ts, local_ts, px, qty, order_id, ival, fval)`` with ns
timestamps. ``ev & 0xFF`` is the event type and the high bits are flags: ``EXCH_EVENT``
(1<<31) and ``LOCAL_EVENT`` (1<<30) say which side of the simulation sees the row, ``BUY_EVENT``
(1<<29) and ``SELL_EVENT`` (1<<28) give the book side, or a trade's aggressor side.

hftbacktest's converters sort events by exchange time and, where the local (receive) order
differs, emit the row twice: an ``EXCH_EVENT`` copy in exchange order and a ``LOCAL_EVENT`` copy
in local order. Grinder keeps the exchange view: in a file with any EXCH/LOCAL flag set, rows
without ``EXCH_EVENT`` are skipped (and counted); a file with no such flags is taken whole. The
kept rows must be in non-decreasing exchange time, across files in the given order.

Mapping to lake tables:

- ``DEPTH_CLEAR_EVENT`` (3) -> ``BOOK_RESET`` on the side of its BUY/SELL flag (both if neither).
  hftbacktest clears a side only *up to* the row's price (its converters put the deepest
  snapshot level there), while Grinder clears the whole side: the same thing when, as in every
  converter, the clear precedes a snapshot of that side. Price and quantity are written as 0.
- ``DEPTH_SNAPSHOT_EVENT`` (4) -> ``BOOK_SNAPSHOT``; ``DEPTH_EVENT`` (1) -> ``BOOK_DIFF``.
- ``TRADE_EVENT`` (2) -> trades (BUY flag: aggressor bought). The files carry no trade ids:
  ``trade_id`` is a running count. Trades with no side flag are skipped and counted.
- ``DEPTH_BBO_EVENT`` (5), order-by-order (L3) events, and the custom ids 100..104 that
  hftbacktest's Binance futures converter writes for index/mark price, funding rate and best
  bid/ask are skipped and counted. (That converter stamps the mark price rows with Binance's
  ``T`` field, which for ``markPriceUpdate`` is the *next funding time*, not the event time,
  so they cannot be placed on the time line.)

``update_id`` counts messages: consecutive book rows with equal ``(exch_ts, local_ts)`` form
one message (a clear/snapshot row never shares a message with a diff). ``seq`` is the global
row order (``row << 16``). Errors name the file and the 1-based row of the array. The files
carry no symbol: the caller vouches that they hold `inst`.
"""

from __future__ import annotations

import zipfile
import zlib
from pathlib import Path

import numpy as np
import pyarrow as pa

from grinder.data.ingest.book_check import check_uncrossed
from grinder.data.ingest.numbers import check_prices_qtys, check_sorted, check_times
from grinder.data.ingest.source import LineMap
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

EXCH_EVENT = 1 << 31
LOCAL_EVENT = 1 << 30
BUY_EVENT = 1 << 29
SELL_EVENT = 1 << 28

DEPTH_EVENT = 1
TRADE_EVENT = 2
DEPTH_CLEAR_EVENT = 3
DEPTH_SNAPSHOT_EVENT = 4
DEPTH_BBO_EVENT = 5

EVENT_DTYPE = np.dtype(
    [
        ("ev", "u8"),
        ("exch_ts", "i8"),
        ("local_ts", "i8"),
        ("px", "f8"),
        ("qty", "f8"),
        ("order_id", "u8"),
        ("ival", "i8"),
        ("fval", "f8"),
    ],
    align=True,
)
_REQUIRED = {"ev": "ui", "exch_ts": "i", "local_ts": "i", "px": "f", "qty": "f"}
_CUSTOM = {
    100: "index price",
    101: "mark price",
    102: "funding rate",
    103: "best bid",
    104: "best ask",
}
SEQ_SHIFT = 16
_NS_LO = 10**17  # ns since 1970 from 1973 on: smaller values are µs or ms, not ns


def _load(path: Path) -> np.ndarray:
    """The ``data`` event array of an npz file, checked for shape and dtype."""
    if not path.is_file():
        raise DataError("no such file", str(path))
    try:
        npz = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise DataError(f"not a readable .npz archive ({e})", str(path)) from None
    if not isinstance(npz, np.lib.npyio.NpzFile):  # a bare .npy array
        raise DataError("not an .npz archive (expected hftbacktest's npz with a 'data' array)", str(path))
    with npz:
        if "data" not in npz.files:
            found = ", ".join(npz.files) or "nothing"
            raise DataError(f"no 'data' array in the archive (it holds {found})", str(path))
        try:
            arr = npz["data"]
        except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as e:
            raise DataError(f"cannot read the 'data' array ({e})", str(path)) from None
    names = arr.dtype.names or ()
    wrong = [f for f, kinds in _REQUIRED.items() if f not in names or arr.dtype[f].kind not in kinds]
    if wrong or arr.ndim != 1:
        raise DataError(
            f"'data' is a {arr.dtype} array of shape {arr.shape}; expected a 1-d array of hftbacktest's "
            f"event dtype {EVENT_DTYPE.descr} (hftbacktest v1 files must be migrated first)",
            str(path),
        )
    return arr


def _check_ns(ts: np.ndarray, line: np.ndarray, path_of, what: str) -> None:
    bad = np.flatnonzero(ts < _NS_LO)
    if bad.size:
        i = bad[0]
        raise DataError(f"{what} {ts[i]} is not nanoseconds since 1970", *path_of(line[i]))
    check_times(ts, line, path_of, what + " (ns)")


def parse_hftbacktest_npz(paths: list[Path], inst: Instrument) -> IngestBatch:
    """Parse hftbacktest npz files (in the given order, later files continuing earlier ones)."""
    if not paths:
        raise DataError("no input files")
    report = IngestReport()
    path_of = LineMap()
    parts: list[dict[str, np.ndarray]] = []
    local_parts: list[tuple[np.ndarray, np.ndarray]] = []
    g0 = 0
    for path in paths:
        path = Path(path)
        arr = _load(path)
        path_of.add(path, g0)
        n = len(arr)
        g = g0 + np.arange(n, dtype=np.int64)
        g0 += n
        ev = arr["ev"].astype(np.uint64)
        flags = ev & np.uint64(EXCH_EVENT | LOCAL_EVENT)
        if flags.any():
            keep = (ev & np.uint64(EXCH_EVENT)) != 0
            is_local = flags == LOCAL_EVENT
            report.skip("local-only copy of an event (hftbacktest's event-order correction)", int(is_local.sum()))
            report.skip("event with neither EXCH nor LOCAL flag", int((flags == 0).sum()))
            loc_rows = np.flatnonzero((ev & np.uint64(LOCAL_EVENT)) != 0)
            local_parts.append((arr["local_ts"][loc_rows].astype(np.int64), g[loc_rows]))
        else:
            keep = np.ones(n, bool)
        idx = np.flatnonzero(keep)
        parts.append(
            {
                "line": g[idx],
                "ev": ev[idx],
                "exch": arr["exch_ts"][idx].astype(np.int64),
                "local": arr["local_ts"][idx].astype(np.int64),
                "px": arr["px"][idx].astype(np.float64),
                "qty": arr["qty"][idx].astype(np.float64),
            }
        )

    cols = {k: np.concatenate([p[k] for p in parts]) for k in ("line", "ev", "exch", "local", "px", "qty")}
    line, ev = cols["line"], cols["ev"]
    _check_ns(cols["exch"], line, path_of, "exch_ts")
    _check_ns(cols["local"], line, path_of, "local_ts")
    check_sorted(cols["exch"], line, path_of, "exchange timestamps (exch_ts)")
    if local_parts:
        # hftbacktest's own invariant: its local view (LOCAL_EVENT rows) is in local time order.
        check_sorted(
            np.concatenate([p[0] for p in local_parts]),
            np.concatenate([p[1] for p in local_parts]),
            path_of,
            "local timestamps (local_ts) of LOCAL_EVENT rows",
        )

    typ = (ev & np.uint64(0xFF)).astype(np.int64)
    buy = (ev & np.uint64(BUY_EVENT)) != 0
    sell = (ev & np.uint64(SELL_EVENT)) != 0
    both = np.flatnonzero(buy & sell)
    if both.size:
        raise DataError("event has both BUY_EVENT and SELL_EVENT flags", *path_of(line[both[0]]))
    side = np.where(buy, SIDE_BID, np.where(sell, SIDE_ASK, SIDE_BOTH)).astype(np.int8)

    is_book = (typ == DEPTH_EVENT) | (typ == DEPTH_CLEAR_EVENT) | (typ == DEPTH_SNAPSHOT_EVENT)
    is_trade = typ == TRADE_EVENT
    other = ~(is_book | is_trade)
    if other.any():
        codes, counts = np.unique(typ[other], return_counts=True)
        for c, k in zip(codes.tolist(), counts.tolist(), strict=True):
            if c in _CUSTOM:
                report.skip(f"hftbacktest custom event {c} ({_CUSTOM[c]})", k)
            elif c == DEPTH_BBO_EVENT:
                report.skip("DEPTH_BBO event (best bid/ask only, not a depth diff)", k)
            else:
                report.skip(f"unsupported hftbacktest event type {c}", k)

    tables = {}
    # --- book ---
    b = np.flatnonzero(is_book)
    bt, bs, bl = typ[b], side[b], line[b]
    clear = bt == DEPTH_CLEAR_EVENT
    levels = ~clear
    noside = np.flatnonzero(levels & (bs == SIDE_BOTH))
    if noside.size:
        raise DataError("depth event without BUY_EVENT or SELL_EVENT side flag", *path_of(bl[noside[0]]))
    bpx, bqty = cols["px"][b], cols["qty"][b]
    check_prices_qtys(bpx[levels], bqty[levels], bl[levels], path_of, inst, "depth level", qty_may_be_zero=True)
    bex, bloc = cols["exch"][b], cols["local"][b]
    group = bt != DEPTH_EVENT  # clear/snapshot rows vs diffs
    new_msg = np.ones(b.size, bool)
    if b.size > 1:
        new_msg[1:] = (bex[1:] != bex[:-1]) | (bloc[1:] != bloc[:-1]) | (group[1:] != group[:-1])
    tables["book"] = pa.table(
        {
            "ts_exch": bex,
            "ts_local": bloc,
            "seq": bl << SEQ_SHIFT,
            "update_id": np.cumsum(new_msg),
            "kind": np.select([clear, bt == DEPTH_SNAPSHOT_EVENT], [BOOK_RESET, BOOK_SNAPSHOT], BOOK_DIFF).astype(
                np.int8
            ),
            "side": bs,
            "price": np.where(clear, 0.0, bpx),
            "qty": np.where(clear, 0.0, bqty),
        },
        schema=BOOK,
    )
    report.rows["book"] = int(b.size)
    check_uncrossed(tables["book"], inst, bl, path_of)

    # --- trades ---
    t = np.flatnonzero(is_trade)
    known = side[t] != SIDE_BOTH
    report.skip("trade without aggressor side flag", int((~known).sum()))
    t = t[known]
    check_prices_qtys(cols["px"][t], cols["qty"][t], line[t], path_of, inst, "trade", qty_may_be_zero=False)
    tables["trades"] = pa.table(
        {
            "ts_exch": cols["exch"][t],
            "ts_local": cols["local"][t],
            "seq": line[t] << SEQ_SHIFT,
            "trade_id": np.arange(1, t.size + 1, dtype=np.int64),
            "side": side[t],
            "price": cols["px"][t],
            "qty": cols["qty"][t],
        },
        schema=TRADES,
    )
    report.rows["trades"] = int(t.size)
    if t.size:
        report.notes.append("hftbacktest events carry no trade ids: trade_id is a running count")
    if not any(report.rows.values()):
        raise DataError("no market data for " + inst.symbol, str(paths[0]) if paths else None)
    return IngestBatch("hftbacktest", inst, tables, report)


__all__ = ["parse_hftbacktest_npz", "EVENT_DTYPE"]
