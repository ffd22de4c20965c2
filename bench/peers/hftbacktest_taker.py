#!/usr/bin/env python3
"""Taker-order probe on hftbacktest 2.4.4's PartialFillExchange: IOC and market orders walking the book.

Runs INSIDE the peer virtual environment created by ``setup_hftbacktest.sh``::

    bench/peers/.venv-hftbacktest/bin/python bench/peers/hftbacktest_taker.py --out DIR [--window NAME ...]

Same data (the ``bench/peers/data/<window>.npz`` cache of ``hftbacktest_grid.py``), latencies, fees,
queue model, depth and 100 ms decision clock as the grid peer, but ``partial_fill_exchange()``. The
probe: at every ready decision (local book two-sided, and not before the in-file snapshot has been
received, as in the grid peer) count k = 0, 1, ...; at k % 50 == 0 send ONE taker order, n = k // 50,
id n + 1: BUY when n is even, SELL when odd; n % 4 in (0, 1): IOC LIMIT at best ask + 5 ticks (buy) /
best bid - 5 ticks (sell); n % 4 in (2, 3): MARKET. No other orders.

hftbacktest 2.4.4 does not expose the exchange's per-level fills (the walk calls ``fill::<false>``
once per level without a response; the one response carries only the last level; ``state_values``
is the LOCAL state). The script therefore runs the backtest twice on the same data:

1. the probe run: the orders above; per order it records what hftbacktest shows the strategy (status,
   ``leaves_qty`` = the exchange's remainder, the last level's ``exec_price_tick``/``exec_qty``, the
   local state deltas);
2. the shadow run: the same decisions, but instead of order n a ladder of IOC orders of the same
   side and quantity whose limits step through every tick the walk can reach. hftbacktest's depth
   is never consumed by our fills, so every rung walks the same exchange book at the same arrival,
   and rung t reports the fill at tick t of the walk (its last level) exactly as hftbacktest
   computes it. The levels of order n are those rung reports (deduplicated by tick).

Outputs in DIR: ``<window>_taker_orders.csv`` (one row per order), ``<window>_taker_fills.csv`` (one
row per level fill at the exchange side, from the shadow run), ``<window>_taker_summary.json``.
``--npz PATH --tick-size X --lot-size Y --qty Q [--name NAME]`` runs on a ready-made event file instead.
See ``bench/peers/README.md`` ("Taker probe").
"""

from __future__ import annotations

import argparse
import csv
import json
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
        GTC,
        LIMIT,
        MARKET,
        SELL,
    )
    from hftbacktest.order import IOC  # not re-exported by the 2.4.4 package root
except ImportError as exc:  # pragma: no cover - only hit when run outside the peer venv
    sys.exit(
        f"cannot import hftbacktest ({exc}); run this with bench/peers/.venv-hftbacktest/bin/python "
        "after `bash bench/peers/setup_hftbacktest.sh`"
    )
from numba import njit

sys.path.insert(0, str(Path(__file__).resolve().parent))
from hftbacktest_grid import (  # noqa: E402
    _build,
    _run_context,
    add_common_args,
    datasets,
    load_npz,
    load_window,
)

# Order status codes (hftbacktest.order): NONE=0 NEW=1 EXPIRED=2 FILLED=3 CANCELED=4 PARTIALLY_FILLED=5
_ST_NONE = 0
_ST_EXPIRED = 2
_ST_FILLED = 3
STATUS_NAMES = {0: "NONE", 1: "NEW", 2: "EXPIRED", 3: "FILLED", 4: "CANCELED", 5: "PARTIALLY_FILLED", 6: "REJECTED"}
KIND_IOC, KIND_MARKET = 0, 1
SHADOW_ID_BASE = 1000  # shadow rung id = (n + 1) * SHADOW_ID_BASE + rung index
DEFAULT_QTY = {"BTCUSDT": 10.0, "ETHUSDT": 100.0}  # README "Taker probe": why not 1 and 10

