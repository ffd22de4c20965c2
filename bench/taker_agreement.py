"""Agreement with hftbacktest on taker orders (IOC, market): the same probe, data, clocks, latency and fees.

Runs hftbacktest 2.4.4's taker probe (bench/peers/hftbacktest_taker.py, PartialFillExchange, in its own
venv) on the real Binance windows, and the same probe as a Grinder kernel (`taker_probe` below) with
the peer's clock origin, local-time offset, 10 ms + 10 ms latency, fees 2 bp / 5 bp and
`market_walk_ticks=100`. The probe: at every ready decision (100 ms clock; ready = the kernel is
called, i.e. a synced book in Grinder; both sides and the snapshot received in hftbacktest) count
k = 0, 1, ...; at k % 50 == 0 one order n = k // 50: BUY when n is even, SELL when odd; n % 4 in
(0, 1): IOC at best ask + 5 ticks (buy) / best bid - 5 ticks (sell); else MARKET; qty 10 BTC / 100 ETH.

Compares per order (status filled / expired, filled quantity, VWAP, arrival) and per level fill
((order n, price tick, qty) one for one), explains each mismatch, prints a table per window and writes
bench/out/taker_agreement.json. Run:
`.venv/bin/python bench/taker_agreement.py [--window NAME ...] [--qty Q]` (docs/backtest-agreement.md).
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
from numba import njit

sys.path.insert(0, str(Path(__file__).resolve().parent))
from real_windows import REPO, WINDOWS  # noqa: E402

PEERS = REPO / "bench" / "peers"
OUT = REPO / "bench" / "out"
EVERY, IOC_OFFSET, MARKET_TICKS = 50, 5, 100
KIND_IOC, KIND_MARKET = 1, 2  # grinder.core.order_kind.IOC, MARKET
SHIFT = 1 << 32  # a fill's level id = n * SHIFT + the touch the kernel saw (ticks)


@njit(cache=True)
def taker_probe(params, state, now_ns, best_bid, best_ask, bid_qty, ask_qty, tick, lot, position, signals, depth,
                open_side, open_px, open_qty, n_open, out_side, out_px, out_qty, out_level, out_kind):  # fmt: skip
    """params = (qty, every, ioc offset ticks); state[1] counts the calls (ready decisions) k."""
    k = int(state[1])
    state[1] = k + 1
    every = int(params[1])
    if k % every != 0:
        return 0
    n = k // every
    side = 1 if n % 2 == 0 else -1
    touch = best_ask if side > 0 else best_bid
    out_side[0] = side
    if n % 4 < 2:
        out_kind[0] = KIND_IOC
        out_px[0] = touch + side * int(params[2])
    else:
        out_kind[0] = KIND_MARKET
        out_px[0] = touch  # ignored by the venue (its walk starts at the touch at arrival)
    out_qty[0] = params[0]
    out_level[0] = n * SHIFT + touch
    return 1


def run_peer(windows: list[str], out: Path, qty: float | None) -> None:
    """hftbacktest's taker probe on `windows`, a fresh process in its venv; outputs in `out`."""
    py = PEERS / ".venv-hftbacktest" / "bin" / "python"
    if not py.exists():
        subprocess.run(["bash", str(PEERS / "setup_hftbacktest.sh")], check=True, stdout=subprocess.DEVNULL)
    cmd = [str(py), str(PEERS / "hftbacktest_taker.py"), "--out", str(out)]
    for w in windows:
        cmd += ["--window", w]
    if qty is not None:
        cmd += ["--qty", repr(qty)]
    subprocess.run(cmd, check=True)


def peer_records(window: str, out: Path) -> tuple[dict, dict, list[tuple]]:
    """(summary, orders by n, level fills as (n, exch_ts, side, price tick, qty)) of the peer's outputs."""
    summary = json.loads((out / f"{window}_taker_summary.json").read_text())
    orders = {}
    with open(out / f"{window}_taker_orders.csv", newline="") as fh:
        for r in csv.DictReader(fh):
            n = int(r["order_id"]) - 1
            side = 1 if r["side"] == "buy" else -1
            orders[n] = {
                "n": n,
                "send_ts": int(r["send_ts"]),
                "arrival_ts": int(r["exch_ts"]) if r["exch_ts"] else None,
                "side": side,
                "kind": r["kind"],
                "seen_touch": int(r["seen_ask_tick"] if side > 0 else r["seen_bid_tick"]),
                "status": r["status"],
                "filled": float(r["levels_qty"]),
                "vwap": float(r["levels_vwap"]) if r["levels_vwap"] else None,
                "exch_touch": int(r["exch_touch_tick"]) if r["exch_touch_tick"] else None,
                "levels": int(r["levels"]),
            }
    fills = []
    with open(out / f"{window}_taker_fills.csv", newline="") as fh:
        for r in csv.DictReader(fh):
            fills.append(
                (
                    int(r["order_id"]) - 1,
                    int(r["exch_ts"]),
                    1 if r["side"] == "buy" else -1,
                    int(r["price_tick"]),
                    float(r["qty"]),
                    float(r["fee"]),
                )
            )
    return summary, orders, fills


