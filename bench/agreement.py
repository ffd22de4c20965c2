"""Agreement with hftbacktest: the same grid, data, latency, queue and fees; fills compared one for one.

Runs hftbacktest 2.4.4 (in its own venv, bench/peers/) on the real Binance windows and Grinder on
the same captures ingested into a scratch lake, then matches fills on (exchange time, side, price,
quantity). Prints, per window: fills of each engine, matched share, final position, balance, fees.
Run: `.venv/bin/python bench/agreement.py [--window NAME ...] [--rerun-peer]`.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from real_windows import REAL, REPO, WINDOWS  # noqa: E402

PEERS = REPO / "bench" / "peers"


def peer(window: str, out: Path, rerun: bool) -> tuple[dict, list[tuple]]:
    """hftbacktest's summary and fills for a window (runs it once, then reuses its output)."""
    summary = out / f"{window}_summary.json"
    if rerun or not summary.is_file():
        subprocess.run(["bash", str(PEERS / "setup_hftbacktest.sh")], check=True, stdout=subprocess.DEVNULL)
        subprocess.run(
            [
                str(PEERS / ".venv-hftbacktest" / "bin" / "python"),
                str(PEERS / "hftbacktest_grid.py"),
                "--out",
                str(out),
                "--window",
                window,
            ],
            check=True,
        )
    fills = []
    for line in (out / f"{window}_fills.csv").read_text().splitlines()[1:]:
        c = line.split(",")
        fills.append((int(c[1]), 1 if c[5] == "buy" else -1, int(c[7]), round(float(c[8]), 9)))
    return json.loads(summary.read_text()), fills


def window_tape(window: str, lake: Path):
    """Grinder's tape of a real window, ingested into `lake` on first use."""
    from grinder.data.ingest.binance import parse_binance
    from grinder.data.instruments import resolve_instrument
    from grinder.data.lake import Lake
    from grinder.data.tape import load_tape

    files, symbol = WINDOWS[window]
    root = lake / window
    if not root.exists():
        paths = [REAL / f for f in files]
        Lake(root).write(parse_binance(paths, resolve_instrument("binance-usdm", symbol)), paths)
    return load_tape(root, "binance-usdm", symbol)


def grinder(window: str, lake: Path, s: dict):
    """Grinder's run of the same grid on the same window, with hftbacktest's clock origin and offset."""
    return run_grinder(window_tape(window, lake), s)


def peer_venue(s: dict, **extra):
    """The VenueConfig of hftbacktest's summary `s` (a peer script's): its latencies, fees, decision step and
    local-time offset, and `extra` settings."""
    from grinder.sim.backtest import VenueConfig

    st = s["settings"]
    return VenueConfig(
        entry_latency_ns=st["order_latency"]["entry_ns"],
        response_latency_ns=st["order_latency"]["response_ns"],
        step_ns=st["step_ns"],
        local_clock_offset_ns=s["conversion"]["local_ts_offset_added_ns"],
        maker_fee=st["fee_model"]["maker"],
        taker_fee=st["fee_model"]["taker"],
        **extra,
    )


def grinder_settings(s: dict):
    """(StaticGridParams, VenueConfig, clock origin ns) of hftbacktest's summary `s`: its grid, latencies, fees,
    decision step and local-time offset."""
    from grinder.strategies.static_grid import StaticGridParams

    st = s["settings"]
    params = StaticGridParams(
        levels=st["grid_num"],
        interval=st["grid_interval"],
        half_spread=st["half_spread"],
        order_qty=st["order_qty"],
        max_position=st["max_position"],
    )
    return params, peer_venue(s), s["conversion"]["first_exch_ts"]