# Order record columns (int64 / float64 arrays filled by the jitted loop).
(
    OI_ID,
    OI_SEND_TS,
    OI_SIDE,
    OI_KIND,
    OI_LIMIT,
    OI_BID,
    OI_ASK,
    OI_K,
    OI_STATUS,
    OI_EXCH_TS,
    OI_EXEC_TICK,
    OI_SEEN_TS,
    OI_MAKER,
    OI_RUNGS,
    OI_N,
) = range(15)
(OF_QTY, OF_LEAVES, OF_EXEC_QTY, OF_POS0, OF_BAL0, OF_FEE0, OF_NT0, OF_POS1, OF_BAL1, OF_FEE1, OF_NT1, OF_N) = range(12)
# Shadow rung columns.
SI_N, SI_ID, SI_LIMIT, SI_STATUS, SI_EXCH_TS, SI_EXEC_TICK, SI_SEEN_TS, SI_NCOL = range(8)
SF_LEAVES, SF_EXEC_QTY, SF_NCOL = range(3)
# Counters.
C_STEPS, C_READY, C_ORDERS, C_RUNGS, C_RUNGS_SEEN, C_SUBMIT_ERR, C_ODD_STATUS, C_OVERFLOW, C_LAST_TS, C_N = range(10)
COUNTER_NAMES = [
    "steps",
    "ready_decisions",
    "orders_sent",
    "shadow_rungs_sent",
    "shadow_rungs_captured",
    "submit_errors",
    "odd_status_responses",
    "buffer_overflow",
    "last_step_ts",
]