def grinder_run(window: str, lake: Path, s: dict):
    """Grinder's probe run with the peer summary's settings; (result, orders by n, level fills, decision facts)."""
    from agreement import peer_venue, window_tape

    from grinder.sim.backtest import decision_inputs, prepare, run_backtest

    st = s["settings"]
    venue = peer_venue(s, market_walk_ticks=st["grinder_market_walk_ticks"])
    start = int(s["conversion"]["first_exch_ts"])
    tape = window_tape(window, lake)
    qty, lot, tick = float(st["qty"]), float(tape.instrument.lot_size), float(tape.instrument.tick_size)
    if abs(tick - st["tick_size"]) > 1e-12 or abs(lot - st["lot_size"]) > 1e-12:
        raise SystemExit(
            f"{window}: tick/lot differ: grinder {tick}/{lot}, hftbacktest {st['tick_size']}/{st['lot_size']}"
        )
    rep = prepare(tape, venue)
    dec = decision_inputs(tape, rep, venue, start)
    params = np.array([qty, float(st["every_ready_decisions"]), float(st["ioc_offset_ticks"])])
    t0 = time.perf_counter()
    r = run_backtest(tape, taker_probe, params, venue, start_ns=start, replay=rep, decisions=dec)
    run_s = time.perf_counter() - t0

    # The decisions the kernel saw, from the same table the loop reads (clock.local_at_decisions).
    segments, _, bb, ba, _, _, syn, _ = dec
    step_ts = np.concatenate(
        [start + np.arange(segments[i], segments[i + 1] + 1) * venue.step_ns for i in range(0, len(segments), 2)]
    )
    # The table runs to the clock's capacity, up to 2 steps past the data; the loop stops at the last
    # step it records (no data and no message left), so only the recorded steps are decisions.
    taken = min(len(step_ts), r.counters["decisions"])
    ready = np.flatnonzero(syn[:taken])
    every = int(st["every_ready_decisions"])
    orders = {}
    for k, i in enumerate(ready):
        if k % every:
            continue
        n = k // every
        side = 1 if n % 2 == 0 else -1
        orders[n] = {
            "n": n,
            "send_ts": int(step_ts[i]),
            "side": side,
            "kind": "IOC" if n % 4 < 2 else "MARKET",
            "seen_touch": int(ba[i] if side > 0 else bb[i]),
            "filled": 0.0,
            "value": 0.0,
            "arrival_ts": None,
            "levels": 0,
        }
    f = r.fills
    fills = []
    seen_by_fill = {}
    for ts, sd, px, q, fee, lvl, mk in zip(
        f["ts_exch"], f["side"], f["price_ticks"], f["qty"], f["fee"], f["level"], f["maker"], strict=True
    ):
        if mk:
            raise AssertionError(f"{window}: a maker fill in a taker-only run")
        n, touch = int(lvl) // SHIFT, int(lvl) % SHIFT
        seen_by_fill[n] = touch
        fills.append((n, int(ts), int(sd), int(px), float(q), float(fee)))
        o = orders.get(n)
        if o is None:  # a kernel call the table does not show (cannot happen if the loop reads it)
            o = orders[n] = {"n": n, "send_ts": None, "side": int(sd), "kind": "?", "seen_touch": touch,
                             "filled": 0.0, "value": 0.0, "arrival_ts": None, "levels": 0}  # fmt: skip
        o["filled"] += float(q)
        o["value"] += float(q) * int(px) * tick
        o["arrival_ts"] = int(ts)
        o["levels"] += 1
    seen_mismatch = [n for n, t in seen_by_fill.items() if orders[n]["seen_touch"] != t]
    for o in orders.values():
        o["status"] = "FILLED" if round((qty - o["filled"]) / lot) == 0 else "EXPIRED"
        o["vwap"] = o["value"] / o["filled"] if o["filled"] > 0 else None
    c = r.counters
    facts = {
        "steps_in_table": len(step_ts),
        "ready_in_table": int(syn.sum()),
        "ready_taken": len(ready),
        "first_ready_ts": int(step_ts[ready[0]]) if len(ready) else None,
        "last_ready_ts": int(step_ts[ready[-1]]) if len(ready) else None,
        "last_step_ts": int(step_ts[taken - 1]),
        "decisions_counter": c["decisions"],
        "unsynced_decisions_counter": c["unsynced_decisions"],
        "takers_counter": c["takers"],
        "taker_expired_counter": c["taker_expired"],
        "walk_capped_counter": c["walk_capped"],
        "unsynced_orders_counter": c["unsynced_orders"],
        "rejected_counter": c["rejected"],
        "fills_seen_touch_differs_from_table": seen_mismatch,
        "position": r.position,
        "balance": r.balance,
        "fees": r.fees,
        "run_s": round(run_s, 3),
        "unready_steps": [int(step_ts[i]) for i in np.flatnonzero(~syn[:taken])],
    }
    return r, orders, fills, facts