def run_grinder(tape, s: dict, replay_cache_dir: Path | None = None):
    """Grinder's run of the grid on `tape` with the settings, clock origin and offset of hftbacktest's summary `s`.

    With `replay_cache_dir` (an empty folder), also times the replay stored there (build + write) and
    opened again from there (read-only maps, every page read once), and the loop on the opened maps.
    """
    from grinder.sim.backtest import prepare, run_backtest
    from grinder.strategies.static_grid import static_grid

    params, venue, start = grinder_settings(s)
    t0 = time.perf_counter()
    rep = prepare(tape, venue)
    prep_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    r = run_backtest(tape, static_grid, params.as_array(), venue, start_ns=start, replay=rep)  # loads kernels
    first_s = time.perf_counter() - t0
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        run_backtest(tape, static_grid, params.as_array(), venue, start_ns=start, replay=rep)
        best = min(best, time.perf_counter() - t0)
    del rep  # one replay at a time: peak RSS stays that of one backtest
    if replay_cache_dir is not None:
        from grinder.sim.replay import REPLAY_FIELDS, load_or_prepare

        local = tape.ts_local + venue.local_clock_offset_ns  # what prepare() uses when the offset is given
        t0 = time.perf_counter()
        load_or_prepare(tape, local, replay_cache_dir)  # a miss: builds and stores
        object.__setattr__(r, "_prep_store_s", time.perf_counter() - t0)
        t0 = time.perf_counter()
        cached = load_or_prepare(tape, local, replay_cache_dir)
        for f in REPLAY_FIELDS:
            getattr(cached, f).sum()  # page the maps in: a fresh process pays this before its loop runs at speed
        object.__setattr__(r, "_prep_cached_s", time.perf_counter() - t0)
        loop_cached = float("inf")
        for _ in range(5):
            t0 = time.perf_counter()
            rc = run_backtest(tape, static_grid, params.as_array(), venue, start_ns=start, replay=cached)
            loop_cached = min(loop_cached, time.perf_counter() - t0)
        if rc.digest != r.digest:
            raise AssertionError("the backtest on the cached replay differs from the one on the prepared replay")
        object.__setattr__(r, "_loop_cached_s", loop_cached)
    object.__setattr__(r, "_loop_s", best)
    object.__setattr__(r, "_prep_s", prep_s)
    object.__setattr__(r, "_first_s", first_s)
    object.__setattr__(r, "_events", len(tape))
    f = r.fills
    fills = [
        (int(a), int(b), int(c), round(float(d), 9))
        for a, b, c, d in zip(f["ts_exch"], f["side"], f["price_ticks"], f["qty"], strict=True)
    ]
    return r, fills


def compare(window: str, s: dict, pf: list, r, gf: list) -> dict:
    common = sum((Counter(pf) & Counter(gf)).values())
    res = s["result"]
    out = {
        "window": window,
        "hftbacktest_fills": len(pf),
        "grinder_fills": len(gf),
        "matched": common,
        "matched_share": common / max(len(pf), len(gf), 1),
        "position": (res["position"], r.position),
        "balance": (res["balance"], r.balance),
        "fees": (res["fee"], r.fees),
        "events_per_s": (s["timing"]["events_per_s"], r._events / r._loop_s),
        "grinder_prepare_s": r._prep_s,
        "grinder_loop_s": r._loop_s,
    }
    for k in ("prep_store_s", "prep_cached_s", "loop_cached_s"):
        if hasattr(r, f"_{k}"):
            out[f"grinder_{k.replace('prep', 'prepare')}"] = getattr(r, f"_{k}")
    only_p = sorted((Counter(pf) - Counter(gf)).elements())[:5]
    only_g = sorted((Counter(gf) - Counter(pf)).elements())[:5]
    out["first_only_hftbacktest"] = only_p
    out["first_only_grinder"] = only_g
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--window", action="append", choices=list(WINDOWS))
    ap.add_argument("--rerun-peer", action="store_true")
    ap.add_argument("--out", type=Path, default=PEERS / "out")
    a = ap.parse_args()
    lake = Path(tempfile.mkdtemp(prefix="grinder-agreement-"))  # ingested afresh: ingest is part of what is compared
    rows = []
    for w in a.window or list(WINDOWS):
        s, pf = peer(w, a.out, a.rerun_peer)
        r, gf = grinder(w, lake, s)
        c = compare(w, s, pf, r, gf)
        rows.append(c)
        print(
            f"{w}: fills hftbacktest {c['hftbacktest_fills']}, grinder {c['grinder_fills']}, matched "
            f"{c['matched']} ({c['matched_share']:.1%}); position {c['position'][0]:.3f} vs {c['position'][1]:.3f}; "
            f"balance {c['balance'][0]:.2f} vs {c['balance'][1]:.2f}; fees {c['fees'][0]:.4f} vs {c['fees'][1]:.4f}"
        )
        ev = c["events_per_s"]
        e2e = ev[1] * c["grinder_loop_s"] / (c["grinder_loop_s"] + c["grinder_prepare_s"])
        print(
            f"  speed (best of 5, same data and strategy): hftbacktest {ev[0] / 1e6:.1f} M events/s, "
            f"grinder {ev[1] / 1e6:.1f} M events/s, ratio {ev[1] / ev[0]:.2f}x; counting Grinder's once-per-tape "
            f"replay preparation ({c['grinder_prepare_s']:.2f} s): {e2e / 1e6:.1f} M events/s, {e2e / ev[0]:.2f}x"
        )
        if c["matched"] != max(c["hftbacktest_fills"], c["grinder_fills"]):
            print(f"  only hftbacktest: {c['first_only_hftbacktest']}\n  only grinder:     {c['first_only_grinder']}")
    shutil.rmtree(lake, ignore_errors=True)
    (REPO / "bench" / "out").mkdir(exist_ok=True)
    (REPO / "bench" / "out" / "agreement.json").write_text(json.dumps(rows, indent=1, default=str))
    if any(r["matched_share"] < 0.99 for r in rows):
        sys.exit(1)


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    main()