@njit
def taker_probe(
    hbt,
    step_ns,
    start_ts,
    qty,
    every,
    ioc_offset,
    shadow,
    margin,
    market_ticks,
    oi,
    of,
    si,
    sf,
    counters,
):
    """The probe loop; with ``shadow`` the ladder of IOC rungs replaces every probe order.

    A decision is ready when ``current_timestamp >= start_ts`` and the local book has a best bid and a
    best ask. Responses are captured after each ``elapse`` (before ``clear_inactive_orders``).
    """
    asset_no = 0
    tick = hbt.depth(asset_no).tick_size
    k = 0
    now = 0
    cap_o = oi.shape[0]
    cap_s = si.shape[0]
    while True:
        rc = hbt.elapse(step_ns)
        if rc == 0 or now == 0:
            now = hbt.current_timestamp
        else:
            now += step_ns  # the elapse that ran out of data: stamp with its target (as the grid peer)
        # ---- capture every order that got its response during this elapse
        sv = hbt.state_values(asset_no)
        values = hbt.orders(asset_no).values()
        while values.has_next():
            order = values.get()
            st = order.status
            if st == _ST_NONE:
                continue
            if st != _ST_FILLED and st != _ST_EXPIRED:
                counters[C_ODD_STATUS] += 1
            oid = order.order_id
            if shadow:
                m = counters[C_RUNGS_SEEN]
                if m < cap_s:
                    si[m, SI_N] = oid // SHADOW_ID_BASE - 1
                    si[m, SI_ID] = oid
                    si[m, SI_LIMIT] = order.price_tick
                    si[m, SI_STATUS] = st
                    si[m, SI_EXCH_TS] = order.exch_timestamp
                    si[m, SI_EXEC_TICK] = order.exec_price_tick
                    si[m, SI_SEEN_TS] = now
                    sf[m, SF_LEAVES] = order.leaves_qty
                    sf[m, SF_EXEC_QTY] = order.exec_qty
                else:
                    counters[C_OVERFLOW] += 1
                counters[C_RUNGS_SEEN] += 1
            else:
                n = oid - 1
                if n < cap_o:
                    oi[n, OI_STATUS] = st
                    oi[n, OI_EXCH_TS] = order.exch_timestamp
                    oi[n, OI_EXEC_TICK] = order.exec_price_tick
                    oi[n, OI_SEEN_TS] = now
                    oi[n, OI_MAKER] = 1 if order.arr[0].maker else 0
                    of[n, OF_LEAVES] = order.leaves_qty
                    of[n, OF_EXEC_QTY] = order.exec_qty
                    of[n, OF_POS1] = sv.position
                    of[n, OF_BAL1] = sv.balance
                    of[n, OF_FEE1] = sv.fee
                    of[n, OF_NT1] = sv.num_trades
        hbt.clear_inactive_orders(asset_no)
        if rc != 0:
            break
        counters[C_STEPS] += 1
        counters[C_LAST_TS] = now
        if now < start_ts:
            continue
        depth = hbt.depth(asset_no)
        if not (np.isfinite(depth.best_bid) and np.isfinite(depth.best_ask)):
            continue
        counters[C_READY] += 1
        if k % every == 0:
            n = k // every
            bid = depth.best_bid_tick
            ask = depth.best_ask_tick
            side = BUY if n % 2 == 0 else SELL
            kind = KIND_IOC if n % 4 < 2 else KIND_MARKET
            limit = ask + ioc_offset if side == BUY else bid - ioc_offset
            if n < cap_o:  # the decision (both runs)
                oi[n, OI_ID] = n + 1
                oi[n, OI_SEND_TS] = now
                oi[n, OI_SIDE] = side
                oi[n, OI_KIND] = kind
                oi[n, OI_LIMIT] = limit
                oi[n, OI_BID] = bid
                oi[n, OI_ASK] = ask
                oi[n, OI_K] = k
                of[n, OF_QTY] = qty
            if not shadow:
                if n < cap_o:
                    of[n, OF_POS0] = sv.position
                    of[n, OF_BAL0] = sv.balance
                    of[n, OF_FEE0] = sv.fee
                    of[n, OF_NT0] = sv.num_trades
                    if kind == KIND_IOC:
                        price = limit * tick
                        tif = IOC
                        otype = LIMIT
                    else:  # the exchange ignores a market order's price; the touch seen is passed
                        price = (ask if side == BUY else bid) * tick
                        tif = GTC
                        otype = MARKET
                    if side == BUY:
                        rc2 = hbt.submit_buy_order(asset_no, n + 1, price, qty, tif, otype, False)
                    else:
                        rc2 = hbt.submit_sell_order(asset_no, n + 1, price, qty, tif, otype, False)
                    if rc2 == 0:
                        counters[C_ORDERS] += 1
                    else:
                        counters[C_SUBMIT_ERR] += 1
                else:
                    counters[C_OVERFLOW] += 1
            else:
                # The rungs: IOC limits through every tick the walk can reach, from `margin` ticks
                # behind the touch seen (the exchange's touch at arrival may be there) to the order's
                # limit (IOC) or `margin` + the market walk's reach beyond the touch seen (MARKET).
                if side == BUY:
                    lo = ask - margin
                    hi = limit if kind == KIND_IOC else ask + margin + market_ticks
                else:
                    lo = limit if kind == KIND_IOC else bid - margin - market_ticks
                    hi = bid + margin
                j = 0
                for t in range(lo, hi + 1):
                    oid = (n + 1) * SHADOW_ID_BASE + j
                    if side == BUY:
                        rc2 = hbt.submit_buy_order(asset_no, oid, t * tick, qty, IOC, LIMIT, False)
                    else:
                        rc2 = hbt.submit_sell_order(asset_no, oid, t * tick, qty, IOC, LIMIT, False)
                    if rc2 == 0:
                        counters[C_RUNGS] += 1
                    else:
                        counters[C_SUBMIT_ERR] += 1
                    j += 1
                counters[C_ORDERS] += 1
        k += 1
    return True