def _q(x: float) -> float:
    return round(x, 9)


def compare(window: str, s: dict, po: dict, pf: list, go: dict, gf: list, facts: dict) -> dict:
    """Orders and level fills of both engines matched, with every mismatch put in a class."""
    st = s["settings"]
    tick, lot, qty = st["tick_size"], st["lot_size"], st["qty"]
    latency = st["order_latency"]["entry_ns"]
    pc = s["result"]["counters"]
    # ---- level fills: (n, price tick, qty) one for one
    pk = Counter((n, px, _q(q)) for n, _, _, px, q, _ in pf)
    gk = Counter((n, px, _q(q)) for n, _, _, px, q, _ in gf)
    matched = sum((pk & gk).values())
    only_p, only_g = pk - gk, gk - pk
    # the same with the arrival time and side in the key, and bit-exact quantities and fees
    pk_full = Counter((n, ts, sd, px, _q(q)) for n, ts, sd, px, q, _ in pf)
    gk_full = Counter((n, ts, sd, px, _q(q)) for n, ts, sd, px, q, _ in gf)
    matched_full = sum((pk_full & gk_full).values())
    p_exact = Counter((n, px, q) for n, _, _, px, q, _ in pf)
    g_exact = Counter((n, px, q) for n, _, _, px, q, _ in gf)
    matched_bits = sum((p_exact & g_exact).values())
    pfee = {(n, px, _q(q)): fee for n, _, _, px, q, fee in pf}
    fee_diff = max(
        (abs(fee - pfee[(n, px, _q(q))]) for n, _, _, px, q, fee in gf if (n, px, _q(q)) in pfee), default=0.0
    )

    # ---- orders
    ns = sorted(set(po) | set(go))
    classes: dict[str, list] = {}

    def note(cls: str, n: int, detail: str) -> None:
        classes.setdefault(cls, []).append({"n": n, "detail": detail})

    orders_agree = orders_levels_agree = moved = moved_agree = 0
    for n in ns:
        p, g = po.get(n), go.get(n)
        if p is None or g is None:
            who = "grinder" if p is None else "hftbacktest"
            o = g if p is None else p
            note("order on one side only", n, f"only {who}: decided at {o['send_ts']}, {o['kind']} {o['side']:+d}")
            continue
        if p["send_ts"] != g["send_ts"] or p["seen_touch"] != g["seen_touch"]:
            note(
                "decision misaligned",
                n,
                f"send {p['send_ts']} vs {g['send_ts']}, touch seen {p['seen_touch']} vs {g['seen_touch']}",
            )
        same_status = p["status"] == g["status"]
        same_qty = _q(p["filled"]) == _q(g["filled"])
        same_vwap = (p["vwap"] is None and g["vwap"] is None) or (
            p["vwap"] is not None and g["vwap"] is not None and abs(p["vwap"] - g["vwap"]) <= 1e-9 * p["vwap"]
        )
        ok = same_status and same_qty and same_vwap
        orders_agree += ok
        lp = sorted((px, q) for (m, px, q), c in pk.items() if m == n for _ in range(c))
        lg = sorted((px, q) for (m, px, q), c in gk.items() if m == n for _ in range(c))
        orders_levels_agree += lp == lg
        if p["exch_touch"] is not None and p["exch_touch"] != p["seen_touch"]:  # the touch moved before arrival
            moved += 1
            moved_agree += ok and lp == lg
        if p["arrival_ts"] is not None and g["arrival_ts"] is not None and p["arrival_ts"] != g["arrival_ts"]:
            note("arrival time differs", n, f"{p['arrival_ts']} vs {g['arrival_ts']}")
        if ok and lp == lg:
            continue
        # Classify the level difference.
        extra_g = [x for x in lg if x not in lp]
        extra_p = [x for x in lp if x not in lg]
        touch = p["exch_touch"]
        if p["kind"] == "MARKET" and touch is not None and (extra_g or extra_p):
            # hftbacktest: a buy walks touch..touch+99, a sell touch-100..touch; Grinder: touch +- W inclusive.
            w, hw = st["grinder_market_walk_ticks"] or 1 << 62, st["market_walk_ticks"]  # Grinder's 0: no limit
            h_lo, h_hi = (touch, touch + hw - 1) if p["side"] > 0 else (touch - hw, touch)
            g_lo, g_hi = (touch, touch + w) if p["side"] > 0 else (touch - w, touch)
            edge = all(not (g_lo <= px <= g_hi) or not (h_lo <= px <= h_hi) for px, _ in extra_g + extra_p)
        else:
            edge = False
        if edge:
            note(
                f"market range edge: {'buy' if p['side'] > 0 else 'sell'} level in one engine's walk only",
                n,
                f"touch at arrival {touch}: only Grinder {extra_g}, only hftbacktest {extra_p}; "
                f"status {p['status']} vs {g['status']}, filled {p['filled']:.6f} vs {g['filled']:.6f}",
            )
        elif lp == lg:
            note(
                "float dust (same levels, totals differ)",
                n,
                f"filled {p['filled']!r} vs {g['filled']!r}, status {p['status']} vs {g['status']}",
            )
        else:
            note(
                "level fills differ",
                n,
                f"{p['kind']} {p['side']:+d} touch at arrival {touch}: only hftbacktest {extra_p[:6]}, "
                f"only Grinder {extra_g[:6]}; status {p['status']} vs {g['status']}, "
                f"filled {p['filled']:.6f} vs {g['filled']:.6f}",
            )
    n_orders = max(len(po), len(go), 1)
    return {
        "window": window,
        "qty": qty,
        "grinder_market_walk_ticks": st["grinder_market_walk_ticks"],
        "tick_size": tick,
        "lot_size": lot,
        "ready_decisions": {
            "hftbacktest": pc["ready_decisions"],
            "grinder": facts["ready_taken"],
            "grinder_counters_decisions_minus_unsynced": facts["decisions_counter"]
            - facts["unsynced_decisions_counter"],
            "grinder_decision_table_synced": facts["ready_in_table"],
        },
        "steps": {
            "hftbacktest": pc["steps"],
            "grinder": facts["decisions_counter"],
            "grinder_decision_table": facts["steps_in_table"],
        },
        "first_ready_ts": {
            "hftbacktest": po[0]["send_ts"] if 0 in po else None,  # order 0 is decided at ready decision 0
            "hftbacktest_not_before": s["settings"]["first_decision_not_before_ts"],
            "grinder": facts["first_ready_ts"],
        },
        "last_step_ts": {"hftbacktest": pc["last_step_ts"], "grinder": facts["last_step_ts"]},
        "orders": {"hftbacktest": len(po), "grinder": len(go), "grinder_takers_counter": facts["takers_counter"]},
        "status": {
            "hftbacktest": dict(Counter(o["status"] for o in po.values())),
            "grinder": dict(Counter(o["status"] for o in go.values())),
        },
        "grinder_counters": {
            k: facts[f"{k}_counter"] for k in ("taker_expired", "walk_capped", "unsynced_orders", "rejected")
        },
        "orders_agree": orders_agree,
        "orders_agree_share": orders_agree / n_orders,
        "orders_levels_identical": orders_levels_agree,
        "orders_touch_moved_before_arrival": moved,
        "orders_touch_moved_and_agree": moved_agree,
        "level_fills": {"hftbacktest": len(pf), "grinder": len(gf)},
        "level_fills_matched": matched,
        "level_fills_matched_share": matched / max(len(pf), len(gf), 1),
        "level_fills_matched_with_arrival_and_side": matched_full,
        "level_fills_bit_identical_qty": matched_bits,
        "max_fee_diff_on_matched": fee_diff,
        "filled_qty": {"hftbacktest": sum(x[4] for x in pf), "grinder": sum(x[4] for x in gf)},
        "fees": {"hftbacktest": sum(x[5] for x in pf), "grinder": facts["fees"]},
        "arrival_minus_send_ns": latency,
        "mismatch_classes": {k: {"count": len(v), "orders": v} for k, v in classes.items()},
        "only_hftbacktest_fills": sorted(only_p.elements())[:20],
        "only_grinder_fills": sorted(only_g.elements())[:20],
        "grinder_seen_touch_mismatch": facts["fills_seen_touch_differs_from_table"],
        "grinder_unready_steps_after_first_ready": [
            t for t in facts["unready_steps"] if facts["first_ready_ts"] and t > facts["first_ready_ts"]
        ][:20],
        "grinder_run_s": facts["run_s"],
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--window", action="append", choices=list(WINDOWS), help="window (repeatable; default: all)")
    ap.add_argument("--qty", type=float, help="order quantity (default: the peer's, 10 BTC / 100 ETH)")
    ap.add_argument(
        "--market-walk-ticks",
        type=int,
        default=MARKET_TICKS,
        help="Grinder's VenueConfig.market_walk_ticks (default: %(default)s, hftbacktest's 100-tick walk)",
    )
    ap.add_argument("--peer-out", type=Path, default=OUT / "taker_peer", help="hftbacktest's outputs (%(default)s)")
    a = ap.parse_args(argv)
    windows = list(dict.fromkeys(a.window or WINDOWS))
    a.peer_out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    run_peer(windows, a.peer_out, a.qty)
    print(f"hftbacktest peer: {time.perf_counter() - t0:.1f} s", flush=True)
    lake = Path(tempfile.mkdtemp(prefix="grinder-taker-agreement-"))
    rows = []
    try:
        for w in windows:
            s, po, pf = peer_records(w, a.peer_out)
            s["settings"]["grinder_market_walk_ticks"] = a.market_walk_ticks
            t0 = time.perf_counter()
            _, go, gf, facts = grinder_run(w, lake, s)
            print(f"[{w}] grinder: {time.perf_counter() - t0:.1f} s (incl. ingest, first run compiles)", flush=True)
            c = compare(w, s, po, pf, go, gf, facts)
            rows.append(c)
            rd, od, lf = c["ready_decisions"], c["orders"], c["level_fills"]
            print(
                f"  ready decisions {rd['hftbacktest']} vs {rd['grinder']}; orders {od['hftbacktest']} vs "
                f"{od['grinder']}, agree {c['orders_agree']} ({c['orders_agree_share']:.1%}), levels identical "
                f"{c['orders_levels_identical']}; level fills {lf['hftbacktest']} vs {lf['grinder']}, matched "
                f"{c['level_fills_matched']} ({c['level_fills_matched_share']:.1%}); status {c['status']}"
            )
            for cls, v in c["mismatch_classes"].items():
                print(f"    {cls}: {v['count']}")
                for o in v["orders"][:4]:
                    print(f"      n={o['n']}: {o['detail']}")
    finally:
        shutil.rmtree(lake, ignore_errors=True)
    print()
    print("| window | qty | ready decisions h / G | orders h / G | orders agree | level fills h / G | matched |")
    print("|---|---|---|---|---|---|---|")
    for c in rows:
        rd, od, lf = c["ready_decisions"], c["orders"], c["level_fills"]
        print(
            f"| {c['window']} | {c['qty']:g} | {rd['hftbacktest']:,} / {rd['grinder']:,} | {od['hftbacktest']} / "
            f"{od['grinder']} | {c['orders_agree_share']:.1%} | {lf['hftbacktest']} / {lf['grinder']} | "
            f"{c['level_fills_matched_share']:.1%} |"
        )
    OUT.mkdir(exist_ok=True)
    (OUT / "taker_agreement.json").write_text(json.dumps(rows, indent=1, default=str))
    return 1 if any(c["level_fills_matched_share"] < 0.99 for c in rows) else 0  # as bench/agreement.py


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    sys.exit(main())
