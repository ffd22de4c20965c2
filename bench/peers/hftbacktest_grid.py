#!/usr/bin/env python3
"""Reference run of hftbacktest 2.4.4's "High-Frequency Grid Trading" example on real Binance data.

Runs INSIDE the peer virtual environment created by ``setup_hftbacktest.sh``::

    bench/peers/.venv-hftbacktest/bin/python bench/peers/hftbacktest_grid.py --out DIR [--window NAME ...]

For every window it

1. converts the raw Binance USDT-M captures with hftbacktest's own converter
   (``hftbacktest.data.utils.binancefutures.convert``), caching ``bench/peers/data/<window>.npz``;
2. runs the plain grid-trading strategy of the tutorial (20 GTX limit orders a side on a grid
   aligned to ``grid_interval``, re-evaluated every 100 ms) with a constant order latency,
   the risk-averse queue model, no partial fills and a maker/taker trading-value fee;
3. records every fill and writes ``DIR/<window>_fills.csv``, ``DIR/<window>_summary.json`` and
   ``DIR/<window>_records.npz`` (hftbacktest ``Recorder`` output: one row per 100 ms step).

``--npz PATH --tick-size X --lot-size Y [--name NAME]`` skips step 1 and runs the same strategy on
a ready-made hftbacktest event file (as written by ``bench/backtest_speed.py`` for synthetic
data), writing the same three outputs as ``DIR/<NAME>_*``.

``--sweep-file SETS.json`` (with one ``--window`` or ``--npz``) is the sweep mode used by
``bench/sweep_speed.py``: the data is loaded once and the strategy compiled once, then every
parameter set gets a full run (a fresh backtester built on the loaded array, the loop, the final
state), ``--repeat`` passes over all sets; it writes ``DIR/<name>_sweep.json``.

See ``bench/peers/README.md`` for the exact semantics and the caveats.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

try:
    import hftbacktest
    from hftbacktest import (
        BUY,
        GTX,
        LIMIT,
        SELL,
        BacktestAsset,
        HashMapMarketDepthBacktest,
        Recorder,
        ROIVectorMarketDepthBacktest,
    )
    from hftbacktest.data.utils import binancefutures
    from hftbacktest.types import (
        DEPTH_SNAPSHOT_EVENT,
        EXCH_EVENT,
        LOCAL_EVENT,
        TRADE_EVENT,
    )
except ImportError as exc:  # pragma: no cover - only hit when run outside the peer venv
    sys.exit(
        f"cannot import hftbacktest ({exc}); run this with bench/peers/.venv-hftbacktest/bin/python "
        "after `bash bench/peers/setup_hftbacktest.sh`"
    )
from numba import njit, uint64
from numba.typed import Dict

HERE = Path(__file__).resolve().parent
DEFAULT_RAW_DIR = Path(os.environ.get("GRINDER_REAL_DATA", HERE.parents[2] / "shared" / "data" / "real" / "binance-usdm"))
DEFAULT_DATA_DIR = HERE / "data"
CONVERSION_VERSION = 1  # bump when the preprocessing below changes (invalidates the .npz cache)

# Windows of ../shared/data/real/README.md. Each pair is one continuous capture split at
# midnight; the second file has no snapshot of its own.
WINDOWS: dict[str, dict] = {
    "btcusdt_20230404": {
        "files": ["btcusdt_20230404.dat.gz", "btcusdt_20230405.dat.gz"],
        "local_ts_unit": "us",
        "symbol": "BTCUSDT",
        "tick_size": 0.1,
        "lot_size": 0.001,
    },
    "btcusdt_20240718": {
        "files": ["btcusdt_20240718.gz", "btcusdt_20240719.gz"],
        "local_ts_unit": "ns",
        "symbol": "BTCUSDT",
        "tick_size": 0.1,
        "lot_size": 0.001,
    },
    "btcusdt_20240808": {
        "files": ["btcusdt_20240808.gz"],
        "local_ts_unit": "ns",
        "symbol": "BTCUSDT",
        "tick_size": 0.1,
        "lot_size": 0.001,
    },
    "ethusdt_20240718": {
        "files": ["ethusdt_20240718.gz", "ethusdt_20240719.gz"],
        "local_ts_unit": "ns",
        "symbol": "ETHUSDT",
        "tick_size": 0.01,
        "lot_size": 0.001,
    },
}

# Order status codes (hftbacktest.order): NONE=0 NEW=1 EXPIRED=2 FILLED=3 CANCELED=4 PARTIALLY_FILLED=5
_ST_EXPIRED = 2
_ST_FILLED = 3
_ST_CANCELED = 4
_ST_PARTIALLY_FILLED = 5

# Indices into the int64 counters array filled by the jitted loop.
(
    C_STEPS,
    C_TRADING_STEPS,
    C_FILLS,
    C_SUBMIT_BUY,
    C_SUBMIT_SELL,
    C_CANCEL,
    C_EXPIRED,
    C_CANCELED,
    C_OVERFLOW,
    C_PARTIAL,
    C_SUBMIT_ERR,
    C_CANCEL_ERR,
    C_LAST_TS,
    C_N,
) = range(14)
COUNTER_NAMES = [
    "steps",
    "trading_steps",
    "fills",
    "buy_orders_submitted",
    "sell_orders_submitted",
    "cancels_submitted",
    "orders_expired_gtx",
    "orders_canceled",
    "fill_buffer_overflow",
    "partial_fill_updates",
    "submit_errors",
    "cancel_errors",
    "last_step_ts",
]


# --------------------------------------------------------------------------------------------
# Conversion
# --------------------------------------------------------------------------------------------
def _source_fingerprint(paths: list[Path]) -> list[dict]:
    return [{"name": p.name, "size": p.stat().st_size, "mtime": int(p.stat().st_mtime)} for p in paths]


def _normalize_and_scan(paths: list[Path], unit: str, out_path: Path) -> dict:
    """Concatenate the window's files into one gzip whose local timestamps are nanoseconds.

    hftbacktest 2.4.4's ``binancefutures.convert`` hard-codes ``timestamp_slice = 19`` (a 19-digit
    nanosecond local timestamp) and has no unit argument, so a 16-digit microsecond stamp would
    make ``int(line[:19])`` fail. We therefore rewrite ``<µs> <json>`` as ``<µs*1000> <json>``
    (appending three zeros, exact) and leave the JSON untouched. The two files of a pair are
    concatenated so the converter sees one continuous stream (one snapshot, one latency
    correction offset) instead of two independently-corrected halves.

    While streaming we also count the rows the converter will emit (for ``buffer_size``) and
    compute ``min(local_ns - T_ms*1e6)`` over those rows, i.e. the clock offset that
    ``correct_local_timestamp`` removes.
    """
    rows = 0
    min_lat = None
    lines = 0
    snapshot = None
    depth_msgs = trades = 0
    first_local = last_local = None
    with gzip.open(out_path, "wb", compresslevel=1) as out:
        for path in paths:
            with gzip.open(path, "rb") as fh:
                for line in fh:
                    sp = line.index(b" ")
                    ts = int(line[:sp])
                    if unit == "us":
                        ts *= 1000
                    elif unit != "ns":
                        raise ValueError(unit)
                    out.write(b"%d%s" % (ts, line[sp:]))
                    lines += 1
                    first_local = ts if first_local is None else first_local
                    last_local = ts
                    msg = json.loads(line[sp + 1 :])
                    data = msg.get("data")
                    n = 0
                    t_ms = None
                    if data is not None:
                        ev = data.get("e")
                        if ev == "trade" and data.get("X") == "MARKET":
                            n, t_ms = 1, data["T"]
                            trades += 1
                        elif ev == "depthUpdate":
                            n, t_ms = len(data["b"]) + len(data["a"]), data["T"]
                            depth_msgs += 1
                    elif "code" not in msg:
                        n = (1 + len(msg["bids"]) if msg["bids"] else 0) + (1 + len(msg["asks"]) if msg["asks"] else 0)
                        t_ms = msg["T"]
                        if snapshot is None:
                            snapshot = {
                                "line": lines,
                                "local_ts_ns_raw": ts,
                                "T_ms": msg["T"],
                                "E_ms": msg["E"],
                                "lastUpdateId": msg["lastUpdateId"],
                                "bid_levels": len(msg["bids"]),
                                "ask_levels": len(msg["asks"]),
                            }
                    if n:
                        rows += n
                        lat = ts - t_ms * 1_000_000
                        min_lat = lat if min_lat is None else min(min_lat, lat)
    return {
        "lines": lines,
        "expected_rows": rows,
        "depth_messages": depth_msgs,
        "market_trades": trades,
        "min_raw_feed_latency_ns": min_lat,
        "snapshot": snapshot,
        "first_local_ts_ns_raw": first_local,
        "last_local_ts_ns_raw": last_local,
    }


def _bridging_report(paths: list[Path], unit: str, snapshot: dict) -> dict:
    """How the diffs around the REST snapshot are ordered (see README caveats)."""
    lid = snapshot["lastUpdateId"]
    t_snap = snapshot["T_ms"]
    before = []  # diffs that precede the snapshot line in the file
    after_first = None
    line_no = 0
    with gzip.open(paths[0], "rb") as fh:
        for line in fh:
            line_no += 1
            if line_no > snapshot["line"] + 200:
                break
            sp = line.index(b" ")
            msg = json.loads(line[sp + 1 :])
            d = msg.get("data")
            if not d or d.get("e") != "depthUpdate":
                continue
            info = {"line": line_no, "U": d["U"], "u": d["u"], "T_ms": d["T"]}
            if line_no < snapshot["line"]:
                before.append(info)
            elif after_first is None:
                after_first = info
    stale_before = [b for b in before if b["u"] < lid]
    bridge = [b for b in before if b["U"] <= lid <= b["u"]]
    newer_before = [b for b in before if b["U"] > lid]
    bridge_after = after_first if after_first and after_first["U"] <= lid <= after_first["u"] else None
    return {
        "diffs_before_snapshot_line": len(before),
        "stale_diffs_before_snapshot (u<lastUpdateId)": len(stale_before),
        "bridging_diff_before_snapshot_line": bridge[0] if bridge else None,
        "bridging_diff_after_snapshot_line": bridge_after,
        "post_snapshot_diffs_before_snapshot_line (U>lastUpdateId)": len(newer_before),
        "max_T_minus_snapshot_T_of_stale_ms": max((b["T_ms"] - t_snap for b in stale_before), default=None),
        "min_T_minus_snapshot_T_of_newer_ms": min(
            (
                b["T_ms"] - t_snap
                for b in (bridge + newer_before + ([bridge_after] if bridge_after else []))
                if b["u"] > lid
            ),
            default=None,
        ),
    }


def _data_stats(data: np.ndarray, offset_ns: int) -> dict:
    """Row counts, time span, feed latency and snapshot arrival of an hftbacktest event array.

    `offset_ns` is what was added to its local times (recorded in between, in the summary's order).
    """
    ev = data["ev"]
    exch = (ev & EXCH_EVENT) != 0
    local = (ev & LOCAL_EVENT) != 0
    snap_mask = ((ev & 0xFF) == DEPTH_SNAPSHOT_EVENT) & local
    lat = data["local_ts"] - data["exch_ts"]
    return {
        "rows_total": int(len(data)),
        "source_events": int(np.count_nonzero(exch)),
        "local_rows": int(np.count_nonzero(local)),
        "rows_exch_only": int(np.count_nonzero((ev & (EXCH_EVENT | LOCAL_EVENT)) == EXCH_EVENT)),
        "rows_local_only": int(np.count_nonzero((ev & (EXCH_EVENT | LOCAL_EVENT)) == LOCAL_EVENT)),
        "trade_events": int(np.count_nonzero(((ev & 0xFF) == TRADE_EVENT) & exch)),
        "local_ts_offset_added_ns": int(offset_ns),
        "feed_latency_after_correction_ns": {
            "min": int(lat.min()),
            "p50": int(np.median(lat)),
            "p99": int(np.percentile(lat, 99)),
            "max": int(lat.max()),
        },
        "first_exch_ts": int(data["exch_ts"][exch].min()),
        "last_exch_ts": int(data["exch_ts"][exch].max()),
        "first_local_ts": int(data["local_ts"][local].min()),
        "last_local_ts": int(data["local_ts"][local].max()),
        "snapshot_local_ts": int(data["local_ts"][snap_mask].min()) if snap_mask.any() else None,
    }


def convert_window(name: str, raw_dir: Path, data_dir: Path, base_latency_ns: int, force: bool) -> tuple[Path, dict]:
    spec = WINDOWS[name]
    paths = [raw_dir / f for f in spec["files"]]
    for p in paths:
        if not p.exists():
            raise FileNotFoundError(p)
    data_dir.mkdir(parents=True, exist_ok=True)
    npz = data_dir / f"{name}.npz"
    meta_path = data_dir / f"{name}.meta.json"
    key = {
        "conversion_version": CONVERSION_VERSION,
        "hftbacktest": hftbacktest.__version__,
        "sources": _source_fingerprint(paths),
        "base_latency_ns": base_latency_ns,
        "local_ts_unit": spec["local_ts_unit"],
    }
    if not force and npz.exists() and meta_path.exists():
        meta = json.loads(meta_path.read_text())
        if meta.get("key") == key:
            meta["cached"] = True
            return npz, meta

    t0 = time.perf_counter()
    tmp = data_dir / f"{name}.normalized.tmp.gz"
    scan = _normalize_and_scan(paths, spec["local_ts_unit"], tmp)
    t1 = time.perf_counter()
    try:
        data = binancefutures.convert(
            str(tmp),
            output_filename=str(npz),
            opt="",  # no markPrice (m) / bookTicker (t) custom events
            base_latency=base_latency_ns,
            combined_stream=True,
            buffer_size=scan["expected_rows"] + 1024,
        )
    finally:
        tmp.unlink(missing_ok=True)
    t2 = time.perf_counter()

    offset = -scan["min_raw_feed_latency_ns"] + base_latency_ns if scan["min_raw_feed_latency_ns"] < 0 else 0
    stats = _data_stats(data, offset)
    exch_rows, local_rows = stats["source_events"], stats.pop("local_rows")
    if exch_rows != scan["expected_rows"] or local_rows != scan["expected_rows"]:
        raise RuntimeError(f"{name}: converter emitted {exch_rows}/{local_rows} rows, expected {scan['expected_rows']}")
    meta = {
        "key": key,
        "window": name,
        "files": spec["files"],
        **stats,
        "scan": scan,
        "snapshot_ordering": _bridging_report(paths, spec["local_ts_unit"], scan["snapshot"])
        if scan["snapshot"]
        else None,
        "normalize_s": round(t1 - t0, 3),
        "convert_s": round(t2 - t1, 3),
        "cached": False,
    }
    meta_path.write_text(json.dumps(meta, indent=2))
    return npz, meta


# --------------------------------------------------------------------------------------------
# Strategy: hftbacktest's plain "High-Frequency Grid Trading" example, plus fill capture.
# --------------------------------------------------------------------------------------------
@njit
def grid_trading(
    hbt,
    recorder,
    step_ns,
    start_ts,
    grid_num,
    grid_interval_ticks,
    half_spread_ticks,
    order_qty,
    max_position,
    fills_i,
    fills_f,
    counters,
):
    """Tutorial loop. Extra bookkeeping (fill capture, counters) never changes a decision.

    fills_i[k] = (exch_ts, local_req_ts, seen_at_step_ts, side, order_id, exec_price_tick, maker, status)
    fills_f[k] = (exec_qty, exec_price)
    """
    asset_no = 0
    tick_size = hbt.depth(asset_no).tick_size
    grid_interval = tick_size * grid_interval_ticks
    half_spread = tick_size * half_spread_ticks
    cap = fills_i.shape[0]
    now = 0

    while True:
        rc = hbt.elapse(step_ns)
        if rc == 0 or now == 0:
            now = hbt.current_timestamp
        else:
            # The elapse that runs out of data processes every remaining event up to its target
            # but leaves current_timestamp at the previous step; report the target instead.
            now += step_ns
        # ---- capture: every order that became FILLED during this elapse is still in the local
        # dict here (clear_inactive_orders below is the only thing that removes it).
        values = hbt.orders(asset_no).values()
        while values.has_next():
            order = values.get()
            st = order.status
            if st == _ST_FILLED or st == _ST_PARTIALLY_FILLED:
                if st == _ST_PARTIALLY_FILLED:
                    counters[C_PARTIAL] += 1
                k = counters[C_FILLS]
                if k < cap:
                    fills_i[k, 0] = order.exch_timestamp
                    fills_i[k, 1] = order.local_timestamp
                    fills_i[k, 2] = now
                    fills_i[k, 3] = order.side
                    fills_i[k, 4] = order.order_id
                    fills_i[k, 5] = order.exec_price_tick
                    fills_i[k, 6] = 1 if order.arr[0].maker else 0
                    fills_i[k, 7] = st
                    fills_f[k, 0] = order.exec_qty
                    fills_f[k, 1] = order.exec_price
                else:
                    counters[C_OVERFLOW] += 1
                counters[C_FILLS] += 1
            elif st == _ST_EXPIRED:
                counters[C_EXPIRED] += 1
            elif st == _ST_CANCELED:
                counters[C_CANCELED] += 1
        if rc != 0:
            break
        counters[C_STEPS] += 1
        counters[C_LAST_TS] = now

        # ---- the tutorial's step body ------------------------------------------------------
        # Clears cancelled, filled or expired orders.
        hbt.clear_inactive_orders(asset_no)
        if now < start_ts:
            # Book not yet initialised from the REST snapshot (see README): do not quote.
            recorder.record(hbt)
            continue
        counters[C_TRADING_STEPS] += 1

        depth = hbt.depth(asset_no)
        position = hbt.position(asset_no)
        orders = hbt.orders(asset_no)

        best_bid = depth.best_bid
        best_ask = depth.best_ask
        mid_price = (best_bid + best_ask) / 2.0

        # Aligns the prices to the grid.
        bid_price = np.floor((mid_price - half_spread) / grid_interval) * grid_interval
        ask_price = np.ceil((mid_price + half_spread) / grid_interval) * grid_interval

        # New grid of buy orders; the price in ticks is the order id.
        new_bid_orders = Dict.empty(np.uint64, np.float64)
        if position < max_position and np.isfinite(bid_price):
            for _i in range(grid_num):
                bid_price_tick = round(bid_price / tick_size)
                new_bid_orders[uint64(bid_price_tick)] = bid_price
                bid_price -= grid_interval

        # New grid of sell orders.
        new_ask_orders = Dict.empty(np.uint64, np.float64)
        if position > -max_position and np.isfinite(ask_price):
            for _i in range(grid_num):
                ask_price_tick = round(ask_price / tick_size)
                new_ask_orders[uint64(ask_price_tick)] = ask_price
                ask_price += grid_interval

        # Cancels every working order that is not on the new grid of its side.
        order_values = orders.values()
        while order_values.has_next():
            order = order_values.get()
            if order.cancellable:
                if (order.side == BUY and order.order_id not in new_bid_orders) or (
                    order.side == SELL and order.order_id not in new_ask_orders
                ):
                    if hbt.cancel(asset_no, order.order_id, False) == 0:
                        counters[C_CANCEL] += 1
                    else:
                        counters[C_CANCEL_ERR] += 1

        # Posts a GTX (post-only) limit order on every grid price with no order (any side/state).
        for order_id, order_price in new_bid_orders.items():
            if order_id not in orders:
                if hbt.submit_buy_order(asset_no, order_id, order_price, order_qty, GTX, LIMIT, False) == 0:
                    counters[C_SUBMIT_BUY] += 1
                else:
                    counters[C_SUBMIT_ERR] += 1
        for order_id, order_price in new_ask_orders.items():
            if order_id not in orders:
                if hbt.submit_sell_order(asset_no, order_id, order_price, order_qty, GTX, LIMIT, False) == 0:
                    counters[C_SUBMIT_SELL] += 1
                else:
                    counters[C_SUBMIT_ERR] += 1

        # Records the current state for stat calculation.
        recorder.record(hbt)
    return True


def _build(data: np.ndarray, spec: dict, args, roi: tuple[float, float], partial_fill: bool = False):
    """The backtester over `data`; with `partial_fill`, PartialFillExchange (takers walk the book:
    hftbacktest_taker.py) instead of the grid example's NoPartialFillExchange."""
    asset = (
        BacktestAsset()
        .data([data])
        .linear_asset(1.0)
        .constant_order_latency(args.entry_latency_ns, args.response_latency_ns)
        .risk_adverse_queue_model()
    )
    asset = asset.partial_fill_exchange() if partial_fill else asset.no_partial_fill_exchange()
    asset = (
        asset.trading_value_fee_model(args.maker_fee, args.taker_fee)
        .tick_size(spec["tick_size"])
        .lot_size(spec["lot_size"])
        .last_trades_capacity(0)
    )
    if args.depth == "roivector":
        asset = asset.roi_lb(roi[0]).roi_ub(roi[1])
        return ROIVectorMarketDepthBacktest([asset])
    return HashMapMarketDepthBacktest([asset])


def _run_loop(data, spec, args, roi, start_ts, n_steps_hint):
    hbt = _build(data, spec, args, roi)
    recorder = Recorder(1, n_steps_hint)
    cap = args.fill_capacity
    fills_i = np.zeros((cap, 8), np.int64)
    fills_f = np.zeros((cap, 2), np.float64)
    counters = np.zeros(C_N, np.int64)
    t0 = time.perf_counter()
    grid_trading(
        hbt,
        recorder.recorder,
        args.step_ns,
        start_ts,
        args.grid_num,
        float(args.grid_interval_ticks),
        float(args.half_spread_ticks),
        args.order_qty,
        args.max_position,
        fills_i,
        fills_f,
        counters,
    )
    wall = time.perf_counter() - t0
    sv = hbt.state_values(0)
    depth = hbt.depth(0)
    final = {
        "position": sv.position,
        "balance": sv.balance,
        "fee": sv.fee,
        "num_trades": int(sv.num_trades),
        "trading_volume": sv.trading_volume,
        "trading_value": sv.trading_value,
        "best_bid": depth.best_bid,
        "best_ask": depth.best_ask,
        "current_timestamp": int(hbt.current_timestamp),
    }
    open_orders = len(hbt.orders(0))
    hbt.close()
    n = int(min(counters[C_FILLS], cap))
    return wall, final, open_orders, counters, fills_i[:n].copy(), fills_f[:n].copy(), recorder


def load_window(name: str, args) -> tuple[dict, np.ndarray, dict, float]:
    """A window's spec, its converted event array (converted once, then cached), its meta and load time."""
    spec = WINDOWS[name]
    npz, meta = convert_window(name, args.raw_dir, args.data_dir, args.feed_base_latency_ns, args.force_convert)

    t0 = time.perf_counter()
    data = np.load(npz)["data"]
    load_s = time.perf_counter() - t0
    return spec, data, meta, load_s


def run_window(name: str, args) -> dict:
    spec, data, meta, load_s = load_window(name, args)
    return _run_data(name, spec, data, meta, load_s, args)


def run_npz(args) -> dict:
    """Run the grid on a ready-made hftbacktest event file (``--npz``) instead of a converted window.

    The file is used as it is: its local times are not corrected and its rows are not reordered,
    so whoever wrote it decides the feed latency and the EXCH/LOCAL flags.
    """
    return _run_data(args.name, *load_npz(args), args)


def load_npz(args) -> tuple[dict, np.ndarray, dict, float]:
    """The ``--npz`` file's spec, event array, meta (its statistics) and load time."""
    spec = {"files": [args.npz.name], "symbol": None, "tick_size": args.tick_size, "lot_size": args.lot_size}
    t0 = time.perf_counter()
    data = np.load(args.npz)["data"]
    load_s = time.perf_counter() - t0
    stats = _data_stats(data, 0)  # nothing is added: the file's local times are taken as they are
    stats.pop("local_rows")
    meta = {
        "window": args.name,
        "files": spec["files"],
        "npz": str(args.npz),
        **stats,
        "cached": False,
        "convert_s": 0.0,
    }
    return spec, data, meta, load_s


def _run_context(spec: dict, data: np.ndarray, meta: dict, args) -> tuple[tuple[float, float], int, int]:
    """ROI bounds (0.8 x min and 1.2 x max trade price), first quoting time and a step-count hint."""
    trade_px = data["px"][((data["ev"] & 0xFF) == TRADE_EVENT)]
    lo, hi = float(trade_px.min()), float(trade_px.max())
    roi = (
        math.floor(lo * 0.8 / spec["tick_size"]) * spec["tick_size"],
        math.ceil(hi * 1.2 / spec["tick_size"]) * spec["tick_size"],
    )
    start_ts = meta["snapshot_local_ts"] if (args.wait_snapshot and meta["snapshot_local_ts"]) else 0
    span_ns = max(meta["last_exch_ts"], meta["last_local_ts"]) - min(meta["first_exch_ts"], meta["first_local_ts"])
    n_steps_hint = int(span_ns // args.step_ns) + 16
    return roi, start_ts, n_steps_hint


def _run_data(name: str, spec: dict, data: np.ndarray, meta: dict, load_s: float, args) -> dict:
    roi, start_ts, n_steps_hint = _run_context(spec, data, meta, args)

    # JIT warm-up on a small prefix of the same data so the timed loop excludes compilation.
    t0 = time.perf_counter()
    _run_loop(data[: min(len(data), 20_000)].copy(), spec, args, roi, start_ts, n_steps_hint)
    jit_s = time.perf_counter() - t0

    walls = []
    for _ in range(max(1, args.repeat)):
        wall, final, open_orders, counters, fi, ff, recorder = _run_loop(data, spec, args, roi, start_ts, n_steps_hint)
        walls.append(wall)
    if counters[C_OVERFLOW]:
        raise RuntimeError(f"fill buffer overflow ({counters[C_OVERFLOW]}); raise --fill-capacity")
    # Fills are captured per step in hash-map order; sort them by exchange time, then side
    # (buy first) and price so the CSV is deterministic.
    order = np.lexsort((fi[:, 5], -fi[:, 3], fi[:, 0]))
    fi, ff = fi[order], ff[order]

    # ---- fills CSV -----------------------------------------------------------------------
    args.out.mkdir(parents=True, exist_ok=True)
    fills_csv = args.out / f"{name}_fills.csv"
    fee_sum = 0.0
    buys = sells = makers = 0
    buy_qty = sell_qty = 0.0
    with open(fills_csv, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(
            [
                "fill_no",
                "exch_ts",
                "local_recv_ts",
                "local_req_ts",
                "seen_at_step_ts",
                "side",
                "price",
                "price_tick",
                "qty",
                "order_id",
                "maker",
                "fee",
            ]
        )
        for k in range(len(fi)):
            exch_ts, req_ts, seen_ts, side, oid, ptick, maker, _st = (int(x) for x in fi[k])
            qty, px = float(ff[k, 0]), float(ff[k, 1])
            fee = px * qty * (args.maker_fee if maker else args.taker_fee)
            fee_sum += fee
            makers += maker
            if side == BUY:
                buys += 1
                buy_qty += qty
            else:
                sells += 1
                sell_qty += qty
            w.writerow(
                [
                    k,
                    exch_ts,
                    exch_ts + args.response_latency_ns,
                    req_ts,
                    seen_ts,
                    "buy" if side == BUY else "sell",
                    repr(round(px, 10)),
                    ptick,
                    repr(qty),
                    oid,
                    maker,
                    repr(fee),
                ]
            )
    recorder.to_npz(str(args.out / f"{name}_records.npz"))

    mid = (final["best_bid"] + final["best_ask"]) / 2.0
    equity_wo_fee = final["balance"] + final["position"] * mid
    equity = equity_wo_fee - final["fee"]
    src_events = meta["source_events"]
    summary = {
        "window": name,
        "engine": "hftbacktest",
        "engine_version": hftbacktest.__version__,
        "symbol": spec["symbol"],
        "files": spec["files"],
        "settings": {
            "strategy": "hftbacktest 'High-Frequency Grid Trading' (plain grid) example",
            "step_ns": args.step_ns,
            "grid_num": args.grid_num,
            "grid_interval_ticks": args.grid_interval_ticks,
            "half_spread_ticks": args.half_spread_ticks,
            "grid_interval": spec["tick_size"] * args.grid_interval_ticks,
            "half_spread": spec["tick_size"] * args.half_spread_ticks,
            "order_qty": args.order_qty,
            "max_position": args.max_position,
            "tick_size": spec["tick_size"],
            "lot_size": spec["lot_size"],
            "order_latency": {
                "model": "constant_order_latency",
                "entry_ns": args.entry_latency_ns,
                "response_ns": args.response_latency_ns,
            },
            "queue_model": "risk_adverse_queue_model",
            "exchange_model": "no_partial_fill_exchange",
            "fee_model": {"model": "trading_value_fee_model", "maker": args.maker_fee, "taker": args.taker_fee},
            "asset_type": "linear_asset(1.0)",
            "depth": args.depth,
            "roi": list(roi) if args.depth == "roivector" else None,
            "time_in_force": "GTX",
            "wait_for_snapshot": bool(args.wait_snapshot),
            "first_quote_not_before_ts": int(start_ts),
            "feed_base_latency_ns": args.feed_base_latency_ns,
        },
        "conversion": {k: v for k, v in meta.items() if k not in ("key",)},
        "result": {
            "fills": int(counters[C_FILLS]),
            "buy_fills": buys,
            "sell_fills": sells,
            "maker_fills": makers,
            "taker_fills": int(counters[C_FILLS]) - makers,
            "buy_qty": buy_qty,
            "sell_qty": sell_qty,
            "position": final["position"],
            "balance": final["balance"],
            "fee": final["fee"],
            "fee_from_fills": fee_sum,
            "num_trades": final["num_trades"],
            "trading_volume": final["trading_volume"],
            "trading_value": final["trading_value"],
            "final_best_bid": final["best_bid"],
            "final_best_ask": final["best_ask"],
            "final_mid": mid,
            "equity_wo_fee": equity_wo_fee,
            "equity": equity,
            "pnl": equity,  # starts flat with zero balance, so equity == PnL (after fees)
            "open_orders_at_end": open_orders,
            "final_current_timestamp": final["current_timestamp"],
            "counters": {n: int(counters[i]) for i, n in enumerate(COUNTER_NAMES)},
        },
        "timing": {
            "npz_load_s": round(load_s, 4),
            "jit_warmup_s": round(jit_s, 3),
            "loop_wall_s": round(min(walls), 4),
            "loop_wall_s_all": [round(w, 4) for w in walls],
            "loop_wall_s_median": round(float(np.median(walls)), 4),
            "source_events": src_events,
            "rows_processed": meta["rows_total"],
            "events_per_s": round(src_events / min(walls), 1),
            "rows_per_s": round(meta["rows_total"] / min(walls), 1),
            "steps": int(counters[C_STEPS]),
        },
        "host": {"python": platform.python_version(), "numpy": np.__version__, "cpu_count": os.cpu_count()},
    }
    (args.out / f"{name}_summary.json").write_text(json.dumps(summary, indent=2))
    return summary


# --------------------------------------------------------------------------------------------
# Sweep: one full run per parameter set, in one process, as a user sweeping with hftbacktest would
# --------------------------------------------------------------------------------------------
SWEEP_KEYS = ("grid_num", "grid_interval_ticks", "half_spread_ticks", "order_qty", "max_position")


def read_sweep_sets(path: Path, args) -> list[dict]:
    """Parameter sets from a JSON list (or {"sets": [...]}) of objects with keys SWEEP_KEYS.

    A key left out takes its command-line value (--grid-num, --grid-interval-ticks, ...).
    """
    raw = json.loads(Path(path).read_text())
    raw = raw["sets"] if isinstance(raw, dict) else raw
    if not isinstance(raw, list) or not raw:
        raise SystemExit(f"{path}: expected a non-empty JSON list of parameter sets")
    sets = []
    for i, s in enumerate(raw):
        unknown = sorted(set(s) - set(SWEEP_KEYS))
        if unknown:
            raise SystemExit(f"{path}: set {i} has unknown key(s) {unknown}; expected {list(SWEEP_KEYS)}")
        sets.append(
            {
                "grid_num": int(s.get("grid_num", args.grid_num)),
                "grid_interval_ticks": s.get("grid_interval_ticks", args.grid_interval_ticks),
                "half_spread_ticks": s.get("half_spread_ticks", args.half_spread_ticks),
                "order_qty": float(s.get("order_qty", args.order_qty)),
                "max_position": float(s.get("max_position", args.max_position)),
            }
        )
    return sets


def _run_set(data, spec, args, roi, start_ts, n_steps_hint, p, fills_i, fills_f) -> tuple[dict, tuple]:
    """One full run of parameter set `p`: build a fresh backtester on `data`, run the grid, read its state.

    Returns the set's result and the wall times of (build, loop, read + close). The fill buffers are
    reused across sets (only the first `fills` rows are written); the arguments have the types of
    `_run_loop`'s, so the compiled strategy is the same and nothing recompiles between sets.
    """
    t0 = time.perf_counter()
    hbt = _build(data, spec, args, roi)
    recorder = Recorder(1, n_steps_hint)
    counters = np.zeros(C_N, np.int64)
    t1 = time.perf_counter()
    grid_trading(
        hbt,
        recorder.recorder,
        args.step_ns,
        start_ts,
        p["grid_num"],
        float(p["grid_interval_ticks"]),
        float(p["half_spread_ticks"]),
        p["order_qty"],
        p["max_position"],
        fills_i,
        fills_f,
        counters,
    )
    t2 = time.perf_counter()
    sv = hbt.state_values(0)
    res = {
        "fills": int(counters[C_FILLS]),
        "num_trades": int(sv.num_trades),
        "position": sv.position,
        "balance": sv.balance,
        "fee": sv.fee,
        "steps": int(counters[C_STEPS]),
        "orders_submitted": int(counters[C_SUBMIT_BUY] + counters[C_SUBMIT_SELL]),
        "cancels_submitted": int(counters[C_CANCEL]),
        "orders_expired_gtx": int(counters[C_EXPIRED]),
        "fill_buffer_overflow": int(counters[C_OVERFLOW]),
    }
    hbt.close()
    t3 = time.perf_counter()
    return res, (t1 - t0, t2 - t1, t3 - t2)


def run_sweep(name: str, spec: dict, data: np.ndarray, meta: dict, load_s: float, args) -> dict:
    """Every set of ``--sweep-file`` on the loaded data, one fresh backtester per set; ``--repeat`` passes.

    The data is loaded (and for a window converted) once; the strategy is JIT-compiled once on a
    20 000-row prefix before the first pass (reported as jit_warmup_s). Each pass then runs every
    set in order: build the backtester from the event array, run the loop, read the final state.
    A pass's total_s is its wall time from the first build to the last close. Writes
    ``<out>/<name>_sweep.json``.
    """
    sets = read_sweep_sets(args.sweep_file, args)
    roi, start_ts, n_steps_hint = _run_context(spec, data, meta, args)
    cap = args.fill_capacity
    fills_i = np.zeros((cap, 8), np.int64)
    fills_f = np.zeros((cap, 2), np.float64)
    ctx = (spec, args, roi, start_ts, n_steps_hint)

    t0 = time.perf_counter()
    _run_set(data[: min(len(data), 20_000)].copy(), *ctx, sets[0], fills_i, fills_f)
    jit_s = time.perf_counter() - t0

    passes, times, results, differs = [], [[] for _ in sets], None, 0
    for _ in range(max(1, args.repeat)):
        out = []
        t0 = time.perf_counter()
        for i, p in enumerate(sets):
            r, t = _run_set(data, *ctx, p, fills_i, fills_f)
            times[i].append(t)
            out.append(r)
        total = time.perf_counter() - t0
        last = [t[-1] for t in times]
        passes.append(
            {
                "total_s": round(total, 4),
                "build_s": round(sum(t[0] for t in last), 4),
                "loop_s": round(sum(t[1] for t in last), 4),
                "read_close_s": round(sum(t[2] for t in last), 4),
            }
        )
        if results is None:
            results = out
        else:  # hftbacktest is deterministic up to the last bits of balance (hash-map order of sums)
            key = ("fills", "position", "steps", "orders_submitted", "cancels_submitted")
            differs += sum(any(a[k] != b[k] for k in key) for a, b in zip(results, out, strict=True))
    overflow = sum(r["fill_buffer_overflow"] for r in results)
    if overflow:
        raise RuntimeError(f"fill buffer overflow ({overflow}); raise --fill-capacity")
    for r, p, t in zip(results, sets, times, strict=True):
        r["params"] = p
        r["build_s_min"] = round(min(x[0] for x in t), 5)
        r["loop_s_min"] = round(min(x[1] for x in t), 5)
        r["read_close_s_min"] = round(min(x[2] for x in t), 5)

    best = min(range(len(passes)), key=lambda k: passes[k]["total_s"])
    src_events = meta["source_events"]
    summary = {
        "window": name,
        "engine": "hftbacktest",
        "engine_version": hftbacktest.__version__,
        "symbol": spec["symbol"],
        "files": spec["files"],
        "settings": {
            "strategy": "hftbacktest 'High-Frequency Grid Trading' (plain grid) example, one full run per set",
            "step_ns": args.step_ns,
            "tick_size": spec["tick_size"],
            "lot_size": spec["lot_size"],
            "order_latency": {
                "model": "constant_order_latency",
                "entry_ns": args.entry_latency_ns,
                "response_ns": args.response_latency_ns,
            },
            "queue_model": "risk_adverse_queue_model",
            "exchange_model": "no_partial_fill_exchange",
            "fee_model": {"model": "trading_value_fee_model", "maker": args.maker_fee, "taker": args.taker_fee},
            "depth": args.depth,
            "roi": list(roi) if args.depth == "roivector" else None,
            "wait_for_snapshot": bool(args.wait_snapshot),
            "first_quote_not_before_ts": int(start_ts),
            "feed_base_latency_ns": args.feed_base_latency_ns,
        },
        "conversion": {k: v for k, v in meta.items() if k not in ("key",)},
        "sets": results,
        "timing": {
            "npz_load_s": round(load_s, 4),
            "jit_warmup_s": round(jit_s, 3),
            "sets": len(sets),
            "passes": passes,
            "best_pass": best,
            "total_s": passes[best]["total_s"],
            "total_s_all": [q["total_s"] for q in passes],
            "per_set_min_sum_s": round(sum(min(sum(x) for x in t) for t in times), 4),
            "source_events": src_events,
            "rows_processed": meta["rows_total"],
            "set_events_per_s": round(len(sets) * src_events / passes[best]["total_s"], 1),
            "sets_differing_between_passes": differs,
        },
        "host": {"python": platform.python_version(), "numpy": np.__version__, "cpu_count": os.cpu_count()},
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{name}_sweep.json").write_text(json.dumps(summary, indent=1))
    return summary


def add_common_args(p: argparse.ArgumentParser) -> None:
    """The options every peer script takes: the datasets, where their data is, and the venue's latencies,
    fees, decision step, depth and snapshot wait (hftbacktest_taker.py takes them too)."""
    p.add_argument("--out", type=Path, required=True, help="output directory")
    p.add_argument(
        "--window", action="append", choices=sorted(WINDOWS) + ["all"], help="window to run (repeatable; default: all)"
    )
    p.add_argument("--raw-dir", type=Path, default=DEFAULT_RAW_DIR, help="raw Binance captures (default: %(default)s)")
    p.add_argument(
        "--data-dir", type=Path, default=DEFAULT_DATA_DIR, help="converted .npz cache (default: %(default)s)"
    )
    p.add_argument("--force-convert", action="store_true", help="ignore the .npz cache")
    p.add_argument(
        "--npz",
        type=Path,
        help="run on this hftbacktest event file (npz with a 'data' array) instead of the windows; "
        "needs --tick-size and --lot-size",
    )
    p.add_argument("--tick-size", type=float, help="with --npz: the instrument's tick size")
    p.add_argument("--lot-size", type=float, help="with --npz: the instrument's lot size")
    p.add_argument("--name", help="with --npz: the outputs' name prefix (default: the file's stem)")
    p.add_argument(
        "--feed-base-latency-ns",
        type=int,
        default=0,
        help="convert(base_latency=...): added after the clock-offset correction (default: %(default)s)",
    )
    p.add_argument("--entry-latency-ns", type=int, default=10_000_000, help="order entry latency (default: 10 ms)")
    p.add_argument(
        "--response-latency-ns", type=int, default=10_000_000, help="order response latency (default: 10 ms)"
    )
    p.add_argument(
        "--maker-fee", type=float, default=0.0002, help="maker fee rate (default: %(default)s, Binance VIP0)"
    )
    p.add_argument(
        "--taker-fee", type=float, default=0.0005, help="taker fee rate (default: %(default)s, Binance VIP0)"
    )
    p.add_argument("--step-ns", type=int, default=100_000_000, help="decision interval (default: 100 ms)")
    p.add_argument(
        "--depth",
        choices=["roivector", "hashmap"],
        default="roivector",
        help="ROIVectorMarketDepthBacktest (tutorial) or HashMapMarketDepthBacktest (default: %(default)s)",
    )
    p.add_argument(
        "--no-wait-snapshot",
        dest="wait_snapshot",
        action="store_false",
        help="act from the first step with a two-sided book, before the in-file snapshot initialised it",
    )


def datasets(p: argparse.ArgumentParser, args, also_needed: tuple[str, ...] = ()) -> list[str]:
    """The datasets `args` ask for: --npz's (named by --name or the file's stem), or the windows (default: all).
    --npz excludes --window and needs --tick-size, --lot-size and the options named in `also_needed`."""
    if args.npz is None:
        return list(WINDOWS) if not args.window or "all" in args.window else list(dict.fromkeys(args.window))
    if args.window:
        p.error("--npz and --window exclude each other")
    needed = ("tick_size", "lot_size", *also_needed)
    if any(getattr(args, k) is None for k in needed):
        p.error("--npz needs " + ", ".join("--" + k.replace("_", "-") for k in needed))
    args.name = args.name or args.npz.name.removesuffix(".npz")
    return [args.name]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(p)
    p.add_argument("--grid-num", type=int, default=20, help="orders per side (default: %(default)s)")
    p.add_argument("--grid-interval-ticks", type=int, default=10, help="grid interval in ticks (default: %(default)s)")
    p.add_argument("--half-spread-ticks", type=int, default=20, help="half spread in ticks (default: %(default)s)")
    p.add_argument("--order-qty", type=float, default=0.1, help="order quantity (default: %(default)s)")
    p.add_argument(
        "--max-position", type=float, default=5.0, help="max |position| to keep quoting a side (default: %(default)s)"
    )
    p.add_argument(
        "--repeat",
        type=int,
        default=5,
        help="timed runs of the loop (fresh backtester each; min wall time reported; default: %(default)s)",
    )
    p.add_argument("--fill-capacity", type=int, default=2_000_000, help="max fills recorded (default: %(default)s)")
    p.add_argument(
        "--sweep-file",
        type=Path,
        help="sweep mode: run every parameter set of this JSON list (keys grid_num, grid_interval_ticks, "
        "half_spread_ticks, order_qty, max_position; missing keys take the options' values) on one window or "
        "--npz, a fresh backtester per set, --repeat passes; writes <out>/<name>_sweep.json",
    )
    args = p.parse_args(argv)
    names = datasets(p, args)

    print(f"hftbacktest {hftbacktest.__version__}, numpy {np.__version__}; out={args.out}")
    if args.sweep_file is not None:
        if len(names) != 1:
            p.error("--sweep-file runs on one dataset: give one --window or --npz")
        name = names[0]
        spec, data, meta, load_s = load_npz(args) if args.npz else load_window(name, args)
        s = run_sweep(name, spec, data, meta, load_s, args)
        t = s["timing"]
        print(
            f"[{name}] sweep of {t['sets']} sets x {t['source_events']:,} events: best of {len(t['passes'])} passes "
            f"{t['total_s']:.2f} s (all {t['total_s_all']}), {t['set_events_per_s'] / 1e6:.2f} M set-events/s; "
            f"build {t['passes'][t['best_pass']]['build_s']:.2f} s, loop {t['passes'][t['best_pass']]['loop_s']:.2f} s; "
            f"jit {t['jit_warmup_s']:.1f} s, npz load {t['npz_load_s']:.3f} s",
            flush=True,
        )
        return 0
    hdr = f"{'window':<18}{'events':>10}{'fills':>8}{'pos':>8}{'fee':>10}{'PnL':>12}{'loop s':>9}{'events/s':>12}"
    rows = []
    for name in names:
        s = run_npz(args) if args.npz else run_window(name, args)
        r, t = s["result"], s["timing"]
        rows.append(
            f"{name:<18}{t['source_events']:>10}{r['fills']:>8}{r['position']:>8.3f}{r['fee']:>10.2f}"
            f"{r['pnl']:>12.2f}{t['loop_wall_s']:>9.3f}{t['events_per_s']:>12.0f}"
        )
        print(
            f"[{name}] conv {'none (--npz)' if args.npz else 'cached' if s['conversion']['cached'] else str(s['conversion']['convert_s']) + ' s'}; "
            f"fills {r['fills']} (buy {r['buy_fills']} / sell {r['sell_fills']}, maker {r['maker_fills']}); "
            f"pos {r['position']:.3f} equity {r['equity']:.2f} (w/o fee {r['equity_wo_fee']:.2f}, fee {r['fee']:.2f}); "
            f"loop {t['loop_wall_s']:.3f} s, {t['events_per_s']:.0f} ev/s, jit {t['jit_warmup_s']:.1f} s",
            flush=True,
        )
    print(hdr)
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