def _run(data, spec, args, roi, start_ts, n_steps_hint, qty: float, shadow: bool):
    """One pass of the probe (or its shadow) over `data`; returns the raw records, counters and wall time."""
    if 2 * args.margin_ticks + args.market_ticks + args.ioc_offset_ticks + 2 >= SHADOW_ID_BASE:
        raise SystemExit("--margin-ticks/--market-ticks too large for the shadow id scheme")
    cap_o = n_steps_hint // args.every + 16
    oi = np.zeros((cap_o, OI_N), np.int64)
    of = np.zeros((cap_o, OF_N), np.float64)
    cap_s = cap_o * (2 * args.margin_ticks + args.market_ticks + args.ioc_offset_ticks + 2) if shadow else 1
    si = np.zeros((cap_s, SI_NCOL), np.int64)
    sf = np.zeros((cap_s, SF_NCOL), np.float64)
    counters = np.zeros(C_N, np.int64)
    hbt = _build(data, spec, args, roi, partial_fill=True)
    t0 = time.perf_counter()
    taker_probe(
        hbt,
        args.step_ns,
        start_ts,
        qty,
        args.every,
        args.ioc_offset_ticks,
        shadow,
        args.margin_ticks,
        args.market_ticks,
        oi,
        of,
        si,
        sf,
        counters,
    )
    wall = time.perf_counter() - t0
    sv = hbt.state_values(0)
    final = {
        "position": sv.position,
        "balance": sv.balance,
        "fee": sv.fee,
        "num_trades": int(sv.num_trades),
        "trading_volume": sv.trading_volume,
        "trading_value": sv.trading_value,
    }
    hbt.close()
    if counters[C_OVERFLOW]:
        raise RuntimeError(f"record buffer overflow ({counters[C_OVERFLOW]})")
    n_orders = int(-(-counters[C_READY] // args.every))  # probe decisions: ready decisions with k % every == 0
    n_rungs = int(counters[C_RUNGS_SEEN])
    return oi[:n_orders].copy(), of[:n_orders].copy(), si[:n_rungs].copy(), sf[:n_rungs].copy(), counters, final, wall


def _market_range(side: int, touch: int, market_ticks: int) -> tuple[int, int]:
    """Ticks a PartialFillExchange market order walks from the exchange touch (inclusive bounds).

    partialfillexchange.rs ack_new, OrdType::Market: a buy walks ``best_ask..best_ask + 100`` (end
    excluded), a sell ``(best_bid - 100..=best_bid).rev()`` (101 ticks).
    """
    if side == BUY:
        return touch, touch + market_ticks - 1
    return touch - market_ticks, touch


def derive_levels(order: dict, rungs: list[dict], market_ticks: int) -> dict:
    """Order n's per-level fills from its shadow rungs, with the coverage checks.

    A rung with limit t that filled anything reports (exec_price_tick, exec_qty) of the LAST level its
    walk reached, i.e. the walk's fill at that tick. The exchange's touch at arrival is the first tick
    any rung filled at. The levels of the order are the rung reports whose tick lies within the
    order's reach: up to its limit (IOC) or the market range from that touch (MARKET).
    """
    side = order["side"]
    rungs = sorted(rungs, key=lambda r: r["limit"], reverse=(side == SELL))  # walk direction
    filled = [r for r in rungs if r["exec_qty"] > 0.0]
    res = {"coverage_ok": True, "exch_touch": None, "levels": [], "rung_status_at_reach": None}
    if not rungs:
        res["coverage_ok"] = False
        return res
    # The rung behind the touch seen (first in walk order) must not fill: else the exchange touch lay
    # beyond the ladder and levels may be missing.
    if rungs[0]["exec_qty"] > 0.0:
        res["coverage_ok"] = False
    if not filled:
        return res
    touch = filled[0]["exec_tick"]
    res["exch_touch"] = touch
    if order["kind"] == KIND_IOC:
        reach = order["limit"]
    else:
        lo, hi = _market_range(side, touch, market_ticks)
        reach = hi if side == BUY else lo
        last_rung = rungs[-1]["limit"]
        if (side == BUY and last_rung < reach) or (side == SELL and last_rung > reach):
            res["coverage_ok"] = False
    levels: dict[int, float] = {}
    for r in filled:
        t = r["exec_tick"]
        beyond = t > reach if side == BUY else t < reach
        limit_beyond = r["limit"] > reach if side == BUY else r["limit"] < reach
        if beyond or limit_beyond:
            continue
        if t in levels and levels[t] != r["exec_qty"]:
            raise RuntimeError(f"order {order['order_id']}: rungs disagree at tick {t}: {levels[t]} vs {r['exec_qty']}")
        levels[t] = r["exec_qty"]
    at_reach = [r for r in rungs if r["limit"] == reach]
    res["rung_status_at_reach"] = at_reach[0]["status"] if at_reach else None
    res["levels"] = sorted(levels.items(), reverse=(side == SELL))
    return res


def _qty_for(spec: dict, args) -> float:
    if args.qty is not None:
        return args.qty
    sym = spec.get("symbol")
    if sym not in DEFAULT_QTY:
        raise SystemExit(f"no default --qty for symbol {sym!r}: pass --qty")
    return DEFAULT_QTY[sym]


def run_data(name: str, spec: dict, data: np.ndarray, meta: dict, load_s: float, args) -> dict:
    roi, start_ts, n_steps_hint = _run_context(spec, data, meta, args)
    qty = _qty_for(spec, args)
    tick, lot = spec["tick_size"], spec["lot_size"]
    if abs(round(qty / lot) * lot - qty) > 1e-9 * max(1.0, qty):
        raise SystemExit(f"--qty {qty} is not a multiple of the lot {lot}")

    t0 = time.perf_counter()
    _run(data[: min(len(data), 20_000)].copy(), spec, args, roi, start_ts, n_steps_hint, qty, False)
    _run(data[: min(len(data), 20_000)].copy(), spec, args, roi, start_ts, n_steps_hint, qty, True)
    jit_s = time.perf_counter() - t0

    oi, of, _, _, counters, final, wall = _run(data, spec, args, roi, start_ts, n_steps_hint, qty, False)
    if args.no_shadow:
        soi, si, sf, scounters, swall = None, np.zeros((0, SI_NCOL), np.int64), np.zeros((0, SF_NCOL)), None, 0.0
    else:
        soi, _, si, sf, scounters, _, swall = _run(data, spec, args, roi, start_ts, n_steps_hint, qty, True)

    # ---- shadow rungs per order
    by_order: dict[int, list[dict]] = {}
    for m in range(len(si)):
        by_order.setdefault(int(si[m, SI_N]), []).append(
            {
                "limit": int(si[m, SI_LIMIT]),
                "status": int(si[m, SI_STATUS]),
                "exch_ts": int(si[m, SI_EXCH_TS]),
                "exec_tick": int(si[m, SI_EXEC_TICK]),
                "exec_qty": float(sf[m, SF_EXEC_QTY]),
                "leaves": float(sf[m, SF_LEAVES]),
            }
        )

    args.out.mkdir(parents=True, exist_ok=True)
    rows, fills = [], []
    stats = {
        "orders": len(oi),
        "ioc": 0,
        "market": 0,
        "resolved": 0,
        "status": {},
        "with_fill": 0,
        "fully_filled": 0,
        "levels_walked_hist": {},
        "shadow_coverage_failures": 0,
        "shadow_total_matches_exchange_total": 0,
        "shadow_last_level_matches_response": 0,
        "local_state_matches_last_level": 0,
        "maker_responses": 0,
        "exch_ts_minus_send_ns": set(),
    }
    for n in range(len(oi)):
        o = {
            "order_id": int(oi[n, OI_ID]),
            "side": int(oi[n, OI_SIDE]),
            "kind": int(oi[n, OI_KIND]),
            "limit": int(oi[n, OI_LIMIT]),
        }
        st = int(oi[n, OI_STATUS])
        kind = "IOC" if o["kind"] == KIND_IOC else "MARKET"
        stats["ioc" if kind == "IOC" else "market"] += 1
        stats["status"][STATUS_NAMES.get(st, str(st))] = stats["status"].get(STATUS_NAMES.get(st, str(st)), 0) + 1
        resolved = st != _ST_NONE
        stats["resolved"] += resolved
        q = float(of[n, OF_QTY])
        leaves = float(of[n, OF_LEAVES]) if resolved else float("nan")
        exch_total = q - leaves if resolved else float("nan")
        if resolved:
            stats["exch_ts_minus_send_ns"].add(int(oi[n, OI_EXCH_TS] - oi[n, OI_SEND_TS]))
        d_pos = float(of[n, OF_POS1] - of[n, OF_POS0]) if resolved else float("nan")
        d_bal = float(of[n, OF_BAL1] - of[n, OF_BAL0]) if resolved else float("nan")
        d_fee = float(of[n, OF_FEE1] - of[n, OF_FEE0]) if resolved else float("nan")
        d_nt = int(of[n, OF_NT1] - of[n, OF_NT0]) if resolved else -1
        last_tick, last_qty = int(oi[n, OI_EXEC_TICK]), float(of[n, OF_EXEC_QTY])
        sign = 1.0 if o["side"] == BUY else -1.0
        # Local state: hftbacktest's local side applies a response only when its status is FILLED,
        # with that response's (last-level) exec qty and price.
        exp_pos = sign * last_qty if st == _ST_FILLED else 0.0
        exp_fee = args.taker_fee * (1.0 * (last_tick * tick) * last_qty) if st == _ST_FILLED else 0.0
        local_ok = resolved and abs(d_pos - exp_pos) <= 1e-9 and abs(d_fee - exp_fee) <= 1e-6 * max(1.0, exp_fee)
        local_ok = local_ok and d_nt == (1 if st == _ST_FILLED else 0)
        stats["local_state_matches_last_level"] += bool(local_ok)
        stats["maker_responses"] += bool(resolved and oi[n, OI_MAKER])

        lv = {"coverage_ok": None, "exch_touch": None, "levels": []}
        if not args.no_shadow:
            lv = derive_levels(o, by_order.get(n, []), args.market_ticks)
            stats["shadow_coverage_failures"] += not lv["coverage_ok"]
        levels = lv["levels"]
        sh_total = sum(x for _, x in levels)
        sh_value = sum(t * tick * x for t, x in levels)
        sh_fee = sum(args.taker_fee * (1.0 * (t * tick) * x) for t, x in levels)
        if not args.no_shadow and resolved:
            tot_ok = abs(sh_total - exch_total) <= 1e-9 * max(1.0, q)
            stats["shadow_total_matches_exchange_total"] += tot_ok
            last_ok = (not levels and last_qty == 0.0) or (
                bool(levels) and levels[-1][0] == last_tick and levels[-1][1] == last_qty
            )
            stats["shadow_last_level_matches_response"] += last_ok
        else:
            tot_ok = last_ok = None
        nlev = len(levels)
        stats["levels_walked_hist"][nlev] = stats["levels_walked_hist"].get(nlev, 0) + 1
        stats["with_fill"] += nlev > 0
        full = resolved and round(leaves / lot) == 0
        stats["fully_filled"] += bool(full)
        exch_ts = int(oi[n, OI_EXCH_TS]) if resolved else ""
        for i, (t, x) in enumerate(levels):
            fills.append(
                [
                    o["order_id"],
                    exch_ts,
                    "buy" if o["side"] == BUY else "sell",
                    kind,
                    i,
                    t,
                    repr(round(t * tick, 10)),
                    repr(x),
                    repr(args.taker_fee * (1.0 * (t * tick) * x)),
                ]
            )
        rows.append(
            [
                o["order_id"],
                int(oi[n, OI_K]),
                int(oi[n, OI_SEND_TS]),
                "buy" if o["side"] == BUY else "sell",
                kind,
                repr(q),
                o["limit"] if kind == "IOC" else "",
                int(oi[n, OI_BID]),
                int(oi[n, OI_ASK]),
                STATUS_NAMES.get(st, str(st)),
                exch_ts,
                int(oi[n, OI_SEEN_TS]) if resolved else "",
                repr(exch_total),
                repr(leaves),
                last_tick if resolved else "",
                repr(last_qty),
                repr(d_pos),
                repr(d_bal),
                repr(d_fee),
                d_nt,
                lv["exch_touch"] if lv["exch_touch"] is not None else "",
                nlev,
                levels[0][0] if levels else "",
                levels[-1][0] if levels else "",
                repr(sh_total),
                repr(sh_value / sh_total) if sh_total > 0 else "",
                repr(sh_fee),
                "" if lv["coverage_ok"] is None else int(lv["coverage_ok"]),
                "" if tot_ok is None else int(tot_ok),
                "" if last_ok is None else int(last_ok),
                int(bool(local_ok)),
                int(oi[n, OI_MAKER]) if resolved else "",
            ]
        )
    stats["exch_ts_minus_send_ns"] = sorted(stats["exch_ts_minus_send_ns"])
    stats["levels_walked_hist"] = {str(k): v for k, v in sorted(stats["levels_walked_hist"].items())}
    stats["fills"] = len(fills)
    by_kind = {}
    for kind in ("IOC", "MARKET"):
        mine = [r for r in rows if r[4] == kind]
        nl = [r[21] for r in mine]
        by_kind[kind] = {
            "orders": len(mine),
            "filled": sum(r[9] == "FILLED" for r in mine),
            "expired": sum(r[9] == "EXPIRED" for r in mine),
            "expired_after_partial_fill": sum(r[9] == "EXPIRED" and r[21] > 0 for r in mine),
            "levels_p50": float(np.median(nl)) if nl else None,
            "levels_max": max(nl) if nl else None,
            "level_fills": sum(nl),
        }
    stats["by_kind"] = by_kind
    stats["filled_qty"] = sum(float(r[7]) for r in fills)
    stats["fill_fee"] = sum(float(r[8]) for r in fills)
    if soi is not None:
        same = len(soi) == len(oi) and bool(np.array_equal(soi[:, [OI_K, OI_SEND_TS]], oi[:, [OI_K, OI_SEND_TS]]))
        stats["shadow_decisions_identical"] = same  # soi holds the shadow's decision records

    with open(args.out / f"{name}_taker_orders.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(
            [
                "order_id",
                "k",
                "send_ts",
                "side",
                "kind",
                "qty",
                "limit_tick",
                "seen_bid_tick",
                "seen_ask_tick",
                "status",
                "exch_ts",
                "seen_response_at_step_ts",
                "exch_exec_qty",
                "exch_leaves_qty",
                "resp_exec_price_tick",
                "resp_exec_qty",
                "local_d_position",
                "local_d_balance",
                "local_d_fee",
                "local_d_num_trades",
                "exch_touch_tick",
                "levels",
                "first_level_tick",
                "last_level_tick",
                "levels_qty",
                "levels_vwap",
                "levels_fee",
                "shadow_coverage_ok",
                "levels_qty_eq_exch_exec_qty",
                "last_level_eq_response",
                "local_state_eq_last_level",
                "resp_maker",
            ]
        )
        w.writerows(rows)
    with open(args.out / f"{name}_taker_fills.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["order_id", "exch_ts", "side", "kind", "level", "price_tick", "price", "qty", "fee"])
        w.writerows(fills)

    src_events = meta["source_events"]
    summary = {
        "window": name,
        "engine": "hftbacktest",
        "engine_version": hftbacktest.__version__,
        "symbol": spec["symbol"],
        "files": spec["files"],
        "settings": {
            "strategy": "taker probe (bench/peers/README.md 'Taker probe')",
            "step_ns": args.step_ns,
            "every_ready_decisions": args.every,
            "qty": qty,
            "ioc_offset_ticks": args.ioc_offset_ticks,
            "market_walk_ticks": args.market_ticks,
            "shadow_margin_ticks": args.margin_ticks,
            "tick_size": tick,
            "lot_size": lot,
            "order_latency": {
                "model": "constant_order_latency",
                "entry_ns": args.entry_latency_ns,
                "response_ns": args.response_latency_ns,
            },
            "queue_model": "risk_adverse_queue_model",
            "exchange_model": "partial_fill_exchange",
            "fee_model": {"model": "trading_value_fee_model", "maker": args.maker_fee, "taker": args.taker_fee},
            "asset_type": "linear_asset(1.0)",
            "depth": args.depth,
            "roi": list(roi) if args.depth == "roivector" else None,
            "wait_for_snapshot": bool(args.wait_snapshot),
            "first_decision_not_before_ts": int(start_ts),
            "clock_origin_ts": meta["first_exch_ts"],
            "feed_base_latency_ns": args.feed_base_latency_ns,
        },
        "conversion": {k: v for k, v in meta.items() if k not in ("key",)},
        "result": {
            **stats,
            "local_final_state": final,
            "counters": {nm: int(counters[i]) for i, nm in enumerate(COUNTER_NAMES)},
            "shadow_counters": None
            if scounters is None
            else {nm: int(scounters[i]) for i, nm in enumerate(COUNTER_NAMES)},
        },
        "timing": {
            "npz_load_s": round(load_s, 4),
            "jit_warmup_s": round(jit_s, 3),
            "loop_wall_s": round(wall, 4),
            "shadow_loop_wall_s": round(swall, 4),
            "source_events": src_events,
            "rows_processed": meta["rows_total"],
        },
        "host": {"python": platform.python_version(), "numpy": np.__version__, "cpu_count": os.cpu_count()},
    }
    (args.out / f"{name}_taker_summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(p)
    p.add_argument(
        "--qty",
        type=float,
        help="order quantity in base units, a multiple of the lot (default: 10.0 for BTCUSDT, 100.0 for ETHUSDT; "
        "required with --npz)",
    )
    p.add_argument("--every", type=int, default=50, help="one order every N ready decisions (default: %(default)s)")
    p.add_argument("--ioc-offset-ticks", type=int, default=5, help="IOC limit beyond the touch seen (default: 5)")
    p.add_argument(
        "--market-ticks",
        type=int,
        default=100,
        help="hftbacktest's market-order reach (hard-coded 100 in 2.4.4; only for the shadow ladder)",
    )
    p.add_argument(
        "--margin-ticks",
        type=int,
        default=50,
        help="shadow ladder: ticks behind the touch seen (and beyond it for markets) covered (default: 50)",
    )
    p.add_argument("--no-shadow", action="store_true", help="skip the shadow run (no per-level fills)")
    args = p.parse_args(argv)
    names = datasets(p, args, ("qty",))

    print(f"hftbacktest {hftbacktest.__version__}, numpy {np.__version__}; out={args.out}")
    for name in names:
        spec, data, meta, load_s = load_npz(args) if args.npz else load_window(name, args)
        s = run_data(name, spec, data, meta, load_s, args)
        r = s["result"]
        print(
            f"[{name}] qty {s['settings']['qty']}: orders {r['orders']} (IOC {r['ioc']}, MARKET {r['market']}), "
            f"status {r['status']}, level fills {r['fills']}, levels/order {r['levels_walked_hist']}, "
            f"shadow: coverage failures {r['shadow_coverage_failures']}, "
            f"total==exchange {r['shadow_total_matches_exchange_total']}/{r['resolved']}, "
            f"last==response {r['shadow_last_level_matches_response']}/{r['resolved']}; "
            f"local state==last level {r['local_state_matches_last_level']}/{r['resolved']}; "
            f"loop {s['timing']['loop_wall_s']:.2f} s + shadow {s['timing']['shadow_loop_wall_s']:.2f} s",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
